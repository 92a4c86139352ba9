"""A fault-injecting simulator of push-pull anti-entropy over the moments CRDT.

Each round every live node contacts ``fanout`` peers chosen uniformly at
random; a contact is a push (the initiator's full state to the peer) and a pull
(the peer's full state back), two messages that fail independently. Faults are
drawn from ``seed`` before anything else, so they are the same whatever the
engine and reproducible run to run:

* ``loss`` - a message is dropped with this probability;
* ``duplicate`` - a delivered message is delivered a second time (0-2 rounds later);
* ``delay`` - a message is late by ``k`` rounds with probability ``delay**k``;
* ``reorder`` - a message is held back 1-3 extra rounds so later, fresher states
  overtake it (in a state-based CRDT reordering is observable only as a stale state
  arriving after a fresh one, which is what this produces);
* ``crashes`` - this fraction of nodes crash in rounds 1-4, lose their replica,
  stay down ``downtime`` rounds, restart with a bumped incarnation and republish
  their moments (by then including a second batch of observations);
* ``partitions`` - during ``[start, stop)`` the nodes are split into ``groups``
  random groups and messages between groups are dropped; the partition then heals;
* ``lying`` - this fraction of nodes publish extreme moments (a shifted mean, an
  inflated covariance and an inflated count).

Two engines share that schedule. ``"replica"`` runs real
:class:`~tcpkit.detect.crdt.Replica` objects exchanging serialised
:class:`~tcpkit.detect.crdt.State` bytes (with incarnation files on disk): the
reference for small networks. ``"matrix"`` encodes every replica as a row of
per-key ranks in the CRDT's total order (0 = unknown), so a join is an
elementwise maximum and 10,000 nodes fit in 12.5 MB per version level; it
reports the same convergence and bytes as the replica engine (the tests check
this). Ranks are stored as bit-packed thermometer codes, so the join is a bitwise OR.

At the end of a run (:func:`audit_replicas`) every live replica's state is
serialised on its own, in the wire format of :meth:`State.to_bytes` (the matrix
engine serialises each replica's own row; nothing is deduplicated), the SHA-256
digests are compared, each distinct state is parsed back and combined, and a few
replicas are parsed and combined again from their own bytes: ``bit_identical``
is the outcome of that comparison, so one replica holding one different bit
makes it false.
"""

from __future__ import annotations

import hashlib
import math
import struct
import tempfile
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from tcpkit.detect.combine import make_combine
from tcpkit.detect.crdt import (
    _ENTRY_HEADER,
    _STATE_HEADER,
    _TRAILER,
    Digest,
    Entry,
    Replica,
    State,
    StateFormatError,
    Version,
    entry_wire,
    state_wire,
)
from tcpkit.detect.moments import Moments

Engine = Literal["auto", "matrix", "replica"]
Exchange = Literal["delta", "full"]
CombineSpec = str | Mapping[str, Any] | Callable[[Sequence[Moments]], Moments]

CRASH_WINDOW = (1, 5)  # crash rounds are drawn from [1, 5)
LIE_SHIFT_SD = 25.0  # a lying node's mean is shifted by this many standard deviations
LIE_SCALE = 25.0  # ... its covariance inflated by this factor ...
LIE_WEIGHT = 10  # ... and its count multiplied by this


@dataclass(frozen=True)
class Partition:
    """Split the nodes into ``groups`` random groups during rounds ``[start, stop)``."""

    start: int
    stop: int
    groups: int = 2

    def __post_init__(self) -> None:
        if not (0 <= self.start < self.stop):
            raise ValueError(f"partition rounds must satisfy 0 <= start < stop, got {self}")
        if self.groups < 2:
            raise ValueError(f"a partition needs at least 2 groups, got {self.groups}")


@dataclass(frozen=True)
class GossipResult:
    """Outcome of :func:`simulate_gossip`.

    Attributes
    ----------
    converged : bool
        Every replica holds the same map, and it is the join of every entry ever written.
    rounds : int
        Rounds run until convergence (``max_rounds`` when it did not converge).
    bytes_per_node : float
        Mean bytes sent per node: every message's serialised size (digests, deltas and
        replies in ``delta`` mode, whole states in ``full`` mode), lost ones included.
    max_bytes_per_node : int
        The most bytes any single node sent.
    max_rel_error : float
        Over all live replicas, the largest relative error (``max|a-b| / max|b|``) of
        the baseline mean and covariance against the pooled batch statistics of the
        honest nodes' data (``inf`` when a replica has no entries); with
        ``audit=False``, of the first live replica only.
    bit_identical : bool or None
        Every live replica's state, serialised on its own, has the same bytes (SHA-256)
        and is not empty, and the baselines recomputed from those bytes have identical
        bits (see :func:`audit_replicas`). ``None`` when not evaluated (``audit=False``).
    distinct_states : int or None
        Distinct serialised states among the live replicas (``None`` without audit).
    coverage : tuple of float
        Per round, the fraction of (live replica, key) cells holding the final entry.
    messages : dict
        Counts of ``sent``, ``lost``, ``duplicated``, ``delivered`` messages.
    baseline, reference : Moments
        One replica's baseline and the pooled honest batch moments.
    """

    n_nodes: int
    converged: bool
    rounds: int
    bytes_per_node: float
    max_bytes_per_node: int
    max_rel_error: float
    bit_identical: bool | None
    distinct_states: int | None
    coverage: tuple[float, ...]
    messages: Mapping[str, int]
    baseline: Moments
    reference: Moments
    engine: str
    exchange: str = "delta"


def relative_error(estimate: Moments, reference: Moments) -> float:
    """``max(max|dmean|/max|mean_ref|, max|dcov|/max|cov_ref|)``."""
    if estimate.n < 2:
        return math.inf
    err_mean = np.max(np.abs(estimate.mean - reference.mean)) / np.max(np.abs(reference.mean))
    cov_ref = reference.covariance()
    err_cov = np.max(np.abs(estimate.covariance() - cov_ref)) / np.max(np.abs(cov_ref))
    return float(max(err_mean, err_cov))


def _node_name(i: int) -> str:
    return f"n{i:05d}"


# --- the workload: per-node data, published entries, pooled reference ---------------------------
@dataclass(frozen=True)
class _Workload:
    first: list[Moments]  # what every node publishes at round 0
    final: list[Moments]  # what crashed nodes publish after restarting (others: == first)
    reference: Moments
    liars: NDArray[np.bool_]


def segment_moments(rows: NDArray[np.float64], lengths: NDArray[np.int64]) -> list[Moments]:
    """Moments of consecutive row segments of the given (positive) lengths, vectorised.

    Same two-pass centring as :meth:`Moments.from_batch`, done for all segments at once.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size == 0 or np.any(lengths < 1) or int(lengths.sum()) != rows.shape[0]:
        raise ValueError("segment lengths must be positive and add up to the number of rows")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    counts = lengths[:, None].astype(np.float64)
    mean = np.add.reduceat(rows, starts, axis=0) / counts
    centred = rows - np.repeat(mean, lengths, axis=0)
    shift = np.add.reduceat(centred, starts, axis=0) / counts
    mean += shift
    centred -= np.repeat(shift, lengths, axis=0)
    m2 = np.add.reduceat(np.einsum("ni,nj->nij", centred, centred), starts, axis=0)
    m2 = 0.5 * (m2 + np.swapaxes(m2, 1, 2))
    return [
        Moments._trusted(int(k), mean[i].copy(), m2[i].copy())
        for i, k in enumerate(lengths.tolist())
    ]


def _lie(m: Moments, sd: NDArray[np.float64]) -> Moments:
    """What a lying node publishes instead of ``m``: shifted, inflated and over-weighted."""
    return Moments(m.n * LIE_WEIGHT, m.mean + LIE_SHIFT_SD * sd, m.m2 * (LIE_SCALE * LIE_WEIGHT))


def _workload(
    rng: np.random.Generator,
    n: int,
    crashed: NDArray[np.bool_],
    liars: NDArray[np.bool_],
    agents_per_node: int,
    n_features: int,
    offset: float,
) -> _Workload:
    d = n_features
    mix = rng.normal(size=(d, d)) / math.sqrt(d) + np.eye(d)
    node_shift = rng.normal(scale=0.5, size=(n, d))
    sizes = rng.integers(max(2, agents_per_node // 2), agents_per_node * 3 // 2 + 3, size=n)
    extra = np.where(crashed, rng.integers(1, agents_per_node + 2, size=n), 0)
    total = sizes + extra
    rows = offset + rng.normal(size=(int(total.sum()), d)) @ mix + np.repeat(node_shift, total, axis=0)
    # segments in row order: first batch of node i, then its extra batch when it has one
    seg_len = np.stack([sizes, extra], axis=1).ravel()
    seg_node = np.repeat(np.arange(n), 2)
    seg_kind = np.tile([0, 1], n)
    keep = seg_len > 0
    parts = segment_moments(rows, seg_len[keep])
    first: list[Moments] = [Moments.empty(d)] * n
    final: list[Moments] = [Moments.empty(d)] * n
    for m, i, kind in zip(parts, seg_node[keep].tolist(), seg_kind[keep].tolist(), strict=True):
        if kind == 0:
            first[i] = final[i] = m
        else:
            final[i] = first[i].merge(m)
    sd = np.sqrt(np.diag(mix @ mix.T))
    for i in np.flatnonzero(liars).tolist():
        first[i], final[i] = _lie(first[i], sd), _lie(final[i], sd)
    if liars.all():
        raise ValueError("every node is lying: there is no honest data to compare against")
    honest_rows = np.repeat(~liars, total)
    reference = Moments.from_batch(rows[honest_rows])
    return _Workload(first, final, reference, liars)


# --- the fault schedule ---------------------------------------------------------------------
@dataclass(frozen=True)
class _Messages:
    src: NDArray[np.int64]
    dst: NDArray[np.int64]
    due: NDArray[np.int64]  # delivery round
    idx: NDArray[np.int64]  # which sent message this copy is


def _faults(
    rng: np.random.Generator,
    r: int,
    src: NDArray[np.int64],
    dst: NDArray[np.int64],
    loss: float,
    duplicate: float,
    delay: float,
    reorder: float,
    groups: NDArray[np.int64] | None,
) -> tuple[_Messages, int, int]:
    """Draw the fate of messages ``src[k] -> dst[k]`` sent in round ``r``.

    Returns the delivered copies (``idx`` points back at the sent message), and the
    numbers lost and duplicated.
    """
    m = src.size
    lost = rng.random(m) < loss
    if groups is not None:
        lost |= groups[src] != groups[dst]
    late = rng.geometric(1.0 - delay, size=m) - 1 if delay > 0 else np.zeros(m, dtype=np.int64)
    held = np.where(rng.random(m) < reorder, rng.integers(1, 4, size=m), 0)
    due = r + late + held
    dup = (rng.random(m) < duplicate) & ~lost
    dup_due = due + rng.integers(0, 3, size=m)
    keep = ~lost
    idx = np.arange(m)
    msgs = _Messages(
        src=np.concatenate([src[keep], src[dup]]),
        dst=np.concatenate([dst[keep], dst[dup]]),
        due=np.concatenate([due[keep], dup_due[dup]]),
        idx=np.concatenate([idx[keep], idx[dup]]),
    )
    return msgs, int(lost.sum()), int(dup.sum())


def _contacts(
    rng: np.random.Generator, alive: NDArray[np.bool_], n: int, fanout: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(initiator, peer) pairs of one round: every live node picks ``fanout`` other nodes."""
    initiators = np.flatnonzero(alive)
    peers = rng.integers(0, n - 1, size=(initiators.size, fanout))
    peers += peers >= initiators[:, None]
    return np.repeat(initiators, fanout), peers.ravel()


def _round_messages(
    rng: np.random.Generator,
    r: int,
    alive: NDArray[np.bool_],
    n: int,
    fanout: int,
    loss: float,
    duplicate: float,
    delay: float,
    reorder: float,
    groups: NDArray[np.int64] | None,
) -> tuple[_Messages, int, int, NDArray[np.int64]]:
    """Full-state messages sent in round ``r``: (delivered copies, n_lost, n_duplicated, senders)."""
    a, b = _contacts(rng, alive, n, fanout)
    # the pull reply exists only when the peer is up (it is computed from its state now)
    reply = alive[b]
    src = np.concatenate([a, b[reply]])
    dst = np.concatenate([b, a[reply]])
    msgs, n_lost, n_dup = _faults(rng, r, src, dst, loss, duplicate, delay, reorder, groups)
    return msgs, n_lost, n_dup, src


# --- engines --------------------------------------------------------------------------------
class _MatrixEngine:
    """Replicas as bit-packed rows; join = bitwise OR.

    Key ``k``'s rank ``r`` in its candidates' CRDT order (0 = unknown) is stored as a
    thermometer code over ``R`` bit planes (planes ``0 .. r-1`` set), so the elementwise
    maximum of ranks is the bitwise OR of the packed planes: 10,000 replicas with
    one version per key take 12.5 MB.
    """

    def __init__(self, n: int, candidates: list[list[Entry]]) -> None:
        self.n = n
        self.candidates = candidates
        self.planes = max(len(c) for c in candidates)
        self.width = (n + 7) // 8
        self.state = np.zeros((n, self.planes * self.width), dtype=np.uint8)
        name_len = len(_node_name(0))
        payload = len(candidates[0][0].payload)
        self.entry_bytes = _ENTRY_HEADER.size + name_len + payload
        # digest sizes are the real serialised sizes; the rank matrix models one size per entry
        self.digest_header = len(Digest({}).to_bytes())
        sizes = {len(State.of([e]).digest().to_bytes()) - self.digest_header for c in candidates for e in c}
        if len(sizes) != 1:
            raise ValueError("the matrix engine needs digest entries of one size (use engine='replica')")
        (self.digest_entry,) = sizes
        summaries = [[e.summary for e in c] for c in candidates]
        if any(len(set(c)) != len(c) for c in summaries):
            raise ValueError("two versions of one key share a version and a payload fingerprint")
        self.header_bytes = _STATE_HEADER.size + _TRAILER.size
        self.pending: dict[int, list[tuple[NDArray[np.int64], NDArray[np.uint8]]]] = defaultdict(list)
        self._records: list[list[bytes]] | None = None

    def pack(self, ranks: NDArray[np.integer]) -> NDArray[np.uint8]:
        """Thermometer-code a vector of ranks (one per key) into one packed row."""
        planes = np.arange(self.planes)[:, None] < np.asarray(ranks)[None, :]
        return np.packbits(planes, axis=1).ravel()

    def ranks(self, row: NDArray[np.uint8]) -> NDArray[np.int64]:
        bits = np.unpackbits(row.reshape(self.planes, self.width), axis=1)[:, : self.n]
        return bits.sum(axis=0, dtype=np.int64)

    def publish(self, i: int, entry: Entry) -> None:
        rank = self.candidates[i].index(entry) + 1
        byte, bit = divmod(i, 8)
        for p in range(rank):
            self.state[i, p * self.width + byte] |= np.uint8(0x80 >> bit)

    def crash(self, i: int) -> None:
        self.state[i] = 0

    def restart(self, i: int, entry: Entry) -> None:
        self.state[i] = 0
        self.publish(i, entry)

    def message_bytes(self, src: NDArray[np.int64]) -> NDArray[np.int64]:
        known = np.bitwise_count(self.state[:, : self.width]).sum(axis=1, dtype=np.int64)
        return self.header_bytes + known[src] * self.entry_bytes

    def send(self, r: int, msgs: _Messages) -> None:
        now = msgs.due == r
        self._now = (msgs.src[now], msgs.dst[now])
        for due in np.unique(msgs.due[~now]):
            sel = msgs.due == due
            self.pending[int(due)].append((msgs.dst[sel], self.state[msgs.src[sel]]))

    def deliver(self, r: int, alive: NDArray[np.bool_], rng: np.random.Generator) -> None:
        src, dst = self._now
        base = self.state.copy()
        ok = alive[dst]
        _or_into(self.state, dst[ok], base, src[ok])
        for dsts, rows in self.pending.pop(r, []):
            ok = alive[dsts]
            _or_into(self.state, dsts[ok], rows, np.flatnonzero(ok))

    # --- delta exchange: digest, reply (delta + digest), ack (delta) -----------------------
    def _known(self, rows: NDArray[np.uint8]) -> NDArray[np.int64]:
        return np.bitwise_count(rows[:, : self.width]).sum(axis=1, dtype=np.int64)

    def _delta(
        self, have: NDArray[np.uint8], digest: NDArray[np.uint8]
    ) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
        """Rows of ``have`` restricted to keys whose rank exceeds the digest's, and their counts."""
        k = have.shape[0]
        out = np.empty_like(have)
        counts = np.empty(k, dtype=np.int64)
        for s in range(0, k, 4096):
            h, d = have[s : s + 4096], digest[s : s + 4096]
            newer = np.bitwise_and(h, np.bitwise_not(d)).reshape(-1, self.planes, self.width)
            mask = np.bitwise_or.reduce(newer, axis=1)
            out[s : s + 4096] = np.bitwise_and(h, np.tile(mask, (1, self.planes)))
            counts[s : s + 4096] = np.bitwise_count(mask).sum(axis=1, dtype=np.int64)
        return out, counts

    def _state_size(self, count: NDArray[np.int64]) -> NDArray[np.int64]:
        return self.header_bytes + count * self.entry_bytes

    def _digest_size(self, known: NDArray[np.int64]) -> NDArray[np.int64]:
        return np.asarray(self.digest_header + known * self.digest_entry, np.int64)

    def make_digests(self, src: NDArray[np.int64]) -> tuple[Any, NDArray[np.int64]]:
        rows = self.state[src]
        return rows, self._digest_size(self._known(rows))

    def make_replies(
        self, digests: NDArray[np.uint8], responders: NDArray[np.int64]
    ) -> tuple[Any, NDArray[np.int64]]:
        have = self.state[responders]
        delta, count = self._delta(have, digests)
        size = _REPLY_PREFIX.size + self._state_size(count) + self._digest_size(self._known(have))
        return (delta, have), size

    def make_acks(
        self, replies: tuple[NDArray[np.uint8], NDArray[np.uint8]], receivers: NDArray[np.int64]
    ) -> tuple[Any, NDArray[np.int64]]:
        delta, count = self._delta(self.state[receivers], replies[1])
        return delta, self._state_size(count)

    def apply(self, deltas: Any, dst: NDArray[np.int64], rng: np.random.Generator, reply: bool) -> None:
        rows = deltas[0] if reply else deltas
        _or_into(self.state, dst, rows, np.arange(dst.size))

    def coverage(self, final: NDArray[np.uint8], alive: NDArray[np.bool_]) -> tuple[float, bool]:
        """(fraction of live cells holding the final entry, every row equals ``final``)."""
        diff = np.bitwise_xor(self.state, final).reshape(self.n, self.planes, self.width)
        wrong = np.bitwise_count(np.bitwise_or.reduce(diff, axis=1)).sum(axis=1, dtype=np.int64)
        complete = not bool(wrong.any())
        cells = int(alive.sum()) * self.n
        return float((cells - int(wrong[alive].sum())) / cells), complete

    def wire(self, i: int) -> bytes:
        """Replica ``i``'s own state in the wire format, serialised from its own row.

        The bytes :meth:`State.to_bytes` gives for the map the row encodes (the tests
        check this against real replicas): every replica is serialised on its own, so
        two replicas compare equal only when their rows hold the same entries.
        """
        if self._records is None:
            self._records = [[entry_wire(e) for e in c] for c in self.candidates]
        ranks = self.ranks(self.state[i])
        keys = np.flatnonzero(ranks)  # node names are zero-padded: index order is name order
        return state_wire([self._records[k][ranks[k] - 1] for k in keys.tolist()])


def _or_into(
    target: NDArray[np.uint8],
    dst: NDArray[np.int64],
    source: NDArray[np.uint8],
    src: NDArray[np.int64],
    batch: int = 4096,
) -> None:
    """``target[dst[k]] |= source[src[k]]`` for all k, repeated destinations included."""
    if dst.size == 0:
        return
    order = np.argsort(dst, kind="stable")
    d_sorted = dst[order]
    starts = np.r_[0, np.flatnonzero(np.diff(d_sorted)) + 1]
    counts = np.diff(np.r_[starts, d_sorted.size])
    occurrence = np.arange(d_sorted.size) - np.repeat(starts, counts)
    for k in range(int(occurrence.max()) + 1):
        idx = order[occurrence == k]  # destinations are unique within one occurrence level
        for s in range(0, idx.size, batch):
            part = idx[s : s + batch]
            rows = dst[part]
            target[rows] = np.bitwise_or(target[rows], source[src[part]])


_REPLY_PREFIX = struct.Struct("<I")  # a reply is: len(delta state) | delta state | digest


def _split_reply(blob: bytes) -> tuple[bytes, bytes]:
    """(delta state bytes, digest bytes) of a reply message."""
    (length,) = _REPLY_PREFIX.unpack_from(blob)
    end = _REPLY_PREFIX.size + length
    if end > len(blob):
        raise StateFormatError("reply message is truncated")
    return blob[_REPLY_PREFIX.size : end], blob[end:]


class _ReplicaEngine:
    """Real :class:`Replica` objects exchanging serialised states."""

    def __init__(self, n: int, workdir: Path, persist: bool) -> None:
        self.n = n
        self.workdir = workdir
        self.persist = persist
        self.replicas: list[Replica] = [self._start(i) for i in range(n)]
        self.pending: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
        self._now: list[tuple[int, bytes]] = []

    def _start(self, i: int) -> Replica:
        if self.persist:
            return Replica.open(_node_name(i), self.workdir / f"{_node_name(i)}.incarnation")
        return Replica(_node_name(i), incarnation=0)

    def publish(self, i: int, moments: Moments) -> Entry:
        return self.replicas[i].publish(moments)

    def crash(self, i: int) -> None:
        self.replicas[i] = Replica(_node_name(i))  # memory lost; never used while down

    def restart(self, i: int, moments: Moments) -> None:
        self.replicas[i] = self._start(i)  # reads and bumps the incarnation file
        self.replicas[i].publish(moments)

    def message_bytes(self, src: NDArray[np.int64]) -> NDArray[np.int64]:
        self._wire = {int(i): self.replicas[int(i)].state.to_bytes() for i in np.unique(src)}
        return np.array([len(self._wire[int(i)]) for i in src], dtype=np.int64)

    def send(self, r: int, msgs: _Messages) -> None:
        self._now = []
        for s, d, due in zip(msgs.src.tolist(), msgs.dst.tolist(), msgs.due.tolist(), strict=True):
            item = (d, self._wire[s])
            (self._now if due == r else self.pending[due]).append(item)

    def deliver(self, r: int, alive: NDArray[np.bool_], rng: np.random.Generator) -> None:
        batch = self._now + self.pending.pop(r, [])
        for k in rng.permutation(len(batch)):  # arrival order within a round is random too
            d, blob = batch[k]
            if alive[d]:
                self.replicas[d].receive(blob)

    # --- delta exchange on the wire --------------------------------------------------------
    def make_digests(self, src: NDArray[np.int64]) -> tuple[Any, NDArray[np.int64]]:
        wire = {int(i): self.replicas[int(i)].state.digest().to_bytes() for i in np.unique(src)}
        blobs = [wire[int(i)] for i in src]
        return blobs, np.array([len(b) for b in blobs], dtype=np.int64)

    def make_replies(self, digests: list[bytes], responders: NDArray[np.int64]) -> tuple[Any, NDArray[np.int64]]:
        blobs = []
        for blob, i in zip(digests, responders.tolist(), strict=True):
            state = self.replicas[i].state
            delta = state.delta(Digest.from_bytes(blob)).to_bytes()
            blobs.append(_REPLY_PREFIX.pack(len(delta)) + delta + state.digest().to_bytes())
        return blobs, np.array([len(b) for b in blobs], dtype=np.int64)

    def make_acks(self, replies: list[bytes], receivers: NDArray[np.int64]) -> tuple[Any, NDArray[np.int64]]:
        blobs = []
        for blob, i in zip(replies, receivers.tolist(), strict=True):
            _, digest = _split_reply(blob)
            blobs.append(self.replicas[i].state.delta(Digest.from_bytes(digest)).to_bytes())
        return blobs, np.array([len(b) for b in blobs], dtype=np.int64)

    def apply(self, deltas: list[bytes], dst: NDArray[np.int64], rng: np.random.Generator, reply: bool) -> None:
        for k in rng.permutation(len(deltas)):  # arrival order within a phase is random too
            blob = _split_reply(deltas[k])[0] if reply else deltas[k]
            self.replicas[int(dst[k])].receive(blob)

    def coverage(self, final_entries: list[Entry], alive: NDArray[np.bool_]) -> float:
        hits = 0
        for i in np.flatnonzero(alive):
            entries = self.replicas[i].state.entries
            hits += sum(entries.get(e.node_id) == e for e in final_entries)
        return hits / max(1, int(alive.sum()) * self.n)

    def wire(self, i: int) -> bytes:
        """Replica ``i``'s own state, serialised (:meth:`State.to_bytes`)."""
        return self.replicas[i].state.to_bytes()


def _gather(parts: list[tuple[Any, NDArray[np.int64]]]) -> Any:
    """Concatenate the messages ``batch[pos]`` of several sent batches (rows, row pairs or blobs)."""
    first = parts[0][0]
    if isinstance(first, tuple):
        return tuple(np.concatenate([b[j][p] for b, p in parts]) for j in range(len(first)))
    if isinstance(first, np.ndarray):
        return np.concatenate([b[p] for b, p in parts])
    return [b[k] for b, p in parts for k in p.tolist()]


@dataclass
class _DeltaExchange:
    """Scuttlebutt-style three-message anti-entropy, each message subject to the faults.

    Per contact ``a -> b``: ``a`` sends its digest; ``b``, on arrival, replies with the
    entries ``a`` lacks or holds older (a delta) plus its own digest; ``a``, on arrival,
    sends back the delta ``b`` lacks. A message arriving at a node that is down is lost.
    Within a round the three kinds are delivered in that order, each phase computing its
    answers from the states before the phase's joins, so the outcome does not depend on
    the arrival order inside a phase; a message due in a later round waits for it.
    """

    eng: Any
    fault: Callable[[int, NDArray[np.int64], NDArray[np.int64]], tuple[_Messages, int, int]]
    sent_bytes: NDArray[np.int64]
    counts: dict[str, int]
    pending: dict[tuple[int, int], list[tuple[Any, _Messages]]]

    def _send(self, r: int, kind: int, batch: Any, src: NDArray[np.int64], dst: NDArray[np.int64],
              size: NDArray[np.int64]) -> None:
        np.add.at(self.sent_bytes, src, size)
        self.counts["sent"] += int(src.size)
        msgs, n_lost, n_dup = self.fault(r, src, dst)
        self.counts["lost"] += n_lost
        self.counts["duplicated"] += n_dup
        for due in np.unique(msgs.due).tolist():
            sel = msgs.due == due
            part = _Messages(msgs.src[sel], msgs.dst[sel], msgs.due[sel], msgs.idx[sel])
            self.pending[(int(due), kind)].append((batch, part))

    def _arrivals(self, r: int, kind: int, alive: NDArray[np.bool_]) -> tuple[Any, NDArray[np.int64], NDArray[np.int64]] | None:
        parts: list[tuple[Any, NDArray[np.int64]]] = []
        src: list[NDArray[np.int64]] = []
        dst: list[NDArray[np.int64]] = []
        for batch, m in self.pending.pop((r, kind), []):
            ok = alive[m.dst]
            if ok.any():
                parts.append((batch, m.idx[ok]))
                src.append(m.src[ok])
                dst.append(m.dst[ok])
        if not parts:
            return None
        return _gather(parts), np.concatenate(src), np.concatenate(dst)

    def round(self, r: int, a: NDArray[np.int64], b: NDArray[np.int64], alive: NDArray[np.bool_],
              rng: np.random.Generator) -> None:
        batch, size = self.eng.make_digests(a)
        self._send(r, 0, batch, a, b, size)
        got = self._arrivals(r, 0, alive)
        if got is not None:  # digests in: answer with delta + own digest
            digests, src, dst = got
            batch, size = self.eng.make_replies(digests, dst)
            self._send(r, 1, batch, dst, src, size)
        got = self._arrivals(r, 1, alive)
        if got is not None:  # replies in: answer with the delta the peer lacks, then join
            replies, src, dst = got
            batch, size = self.eng.make_acks(replies, dst)
            self._send(r, 2, batch, dst, src, size)
            self.eng.apply(replies, dst, rng, True)
        got = self._arrivals(r, 2, alive)
        if got is not None:
            acks, _, dst = got
            self.eng.apply(acks, dst, rng, False)


# --- the end-of-run audit: real serialised replicas, byte-compared ---------------------------
AUDIT_BASELINES = 8
"""Replicas (chosen at random) whose baseline is recomputed from their own parsed bytes."""


@dataclass(frozen=True)
class ReplicaAudit:
    """What :func:`audit_replicas` found.

    ``replicas`` states were compared; ``distinct_states`` of them differ in their
    SHA-256, ``empty`` hold no entry, ``unreadable`` do not parse; ``distinct_baselines`` counts the different
    baseline bit patterns among one baseline per distinct state and
    ``baselines_recomputed`` more, each parsed from a randomly chosen replica's own
    bytes. ``max_rel_error`` is over the distinct states' baselines.
    """

    replicas: int
    distinct_states: int
    empty: int
    unreadable: int
    baselines_recomputed: int
    distinct_baselines: int
    max_rel_error: float
    baseline: Moments | None

    @property
    def identical(self) -> bool:
        """One non-empty state, byte for byte, and one baseline, bit for bit."""
        return (
            self.replicas > 0
            and self.distinct_states == 1
            and self.empty == 0
            and self.unreadable == 0
            and self.distinct_baselines == 1
        )


def audit_replicas(
    wires: Sequence[bytes],
    combine: Callable[[Sequence[Moments]], Moments],
    reference: Moments,
    rng: np.random.Generator,
    recompute: int = AUDIT_BASELINES,
) -> ReplicaAudit:
    """Byte-compare serialised replica states and recompute baselines from the bytes.

    Every state is hashed; each distinct one is parsed back (:meth:`State.from_bytes`,
    the receiving path) and its baseline computed with ``combine``; then ``recompute``
    replicas chosen with ``rng`` are parsed and combined again from their own bytes, so a
    combine that is not a deterministic function of the map shows as a second baseline.
    """
    digests = [hashlib.sha256(w).digest() for w in wires]
    first: dict[bytes, int] = {}
    for i, d in enumerate(digests):
        first.setdefault(d, i)
    baseline_bits: set[bytes] = set()
    errors: list[float] = []
    shown: Moments | None = None
    empty_digests: set[bytes] = set()
    bad_digests: set[bytes] = set()
    for d, i in first.items():
        try:
            state = State.from_bytes(wires[i])
        except StateFormatError:
            bad_digests.add(d)
            errors.append(math.inf)
            continue
        if not len(state):
            empty_digests.add(d)
            errors.append(math.inf)
            continue
        b = state.baseline(combine)
        shown = b if shown is None else shown
        baseline_bits.add(b.to_bytes())
        errors.append(relative_error(b, reference))
    picks: list[int] = []
    if wires:
        picks = rng.choice(len(wires), size=min(recompute, len(wires)), replace=False).tolist()
    done = 0
    for i in picks:
        if digests[i] in bad_digests:
            continue
        state = State.from_bytes(wires[i])
        if len(state):
            baseline_bits.add(state.baseline(combine).to_bytes())
            done += 1
    return ReplicaAudit(
        replicas=len(wires),
        distinct_states=len(first),
        empty=sum(d in empty_digests for d in digests),
        unreadable=sum(d in bad_digests for d in digests),
        baselines_recomputed=done,
        distinct_baselines=len(baseline_bits),
        max_rel_error=float(max(errors)) if errors else math.inf,
        baseline=shown,
    )


# --- the simulator --------------------------------------------------------------------------
def _check_probability(name: str, value: float, upper_open: bool = True) -> float:
    value = float(value)
    if not (0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1), got {value}")
    return value


def simulate_gossip(
    n_nodes: int,
    fanout: int = 1,
    loss: float = 0.0,
    duplicate: float = 0.0,
    reorder: float = 0.0,
    delay: float = 0.0,
    crashes: float = 0.0,
    partitions: Sequence[Partition] = (),
    lying: float = 0.0,
    seed: int = 0,
    *,
    combine: CombineSpec = "chan",
    engine: Engine = "auto",
    agents_per_node: int = 20,
    n_features: int = 4,
    offset: float = 1e6,
    downtime: int = 3,
    persist_incarnation: bool = True,
    max_rounds: int = 500,
    exchange: Exchange = "delta",
    audit: bool = True,
) -> GossipResult:
    """Run push-pull anti-entropy with injected faults until every replica agrees.

    Parameters
    ----------
    n_nodes : int
        Network size (>= 2).
    fanout : int
        Peers each live node contacts per round.
    loss, duplicate, reorder, delay : float
        Per-message fault probabilities (see the module docstring).
    crashes : float
        Fraction of nodes that crash and restart (at least one when > 0).
    partitions : sequence of Partition
        Temporary network splits; they heal at ``stop``.
    lying : float
        Fraction of nodes that publish extreme moments.
    seed : int
        Seeds the data, the faults and the peer choices.
    combine : "chan", "robust", mapping or callable
        The global combine each replica applies (see :mod:`tcpkit.detect.combine`).
    engine : "auto", "matrix" or "replica"
        ``auto`` uses real replicas up to 64 nodes and the rank matrix above.
    agents_per_node, n_features, offset : int, int, float
        The data each node observes (``offset`` is added to every feature).
    downtime : int
        Rounds a crashed node stays down.
    persist_incarnation : bool
        ``False`` shows what goes wrong without a persisted incarnation.
    max_rounds : int
        Give up (``converged=False``) after this many rounds.
    exchange : "delta" or "full"
        ``delta`` (default): digest, then only the missing or newer entries (three
        messages per contact, see :class:`_DeltaExchange`); ``full``: push and pull of
        the whole state (two messages per contact), kept for comparison.
    audit : bool
        Serialise every live replica's state at the end and compare the bytes
        (:func:`audit_replicas`); ``False`` skips that (``bit_identical`` is then
        ``None``) for sweeps that only need the rounds.

    Returns
    -------
    GossipResult
    """
    if isinstance(n_nodes, bool) or not isinstance(n_nodes, int) or n_nodes < 2:
        raise ValueError(f"n_nodes must be an integer >= 2, got {n_nodes!r}")
    if n_nodes > 60_000:
        raise ValueError(f"n_nodes={n_nodes} is above the simulator's limit of 60,000")
    if not isinstance(fanout, int) or not 1 <= fanout < n_nodes:
        raise ValueError(f"fanout must be an integer in [1, n_nodes), got {fanout!r}")
    loss = _check_probability("loss", loss)
    duplicate = _check_probability("duplicate", duplicate)
    reorder = _check_probability("reorder", reorder, upper_open=False)
    delay = _check_probability("delay", delay)
    crashes = _check_probability("crashes", crashes, upper_open=False)
    lying = _check_probability("lying", lying)
    if exchange not in ("delta", "full"):
        raise ValueError(f"exchange must be 'delta' or 'full', got {exchange!r}")
    if engine not in ("auto", "matrix", "replica"):
        raise ValueError(f"engine must be 'auto', 'matrix' or 'replica', got {engine!r}")
    if downtime < 1 or max_rounds < 1 or agents_per_node < 2 or n_features < 1:
        raise ValueError("downtime, max_rounds, agents_per_node (>= 2) and n_features must be positive")
    parts = tuple(partitions)
    if not all(isinstance(p, Partition) for p in parts):
        raise ValueError("partitions must be Partition(start, stop, groups) values")
    combine_fn = combine if callable(combine) else make_combine(
        {"method": combine} if isinstance(combine, str) else combine
    )
    use = engine if engine != "auto" else ("replica" if n_nodes <= 64 else "matrix")

    rng = np.random.default_rng(seed)
    n = n_nodes
    n_crash = 0 if crashes == 0 else max(1, round(crashes * n))
    crashed = np.zeros(n, dtype=bool)
    crashed[rng.choice(n, size=n_crash, replace=False)] = True
    crash_round = np.where(crashed, rng.integers(*CRASH_WINDOW, size=n), -1)
    restart_round = np.where(crashed, crash_round + downtime, -1)
    n_liars = round(lying * n)
    liars = np.zeros(n, dtype=bool)
    liars[rng.choice(n, size=n_liars, replace=False)] = True
    work = _workload(rng, n, crashed, liars, agents_per_node, n_features, offset)
    group_of = [rng.integers(0, p.groups, size=n) for p in parts]
    fault_rng = np.random.default_rng(rng.integers(2**63))
    order_rng = np.random.default_rng(rng.integers(2**63))
    last_event = max([0, *(int(p.stop) for p in parts), *(restart_round[crashed].tolist())])

    with tempfile.TemporaryDirectory(prefix="tcpkit-gossip-") as tmp:
        # every entry that will ever be written, in the CRDT's order per key
        restart_inc = 1 if persist_incarnation else 0
        first = [Entry.create(_node_name(i), Version(0, 1), work.first[i]) for i in range(n)]
        later = {
            i: Entry.create(_node_name(i), Version(restart_inc, 1), work.final[i])
            for i in np.flatnonzero(crashed).tolist()
        }
        candidates = [
            sorted([first[i], *([later[i]] if i in later else [])], key=lambda e: e.order_key)
            for i in range(n)
        ]
        final_entries = [c[-1] for c in candidates]
        eng: _MatrixEngine | _ReplicaEngine
        if use == "matrix":
            eng = _MatrixEngine(n, candidates)
            for i in range(n):
                eng.publish(i, first[i])
            final_rank = eng.pack(np.array([len(c) for c in candidates]))
        else:
            eng = _ReplicaEngine(n, Path(tmp), persist_incarnation)
            for i in range(n):
                eng.publish(i, work.first[i])

        alive = np.ones(n, dtype=bool)
        sent_bytes = np.zeros(n, dtype=np.int64)
        counts = {"sent": 0, "lost": 0, "duplicated": 0}
        coverage: list[float] = []
        delta = None
        if exchange == "delta":
            no_split = partial(
                _faults, fault_rng, loss=loss, duplicate=duplicate, delay=delay, reorder=reorder, groups=None
            )
            delta = _DeltaExchange(eng, no_split, sent_bytes, counts, defaultdict(list))
        converged = False
        rounds = max_rounds
        for r in range(max_rounds):
            for i in np.flatnonzero(crash_round == r).tolist():
                alive[i] = False
                eng.crash(i)
            for i in np.flatnonzero(restart_round == r).tolist():
                alive[i] = True
                if isinstance(eng, _MatrixEngine):
                    eng.restart(i, later[i])
                else:
                    eng.restart(i, work.final[i])
            active = [g for p, g in zip(parts, group_of, strict=True) if p.start <= r < p.stop]
            groups = None
            if active:
                groups = np.zeros(n, dtype=np.int64)
                for g in active:
                    groups = groups * 64 + g
            if delta is not None:
                delta.fault = partial(
                    _faults, fault_rng, loss=loss, duplicate=duplicate, delay=delay,
                    reorder=reorder, groups=groups,
                )
                a, b = _contacts(fault_rng, alive, n, fanout)
                delta.round(r, a, b, alive, order_rng)
            else:
                msgs, n_lost, n_dup, senders = _round_messages(
                    fault_rng, r, alive, n, fanout, loss, duplicate, delay, reorder, groups
                )
                size = eng.message_bytes(senders)
                np.add.at(sent_bytes, senders, size)
                counts["sent"] += int(senders.size)
                counts["lost"] += n_lost
                counts["duplicated"] += n_dup
                eng.send(r, msgs)  # snapshots (and wire bytes) are taken at send time
                eng.deliver(r, alive, order_rng)
            if isinstance(eng, _MatrixEngine):
                frac, done = eng.coverage(final_rank, alive)
            else:
                frac = eng.coverage(final_entries, alive)
                done = frac == 1.0
            coverage.append(frac)
            if done and r >= last_event and bool(alive.all()):
                converged, rounds = True, r + 1
                break

        live = np.flatnonzero(alive).tolist()
        if audit:
            check = audit_replicas(
                [eng.wire(i) for i in live], combine_fn, work.reference, np.random.default_rng([seed, 99])
            )
            bit_identical: bool | None = check.identical
            distinct: int | None = check.distinct_states
            max_error, shown_or_none = check.max_rel_error, check.baseline
        else:
            one = State.from_bytes(eng.wire(live[0])) if live else State.of()
            shown_or_none = one.baseline(combine_fn) if len(one) else None
            max_error = math.inf if shown_or_none is None else relative_error(shown_or_none, work.reference)
            bit_identical, distinct = None, None
    shown = shown_or_none if shown_or_none is not None else Moments.empty(n_features)
    counts["delivered"] = counts["sent"] - counts["lost"] + counts["duplicated"]
    return GossipResult(
        n_nodes=n,
        converged=converged,
        rounds=rounds,
        bytes_per_node=float(sent_bytes.mean()),
        max_bytes_per_node=int(sent_bytes.max()),
        max_rel_error=float(max_error),
        bit_identical=bit_identical,
        distinct_states=distinct,
        coverage=tuple(coverage),
        messages=dict(counts),
        baseline=shown,
        reference=work.reference,
        engine=use,
        exchange=exchange,
    )


def rounds_per_log2_n(sizes: Sequence[int], rounds: Sequence[int]) -> float:
    """Least-squares slope of rounds to converge against ``log2(n)`` (``O(log n)`` gossip: a constant)."""
    if len(sizes) != len(rounds) or len(sizes) < 2 or len(set(sizes)) < 2:
        raise ValueError("need rounds for at least two different network sizes")
    slope, _ = np.polyfit(np.log2(np.asarray(sizes, dtype=np.float64)), np.asarray(rounds, dtype=np.float64), 1)
    return float(slope)
