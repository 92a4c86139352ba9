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

Implementation: numpy over whole columns (the kernels are :mod:`tcpkit.detect.window_stats`).
The table arrives validated and encoded (:func:`tcpkit.detect.events.encode_events`: text
columns as dictionaries, arguments parsed once per distinct text), sorted by (agent, time); a
window key ``agent * n_windows + window`` is computed per event, every sum is one
:func:`numpy.bincount` over it, the percentile one partition (or sort), novelty one sort of
(agent, item) keys, and risk classes, families and argument items are worked out once per
distinct action or arguments text. No Python loop runs per event or per agent.

A log is computed in *pieces* of whole agents (one piece for :func:`compute_features`; a row
group at a time for :func:`features_from_parquet`; a partition for
:func:`features_from_dataset`). Each piece computes every wanted feature as if the whole log
defined it; which features the log defines (a column present somewhere, some event with a
class, ...) and which agents have too few reference windows is decided once the pieces are
joined, so every path gives exactly the table of the whole log.
:func:`features_from_dataset` runs the same code per partition of a Parquet
dataset through ``dask.dataframe``, after a shuffle that puts each agent's
events into one partition, so datasets larger than memory give the same table.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from tcpkit.detect import window_stats as ws
from tcpkit.detect.events import (
    COLUMNS,
    OPTIONAL,
    ArgumentObjects,
    EncodedEvents,
    EventError,
    encode_events,
    json_text,
)
from tcpkit.detect.riskmap import FAMILIES, RiskMap, catalogue_families, default_risk_map
from tcpkit.detect.simulate import FEATURE_NAMES, RISK_CLASSES

__all__ = [
    "ACTIVITY_FEATURES",
    "ASSESSMENT_FEATURES",
    "FEATURE_SETS",
    "FeatureTable",
    "compute_features",
    "features_from_dataset",
    "features_from_parquet",
    "features_of_files",
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
    origin_us: int | None  # time windows: first window start; None: from the data
    n_windows: int | None  # None: from the data


@dataclass(frozen=True)
class _Options:
    """The checked options of one computation (every piece of a log is computed with them)."""

    window: str | None
    window_us: int | None  # None for count windows
    window_events: int | None
    feature_set: str
    reference_windows: int
    min_reference_windows: int
    risk_map: RiskMap

    @property
    def wanted(self) -> tuple[str, ...]:
        """The features of ``feature_set``, in output order."""
        return {
            "all": FEATURE_NAMES + tuple(a for a in ACTIVITY_FEATURES if a not in FEATURE_NAMES),
            "assessment": FEATURE_NAMES,
            "activity": ACTIVITY_FEATURES,
        }[self.feature_set]


@dataclass(frozen=True, eq=False)
class _Piece:
    """The features of the agents of one piece of a log, before the decisions that need the whole log.

    Every wanted feature is computed as if the whole log defined it (NaN where this piece's
    windows cannot), so that pieces join into exactly the table of the whole log; which
    features the log defines (``seen`` says what holds in this piece: the optional columns
    present, ``class``, ``assessed``, ``family``) and which agents have enough reference
    windows is decided by :func:`_finish` over all pieces.
    """

    agents: tuple[str, ...]
    nodes: tuple[str | None, ...] | None
    values: NDArray[np.float64]  # (n_agents, n_windows, len(wanted))
    counts: NDArray[np.int64]  # (n_agents, n_windows)
    starts: NDArray[np.datetime64]  # (n_windows,) time windows; (n_agents, n_windows) count windows
    unmapped: dict[str, int]
    seen: frozenset[str]


def compute_features(
    table: pa.Table | EncodedEvents,
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
    table : the canonical event table (validated here), or the
        :class:`~tcpkit.detect.events.EncodedEvents` of one.
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
    opts = _options(window, window_events, feature_set, reference_windows, min_reference_windows, risk_map)
    encoded = table if isinstance(table, EncodedEvents) else encode_events(table, source="the event table")
    return _finish([_piece(encoded, opts, _Grid(None, None))], opts)


def _options(
    window: str | None, window_events: int | None, feature_set: str, reference_windows: int,
    min_reference_windows: int, risk_map: RiskMap | None,
) -> _Options:
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
    w_us: int | None = None
    if window_events is not None:
        if isinstance(window_events, bool) or not isinstance(window_events, int) or window_events < 2:
            raise ValueError(f"window_events must be an integer >= 2, got {window_events!r}")
    elif window is None:
        raise ValueError("give window (a duration like 1h) or window_events")
    else:
        w_us = parse_duration(window)
    return _Options(
        window=window if w_us is not None else None,
        window_us=w_us,
        window_events=window_events,
        feature_set=feature_set,
        reference_windows=reference_windows,
        min_reference_windows=min_reference_windows,
        risk_map=risk_map if risk_map is not None else default_risk_map(),
    )


def _codes(col: pa.Array | pa.ChunkedArray) -> NDArray[np.int64]:
    """Dictionary index of every row, -1 for null."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    indices = col.indices if pa.types.is_dictionary(col.type) else pc.dictionary_encode(col).indices
    if indices.null_count:
        indices = pc.fill_null(indices, -1)
    return np.asarray(indices.to_numpy(zero_copy_only=False), dtype=np.int64)


def _f64(table: pa.Table, name: str) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    col = table.column(name).combine_chunks()
    valid = np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    values = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)
    return values, valid


class _Actions:
    """The distinct actions of a piece, with their risk-map rule and catalogue family worked out on demand.

    Rules (a regular expression each) and families run only over the distinct actions that
    need them: an event without a class of its own, an assessed event outside the catalogue.
    """

    def __init__(self, column: pa.ChunkedArray, risk_map: RiskMap) -> None:
        col = column.combine_chunks()
        self.code = _codes(col)
        self.values: pa.Array = col.dictionary if pa.types.is_dictionary(col.type) else pc.unique(col)
        self.risk_map = risk_map
        n = len(self.values)
        self._rule = np.full(n, -2, dtype=np.int64)  # -2: not worked out yet, -1: no rule
        self._family = np.full(n, -2, dtype=np.int64)

    def used_by(self, events: NDArray[np.bool_]) -> NDArray[np.bool_]:
        """Distinct actions of the marked events."""
        return np.bincount(self.code[events], minlength=len(self.values)) > 0

    def rule(self, needed: NDArray[np.bool_]) -> NDArray[np.int64]:
        """Rule index of every distinct action (valid where ``needed``; -1: no rule)."""
        todo = np.flatnonzero(needed & (self._rule == -2))
        if todo.size:
            _, rule = self.risk_map.classify(self.values.take(pa.array(todo)))
            self._rule[todo] = rule
        return self._rule

    def family(self, needed: NDArray[np.bool_]) -> NDArray[np.int64]:
        """Catalogue family of every distinct action (valid where ``needed``; -1: none)."""
        todo = np.flatnonzero(needed & (self._family == -2))
        if todo.size:
            self._family[todo] = catalogue_families(self.values.take(pa.array(todo)))
        return self._family


def _rule_classes(risk_map: RiskMap) -> NDArray[np.int64]:
    """Class index of every rule of the map, then -1 for "no rule" (index -1)."""
    classes = [c for _, c in risk_map.tools] + [c for _, c in risk_map.patterns]
    return np.array([RISK_CLASSES.index(c) for c in classes] + [-1], dtype=np.int64)


def _piece(encoded: EncodedEvents, opts: _Options, grid: _Grid) -> _Piece:
    table = encoded.table
    cols = set(table.column_names)
    seen = {c for c in OPTIONAL if c in cols}
    wanted = set(opts.wanted)

    # agents (the dictionary is sorted, so codes follow the rows) and the window of every event
    agent_col = table.column("agent").combine_chunks()
    agent_names: list[str] = agent_col.dictionary.to_pylist()
    ag = _codes(agent_col)
    n_agents = len(agent_names)
    t = table.column("time").cast(pa.int64()).to_numpy().astype(np.int64)
    n = t.size
    first_row = np.searchsorted(ag, np.arange(n_agents))
    node_of: tuple[str | None, ...] | None = None
    if "node" in cols:
        node_col = table.column("node").combine_chunks()
        names = np.array(node_col.dictionary.to_pylist() + [None], dtype=object)
        node_of = tuple(names[_codes(node_col)[first_row]].tolist())

    w_us = opts.window_us
    if w_us is not None:
        origin = grid.origin_us if grid.origin_us is not None else (int(t.min()) // w_us) * w_us
        win = (t - origin) // w_us
        if win.min() < 0:
            raise ValueError("an event lies before the window grid's origin")
        n_win = int(win.max()) + 1 if grid.n_windows is None else grid.n_windows
        keep = win < n_win
    else:
        assert opts.window_events is not None
        k = opts.window_events
        pos = np.arange(n) - first_row[ag]
        win = pos // k
        per_agent = np.bincount(ag, minlength=n_agents) // k
        keep = win < per_agent[ag]
        n_win = int(per_agent.max()) if grid.n_windows is None else grid.n_windows
        origin = 0
    n_win = max(n_win, 1)
    rows = None if keep.all() else np.flatnonzero(keep)

    def sel(a: NDArray[Any]) -> NDArray[Any]:
        return a if rows is None else a[rows]

    ag, t, win = sel(ag), sel(t), sel(win).astype(np.int64)
    cells = n_agents * n_win
    key = ag * n_win + win
    count = np.bincount(key, minlength=cells).astype(np.int64)

    # risk classes: the log's own, filled from the map (counted over every event, kept or not)
    actions = _Actions(table.column("action"), opts.risk_map)
    if "risk_class" in cols:
        rc = table.column("risk_class").combine_chunks()
        lut = pc.fill_null(pc.index_in(rc.dictionary, value_set=pa.array(RISK_CLASSES)), -1)
        cls_all = np.append(np.asarray(lut.to_numpy(zero_copy_only=False), np.int64), -1)[_codes(rc)]
    else:
        cls_all = np.full(n, -1, dtype=np.int64)
    unmapped: dict[str, int] = {}
    missing = cls_all < 0
    if missing.any():
        rule = actions.rule(actions.used_by(missing))
        cls_all[missing] = _rule_classes(opts.risk_map)[rule[actions.code[missing]]]
        left = np.bincount(actions.code[cls_all < 0], minlength=len(actions.values))
        hit = np.flatnonzero(left)
        pairs = sorted(zip(actions.values.take(pa.array(hit)).to_pylist(), left[hit].tolist(), strict=True),
                       key=lambda kv: (-kv[1], kv[0]))
        unmapped = {str(a): int(c) for a, c in pairs}
    cls = sel(cls_all)
    has_cls = cls >= 0
    if has_cls.any():
        seen.add("class")
    act = sel(actions.code)

    values: dict[str, NDArray[np.float64]] = {}
    nan = np.full(cells, np.nan)

    # ---- assessment
    if wanted & set(FEATURE_NAMES[:7] + ("family_underrating",)):
        if "predicted_risk" in cols:
            p, pv = _f64(table, "predicted_risk")
            p, pv = sel(p), sel(pv)
        else:
            p, pv = np.zeros(key.size), np.zeros(key.size, dtype=bool)
        v = pv & has_cls
        if v.any():
            seen.add("assessed")
        key_v, p_v, cls_v = _masked(v, key, p, cls)
        ws.assessment(values, key_v, p_v, cls_v, cells)
        if rows is None:
            events = v
        else:
            events = np.zeros(n, dtype=bool)
            events[rows[v]] = True
        used = actions.used_by(events)
        family = actions.family(used)
        outside = used & (family < 0)
        rule = actions.rule(outside)
        fam_of = np.where(family >= 0, family, np.where(rule >= 0, len(FAMILIES) + rule, -1))
        fam = np.where(v, fam_of[act], -1)
        fv = fam >= 0
        if fv.any():
            seen.add("family")
        n_fam = len(FAMILIES) + len(opts.risk_map.rules)
        key_f, p_f, cls_f, fam_f = _masked(fv, key, p, cls, fam)
        under = ws.underrating(
            key_f, p_f - ws.LEVELS[cls_f], fam_f * ws.N_CLASSES + cls_f, n_fam * ws.N_CLASSES, cells
        )
        # a window with assessments but no event of a known family has no
        # under-rating (0); a window without assessments has none defined (NaN)
        under[np.bincount(key_v, minlength=cells) == 0] = np.nan
        values["family_underrating"] = under
    if "confidence" in cols:
        c, cv = _f64(table, "confidence")
        c, cv = sel(c), sel(cv)
        key_c, c_c = _masked(cv, key, c)
        values["confidence_mean"], values["confidence_std"] = ws.mean_std(key_c, c_c, cells)
    else:
        values["confidence_mean"] = values["confidence_std"] = nan
    if "latency_ms" in cols:
        lat, lv = _f64(table, "latency_ms")
        lat, lv = sel(lat), sel(lv)
        key_l, lat_l = _masked(lv, key, lat)
        values["latency_mean"], _ = ws.mean_std(key_l, lat_l, cells, std=False)
        values["latency_p95"] = ws.p95(key_l, lat_l, cells)
    else:
        values["latency_mean"] = values["latency_p95"] = nan

    # ---- activity
    if wanted & {f"share_{c.lower()}" for c in RISK_CLASSES}:
        key_k, cls_k = _masked(has_cls, key, cls)
        per_class = np.bincount(key_k * ws.N_CLASSES + cls_k, minlength=cells * ws.N_CLASSES)
        per_class = per_class.reshape(cells, ws.N_CLASSES).astype(np.float64)
        for j, c_name in enumerate(RISK_CLASSES):
            values[f"share_{c_name.lower()}"] = ws.divide(per_class[:, j], count)
    if w_us is not None:
        values["action_rate"] = np.where(count > 0, count / (w_us / 60e6), np.nan)
    else:
        starts = np.concatenate(([0], np.cumsum(count)))[:-1]
        nonempty = count > 0
        span = np.zeros(cells)
        span[nonempty] = (t[starts[nonempty] + count[nonempty] - 1] - t[starts[nonempty]]) / 60e6
        values["action_rate"] = ws.divide((count - 1).astype(np.float64), span)
    ref = min(opts.reference_windows, n_win)
    if "novelty_action" in wanted:
        values["novelty_action"] = ws.novelty(ag, win, act, key, ref, cells)
    if "novelty_arguments" in wanted:
        if "arguments" in cols and encoded.arguments is not None:
            item_row, item_code = _argument_items(sel(_codes(table.column("arguments"))), encoded.arguments)
            values["novelty_arguments"] = ws.novelty(
                ag[item_row], win[item_row], item_code, key[item_row], ref, cells
            )
        else:
            values["novelty_arguments"] = nan
    if "outcome" in cols:
        out = table.column("outcome").combine_chunks()
        code = sel(_codes(out))
        ov = code >= 0
        has = np.bincount(_masked(ov, key)[0], minlength=cells)
        names_out = out.dictionary.to_pylist()
        for label in ("error", "refused"):
            is_label = np.array([v == label for v in names_out] + [False], dtype=bool)
            hit = is_label[code]
            values[f"outcome_{label}_rate"] = ws.divide(np.bincount(key[hit], minlength=cells).astype(np.float64), has)
    else:
        values["outcome_error_rate"] = values["outcome_refused_rate"] = nan

    # ---- assemble
    order = [f for f in opts.wanted if f in values]
    assert len(order) == len(opts.wanted), sorted(set(opts.wanted) - set(values))
    out_values = np.empty((n_agents, n_win, len(order)), dtype=np.float64)
    for j, f in enumerate(order):
        out_values[:, :, j] = values[f].reshape(n_agents, n_win)
    window_starts: NDArray[np.datetime64]
    if w_us is not None:
        window_starts = (origin + w_us * np.arange(n_win)).astype("datetime64[us]")
    else:
        starts_us = np.full(cells, np.iinfo(np.int64).min, dtype=np.int64)  # NaT
        first = np.concatenate(([0], np.cumsum(count)))[:-1]
        nonempty = count > 0
        starts_us[nonempty] = t[first[nonempty]]
        window_starts = starts_us.reshape(n_agents, n_win).view("datetime64[us]")
    return _Piece(
        agents=tuple(agent_names),
        nodes=node_of,
        values=out_values,
        counts=count.reshape(n_agents, n_win),
        starts=window_starts,
        unmapped=unmapped,
        seen=frozenset(seen),
    )


def _masked(mask: NDArray[np.bool_], *arrays: NDArray[Any]) -> tuple[NDArray[Any], ...]:
    """The arrays at the marked events (the arrays themselves, no copy, when every event is marked)."""
    if mask.all():
        return arrays
    return tuple(a[mask] for a in arrays)


def _decide(seen: frozenset[str], wanted: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, str]]:
    """The features the whole log defines, and the reason for each one left out."""
    why: dict[str, str] = {}
    if "assessed" not in seen:
        reason = (
            "column 'predicted_risk' absent"
            if "predicted_risk" not in seen
            else "no event has both a predicted_risk and a risk class"
        )
        why.update(dict.fromkeys(FEATURE_NAMES[:7] + ("family_underrating",), reason))
    elif "family" not in seen:
        why["family_underrating"] = "no action matched a catalogue template or a risk-map rule"
    by_column: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("confidence", ("confidence_mean", "confidence_std")),
        ("latency_ms", ("latency_mean", "latency_p95")),
        ("arguments", ("novelty_arguments",)),
        ("outcome", ("outcome_error_rate", "outcome_refused_rate")),
    )
    for column, features in by_column:
        if column not in seen:
            why.update(dict.fromkeys(features, f"column {column!r} absent"))
    if "class" not in seen:
        reason = "no event has a risk class (no risk_class column and the risk map covered no action)"
        why.update({f"share_{c.lower()}": reason for c in RISK_CLASSES})
    names = tuple(f for f in wanted if f not in why)
    return names, {f: why[f] for f in wanted if f in why}


def _finish(pieces: list[_Piece], opts: _Options) -> FeatureTable:
    """Join pieces (each agent in one piece) into the feature table of the whole log."""
    seen = frozenset().union(*(p.seen for p in pieces))
    names, omitted = _decide(seen, opts.wanted)
    index = [opts.wanted.index(f) for f in names]
    n_win = max(max(p.counts.shape[1] for p in pieces), 1)
    by_time = opts.window_us is not None

    def pad(a: NDArray[Any], fill: Any) -> NDArray[Any]:
        if a.shape[1] == n_win:
            return a
        widths = [(0, 0), (0, n_win - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
        return np.pad(a, widths, constant_values=fill)

    agents = tuple(a for p in pieces for a in p.agents)
    order = np.argsort(np.array(agents, dtype=object), kind="stable")
    in_order = bool(np.all(order == np.arange(order.size)))

    def arrange(parts: list[NDArray[Any]]) -> NDArray[Any]:
        joined = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return joined if in_order else joined[order]

    windows = arrange([pad(p.values[:, :, index], np.nan) for p in pieces])
    counts = arrange([pad(p.counts, 0) for p in pieces])
    nat = np.datetime64("NaT", "us")
    starts = pieces[0].starts if by_time else arrange([pad(p.starts, nat) for p in pieces])
    nodes = None
    if pieces[0].nodes is not None:
        all_nodes = [n for p in pieces for n in (p.nodes or ())]
        nodes = tuple(all_nodes[i] for i in order)
    unmapped: dict[str, int] = {}
    for p in pieces:
        for k, v in p.unmapped.items():
            unmapped[k] = unmapped.get(k, 0) + v
    unmapped = dict(sorted(unmapped.items(), key=lambda kv: (-kv[1], kv[0])))
    agents = tuple(agents[i] for i in order)

    ref = min(opts.reference_windows, n_win)
    nonempty = (counts[:, :ref] > 0).sum(axis=1)
    enough = nonempty >= opts.min_reference_windows
    excluded = {
        agents[i]: (
            f"{int(nonempty[i])} non-empty windows in the reference period "
            f"(the first {ref}), fewer than min_reference_windows={opts.min_reference_windows}"
        )
        for i in np.flatnonzero(~enough)
    }
    keep = np.flatnonzero(enough)
    return FeatureTable(
        agents=tuple(agents[i] for i in keep),
        nodes=None if nodes is None else tuple(nodes[i] for i in keep),
        windows=windows[keep],
        feature_names=names,
        window_starts=starts if by_time else starts[keep],
        counts=counts[keep],
        omitted=omitted,
        unmapped=unmapped,
        excluded=dict(sorted(excluded.items())),
        window=opts.window,
        window_events=opts.window_events,
        reference_windows=opts.reference_windows,
    )


def _argument_items(
    codes: NDArray[np.int64], objects: ArgumentObjects
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(event row, item code) of every ``key = value`` pair of the events' arguments objects.

    ``codes``: each event's entry in the parsed distinct objects (-1: no arguments). An
    item is a key with one value (nested values by their JSON text); two items get one
    code exactly when they are equal. The items of each distinct object are worked out
    once; each event then takes the items of its object (a ragged gather, no loop per event).
    """
    rows: list[NDArray[np.int64]] = []
    item: list[NDArray[np.int64]] = []
    n_items = 0
    if objects.fields is not None:
        n_distinct = objects.fields.num_rows
        for name in objects.fields.column_names:
            col = objects.fields.column(name).combine_chunks()
            valid = np.flatnonzero(np.asarray(col.is_valid().to_numpy(zero_copy_only=False), bool))
            if not valid.size:
                continue
            value = col.take(pa.array(valid))
            t = value.type
            if not (pa.types.is_string(t) or pa.types.is_integer(t) or pa.types.is_boolean(t)):
                value = json_text(value)  # equal values, equal text (a float 1.0 and 1 are one value)
            code = _codes(pc.dictionary_encode(value))
            rows.append(valid.astype(np.int64))
            item.append(code + n_items)
            n_items += int(code.max()) + 1
    else:  # keys whose value types vary between texts: one distinct object at a time
        assert objects.objects is not None
        n_distinct = len(objects.objects)
        owner: list[int] = []
        text: list[str] = []
        for i, obj in enumerate(objects.objects):
            for key, value in (obj or {}).items():
                owner.append(i)
                text.append(key + "\x1f" + json.dumps(value, ensure_ascii=False, separators=(", ", ": "), sort_keys=True))
        if owner:
            rows.append(np.array(owner, dtype=np.int64))
            item.append(_codes(pa.array(text, pa.string())))
    if not rows:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    urow = np.concatenate(rows)
    ucode = np.concatenate(item)
    order = np.argsort(urow, kind="stable")
    urow, ucode = urow[order], ucode[order]
    per = np.append(np.bincount(urow, minlength=n_distinct), 0)  # items of each distinct object; none for -1
    first = np.concatenate(([0], np.cumsum(per)))[:-1]
    k = per[codes]  # items of each event
    event_row = np.repeat(np.arange(codes.size, dtype=np.int64), k)
    offset = np.arange(event_row.size) - np.repeat(np.cumsum(k) - k, k)
    return event_row, ucode[first[codes][event_row] + offset]


# --------------------------------------------------------------------------- streaming Parquet


PARALLEL_MIN_GROUPS = 4  # files with fewer row groups are featurised in this process


def features_from_parquet(
    path: str | os.PathLike[str],
    *,
    window: str | None = "1h",
    window_events: int | None = None,
    feature_set: str = "all",
    reference_windows: int = 8,
    min_reference_windows: int = 1,
    risk_map: RiskMap | None = None,
    workers: int | None = 1,
) -> FeatureTable:
    """:func:`compute_features` of one Parquet file sorted by agent, one row group at a time.

    :func:`tcpkit.detect.parquet_stream.parquet_pieces` cuts the file into pieces of whole
    agents, one row group at a time; each piece is validated and featurised on the file's
    window grid, and the pieces are joined. With ``workers`` > 1 (None: one per core, at
    most two) and at least :data:`PARALLEL_MIN_GROUPS` row groups, that many processes take
    a contiguous range of row groups each (every agent belongs to the range where its first
    row is): processes, not threads, because much of the per-event work holds the GIL. They
    are spawned, so a script that asks for them needs the ``if __name__ == "__main__":``
    guard of :mod:`multiprocessing`.
    Peak memory is bounded by a row group and one agent's events per process, plus the
    output: not by the file. Files written by :func:`~tcpkit.detect.events_write.write_events`
    are sorted by (agent, time); for other layouts use :func:`features_from_dataset` (Dask
    shuffles by agent first) or :func:`compute_features` of :func:`~tcpkit.detect.events.read_events`.

    Raises
    ------
    tcpkit.detect.parquet_stream.UnsortedError
        A file not sorted by agent (naming the row).
    EventError
        Any schema error (the first in file order).
    """
    from tcpkit.detect.parquet_stream import open_events, time_range

    opts = _options(window, window_events, feature_set, reference_windows, min_reference_windows, risk_map)
    n_groups = open_events(path).num_row_groups  # a readable, non-empty file, before any other work
    grid = _Grid(None, None)
    if opts.window_us is not None:
        lo, hi = time_range(path)
        origin = (lo // opts.window_us) * opts.window_us
        grid = _Grid(origin, (hi - origin) // opts.window_us + 1)
    n_workers = max(1, workers if workers is not None else min(2, os.cpu_count() or 1))
    if n_workers == 1 or n_groups < PARALLEL_MIN_GROUPS:
        pieces = _range_pieces(str(path), (0, n_groups), opts, grid)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        n_workers = min(n_workers, n_groups)
        bounds = np.linspace(0, n_groups, n_workers + 1).round().astype(int)
        ranges = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        context = multiprocessing.get_context("spawn")  # pyarrow's thread pools do not survive a fork
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=context) as pool:
            futures = [pool.submit(_range_pieces, str(path), r, opts, grid) for r in ranges]
            pieces = []
            try:
                for future in futures:  # in file order: the first error in the file comes first
                    pieces.extend(future.result())
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    if not pieces:
        raise EventError(f"{path}: empty file: no events")
    return _finish(pieces, opts)


def _range_pieces(path: str, groups: tuple[int, int], opts: _Options, grid: _Grid) -> list[_Piece]:
    """The pieces of the agents that start in row groups ``groups`` (in a worker process or this one)."""
    from tcpkit.detect.parquet_stream import parquet_pieces

    return [_piece(p.encode(), opts, grid) for p in parquet_pieces(path, groups)]


def features_of_files(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    format: str | None = None,
    window: str | None = "1h",
    window_events: int | None = None,
    feature_set: str = "all",
    reference_windows: int = 8,
    min_reference_windows: int = 1,
    risk_map: RiskMap | None = None,
    workers: int | None = 1,
) -> tuple[FeatureTable, int]:
    """Features of event files and how many events they hold, streamed where the files allow.

    One Parquet file sorted by agent (as tcpkit writes them) is streamed by row group
    (:func:`features_from_parquet` with ``workers``: memory bounded by row groups); anything else (other formats, gzip, several files, a Parquet file whose
    agents are not contiguous) is read whole by :func:`~tcpkit.detect.events.read_events`
    and featurised by :func:`compute_features`. Both give the same table.
    """
    from tcpkit.detect.events import format_of, read_events
    from tcpkit.detect.parquet_stream import UnsortedError, open_events

    files = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    options: dict[str, Any] = {
        "window": window,
        "window_events": window_events,
        "feature_set": feature_set,
        "reference_windows": reference_windows,
        "min_reference_windows": min_reference_windows,
        "risk_map": risk_map,
    }
    if len(files) == 1 and format_of(files[0], format) == ("parquet", False):
        try:
            n_events = int(open_events(files[0]).metadata.num_rows)
            return features_from_parquet(files[0], workers=workers, **options), n_events
        except UnsortedError:
            pass  # read whole below
    table = read_events(files, format=format)
    return compute_features(table, **options), int(table.num_rows)


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

    opts = _options(window, window_events, feature_set, reference_windows, min_reference_windows, risk_map)
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
    grid = _Grid(None, None)
    if opts.window_us is not None:
        tmin, tmax = dask.compute(ddf["time"].min(), ddf["time"].max())
        lo, hi = int(_us(tmin)), int(_us(tmax))
        origin = (lo // opts.window_us) * opts.window_us
        grid = _Grid(origin, (hi - origin) // opts.window_us + 1)
    parts = ddf.shuffle(
        on="agent", npartitions=npartitions or ddf.npartitions, shuffle_method=shuffle_method
    )
    tasks = [
        dask.delayed(_partition)(part, str(path), i, opts, grid)
        for i, part in enumerate(parts.to_delayed())
    ]
    pieces = [p for p in dask.compute(*tasks) if p is not None]
    if not pieces:
        raise EventError(f"{path}: empty dataset: no events")
    return _finish(pieces, opts)


def _us(value: Any) -> int:
    import pandas as pd

    return int(pd.Timestamp(value).value) // 1000  # .value is nanoseconds


def _partition(frame: Any, source: str, index: int, opts: _Options, grid: _Grid) -> _Piece | None:
    if len(frame) == 0:
        return None
    raw = pa.Table.from_pandas(frame, preserve_index=False)
    return _piece(encode_events(raw, source=f"{source} (partition {index})"), opts, grid)
