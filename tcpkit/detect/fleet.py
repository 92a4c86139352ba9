"""A detector for a real fleet: no vetted clean reference, benign change, small populations.

:class:`FleetDetector` fits and calibrates on the *monitored fleet's own* reference
windows (each agent's first ``reference_windows`` windows), which may hold compromised
agents, including poisoning present from the first window. It judges every agent of
that same fleet.

Peer-centred windows (benign change must not alarm)
---------------------------------------------------
Every window of every agent is first centred on its peers in the same window:
``r_iw = x_iw - median_{j in node(i)} x_jw`` (feature-wise), or the fleet-wide median
when the node has fewer than ``min_node_agents`` agents (or no nodes are given). A
model or prompt update that moves every agent of a node (or of the fleet) at one
window moves the median too and cancels; what remains is how an agent differs from
its peers, window by window. Up to half of a node's agents may be compromised before
the median moves with them.

The population tests
--------------------
``level``
    mean of ``r_iw`` over the reference windows, scored by the squared robust
    Mahalanobis distance of a :class:`~tcpkit.detect.baseline.Baseline` fit (OGK or
    MCD, robust to the compromised agents in the reference) on all agents' levels.
    Sees compromises present from the start (poisoning), which no before/after
    comparison can.
``change``
    ``mean(r after the reference) - mean(r in the reference)``, scored against a
    robust fit of the whole fleet's changes (so that the directions in which honest
    agents change, e.g. benign drift, weigh less).
``cusum``
    per window after the reference, the squared ``S_w`` distance of
    ``r_iw - mean(r in the reference)`` (``S_w``: the pooled within-agent window
    covariance, a robust fit on the reference windows minus each agent's own
    reference mean), through a one-sided CUSUM
    (:class:`~tcpkit.detect.sequential.CusumDetector`, frozen in-control reference:
    the leave-one-window-out residuals of the reference period); score = the path's
    maximum; its first crossing is the agent's alarm window. Catches slow drift.

Each score ``s`` becomes ``log(1 + s)`` (light right tail) and is robustly standardised
over the fleet (median and MAD); the population statistic is ``T_i = max_j z_ij``.
**Trimming**: agents with ``T > c`` are removed from the calibration set, where ``c``
is the Student-t (``_TRIM_DF`` df) ``1 - (1 - trim_quantile) / (3 n)`` quantile in MAD
units (Bonferroni over agents and components: if the clean agents' z are no heavier
tailed than that t, the expected number of clean agents trimmed per fleet is at most
``1 - trim_quantile``; a normal model was measured to trim honest agents, whose
heterogeneity gives heavy tails). **Calibration**: agent ``i``'s p-value is
``(1 + #{j != i kept: T_j >= T_i}) / (n_kept(-i) + 1)``: leave-one-out over the kept
agents, so an agent is never in its own calibration set. Every fitted quantity (robust
fits, medians, scales, trimming) is a symmetric function of the whole fleet: the
n-fold limit of cross-fitting, which keeps the clean agents exactly exchangeable, where
a K-fold split would shrink the calibration set to n/K or (cross-conformal pooling)
weaken the guarantee to 2 alpha.

*The guarantee that remains.* Assume the clean agents are exchangeable (same
population; in the simulator: independent draws of the same traits). Let ``m`` be the
number of clean agents other than ``i``, ``o`` the compromised agents kept in ``i``'s
calibration set and ``r`` the clean agents trimmed from it. Then for a clean agent and
every ``alpha``, ``P(p_i <= alpha) <= (alpha (m - r + o + 1) + r) / (m + 1)``, i.e.
about ``alpha (1 + o/m) + r/m``: compromised agents left in the calibration only
inflate the level by their share (and, above the judged agent, make it conservative),
while every clean agent trimmed adds up to ``1/m`` (and gets the smallest p-value).
Exact validity (``<= alpha``) therefore needs the trimming to remove compromised agents
only: an assumption about the separation of the compromised agents from the clean
tail that no procedure without labels can verify; ``components["trimmed"]`` says whom
it removed.

``calibration="conditional"`` (Bates, Candes, Lei, Romano & Sesia 2023, Ann. Statist.)
replaces the marginal p-value by ``1 - a_{#{cal < T}}``, with ``a`` the
generalised-Simes lower confidence band of ``n`` uniform order statistics
(Sarkar 2008; ``k = n / 2``, :func:`simes_band`): with probability at least
``1 - delta`` over the calibration set, ``P(p <= alpha | calibration) <= alpha`` for
every ``alpha`` at once (same assumptions as above; trimmed clean agents and kept
compromised ones enter the same way). ``calibration="dkwm"`` adds the
Dvoretzky-Kiefer-Wolfowitz-Massart margin ``sqrt(log(1 / delta) / (2 n))`` instead
(one-sided; valid, far coarser). ``"marginal"`` (default) gives
``P(p <= alpha) <= alpha`` on average over calibration sets; marginal conformal
p-values are PRDS (Bates et al.), so BH controls the FDR over the clean agents. The
self test below has no calibration set; the option does not change it.

Small fleets: the self test
---------------------------
A population p-value cannot fall below ``1 / (n_kept + 1)``: with ``m`` agents judged,
BH at level ``q`` can reject one agent only if that is at most ``q / m``, which never
holds when the calibration set is the fleet itself (it rejects in groups of about
``1 / q`` at best). ``self`` is a per-agent permutation test of the agent's own
windows, with no such floor (:func:`permutation_pvalues`): each window is first
residualised on its node's median path (``x_iw - a_i - b_i m_g(w)`` per feature, ``b_i``
fitted per agent and clipped to ``[0, _MAX_RESPONSE]``, so an honest agent that responds
to a regime change more or less strongly than its node leaves no step), projected on
the "quiet" directions (:meth:`FleetDetector._quiet_directions`: where the fleet's
contrasts vary less than ``benign_ratio`` times window noise, so benign per-agent drift
is left out), and two contrasts (a step after the reference, a linear trend) are
tested by random re-orderings of the windows (Besag & Clifford sequential stopping).
It is not run on the agents of a node whose median path jumps (:func:`regime_jumps`: a
benign regime change; ``components["self_tested"]`` says where it ran). Its assumption:
on the nodes where it runs, after those steps, an honest agent's windows are
exchangeable over time (no benign change of its own in the quiet directions, no
autocorrelation). Where regime changes are frequent (every node), it never runs and
small fleets are left with the population floor. The
final p-value is the weighted Bonferroni combination
``min(1, p_population / w, p_self / (1 - w))`` with ``w = population_weight`` (valid
under any dependence between the two, each under its own assumption) and
``components["test"]`` says per agent which of the two gave it. ``n_permutations=None``
sizes the self test so that it can reach the BH threshold of a single rejection:
``ceil(2 m / (alpha (1 - w)))`` draws (clipped to [999, 200000]).

The protocol
------------
``fit(windows, nodes=None) -> self`` uses the first ``reference_windows`` windows only;
``detect(windows, nodes=None)`` judges the *same* fleet (same agents in the same order,
same reference windows: checked) with at least one window after the reference.
``to_arrays()`` / ``from_arrays()`` hold all fitted state as numeric and fixed-width
string arrays (``numpy.savez`` / ``numpy.load(allow_pickle=False)``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from tcpkit.detect.baseline import (
    FDR_METHODS,
    Baseline,
    BaselineError,
    DetectionResult,
    _check_alpha,
    decide,
)
from tcpkit.detect.covariance import METHODS
from tcpkit.detect.explain import Explanation, explain
from tcpkit.detect.sequential import CusumDetector, CusumResult

__all__ = ["CALIBRATIONS", "DEFAULTS", "FleetDefaults", "FleetDetector", "naive_detect"]

CALIBRATIONS = ("marginal", "conditional", "dkwm")
POPULATION_COMPONENTS = ("level", "change", "cusum")
_BC_EXCEEDANCES = 10  # Besag-Clifford: stop an agent's permutations after this many exceedances
_PERMUTATION_BOUNDS = (999, 200_000)
_MAD_TO_SD = 1.4826
_MAX_RESPONSE = 3.0  # largest response to a node regime change (relative to the median) explained away
_REGIME_JUMP = 3.5  # a node median moving this many window-noise SDs at once is a regime change
_TRIM_DF = 5  # tail model of the trimming (module docstring)
_ARRAY_VERSION = 1


@dataclass(frozen=True)
class FleetDefaults:
    """The one place where every default of :class:`FleetDetector` lives."""

    alpha: float = 0.05
    fdr: str = "bh"
    method: str = "ogk"
    reference_windows: int = 5
    cusum_k: float = 0.5
    target_arl: float = 500.0
    trim_quantile: float = 0.9
    calibration: str = "marginal"
    delta: float = 0.1
    min_node_agents: int = 10
    n_permutations: int | None = None
    self_test: bool = True
    benign_ratio: float = 1.5
    population_weight: float = 0.75
    random_state: int = 0


DEFAULTS = FleetDefaults()
MIN_AGENTS = 20


def _positive_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < minimum:
        raise BaselineError(f"{name}={value!r}: expected an integer >= {minimum}")
    return int(value)


def _open_unit(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating) or not 0 < value < 1:
        raise BaselineError(f"{name}={value!r}: expected a number in (0, 1)")
    return float(value)


def _check_windows(windows: ArrayLike, name: str = "windows") -> NDArray[np.float64]:
    try:
        w = np.asarray(windows, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BaselineError(f"{name} is not a numeric array: {exc}") from None
    if w.ndim != 3 or min(w.shape) == 0:
        raise BaselineError(f"{name} has shape {w.shape}: expected (n_agents, n_windows, n_features)")
    bad = ~np.isfinite(w)
    if bad.any():
        agent, window, feature = (int(v[0]) for v in np.nonzero(bad))
        raise BaselineError(
            f"{name} contains NaN or infinite values (first at agent {agent}, window {window}, "
            f"feature {feature}; {int(bad.sum())} values in all)"
        )
    return w


def _node_labels(nodes: ArrayLike | None, n: int) -> NDArray[np.str_]:
    if nodes is None:
        return np.full(n, "", dtype="<U1")
    arr = np.asarray(nodes)
    if arr.ndim != 1 or arr.size != n:
        raise BaselineError(f"nodes has shape {arr.shape}: expected one label per agent, ({n},)")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise BaselineError("nodes contains NaN labels")
    return arr.astype(str)


def _robust_z(values: NDArray[np.float64]) -> tuple[float, float]:
    """Median and MAD-based scale of ``values`` (scale floored away from zero)."""
    med = float(np.median(values))
    mad = float(np.median(np.abs(values - med))) * _MAD_TO_SD
    if not mad > 0:
        spread = float(np.std(values))
        mad = spread if spread > 0 else 1.0
    return med, mad


def _log_score(scores: NDArray[np.float64]) -> NDArray[np.float64]:
    """``log(1 + s)``: makes the right tail of squared distances and CUSUM maxima light."""
    return np.asarray(np.log1p(np.maximum(scores, 0.0)), dtype=np.float64)


def trim_cutoff(trim_quantile: float, n_agents: int) -> float:
    """Robust-z cutoff of the trimming: Student t (``_TRIM_DF`` df) quantile, in MAD units.

    Bonferroni over agents and components: under the model that the clean agents'
    robust z are no heavier-tailed than t with ``_TRIM_DF`` degrees of freedom, the
    expected number of clean agents trimmed from a fleet is at most ``1 - trim_quantile``.
    """
    tail = (1.0 - trim_quantile) / (len(POPULATION_COMPONENTS) * n_agents)
    mad_units = float(stats.t.ppf(0.75, _TRIM_DF) / stats.norm.ppf(0.75))
    return float(stats.t.isf(tail, _TRIM_DF) / mad_units)


def simes_band(n: int, delta: float) -> NDArray[np.float64]:
    """Lower confidence band ``a_1 <= ... <= a_n`` for ``n`` sorted uniforms, ``P(all U_(i) >= a_i) >= 1 - delta``.

    The generalised Simes inequality (Sarkar 2008) with ``k = max(1, n // 2)``, as used
    for calibration-conditional conformal p-values by Bates et al. (2023):
    ``a_i = delta**(1/k) * (prod_{j=i-k+1}^{i} j / prod_{j=n-k+1}^{n} j)**(1/k)`` for
    ``i >= k`` and 0 below.
    """
    k = max(1, n // 2)
    logs = np.log(np.arange(1, n + 1, dtype=np.float64))
    window = np.convolve(logs, np.ones(k), mode="valid")  # sum of log j over j = i-k+1..i, i >= k
    top = logs[n - k :].sum()
    a = np.zeros(n, dtype=np.float64)
    a[k - 1 :] = np.exp(np.log(delta) / k + (window - top) / k)
    return a


def _conformal(
    stat: NDArray[np.float64], kept: NDArray[np.bool_], calibration: str, delta: float
) -> NDArray[np.float64]:
    """Leave-one-out conformal p-values of ``stat`` against the kept agents (larger = worse)."""
    cal = np.sort(stat[kept])
    n_kept = cal.size
    at_least = n_kept - np.searchsorted(cal, stat, side="left")  # kept agents with T >= T_i, i included
    n_cal = n_kept - kept.astype(np.int64)  # calibration size without i
    above = at_least - kept.astype(np.int64)  # the others with T_j >= T_i
    if calibration == "marginal":
        return np.asarray((1.0 + above) / (n_cal + 1.0), dtype=np.float64)
    below = n_cal - above  # #{cal < T_i}
    out = np.ones(stat.size, dtype=np.float64)
    for size in np.unique(n_cal):
        rows = n_cal == size
        if size < 1:
            continue
        if calibration == "dkwm":
            margin = math.sqrt(math.log(1.0 / delta) / (2.0 * size))
            out[rows] = np.minimum(1.0, (1.0 + above[rows]) / (size + 1.0) + margin)
        else:
            band = simes_band(int(size), delta)
            index = np.maximum(below[rows], 1) - 1
            out[rows] = 1.0 - band[index]
    return out


def contrasts(n_windows: int, k: int) -> NDArray[np.float64]:
    """The self test's two unit-norm contrasts over an agent's windows, (2, n_windows).

    ``step``: mean of the later windows minus the mean of the first ``k`` (a change at
    the end of the reference period); ``trend``: the centred window index (a slow
    drift). Each statistic is ``|sum_w c_w x_w|^2``. For a step at ``k`` the observed
    order is the most extreme arrangement under the step contrast, and for any monotone
    change under the trend contrast (rearrangement inequality; the trend contrast is
    antisymmetric, so the reversed order ties). Neither contrast alone covers both: a
    drifting series re-ordered to put its most extreme windows into the smaller group
    looks more extreme than the truth under the step contrast.
    """
    rest = n_windows - k
    step = np.concatenate([np.full(k, -1.0 / k), np.full(rest, 1.0 / rest)])
    trend = np.arange(n_windows, dtype=np.float64) - (n_windows - 1) / 2.0
    out = np.vstack([step, trend])
    return np.asarray(out / np.linalg.norm(out, axis=1, keepdims=True), dtype=np.float64)


def _squared_norm(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(np.einsum("...d,...d->...", x, x), dtype=np.float64)


def permutation_pvalues(
    whitened: NDArray[np.float64], k: int, n_permutations: int, random_state: int
) -> NDArray[np.float64]:
    """Per-agent permutation p-values of a change after the first ``k`` windows or a drift.

    The Bonferroni combination ``min(1, 2 min(p_step, p_trend))`` of the two
    :func:`contrasts`' permutation p-values (:func:`contrast_pvalues`).
    """
    c = contrasts(whitened.shape[1], k)
    p_step = contrast_pvalues(whitened, c[0], n_permutations, random_state)
    p_trend = contrast_pvalues(whitened, c[1], n_permutations, random_state + 1)
    return np.asarray(np.minimum(1.0, 2.0 * np.minimum(p_step, p_trend)), dtype=np.float64)


def contrast_pvalues(
    whitened: NDArray[np.float64], c: NDArray[np.float64], n_permutations: int, random_state: int
) -> NDArray[np.float64]:
    """Per-agent permutation p-values of ``|sum_w c_w x_w|^2``.

    ``whitened`` is (n_agents, n_windows, d). Null hypothesis per agent: its windows are
    exchangeable (their order carries no information). The statistic is the squared
    norm of the contrast applied to the windows; its null distribution comes
    from random re-orderings of the windows, drawn in blocks shared by all agents.
    Each agent stops after ``_BC_EXCEEDANCES`` exceedances (p = h / L, Besag &
    Clifford 1991) or at ``n_permutations`` draws (p = (1 + count) / (B + 1)); both
    are valid p-values.
    """
    n, n_windows, _ = whitened.shape
    observed = _squared_norm(np.einsum("w,nwd->nd", c, whitened))
    tol = observed * (1.0 - 1e-12)
    rng = np.random.default_rng(random_state)
    p = np.empty(n, dtype=np.float64)
    count = np.zeros(n, dtype=np.int64)
    active = np.arange(n)
    drawn = 0
    block = 128
    while drawn < n_permutations and active.size:
        size = min(block, n_permutations - drawn)
        shuffled = c[np.argsort(rng.random((size, n_windows)), axis=1)]  # the contrast, re-ordered
        stopped: list[NDArray[np.intp]] = []
        for lo, hi, sums in _block_sums(whitened[active], shuffled):
            rows = active[lo:hi]
            exceed = _squared_norm(sums) >= tol[rows, None]
            cum = np.cumsum(exceed, axis=1) + count[rows, None]
            reached = cum >= _BC_EXCEEDANCES
            stop = reached.any(axis=1)
            p[rows[stop]] = _BC_EXCEEDANCES / (drawn + reached[stop].argmax(axis=1) + 1.0)
            count[rows] += exceed.sum(axis=1)
            stopped.append(rows[stop])
        drawn += size
        active = np.setdiff1d(active, np.concatenate(stopped), assume_unique=True)
        block = min(block * 4, 8192)
    p[active] = (1.0 + count[active]) / (n_permutations + 1.0)
    return p


def _block_sums(whitened: NDArray[np.float64], shuffled: NDArray[np.float64]) -> Any:
    """Yield (lo, hi, (hi - lo, n_perm, d) contrast sums) over memory-bounded blocks of agents."""
    n, _, d = whitened.shape
    per_agent = max(1, shuffled.shape[0] * d)
    step = max(1, 4_000_000 // per_agent)
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        yield lo, hi, np.einsum("bw,nwd->nbd", shuffled, whitened[lo:hi], optimize=True)


def _residualise(windows: NDArray[np.float64], groups: NDArray[np.int64], small: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Each agent's windows minus its own regression on its node's median path, per feature.

    ``x_iw = a_ij + b_ij m_g(w)_j + e_iwj``, fitted by least squares over the agent's
    windows (``m_g`` = the per-window median of its node, or of the fleet for small
    nodes). Honest agents respond to a node- or fleet-wide regime change with their own
    magnitude (``b != 1``), which centring on the median alone leaves behind as a step.
    ``b`` is clipped to ``[0, _MAX_RESPONSE]``: when the path barely moves, a compromise
    that starts at the same window as a small wobble of the median must not be
    explained away by a huge coefficient.
    """
    out = np.empty_like(windows)
    for _, rows, path in _node_paths(windows, groups, small):
        u = path - path.mean(axis=0)
        x = windows[rows] - windows[rows].mean(axis=1, keepdims=True)
        denom = (u * u).sum(axis=0)
        b = np.where(denom > 0, np.einsum("nwd,wd->nd", x, u) / np.where(denom > 0, denom, 1.0), 1.0)
        b = np.clip(b, 0.0, _MAX_RESPONSE)
        out[rows] = x - b[:, None, :] * u[None]
    return out


def regime_jumps(
    windows: NDArray[np.float64], groups: NDArray[np.int64], small: NDArray[np.bool_], noise_sd: NDArray[np.float64]
) -> NDArray[np.bool_]:
    """Per node, whether its median path jumps between two windows (a regime change).

    A node had a regime change when its per-window median (the fleet's for small nodes)
    moves between two consecutive windows by more than ``_REGIME_JUMP`` within-agent
    window noise SDs (``noise_sd``, from ``S_w``) in any feature. The median of a node
    moves that much only when most of its agents move together: a benign regime change,
    not the compromise of a minority. The self test is not run on such a node's agents:
    honest agents respond to the change with their own magnitude, so their windows are
    not exchangeable, whatever the residualisation leaves behind.
    """
    out = np.zeros(small.size, dtype=bool)
    for g, _, path in _node_paths(windows, groups, small):
        out[g] = bool((np.abs(np.diff(path, axis=0)) / noise_sd).max() > _REGIME_JUMP)
    return out


def _node_paths(
    windows: NDArray[np.float64], groups: NDArray[np.int64], small: NDArray[np.bool_]
) -> list[tuple[int, NDArray[np.bool_], NDArray[np.float64]]]:
    """``(node, its agents' mask, its per-window median path (W, d))`` for every node with agents.

    The path is the node's own median, or the fleet's for a node in ``small``; the fleet
    median is computed only when some node needs it. The one definition of a node's path
    that centring, residualising and regime detection share.
    """
    fleet = np.median(windows, axis=0) if bool(np.any(small)) else None
    out = []
    for g in range(small.size):
        rows = groups == g
        if not rows.any():
            continue
        path = fleet if small[g] and fleet is not None else np.median(windows[rows], axis=0)
        out.append((g, rows, path))
    return out


def _inverse_cholesky(covariance: NDArray[np.float64]) -> NDArray[np.float64]:
    from scipy.linalg import solve_triangular

    chol = np.linalg.cholesky(covariance)
    return np.asarray(solve_triangular(chol, np.eye(chol.shape[0]), lower=True), dtype=np.float64)


def _centre(windows: NDArray[np.float64], groups: NDArray[np.int64], small: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Windows minus the per-window median of the agent's node (fleet median for small nodes)."""
    out = np.empty_like(windows)
    for _, rows, path in _node_paths(windows, groups, small):
        out[rows] = windows[rows] - path
    return out


class FleetDetector:
    """Self-referenced detector of compromised agents in one monitored fleet (module docstring).

    Parameters
    ----------
    alpha : FDR level of ``detect`` (BH) or per-agent level (fdr="none").
    fdr : "bh" or "none".
    method : robust estimator of the level and window baselines ("ogk" or "mcd";
        "ledoit_wolf" and "empirical" are accepted but not robust).
    reference_windows : K, each agent's first K windows form its reference period (>= 2).
    cusum_k, target_arl : CUSUM allowance (normal-score units) and in-control ARL.
    trim_quantile : in (0, 1); the calibration trims agents beyond the normal
        ``1 - (1 - trim_quantile) / (3 n)`` quantile of the robust z of any component.
    calibration : "marginal", "conditional" (Simes band, Bates et al. 2023) or "dkwm".
    delta : miscoverage of the calibration-conditional band.
    min_node_agents : nodes with fewer agents are centred on the fleet median instead.
    self_test : also run the per-agent permutation test and combine it with the
        population p-value (Bonferroni); see the module docstring for its assumption.
    population_weight : ``w`` of the weighted Bonferroni combination of the population
        and self p-values (the population p-value is divided by ``w``).
    benign_ratio : the self test uses only directions in which the fleet's changes vary
        less than ``benign_ratio`` times what window noise explains.
    n_permutations : maximum draws of the per-agent permutation test; None = sized so a
        single agent can reach the BH threshold (``ceil(2 m / (alpha (1 - w)))``, clipped).
    random_state : seed of the robust fits and the permutations.
    feature_names : names used in explanations (default x0, x1, ...).
    """

    def __init__(
        self,
        alpha: float = DEFAULTS.alpha,
        fdr: str = DEFAULTS.fdr,
        method: str = DEFAULTS.method,
        reference_windows: int = DEFAULTS.reference_windows,
        cusum_k: float = DEFAULTS.cusum_k,
        target_arl: float = DEFAULTS.target_arl,
        trim_quantile: float = DEFAULTS.trim_quantile,
        calibration: str = DEFAULTS.calibration,
        delta: float = DEFAULTS.delta,
        min_node_agents: int = DEFAULTS.min_node_agents,
        n_permutations: int | None = DEFAULTS.n_permutations,
        self_test: bool = DEFAULTS.self_test,
        benign_ratio: float = DEFAULTS.benign_ratio,
        population_weight: float = DEFAULTS.population_weight,
        random_state: int = DEFAULTS.random_state,
        feature_names: tuple[str, ...] | list[str] | None = None,
    ) -> None:
        self.alpha = _check_alpha(alpha)
        if fdr not in FDR_METHODS:
            raise BaselineError(f"fdr={fdr!r} is unknown: choose one of {', '.join(FDR_METHODS)}")
        if method not in METHODS:
            raise BaselineError(f"method={method!r} is unknown: choose one of {', '.join(METHODS)}")
        if calibration not in CALIBRATIONS:
            raise BaselineError(f"calibration={calibration!r} is unknown: choose one of {', '.join(CALIBRATIONS)}")
        if isinstance(cusum_k, bool) or not isinstance(cusum_k, int | float) or not cusum_k >= 0:
            raise BaselineError(f"cusum_k={cusum_k!r}: expected a non-negative number")
        if isinstance(target_arl, bool) or not isinstance(target_arl, int | float) or not target_arl > 1:
            raise BaselineError(f"target_arl={target_arl!r}: expected a number above 1")
        self.fdr = fdr
        self.method = method
        self.reference_windows = _positive_int("reference_windows", reference_windows, 2)
        self.cusum_k = float(cusum_k)
        self.target_arl = float(target_arl)
        self.trim_quantile = _open_unit("trim_quantile", trim_quantile)
        self.calibration = calibration
        self.delta = _open_unit("delta", delta)
        self.min_node_agents = _positive_int("min_node_agents", min_node_agents, 1)
        self.n_permutations = (
            None if n_permutations is None else _positive_int("n_permutations", n_permutations, 19)
        )
        if not isinstance(self_test, bool | np.bool_):
            raise BaselineError(f"self_test={self_test!r}: expected True or False")
        self.self_test = bool(self_test)
        if isinstance(benign_ratio, bool) or not isinstance(benign_ratio, int | float) or not benign_ratio > 0:
            raise BaselineError(f"benign_ratio={benign_ratio!r}: expected a positive number")
        self.benign_ratio = float(benign_ratio)
        self.population_weight = _open_unit("population_weight", population_weight)
        self.random_state = _positive_int("random_state", random_state, 0)
        self.feature_names = tuple(feature_names) if feature_names is not None else None

    # -- parameters ------------------------------------------------------------------------

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments (plain values)."""
        names = [f.name for f in FleetDefaults.__dataclass_fields__.values()]
        params = {name: getattr(self, name) for name in names}
        params["feature_names"] = self.feature_names
        return params

    # -- fitting ---------------------------------------------------------------------------

    def fit(self, windows: ArrayLike, nodes: ArrayLike | None = None) -> FleetDetector:
        """Fit on the fleet's reference windows (the first ``reference_windows`` of each agent).

        ``windows`` is (n_agents, n_windows >= reference_windows, d); later windows are
        ignored. ``nodes`` gives each agent's node label (None: one fleet).
        """
        w = _check_windows(windows)
        n, n_windows, d = w.shape
        k = self.reference_windows
        if n_windows < k:
            raise BaselineError(f"windows has {n_windows} windows per agent: reference_windows={k} are needed")
        if n < MIN_AGENTS:
            raise BaselineError(f"windows has {n} agents: a fleet-referenced detector needs at least {MIN_AGENTS}")
        if self.feature_names is not None and len(self.feature_names) != d:
            raise BaselineError(f"feature_names has {len(self.feature_names)} names but windows has {d} features")
        labels = _node_labels(nodes, n)
        names, groups = np.unique(labels, return_inverse=True)
        sizes = np.bincount(groups, minlength=names.size)
        self.node_names_ = names.astype(str)
        self.groups_ = groups.astype(np.int64)
        self.small_nodes_ = sizes < self.min_node_agents
        ref = w[:, :k]
        self.reference_mean_ = ref.mean(axis=1)
        centred = _centre(ref, self.groups_, self.small_nodes_)
        level = centred.mean(axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a singular fallback is recorded in method_
            level_base = Baseline(self.method, random_state=self.random_state).fit(level)
            resid = centred - level[:, None, :]
            window_base = Baseline(self.method, random_state=self.random_state).fit(resid.reshape(-1, d))
        self.level_location_ = level_base.location_
        self.level_covariance_ = level_base.covariance_
        # in-sample residuals shrink by (K - 1) / K: undo it so S_w is one window's covariance
        self.window_location_ = np.zeros(d)
        self.window_covariance_ = window_base.covariance_ * (k / (k - 1.0))
        self.methods_ = np.array([level_base.method_, window_base.method_], dtype="<U16")
        self.level_ = level
        self._build()
        # leave-one-window-out residuals of the reference period: the CUSUM's in-control stream
        loo = centred - (centred.sum(axis=1, keepdims=True) - centred) / (k - 1.0)
        self.cusum_reference_ = np.sort(self._window_distances(loo).ravel())
        self._cusum = CusumDetector(self.cusum_reference_, k=self.cusum_k, target_arl=self.target_arl)
        self.n_features_in_ = d
        self.n_agents_ = n
        return self

    def _build(self) -> None:
        """Derived, non-fitted helpers (whitening factors) from the fitted arrays."""
        self._level_chol = _inverse_cholesky(self.level_covariance_)
        self._window_chol = _inverse_cholesky(self.window_covariance_)

    def _whiten(self, x: NDArray[np.float64], inverse_chol: NDArray[np.float64]) -> NDArray[np.float64]:
        """``x L^-T`` for the covariance ``L L'``: rows with identity covariance."""
        return np.asarray(x @ inverse_chol.T, dtype=np.float64)

    def _window_distances(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        z = self._whiten(x, self._window_chol)
        return np.asarray(np.einsum("...d,...d->...", z, z), dtype=np.float64)

    def _check_fitted(self) -> None:
        if not hasattr(self, "level_covariance_"):
            raise BaselineError("this FleetDetector is not fitted: call fit(windows, nodes) first")

    @property
    def feature_names_(self) -> tuple[str, ...]:
        self._check_fitted()
        if self.feature_names is not None:
            return self.feature_names
        return tuple(f"x{j}" for j in range(self.n_features_in_))

    # -- detection -------------------------------------------------------------------------

    def _check_detect_input(self, windows: ArrayLike, nodes: ArrayLike | None) -> NDArray[np.float64]:
        w = _check_windows(windows)
        n, n_windows, d = w.shape
        if d != self.n_features_in_:
            raise BaselineError(f"windows has {d} features: the detector was fitted on {self.n_features_in_}")
        if n != self.n_agents_:
            raise BaselineError(
                f"windows has {n} agents: the detector was fitted on this fleet's {self.n_agents_} agents"
            )
        k = self.reference_windows
        if n_windows <= k:
            raise BaselineError(
                f"windows has {n_windows} windows per agent: at least one after the "
                f"reference_windows={k} is needed"
            )
        moved = ~np.all(np.isclose(w[:, :k].mean(axis=1), self.reference_mean_, rtol=1e-9, atol=1e-12), axis=1)
        if moved.any():
            raise BaselineError(
                f"the reference windows of agents {np.flatnonzero(moved)[:5].tolist()} differ from the ones "
                "fitted: detect judges the fleet it was fitted on, agents in the same order"
            )
        if nodes is not None:
            labels = _node_labels(nodes, n)
            known = np.isin(labels, self.node_names_)
            if not known.all():
                bad = sorted(set(labels[~known].tolist()))[:5]
                raise BaselineError(
                    f"nodes has labels {bad} unknown at fit (known: {', '.join(self.node_names_[:10])})"
                )
            index = np.searchsorted(self.node_names_, labels)
            changed = index != self.groups_
            if changed.any():
                raise BaselineError(
                    f"nodes differ from fit for agents {np.flatnonzero(changed)[:5].tolist()}: an agent's "
                    "node must stay the same between fit and detect"
                )
        return w

    def _permutations(self, m: int) -> int:
        if self.n_permutations is not None:
            return self.n_permutations
        lo, hi = _PERMUTATION_BOUNDS
        return int(min(hi, max(lo, math.ceil(2 * m / (self.alpha * (1.0 - self.population_weight))))))

    def cusum(self, windows: ArrayLike, nodes: ArrayLike | None = None) -> CusumResult:
        """The CUSUM paths of the peer-centred windows after the reference period (for plots)."""
        self._check_fitted()
        w = self._check_detect_input(windows, nodes)
        k = self.reference_windows
        per_window = _centre(w[:, k:], self.groups_, self.small_nodes_) - self.level_[:, None, :]
        return self._cusum.run(self._window_distances(per_window))

    def detect(self, windows: ArrayLike, nodes: ArrayLike | None = None) -> DetectionResult:
        """Judge every agent of the fitted fleet: one p-value each, BH, explanations.

        ``components`` of the result: ``p_population``, ``p_self``, ``p_level``,
        ``p_change``, ``p_cusum`` (leave-one-out population p-values of each test alone),
        ``z_level``, ``z_change``, ``z_cusum`` (robust z of each score), ``test``
        ("population" or "self": which test gave the final p-value), ``self_tested``
        (the self test ran: its node's path showed no regime change), ``trimmed``
        (excluded from calibration), ``alarm_window`` (first CUSUM alarm, absolute window
        index, -1 if none) and ``first_alarm_window`` (for flagged agents: the CUSUM
        alarm, or the last window when the CUSUM did not cross; -1 when not flagged).
        Sets ``smallest_pvalue_``: the smallest p-value any agent could have got in this run
        (the population test's floor over the kept agents, and the self test's where it
        ran), the resolution that :func:`tcpkit.detect.pvalues.fewest_rejections` turns
        into the fewest agents BH can flag.
        """
        self._check_fitted()
        w = self._check_detect_input(windows, nodes)
        n, n_windows, d = w.shape
        k = self.reference_windows
        centred_after = _centre(w[:, k:], self.groups_, self.small_nodes_)
        per_window = centred_after - self.level_[:, None, :]
        change = per_window.mean(axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a singular fallback still gives a valid (if weaker) score
            change_base = Baseline(self.method, random_state=self.random_state).fit(change)
        scores = {
            "level": self._level_distances(self.level_),
            "change": np.asarray(change_base.mahalanobis(change), dtype=np.float64),
        }
        cusum = self._cusum.run(self._window_distances(per_window))
        scores["cusum"] = cusum.max_statistic
        z = {}
        for name, s in scores.items():
            t = _log_score(s)
            med, scale = _robust_z(t)
            z[name] = (t - med) / scale
        stat = np.max(np.column_stack([z[c] for c in POPULATION_COMPONENTS]), axis=1)
        cut = trim_cutoff(self.trim_quantile, n)
        kept = stat <= cut
        p_pop = _conformal(stat, kept, self.calibration, self.delta)
        p_each = {name: _conformal(z[name], z[name] <= cut, "marginal", self.delta) for name in POPULATION_COMPONENTS}
        own = _residualise(w, self.groups_, self.small_nodes_)
        directions = self._quiet_directions(own)
        self.self_directions_ = int(directions.shape[1])
        noise_sd = np.sqrt(np.diag(self.window_covariance_))
        steady = ~regime_jumps(w, self.groups_, self.small_nodes_, noise_sd)[self.groups_]
        p_self = np.ones(n)
        # the population p-value of an agent beyond every kept one: the floor of that test
        beyond = np.append(np.sort(stat[kept]), np.inf)
        pop_floor = float(_conformal(beyond, np.arange(beyond.size) < beyond.size - 1, self.calibration, self.delta)[-1])
        if self.self_test and directions.shape[1] > 0 and steady.any():
            n_perm = self._permutations(n)
            p_self[steady] = permutation_pvalues(own[steady] @ directions, k, n_perm, self.random_state)
            w_pop = self.population_weight
            combined = np.minimum(1.0, np.minimum(p_pop / w_pop, p_self / (1.0 - w_pop)))
            test = np.where(steady & (p_self / (1.0 - w_pop) < p_pop / w_pop), "self", "population")
            # two contrasts, each at least 1 / (B + 1), Bonferroni-combined (permutation_pvalues)
            self_floor = min(1.0, 2.0 / (n_perm + 1.0)) / (1.0 - w_pop)
            self.smallest_pvalue_ = min(1.0, pop_floor / w_pop, self_floor)
        else:
            steady[:] = False
            combined = p_pop
            test = np.full(n, "population")
            self.smallest_pvalue_ = pop_floor
        flags, q = decide(combined, self.alpha, self.fdr)
        rows = np.flatnonzero(flags)
        explanations = self._explain(rows, z, change, change_base)
        alarm = np.where(cusum.alarm_window >= 0, cusum.alarm_window + k, -1).astype(np.int64)
        first = np.where(flags, np.where(alarm >= 0, alarm, n_windows - 1), -1).astype(np.int64)
        components: dict[str, NDArray[Any]] = {
            "p_population": p_pop,
            "p_self": p_self,
            **{f"p_{name}": p_each[name] for name in POPULATION_COMPONENTS},
            **{f"z_{name}": z[name] for name in POPULATION_COMPONENTS},
            "test": test.astype("<U10"),
            "self_tested": steady,
            "trimmed": ~kept,
            "alarm_window": alarm,
            "first_alarm_window": first,
        }
        self.n_trimmed_ = int((~kept).sum())
        return DetectionResult(
            flags, combined, q, stat, explanations, self.alpha, self.fdr, f"fleet-{self.calibration}", components
        )

    def _level_distances(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        z = self._whiten(x - self.level_location_, self._level_chol)
        return np.asarray(np.einsum("...d,...d->...", z, z), dtype=np.float64)

    def _quiet_directions(self, own: NDArray[np.float64]) -> NDArray[np.float64]:
        """Directions where the fleet's contrasts vary no more than window noise explains, (d, r).

        ``own`` is (n, n_windows, d), the peer-centred windows. Every agent's two
        self-test contrast vectors (:func:`contrasts`, unit norm, so their noise
        covariance is one window's ``S_w`` when windows are independent) are stacked;
        the generalised eigenvectors ``v`` of (their robust covariance, ``S_w``) with
        eigenvalue below ``benign_ratio`` are kept, scaled so that ``v' S_w v = 1``.
        Benign per-agent drift and uneven responses to regime changes make the fleet's
        contrasts vary more than noise in their directions; the self test runs only in
        the others, where an honest agent's windows are exchangeable (its assumption).
        """
        from scipy.linalg import eigh

        c = contrasts(own.shape[1], self.reference_windows)
        rows = np.einsum("cw,nwd->ncd", c, own).reshape(-1, own.shape[2])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spread = Baseline(self.method, random_state=self.random_state).fit(rows).covariance_
        ratio, vectors = eigh(spread, self.window_covariance_)
        return np.asarray(vectors[:, ratio < self.benign_ratio], dtype=np.float64)

    def _explain(
        self, rows: NDArray[np.intp], z: Mapping[str, NDArray[np.float64]], change: NDArray[np.float64],
        change_base: Baseline,
    ) -> tuple[Explanation, ...]:
        names = self.feature_names_
        by_level = z["level"][rows] >= np.maximum(z["change"][rows], z["cusum"][rows])
        found: dict[int, Explanation] = {}
        for e in explain(self.level_, self.level_location_, self.level_covariance_, rows[by_level], names):
            found[e.index] = e
        for e in explain(change, change_base.location_, change_base.covariance_, rows[~by_level], names):
            found[e.index] = e
        return tuple(found[int(r)] for r in rows)

    # -- serialisation ---------------------------------------------------------------------

    def to_arrays(self) -> dict[str, NDArray[Any]]:
        """All parameters and fitted state as numeric / fixed-width string arrays."""
        self._check_fitted()
        params = self.get_params()
        out: dict[str, NDArray[Any]] = {"version": np.array(_ARRAY_VERSION, dtype=np.int64)}
        for name, value in params.items():
            if name == "feature_names":
                out["param_feature_names"] = np.array(list(value) if value is not None else [], dtype=str)
                out["param_has_feature_names"] = np.array(value is not None)
            elif name == "n_permutations":
                out["param_n_permutations"] = np.array(-1 if value is None else value, dtype=np.int64)
            elif isinstance(value, str):
                out[f"param_{name}"] = np.array(value, dtype=str)
            else:
                out[f"param_{name}"] = np.array(value)
        for name in (
            "node_names_", "groups_", "small_nodes_", "reference_mean_", "level_",
            "level_location_", "level_covariance_", "window_covariance_", "cusum_reference_",
            "methods_",
        ):
            out[name.rstrip("_")] = np.asarray(getattr(self, name))
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, ArrayLike]) -> FleetDetector:
        """Rebuild a fitted detector from :meth:`to_arrays` output (e.g. ``numpy.load``)."""
        try:
            a = {key: np.asarray(arrays[key]) for key in arrays}
            if int(a["version"]) != _ARRAY_VERSION:
                raise BaselineError(f"arrays have version {int(a['version'])}: expected {_ARRAY_VERSION}")
            kwargs: dict[str, Any] = {}
            for name, default in asdict(DEFAULTS).items():
                value = a[f"param_{name}"]
                if name == "n_permutations":
                    kwargs[name] = None if int(value) < 0 else int(value)
                elif isinstance(default, str):
                    kwargs[name] = str(value)
                elif isinstance(default, bool):
                    kwargs[name] = bool(value)
                elif isinstance(default, int):
                    kwargs[name] = int(value)
                else:
                    kwargs[name] = float(value)
            if bool(a["param_has_feature_names"]):
                kwargs["feature_names"] = tuple(str(x) for x in a["param_feature_names"])
            det = cls(**kwargs)
            det.node_names_ = a["node_names"].astype(str)
            det.groups_ = a["groups"].astype(np.int64)
            det.small_nodes_ = a["small_nodes"].astype(bool)
            det.reference_mean_ = a["reference_mean"].astype(np.float64)
            det.level_ = a["level"].astype(np.float64)
            det.level_location_ = a["level_location"].astype(np.float64)
            det.level_covariance_ = a["level_covariance"].astype(np.float64)
            det.window_location_ = np.zeros(det.level_location_.size)
            det.window_covariance_ = a["window_covariance"].astype(np.float64)
            det.cusum_reference_ = a["cusum_reference"].astype(np.float64)
            det.methods_ = a["methods"].astype("<U16")
        except KeyError as exc:
            raise BaselineError(f"arrays lack the key {exc.args[0]!r}: not a FleetDetector state") from None
        det._build()
        det._cusum = CusumDetector(det.cusum_reference_, k=det.cusum_k, target_arl=det.target_arl)
        det.n_features_in_ = int(det.level_location_.size)
        det.n_agents_ = int(det.groups_.size)
        return det


def naive_detect(windows: ArrayLike, reference_windows: int, alpha: float = 0.05) -> DetectionResult:
    """The naive baseline: classical covariance, chi-square p-values, BH, no peers, no trimming.

    Change (later mean minus own reference mean) and level (reference mean) of every agent
    are scored against the fleet's sample mean and covariance; the two chi-square
    p-values are combined by Bonferroni (``2 min``). The Gaussian assumption is exact
    only for Gaussian features; nothing protects the fit from compromised agents.
    """
    from tcpkit.detect.pvalues import chi2_sf

    w = _check_windows(windows)
    k = _positive_int("reference_windows", reference_windows, 1)
    if w.shape[1] <= k:
        raise BaselineError(f"windows has {w.shape[1]} windows: more than reference_windows={k} are needed")
    ref = w[:, :k].mean(axis=1)
    change = w[:, k:].mean(axis=1) - ref
    d = w.shape[2]
    p = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for x in (change, ref):
            base = Baseline("empirical").fit(x)
            p.append(chi2_sf(base.mahalanobis(x), d))
    combined = np.minimum(1.0, 2.0 * np.minimum(p[0], p[1]))
    flags, q = decide(combined, _check_alpha(alpha), "bh")
    return DetectionResult(flags, combined, q, -np.log10(combined + 1e-300), (), float(alpha), "bh", "chi2")
