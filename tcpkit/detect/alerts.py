"""Judge a fleet from its per-window features and say, per agent, what was found and why.

This is the production end of the flow ``events -> features -> detector -> alerts``: the
detector comes from the shipped configuration (:class:`tcpkit.detect.config.DetectorConfig`,
read from the frozen, verified model by ``tcpkit detect``); it is fitted on *this* fleet's
reference period, every agent is judged, and the result is an :class:`AlertReport` that
renders as JSON, CSV or a standalone HTML page with plots.

What a p-value here assumes
---------------------------
No vetted clean fleet exists in a real log, so the fleet judges itself with
:class:`tcpkit.detect.fleet.FleetDetector`: windows are centred on their node's peers (a
node- or fleet-wide change cancels), robust fits keep compromised agents from moving the
baselines, agents beyond a robust cutoff are trimmed from calibration, and each agent's
population p-value is a leave-one-out conformal rank; small fleets add a per-agent
permutation test of the agent's own windows. The guarantee that remains, and its
assumptions, are stated in that module. The report says which test produced each agent's
p-value (``population`` or ``self``).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tcpkit.detect.baseline import BaselineError
from tcpkit.detect.config import DetectorConfig
from tcpkit.detect.explain import Explanation
from tcpkit.detect.fleet import FleetDetector
from tcpkit.detect.pvalues import fewest_rejections

TOP_FEATURES = 3
PLOTTED_AGENTS = 12  # flagged agents the HTML report plots (the most significant ones)
LISTED_AGENTS = 500  # flagged agents its table lists (JSON and CSV list every agent)


@dataclass(frozen=True)
class FeatureContribution:
    """One feature's share of an agent's squared distance, and which way it moved."""

    feature: str
    contribution: float
    direction: str  # "higher" or "lower" than the baseline
    z: float


@dataclass(frozen=True)
class AgentAlert:
    """The verdict on one agent."""

    agent: str
    node: str | None
    flagged: bool
    p_value: float
    q_value: float
    first_alarm_window: int | None  # absolute window index of the first CUSUM alarm
    test: str  # the test with the smallest component p-value
    top_features: tuple[FeatureContribution, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "node": self.node,
            "flagged": self.flagged,
            "p_value": self.p_value,
            "q_value": self.q_value,
            "first_alarm_window": self.first_alarm_window,
            "test": self.test,
            "top_features": [
                {"feature": f.feature, "contribution": f.contribution, "direction": f.direction, "z": f.z}
                for f in self.top_features
            ],
        }


@dataclass(frozen=True)
class AlertReport:
    """Every agent's verdict, the decision rule, and what the input left out."""

    detector: Mapping[str, Any]
    alpha: float
    fdr: str
    agents: tuple[AgentAlert, ...]
    feature_names: tuple[str, ...]
    reference_windows: int
    n_windows: int
    excluded: Mapping[str, str] = field(default_factory=dict)  # agent -> reason
    notes: Mapping[str, Any] = field(default_factory=dict)  # unmapped actions, omitted features, ...
    cusum_paths: Mapping[str, NDArray[np.float64]] = field(default_factory=dict)  # the plotted flagged agents
    cusum_threshold: float = float("nan")

    @property
    def n_flagged(self) -> int:
        return sum(a.flagged for a in self.agents)

    def most_significant(self, limit: int | None = None) -> list[AgentAlert]:
        """The flagged agents, smallest p-value first (ties in agent order), at most ``limit``."""
        flagged = sorted((a for a in self.agents if a.flagged), key=lambda a: a.p_value)
        return flagged if limit is None else flagged[:limit]

    def as_dict(self) -> dict[str, Any]:
        """The JSON document: ``{"detector": ..., "alpha": ..., "agents": [...], ...}``."""
        return {
            "detector": dict(self.detector),
            "alpha": self.alpha,
            "fdr": self.fdr,
            "counts": {
                "agents": len(self.agents),
                "flagged": self.n_flagged,
                "excluded": len(self.excluded),
            },
            "features": list(self.feature_names),
            "reference_windows": self.reference_windows,
            "windows": self.n_windows,
            "excluded": dict(self.excluded),
            "notes": dict(self.notes),
            "agents": [a.as_dict() for a in self.agents],
        }

    def to_json(self) -> str:
        """:meth:`as_dict` as ``json.dumps(..., indent=2)`` writes it (the agents written directly, same text)."""
        doc = self.as_dict()
        doc["agents"] = []
        head = json.dumps(doc, indent=2, sort_keys=False, default=_jsonable)
        if not self.agents:
            return head + "\n"
        assert head.endswith('"agents": []\n}')
        return head[: -len("[]\n}")] + "[\n" + ",\n".join(_agent_json(a) for a in self.agents) + "\n  ]\n}\n"

    def to_csv(self) -> str:
        """One row per agent; the top features as ``name:+contribution`` joined by ``;``."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["agent", "node", "flagged", "p_value", "q_value", "first_alarm_window", "test", "top_features"])
        for a in self.agents:
            tops = ";".join(f"{f.feature}:{f.contribution:+.4g}:{f.direction}" for f in a.top_features)
            alarm = "" if a.first_alarm_window is None else a.first_alarm_window
            writer.writerow([a.agent, a.node or "", a.flagged, repr(a.p_value), repr(a.q_value), alarm, a.test, tops])
        return out.getvalue()

    def to_html(self) -> str:
        """A standalone page: summary, flagged agents with plots, the p-value histogram."""
        return _render_html(self)


def _json_value(value: Any) -> str:
    """One scalar as :func:`json.dumps` writes it (NaN and infinities as Python's json does)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "Infinity" if value > 0 else "-Infinity"
        return float.__repr__(value)
    return json.dumps(value, default=_jsonable)


def _agent_json(a: AgentAlert) -> str:
    """One agent of the report's "agents" list, indented as ``json.dumps(indent=2)`` indents it there.

    Why not json.dumps: with ``indent`` it falls back to its pure-Python encoder, seconds for a
    fleet of 1e5 agents; this writes the same text.
    """
    v = _json_value
    if a.top_features:
        tops = ",\n".join(
            "        {\n"
            f'          "feature": {v(f.feature)},\n'
            f'          "contribution": {v(f.contribution)},\n'
            f'          "direction": {v(f.direction)},\n'
            f'          "z": {v(f.z)}\n'
            "        }"
            for f in a.top_features
        )
        top = "[\n" + tops + "\n      ]"
    else:
        top = "[]"
    return (
        "    {\n"
        f'      "agent": {v(a.agent)},\n'
        f'      "node": {v(a.node)},\n'
        f'      "flagged": {v(a.flagged)},\n'
        f'      "p_value": {v(a.p_value)},\n'
        f'      "q_value": {v(a.q_value)},\n'
        f'      "first_alarm_window": {v(a.first_alarm_window)},\n'
        f'      "test": {v(a.test)},\n'
        f'      "top_features": {top}\n'
        "    }"
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def fleet_detector(config: DetectorConfig, feature_names: Sequence[str], reference_windows: int) -> FleetDetector:
    """The self-referenced detector ``tcpkit detect`` runs, with the shipped configuration's settings.

    FDR level and method, estimator (``config.fleet_method``), CUSUM allowance and run
    length, and seed come from ``config``; the fleet-specific settings (trimming, node centring, the self test) are
    :data:`tcpkit.detect.fleet.DEFAULTS`.
    """
    return FleetDetector(
        alpha=config.alpha,
        fdr=config.fdr,
        method=config.fleet_method,
        reference_windows=reference_windows,
        cusum_k=config.cusum_k,
        target_arl=config.target_arl,
        random_state=config.random_state,
        feature_names=tuple(feature_names),
    )


@dataclass(frozen=True)
class _Judged:
    """What either detector said about the judged agents (rows of the judged windows)."""

    flags: list[bool]
    pvalues: list[float]
    qvalues: list[float]
    alarm: list[int]  # absolute window of the first CUSUM alarm, -1 if none
    test: list[str]
    explanations: dict[int, Explanation]
    alpha: float
    fdr: str
    info: dict[str, Any]

    @classmethod
    def of(cls, result: Any, alarm: ArrayLike, test: ArrayLike, info: dict[str, Any]) -> _Judged:
        """From a detector's :class:`~tcpkit.detect.baseline.DetectionResult`, its alarm windows and test names."""
        return cls(
            flags=np.asarray(result.flags, dtype=bool).tolist(),
            pvalues=np.asarray(result.pvalues, dtype=np.float64).tolist(),
            qvalues=np.asarray(result.qvalues, dtype=np.float64).tolist(),
            alarm=np.asarray(alarm, dtype=np.int64).tolist(),
            test=[str(t) for t in np.asarray(test).tolist()],
            explanations={e.index: e for e in result.explanations},
            alpha=result.alpha,
            fdr=result.fdr,
            info=info,
        )


def resolution(smallest_p: float, m: int, alpha: float, fdr: str) -> dict[str, Any]:
    """What the report says about the run's resolution (:func:`~tcpkit.detect.pvalues.fewest_rejections`).

    ``smallest_p_value``: no judged agent's p-value can be below it (a conformal p-value
    is at least ``1 / (n_cal + 1)``); ``fewest_flaggable``: the fewest agents the decision
    can flag at all (None: none can be flagged in this run, whatever the data).
    """
    return {"smallest_p_value": float(smallest_p), "fewest_flaggable": fewest_rejections(smallest_p, m, alpha, fdr)}


def _judge_self(
    w: NDArray[np.float64], names: tuple[str, ...], config: DetectorConfig, k: int,
    node_labels: NDArray[np.str_] | None,
) -> tuple[_Judged, Callable[[NDArray[np.intp]], tuple[NDArray[np.float64], float]]]:
    """The fleet judges itself (no vetted reference): :class:`FleetDetector`."""
    detector = fleet_detector(config, names, k)
    detector.fit(w, node_labels)
    result = detector.detect(w, node_labels)
    judged = _Judged.of(result, result.components["first_alarm_window"], result.components["test"], {
        "detector": "FleetDetector",
        "trimmed_from_calibration": int(np.asarray(result.components["trimmed"]).sum()),
        "self_tested": int(np.asarray(result.components["self_tested"]).sum()),
        **resolution(detector.smallest_pvalue_, w.shape[0], result.alpha, result.fdr),
    })

    def paths(rows: NDArray[np.intp]) -> tuple[NDArray[np.float64], float]:
        cusum = detector.cusum(w, node_labels)
        return np.asarray(cusum.statistic[rows], dtype=np.float64), float(cusum.h)

    return judged, paths


MIN_AUDITED_AGENTS = 40  # the network detector's smallest reference (half fit, half calibrate)


def _judge_audited(
    w: NDArray[np.float64], names: tuple[str, ...], config: DetectorConfig, k: int, audited: NDArray[np.bool_],
) -> tuple[_Judged, Callable[[NDArray[np.intp]], tuple[NDArray[np.float64], float]]]:
    """An audited reference inside the fleet: the shipped :class:`NetworkDetector`, fitted on it."""
    from tcpkit.detect.config import build_detector

    n_audited = int(audited.sum())
    if n_audited < MIN_AUDITED_AGENTS:
        raise BaselineError(
            f"{n_audited} audited agents: the network detector needs at least {MIN_AUDITED_AGENTS} "
            "(half fit its baselines, half calibrate)"
        )
    if n_audited == audited.size:
        raise BaselineError("every agent is in the audited reference: nobody is left to judge")
    # the threat-directed test's library speaks the simulator's features; a log with other
    # columns is judged by the other tests alone (the notes say which detector ran)
    from tcpkit.detect.simulate import FEATURE_NAMES

    library = config.threat_library if tuple(names) == FEATURE_NAMES else None
    detector = build_detector(config.replace(features=list(names), reference_windows=k, threat_library=library))
    detector.fit(w[audited])
    judged_w = w[~audited]
    result = detector.detect(judged_w)
    alarm = np.asarray(result.components["alarm_window"], dtype=np.int64)
    judged = _Judged.of(result, np.where(alarm >= 0, alarm + k, -1), result.components["explained_by"], {
        "detector": "NetworkDetector",
        "audited_agents": n_audited,
        "calibration_agents": int(detector.n_calibration_),
        "components": list(detector.components_),
        "screened_from_reference": detector.screened_.n_removed,
        **resolution(detector.smallest_pvalue_, judged_w.shape[0], result.alpha, result.fdr),
    })

    def paths(rows: NDArray[np.intp]) -> tuple[NDArray[np.float64], float]:
        cusum = detector.cusum(judged_w[rows])
        return np.asarray(cusum.statistic, dtype=np.float64), float(cusum.h)

    return judged, paths


def judge_fleet(
    windows: ArrayLike,
    agents: Sequence[str],
    feature_names: Sequence[str],
    config: DetectorConfig,
    *,
    nodes: Sequence[str] | None = None,
    reference_windows: int | None = None,
    audited: Sequence[str] | None = None,
    detector_info: Mapping[str, Any] | None = None,
    excluded: Mapping[str, str] | None = None,
    notes: Mapping[str, Any] | None = None,
    plotted: int = PLOTTED_AGENTS,
) -> AlertReport:
    """Fit the configured detector on this fleet's reference and judge every other agent.

    Parameters
    ----------
    windows : (n_agents, n_windows, d) per-window features, agents in ``agents`` order.
    config : the shipped configuration; its ``features`` and ``reference_windows`` are
        replaced by this fleet's (``reference_windows`` when given).
    audited : agents of the fleet audited clean (None: none are). Without them the fleet
        judges itself (:class:`~tcpkit.detect.fleet.FleetDetector`: every agent's first
        ``reference_windows`` windows are its reference, robust fits and trimming stand in
        for a vetted reference). With them the shipped
        :class:`~tcpkit.detect.composite.NetworkDetector` (what the statistics gates measure)
        is fitted on their windows and judges the others; its p-values assume that a clean
        judged agent and an audited agent are exchangeable (the same fleet, nodes and
        history), and the audited agents are not judged (``notes["audited"]`` counts them).
    detector_info : what identifies the detector in the report (component, digest, ...).
    plotted : the report keeps the CUSUM paths of this many flagged agents, the most
        significant (the HTML report plots them); 0 skips the CUSUM pass that makes them.
    """
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim != 3:
        raise BaselineError(f"windows has shape {w.shape}: expected (n_agents, n_windows, n_features)")
    names = tuple(str(n) for n in feature_names)
    if len(agents) != w.shape[0] or len(names) != w.shape[2]:
        raise BaselineError(
            f"{len(agents)} agents and {len(names)} feature names for windows of shape {w.shape}"
        )
    if nodes is not None and len(nodes) != w.shape[0]:
        raise BaselineError(f"{len(nodes)} nodes for {w.shape[0]} agents")
    k = config.reference_windows if reference_windows is None else int(reference_windows)
    node_labels = None if nodes is None else np.asarray([str(n) for n in nodes])
    judged_rows = np.arange(w.shape[0])
    extra_notes: dict[str, Any] = {}
    if audited is None:
        judged, paths = _judge_self(w, names, config, k, node_labels)
    else:
        mask = audited_mask(agents, audited)
        judged, paths = _judge_audited(w, names, config, k, mask)
        judged_rows = np.flatnonzero(~mask)
        extra_notes["audited"] = int(mask.sum())
    cfg = config.replace(features=list(names), reference_windows=k)
    verdicts = []
    for j, i in enumerate(judged_rows.tolist()):
        e = judged.explanations.get(j)
        tops: tuple[FeatureContribution, ...] = ()
        if e is not None:
            tops = tuple(
                FeatureContribution(name, c, "higher" if z > 0 else "lower", z) for name, c, z in e.top(TOP_FEATURES)
            )
        verdicts.append(
            AgentAlert(
                agent=str(agents[i]),
                node=None if nodes is None else str(nodes[i]),
                flagged=judged.flags[j],
                p_value=judged.pvalues[j],
                q_value=judged.qvalues[j],
                first_alarm_window=None if judged.alarm[j] < 0 else int(judged.alarm[j]),
                test=judged.test[j],
                top_features=tops,
            )
        )
    rows = np.flatnonzero(judged.flags)
    top_rows = rows[np.argsort(np.asarray(judged.pvalues)[rows], kind="stable")][: max(plotted, 0)]
    flagged_paths: dict[str, NDArray[np.float64]] = {}
    threshold = float("nan")
    if top_rows.size:
        statistic, threshold = paths(top_rows)
        flagged_paths = {verdicts[int(j)].agent: statistic[n].copy() for n, j in enumerate(top_rows)}
    return AlertReport(
        detector=dict(detector_info or {}, config=cfg.to_mapping(), **judged.info),
        alpha=judged.alpha,
        fdr=judged.fdr,
        agents=tuple(verdicts),
        feature_names=names,
        reference_windows=k,
        n_windows=int(w.shape[1]),
        excluded=dict(excluded or {}),
        notes=dict(notes or {}, **extra_notes),
        cusum_paths=flagged_paths,
        cusum_threshold=threshold,
    )


def audited_mask(agents: Sequence[str], audited: Sequence[str]) -> NDArray[np.bool_]:
    """Mask of ``agents`` named in ``audited``; an audited name that is not an agent is an error."""
    index = {str(a): i for i, a in enumerate(agents)}
    missing = sorted({str(a) for a in audited} - set(index))
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise BaselineError(
            f"{len(missing)} audited agents are not among the judged agents (absent from the log, or "
            f"excluded for too little reference): {shown}"
        )
    mask = np.zeros(len(agents), dtype=bool)
    mask[[index[str(a)] for a in audited]] = True
    return mask


MAX_MISSING_SHARE = 0.5  # a feature undefined in more agent-windows than this is structurally missing: left out


def complete_windows(
    windows: NDArray[np.float64], names: Sequence[str], agents: Sequence[str]
) -> tuple[NDArray[np.bool_], NDArray[np.bool_], dict[str, str], dict[str, str]]:
    """Which features and agents the detector can use when some windows leave a feature undefined.

    A feature that is NaN in more than ``MAX_MISSING_SHARE`` of the agent-windows is left out
    (say, latency in a log where most windows have no timed action), and so is a feature with
    one value everywhere (it carries nothing and makes every covariance singular); then an agent with any
    NaN left in the kept features is excluded, with the reason (never imputed: a guessed value
    is a guessed verdict). Returns (kept feature mask, kept agent mask, dropped features,
    excluded agents).
    """
    missing = ~np.isfinite(windows)
    share = missing.mean(axis=(0, 1)) if windows.size else np.zeros(len(names))
    keep_f = share <= MAX_MISSING_SHARE
    dropped = {
        str(names[int(j)]): f"undefined in {share[j]:.0%} of the agent-windows (more than {MAX_MISSING_SHARE:.0%})"
        for j in np.flatnonzero(~keep_f)
    }
    with np.errstate(invalid="ignore"):
        spread = np.nanmax(windows, axis=(0, 1)) - np.nanmin(windows, axis=(0, 1)) if windows.size else share
    constant = keep_f & ~(spread > 0)
    dropped.update({str(names[int(j)]): "the same value in every agent-window (no information)" for j in np.flatnonzero(constant)})
    keep_f &= ~constant
    bad_rows = missing[:, :, keep_f].any(axis=(1, 2))
    excluded = {
        str(agents[int(i)]): "a kept feature is undefined in one of its windows (e.g. a window without events)"
        for i in np.flatnonzero(bad_rows)
    }
    return np.asarray(keep_f, dtype=np.bool_), np.asarray(~bad_rows, dtype=np.bool_), dropped, excluded


def judge_table(
    table: Any,
    config: DetectorConfig,
    *,
    window: str | None = "1h",
    window_events: int | None = None,
    reference_windows: int = 8,
    risk_map: Any = None,
    audited: Sequence[str] | None = None,
    detector_info: Mapping[str, Any] | None = None,
    plotted: int = PLOTTED_AGENTS,
) -> AlertReport:
    """Events in, alerts out: features of ``table`` by window, then :func:`judge_features`.

    ``table`` is the canonical event table (:mod:`tcpkit.detect.events`); features come from
    :func:`tcpkit.detect.features.compute_features` (windows by time, or by count when
    ``window_events`` is given).
    """
    from tcpkit.detect.features import compute_features

    feats = compute_features(
        table,
        window=window,
        window_events=window_events,
        reference_windows=reference_windows,
        min_reference_windows=reference_windows,
        risk_map=risk_map,
    )
    return judge_features(
        feats, config, n_events=int(table.num_rows), audited=audited, detector_info=detector_info, plotted=plotted
    )


def judge_features(
    feats: Any,
    config: DetectorConfig,
    *,
    n_events: int,
    audited: Sequence[str] | None = None,
    detector_info: Mapping[str, Any] | None = None,
    plotted: int = PLOTTED_AGENTS,
) -> AlertReport:
    """Alerts from a :class:`tcpkit.detect.features.FeatureTable` (of ``n_events`` events), by :func:`judge_fleet`.

    The fleet's reference period is the table's ``reference_windows``. Agents the features
    exclude (too little reference) and agents or features that :func:`complete_windows`
    leaves out are named in the report. ``audited`` names the agents audited clean (see
    :func:`judge_fleet`); an audited agent that the features exclude is left out of the
    reference (``notes["audited_excluded"]`` counts them), and a name that is not in the
    log at all is an error.
    """
    reference_windows = int(feats.reference_windows)
    if feats.n_agents == 0:
        raise BaselineError(f"no agent has {reference_windows} reference windows: nothing to judge")
    keep_f, keep_a, dropped, excluded = complete_windows(feats.windows, feats.feature_names, feats.agents)
    if not keep_f.any():
        raise BaselineError(f"every feature is undefined in too many windows: {dropped}")
    names = tuple(n for n, k in zip(feats.feature_names, keep_f, strict=True) if k)
    agents = [a for a, k in zip(feats.agents, keep_a, strict=True) if k]
    nodes = None if feats.nodes is None else [str(n) for n, k in zip(feats.nodes, keep_a, strict=True) if k]
    notes = {
        "window": feats.window if feats.window_events is None else f"{feats.window_events} events",
        "events": int(n_events),
        "unmapped_actions": dict(feats.unmapped),
        "omitted_features": dict(feats.omitted),
        "dropped_features": dropped,
    }
    audited_kept: list[str] | None = None
    if audited is not None:
        seen = set(feats.agents) | set(feats.excluded)
        unknown = sorted({str(a) for a in audited} - seen)
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise BaselineError(f"{len(unknown)} audited agents have no events in the log: {shown}")
        kept = set(agents)
        audited_kept = [str(a) for a in audited if str(a) in kept]
        notes["audited_excluded"] = len(audited) - len(audited_kept)
    windows = feats.windows
    if not keep_a.all():
        windows = windows[keep_a]
    if not keep_f.all():
        windows = windows[:, :, keep_f]
    return judge_fleet(
        windows,
        agents,
        names,
        config,
        nodes=nodes,
        reference_windows=reference_windows,
        audited=audited_kept,
        detector_info=detector_info,
        excluded={**feats.excluded, **excluded},
        notes=notes,
        plotted=plotted,
    )


# -- HTML --------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 60rem; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.5rem; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; }
code { overflow-wrap: anywhere; }
.flag { color: #a00; font-weight: 600; }
"""


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(report: AlertReport) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    p = np.array([a.p_value for a in report.agents])
    fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.hist(p, bins=41, range=(0.0, 1.0), color="#4477aa")
    ax.set_xlabel("combined p-value"), ax.set_ylabel("agents"), ax.set_title("p-values of every agent")
    out["pvalues"] = _png(fig)
    plt.close(fig)
    for a in report.most_significant(PLOTTED_AGENTS):
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 2.4))
        path = report.cusum_paths.get(a.agent)
        if path is not None:
            x = np.arange(report.reference_windows, report.reference_windows + path.size)
            left.plot(x, path, marker=".", color="#aa3377")
            left.axhline(report.cusum_threshold, color="k", ls="--", lw=1, label="alarm threshold")
            if a.first_alarm_window is not None:
                left.axvline(a.first_alarm_window, color="#cc6600", lw=1, label="first alarm")
            left.set_xlabel("window"), left.set_ylabel("CUSUM"), left.legend(fontsize=7)
        if a.top_features:
            names = [f.feature for f in a.top_features]
            right.barh(names, [f.contribution for f in a.top_features], color="#228833")
            right.invert_yaxis(), right.set_xlabel("share of squared distance")
        fig.suptitle(f"{a.agent} (p = {a.p_value:.2g}, q = {a.q_value:.2g}, test {a.test})", fontsize=9)
        out[a.agent] = _png(fig)
        plt.close(fig)
    return out


_NOTE_CHARS = 2000  # longest note shown in the HTML report (the JSON report has it whole)


def _shorten(text: str) -> str:
    return text if len(text) <= _NOTE_CHARS else text[:_NOTE_CHARS] + " ... (cut; see the JSON report)"


def resolution_text(report: AlertReport) -> str | None:
    """One sentence on the run's resolution (:func:`resolution`), None when the report has none."""
    if "smallest_p_value" not in report.detector:
        return None
    p, k, m = report.detector["smallest_p_value"], report.detector["fewest_flaggable"], len(report.agents)
    level = f"{report.fdr.upper()} at {report.alpha:g}"
    if k is None:
        return (f"no p-value can be below {p:.3g}, so {level} can flag none of the {m} judged agents "
                "in this run, whatever they do: the reference is too small for the fleet")
    return f"no p-value can be below {p:.3g}, so {level} flags no group of fewer than {k} of the {m} judged agents"


def _resolution_html(report: AlertReport) -> str:
    text = resolution_text(report)
    return "" if text is None else f"<p>Resolution: {html.escape(text)}.</p>"


def _render_html(report: AlertReport) -> str:
    e = html.escape
    plots = _plots(report)
    flagged = report.most_significant()
    listed = flagged[:LISTED_AGENTS]
    rows = []
    for a in listed:
        tops = ", ".join(f"{e(f.feature)} {f.direction} ({f.contribution:.3g})" for f in a.top_features)
        alarm = "-" if a.first_alarm_window is None else str(a.first_alarm_window)
        rows.append(
            f"<tr><td><code>{e(a.agent)}</code></td><td>{e(a.node or '-')}</td>"
            f"<td class=num>{a.p_value:.3g}</td><td class=num>{a.q_value:.3g}</td>"
            f"<td class=num>{alarm}</td><td>{e(a.test)}</td><td>{tops}</td></tr>"
        )
    info = "".join(
        f"<tr><th>{e(str(k))}</th><td><code>{e(json.dumps(v, default=_jsonable))}</code></td></tr>"
        for k, v in report.detector.items()
    )
    notes = "".join(
        f"<tr><th>{e(str(k))}</th><td><code>{e(_shorten(json.dumps(v, default=_jsonable)))}</code></td></tr>"
        for k, v in report.notes.items()
    )
    excluded = "".join(
        f"<li><code>{e(k)}</code>: {e(v)}</li>" for k, v in list(report.excluded.items())[:LISTED_AGENTS]
    )
    if len(report.excluded) > LISTED_AGENTS:
        excluded += f"<li>... {len(report.excluded) - LISTED_AGENTS} more (see the JSON report)</li>"
    figures = "".join(
        f'<figure><img src="{plots[a.agent]}" alt="scores of {e(a.agent)}"></figure>'
        for a in listed
        if a.agent in plots
    )
    unlisted = len(flagged) - len(listed)
    plotted = sum(a.agent in plots for a in listed)
    more = len(listed) - plotted
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>tcpkit alerts</title><style>{_STYLE}</style></head><body>
<h1>tcpkit alerts</h1>
<p><span class=flag>{report.n_flagged}</span> of {len(report.agents)} agents flagged at {e(report.fdr.upper())}
level {report.alpha:g}; {len(report.excluded)} excluded; reference = each agent's first
{report.reference_windows} of {report.n_windows} windows.</p>
{_resolution_html(report)}
<h2>Flagged agents</h2>
<p>Smallest p-value first{f"; the {len(listed)} most significant of {len(flagged)} (every agent is in the JSON and CSV reports)" if unlisted else ""}.</p>
<table><thead><tr><th>agent</th><th>node</th><th>p</th><th>q</th><th>first alarm window</th><th>test</th>
<th>top features</th></tr></thead><tbody>{''.join(rows) or '<tr><td colspan=7>none</td></tr>'}</tbody></table>
{figures}{f'<p>Plots for the {plotted} most significant; {more} more flagged agents are listed above without plots.</p>' if more else ''}
<h2>All agents</h2><figure><img src="{plots['pvalues']}" alt="p-value histogram"></figure>
<h2>Detector</h2><table>{info}</table>
<h2>Input</h2><table>{notes or '<tr><td>nothing left out</td></tr>'}</table>
{f'<h3>Excluded agents</h3><ul>{excluded}</ul>' if excluded else ''}
</body></html>
"""
