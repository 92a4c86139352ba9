"""The workspace: versions with compare-and-swap, leases, permissions, gate runs, audit, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest

from tcpkit.cli import main
from tcpkit.release.db import (
    SCHEMA_VERSION,
    CorruptDatabaseError,
    DatabaseLockedError,
    WorkspaceError,
)
from tcpkit.release.names import InvalidNameError
from tcpkit.release.store import CorruptObjectError, MissingObjectError
from tcpkit.release.workspace import (
    ConflictError,
    GateRun,
    LeaseError,
    PermissionDenied,
    UnknownComponentError,
    UnknownVersionError,
    Workspace,
)


def nb(source: str) -> bytes:
    cell = nbformat.v4.new_code_cell(source)
    cell.id = "cell-1"
    return nbformat.writes(nbformat.v4.new_notebook(cells=[cell])).encode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


PEOPLE = ("alice", "bob", "carol", "dave", "eve")
Researchers = Callable[..., Path]


@pytest.fixture
def ws(tmp_path: Path, researchers: Researchers) -> Workspace:
    researchers(tmp_path, *PEOPLE)
    workspace = Workspace.open(tmp_path)
    workspace.register_component("stats", "stats.ipynb", "alice", ["bob"])
    yield workspace
    workspace.close()


def snapshot(ws: Workspace) -> dict[str, object]:
    """Everything a failed operation must leave unchanged."""
    path = ws.notebooks_dir / "stats.ipynb"
    return {
        "versions": ws.versions("stats"),
        "objects": sorted(ws.store.iter_digests()),
        "audit": len(ws.audit_log()),
        "leases": ws.leases(),
        "file": path.read_bytes() if path.exists() else None,
        "components": ws.components(),
    }


def test_open_creates_layout_and_schema(tmp_path: Path) -> None:
    with Workspace.open(tmp_path) as ws:
        assert (tmp_path / ".tcpkit" / "tcpkit.db").is_file()
        assert (tmp_path / ".tcpkit" / "objects" / "sha256").is_dir()
        assert (tmp_path / ".tcpkit" / "trust").is_dir()
        assert ws.db.schema_version() == SCHEMA_VERSION
        mode = ws.db.query_one("PRAGMA journal_mode")
        assert mode is not None and mode[0] == "wal"
    with Workspace.open(tmp_path) as again:  # reopening migrates nothing and keeps data
        assert again.components() == []


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Workspace.open(tmp_path).close()
    db = tmp_path / ".tcpkit" / "tcpkit.db"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(WorkspaceError, match="schema version 99, newer than"):
        Workspace.open(tmp_path)


def test_register_imports_existing_notebook_and_is_idempotent(tmp_path: Path,
                                                              researchers: Researchers) -> None:
    researchers(tmp_path, *PEOPLE)
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "perf.ipynb").write_bytes(nb("x = 1"))
    with Workspace.open(tmp_path) as ws:
        info = ws.register_component("perf", "perf.ipynb", "carol", ["dave"])
        assert info.owner == "carol" and info.contributors == ("dave",) and info.level is None
        [v1] = ws.versions("perf")
        assert (v1.seq, v1.kind, v1.author, v1.digest) == (1, "import", "carol", sha(nb("x = 1")))
        audit_len = len(ws.audit_log())
        assert ws.register_component("perf", "perf.ipynb", "carol", ["dave"]) == info
        assert len(ws.audit_log()) == audit_len  # no change, no entry
        updated = ws.register_component("perf", "perf.ipynb", "carol", ["dave", "erin"])
        assert updated.contributors == ("dave", "erin")
        assert ws.audit_log()[-1].action == "reregister"


def test_modify_chain_and_conflict_with_notebook_diff(ws: Workspace) -> None:
    v1 = ws.modify("stats", "alice", nb("x = 1"), None, "first")
    v2 = ws.modify("stats", "bob", nb("x = 2"), v1.digest, "second")
    assert (v1.seq, v2.seq, v2.parent) == (1, 2, v1.digest)
    assert (ws.notebooks_dir / "stats.ipynb").read_bytes() == nb("x = 2")
    assert ws.current("stats") == v2
    before = snapshot(ws)
    with pytest.raises(ConflictError) as err:
        ws.modify("stats", "alice", nb("x = 3"), v1.digest, "stale")
    message = str(err.value)
    assert v1.digest in message and v2.digest in message
    assert "nothing was written" in message
    assert "nbdime diff" in message and "x = 1" in err.value.diff and "x = 2" in err.value.diff
    assert (err.value.base, err.value.current) == (v1.digest, v2.digest)
    assert snapshot(ws) == before
    assert not ws.store.has(sha(nb("x = 3")))  # the refused content was not even stored


def test_conflict_on_plain_text_uses_unified_diff(tmp_path: Path, researchers: Researchers) -> None:
    researchers(tmp_path, "alice")
    with Workspace.open(tmp_path) as ws:
        ws.register_component("cfg", "cfg.txt", "alice")
        v1 = ws.modify("cfg", "alice", b"a\nb\n", None, "one")
        ws.modify("cfg", "alice", b"a\nc\n", v1.digest, "two")
        with pytest.raises(ConflictError, match=r"(?s)--- base .*\+\+\+ current .*-b\n\+c"):
            ws.modify("cfg", "alice", b"z\n", v1.digest, "three")
        with pytest.raises(ConflictError, match="changed since your base None"):
            ws.modify("cfg", "alice", b"z\n", None, "as if new")


def test_hand_edits_are_backed_up_before_a_modification(ws: Workspace) -> None:
    v1 = ws.modify("stats", "alice", nb("x = 1"), None, "first")
    (ws.notebooks_dir / "stats.ipynb").write_bytes(nb("edited by hand"))
    v3 = ws.modify("stats", "alice", nb("x = 2"), v1.digest, "second")
    backup = ws.versions("stats")[1]
    assert (backup.seq, backup.kind, backup.digest) == (2, "backup", sha(nb("edited by hand")))
    assert v3.seq == 3 and v3.parent == backup.digest
    assert ws.store.get_bytes(backup.digest) == nb("edited by hand")


def test_restore_backs_up_and_writes_a_new_version(ws: Workspace) -> None:
    v1 = ws.modify("stats", "alice", nb("x = 1"), None, "first")
    v2 = ws.modify("stats", "alice", nb("x = 2"), v1.digest, "second")
    restored = ws.restore("stats", v1.digest[:10], "bob", v2.digest)
    assert (restored.seq, restored.kind, restored.digest, restored.parent) == (3, "restore", v1.digest, v2.digest)
    assert (ws.notebooks_dir / "stats.ipynb").read_bytes() == nb("x = 1")
    assert ws.audit_log()[-1].details["restored_seq"] == 1


def test_permissions_name_the_owner_and_change_nothing(ws: Workspace) -> None:
    before = snapshot(ws)
    with pytest.raises(PermissionDenied, match="eve may not modify component 'stats': only its owner alice"):
        ws.modify("stats", "eve", nb("x"), None, "intrusion")
    with pytest.raises(PermissionDenied, match="only its owner alice"):
        ws.acquire_lease("stats", "eve")
    with pytest.raises(PermissionDenied, match="only its owner alice may"):
        ws.add_contributor("stats", "eve", "bob")
    assert snapshot(ws) == before
    ws.add_contributor("stats", "eve", "alice")
    ws.modify("stats", "eve", nb("x"), None, "now allowed")
    ws.remove_contributor("stats", "eve", "alice")
    assert ws.component("stats").contributors == ("bob",)
    actions = [e.action for e in ws.audit_log()]
    assert "contributor-add" in actions and "contributor-remove" in actions


def test_lease_held_by_someone_else(ws: Workspace) -> None:
    v1 = ws.modify("stats", "alice", nb("x = 1"), None, "first")
    lease = ws.acquire_lease("stats", "bob", ttl_s=60, reason="long edit")
    assert lease.pid == os.getpid()
    before = snapshot(ws)
    with pytest.raises(LeaseError, match=r"leased to bob \(pid \d+ on .*reason: 'long edit'.*nothing was changed"):
        ws.modify("stats", "alice", nb("x = 2"), v1.digest, "blocked")
    with pytest.raises(LeaseError, match="leased to bob"):
        ws.acquire_lease("stats", "alice")
    with pytest.raises(LeaseError, match="alice holds no lease"):
        ws.release_lease("stats", "alice")
    assert snapshot(ws) == before
    v2 = ws.modify("stats", "bob", nb("x = 2"), v1.digest, "with my lease")
    assert ws.audit_log()[-1].details["lease"] == "held"
    renewed = ws.renew_lease("stats", "bob", ttl_s=120)
    assert renewed.expires_at > lease.expires_at
    ws.release_lease("stats", "bob")
    assert ws.leases() == []
    ws.modify("stats", "alice", nb("x = 3"), v2.digest, "free again")
    assert ws.audit_log()[-1].details["lease"] == "transient"


def test_expired_lease_is_taken_over_and_audited(ws: Workspace) -> None:
    ws.acquire_lease("stats", "bob", ttl_s=0.05)
    time.sleep(0.1)
    ws.acquire_lease("stats", "alice", ttl_s=60)
    takeover = [e for e in ws.audit_log() if e.action == "lease-takeover"][-1]
    assert takeover.actor == "alice" and takeover.details["previous_holder"] == "bob"
    assert "expired" in takeover.details["why"]


def test_lease_of_a_dead_process_is_taken_over(ws: Workspace) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    ws.acquire_lease("stats", "bob", ttl_s=3600, pid=child.pid)
    ws.modify("stats", "alice", nb("x"), None, "bob's shell is gone")
    takeover = [e for e in ws.audit_log() if e.action == "lease-takeover"][-1]
    assert f"process {child.pid}" in takeover.details["why"]
    assert ws.leases() == []


def test_ttl_only_lease_survives_its_process(ws: Workspace) -> None:
    ws.acquire_lease("stats", "bob", ttl_s=3600, bind_process=False)
    with pytest.raises(LeaseError):
        ws.acquire_lease("stats", "alice")


@pytest.mark.parametrize("name", ["", "../x", "a/b", "..", "Stats", "1st", "a b", "x" * 65, "a\\b"])
def test_invalid_component_names(ws: Workspace, name: str) -> None:
    before = snapshot(ws)
    with pytest.raises(InvalidNameError, match="component name .* is invalid"):
        ws.register_component(name, "x.ipynb", "alice")
    with pytest.raises(InvalidNameError):
        ws.modify(name, "alice", nb("x"), None, "m")
    assert snapshot(ws) == before


@pytest.mark.parametrize("notebook", ["../evil.ipynb", "/etc/passwd", "a/b.ipynb", "", ".."])
def test_invalid_notebook_names(ws: Workspace, notebook: str) -> None:
    with pytest.raises(InvalidNameError, match="notebook name"):
        ws.register_component("evil", notebook, "alice")
    assert [c.name for c in ws.components()] == ["stats"]


def test_unknown_component_and_unknown_digest(ws: Workspace) -> None:
    v1 = ws.modify("stats", "alice", nb("x = 1"), None, "first")
    before = snapshot(ws)
    with pytest.raises(UnknownComponentError, match=r"component 'nope' is not registered .*known: stats"):
        ws.modify("nope", "alice", nb("x"), None, "m")
    with pytest.raises(UnknownComponentError):
        ws.acquire_lease("nope", "alice")
    absent = sha(b"not stored")
    with pytest.raises(UnknownVersionError, match=f"{absent} is not a version of component 'stats'"):
        ws.restore("stats", absent, "alice", v1.digest)
    with pytest.raises(MissingObjectError, match="not in the store"):
        ws.pin(absent, "keep", actor="alice")
    with pytest.raises(ValueError, match="not a digest"):
        ws.restore("stats", "xyz", "alice", v1.digest)
    with pytest.raises(ValueError, match="not a sha256 digest"):
        ws.modify("stats", "alice", nb("x"), "abc", "bad base")
    with pytest.raises(ValueError, match="not notebook JSON"):
        ws.modify("stats", "alice", b"not json", v1.digest, "bad content")
    assert snapshot(ws) == before


def test_corrupted_object_blocks_restore_and_changes_nothing(ws: Workspace) -> None:
    v1 = ws.modify("stats", "alice", nb("x = 1"), None, "first")
    v2 = ws.modify("stats", "alice", nb("x = 2"), v1.digest, "second")
    path = ws.store.path_of(v1.digest)
    os.chmod(path, 0o644)
    path.write_bytes(nb("x = 666"))
    before = snapshot(ws)
    with pytest.raises(CorruptObjectError, match=f"object {v1.digest} .* is corrupted"):
        ws.restore("stats", v1.digest, "alice", v2.digest)
    assert snapshot(ws) == before


def test_truncated_database_is_refused_untouched(tmp_path: Path, researchers: Researchers) -> None:
    researchers(tmp_path, "alice")
    with Workspace.open(tmp_path) as ws:
        ws.register_component("stats", "stats.ipynb", "alice")
        for i in range(30):
            cur = ws.current("stats")
            ws.modify("stats", "alice", nb(f"x = {i}\n" + "y" * 2000), cur and cur.digest, f"v{i}")
    db = tmp_path / ".tcpkit" / "tcpkit.db"
    full = db.read_bytes()
    for size in (len(full) // 2, 50, 0):
        db.write_bytes(full[:size])
        with pytest.raises(CorruptDatabaseError, match="is damaged.*nothing was changed"):
            Workspace.open(tmp_path)
        assert db.read_bytes() == full[:size]
    db.write_bytes(full)
    with Workspace.open(tmp_path) as ws:
        assert len(ws.versions("stats")) == 30


def test_locked_database_retries_then_fails_clearly(tmp_path: Path, researchers: Researchers) -> None:
    researchers(tmp_path, "alice")
    with Workspace.open(tmp_path) as setup:
        setup.register_component("stats", "stats.ipynb", "alice")
        v1 = setup.modify("stats", "alice", nb("x = 1"), None, "first")
    ws = Workspace.open(tmp_path, lock_timeout_s=0.3)
    before = snapshot(ws)
    blocker = sqlite3.connect(tmp_path / ".tcpkit" / "tcpkit.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        start = time.monotonic()
        with pytest.raises(DatabaseLockedError, match=r"stayed locked by another process for 0.3 s; nothing was changed"):
            ws.modify("stats", "alice", nb("x = 2"), v1.digest, "blocked")
        assert time.monotonic() - start >= 0.3
        assert ws.current("stats") == v1  # readers are not blocked (WAL)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert snapshot(ws) == before
    ws.modify("stats", "alice", nb("x = 2"), v1.digest, "after the lock")
    ws.close()


def _run(component: str, gate: str, inputs_digest: str, decision: str, report: str | None) -> GateRun:
    return GateRun(component=component, gate=gate, input_digest=inputs_digest,
                   inputs={"notebook": inputs_digest}, decision=decision, metrics={"fpr": 0.01, "n": 3},
                   criteria=[{"metric": "fpr", "op": "<=", "threshold": 0.02, "value": 0.01, "ok": True,
                              "reason": "0.01 <= 0.02"}],
                   executed_notebook_digest=report, report_digest=report, envelope_digest=None,
                   runner="alice", started_at="2025-01-01T00:00:00+00:00", duration_s=1.5)


def test_gate_runs_round_trip_and_lookup(ws: Workspace) -> None:
    report = ws.store.put_bytes(b"<html>report</html>")
    inputs = sha(b"inputs")
    failed = _run("stats", "DEVELOPMENT", inputs, "failed", report)
    passed = _run("stats", "DEVELOPMENT", inputs, "passed", report)
    first = ws.record_gate_run(failed)
    second = ws.record_gate_run(passed)
    assert second > first
    found = ws.find_passing_run("stats", "DEVELOPMENT", inputs)
    assert found is not None and found.run_id == second
    assert found == GateRun(**{**passed.__dict__, "run_id": second})
    assert ws.find_passing_run("stats", "TESTING", inputs) is None
    assert [r.decision for r in ws.gate_runs("stats")] == ["failed", "passed"]
    assert ws.gate_runs() == ws.gate_runs("stats")
    with pytest.raises(ValueError, match="gate 'QA' is unknown"):
        ws.record_gate_run(_run("stats", "QA", inputs, "passed", report))
    with pytest.raises(ValueError, match="decision 'maybe'"):
        ws.record_gate_run(_run("stats", "TESTING", inputs, "maybe", report))
    with pytest.raises(MissingObjectError):
        ws.record_gate_run(_run("stats", "TESTING", inputs, "passed", sha(b"absent")))
    with pytest.raises(UnknownComponentError):
        ws.record_gate_run(_run("nope", "TESTING", inputs, "passed", report))
    assert len(ws.gate_runs()) == 2
    ws.set_level("stats", "DEVELOPMENT", "alice")
    assert ws.component("stats").level == "DEVELOPMENT"


def test_find_run_returns_the_latest_run_with_the_key_whatever_its_decision(ws: Workspace) -> None:
    report = ws.store.put_bytes(b"<html>report</html>")
    inputs = sha(b"inputs")
    first = ws.record_gate_run(_run("stats", "DEVELOPMENT", inputs, "passed", report))
    assert (found := ws.find_run("stats", "DEVELOPMENT", inputs)) is not None and found.run_id == first
    second = ws.record_gate_run(_run("stats", "DEVELOPMENT", inputs, "failed", report))
    found = ws.find_run("stats", "DEVELOPMENT", inputs)
    assert found is not None and (found.run_id, found.decision) == (second, "failed")
    assert ws.find_run("stats", "DEVELOPMENT", sha(b"other")) is None
    assert ws.find_run("stats", "TESTING", inputs) is None


def test_configuration_error_note_is_audited_shown_by_status_and_cleared(ws: Workspace) -> None:
    ws.set_level("stats", "PRODUCTION", "alice")
    entries = len(ws.audit_log())
    ws.note_configuration_error("stats", "pipeline.toml:3: n must be an int", actor="alice")
    ws.note_configuration_error("stats", "pipeline.toml:3: n must be an int", actor="alice")  # unchanged
    assert len(ws.audit_log()) == entries + 1
    (row,) = ws.status()
    assert (row.level, row.configuration_error) == ("PRODUCTION", "pipeline.toml:3: n must be an int")
    assert list(ws.configuration_errors()) == ["stats"]
    ws.note_configuration_error("stats", None, actor="alice")
    ws.note_configuration_error("stats", None, actor="alice")
    assert len(ws.audit_log()) == entries + 2 and ws.verify_audit() is None
    assert ws.status()[0].configuration_error is None and ws.configuration_errors() == {}
    with pytest.raises(UnknownComponentError):
        ws.note_configuration_error("nope", "x", actor="alice")


def test_gc_keeps_last_n_and_referenced_objects(ws: Workspace) -> None:
    digests = []
    cur = None
    for i in range(6):
        cur = ws.modify("stats", "alice", nb(f"x = {i}"), cur and cur.digest, f"v{i}")
        digests.append(cur.digest)
    ws.pin(digests[0], "frozen module", actor="alice")
    ws.record_gate_run(_run("stats", "DEVELOPMENT", sha(b"in"), "passed", digests[1]))
    orphan = ws.store.put_bytes(b"orphan")
    young = ws.gc(keep_last=2, actor="alice")  # default grace: the fresh orphan stays
    assert set(young.objects_removed) == {digests[2], digests[3]}
    assert young.versions_pruned == (("stats", 3), ("stats", 4))
    assert ws.store.has(orphan)
    old = ws.gc(keep_last=2, grace_s=0, actor="alice")
    assert old.objects_removed == (orphan,)
    for kept in (digests[0], digests[1], digests[4], digests[5]):
        ws.store.verify(kept)
    assert [s.versions_kept for s in ws.status()] == [4]
    ws.set_keep_last(1, "alice")
    assert ws.keep_last == 1
    assert ws.gc(grace_s=0, actor="alice").objects_removed == (digests[4],)


def test_audit_chain_detects_hand_edits(ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    v1 = ws.modify("stats", "alice", nb("x = 1"), None, "first")
    ws.modify("stats", "bob", nb("x = 2"), v1.digest, "second")
    ws.audit("note", "bob", {"text": "hello"})
    assert ws.verify_audit() is None
    assert main(["audit", "verify", "--root", str(tmp_path)]) == 0
    conn = sqlite3.connect(tmp_path / ".tcpkit" / "tcpkit.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET details = replace(details, 'stats', 'other') WHERE seq = 2")
    conn.commit()
    conn.close()
    broken = ws.verify_audit()
    assert broken is not None and broken.seq == 2 and "edited" in broken.reason
    capsys.readouterr()
    assert main(["audit", "verify", "--root", str(tmp_path)]) == 1
    assert "audit chain broken at audit entry 2 (modify by alice" in capsys.readouterr().err


def test_cli_commands(ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                      monkeypatch: pytest.MonkeyPatch) -> None:
    root = str(tmp_path)
    v1 = ws.modify("stats", "alice", nb("x = 1"), None, "first")
    ws.modify("stats", "bob", nb("x = 2"), v1.digest, "second")
    capsys.readouterr()
    assert main(["backups", "stats", "--json", "--root", root]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["seq"], r["author"], r["message"], r["stored"]) for r in rows] == [
        (1, "alice", "first", True), (2, "bob", "second", True)]
    assert main(["backups", "stats", "--root", root]) == 0
    assert v1.digest[:16] in capsys.readouterr().out
    monkeypatch.setenv("TCPKIT_USER", "bob")
    assert main(["restore", "stats", v1.digest[:12], "--root", root]) == 0
    out = capsys.readouterr().out
    assert f"restored stats to {v1.digest} as version 3" in out and " ms" in out
    assert ws.current("stats").author == "bob"  # type: ignore[union-attr]
    assert main(["restore", "stats", "abcdef", "--root", root]) == 2
    assert "abcdef is not a version of component 'stats'" in capsys.readouterr().err
    assert main(["restore", "nope", "abcdef", "--root", root]) == 2
    assert main(["lease", "acquire", "stats", "--as", "alice", "--ttl", "60", "--reason", "edit", "--root", root]) == 0
    assert main(["lease", "acquire", "stats", "--as", "bob", "--root", root]) == 1
    assert "leased to alice" in capsys.readouterr().err
    assert main(["lease", "list", "--json", "--root", root]) == 0
    [lease] = json.loads(capsys.readouterr().out)
    assert lease["holder"] == "alice" and lease["live"] and lease["pid"] == os.getppid()
    assert main(["status", "--json", "--root", root]) == 0
    [status] = json.loads(capsys.readouterr().out)
    assert (status["owner"], status["contributors"], status["versions"], status["lease_holder"]) == (
        "alice", ["bob"], 3, "alice")
    assert main(["status", "--root", root]) == 0
    assert main(["lease", "release", "stats", "--as", "alice", "--root", root]) == 0
    assert main(["contributor", "add", "stats", "eve", "--as", "bob", "--root", root]) == 1
    assert "only its owner alice" in capsys.readouterr().err
    assert main(["contributor", "add", "stats", "eve", "--as", "alice", "--root", root]) == 0
    assert main(["gc", "--keep-last", "1", "--grace", "0", "--json", "--root", root]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["keep_last"] == 1
    assert main(["status", "--root", str(tmp_path / "nowhere")]) == 2
    assert "no tcpkit workspace" in capsys.readouterr().err


# --- the workspace as a group shares it -----------------------------------------------------------
def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_modify_and_restore_keep_the_notebook_mode(ws: Workspace) -> None:
    old_umask = os.umask(0o022)
    try:
        v1 = ws.modify("stats", "alice", nb("x = 1"), None, "first")
        path = ws.notebooks_dir / "stats.ipynb"
        assert _mode(path) == 0o644  # a new file: what the umask gives, not mkstemp's 0600
        os.chmod(path, 0o664)  # a group-writable notebook stays group-writable
        v2 = ws.modify("stats", "bob", nb("x = 2"), v1.digest, "second")
        assert _mode(path) == 0o664
        ws.restore("stats", v1.digest, "bob", v2.digest)
        assert _mode(path) == 0o664
    finally:
        os.umask(old_umask)


def test_restore_has_the_same_base_check_as_modify(ws: Workspace) -> None:
    v1 = ws.modify("stats", "alice", nb("x = 1"), None, "first")
    v2 = ws.modify("stats", "alice", nb("x = 2"), v1.digest, "second")
    ws.modify("stats", "bob", nb("x = 3"), v2.digest, "third, by someone else meanwhile")
    before = snapshot(ws)
    with pytest.raises(ConflictError, match=f"changed since your base {v2.digest}") as err:
        ws.restore("stats", v1.digest, "alice", v2.digest)
    assert "x = 3" in err.value.diff
    assert snapshot(ws) == before


def test_missing_content_is_a_workspace_error_naming_the_retention_rule(ws: Workspace) -> None:
    cur = None
    for i in range(4):
        cur = ws.modify("stats", "alice", nb(f"x = {i}"), cur and cur.digest, f"v{i}")
    first = ws.versions("stats")[0]
    ws.gc(keep_last=2, grace_s=0, actor="alice")
    before = snapshot(ws)
    with pytest.raises(WorkspaceError) as err:  # a caller catching the workspace's errors sees it
        ws.restore("stats", first.digest, "alice", cur.digest)  # type: ignore[union-attr]
    assert isinstance(err.value, MissingObjectError)
    message = str(err.value)
    assert f"version 1 ({first.digest})" in message
    assert "retention removed its content" in message and "keep_last=2" in message
    assert "only the last 2 versions of each component" in message
    assert snapshot(ws) == before


def test_conflict_with_an_unreadable_current_version_blames_the_current_side(ws: Workspace) -> None:
    v1 = ws.modify("stats", "alice", nb("x = 1"), None, "first")
    v2 = ws.modify("stats", "alice", nb("x = 2"), v1.digest, "second")
    path = ws.store.path_of(v2.digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"damaged")
    with pytest.raises(ConflictError) as err:
        ws.modify("stats", "bob", nb("x = 9"), v1.digest, "stale")
    assert f"content of current {v2.digest[:12]} is not available" in err.value.diff
    assert "base" not in err.value.diff


def test_audit_chain_recomputes_from_the_documented_recipe(ws: Workspace) -> None:
    """Someone outside tcpkit recomputes every hash from the module docstring alone."""
    import base64
    import re

    from tcpkit.release import audit as audit_module
    from tcpkit.release.dsse import pae

    ws.modify("stats", "alice", nb("x = 1"), None, "first ü")  # non-ASCII kept as is
    doc = audit_module.__doc__ or ""
    block = re.search(r"::\n\n(.*?\})\n", doc, re.S)
    assert block is not None, "the docstring shows the hashed object as a literal block"
    documented = re.findall(r'"(\w+)":', block.group(1))
    rows = ws.db.query("SELECT * FROM audit ORDER BY seq")
    columns = {"action": "action", "actor": "actor", "at": "at", "details": "details",
               "prev": "prev_hash", "seq": "seq"}
    assert sorted(documented) == sorted(columns)
    trust = {r.name: r for r in __import__("tcpkit.release.keys", fromlist=["TrustList"]).TrustList.load(
        ws.trust_dir)}
    for row in rows:
        obj = {key: row[columns[key]] for key in documented}
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(text.encode("utf-8")).hexdigest() == row["hash"]
        message = pae(audit_module.AUDIT_PAYLOAD_TYPE, row["hash"].encode("ascii"))
        [ed] = [s for s in json.loads(row["signatures"]) if s["algorithm"] == "ed25519"]
        trust[row["actor"]].key("ed25519").key.verify(base64.b64decode(ed["sig"]), message)


def test_cli_restore_says_what_it_backed_up_and_where(ws: Workspace, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    v1 = ws.modify("stats", "alice", nb("x = 1"), None, "first")
    ws.modify("stats", "alice", nb("x = 2"), v1.digest, "second")
    (ws.notebooks_dir / "stats.ipynb").write_bytes(nb("edited by hand"))
    capsys.readouterr()
    assert main(["restore", "stats", v1.digest[:12], "--as", "alice", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    backup = ws.versions("stats")[-2]
    assert backup.kind == "backup" and backup.digest == sha(nb("edited by hand"))
    where = ws.store.path_of(backup.digest)
    assert (f"backed up notebooks/stats.ipynb as found on disk first: version {backup.seq} "
            f"({backup.digest[:12]}), stored at {where}") in out
    assert where.is_file()
    # unchanged on disk: the current version is the backup, and the message says so
    assert main(["restore", "stats", v1.digest[:12], "--as", "alice", "--root", str(tmp_path),
                 "--base", ws.current("stats").digest[:12]]) == 0  # type: ignore[union-attr]
    assert "on disk was version" in capsys.readouterr().out
    # a stale --base is refused like a stale modify
    assert main(["restore", "stats", v1.digest[:12], "--as", "alice", "--root", str(tmp_path),
                 "--base", backup.digest[:12]]) == 1
    assert "changed since your base" in capsys.readouterr().err
