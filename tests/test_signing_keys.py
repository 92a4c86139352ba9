"""Researcher keys: files, modes, passphrases, the pinned trust list, and the keys CLI."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tcpkit.cli import main
from tcpkit.release.signing import (
    HYBRID_CLAIM,
    HybridSigner,
    KeyError_,
    PublicKeyRecord,
    TrustList,
    ensure_signer,
    init_keys,
    keys_dir,
    load_signer,
)


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    keys = tmp_path / "home" / "keys"
    monkeypatch.setenv("TCPKIT_KEYS", str(keys))
    return keys, tmp_path / "ws" / ".tcpkit" / "trust"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_dir_follows_env_and_defaults_to_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TCPKIT_KEYS", "/somewhere/keys")
    assert keys_dir() == Path("/somewhere/keys")
    monkeypatch.delenv("TCPKIT_KEYS")
    assert keys_dir() == Path.home() / ".config" / "tcpkit" / "keys"


def test_init_writes_0600_keys_in_0700_dir_and_public_record(dirs: tuple[Path, Path]) -> None:
    keys, trust_dir = dirs
    record = init_keys("alice", trust_dir=trust_dir)
    assert _mode(keys) == 0o700
    files = sorted(p.name for p in keys.iterdir())
    assert files == ["alice.ed25519.pem", "alice.mldsa65.pem", "alice.pub"]
    assert [_mode(keys / f) for f in files] == [0o600, 0o600, 0o644]
    assert (keys / "alice.pub").read_text() == (trust_dir / "alice.pub").read_text()
    assert b"PRIVATE KEY" in (keys / "alice.ed25519.pem").read_bytes()
    pub = trust_dir / "alice.pub"
    document = json.loads(pub.read_text())
    assert [k["algorithm"] for k in document["keys"]] == ["ed25519", "ml-dsa-65"]
    assert "PRIVATE" not in pub.read_text()
    assert record.algorithms == ("ed25519", "ml-dsa-65")
    assert TrustList.load(trust_dir).records == (record,)
    assert record.key("ed25519").raw.__len__() == 32
    assert len(record.key("ml-dsa-65").raw) == 1952


def test_loaded_signer_matches_trusted_record(dirs: tuple[Path, Path]) -> None:
    keys, trust_dir = dirs
    record = init_keys("alice", trust_dir=trust_dir)
    assert load_signer("alice").public_record() == record


def test_init_refuses_to_overwrite_and_changes_nothing(dirs: tuple[Path, Path]) -> None:
    keys, trust_dir = dirs
    init_keys("alice", trust_dir=trust_dir)
    before = {p: p.read_bytes() for p in [*keys.iterdir(), *trust_dir.iterdir()]}
    with pytest.raises(KeyError_, match="already exists"):
        init_keys("alice", trust_dir=trust_dir)
    after = {p: p.read_bytes() for p in [*keys.iterdir(), *trust_dir.iterdir()]}
    assert before == after


def test_init_refuses_when_only_trust_record_exists(dirs: tuple[Path, Path]) -> None:
    keys, trust_dir = dirs
    trust_dir.mkdir(parents=True)
    (trust_dir / "alice.pub").write_text("{}")
    with pytest.raises(KeyError_, match="already exists"):
        init_keys("alice", trust_dir=trust_dir)
    assert not keys.exists() or not any(keys.iterdir())


@pytest.mark.parametrize("name", ["", "Alice", "1abc", "a/b", "../x", "a" * 65, "a_b", "a.b"])
def test_invalid_names_refused(dirs: tuple[Path, Path], name: str) -> None:
    keys, trust_dir = dirs
    with pytest.raises(KeyError_, match="invalid"):
        init_keys(name, trust_dir=trust_dir)
    assert not keys.exists()


def test_group_readable_key_refused_with_chmod_fix(dirs: tuple[Path, Path]) -> None:
    keys, trust_dir = dirs
    init_keys("alice", trust_dir=trust_dir)
    path = keys / "alice.mldsa65.pem"
    os.chmod(path, 0o640)
    with pytest.raises(KeyError_) as info:
        load_signer("alice")
    assert f"chmod 600 {path}" in str(info.value)
    os.chmod(path, 0o600)
    load_signer("alice")


def test_missing_private_key_names_the_command(dirs: tuple[Path, Path]) -> None:
    with pytest.raises(KeyError_, match="tcpkit keys init"):
        load_signer("nobody")


def test_passphrase_encrypts_and_is_required(dirs: tuple[Path, Path]) -> None:
    keys, trust_dir = dirs
    record = init_keys("bob", trust_dir=trust_dir, passphrase=b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in (keys / "bob.ed25519.pem").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in (keys / "bob.mldsa65.pem").read_bytes()
    with pytest.raises(KeyError_, match="encrypted"):
        load_signer("bob")
    with pytest.raises(KeyError_, match="wrong passphrase"):
        load_signer("bob", passphrase=b"wrong")
    assert load_signer("bob", passphrase=b"correct horse").public_record() == record
    with pytest.raises(KeyError_, match="empty"):
        init_keys("carol", trust_dir=trust_dir, passphrase=b"")


def test_ensure_signer_creates_once_then_loads(dirs: tuple[Path, Path]) -> None:
    keys, trust_dir = dirs
    first, created = ensure_signer("runner", trust_dir=trust_dir)
    assert created
    again, created_again = ensure_signer("runner", trust_dir=trust_dir)
    assert not created_again
    assert again.public_record() == first.public_record()
    # a second workspace using the same keys gets the record added to its trust list
    other_trust = trust_dir.parent.parent.parent / "ws2" / ".tcpkit" / "trust"
    _, created_elsewhere = ensure_signer("runner", trust_dir=other_trust)
    assert not created_elsewhere
    assert TrustList.load(other_trust).records == (first.public_record(),)


def test_ensure_signer_refuses_a_pinned_record_of_other_keys(dirs: tuple[Path, Path]) -> None:
    keys, trust_dir = dirs
    ensure_signer("runner", trust_dir=trust_dir)
    stranger = HybridSigner.generate("runner").public_record()
    (trust_dir / "runner.pub").write_text(stranger.to_json())
    with pytest.raises(KeyError_, match="does not match"):
        ensure_signer("runner", trust_dir=trust_dir)


def test_edited_trust_record_refused(dirs: tuple[Path, Path]) -> None:
    keys, trust_dir = dirs
    init_keys("alice", trust_dir=trust_dir)
    other = HybridSigner.generate("mallory").public_record()
    document = json.loads((trust_dir / "alice.pub").read_text())
    # swap in another public key but keep alice's fingerprint: the record no longer adds up
    document["keys"][1]["public_key_pem"] = json.loads(other.to_json())["keys"][1]["public_key_pem"]
    (trust_dir / "alice.pub").write_text(json.dumps(document))
    with pytest.raises(KeyError_, match="does not match"):
        TrustList.load(trust_dir)


def test_trust_record_without_mldsa_refused_and_name_must_match_file(tmp_path: Path) -> None:
    record = HybridSigner.generate("alice").public_record()
    document = json.loads(record.to_json())
    document["keys"] = document["keys"][:1]
    with pytest.raises(KeyError_, match="lacks required key"):
        PublicKeyRecord.from_json(json.dumps(document), source="x.pub")
    (tmp_path / "bob.pub").write_text(record.to_json())
    with pytest.raises(KeyError_, match="names 'alice'"):
        TrustList.load(tmp_path)


def test_missing_trust_dir_is_empty_list(tmp_path: Path) -> None:
    assert len(TrustList.load(tmp_path / "none")) == 0


def test_cli_keys_init_and_list(
    dirs: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys, _ = dirs
    root = tmp_path / "ws"
    assert main(["keys", "init", "alice", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert HYBRID_CLAIM in out
    assert "quantum-proof" not in out.lower()
    # trust is granted by an owner, not taken by making a key: the trust list is untouched
    assert f"tcpkit trust add {keys / 'alice.pub'} --as OWNER" in out
    assert len(TrustList.load(root / ".tcpkit" / "trust")) == 0
    monkeypatch.setenv("PASS_VAR", "s3cret")
    assert main(["keys", "init", "bob", "--root", str(root), "--passphrase-env", "PASS_VAR"]) == 0
    capsys.readouterr()
    assert load_signer("bob", passphrase=b"s3cret").name == "bob"
    assert main(["keys", "list", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "alice" in out and "bob" in out and "not on this workspace's trust list" in out
    trust_dir = root / ".tcpkit" / "trust"
    trust_dir.mkdir(parents=True)
    (trust_dir / "alice.pub").write_text((keys / "alice.pub").read_text())
    assert main(["keys", "list", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    record = TrustList.load(trust_dir).records[0]
    for key in record.keys:
        assert key.fingerprint in out
    assert "ml-dsa-65" in out and "ed25519" in out and "bob" in out
    # refusals: existing key, bad name, unset passphrase variable -> exit 2, one line
    for argv in (
        ["keys", "init", "alice", "--root", str(root)],
        ["keys", "init", "Alice", "--root", str(root)],
        ["keys", "init", "carol", "--root", str(root), "--passphrase-env", "UNSET_VAR_H6"],
        ["keys"],
    ):
        assert main(argv) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (keys / "carol.ed25519.pem").exists()
