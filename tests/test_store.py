"""The content-addressed object store, and a Hypothesis state machine over store + retention."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tcpkit.release.keys import HybridSigner
from tcpkit.release.store import (
    CorruptObjectError,
    InvalidDigestError,
    MissingObjectError,
    ObjectStore,
    check_digest,
)
from tcpkit.release.workspace import GateRun, Workspace


def _corrupt(store: ObjectStore, digest: str, data: bytes = b"tampered") -> None:
    path = store.path_of(digest)
    os.chmod(path, 0o644)
    path.write_bytes(data)


def test_layout_is_dvc_style_and_put_is_idempotent(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    digest = store.put_bytes(b"hello")
    assert digest == hashlib.sha256(b"hello").hexdigest()
    assert store.path_of(digest) == tmp_path / "objects" / "sha256" / digest[:2] / digest[2:]
    mtime = store.path_of(digest).stat().st_mtime_ns
    assert store.put_bytes(b"hello") == digest
    assert store.path_of(digest).stat().st_mtime_ns == mtime  # stored once, not rewritten
    assert list(store.iter_digests()) == [digest]
    assert store.get_bytes(digest) == b"hello"
    assert not os.access(store.path_of(digest), os.W_OK) or os.geteuid() == 0


def test_put_file_streams_and_matches_put_bytes(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3 << 20))
    digest = store.put_file(src)
    assert digest == hashlib.sha256(src.read_bytes()).hexdigest()
    assert store.put_bytes(src.read_bytes()) == digest
    assert store.get_bytes(digest) == src.read_bytes()
    assert [p.name for p in (tmp_path / "objects" / "sha256").rglob("*tcpkit-tmp*")] == []


def test_corrupted_object_is_reported_never_returned(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    digest = store.put_bytes(b"precious")
    _corrupt(store, digest)
    with pytest.raises(CorruptObjectError, match=f"object {digest} .* is corrupted"):
        store.get_bytes(digest)
    with pytest.raises(CorruptObjectError):
        store.verify(digest)
    assert store.path_of(digest).read_bytes() == b"tampered"  # reporting changed nothing
    assert store.put_bytes(b"precious") == digest  # a put of the true bytes heals it
    assert store.get_bytes(digest) == b"precious"


def test_truncated_object_is_corrupted(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    digest = store.put_bytes(b"0123456789" * 100)
    _corrupt(store, digest, (b"0123456789" * 100)[:500])
    with pytest.raises(CorruptObjectError):
        store.get_bytes(digest)


def test_missing_and_malformed_digests(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    absent = hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(MissingObjectError, match=f"object {absent} is not in the store"):
        store.get_bytes(absent)
    assert not store.has(absent)
    assert store.remove(absent) == 0
    for bad in ["", "abc", "../" + "a" * 61, "A" * 64, "g" * 64, absent + "0"]:
        with pytest.raises(InvalidDigestError, match="is not a sha256 digest"):
            store.path_of(bad)
    with pytest.raises(InvalidDigestError):
        check_digest(None)
    with pytest.raises(TypeError):
        store.put_bytes("text")  # type: ignore[arg-type]
    assert list(store.iter_digests()) == []


def test_temporaries_are_not_objects(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    digest = store.put_bytes(b"x")
    (store.path_of(digest).parent / f".{digest[2:]}.tcpkit-tmp-abc").write_bytes(b"half")
    assert list(store.iter_digests()) == [digest]


def test_remove_frees_bytes(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    digest = store.put_bytes(b"12345")
    assert store.remove(digest) == 5
    assert not store.has(digest)


# --- Hypothesis: the store under the workspace's retention rules ------------------------------

COMPONENTS = ("one", "two")
SIGNERS = tuple(HybridSigner.generate(name) for name in ("alice", "bob", "ci"))
CONTENTS = [json.dumps({"cells": [], "v": i}).encode() for i in range(6)]  # few values: dedup happens


class StoreRetention(RuleBasedStateMachine):
    """Model: versions per component, pins, gate-run references, and the set of stored objects."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="tcpkit-hyp-"))
        self.ws = Workspace.open(self.dir)
        for signer in SIGNERS:  # the researchers act with keys the workspace trusts
            (self.ws.trust_dir / f"{signer.name}.pub").write_text(signer.public_record().to_json())
            self.ws.add_signer(signer)
        for name in COMPONENTS:
            self.ws.register_component(name, f"{name}.ipynb", "alice", ["bob"])
        self.history: dict[str, list[str]] = {name: [] for name in COMPONENTS}
        self.stored: set[str] = set()
        self.pinned: set[str] = set()
        self.run_refs: set[str] = set()

    def teardown(self) -> None:
        self.ws.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(component=st.sampled_from(COMPONENTS), content=st.sampled_from(CONTENTS),
          author=st.sampled_from(["alice", "bob"]))
    def modify(self, component: str, content: bytes, author: str) -> None:
        base = self.history[component][-1] if self.history[component] else None
        version = self.ws.modify(component, author, content, base, "edit")
        assert version.digest == hashlib.sha256(content).hexdigest()
        self.history[component].append(version.digest)
        self.stored.add(version.digest)

    @rule(data=st.binary(max_size=64))
    def orphan(self, data: bytes) -> None:
        self.stored.add(self.ws.store.put_bytes(data))

    @precondition(lambda self: any(self.history.values()))
    @rule(data=st.data())
    def restore(self, data: st.DataObject) -> None:
        component = data.draw(st.sampled_from([c for c in COMPONENTS if self.history[c]]))
        digest = data.draw(st.sampled_from(self.history[component]))
        before = len(self.ws.versions(component))
        if digest in self.stored:
            version = self.ws.restore(component, digest, "bob", self.history[component][-1])
            assert version.digest == digest and version.kind == "restore"
            self.history[component].append(digest)
        else:
            with pytest.raises(MissingObjectError, match="retention removed its content"):
                self.ws.restore(component, digest, "bob", self.history[component][-1])
            assert len(self.ws.versions(component)) == before

    @precondition(lambda self: bool(self.stored))
    @rule(data=st.data())
    def pin(self, data: st.DataObject) -> None:
        digest = data.draw(st.sampled_from(sorted(self.stored)))
        self.ws.pin(digest, "frozen artifact", actor="alice")
        self.pinned.add(digest)

    @precondition(lambda self: bool(self.stored))
    @rule(data=st.data(), component=st.sampled_from(COMPONENTS))
    def gate_run(self, data: st.DataObject, component: str) -> None:
        digest = data.draw(st.sampled_from(sorted(self.stored)))
        run = GateRun(component=component, gate="DEVELOPMENT", input_digest="0" * 64, inputs={},
                      decision="passed", metrics={}, criteria=[], executed_notebook_digest=digest,
                      report_digest=None, envelope_digest=None, runner="ci",
                      started_at="2025-01-01T00:00:00+00:00", duration_s=0.1)
        self.ws.record_gate_run(run)
        self.run_refs.add(digest)

    @rule(keep_last=st.integers(1, 3))
    def gc(self, keep_last: int) -> None:
        report = self.ws.gc(keep_last, grace_s=0.0, actor="alice")
        keep = {d for h in self.history.values() for d in h[-keep_last:]} | self.pinned | self.run_refs
        expected = self.stored & keep
        assert set(report.objects_removed) == self.stored - keep
        self.stored = expected

    @invariant()
    def store_matches_model_and_verifies(self) -> None:
        assert set(self.ws.store.iter_digests()) == self.stored
        for digest in self.stored:
            self.ws.store.verify(digest)

    @invariant()
    def versions_gapless_and_current_on_disk(self) -> None:
        for name in COMPONENTS:
            versions = self.ws.versions(name)
            assert [v.seq for v in versions] == list(range(1, len(versions) + 1))
            assert [v.digest for v in versions] == self.history[name]
            if versions:
                on_disk = self.ws.notebook_path(name).read_bytes()
                assert hashlib.sha256(on_disk).hexdigest() == versions[-1].digest
                assert versions[-1].digest in self.stored  # the current version is always kept

    @invariant()
    def audit_chain_holds(self) -> None:
        assert self.ws.verify_audit() is None


TestStoreRetention = StoreRetention.TestCase
TestStoreRetention.settings = settings(
    max_examples=25, stateful_step_count=20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_copy_object_keeps_the_destination_mode_or_the_umask(tmp_path: Path) -> None:
    from tcpkit.release.store import copy_object

    store = ObjectStore(tmp_path / "objects")
    digest = store.put_bytes(b"content")
    assert os.stat(store.path_of(digest)).st_mode & 0o777 == 0o444  # objects stay read-only
    old_umask = os.umask(0o002)
    try:
        fresh = tmp_path / "out" / "fresh.txt"
        copy_object(store, digest, fresh)
        assert fresh.stat().st_mode & 0o777 == 0o664  # 0666 & ~umask, not mkstemp's 0600
        shared = tmp_path / "shared.txt"
        shared.write_bytes(b"old")
        os.chmod(shared, 0o640)
        copy_object(store, digest, shared)
        assert shared.read_bytes() == b"content" and shared.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old_umask)
