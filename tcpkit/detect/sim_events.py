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

Randomness: events draw from streams of their own (spawn keys 1003 and 1004), so
the network is the same as without events.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from tcpkit.detect import simulate as sim

__all__ = [
    "EVENT_SCHEMA",
    "LABEL_SCHEMA",
    "SimulatedEvents",
    "simulate_events",
    "template_of",
]

EVENT_SCHEMA = pa.schema(
    [
        ("agent", pa.string()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("action", pa.string()),
        ("node", pa.string()),
        ("risk_class", pa.string()),
        ("predicted_risk", pa.float64()),
        ("confidence", pa.float64()),
        ("latency_ms", pa.float64()),
        ("outcome", pa.string()),
        ("arguments", pa.string()),
    ]
)
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
    with ``n_agents * n_windows * commands_per_window`` rows (about 100 bytes each).
    """
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
    net = sim._run(params, recorder)
    return SimulatedEvents(table=_table(net, recorder), labels=_labels(net), network=net)


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


def _stack(recorder: sim._Recorder, field: str) -> NDArray[Any]:
    """(n_agents, n_windows, cpw) array of one recorded per-assessment field."""
    per_window = [np.concatenate([getattr(b, field) for b in blocks]) for blocks in recorder.blocks]
    return np.stack(per_window, axis=1)


def _table(net: sim.SimulatedNetwork, rec: sim._Recorder) -> pa.Table:
    p = net.params
    n, n_windows, cpw = p["n_agents"], p["n_windows"], p["commands_per_window"]
    diff = sim.DIFFICULTIES[p["difficulty"]]
    tmpl = _stack(rec, "tmpl").astype(np.intp)
    pred = _stack(rec, "pred")
    conf = _stack(rec, "conf")
    lat = _stack(rec, "lat")
    cls = sim._T_CLASS[tmpl]

    # time: think times split from each window's total, latencies in whole microseconds
    clock = np.stack(rec.clock_us, axis=1)  # (n, W) window starts
    think_total = np.stack(rec.think_us, axis=1)
    lat_us = np.rint(lat * np.float32(1000.0)).astype(np.int64)
    rs = np.random.default_rng(np.random.SeedSequence(p["seed"], spawn_key=STATIC_KEY))
    novelty = NOVELTY * np.exp(rs.normal(0.0, NOVELTY_LOG_SD, n))
    offset = rs.integers(0, POOL_SIZE, (n, len(_KINDS)))
    times = np.empty((n, n_windows, cpw), dtype=np.int64)
    u_out = np.empty((n, n_windows, cpw))
    novel = np.empty((n, n_windows, cpw, _MAX_SLOTS), dtype=bool)
    pick = np.empty((n, n_windows, cpw, _MAX_SLOTS), dtype=np.int64)
    extra = np.zeros(n)
    for w in range(n_windows):
        rw = np.random.default_rng(np.random.SeedSequence(p["seed"], spawn_key=(WINDOW_KEY, w)))
        e = rw.standard_exponential((n, cpw))
        frac = np.cumsum(e, axis=1) / e.sum(axis=1, keepdims=True)
        cum = np.floor(frac * think_total[:, w, None]).astype(np.int64)
        cum[:, -1] = think_total[:, w]
        lat_before = np.cumsum(lat_us[:, w], axis=1) - lat_us[:, w]
        times[:, w] = clock[:, w, None] + cum + lat_before
        u_out[:, w] = rw.random((n, cpw))
        for name in set(a for a in net.attack if a is not None):
            if name == "poisoning" or w >= net.attack_start:
                extra[net.attack == name] = diff.novelty * p["strength"]
        novel[:, w] = rw.random((n, cpw, _MAX_SLOTS)) < (novelty + extra)[:, None, None]
        pick[:, w] = rw.integers(0, POOL_SIZE * WORKING_SET, (n, cpw, _MAX_SLOTS))

    # outcomes
    p_ref = REFUSE_MAX / (1.0 + np.exp(-(pred - REFUSE_AT) / REFUSE_WIDTH))
    p_err = ERROR_RATE + NETWORK_ERROR_RATE * (cls == sim.RISK_CLASSES.index("NETWORK"))
    outcome = np.where(u_out < p_ref, 2, np.where(u_out < p_ref + p_err, 1, 0)).astype(np.int8)

    # argument values: a working-set entry, or a value from the whole pool when novel
    flat_t = tmpl.ravel()
    order = np.argsort(flat_t, kind="stable")
    bounds = np.searchsorted(flat_t[order], np.arange(len(sim.CATALOGUE) + 1))
    agent_of = np.repeat(np.arange(n), n_windows * cpw)
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

    agent_ids = _ids("agent", n, 6).take(pa.array(agent_of))
    node_ids = _ids("node", p["n_nodes"], 2).take(pa.array(np.repeat(net.node, n_windows * cpw)))
    classes = pa.DictionaryArray.from_arrays(
        pa.array(cls.ravel().astype(np.int8)), pa.array(sim.RISK_CLASSES, pa.string())
    ).cast(pa.string())
    outcomes = pa.DictionaryArray.from_arrays(
        pa.array(outcome.ravel()), pa.array(OUTCOMES, pa.string())
    ).cast(pa.string())
    epoch_us = int(sim.EPOCH.astype(np.int64))
    return pa.table(
        {
            "agent": agent_ids,
            "time": pa.array(times.ravel() + epoch_us, pa.timestamp("us", tz="UTC")),
            "action": actions,
            "node": node_ids,
            "risk_class": classes,
            "predicted_risk": pa.array(pred.ravel(), pa.float64()),
            "confidence": pa.array(conf.ravel().astype(np.float64), pa.float64()),
            "latency_ms": pa.array(lat.ravel().astype(np.float64), pa.float64()),
            "outcome": outcomes,
            "arguments": arguments,
        },
        schema=EVENT_SCHEMA,
    )


def _join(parts: list[Any], size: int) -> pa.Array:
    """Concatenate literal strings and string arrays element-wise."""
    arrays = [p if isinstance(p, pa.Array) else pa.scalar(p, pa.string()) for p in parts]
    if len(arrays) == 1:
        only = arrays[0]
        return only if isinstance(only, pa.Array) else pa.array([only.as_py()] * size, pa.string())
    return pc.binary_join_element_wise(*arrays, "")
