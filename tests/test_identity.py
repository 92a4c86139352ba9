"""Identity is proven: acting as a researcher needs their key, the audit log verifies each signature,
and trust is granted by an owner (``tcpkit trust add``), not taken."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest

from tcpkit.cli import main
from tcpkit.release import audit as _audit
from tcpkit.release.keys import (
    HybridSigner,
    TrustList,
    UntrustedKeyError,
    init_keys,
    runner_signer,
)
from tcpkit.release.workspace import IdentityError, PermissionDenied, Workspace

Researchers = Callable[..., Path]


def nb(source: str) -> bytes:
    cell = nbformat.v4.new_code_cell(source)
    cell.id = "cell-1"
    return nbformat.writes(nbformat.v4.new_notebook(cells=[cell])).encode()


@pytest.fixture
def ws(tmp_path: Path, researchers: Researchers) -> Workspace:
    """Component ``stats`` owned by alice with contributor bob; only alice has a key."""
    researchers(tmp_path, "alice")
    workspace = Workspace.open(tmp_path)
    workspace.register_component("stats", "stats.ipynb", "alice", ["bob"])
    workspace.modify("stats", "alice", nb("x = 1"), None, "first")
    yield workspace
    workspace.close()


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_as_without_the_key_is_refused_for_every_write(ws: Workspace, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    root = str(tmp_path)
    v1 = ws.current("stats")
    assert v1 is not None
    audit_before = len(ws.audit_log())
    pub = tmp_path / "someone.pub"
    pub.write_text(HybridSigner.generate("someone").public_record().to_json())
    capsys.readouterr()
    for argv in (
        ["lease", "acquire", "stats", "--as", "bob", "--root", root],
        ["lease", "release", "stats", "--as", "bob", "--root", root],
        ["restore", "stats", v1.digest[:12], "--as", "bob", "--root", root],
        ["contributor", "add", "stats", "eve", "--as", "bob", "--root", root],
        ["gc", "--as", "bob", "--root", root],
        ["trust", "add", str(pub), "--as", "bob", "--root", root],
    ):
        assert main(argv) == 1, argv
        line = _one_line(capsys.readouterr().err)
        if argv[0] == "trust":  # bob owns nothing: refused before his key is even looked at
            assert "bob may not change the trust list: only an owner" in line
            continue
        assert "cannot act as bob: no private key of bob in" in line, line
        assert str(ws.keys_dir) in line and "bob.ed25519.pem" in line
        assert "tcpkit keys init bob" in line
    with pytest.raises(IdentityError, match="cannot act as bob"):
        ws.modify("stats", "bob", nb("x = 2"), v1.digest, "no key")
    assert len(ws.audit_log()) == audit_before
    assert ws.current("stats") == v1 and ws.leases() == []


def test_tcpkit_user_is_a_claim_that_needs_the_key(ws: Workspace, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TCPKIT_USER", "bob")
    assert main(["lease", "acquire", "stats", "--root", str(tmp_path)]) == 1
    assert "cannot act as bob" in capsys.readouterr().err
    monkeypatch.setenv("TCPKIT_USER", "alice")
    assert main(["lease", "acquire", "stats", "--root", str(tmp_path)]) == 0
    assert ws.leases()[0].holder == "alice"


def test_with_the_key_it_works_and_the_entry_is_signed(ws: Workspace, tmp_path: Path,
                                                       researchers: Researchers,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    researchers(tmp_path, "bob")
    v1 = ws.current("stats")
    assert v1 is not None
    v2 = ws.modify("stats", "alice", nb("x = 2"), v1.digest, "second")
    assert main(["restore", "stats", v1.digest[:12], "--as", "bob", "--root", str(tmp_path)]) == 0
    entry = ws.audit_log()[-1]
    assert (entry.action, entry.actor, entry.details["base"]) == ("restore", "bob", v2.digest)
    assert [s["algorithm"] for s in entry.signatures] == ["ed25519", "ml-dsa-65"]
    assert ws.verify_audit() is None
    assert main(["audit", "verify", "--root", str(tmp_path)]) == 0
    assert "hash chain and signatures verified" in capsys.readouterr().out


def test_a_key_that_is_not_trusted_is_refused_with_the_command_that_adds_it(
        ws: Workspace, tmp_path: Path) -> None:
    init_keys("bob", trust_dir=None, keys_dir=ws.keys_dir)  # bob made a key; nobody trusted it
    with pytest.raises(IdentityError, match=r"cannot act as bob: key 'bob' is not on the trust list "
                       r".*tcpkit trust add .*bob\.pub --as OWNER"):
        ws.acquire_lease("stats", "bob")
    stranger = HybridSigner.generate("alice")  # right name, wrong keys
    ws.add_signer(stranger)
    with pytest.raises(IdentityError, match="do not match the trusted record"):
        ws.acquire_lease("stats", "alice")


def _tamper(root: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    conn = sqlite3.connect(root / ".tcpkit" / "tcpkit.db")
    conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def test_audit_verify_detects_an_altered_signature(ws: Workspace, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    ws.acquire_lease("stats", "alice", ttl_s=60)
    assert ws.verify_audit() is None
    entries = ws.audit_log()
    target = entries[1]
    sigs = [dict(s) for s in target.signatures]
    raw = bytearray(__import__("base64").b64decode(sigs[1]["sig"]))
    raw[10] ^= 0x01  # one bit of the ML-DSA-65 signature
    sigs[1]["sig"] = __import__("base64").b64encode(bytes(raw)).decode()
    _tamper(tmp_path, "UPDATE audit SET signatures = ? WHERE seq = ?",
            (_audit.canonical_json(sigs), target.seq))
    broken = ws.verify_audit()
    assert broken is not None and broken.seq == target.seq
    assert "ml-dsa-65 signature does not verify under the trusted key of alice" in broken.reason
    capsys.readouterr()
    assert main(["audit", "verify", "--root", str(tmp_path)]) == 1
    assert f"audit chain broken at audit entry {target.seq} " in capsys.readouterr().err
    assert main(["audit", "verify", "--json", "--root", str(tmp_path)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["first_broken"]["seq"] == target.seq


def test_audit_verify_detects_a_removed_signature(ws: Workspace, tmp_path: Path) -> None:
    last = ws.audit_log()[-1]
    _tamper(tmp_path, "UPDATE audit SET signatures = NULL WHERE seq = ?", (last.seq,))
    broken = ws.verify_audit()
    assert broken is not None and broken.seq == last.seq and "unsigned" in broken.reason


def test_audit_verify_detects_an_entry_signed_by_an_untrusted_key(ws: Workspace, tmp_path: Path,
                                                                  researchers: Researchers) -> None:
    # someone with write access to the database appends an entry in alice's name with their own key
    forger = HybridSigner.generate("alice")
    with ws.db.write() as conn:
        forged = _audit.append(conn, forger, "lease-release", {"component": "stats"})
    broken = ws.verify_audit()
    assert broken is not None and broken.seq == forged.seq
    assert "does not verify under the trusted key of alice" in broken.reason


def test_audit_verify_detects_a_signer_no_longer_on_the_trust_list(ws: Workspace, tmp_path: Path,
                                                                   researchers: Researchers) -> None:
    researchers(tmp_path, "bob")
    entry = ws.acquire_lease("stats", "bob", ttl_s=60) and ws.audit_log()[-1]
    assert ws.verify_audit() is None
    (ws.trust_dir / "bob.pub").unlink()
    broken = ws.verify_audit()
    assert broken is not None and broken.seq == entry.seq
    assert "signed as bob, whose key is not on the trust list" in broken.reason


def test_trust_add_by_a_non_owner_is_refused(ws: Workspace, tmp_path: Path,
                                             researchers: Researchers) -> None:
    researchers(tmp_path, "bob")  # bob is trusted and a contributor, but owns nothing
    carol = tmp_path / "carol.pub"
    carol.write_text(HybridSigner.generate("carol").public_record().to_json())
    before = len(ws.audit_log())
    with pytest.raises(PermissionDenied, match="bob may not change the trust list: only an owner"):
        ws.trust_add(carol, "bob")
    assert "carol" not in TrustList.load(ws.trust_dir).names
    assert len(ws.audit_log()) == before


def test_trust_add_by_an_owner_is_audited_and_lets_the_new_key_act(
        ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = init_keys("bob", trust_dir=None, keys_dir=ws.keys_dir)
    pub = ws.keys_dir / "bob.pub"
    capsys.readouterr()
    assert main(["trust", "add", str(pub), "--as", "alice", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "trusted bob" in out and "granted by alice" in out
    entry = ws.audit_log()[-1]
    assert (entry.action, entry.actor, entry.details["name"]) == ("trust-add", "alice", "bob")
    assert entry.details["fingerprints"]["ed25519"] == record.key("ed25519").fingerprint
    ws.acquire_lease("stats", "bob", ttl_s=60)  # bob can act now
    assert ws.verify_audit() is None
    # the same record again changes nothing; other keys under a trusted name are refused
    assert ws.trust_add(pub, "alice") == (record, False)
    other = tmp_path / "bob-other.pub"
    other.write_text(HybridSigner.generate("bob").public_record().to_json())
    with pytest.raises(IdentityError, match="bob is already trusted with other keys"):
        ws.trust_add(other, "alice")


def test_the_first_owner_may_add_only_their_own_key(tmp_path: Path, researchers: Researchers) -> None:
    keys = researchers(tmp_path, "runner-a")  # a runner bootstrapped the trust list; no owner is on it
    init_keys("alice", trust_dir=None, keys_dir=keys)
    init_keys("mallory", trust_dir=None, keys_dir=keys)
    with Workspace.open(tmp_path) as ws:
        ws.register_component("stats", "stats.ipynb", "alice", actor="runner-a")
        with pytest.raises(IdentityError, match="must be their own: .*holds the key of mallory"):
            ws.trust_add(keys / "mallory.pub", "alice")
        record, added = ws.trust_add(keys / "alice.pub", "alice")
        assert added and record.name == "alice"
        entry = ws.audit_log()[-1]
        assert entry.details["bootstrap"] is True and entry.actor == "alice"
        # now an owner is trusted: the bootstrap is over, mallory needs alice's grant
        ws.register_component("other", "other.ipynb", "mallory", actor="runner-a")
        with pytest.raises(IdentityError, match="cannot act as mallory: key 'mallory' is not on"):
            ws.trust_add(keys / "mallory.pub", "mallory")
        assert ws.verify_audit() is None


def test_runner_trusts_itself_only_on_an_empty_trust_list(tmp_path: Path) -> None:
    keys, trust_dir = tmp_path / "keys", tmp_path / "ws" / ".tcpkit" / "trust"
    signer, note = runner_signer("runner-a", trust_dir=trust_dir, keys_dir=keys)
    assert note is not None and "no trust list yet" in note and "created a signing key" in note
    assert TrustList.load(trust_dir).names == ("runner-a",)
    again, note_again = runner_signer("runner-a", trust_dir=trust_dir, keys_dir=keys)
    assert note_again is None and again.public_record() == signer.public_record()
    with pytest.raises(UntrustedKeyError, match=r"runner key 'runner-b' is not on the trust list .*"
                       r"tcpkit trust add .*runner-b\.pub --as OWNER"):
        runner_signer("runner-b", trust_dir=trust_dir, keys_dir=keys)
    assert TrustList.load(trust_dir).names == ("runner-a",)
    assert (keys / "runner-b.pub").is_file()  # the file the owner adds


def test_pipeline_refuses_an_unknown_runner_once_a_trust_list_exists(
        tmp_path: Path, researchers: Researchers, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    researchers(tmp_path, "alice")
    monkeypatch.setenv("TCPKIT_RUNNER", "runner-new")
    (tmp_path / "notebooks").mkdir()
    gates = "".join(f'[components.stats.gates.{g}]\ncriteria = [ {{ metric = "x", op = ">=", threshold = 0 }} ]\n'
                    for g in ("DEVELOPMENT", "TESTING", "STAGING", "PRODUCTION"))
    (tmp_path / "notebooks" / "pipeline.toml").write_text(
        '[components.stats]\nnotebook = "stats.ipynb"\nowner = "alice"\n' + gates)
    assert main(["run", "--root", str(tmp_path)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "runner key 'runner-new' is not on the trust list" in err
    assert "tcpkit trust add" in err and "runner-new.pub" in err
    assert TrustList.load(tmp_path / ".tcpkit" / "trust").names == ("alice",)


def test_an_encrypted_key_acts_with_its_passphrase(ws: Workspace, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    init_keys("bob", trust_dir=ws.trust_dir, keys_dir=ws.keys_dir, passphrase=b"s3cret")
    root = str(tmp_path)
    assert main(["lease", "acquire", "stats", "--as", "bob", "--root", root]) == 1
    assert "is encrypted" in _one_line(capsys.readouterr().err)
    monkeypatch.setenv("BOB_PASS", "wrong")
    assert main(["lease", "acquire", "stats", "--as", "bob", "--passphrase-env", "BOB_PASS",
                 "--root", root]) == 1
    assert "wrong passphrase" in _one_line(capsys.readouterr().err)
    monkeypatch.setenv("BOB_PASS", "s3cret")
    assert main(["lease", "acquire", "stats", "--as", "bob", "--passphrase-env", "BOB_PASS",
                 "--root", root]) == 0
    assert ws.leases()[0].holder == "bob" and ws.verify_audit() is None


def test_a_schema_1_database_migrates_and_its_unsigned_entries_are_named(
        tmp_path: Path, researchers: Researchers, monkeypatch: pytest.MonkeyPatch) -> None:
    from tcpkit.release import db as db_module

    researchers(tmp_path, "alice")
    monkeypatch.setattr(db_module, "SCHEMA_VERSION", 1)  # a workspace made by the previous tcpkit
    with Workspace.open(tmp_path) as old:
        assert old.db.schema_version() == 1
        digest = _audit.entry_hash(1, "2025-01-01T00:00:00+00:00", "alice", "note", "{}", _audit.GENESIS)
        old.db.conn.execute(
            "INSERT INTO audit (seq, at, actor, action, details, prev_hash, hash) VALUES (?,?,?,?,?,?,?)",
            (1, "2025-01-01T00:00:00+00:00", "alice", "note", "{}", _audit.GENESIS, digest))
    monkeypatch.setattr(db_module, "SCHEMA_VERSION", len(db_module.MIGRATIONS))
    with Workspace.open(tmp_path) as ws:
        assert ws.db.schema_version() == db_module.SCHEMA_VERSION == 2
        ws.audit("note", "alice", {"after": "migration"})
        entries = ws.audit_log()
        assert entries[0].signatures == () and len(entries[1].signatures) == 2
        assert entries[1].prev_hash == digest  # the chain continues across the migration
        broken = ws.verify_audit()
        assert broken is not None and broken.seq == 1 and "unsigned" in broken.reason
