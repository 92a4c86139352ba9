"""``bit_identical`` compares every live replica's own serialised state: tests that break it."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tcpkit.detect import gossip
from tcpkit.detect.combine import combine_chan
from tcpkit.detect.crdt import _TRAILER, Entry, State
from tcpkit.detect.gossip import simulate_gossip
from tcpkit.detect.moments import Moments
from tcpkit.release.gates import evaluate, load_pipeline

HARSH = dict(loss=0.3, duplicate=0.2, reorder=0.2, delay=0.2, crashes=0.1)
PIPELINE = Path(__file__).resolve().parents[1] / "notebooks" / "pipeline.toml"


def _criteria(metric: str, gate: str = "STAGING") -> list[Any]:
    spec = load_pipeline(PIPELINE, require_notebooks=False).components["distributed"].gate(gate)
    found = [c for c in spec.criteria if c.metric == metric]
    assert found, f"no {metric} criterion at {gate}"
    return found


def _gate_passes(metric: str, value: object, gate: str = "STAGING") -> bool:
    return evaluate(_criteria(metric, gate), {metric: value}).passed


def _capture(monkeypatch: pytest.MonkeyPatch) -> list[list[bytes]]:
    seen: list[list[bytes]] = []
    real = gossip.audit_replicas

    def spy(wires: Sequence[bytes], *args: Any, **kwargs: Any) -> gossip.ReplicaAudit:
        seen.append(list(wires))
        return real(wires, *args, **kwargs)

    monkeypatch.setattr(gossip, "audit_replicas", spy)
    return seen


@pytest.mark.parametrize("max_rounds", [3, 500])
def test_matrix_rows_serialise_to_the_real_replicas_bytes(
    monkeypatch: pytest.MonkeyPatch, max_rounds: int
) -> None:
    """Mid-run (replicas disagree) and converged: replica i's bytes are the same in both engines."""
    seen = _capture(monkeypatch)
    kwargs: dict[str, Any] = dict(HARSH, seed=2, max_rounds=max_rounds)
    real = simulate_gossip(20, engine="replica", **kwargs)
    fast = simulate_gossip(20, engine="matrix", **kwargs)
    assert seen[0] == seen[1]
    assert real.distinct_states == fast.distinct_states
    assert real.bit_identical == fast.bit_identical == (max_rounds == 500)
    if max_rounds == 3:
        assert real.distinct_states is not None and real.distinct_states > 1


def test_every_live_replica_is_serialised_at_gate_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _capture(monkeypatch)
    result = simulate_gossip(300, seed=1, **HARSH)  # type: ignore[arg-type]
    assert result.engine == "matrix" and result.converged and result.bit_identical
    assert len(seen[0]) == 300 and len(set(seen[0])) == 1
    assert State.from_bytes(seen[0][0]).baseline().n == result.reference.n
    assert _gate_passes("bit_identical", result.bit_identical)


def _drop_one_entry(blob: bytes) -> bytes:
    state = State.from_bytes(blob)
    keep = dict(state.entries)
    keep.pop(sorted(keep)[3])
    return State(keep).to_bytes()


def _flip_one_bit(blob: bytes) -> bytes:
    """The same state with one ulp changed in one mean of its last entry (it still parses)."""
    state = State.from_bytes(blob)
    key = sorted(state.entries)[-1]
    e = state.entries[key]
    mean = np.array(e.moments.mean)
    mean[0] = np.nextafter(mean[0], np.inf)
    other = Entry(key, e.version, Moments(e.moments.n, mean, np.asarray(e.moments.m2)).to_bytes(), e.signature)
    return State({**state.entries, key: other}).to_bytes()


def _flip_raw_byte(blob: bytes) -> bytes:
    """One byte flipped on the wire (CRC fixed up): the payload's own checksum refuses it."""
    body = bytearray(blob[: -_TRAILER.size])
    body[-20] ^= 0x01
    return bytes(body) + _TRAILER.pack(zlib.crc32(bytes(body)))


@pytest.mark.breaks("distributed", "bit_identical")
@pytest.mark.parametrize("engine, n", [("matrix", 300), ("replica", 24)])
@pytest.mark.parametrize("damage", [_drop_one_entry, _flip_one_bit, _flip_raw_byte])
def test_one_damaged_replica_makes_bit_identical_false(
    monkeypatch: pytest.MonkeyPatch, engine: str, n: int, damage: Any
) -> None:
    cls = gossip._MatrixEngine if engine == "matrix" else gossip._ReplicaEngine
    real_wire = cls.wire

    def wire(self: Any, i: int) -> bytes:
        blob = real_wire(self, i)
        return damage(blob) if i == 17 else blob

    monkeypatch.setattr(cls, "wire", wire)
    result = simulate_gossip(n, seed=1, engine=engine, **HARSH)  # type: ignore[arg-type]
    assert result.converged  # the ranks all agree ...
    assert result.distinct_states == 2  # ... but one replica's bytes do not
    assert result.bit_identical is False
    assert not _gate_passes("bit_identical", result.bit_identical)


def test_unreadable_replica_state_makes_bit_identical_false(monkeypatch: pytest.MonkeyPatch) -> None:
    real_wire = gossip._MatrixEngine.wire
    monkeypatch.setattr(
        gossip._MatrixEngine, "wire", lambda self, i: real_wire(self, i)[:-1] if i == 5 else real_wire(self, i)
    )
    result = simulate_gossip(100, seed=0)
    assert result.converged and result.bit_identical is False


def test_a_combine_that_is_not_a_function_of_the_map_makes_bit_identical_false() -> None:
    calls = [0]

    def drifting(parts: Sequence[Moments]) -> Moments:
        calls[0] += 1
        m = combine_chan(parts)
        return Moments(m.n, np.asarray(m.mean) + 1e-9 * calls[0], np.asarray(m.m2))

    result = simulate_gossip(200, seed=0, combine=drifting)
    assert result.converged and result.distinct_states == 1
    assert result.bit_identical is False
    assert not _gate_passes("bit_identical", result.bit_identical)


def test_unconverged_run_is_not_bit_identical_and_audit_off_is_not_evaluated() -> None:
    stuck = simulate_gossip(100, seed=0, loss=0.3, max_rounds=3)
    assert not stuck.converged and stuck.bit_identical is False
    skipped = simulate_gossip(100, seed=0, audit=False)
    assert skipped.bit_identical is None and skipped.distinct_states is None
    assert not _gate_passes("bit_identical", skipped.bit_identical)  # None is "not evaluated"


@pytest.mark.breaks("distributed", "converged")
@pytest.mark.breaks("distributed", "all_mixes_converged")
# --- the other gated gossip metrics, each broken once -----------------------------------------
def test_a_partition_that_never_heals_fails_converged() -> None:
    result = simulate_gossip(60, partitions=[gossip.Partition(0, 1000)], seed=0, max_rounds=25)
    assert not result.converged
    assert not _gate_passes("converged", result.converged)
    assert not _gate_passes("all_mixes_converged", all([True, result.converged]))
    assert _gate_passes("converged", simulate_gossip(60, seed=0).converged)


@pytest.mark.breaks("distributed", "max_rel_error")
def test_forgotten_incarnations_fail_max_rel_error() -> None:
    ok = simulate_gossip(60, crashes=0.2, seed=0)
    broken = simulate_gossip(60, crashes=0.2, seed=0, persist_incarnation=False)
    assert _gate_passes("max_rel_error", ok.max_rel_error)
    assert not _gate_passes("max_rel_error", broken.max_rel_error)


@pytest.mark.breaks("distributed", "rounds_per_log2_n")
def test_gossip_through_one_initiator_fails_rounds_per_log2_n(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = [8, 16, 32, 64]
    good = [simulate_gossip(n, seed=0, audit=False).rounds for n in sizes]
    assert _gate_passes("rounds_per_log2_n", gossip.rounds_per_log2_n(sizes, good))
    real = gossip._contacts

    def one_initiator(rng: np.random.Generator, alive: Any, n: int, fanout: int) -> Any:
        a, b = real(rng, alive, n, fanout)
        keep = a == a.min()  # only the lowest live node starts contacts: no epidemic spread
        return a[keep], b[keep]

    monkeypatch.setattr(gossip, "_contacts", one_initiator)
    slow = [simulate_gossip(n, seed=0, audit=False).rounds for n in sizes]
    slope = gossip.rounds_per_log2_n(sizes, slow)
    assert slope > 2.0
    assert not _gate_passes("rounds_per_log2_n", slope)
    with pytest.raises(ValueError, match="two different"):
        gossip.rounds_per_log2_n([8], [3])
