"""Multi-process stress test of the workspace: concurrent modifications, leases and SIGKILLs.

Eight processes modify four components at random, sometimes under explicit
leases (short TTLs) and sometimes under the transient lease of a free
component, rebasing on conflicts. Three of them are killed with SIGKILL in the
middle of a write, inside the open transaction after the backup and the new
object were stored, holding an explicit lease bound to their pid: two while
the notebook's temporary file is half written, one just after the new
notebook file was renamed into place but before COMMIT (its content must
survive as a ``backup`` version). A fourth is killed at a random moment. Afterwards the workspace must show: no lost version, no
torn notebook file, every stored object verifying, gapless sequence numbers,
and an audit log that accounts for every committed version. The figures are
printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tcpkit.release.store import digest_bytes
from tcpkit.release.workspace import ConflictError, LeaseError, Workspace

PROCESSES = 8
MODIFICATIONS = 40  # per process
COMPONENTS = ("alpha", "beta", "gamma", "delta")
HOOK_KILLED = (1, 4, 6)  # killed mid-write at a deliberate point
AFTER_RENAME = 6  # ... this one after its notebook file was replaced, before COMMIT
RANDOM_KILLED = 7  # killed at a random moment

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="fork + /proc based liveness checks"),
]


def _notebook(text: str) -> bytes:
    cell = {"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {},
            "outputs": [], "source": text}
    nb = {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    return (json.dumps(nb, indent=1) + "\n").encode()


def _worker(root: str, index: int, journal: str, hook_at: int | None, stuck: object) -> None:
    import tcpkit.release.workspace as workspace_module

    me = f"w{index}"
    rng = random.Random(1000 + index)
    ws = Workspace.open(root, lock_timeout_s=60.0)
    if hook_at is not None:
        real_write = workspace_module.write_atomic
        calls = {"n": 0}

        def half_write(path: Path, data: bytes, *, mode: int | None = None) -> None:
            calls["n"] += 1
            if calls["n"] < hook_at:
                real_write(path, data, mode=mode)
                return
            if index == AFTER_RENAME:  # the new file is in place, the transaction not committed
                real_write(path, data, mode=mode)
                Path(journal + ".uncommitted").write_text(digest_bytes(data))
            else:  # the temporary file is half written
                tmp = path.with_name(f".{path.name}.tcpkit-tmp-killed{index}")
                with open(tmp, "wb") as handle:
                    handle.write(data[: len(data) // 2])
                    handle.flush()
                    os.fsync(handle.fileno())
            stuck.set()  # type: ignore[attr-defined]
            time.sleep(120)  # the parent kills us here

        workspace_module.write_atomic = half_write  # type: ignore[assignment]
    stats = {"conflicts": 0, "lease_refusals": 0, "explicit_leases": 0}
    done = 0
    with open(journal, "a", encoding="utf-8") as log:
        while done < MODIFICATIONS:
            component = rng.choice(COMPONENTS)
            explicit = hook_at is not None or rng.random() < 0.3
            try:
                if explicit:
                    ws.acquire_lease(component, me, ttl_s=rng.uniform(0.5, 2.0) if hook_at is None
                                     else 60.0, reason="stress")
                    stats["explicit_leases"] += 1
                for _ in range(rng.randint(1, 3)):
                    cur = ws.current(component)
                    content = _notebook(f"# {me} modification {done}\nx = {rng.random()!r}\n")
                    version = ws.modify(component, me, content, None if cur is None else cur.digest,
                                        f"{me} #{done}")
                    log.write(json.dumps([component, version.seq, version.digest, me]) + "\n")
                    log.flush()
                    os.fsync(log.fileno())
                    done += 1
                    if done >= MODIFICATIONS:
                        break
                if explicit:
                    with contextlib.suppress(LeaseError):  # expired and taken over meanwhile
                        ws.release_lease(component, me)
            except ConflictError:
                stats["conflicts"] += 1
            except LeaseError:
                stats["lease_refusals"] += 1
                time.sleep(rng.uniform(0.001, 0.02))
    with open(journal + ".stats", "w", encoding="utf-8") as handle:
        json.dump(stats, handle)
    ws.close()


def test_eight_processes_with_sigkills(tmp_path: Path, researchers: Callable[..., Path]) -> None:
    started = time.monotonic()
    members = [f"w{i}" for i in range(PROCESSES)]
    researchers(tmp_path, *members)  # forked workers find their keys through $TCPKIT_KEYS
    with Workspace.open(tmp_path) as ws:
        for i, name in enumerate(COMPONENTS):
            ws.register_component(name, f"{name}.ipynb", members[i], [m for m in members if m != members[i]])
    ctx = mp.get_context("fork")
    stuck = {i: ctx.Event() for i in HOOK_KILLED}
    rng = random.Random(7)
    procs = {}
    for i in range(PROCESSES):
        hook_at = rng.randint(15, 30) if i in HOOK_KILLED else None
        journal = str(tmp_path / f"journal-{i}.jsonl")
        procs[i] = ctx.Process(target=_worker, args=(str(tmp_path), i, journal, hook_at, stuck.get(i)))
    for p in procs.values():
        p.start()
    kills = {"mid_write": 0, "random_time": 0}
    random_kill_at = time.monotonic() + rng.uniform(2.0, 4.0)
    pending = set(HOOK_KILLED)
    random_pending = True
    deadline = time.monotonic() + 240
    while (pending or random_pending) and time.monotonic() < deadline:
        for i in list(pending):
            if stuck[i].wait(0.01):
                os.kill(procs[i].pid, signal.SIGKILL)  # type: ignore[arg-type]
                procs[i].join()
                kills["mid_write"] += 1
                pending.discard(i)
            elif not procs[i].is_alive():
                pending.discard(i)
        if random_pending and time.monotonic() >= random_kill_at:
            if procs[RANDOM_KILLED].is_alive():
                os.kill(procs[RANDOM_KILLED].pid, signal.SIGKILL)  # type: ignore[arg-type]
                kills["random_time"] += 1
            random_pending = False
    for p in procs.values():
        p.join(timeout=240)
        assert not p.is_alive(), "a worker hung"
    for i, p in procs.items():
        if i not in HOOK_KILLED and not (i == RANDOM_KILLED and kills["random_time"]):
            assert p.exitcode == 0, f"worker {i} failed with exit code {p.exitcode}"
    assert kills["mid_write"] == len(HOOK_KILLED)

    journaled: list[tuple[str, int, str, str]] = []
    worker_stats = {"conflicts": 0, "lease_refusals": 0, "explicit_leases": 0}
    for i in range(PROCESSES):
        path = tmp_path / f"journal-{i}.jsonl"
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
                if line.endswith("\n"):  # a line cut by SIGKILL is not a completed report
                    journaled.append(tuple(json.loads(line)))  # type: ignore[arg-type]
        stats_path = Path(str(path) + ".stats")
        if stats_path.exists():
            for key, value in json.loads(stats_path.read_text()).items():
                worker_stats[key] += value

    ws = Workspace.open(tmp_path)
    checks: dict[str, int] = {}
    # no torn file: each notebook is complete notebook JSON whose bytes are a stored object
    ahead = 0
    for name in COMPONENTS:
        data = ws.notebook_path(name).read_bytes()
        assert json.loads(data)["cells"], f"notebook of {name} is torn"
        assert ws.store.has(digest_bytes(data))
        current = ws.current(name)
        assert current is not None
        ahead += digest_bytes(data) != current.digest
    checks["notebooks_complete"] = len(COMPONENTS)
    # sequence numbers gapless; no lost version (every journaled modification is recorded)
    recorded: dict[tuple[str, int], str] = {}
    for name in COMPONENTS:
        versions = ws.versions(name)
        assert [v.seq for v in versions] == list(range(1, len(versions) + 1)), f"gap in {name}"
        for v in versions:
            recorded[(name, v.seq)] = v.digest
    for component, seq, digest, _who in journaled:
        assert recorded.get((component, seq)) == digest, f"lost version {component} #{seq}"
    checks["versions_recorded"] = len(recorded)
    checks["journaled_modifications_found"] = len(journaled)
    # every stored object verifies; every version's object is stored
    objects = list(ws.store.iter_digests())
    for digest in objects:
        ws.store.verify(digest)
    assert set(recorded.values()) <= set(objects)
    checks["objects_verified"] = len(objects)
    # the audit chain holds and accounts for every committed version, one entry each
    assert ws.verify_audit() is None
    log = ws.audit_log()
    audited = {(e.details["component"], e.details["seq"]): e.details["digest"] for e in log
               if e.action in ("modify", "backup", "restore", "import")}
    assert audited == recorded
    for component, seq, digest, who in journaled:
        entry = next(e for e in log if e.action == "modify" and e.details.get("seq") == seq
                     and e.details["component"] == component)
        assert entry.actor == who and entry.details["digest"] == digest
    checks["audit_entries"] = len(log)
    takeovers = sum(e.action == "lease-takeover" for e in log)
    # the writers killed mid-write left only temporaries; a final change per component succeeds
    for i, name in enumerate(COMPONENTS):
        cur = ws.current(name)
        assert cur is not None
        final = ws.modify(name, f"w{i}", _notebook(f"final {name}"), cur.digest, "final check")
        assert digest_bytes(ws.notebook_path(name).read_bytes()) == final.digest
    # the uncommitted write of the writer killed after its rename was kept as a backup version
    uncommitted = (tmp_path / f"journal-{AFTER_RENAME}.jsonl.uncommitted").read_text()
    assert any(v.digest == uncommitted and v.kind == "backup" for name in COMPONENTS
               for v in ws.versions(name))
    backups = sum(v.kind == "backup" for name in COMPONENTS for v in ws.versions(name))
    report = ws.gc(grace_s=0.0, actor="w0")
    assert report.temporaries_removed >= len(HOOK_KILLED) - 1
    for name in COMPONENTS:
        for v in ws.versions(name)[-10:]:
            ws.store.verify(v.digest)
    assert ws.verify_audit() is None
    ws.close()
    figures = {
        "processes": PROCESSES, "modifications_per_process": MODIFICATIONS,
        "completed_modifications_journaled": len(journaled), "kills": kills,
        "conflicts_rebased": worker_stats["conflicts"], "lease_refusals": worker_stats["lease_refusals"],
        "explicit_leases": worker_stats["explicit_leases"], "lease_takeovers_audited": takeovers,
        "backup_versions": backups, "notebook_files_ahead_of_db": ahead,
        "temporaries_removed_by_gc": report.temporaries_removed, "checks": checks,
        "seconds": round(time.monotonic() - started, 1),
    }
    print("\nworkspace stress figures: " + json.dumps(figures, sort_keys=True))
    assert len(journaled) >= PROCESSES * MODIFICATIONS // 2
    assert takeovers >= 1  # leases of the killed writers (dead pids) were taken over
