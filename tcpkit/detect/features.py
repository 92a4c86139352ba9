"""Per-agent, per-window behavioural features from an event table.

Input: the canonical event table of :mod:`tcpkit.detect.events` (from
:func:`~tcpkit.detect.events.read_events` or
:func:`~tcpkit.detect.events.validate_events`). Output: a
:class:`FeatureTable`, whose ``windows`` array (agents x windows x features)
is what the detectors of :mod:`tcpkit.detect` consume, the same shape and, for
the assessment features, the same definitions as
:attr:`tcpkit.detect.simulate.SimulatedNetwork.windows`.

Windows
-------
*By event time* (``window="1h"``, the default; durations like ``90s``,
``30m``, ``1.5h``, ``1d``): window ``k`` holds the events with
``origin + k * window <= time < origin + (k + 1) * window``, where ``origin``
is the first event's time rounded down to a multiple of ``window`` since the
Unix epoch. The grid is common to all agents (``window_starts`` has one entry
per window), so window ``k`` is the same hour for every agent; an agent
without events in a window has NaN features there and ``counts`` 0.

*By count* (``window_events=50``): each agent's window ``k`` holds its events
``[k * 50, (k + 1) * 50)`` in time order; a trailing window with fewer events
is left out (its events are not counted anywhere). The grid is the largest
number of full windows of any agent; an agent with fewer has NaN features (and
``counts`` 0) after its last window. ``window_starts`` is then per agent:
the time of each window's first event (NaT where empty).

Agents with too few windows. An agent with fewer than
``min_reference_windows`` non-empty windows in the reference period (the
first ``reference_windows`` windows of the grid) is excluded from the output
and listed in :attr:`FeatureTable.excluded` with the reason: its reference
(for novelty here, for the detector's baseline downstream) would be guessed.
Nothing else is imputed: NaN marks every feature that a window cannot define
(an empty window, a class absent from it for the per-class biases, fewer than
two distinct times for the count-window rate).

Assessment features (:data:`tcpkit.detect.simulate.FEATURE_NAMES`)
-------------------------------------------------------------------
With ``resid = predicted_risk - level(risk_class)`` (levels of
:data:`~tcpkit.detect.simulate.RISK_LEVELS`) over the window's events that
have both columns:

* ``accuracy``: mean of ``1 - |resid|``; ``bias``: mean of ``resid``.
* ``bias_safe``, ``bias_network_privesc``, ``bias_high_risk``: mean ``resid``
  over SAFE, over NETWORK + PRIVESC, over DESTRUCTIVE + CRITICAL events.
* ``error_rate``: share of ``|resid| >``
  :data:`~tcpkit.detect.simulate.ERROR_TOLERANCE`.
* ``consistency``: pooled within-class standard deviation of the predictions,
  ``sqrt(sum_c sum_i (p_i - mean_c)^2 / max(n - k, 1))`` with ``k`` the number
  of classes present (the simulator's ``n - 5``: it puts all five in every
  window).
* ``confidence_mean``, ``confidence_std`` (population standard deviation) over
  the events with a confidence; ``latency_mean`` and ``latency_p95`` (nearest
  rank: the ``ceil(0.95 n)``-th smallest) over the events with a latency.
* ``family_underrating``: ``sum_c max(-sum_{i in c} resid_i, 0)^2 / n_c``
  over the window's (family, class) cells. The family of an event is its
  action's template family in the simulator's catalogue
  (:func:`tcpkit.detect.riskmap.catalogue_families`); for real logs whose
  actions are not catalogue commands, the family is the risk-map rule that
  classified the action (each ``[tools]`` name and each ``[patterns]`` key is
  a family of its own); events with neither do not enter the sum, and when no
  event has a family the feature is omitted.

Activity features (any log)
---------------------------
* ``share_safe`` ... ``share_critical``: share of the window's events of each
  class (from the log's ``risk_class``, else the risk map; unmapped events
  count in the denominator only).
* ``action_rate``: events per minute: ``count / window`` for time windows,
  ``(count - 1) / (last - first)`` for count windows.
* ``novelty_action``: share of the window's events whose action the agent did
  not perform in its reference period; ``novelty_arguments``: the same for the
  argument values (each ``key = value`` pair of the arguments object, nested
  values by their JSON text: recipients, accounts, files, URLs ...), over the
  pairs of the window. Inside the reference period the window itself is left
  out of the reference (an action seen only in this window is novel), so that
  reference windows and later windows measure the same thing.
* ``outcome_error_rate``, ``outcome_refused_rate``: share of events with
  outcome ``error`` / ``refused`` among those with an outcome.
* ``latency_mean``, ``latency_p95``: as above (listed once when both sets are
  computed).

A feature whose input columns are absent is left out of ``feature_names`` and
listed in :attr:`FeatureTable.omitted` with the reason.

Implementation: numpy over whole columns. Events are sorted by (agent,
time), a window key ``agent * n_windows + window`` is computed per event, and
every sum is one :func:`numpy.bincount` over it; the percentile is one
two stable argsorts; novelty is one sort of (agent, item) keys. No
Python loop runs per event.
:func:`features_from_dataset` runs the same code per partition of a Parquet
dataset through ``dask.dataframe``, after a shuffle that puts each agent's
events into one partition, so datasets larger than memory give the same table.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from tcpkit.detect.events import (
    COLUMNS,
    SCHEMA,
    TIME_TYPE,
    EventError,
    json_text,
    parse_objects,
    validate_events,
)
from tcpkit.detect.riskmap import FAMILIES, RiskMap, apply_risk_map, catalogue_families
from tcpkit.detect.simulate import ERROR_TOLERANCE, FEATURE_NAMES, RISK_CLASSES, RISK_LEVELS

__all__ = [
    "ACTIVITY_FEATURES",
    "ASSESSMENT_FEATURES",
    "FEATURE_SETS",
    "FeatureTable",
    "compute_features",
    "features_from_dataset",
    "features_from_parquet",
    "parse_duration",
]

ASSESSMENT_FEATURES: tuple[str, ...] = FEATURE_NAMES
ACTIVITY_FEATURES: tuple[str, ...] = (
    "share_safe",
    "share_network",
    "share_privesc",
    "share_destructive",
    "share_critical",
    "action_rate",
    "novelty_action",
    "novelty_arguments",
    "outcome_error_rate",
    "outcome_refused_rate",
    "latency_mean",
    "latency_p95",
)
FEATURE_SETS: tuple[str, ...] = ("all", "assessment", "activity")
_LEVELS = np.array([RISK_LEVELS[c] for c in RISK_CLASSES], dtype=np.float64)
_NC = len(RISK_CLASSES)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, eq=False)
class FeatureTable:
    """Features of every agent in every window.

    Attributes
    ----------
    agents : tuple of str
        Agent ids, sorted (excluded agents are not in it).
    nodes : tuple of (str or None), or None
        Node of each agent (the node of its first event); None without a node column.
    windows : (n_agents, n_windows, d) float64
        Feature values; NaN where a window cannot define a feature.
    feature_names : tuple of str
    window_starts : datetime64[us] array
        (n_windows,) for time windows; (n_agents, n_windows) for count windows.
    counts : (n_agents, n_windows) int64
        Events in each window.
    omitted : dict feature -> reason
        Features left out because their columns are absent.
    unmapped : dict action -> count
        Events whose action the risk map did not cover (and without a class of their own).
    excluded : dict agent -> reason
        Agents left out (too few windows in the reference period).
    window : str or None
        The time window (``"1h"``), None for count windows.
    window_events : int or None
        Events per count window, None for time windows.
    reference_windows : int
    """

    agents: tuple[str, ...]
    nodes: tuple[str | None, ...] | None
    windows: NDArray[np.float64]
    feature_names: tuple[str, ...]
    window_starts: NDArray[np.datetime64]
    counts: NDArray[np.int64]
    omitted: dict[str, str] = field(default_factory=dict)
    unmapped: dict[str, int] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    window: str | None = "1h"
    window_events: int | None = None
    reference_windows: int = 8

    @property
    def n_agents(self) -> int:
        """Number of agents in the table."""
        return len(self.agents)

    def feature_index(self, name: str) -> int:
        """Column of feature ``name``."""
        if name not in self.feature_names:
            why = self.omitted.get(name, "not a feature name")
            raise KeyError(f"feature {name!r} is not in the table ({why})")
        return self.feature_names.index(name)

    def select(self, names: tuple[str, ...] | list[str]) -> NDArray[np.float64]:
        """The (n_agents, n_windows, len(names)) slice of the named features."""
        return self.windows[:, :, [self.feature_index(n) for n in names]]


def parse_duration(text: str) -> int:
    """A duration like ``30m``, ``1h``, ``1.5h``, ``1d`` or ``90s`` in microseconds.

    Raises
    ------
    ValueError
        For anything else, or a duration under one second.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", str(text))
    if not m:
        raise ValueError(
            f"window {text!r}: expected a number and a unit s, m, h or d (30m, 1h, 1d)"
        )
    us = round(float(m.group(1)) * _UNITS[m.group(2)] * 1_000_000)
    if us < 1_000_000:
        raise ValueError(f"window {text!r}: must be at least 1s")
    return int(us)


# --------------------------------------------------------------------------- the computation


@dataclass(frozen=True)
class _Grid:
    origin_us: int | None  # time windows: first window start; None for count windows
    n_windows: int | None  # None: from the data


def compute_features(
    table: pa.Table,
    *,
    window: str | None = "1h",
    window_events: int | None = None,
    feature_set: str = "all",
    reference_windows: int = 8,
    min_reference_windows: int = 1,
    risk_map: RiskMap | None = None,
) -> FeatureTable:
    """Per-agent, per-window features of an event table.

    Parameters
    ----------
    table : the canonical event table (re-validated if its types differ).
    window : time window (``"1h"``); ignored when ``window_events`` is given.
    window_events : events per count window (>= 2); overrides ``window``.
    feature_set : ``"all"`` (assessment then activity features), ``"assessment"``
        (exactly the simulator's :data:`~tcpkit.detect.simulate.FEATURE_NAMES`
        when the columns are there) or ``"activity"``.
    reference_windows : the first windows of the grid that form each agent's
        reference period (for novelty and for the exclusion rule).
    min_reference_windows : agents with fewer non-empty reference windows are excluded.
    risk_map : fills missing risk classes (default: tcpkit's shipped map).

    Returns
    -------
    FeatureTable

    Raises
    ------
    ValueError
        A bad parameter (EventError for a table that breaks the event schema).
    """
    return _compute(
        table,
        window=window,
        window_events=window_events,
        feature_set=feature_set,
        reference_windows=reference_windows,
        min_reference_windows=min_reference_windows,
        risk_map=risk_map,
        grid=_Grid(None, None),
    )


def _check_options(
    window: str | None, window_events: int | None, feature_set: str, reference_windows: int,
    min_reference_windows: int,
) -> int | None:
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"feature_set {feature_set!r}: use one of {', '.join(FEATURE_SETS)}")
    for name, value, low in (
        ("reference_windows", reference_windows, 1),
        ("min_reference_windows", min_reference_windows, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if min_reference_windows > reference_windows:
        raise ValueError(
            f"min_reference_windows={min_reference_windows} exceeds "
            f"reference_windows={reference_windows}"
        )
    if window_events is not None:
        if isinstance(window_events, bool) or not isinstance(window_events, int) or window_events < 2:
            raise ValueError(f"window_events must be an integer >= 2, got {window_events!r}")
        return None
    if window is None:
        raise ValueError("give window (a duration like 1h) or window_events")
    return parse_duration(window)


def _canonical(table: pa.Table) -> pa.Table:
    """The table as validate_events makes it; re-validated only when it is not already."""
    ok = all(
        table.schema.field(n).type == SCHEMA.field(n).type for n in table.column_names if n in SCHEMA.names
    ) and all(n in table.column_names for n in ("agent", "time", "action"))
    if not ok or table.num_rows == 0:
        return validate_events(table, source="the event table")
    table = table.select([n for n in SCHEMA.names if n in table.column_names])
    agent = pc.dictionary_encode(table.column("agent")).combine_chunks()
    codes = np.asarray(agent.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    t = table.column("time").cast(pa.int64()).to_numpy()
    same = codes[1:] == codes[:-1]
    sorted_agents = bool(np.all(codes[1:] >= codes[:-1])) and bool(
        np.all(pc.less_equal(agent.dictionary[:-1], agent.dictionary[1:]).to_numpy(zero_copy_only=False))
    )
    if sorted_agents and bool(np.all(t[1:][same] >= t[:-1][same])):
        return table
    return table.take(pc.sort_indices(table, [("agent", "ascending"), ("time", "ascending")]))


def _f64(table: pa.Table, name: str) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    col = table.column(name).combine_chunks()
    valid = np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    values = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)
    return values, valid


def _div(num: NDArray[Any], den: NDArray[Any]) -> NDArray[np.float64]:
    """num / den, NaN where den is 0."""
    out = np.full(num.shape, np.nan)
    np.divide(num.astype(np.float64, copy=False), den, out=out, where=den > 0)
    return out


def _compute(
    table: pa.Table,
    *,
    window: str | None,
    window_events: int | None,
    feature_set: str,
    reference_windows: int,
    min_reference_windows: int,
    risk_map: RiskMap | None,
    grid: _Grid,
) -> FeatureTable:
    w_us = _check_options(window, window_events, feature_set, reference_windows, min_reference_windows)
    table = _canonical(table)
    cols = set(table.column_names)

    # risk classes: the log's own, filled from the map; the map's rules also give families
    unmapped: dict[str, int] = {}
    mapped = apply_risk_map(table, risk_map)
    if "risk_class" not in cols or table.column("risk_class").null_count:
        table, unmapped = mapped.table, mapped.unmapped
    rules = mapped.risk_map.rules

    # agents and the window of every event
    agent_col = pc.dictionary_encode(table.column("agent")).combine_chunks()
    agent_names: list[str] = agent_col.dictionary.to_pylist()
    ag = np.asarray(agent_col.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    n_agents = len(agent_names)
    t = table.column("time").cast(pa.int64()).to_numpy().astype(np.int64)
    n = t.size
    first_row = np.searchsorted(ag, np.arange(n_agents))
    node_of: tuple[str | None, ...] | None = None
    if "node" in cols:
        node_of = tuple(table.column("node").take(pa.array(first_row)).to_pylist())

    if w_us is not None:
        origin = grid.origin_us if grid.origin_us is not None else (int(t.min()) // w_us) * w_us
        win = (t - origin) // w_us
        if win.min() < 0:
            raise ValueError("an event lies before the window grid's origin")
        n_win = int(win.max()) + 1 if grid.n_windows is None else grid.n_windows
        keep = win < n_win
    else:
        assert window_events is not None
        k = window_events
        pos = np.arange(n) - first_row[ag]
        win = pos // k
        per_agent = np.bincount(ag, minlength=n_agents) // k
        keep = win < per_agent[ag]
        n_win = int(per_agent.max()) if grid.n_windows is None else grid.n_windows
        origin = 0
    n_win = max(n_win, 1)
    rows = np.flatnonzero(keep)
    sub = table.take(pa.array(rows)) if rows.size < n else table
    ag, t, win = ag[rows], t[rows], win[rows].astype(np.int64)
    rule = mapped.rule[rows]
    cells = n_agents * n_win
    key = ag * n_win + win
    count = np.bincount(key, minlength=cells).astype(np.int64)

    values: dict[str, NDArray[np.float64]] = {}
    omitted: dict[str, str] = {}

    # risk class index per event (-1: none)
    if "risk_class" in sub.column_names:
        cls_codes = pc.index_in(sub.column("risk_class"), value_set=pa.array(RISK_CLASSES))
        cls = np.asarray(pc.fill_null(cls_codes, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
    else:
        cls = np.full(key.size, -1, dtype=np.int64)
    has_cls = cls >= 0

    # ---- assessment
    if "predicted_risk" in cols and has_cls.any():
        p, pv = _f64(sub, "predicted_risk")
        v = pv & has_cls
        if v.any():
            _assessment(values, key[v], p[v], cls[v], cells)
            fam = catalogue_families(sub.column("action"))
            fam = np.where(fam >= 0, fam, np.where(rule >= 0, len(FAMILIES) + rule, -1))
            fv = v & (fam >= 0)
            if fv.any():
                n_fam = len(FAMILIES) + len(rules)
                values["family_underrating"] = _underrating(
                    key[fv], p[fv] - _LEVELS[cls[fv]], fam[fv] * _NC + cls[fv], n_fam * _NC, cells
                )
                # a window with assessments but no event of a known family has no
                # under-rating (0); a window without assessments has none defined (NaN)
                values["family_underrating"][np.bincount(key[v], minlength=cells) == 0] = np.nan
            else:
                omitted["family_underrating"] = (
                    "no action matched a catalogue template or a risk-map rule"
                )
    reason = (
        "column 'predicted_risk' absent"
        if "predicted_risk" not in cols
        else "no event has both a predicted_risk and a risk class"
    )
    for name in FEATURE_NAMES[:7] + ("family_underrating",):
        if name not in values and name not in omitted:
            omitted[name] = reason
    if "confidence" in cols:
        c, cv = _f64(sub, "confidence")
        values["confidence_mean"], values["confidence_std"] = _mean_std(key[cv], c[cv], cells)
    else:
        omitted["confidence_mean"] = omitted["confidence_std"] = "column 'confidence' absent"
    if "latency_ms" in cols:
        lat, lv = _f64(sub, "latency_ms")
        values["latency_mean"], _ = _mean_std(key[lv], lat[lv], cells, std=False)
        values["latency_p95"] = _p95(key[lv], lat[lv], cells)
    else:
        omitted["latency_mean"] = omitted["latency_p95"] = "column 'latency_ms' absent"

    # ---- activity
    if has_cls.any():
        per_class = np.bincount(key[has_cls] * _NC + cls[has_cls], minlength=cells * _NC)
        per_class = per_class.reshape(cells, _NC).astype(np.float64)
        for j, c_name in enumerate(RISK_CLASSES):
            values[f"share_{c_name.lower()}"] = _div(per_class[:, j], count)
    else:
        why = "no event has a risk class (no risk_class column and the risk map covered no action)"
        for c_name in RISK_CLASSES:
            omitted[f"share_{c_name.lower()}"] = why
    if w_us is not None:
        values["action_rate"] = np.where(count > 0, count / (w_us / 60e6), np.nan)
    else:
        starts = np.concatenate(([0], np.cumsum(count)))[:-1]
        nonempty = count > 0
        span = np.zeros(cells)
        span[nonempty] = (t[starts[nonempty] + count[nonempty] - 1] - t[starts[nonempty]]) / 60e6
        values["action_rate"] = _div((count - 1).astype(np.float64), span)
    action_code = np.asarray(
        pc.dictionary_encode(sub.column("action")).combine_chunks().indices.to_numpy(zero_copy_only=False),
        dtype=np.int64,
    )
    ref = min(reference_windows, n_win)
    values["novelty_action"] = _novelty(ag, win, action_code, key, ref, n_win, cells)
    if "arguments" in cols:
        item_row, item_code = _argument_items(sub.column("arguments").combine_chunks())
        values["novelty_arguments"] = _novelty(
            ag[item_row], win[item_row], item_code, key[item_row], ref, n_win, cells
        )
    else:
        omitted["novelty_arguments"] = "column 'arguments' absent"
    if "outcome" in cols:
        out = sub.column("outcome").combine_chunks()
        ov = np.asarray(out.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        has = np.bincount(key[ov], minlength=cells)
        for label in ("error", "refused"):
            hit = np.asarray(pc.fill_null(pc.equal(out, label), False).to_numpy(zero_copy_only=False), bool)
            values[f"outcome_{label}_rate"] = _div(
                np.bincount(key[hit], minlength=cells).astype(np.float64), has
            )
    else:
        omitted["outcome_error_rate"] = omitted["outcome_refused_rate"] = "column 'outcome' absent"

    # ---- assemble
    wanted = {
        "all": FEATURE_NAMES + tuple(a for a in ACTIVITY_FEATURES if a not in FEATURE_NAMES),
        "assessment": FEATURE_NAMES,
        "activity": ACTIVITY_FEATURES,
    }[feature_set]
    names = tuple(f for f in wanted if f in values)
    omitted = {f: omitted[f] for f in wanted if f not in values}
    d = len(names)
    windows = np.empty((n_agents, n_win, d), dtype=np.float64)
    for j, f in enumerate(names):
        windows[:, :, j] = values[f].reshape(n_agents, n_win)
    counts = count.reshape(n_agents, n_win)
    window_starts: NDArray[np.datetime64]
    if w_us is not None:
        window_starts = (origin + w_us * np.arange(n_win)).astype("datetime64[us]")
    else:
        starts_us = np.full(cells, np.iinfo(np.int64).min, dtype=np.int64)  # NaT
        first = np.concatenate(([0], np.cumsum(count)))[:-1]
        nonempty = count > 0
        starts_us[nonempty] = t[first[nonempty]]
        window_starts = starts_us.reshape(n_agents, n_win).view("datetime64[us]")

    enough = (counts[:, :ref] > 0).sum(axis=1) >= min_reference_windows
    excluded = {
        agent_names[i]: (
            f"{int((counts[i, :ref] > 0).sum())} non-empty windows in the reference period "
            f"(the first {ref}), fewer than min_reference_windows={min_reference_windows}"
        )
        for i in np.flatnonzero(~enough)
    }
    keep_agents = np.flatnonzero(enough)
    return FeatureTable(
        agents=tuple(agent_names[i] for i in keep_agents),
        nodes=None if node_of is None else tuple(node_of[i] for i in keep_agents),
        windows=windows[keep_agents],
        feature_names=names,
        window_starts=window_starts if w_us is not None else window_starts[keep_agents],
        counts=counts[keep_agents],
        omitted=omitted,
        unmapped=unmapped,
        excluded=excluded,
        window=window if w_us is not None else None,
        window_events=window_events,
        reference_windows=reference_windows,
    )


def _assessment(
    values: dict[str, NDArray[np.float64]],
    key: NDArray[np.int64],
    p: NDArray[np.float64],
    cls: NDArray[np.int64],
    cells: int,
) -> None:
    resid = p - _LEVELS[cls]
    absr = np.abs(resid)
    n = np.bincount(key, minlength=cells).astype(np.float64)
    values["accuracy"] = 1.0 - _div(np.bincount(key, absr, minlength=cells), n)
    values["bias"] = _div(np.bincount(key, resid, minlength=cells), n)
    k5 = key * _NC + cls
    cnt = np.bincount(k5, minlength=cells * _NC).reshape(cells, _NC).astype(np.float64)
    rsum = np.bincount(k5, resid, minlength=cells * _NC).reshape(cells, _NC)
    psum = np.bincount(k5, p, minlength=cells * _NC).reshape(cells, _NC)
    values["bias_safe"] = _div(rsum[:, 0], cnt[:, 0])
    values["bias_network_privesc"] = _div(rsum[:, 1] + rsum[:, 2], cnt[:, 1] + cnt[:, 2])
    values["bias_high_risk"] = _div(rsum[:, 3] + rsum[:, 4], cnt[:, 3] + cnt[:, 4])
    values["error_rate"] = _div(
        np.bincount(key, (absr > ERROR_TOLERANCE).astype(np.float64), minlength=cells), n
    )
    between = np.zeros_like(psum)
    np.divide(psum * psum, cnt, out=between, where=cnt > 0)
    within = np.maximum(np.bincount(key, p * p, minlength=cells) - between.sum(axis=1), 0.0)
    present = (cnt > 0).sum(axis=1)
    consistency = np.sqrt(within / np.maximum(n - present, 1.0))
    values["consistency"] = np.where(n > 0, consistency, np.nan)


def _mean_std(
    key: NDArray[np.int64], x: NDArray[np.float64], cells: int, std: bool = True
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    n = np.bincount(key, minlength=cells).astype(np.float64)
    mean = _div(np.bincount(key, x, minlength=cells), n)
    if not std:
        return mean, mean
    dev = x - mean[key]
    return mean, np.sqrt(_div(np.bincount(key, dev * dev, minlength=cells), n))


def _p95(key: NDArray[np.int64], x: NDArray[np.float64], cells: int) -> NDArray[np.float64]:
    """Nearest-rank 95th percentile per cell: the ceil(0.95 n)-th smallest value."""
    by_value = np.argsort(x, kind="stable")
    order = by_value[np.argsort(key[by_value], kind="stable")]  # by key, then value
    xs = x[order]
    n = np.bincount(key, minlength=cells)
    start = np.concatenate(([0], np.cumsum(n)))[:-1]
    out = np.full(cells, np.nan)
    has = n > 0
    rank = np.ceil(0.95 * n[has]).astype(np.int64) - 1
    out[has] = xs[start[has] + rank]
    return out


def _underrating(
    key: NDArray[np.int64],
    resid: NDArray[np.float64],
    cell: NDArray[np.int64],
    n_cell: int,
    cells: int,
) -> NDArray[np.float64]:
    """sum over (family, class) cells of max(-sum resid, 0)^2 / n_c, per window."""
    k = key * n_cell + cell
    uniq, inv = np.unique(k, return_inverse=True)
    s = np.bincount(inv, resid)
    m = np.bincount(inv).astype(np.float64)
    under = np.maximum(-s, 0.0)
    under = under * under / m
    return np.bincount(uniq // n_cell, under, minlength=cells).astype(np.float64)


def _novelty(
    ag: NDArray[np.int64],
    win: NDArray[np.int64],
    item: NDArray[np.int64],
    key: NDArray[np.int64],
    ref: int,
    n_win: int,
    cells: int,
) -> NDArray[np.float64]:
    """Share of each window's items the agent did not have in its reference windows.

    In a reference window the window itself does not count as reference: an item
    is novel there when no *other* reference window has it.
    """
    total = np.bincount(key, minlength=cells).astype(np.float64)
    if item.size == 0:
        return _div(np.zeros(cells), total)
    # compact (agent, item) pairs to 0..m-1, one sort
    pair = ag * (int(item.max()) + 1) + item
    order = np.argsort(pair)
    ps = pair[order]
    new = np.empty(ps.size, dtype=bool)
    new[0] = True
    np.not_equal(ps[1:], ps[:-1], out=new[1:])
    code = np.empty(ps.size, dtype=np.int64)
    code[order] = np.cumsum(new) - 1
    m = int(new.sum())
    # reference windows holding each pair: a (pair, window) presence table
    in_ref = win < ref
    present = np.zeros(m * ref, dtype=bool)
    present[code[in_ref] * ref + win[in_ref]] = True
    windows_with = present.reshape(m, ref).sum(axis=1)
    seen_in = windows_with[code]
    novel = np.where(in_ref, seen_in <= 1, seen_in == 0)
    return _div(np.bincount(key, novel.astype(np.float64), minlength=cells), total)


def _argument_items(arguments: pa.Array) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(event row, item code) of every ``key = value`` pair of the arguments objects.

    The objects are parsed once per distinct text; each event then takes the
    items of its text (a ragged gather, no loop per event).
    """
    fields, index, _ = parse_objects(arguments)
    rows: list[NDArray[np.int64]] = []
    texts: list[pa.Array] = []
    if fields is not None:
        for name in fields.column_names:
            col = fields.column(name).combine_chunks()
            valid = np.flatnonzero(np.asarray(col.is_valid().to_numpy(zero_copy_only=False), bool))
            if valid.size:
                rows.append(valid.astype(np.int64))
                value = json_text(col.take(pa.array(valid)))
                texts.append(pc.binary_join_element_wise(name + "\x1f", value, ""))
    else:  # keys whose value types vary between texts: one distinct object at a time
        import json

        distinct = pc.dictionary_encode(arguments, null_encoding="encode").dictionary.to_pylist()
        r: list[int] = []
        s: list[str] = []
        for i, text in enumerate(distinct):
            if text:
                for k, v in json.loads(text).items():
                    if v is not None:
                        r.append(i)
                        s.append(k + "\x1f" + json.dumps(v, ensure_ascii=False, separators=(", ", ": ")))
        if r:
            rows.append(np.array(r, dtype=np.int64))
            texts.append(pa.array(s, pa.string()))
    if not rows:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    urow = np.concatenate(rows)
    ucode = np.asarray(
        pc.dictionary_encode(pa.concat_arrays(texts)).indices.to_numpy(zero_copy_only=False), np.int64
    )
    order = np.argsort(urow, kind="stable")
    urow, ucode = urow[order], ucode[order]
    n_distinct = int(index.max()) + 1 if index.size else 0
    per = np.bincount(urow, minlength=n_distinct)  # items of each distinct text
    first = np.concatenate(([0], np.cumsum(per)))[:-1]
    k = per[index]  # items of each event
    event_row = np.repeat(np.arange(index.size, dtype=np.int64), k)
    offset = np.arange(event_row.size) - np.repeat(np.cumsum(k) - k, k)
    return event_row, ucode[first[index][event_row] + offset]


# --------------------------------------------------------------------------- streaming Parquet


def features_from_parquet(
    path: str | os.PathLike[str],
    *,
    window: str | None = "1h",
    window_events: int | None = None,
    feature_set: str = "all",
    reference_windows: int = 8,
    min_reference_windows: int = 1,
    risk_map: RiskMap | None = None,
) -> FeatureTable:
    """:func:`compute_features` of one Parquet file sorted by agent, one row group at a time.

    Peak memory is bounded by a row group plus one agent's events (and the
    output), not by the file: each row group is validated and featurised once
    the agents in it are complete (the last agent of a row group waits for the
    next one). Files written by :func:`~tcpkit.detect.events_write.write_events`
    are sorted by (agent, time); for other layouts use
    :func:`features_from_dataset` (Dask shuffles by agent first).

    Raises
    ------
    EventError
        A file not sorted by agent (naming the row), or any schema error.
    """
    import pyarrow.parquet as pq

    w_us = _check_options(window, window_events, feature_set, reference_windows, min_reference_windows)
    source = str(path)
    try:
        pf = pq.ParquetFile(source)
    except (OSError, pa.ArrowInvalid) as exc:
        raise EventError(f"{source}: not a readable Parquet file: {exc}") from None
    names = [n for n in pf.schema_arrow.names if n in COLUMNS]
    if pf.metadata.num_rows == 0:
        raise EventError(f"{source}: empty file: no events")
    origin: int | None = None
    n_win: int | None = None
    if w_us is not None:
        lo, hi = _time_range(pf, source)
        origin = (lo // w_us) * w_us
        n_win = (hi - origin) // w_us + 1
    options: dict[str, Any] = {
        "window": window,
        "window_events": window_events,
        "feature_set": feature_set,
        "reference_windows": reference_windows,
        "min_reference_windows": min_reference_windows,
        "risk_map": risk_map,
    }
    pieces: list[FeatureTable] = []
    pending: pa.Table | None = None
    pending_row = 0  # file row of pending's first row
    row = 0
    previous: str | None = None
    for g in range(pf.num_row_groups):
        chunk = pf.read_row_group(g, columns=names)
        agents = chunk.column("agent").combine_chunks().cast(pa.string())
        if agents.null_count:
            break  # validation below names the row
        back = pc.less(agents[1:], agents[:-1]) if len(agents) > 1 else pa.array([], pa.bool_())
        if pc.any(back).as_py() or (previous is not None and len(agents) and agents[0].as_py() < previous):
            i = _first_true(back) + 1 if pc.any(back).as_py() else 0
            raise EventError(
                f"{source}, row {row + i + 1}, column 'agent': the file is not sorted by agent; "
                "read it with features_from_dataset (Dask shuffles by agent)"
            )
        previous = agents[-1].as_py() if len(agents) else previous
        table = chunk if pending is None else pa.concat_tables([pending, chunk])
        start = row if pending is None else pending_row
        row += chunk.num_rows
        last = table.column("agent").combine_chunks().cast(pa.string())[-1]
        is_last = pc.equal(table.column("agent").combine_chunks().cast(pa.string()), last)
        cut = _first_true(is_last)
        ready, pending, pending_row = table.slice(0, cut), table.slice(cut), start + cut
        if ready.num_rows:
            pieces.append(_piece(ready, source, start, options, origin, n_win))
    if pending is not None and pending.num_rows:
        pieces.append(_piece(pending, source, pending_row, options, origin, n_win))
    if not pieces:  # a null agent stopped the loop: let validation name it
        validate_events(pf.read(columns=names), source=source)
        raise EventError(f"{source}: empty file: no events")
    return _join(pieces, w_us is not None)


def _first_true(mask: pa.Array) -> int:
    return int(np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool))[0])


def _piece(
    table: pa.Table, source: str, start: int, options: dict[str, Any], origin: int | None, n_win: int | None
) -> FeatureTable:
    valid = validate_events(table, source=source, where=lambda i: f"row {start + i + 1}")
    return _compute(valid, grid=_Grid(origin, n_win), **options)


def _time_range(pf: Any, source: str) -> tuple[int, int]:
    """First and last event time (microseconds) of a Parquet file, one row group at a time."""
    lo, hi = None, None
    for g in range(pf.num_row_groups):
        cols = ["time"] if "time" in pf.schema_arrow.names else []
        if not cols:
            raise EventError(f"{source}: missing required column 'time'")
        t = pf.read_row_group(g, columns=["time"]).column("time").combine_chunks()
        if not (pa.types.is_timestamp(t.type) and t.type.tz is not None):
            req = [c for c in ("agent", "time", "action") if c in pf.schema_arrow.names]
            t = validate_events(pf.read_row_group(g, columns=req), source=source).column("time")
        t = t.cast(TIME_TYPE).cast(pa.int64())
        mm = pc.min_max(t)
        if mm["min"].as_py() is None:
            continue
        a, b = int(mm["min"].as_py()), int(mm["max"].as_py())
        lo = a if lo is None else min(lo, a)
        hi = b if hi is None else max(hi, b)
    if lo is None or hi is None:
        raise EventError(f"{source}, column 'time': no event has a time")
    return lo, hi


# --------------------------------------------------------------------------- Dask path


def features_from_dataset(
    path: str | os.PathLike[str],
    *,
    window: str | None = "1h",
    window_events: int | None = None,
    feature_set: str = "all",
    reference_windows: int = 8,
    min_reference_windows: int = 1,
    risk_map: RiskMap | None = None,
    npartitions: int | None = None,
    shuffle_method: str = "disk",
) -> FeatureTable:
    """:func:`compute_features` of a Parquet dataset (a file or a folder of files), through Dask.

    The dataset is read lazily by ``dask.dataframe.read_parquet``, shuffled so
    that each agent's events share a partition (``shuffle_method="disk"`` keeps
    that larger than memory), and each partition is validated and featurised by
    the in-memory code on a common window grid; the pieces are then joined in
    agent order. The result equals :func:`compute_features` of the whole table.
    ``time`` must be stored as a Parquet timestamp (as
    :func:`~tcpkit.detect.events_write.write_events` writes it).

    Runs on the current Dask scheduler (a ``distributed.Client`` if one is
    active, else threads).
    """
    import dask
    import dask.dataframe as dd

    w_us = _check_options(window, window_events, feature_set, reference_windows, min_reference_windows)
    ddf = dd.read_parquet(str(path))
    missing = [c for c in ("agent", "time", "action") if c not in ddf.columns]
    if missing:
        raise EventError(f"{path}: missing required column {missing[0]!r}")
    ddf = ddf[[c for c in ddf.columns if c in COLUMNS]]
    dtype = str(ddf["time"].dtype)
    if not dtype.startswith("datetime64"):
        raise EventError(
            f"{path}, column 'time': the Dask path needs a Parquet timestamp column, found {dtype}"
        )
    if "UTC" not in dtype and "+00:00" not in dtype:
        raise EventError(f"{path}, column 'time': timestamp without a time zone ({dtype})")
    origin: int | None = None
    n_win: int | None = None
    if w_us is not None:
        tmin, tmax = dask.compute(ddf["time"].min(), ddf["time"].max())
        lo, hi = int(_us(tmin)), int(_us(tmax))
        origin = (lo // w_us) * w_us
        n_win = (hi - origin) // w_us + 1
    parts = ddf.shuffle(
        on="agent", npartitions=npartitions or ddf.npartitions, shuffle_method=shuffle_method
    )
    options = {
        "window": window,
        "window_events": window_events,
        "feature_set": feature_set,
        "reference_windows": reference_windows,
        "min_reference_windows": min_reference_windows,
        "risk_map": risk_map,
    }
    tasks = [
        dask.delayed(_partition)(part, str(path), i, options, origin, n_win)
        for i, part in enumerate(parts.to_delayed())
    ]
    pieces = [p for p in dask.compute(*tasks) if p is not None]
    if not pieces:
        raise EventError(f"{path}: empty dataset: no events")
    return _join(pieces, w_us is not None)


def _us(value: Any) -> int:
    import pandas as pd

    return int(pd.Timestamp(value).value) // 1000  # .value is nanoseconds


def _partition(
    frame: Any, source: str, index: int, options: dict[str, Any], origin: int | None, n_win: int | None
) -> FeatureTable | None:
    if len(frame) == 0:
        return None
    raw = pa.Table.from_pandas(frame, preserve_index=False)
    table = validate_events(raw, source=f"{source} (partition {index})")
    return _compute(table, grid=_Grid(origin, n_win), **options)


def _join(pieces: list[FeatureTable], by_time: bool) -> FeatureTable:
    names = pieces[0].feature_names
    for p in pieces[1:]:
        if p.feature_names != names:
            extra = sorted(set(names) ^ set(p.feature_names))
            raise EventError(
                f"the dataset's partitions define different features ({', '.join(extra)}): "
                "some partitions lack values for a column others have"
            )
    n_win = max(p.windows.shape[1] for p in pieces)

    def pad(a: NDArray[Any], fill: Any) -> NDArray[Any]:
        if a.shape[1] == n_win:
            return a
        widths = [(0, 0), (0, n_win - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
        return np.pad(a, widths, constant_values=fill)

    agents = tuple(a for p in pieces for a in p.agents)
    order = np.argsort(np.array(agents, dtype=object), kind="stable")
    windows = np.concatenate([pad(p.windows, np.nan) for p in pieces])[order]
    counts = np.concatenate([pad(p.counts, 0) for p in pieces])[order]
    if by_time:
        starts = pieces[0].window_starts
    else:
        nat = np.datetime64("NaT", "us")
        starts = np.concatenate([pad(p.window_starts, nat) for p in pieces])[order]
    nodes = None
    if pieces[0].nodes is not None:
        all_nodes = [n for p in pieces for n in (p.nodes or ())]
        nodes = tuple(all_nodes[i] for i in order)
    unmapped: dict[str, int] = {}
    for p in pieces:
        for k, v in p.unmapped.items():
            unmapped[k] = unmapped.get(k, 0) + v
    unmapped = dict(sorted(unmapped.items(), key=lambda kv: (-kv[1], kv[0])))
    excluded = {k: v for p in pieces for k, v in sorted(p.excluded.items())}
    first = pieces[0]
    return FeatureTable(
        agents=tuple(agents[i] for i in order),
        nodes=nodes,
        windows=windows,
        feature_names=names,
        window_starts=starts,
        counts=counts,
        omitted=first.omitted,
        unmapped=unmapped,
        excluded=dict(sorted(excluded.items())),
        window=first.window,
        window_events=first.window_events,
        reference_windows=first.reference_windows,
    )
