"""The simulator's events: one row per assessed command, in the canonical event schema.

Why
---
Detection on a real fleet starts from event logs, not from the simulator's
window features. :func:`simulate_events` runs the same simulation as
:func:`~tcpkit.detect.simulate.simulate_network` (same parameters, same seed,
bit-identical ``network``) and also returns every assessment as an event, so
the reader -> features -> detector path can be measured on worlds whose ground
truth is known.

The rows (the schema of :data:`EVENT_SCHEMA`, every optional column present)
--------------------------------------------------------------------------------
``agent`` ``"agent-000123"`` (at least six digits) and ``node`` ``"node-07"``
(at least two digits). Agent ``a``'s ``k``-th window is its events
``[k * commands_per_window, (k + 1) * commands_per_window)`` in time order; rows
are sorted by (agent, time), so window features computed from the table by
count equal ``network.windows``.

``time`` is the simulated clock: :data:`~tcpkit.detect.simulate.EPOCH`
(2026-01-01T00:00Z) plus the agent's start offset plus, for every earlier
command, its think time and latency, plus this command's think time (think
times are exponential, see :mod:`tcpkit.detect.benign`; a window's total think
time is the one the simulator drew, split by normalised exponentials, and
latencies are counted in whole microseconds). The diurnal latency cycle
follows this clock.

``action`` is a concrete command line: the template's command text of
:data:`~tcpkit.detect.simulate.CATALOGUE` with each ``{placeholder}`` replaced
by an argument value without spaces (a directory, file, URL, host, user,
package, binary, search pattern or git ref). The template is recoverable from
the action: :func:`template_of` matches it against each template's text with
every placeholder read as ``\\S+`` (a test checks that exactly one template
matches every action).

``arguments`` is a JSON object string of the placeholder values, e.g.
``{"url": "https://mirror3.example.com/pkg-042.tar.gz", "file": "/data/f0007.txt"}``
(``{}`` for templates without placeholders). Each agent has a working set of
:data:`WORKING_SET` values per kind; each value is new (drawn from the whole
pool of :data:`POOL_SIZE` values) with a per-agent probability
``NOVELTY * exp(N(0, NOVELTY_LOG_SD))``, raised by the difficulty's
``novelty`` (times ``strength``) for a compromised agent once its attack has
started (poisoning: from window 0). Novelty is a signal for compromise that the
window features do not see.

``risk_class``, ``predicted_risk``, ``confidence`` and ``latency_ms`` are the
simulation's own values. ``outcome`` is ``refused`` with probability
``REFUSE_MAX / (1 + exp(-(predicted_risk - REFUSE_AT) / REFUSE_WIDTH))`` (an
agent refuses what it rates dangerous, so under-rating agents refuse less),
else ``error`` with probability :data:`ERROR_RATE` (plus
:data:`NETWORK_ERROR_RATE` on NETWORK commands), else ``ok``.

Randomness: events draw from streams of their own (spawn key 1003 for the
per-agent novelty rates and working sets, 1004 per window and block of
:data:`~tcpkit.detect.simulate.CHUNK_AGENTS` agents), so the network is the same
as without events. The table is built one block of agents at a time; its
chunks are those blocks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from tcpkit.detect import simulate as sim
from tcpkit.detect.audited import audit_rng
from tcpkit.detect.events import SCHEMA

__all__ = [
    "EVENT_SCHEMA",
    "LABEL_SCHEMA",
    "SimulatedEvents",
    "StreamedEvents",
    "simulate_events",
    "stream_events",
    "template_of",
]

EVENT_SCHEMA = SCHEMA  # the canonical event schema (tcpkit.detect.events), every optional column present
LABEL_SCHEMA = pa.schema(
    [
        ("agent", pa.string()),
        ("compromised", pa.bool_()),
        ("attack", pa.string()),
        ("attack_start_window", pa.int64()),
    ]
)
OUTCOMES = ("ok", "error", "refused")
POOL_SIZE = 400
WORKING_SET = 8
NOVELTY = 0.03
NOVELTY_LOG_SD = 0.5
REFUSE_MAX = 0.5
REFUSE_AT = 0.88
REFUSE_WIDTH = 0.03
ERROR_RATE = 0.02
NETWORK_ERROR_RATE = 0.04
STATIC_KEY = (1003, 0)
WINDOW_KEY = 1004

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _pool(kind: str) -> list[str]:
    """The :data:`POOL_SIZE` argument values of one placeholder kind (no spaces)."""
    make = {
        "dir": lambda i: f"/srv/proj{i:03d}",
        "file": lambda i: f"/data/f{i:04d}.txt",
        "pattern": lambda i: f"pat{i:03d}",
        "url": lambda i: f"https://mirror{i % 20}.example.com/pkg-{i:03d}.tar.gz",
        "user": lambda i: f"user{i:03d}",
        "host": lambda i: f"10.0.{i // 256}.{i % 256}",
        "package": lambda i: f"pkg-{i:03d}",
        "binary": lambda i: f"/usr/local/bin/tool{i:03d}",
        "ref": lambda i: f"rel-{i:03d}",
    }[kind]
    return [make(i) for i in range(POOL_SIZE)]


_KINDS: tuple[str, ...] = ("dir", "file", "pattern", "url", "user", "host", "package", "binary", "ref")
_POOLS = {k: pa.array(_pool(k), pa.string()) for k in _KINDS}
_SLOTS: tuple[tuple[str, ...], ...] = tuple(
    tuple(_PLACEHOLDER.findall(t.command)) for t in sim.CATALOGUE
)
_MAX_SLOTS = max(len(s) for s in _SLOTS)
_REGEX = tuple(
    re.compile(
        "".join(
            "(\\S+)" if i % 2 else re.escape(piece)
            for i, piece in enumerate(_PLACEHOLDER.split(t.command))
        )
        + r"\Z"
    )
    for t in sim.CATALOGUE
)


def template_of(actions: Sequence[str] | pa.Array | pa.ChunkedArray) -> NDArray[np.intp]:
    """Index into :data:`~tcpkit.detect.simulate.CATALOGUE` of each action.

    Raises ValueError naming the first action that matches no template or more than one.
    """
    if isinstance(actions, pa.ChunkedArray):
        arr = actions
    elif isinstance(actions, pa.Array):
        arr = pa.chunked_array([actions])
    else:
        arr = pa.chunked_array([pa.array(list(actions), pa.string())])
    encoded = pc.dictionary_encode(arr).combine_chunks()
    uniques = encoded.dictionary.to_pylist()
    index = np.empty(len(uniques), dtype=np.intp)
    for u, text in enumerate(uniques):
        hits = [t for t, rx in enumerate(_REGEX) if rx.match(text)]
        if len(hits) != 1:
            raise ValueError(
                f"action {text!r} matches {len(hits)} catalogue templates (expected exactly 1)"
            )
        index[u] = hits[0]
    return index[np.asarray(encoded.indices, dtype=np.intp)]


@dataclass(frozen=True, eq=False)
class SimulatedEvents:
    """Events of a simulated network with their ground truth.

    Attributes
    ----------
    table : pyarrow.Table
        One row per assessed command, :data:`EVENT_SCHEMA`, sorted by (agent, time).
    labels : pyarrow.Table
        :data:`LABEL_SCHEMA`: one row per agent; ``attack`` and
        ``attack_start_window`` are null for honest agents (poisoning starts at 0).
    network : SimulatedNetwork
        The simulation whose ``windows`` the events reproduce.
    """

    table: pa.Table
    labels: pa.Table
    network: sim.SimulatedNetwork


def simulate_events(**kwargs: Any) -> SimulatedEvents:
    """Simulate a network and return its events; parameters as :func:`simulate_network`.

    ``network`` is bit-identical to ``simulate_network(**kwargs)``. Memory grows
    with ``n_agents * n_windows * commands_per_window`` rows (about 100 bytes each);
    :func:`stream_events` yields the same rows a block of agents at a time instead.
    """
    net, recorder = _simulate(kwargs)
    return SimulatedEvents(table=_table(net, recorder), labels=_labels(net), network=net)


@dataclass(frozen=True, eq=False)
class StreamedEvents:
    """Events of a simulated network as a stream of record batches, with their ground truth.

    ``batches`` yields the rows of :attr:`SimulatedEvents.table` in the same order, one
    block of :data:`~tcpkit.detect.simulate.CHUNK_AGENTS` agents at a time (each batch is
    built when asked for, so a writer that consumes them holds one block, not the log).
    """

    batches: Iterator[pa.RecordBatch]
    labels: pa.Table
    network: sim.SimulatedNetwork


def stream_events(**kwargs: Any) -> StreamedEvents:
    """:func:`simulate_events` as a stream: the same rows, one block of agents at a time.

    The simulation itself runs first (its per-assessment record, about 17 bytes per
    event, stays in memory); the event rows (about 100 bytes each) are made per block.
    """
    net, recorder = _simulate(kwargs)
    return StreamedEvents(batches=_batches(net, recorder), labels=_labels(net), network=net)


def _simulate(kwargs: dict[str, Any]) -> tuple[sim.SimulatedNetwork, sim._Recorder]:
    """Run the simulation with the parameters of :func:`simulate_network`, recording every assessment."""
    import inspect

    signature = inspect.signature(sim.simulate_network)
    unknown = sorted(set(kwargs) - set(signature.parameters))
    if unknown:
        raise ValueError(
            f"unknown parameter {unknown[0]!r}: simulate_events takes the parameters of "
            f"simulate_network ({', '.join(signature.parameters)})"
        )
    bound = signature.bind(**kwargs)
    bound.apply_defaults()
    params = sim._validate(**bound.arguments)
    recorder = sim._Recorder([], [], [])
    return sim._run(params, recorder), recorder


def audited_agents(labels: pa.Table, n_audited: int, seed: int) -> tuple[str, ...]:
    """``n_audited`` clean agents drawn uniformly (seeded by ``seed``): an audited reference of the fleet.

    What an operator who ran some agents under audit would hold: a list of agents known to be
    clean, sharing the fleet's nodes and history (``tcpkit simulate --audited``). The draw
    is the one :func:`tcpkit.detect.audited.audited_fleet` makes for its reference.
    """
    clean = np.flatnonzero(~np.asarray(labels.column("compromised").to_numpy(zero_copy_only=False), dtype=bool))
    if isinstance(n_audited, bool) or not isinstance(n_audited, int) or not 1 <= n_audited <= clean.size:
        raise ValueError(f"audited agents: {n_audited!r} requested, the fleet has {clean.size} clean agents")
    rows = np.sort(audit_rng(seed).choice(clean, n_audited, replace=False))
    names = labels.column("agent").to_pylist()
    return tuple(str(names[i]) for i in rows)


def _ids(prefix: str, n: int, width: int) -> pa.Array:
    w = max(width, len(str(max(n - 1, 0))))
    return pa.array([f"{prefix}-{i:0{w}d}" for i in range(n)], pa.string())


def _labels(net: sim.SimulatedNetwork) -> pa.Table:
    start = np.where(net.attack == "poisoning", 0, net.attack_start)
    return pa.table(
        {
            "agent": _ids("agent", net.n_agents, 6),
            "compromised": pa.array(np.asarray(net.labels, dtype=bool)),
            "attack": pa.array(list(net.attack), pa.string()),
            "attack_start_window": pa.array(start.astype(np.int64), mask=~np.asarray(net.labels)),
        },
        schema=LABEL_SCHEMA,
    )


def _table(net: sim.SimulatedNetwork, rec: sim._Recorder) -> pa.Table:
    """The event table, built one block of :data:`~tcpkit.detect.simulate.CHUNK_AGENTS`
    agents at a time (bounded temporaries; the table's chunks are the blocks)."""
    return pa.Table.from_batches(list(_batches(net, rec)), schema=EVENT_SCHEMA)


def _batches(net: sim.SimulatedNetwork, rec: sim._Recorder) -> Iterator[pa.RecordBatch]:
    """The events of each block of agents of the simulation loop, in order."""
    p = net.params
    n = p["n_agents"]
    rs = np.random.default_rng(np.random.SeedSequence(p["seed"], spawn_key=STATIC_KEY))
    novelty = NOVELTY * np.exp(rs.normal(0.0, NOVELTY_LOG_SD, n))
    offset = rs.integers(0, POOL_SIZE, (n, len(_KINDS)))
    agent_ids = _ids("agent", n, 6)
    node_ids = _ids("node", p["n_nodes"], 2)
    for b, lo in enumerate(range(0, n, sim.CHUNK_AGENTS)):
        hi = min(lo + sim.CHUNK_AGENTS, n)
        yield _block(net, rec, b, lo, hi, novelty, offset, agent_ids, node_ids)


def _block(
    net: sim.SimulatedNetwork,
    rec: sim._Recorder,
    b: int,
    lo: int,
    hi: int,
    novelty: NDArray[np.float64],
    offset: NDArray[np.int64],
    agent_ids: pa.Array,
    node_ids: pa.Array,
) -> pa.RecordBatch:
    """Events of agents ``lo:hi`` (block ``b`` of the simulation loop), in (agent, time) order."""
    p = net.params
    n_windows, cpw = p["n_windows"], p["commands_per_window"]
    m = hi - lo
    diff = sim.DIFFICULTIES[p["difficulty"]]
    blocks = [rec.blocks[w][b] for w in range(n_windows)]
    tmpl = np.stack([r.tmpl for r in blocks], axis=1).astype(np.intp)  # (m, W, cpw)
    pred = np.stack([r.pred for r in blocks], axis=1)
    conf = np.stack([r.conf for r in blocks], axis=1)
    lat = np.stack([r.lat for r in blocks], axis=1)
    cls = sim._T_CLASS[tmpl]
    attack = net.attack[lo:hi]
    lat_us = np.rint(lat * np.float32(1000.0)).astype(np.int64)

    times = np.empty((m, n_windows, cpw), dtype=np.int64)
    u_out = np.empty((m, n_windows, cpw))
    novel = np.empty((m, n_windows, cpw, _MAX_SLOTS), dtype=bool)
    pick = np.empty((m, n_windows, cpw, _MAX_SLOTS), dtype=np.int64)
    extra = np.zeros(m)
    for w in range(n_windows):
        key = (WINDOW_KEY, w, b)
        rw = np.random.default_rng(np.random.SeedSequence(p["seed"], spawn_key=key))
        # the window's total think time, split by normalised exponentials
        e = rw.standard_exponential((m, cpw))
        frac = np.cumsum(e, axis=1) / e.sum(axis=1, keepdims=True)
        total = rec.think_us[w][lo:hi]
        cum = np.floor(frac * total[:, None]).astype(np.int64)
        cum[:, -1] = total
        lat_before = np.cumsum(lat_us[:, w], axis=1) - lat_us[:, w]
        times[:, w] = rec.clock_us[w][lo:hi, None] + cum + lat_before
        u_out[:, w] = rw.random((m, cpw))
        for name in _attacks_present(attack):
            if name == "poisoning" or w >= net.attack_start:
                extra[attack == name] = diff.novelty * p["strength"]
        novel[:, w] = rw.random((m, cpw, _MAX_SLOTS)) < (novelty[lo:hi] + extra)[:, None, None]
        pick[:, w] = rw.integers(0, POOL_SIZE * WORKING_SET, (m, cpw, _MAX_SLOTS))

    # outcomes
    p_ref = REFUSE_MAX / (1.0 + np.exp(-(pred - REFUSE_AT) / REFUSE_WIDTH))
    p_err = ERROR_RATE + NETWORK_ERROR_RATE * (cls == sim.RISK_CLASSES.index("NETWORK"))
    outcome = np.where(u_out < p_ref, 2, np.where(u_out < p_ref + p_err, 1, 0)).astype(np.int8)

    # argument values: a working-set entry, or a value from the whole pool when novel
    flat_t = tmpl.ravel()
    order = np.argsort(flat_t, kind="stable")
    bounds = np.searchsorted(flat_t[order], np.arange(len(sim.CATALOGUE) + 1))
    agent_of = np.repeat(np.arange(lo, hi), n_windows * cpw)
    nov = novel.reshape(-1, _MAX_SLOTS)
    pk = pick.reshape(-1, _MAX_SLOTS)
    action_parts: list[pa.Array] = []
    argument_parts: list[pa.Array] = []
    for t, template in enumerate(sim.CATALOGUE):
        rows = order[bounds[t] : bounds[t + 1]]
        if rows.size == 0:
            continue
        pieces = _PLACEHOLDER.split(template.command)
        action_args: list[Any] = []
        json_args: list[Any] = []
        for i, piece in enumerate(pieces):
            if i % 2 == 0:
                action_args.append(piece)
                continue
            slot = i // 2
            k = _KINDS.index(piece)
            working = (offset[agent_of[rows], k] + (pk[rows, slot] % WORKING_SET) * 37) % POOL_SIZE
            value_index = np.where(nov[rows, slot], pk[rows, slot] // WORKING_SET, working)
            values = _POOLS[piece].take(pa.array(value_index))
            action_args.append(values)
            json_args += [('"' if slot == 0 else ', "') + piece + '": "', values, '"']
        action_parts.append(_join(action_args, rows.size))
        if json_args:
            argument_parts.append(_join(["{", *json_args, "}"], rows.size))
        else:
            argument_parts.append(pa.array(["{}"] * rows.size, pa.string()))
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    actions = pa.concat_arrays(action_parts).take(pa.array(inverse))
    arguments = pa.concat_arrays(argument_parts).take(pa.array(inverse))

    classes = pa.DictionaryArray.from_arrays(
        pa.array(cls.ravel().astype(np.int8)), pa.array(sim.RISK_CLASSES, pa.string())
    ).cast(pa.string())
    outcomes = pa.DictionaryArray.from_arrays(
        pa.array(outcome.ravel()), pa.array(OUTCOMES, pa.string())
    ).cast(pa.string())
    epoch_us = int(sim.EPOCH.astype(np.int64))
    node_of = np.repeat(np.asarray(net.node[lo:hi]), n_windows * cpw)
    return pa.RecordBatch.from_arrays(
        [
            agent_ids.take(pa.array(agent_of)),
            pa.array(times.ravel() + epoch_us, pa.timestamp("us", tz="UTC")),
            actions,
            node_ids.take(pa.array(node_of)),
            classes,
            pa.array(pred.ravel(), pa.float64()),
            pa.array(conf.ravel().astype(np.float64), pa.float64()),
            pa.array(lat.ravel().astype(np.float64), pa.float64()),
            outcomes,
            arguments,
        ],
        schema=EVENT_SCHEMA,
    )


def _attacks_present(attack: NDArray[np.object_]) -> list[str]:
    """Attack names present among ``attack`` (None for honest agents), in ATTACKS order."""
    present = set(attack.tolist())
    return [a for a in sim.ATTACKS if a in present]


def _join(parts: list[Any], size: int) -> pa.Array:
    """Concatenate literal strings and string arrays element-wise."""
    arrays = [p if isinstance(p, pa.Array) else pa.scalar(p, pa.string()) for p in parts]
    if len(arrays) == 1:
        only = arrays[0]
        return only if isinstance(only, pa.Array) else pa.array([only.as_py()] * size, pa.string())
    return pc.binary_join_element_wise(*arrays, "")
