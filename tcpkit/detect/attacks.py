"""Adversaries against the statistics engine, and evasion-versus-budget curves.

Five white-box attacks, each with a *budget*, are run over many seeds against two
defenders, and the share of attacks that reach their goal unseen is reported with
Wilson intervals (:func:`evasion_curve`). The same seeded world is used for both
defenders, so the comparison is paired.

Defenders
---------
``"naive"``
    Classical (empirical) mean and covariance of a baseline window; per window a
    chi-square test on the squared Mahalanobis distance; for sequences an *adaptive*
    per-agent baseline whose centre follows an EWMA of the agent's own windows.
``"tcpkit"``
    Robust (MCD) baseline from :mod:`tcpkit.detect.baseline`; the reference is frozen
    after fitting; per window the same chi-square test; for sequences also a
    one-sided CUSUM (:class:`tcpkit.detect.sequential.CusumDetector`) of the
    normal score of the distance against vetted clean windows; for queries a jittered
    threshold. The query-rate limit changes time, not queries, and is measured by
    :func:`probing_cost` in windows rather than folded into the evasion rate.

Attacks and their budgets (``REFERENCE_BUDGETS`` holds the budget at which the
headline metric ``evasion_<attack>_<detector>`` is read)
------------------------------------------------------------------------------------
``mimicry`` (budget: persistent offset in sigma units, reference 2.0)
    The attacker knows the defender's centre, covariance and per-window threshold.
    It holds its agent ``budget`` sigmas towards a target; whenever a window would
    score above the threshold it shrinks that window towards the defender's centre
    until it is just under it (Wagner & Soto 2002). Goal: the shrinking costs less
    than 10 % of the offset on average.
``poisoning`` (budget: contaminated fraction of the baseline window, reference 0.2)
    That fraction of the baseline window is replaced by a ramp of windows from the
    normal centre to a target ``target_distance`` sigmas away (each ramp window with
    normal noise). The defender fits on the poisoned window; the attacker then shows
    windows at the target. Goal: a target window is not flagged.
``drift`` (budget: total drift in sigma units over the horizon, reference 6.0)
    The boiling frog: the agent's mean moves linearly from 0 to ``budget`` sigmas
    over ``n_windows`` windows. Goal: no alarm over the whole horizon.
``probing`` (budget: number of oracle queries, reference 16)
    The attacker queries the per-window test along a line from the normal centre and
    bisects the decision boundary (Lowd & Meek 2005), with ``probe_repeats`` votes
    per point when the threshold is jittered (a point counts as safe only if no vote
    flagged it). It then sits at the largest radius it believes safe for
    ``probe_hold_windows`` windows. Goal: that radius is within ``probe_eps`` sigma
    of the true boundary and none of the holding windows is flagged.
``coordination`` (budget: number k of colluding agents, reference 4)
    k agents share a total displacement of ``target_distance`` sigmas, each holding
    ``target_distance / k`` in the same direction for the whole horizon. Goal: none
    of the k agents raises an alarm.

A budget of 0 (where it exists) is the clean case: its "evasion" is one minus the
defender's false-alarm rate over the horizon, and is reported as such.

Trials within a seed share the seed's baseline fit, so the Wilson interval (which
treats trials as independent) is somewhat too narrow; more seeds, not more
attackers per seed, is the honest way to narrow it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Literal, Protocol

import numpy as np
from numpy.typing import NDArray
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from tcpkit.detect.kernel import WhiteningKernel

Attack = Literal["mimicry", "poisoning", "drift", "probing", "coordination"]
DetectorName = Literal["naive", "tcpkit"]

ATTACKS: tuple[str, ...] = ("mimicry", "poisoning", "drift", "probing", "coordination")
DETECTORS: tuple[str, ...] = ("naive", "tcpkit")

DEFAULT_BUDGETS: dict[str, tuple[float, ...]] = {
    "mimicry": (0.0, 0.5, 1.0, 1.5, 2.0, 3.0),
    "poisoning": (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5),
    "drift": (0.0, 1.0, 2.0, 4.0, 6.0),
    "probing": (4.0, 8.0, 12.0, 16.0, 24.0),
    "coordination": (1.0, 2.0, 4.0, 8.0, 16.0),
}
"""Budgets swept by default, per attack (units in the module docstring)."""

REFERENCE_BUDGETS: dict[str, float] = {
    "mimicry": 2.0,
    "poisoning": 0.2,
    "drift": 6.0,
    "probing": 16.0,
    "coordination": 4.0,
}
"""The budget at which each attack's headline evasion rate is read."""


class AttackError(ValueError):
    """An attack, detector, budget or configuration value that cannot be used."""


def _is_real(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------
# configuration and results


@dataclass(frozen=True)
class AttackConfig:
    """The world and the defenders' settings shared by every attack.

    Attributes
    ----------
    n_features : dimension of the per-window behaviour vector.
    n_baseline : windows in the baseline (reference) fit.
    n_windows : horizon of the sequential attacks, in windows.
    n_attackers : independent attackers (trials) per seed.
    alpha : false-alarm budget of the per-window test over the whole horizon; the
        per-window level is ``alpha / n_windows`` (Bonferroni).
    target_distance : sigmas from the normal centre to the poisoning target, and the
        total displacement shared by a coordinating coalition.
    ewma_lambda : adaptation rate of the naive defender's per-agent baseline.
    cusum_k, cusum_h : reference value and decision interval of tcpkit's CUSUM, in
        units of the standardised distance ``(d2 - d) / sqrt(2 d)``.
    threshold_jitter : tcpkit's relative jitter of the per-window threshold; each
        query or window sees ``threshold * (1 + j * U)``, ``U ~ Uniform(-1, 1)``.
    max_queries_per_window : tcpkit's query-rate limit (queries answered per window).
    probe_eps : sigmas within which a prober must locate the boundary.
    probe_radius : upper end of the prober's initial bracket, in sigmas.
    probe_repeats : votes per probed point when the threshold is jittered.
    probe_hold_windows : windows the prober then spends at its chosen radius.
    robust_method : the :class:`~tcpkit.detect.baseline.Baseline` method of tcpkit.
    """

    n_features: int = 4
    n_baseline: int = 300
    n_windows: int = 100
    n_attackers: int = 25
    alpha: float = 0.01
    target_distance: float = 6.0
    ewma_lambda: float = 0.1
    cusum_k: float = 0.5
    cusum_h: float = 8.0
    threshold_jitter: float = 0.1
    max_queries_per_window: int = 4
    probe_eps: float = 0.1
    probe_radius: float = 20.0
    probe_repeats: int = 3
    probe_hold_windows: int = 10
    robust_method: str = "mcd"

    def __post_init__(self) -> None:
        ints = {
            "n_features": (self.n_features, 1),
            "n_windows": (self.n_windows, 1),
            "n_attackers": (self.n_attackers, 1),
            "max_queries_per_window": (self.max_queries_per_window, 1),
            "probe_repeats": (self.probe_repeats, 1),
            "probe_hold_windows": (self.probe_hold_windows, 1),
        }
        for name, (value, low) in ints.items():
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise AttackError(f"{name} must be an integer >= {low}, got {value!r}")
        if isinstance(self.n_baseline, bool) or not isinstance(self.n_baseline, int | np.integer):
            raise AttackError(f"n_baseline must be an integer, got {self.n_baseline!r}")
        if self.n_baseline < 10 * self.n_features:
            raise AttackError(
                f"n_baseline={self.n_baseline} is too small for n_features={self.n_features}: "
                f"need at least {10 * self.n_features} windows"
            )
        positive = {
            "target_distance": self.target_distance,
            "cusum_h": self.cusum_h,
            "probe_eps": self.probe_eps,
            "probe_radius": self.probe_radius,
        }
        for name, number in positive.items():
            if not (_is_real(number) and math.isfinite(number) and number > 0):
                raise AttackError(f"{name} must be a positive finite number, got {number!r}")
        unit = {
            "alpha": (self.alpha, False),
            "ewma_lambda": (self.ewma_lambda, False),
            "threshold_jitter": (self.threshold_jitter, True),
        }
        for name, (rate, zero_ok) in unit.items():
            ok = _is_real(rate) and math.isfinite(rate)
            ok = ok and (0 <= rate < 1 if zero_ok else 0 < rate < 1)
            if not ok:
                interval = "[0, 1)" if zero_ok else "(0, 1)"
                raise AttackError(f"{name} must lie in {interval}, got {rate!r}")
        if not (_is_real(self.cusum_k) and math.isfinite(self.cusum_k)
                and self.cusum_k >= 0):
            raise AttackError(f"cusum_k must be a finite number >= 0, got {self.cusum_k!r}")
        if self.probe_eps >= self.probe_radius:
            raise AttackError("probe_eps must be smaller than probe_radius")

    @property
    def window_alpha(self) -> float:
        """Per-window level of the chi-square test (``alpha / n_windows``)."""
        return self.alpha / self.n_windows

    @property
    def window_threshold(self) -> float:
        """Per-window threshold on the squared distance (chi-square quantile)."""
        return float(stats.chi2.isf(self.window_alpha, self.n_features))


@dataclass(frozen=True)
class EvasionCurve:
    """Evasion rate against budget for one attack and one defender, with intervals.

    Attributes
    ----------
    attack, detector : what was attacked, and how it was defended.
    budgets : the budgets swept (units: see the module docstring).
    evaded, trials : per budget, attacks that reached their goal unseen, and attacks run.
    rates : ``evaded / trials``.
    ci_low, ci_high : Wilson interval of each rate at level ``1 - ci_alpha``.
    seeds : the seeds used (each a separate world).
    reference_budget : the budget of the headline number (see ``REFERENCE_BUDGETS``).
    """

    attack: str
    detector: str
    budgets: tuple[float, ...]
    evaded: tuple[int, ...]
    trials: tuple[int, ...]
    rates: tuple[float, ...]
    ci_low: tuple[float, ...]
    ci_high: tuple[float, ...]
    seeds: tuple[int, ...]
    reference_budget: float
    ci_alpha: float = 0.05

    def at(self, budget: float) -> tuple[float, float, float]:
        """Return ``(rate, ci_low, ci_high)`` at ``budget`` (which must have been swept)."""
        for i, b in enumerate(self.budgets):
            if math.isclose(b, budget):
                return self.rates[i], self.ci_low[i], self.ci_high[i]
        raise AttackError(f"budget {budget!r} was not swept; swept: {list(self.budgets)}")

    @property
    def reference_rate(self) -> float:
        """Evasion rate at the reference budget (NaN when it was not swept)."""
        try:
            return self.at(self.reference_budget)[0]
        except AttackError:
            return float("nan")

    def summary(self) -> str:
        """A plain-text table: budget, evaded/trials, rate and interval."""
        lines = [
            f"{self.attack} vs {self.detector}: {len(self.seeds)} seeds, "
            f"Wilson {100 * (1 - self.ci_alpha):.0f}% intervals",
            f"{'budget':>8} {'evaded':>9} {'rate':>6}  interval",
        ]
        for b, e, n, r, lo, hi in zip(
            self.budgets, self.evaded, self.trials, self.rates, self.ci_low, self.ci_high,
            strict=True,
        ):
            lines.append(f"{b:>8g} {e:>4d}/{n:<4d} {r:6.3f}  [{lo:.3f}, {hi:.3f}]")
        return "\n".join(lines)


@dataclass(frozen=True)
class ProbingResult:
    """What a boundary-probing attacker needed and achieved against one set of defences.

    Attributes
    ----------
    threshold_jitter, max_queries_per_window : the defences in force (``None`` = no limit).
    queries : per trial, oracle queries spent until the bracket was narrower than ``eps``.
    windows : per trial, windows needed to spend those queries under the rate limit.
    boundary_error : per trial, true boundary radius minus the radius the attacker chose
        (sigmas; negative means it chose a radius beyond the boundary).
    located : per trial, whether the chosen radius is within ``eps`` below the boundary.
    held_unflagged : per trial, whether the chosen radius survived the holding windows.
    eps : the precision the attacker searched to, in sigmas.
    lower_bound_queries : ``ceil(log2(probe_radius / eps))``, bisection's cost with an
        exact oracle.
    """

    threshold_jitter: float
    max_queries_per_window: int | None
    queries: NDArray[np.int64] = field(repr=False)
    windows: NDArray[np.int64] = field(repr=False)
    boundary_error: NDArray[np.float64] = field(repr=False)
    located: NDArray[np.bool_] = field(repr=False)
    held_unflagged: NDArray[np.bool_] = field(repr=False)
    eps: float
    lower_bound_queries: int

    @property
    def mean_queries(self) -> float:
        return float(np.mean(self.queries))

    @property
    def mean_windows(self) -> float:
        return float(np.mean(self.windows))

    @property
    def success_rate(self) -> float:
        """Share of trials that located the boundary *and* then held there unflagged."""
        return float(np.mean(self.located & self.held_unflagged))


def _check_matrix(X: NDArray[np.float64], name: str) -> NDArray[np.float64]:
    """``X`` as a finite 2-D float64 array with at least two rows, or one clear error."""
    data = np.asarray(X, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] < 2 or data.shape[1] < 1:
        raise AttackError(f"{name} has shape {data.shape}: expected (n_windows >= 2, n_features)")
    if not np.all(np.isfinite(data)):
        raise AttackError(f"{name} contains NaN or infinite values")
    return data


# ---------------------------------------------------------------------------------------
# detectors: a small protocol so that every attack runs against any defender


class StaticDetector(Protocol):
    """A per-window test: fitted centre and covariance, squared distances, a threshold."""

    location_: NDArray[np.float64]
    covariance_: NDArray[np.float64]
    threshold_: float

    def fit(self, X: NDArray[np.float64]) -> StaticDetector: ...

    def score(self, X: NDArray[np.float64]) -> NDArray[np.float64]: ...


class SequentialDetector(Protocol):
    """A per-agent monitor over consecutive windows, vectorised over agents.

    ``start`` resets the state for ``n_agents``; ``centres`` and ``scores`` describe the
    per-window test in the current state (what a white-box attacker looks at);
    ``observe`` consumes one window per agent and updates the state; ``alarms`` says
    which agents raised an alarm at any window observed since ``start``.
    """

    threshold: float

    def start(self, n_agents: int) -> None: ...

    def centres(self) -> NDArray[np.float64]: ...

    def scores(self, X: NDArray[np.float64]) -> NDArray[np.float64]: ...

    def observe(self, X: NDArray[np.float64]) -> None: ...

    def alarms(self) -> NDArray[np.bool_]: ...


@dataclass
class ClassicalDetector:
    """The naive per-window test: empirical mean and covariance, chi-square threshold.

    Parameters
    ----------
    alpha : per-window false-alarm level; the threshold is the chi-square quantile.
    """

    alpha: float = 0.01

    def fit(self, X: NDArray[np.float64]) -> ClassicalDetector:
        data = _check_matrix(X, "X")
        self.location_ = data.mean(axis=0)
        self.covariance_ = np.cov(data, rowvar=False).reshape(data.shape[1], data.shape[1])
        self._set_threshold(data.shape[1])
        return self

    def _set_threshold(self, d: int) -> None:
        self.threshold_ = float(stats.chi2.isf(self.alpha, d))
        self.kernel_ = WhiteningKernel.from_covariance(self.location_, self.covariance_)

    def score(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(self.kernel_.squared_distances(X), dtype=np.float64)


@dataclass
class RobustDetector(ClassicalDetector):
    """tcpkit's per-window test: the robust :class:`~tcpkit.detect.baseline.Baseline`.

    Parameters
    ----------
    alpha : per-window false-alarm level (chi-square threshold, as for the naive test,
        so that the two differ only in the estimator).
    method : the Baseline method (``"mcd"`` by default).
    random_state : seed of the robust fit.
    """

    method: str = "mcd"
    random_state: int = 0

    def fit(self, X: NDArray[np.float64]) -> RobustDetector:
        data = _check_matrix(X, "X")
        self.location_, self.covariance_ = _robust_estimate(data, self.method, self.random_state)
        self._set_threshold(data.shape[1])
        return self


class EwmaMonitor:
    """The naive sequential defender: a per-agent baseline that keeps adapting.

    Each agent's centre starts at the fitted location and follows an exponentially
    weighted moving average of the agent's own windows (rate ``lam``); a window is
    flagged when its squared distance from the current centre, with the fitted
    covariance inflated by ``2 / (2 - lam)`` (the variance of an EWMA residual), exceeds
    ``threshold``. It adapts to everything, which is what a slow drift exploits.
    """

    def __init__(self, location: NDArray[np.float64], covariance: NDArray[np.float64],
                 *, lam: float, threshold: float) -> None:
        self.location = np.asarray(location, dtype=np.float64)
        self.lam = float(lam)
        self.threshold = float(threshold)
        scaled = np.asarray(covariance, dtype=np.float64) * (2.0 / (2.0 - self.lam))
        self._kernel = WhiteningKernel.from_covariance(np.zeros_like(self.location), scaled)
        self._centres = self.location[None, :]

    def start(self, n_agents: int) -> None:
        self._centres = np.repeat(self.location[None, :], n_agents, axis=0)
        self._alarmed = np.zeros(n_agents, dtype=bool)

    def centres(self) -> NDArray[np.float64]:
        return self._centres

    def scores(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(self._kernel.squared_distances(X - self._centres), dtype=np.float64)

    def observe(self, X: NDArray[np.float64]) -> None:
        self._alarmed |= self.scores(X) > self.threshold
        self._centres = (1.0 - self.lam) * self._centres + self.lam * X

    def alarms(self) -> NDArray[np.bool_]:
        return self._alarmed.copy()


class FrozenCusumMonitor:
    """tcpkit's sequential defender: a frozen reference, a per-window test and CUSUM.

    The reference (location, covariance) never moves after fitting. A window is
    flagged when its squared distance exceeds ``threshold``; in addition each agent's
    sequence of squared distances goes through
    :class:`tcpkit.detect.sequential.CusumDetector` (one-sided CUSUM of normal scores
    taken against ``reference_scores``, the squared distances of vetted clean windows),
    so that many windows that are each only a little high add up to an alarm.
    """

    def __init__(self, location: NDArray[np.float64], covariance: NDArray[np.float64],
                 *, reference_scores: NDArray[np.float64], k: float, h: float,
                 threshold: float) -> None:
        from tcpkit.detect.sequential import CusumDetector

        self.location = np.asarray(location, dtype=np.float64)
        self.threshold = float(threshold)
        self._kernel = WhiteningKernel.from_covariance(self.location, covariance)
        self._cusum = CusumDetector(reference_scores, k=k, h=h)
        self._scores: list[NDArray[np.float64]] = []

    def start(self, n_agents: int) -> None:
        self._n = n_agents
        self._scores = []

    def centres(self) -> NDArray[np.float64]:
        return self.location[None, :]

    def scores(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(self._kernel.squared_distances(X), dtype=np.float64)

    def observe(self, X: NDArray[np.float64]) -> None:
        self._scores.append(self.scores(X))

    def alarms(self) -> NDArray[np.bool_]:
        if not self._scores:
            return np.zeros(self._n, dtype=bool)
        stream = np.stack(self._scores, axis=1)
        window = np.any(stream > self.threshold, axis=1)
        return np.asarray(window | self._cusum.run(stream).alarms)


def _robust_estimate(
    X: NDArray[np.float64], method: str, random_state: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Location and covariance from tcpkit's Baseline (the production estimator)."""
    from tcpkit.detect.baseline import Baseline

    base = Baseline(method=method, random_state=random_state).fit(X)  # type: ignore[arg-type]
    return (np.asarray(base.location_, dtype=np.float64),
            np.asarray(base.covariance_, dtype=np.float64))


# ---------------------------------------------------------------------------------------
# the seeded world


@dataclass(frozen=True)
class _World:
    """One seed's normal behaviour: centre, covariance factor, attack direction, baseline."""

    mean: NDArray[np.float64]
    chol: NDArray[np.float64]
    direction: NDArray[np.float64]  # unit vector in whitened coordinates
    baseline: NDArray[np.float64]  # windows the reference is fitted on
    calibration: NDArray[np.float64]  # further clean windows: the CUSUM's reference scores

    def point(self, offsets: NDArray[np.float64], noise: NDArray[np.float64]) -> NDArray[np.float64]:
        """Feature vectors at ``offsets`` sigmas along the direction, plus whitened noise."""
        z = np.asarray(offsets)[..., None] * self.direction + noise
        return self.mean + z @ self.chol.T

    def project(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """Offset of feature vectors along the attack direction, in sigmas."""
        z = np.linalg.solve(self.chol, (np.asarray(X) - self.mean).reshape(-1, self.mean.size).T)
        return (self.direction @ z).reshape(np.asarray(X).shape[:-1])


def _make_world(seed: int, cfg: AttackConfig) -> tuple[_World, np.random.Generator]:
    rng = np.random.default_rng([int(seed), 0x7C9])
    d = cfg.n_features
    a = rng.standard_normal((d, d))
    cov = a @ a.T / d + 0.5 * np.eye(d)
    chol = np.linalg.cholesky(cov)
    mean = rng.normal(0.0, 2.0, d)
    direction = rng.standard_normal(d)
    direction /= np.linalg.norm(direction)
    baseline = mean + rng.standard_normal((cfg.n_baseline, d)) @ chol.T
    calibration = mean + rng.standard_normal((cfg.n_baseline, d)) @ chol.T
    world = _World(
        np.asarray(mean, dtype=np.float64), np.asarray(chol, dtype=np.float64), direction,
        np.asarray(baseline, dtype=np.float64), np.asarray(calibration, dtype=np.float64),
    )
    return world, rng


@lru_cache(maxsize=256)
def _clean_fit(seed: int, detector: str, cfg: AttackConfig) -> tuple[NDArray[np.float64], ...]:
    """Fit the defender's reference on the seed's clean baseline (cached: MCD is slow)."""
    world, _ = _make_world(seed, cfg)
    det = _static(detector, cfg, alpha=cfg.window_alpha, seed=seed).fit(world.baseline)
    loc, cov = det.location_.copy(), det.covariance_.copy()
    loc.flags.writeable = False
    cov.flags.writeable = False
    return loc, cov


def _static(detector: str, cfg: AttackConfig, *, alpha: float, seed: int) -> ClassicalDetector:
    if detector == "naive":
        return ClassicalDetector(alpha=alpha)
    return RobustDetector(alpha=alpha, method=cfg.robust_method, random_state=int(seed))


def _sequential(detector: str, seed: int, cfg: AttackConfig) -> SequentialDetector:
    loc, cov = _clean_fit(seed, detector, cfg)
    if detector == "naive":
        return EwmaMonitor(loc, cov, lam=cfg.ewma_lambda, threshold=cfg.window_threshold)
    world, _ = _make_world(seed, cfg)
    kernel = WhiteningKernel.from_covariance(loc, cov)
    reference = np.asarray(kernel.squared_distances(world.calibration), dtype=np.float64)
    return FrozenCusumMonitor(loc, cov, reference_scores=reference, k=cfg.cusum_k,
                              h=cfg.cusum_h, threshold=cfg.window_threshold)


# ---------------------------------------------------------------------------------------
# the attacks: each returns, for one seed, the number of successful attackers per budget


def _run_sequence(monitor: SequentialDetector, windows: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Feed (n_agents, T, d) windows to a monitor; True where an agent ever alarmed."""
    n, horizon, _ = windows.shape
    monitor.start(n)
    for t in range(horizon):
        monitor.observe(windows[:, t, :])
    return monitor.alarms()


def mimic_windows(
    monitor: SequentialDetector, proposed: NDArray[np.float64], *, margin: float = 1e-6
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Play ``proposed`` (n_agents, T, d) windows, shrinking each towards the monitor's
    current centre so that its per-window score stays below the threshold.

    Returns the windows actually played and whether each agent ever raised an alarm.
    By construction no played window scores above ``(1 - margin) * threshold``.
    """
    if not 0 < margin < 1:
        raise AttackError(f"margin must lie in (0, 1), got {margin!r}")
    n, horizon, _ = proposed.shape
    monitor.start(n)
    played = np.empty_like(proposed)
    limit = (1.0 - margin) * monitor.threshold
    for t in range(horizon):
        x = proposed[:, t, :]
        s = monitor.scores(x)
        over = s > limit
        if np.any(over):
            c = np.broadcast_to(monitor.centres(), x.shape)
            factor = np.sqrt(limit / s[over])[:, None]
            x = x.copy()
            x[over] = c[over] + (x[over] - c[over]) * factor
        played[:, t, :] = x
        monitor.observe(x)
    return played, monitor.alarms()


def _mimicry(seed: int, detector: str, budgets: Sequence[float], cfg: AttackConfig) -> list[int]:
    world, rng = _make_world(seed, cfg)
    n, horizon, d = cfg.n_attackers, cfg.n_windows, cfg.n_features
    noise = rng.standard_normal((n, horizon, d))
    out = []
    for b in budgets:
        proposed = world.point(np.full((n, horizon), b), noise)
        played, alarmed = mimic_windows(_sequential(detector, seed, cfg), proposed)
        shrink = (world.project(proposed) - world.project(played)).mean(axis=1)
        goal = shrink <= 0.1 * b + 1e-12 if b > 0 else np.ones(n, dtype=bool)
        out.append(int(np.sum(goal & ~alarmed)))
    return out


def poison_baseline(
    baseline: NDArray[np.float64], target: NDArray[np.float64], fraction: float,
    rng: np.random.Generator,
) -> NDArray[np.float64]:
    """Replace ``fraction`` of ``baseline`` by a ramp from its mean towards ``target``.

    The ramp windows keep the baseline's own spread (each is a ramp point plus the
    deviation of the window it replaces), so they look like normal windows in motion.
    """
    if not 0 <= fraction < 1:
        raise AttackError(f"poisoning fraction must lie in [0, 1), got {fraction!r}")
    X = np.array(baseline, dtype=np.float64, copy=True)
    m = int(round(fraction * X.shape[0]))
    if m == 0:
        return X
    centre = X.mean(axis=0)
    rows = rng.choice(X.shape[0], size=m, replace=False)
    steps = np.linspace(0.0, 1.0, m)[:, None]
    X[rows] = X[rows] + steps * (np.asarray(target, dtype=np.float64) - centre)
    return X


def _poisoning(seed: int, detector: str, budgets: Sequence[float], cfg: AttackConfig) -> list[int]:
    world, rng = _make_world(seed, cfg)
    n, d = cfg.n_attackers, cfg.n_features
    target = world.point(np.array(cfg.target_distance), np.zeros(d))
    attack_windows = world.point(np.full(n, cfg.target_distance), rng.standard_normal((n, d)))
    out = []
    for b in budgets:
        poisoned = poison_baseline(world.baseline, target, b, np.random.default_rng([seed, 1]))
        det = _static(detector, cfg, alpha=cfg.alpha, seed=seed).fit(poisoned)
        out.append(int(np.sum(det.score(attack_windows) <= det.threshold_)))
    return out


def _drift(seed: int, detector: str, budgets: Sequence[float], cfg: AttackConfig) -> list[int]:
    world, rng = _make_world(seed, cfg)
    n, horizon, d = cfg.n_attackers, cfg.n_windows, cfg.n_features
    noise = rng.standard_normal((n, horizon, d))
    ramp = np.linspace(0.0, 1.0, horizon)
    out = []
    for b in budgets:
        windows = world.point(np.broadcast_to(b * ramp, (n, horizon)), noise)
        out.append(int(np.sum(~_run_sequence(_sequential(detector, seed, cfg), windows))))
    return out


def _coordination(seed: int, detector: str, budgets: Sequence[float],
                  cfg: AttackConfig) -> list[int]:
    world, rng = _make_world(seed, cfg)
    n, horizon, d = cfg.n_attackers, cfg.n_windows, cfg.n_features
    kmax = int(max(budgets))
    noise = rng.standard_normal((n, kmax, horizon, d))
    out = []
    for b in budgets:
        k = int(b)
        offsets = np.full((n * k, horizon), cfg.target_distance / k)
        windows = world.point(offsets, noise[:, :k].reshape(n * k, horizon, d))
        alarmed = _run_sequence(_sequential(detector, seed, cfg), windows).reshape(n, k)
        out.append(int(np.sum(~alarmed.any(axis=1))))
    return out


# ---------------------------------------------------------------------------------------
# probing


def _boundary_radius(world: _World, loc: NDArray[np.float64], cov: NDArray[np.float64],
                     threshold: float) -> float:
    """Radius r along the attack line where the detector's squared distance equals threshold."""
    kern = WhiteningKernel.from_covariance(loc, cov)
    p0 = kern.whitening @ (world.mean - loc)
    v = kern.whitening @ (world.chol @ world.direction)
    a, b, c = v @ v, 2 * p0 @ v, p0 @ p0 - threshold
    disc = b * b - 4 * a * c
    if c >= 0 or disc < 0:
        raise AttackError("the normal centre is already flagged: no boundary to probe")
    return float((-b + math.sqrt(disc)) / (2 * a))


def _bisect(
    world: _World, det: ClassicalDetector, rng: np.random.Generator, *, n: int,
    budget: int | None, jitter: float, repeats: int, cfg: AttackConfig,
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Vectorised noisy bisection for n attackers; returns chosen radii and queries spent."""
    lo = np.zeros(n)
    hi = np.full(n, cfg.probe_radius)
    queries = np.zeros(n, dtype=np.int64)
    zero_noise = np.zeros(world.mean.size)
    while True:
        active = (hi - lo) > cfg.probe_eps
        if budget is not None:
            active &= queries + repeats <= budget
        if not np.any(active):
            break
        mid = 0.5 * (lo + hi)
        d2 = det.score(world.point(mid, np.broadcast_to(zero_noise, (n, zero_noise.size))))
        u = rng.uniform(-1.0, 1.0, (repeats, n))
        flagged = np.any(d2 > det.threshold_ * (1.0 + jitter * u), axis=0)
        hi = np.where(active & flagged, mid, hi)
        lo = np.where(active & ~flagged, mid, lo)
        queries += np.where(active, repeats, 0)
    return lo, queries


def _hold(world: _World, det: ClassicalDetector, radius: NDArray[np.float64], jitter: float,
          windows: int, rng: np.random.Generator) -> NDArray[np.bool_]:
    """Whether an attacker sitting at ``radius`` stays unflagged for ``windows`` windows."""
    n = radius.size
    d2 = det.score(world.point(radius, np.zeros((n, world.mean.size))))
    u = rng.uniform(-1.0, 1.0, (windows, n))
    return np.asarray(~np.any(d2 > det.threshold_ * (1.0 + jitter * u), axis=0))


def _probe_trials(
    seed: int, detector: str, cfg: AttackConfig, *, budget: int | None, jitter: float,
    repeats: int,
) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.bool_], NDArray[np.bool_]]:
    world, rng = _make_world(seed, cfg)
    loc, cov = _clean_fit(seed, detector, cfg)
    det = _static(detector, cfg, alpha=cfg.alpha, seed=seed)
    det.location_, det.covariance_ = np.array(loc), np.array(cov)
    det._set_threshold(cfg.n_features)
    r_true = _boundary_radius(world, det.location_, det.covariance_, det.threshold_)
    radius, queries = _bisect(world, det, rng, n=cfg.n_attackers, budget=budget,
                              jitter=jitter, repeats=repeats, cfg=cfg)
    error = r_true - radius
    located = (error >= 0) & (error <= cfg.probe_eps)
    held = _hold(world, det, radius, jitter, cfg.probe_hold_windows, rng)
    return error, queries, located, held


def _probing(seed: int, detector: str, budgets: Sequence[float], cfg: AttackConfig) -> list[int]:
    jitter = 0.0 if detector == "naive" else cfg.threshold_jitter
    repeats = 1 if jitter == 0 else cfg.probe_repeats
    out = []
    for b in budgets:
        _, _, located, held = _probe_trials(seed, detector, cfg, budget=int(b), jitter=jitter,
                                            repeats=repeats)
        out.append(int(np.sum(located & held)))
    return out


def probing_cost(
    *, threshold_jitter: float = 0.0, max_queries_per_window: int | None = None,
    seeds: Iterable[int] = range(10), detector: str = "tcpkit",
    config: AttackConfig | None = None,
) -> ProbingResult:
    """Queries and windows a bisecting attacker needs to locate the boundary within eps.

    With no jitter the oracle is exact and bisection needs ``ceil(log2(R / eps))``
    queries. With jitter the attacker takes ``probe_repeats`` votes per point (safe only
    if none flags), which multiplies the queries and leaves it short of the boundary.
    A query-rate limit does not change the number of queries but the time: the windows
    needed are ``ceil(queries / max_queries_per_window)``.
    """
    cfg = config if config is not None else AttackConfig()
    det_name = _check_detector(detector)
    if not (isinstance(threshold_jitter, int | float) and 0 <= threshold_jitter < 1):
        raise AttackError(f"threshold_jitter must lie in [0, 1), got {threshold_jitter!r}")
    if max_queries_per_window is not None and (
        isinstance(max_queries_per_window, bool) or not isinstance(max_queries_per_window, int)
        or max_queries_per_window < 1
    ):
        raise AttackError(
            f"max_queries_per_window must be a positive integer or None, got {max_queries_per_window!r}"
        )
    seed_list = _check_seeds(seeds)
    repeats = 1 if threshold_jitter == 0 else cfg.probe_repeats
    parts = [_probe_trials(s, det_name, cfg, budget=None, jitter=float(threshold_jitter),
                           repeats=repeats) for s in seed_list]
    error = np.concatenate([p[0] for p in parts])
    queries = np.concatenate([p[1] for p in parts])
    per_window = max_queries_per_window if max_queries_per_window is not None else None
    windows = (-(-queries // per_window) if per_window is not None
               else np.ones_like(queries)).astype(np.int64)
    return ProbingResult(
        threshold_jitter=float(threshold_jitter),
        max_queries_per_window=max_queries_per_window,
        queries=queries,
        windows=windows,
        boundary_error=error,
        located=np.concatenate([p[2] for p in parts]),
        held_unflagged=np.concatenate([p[3] for p in parts]),
        eps=cfg.probe_eps,
        lower_bound_queries=math.ceil(math.log2(cfg.probe_radius / cfg.probe_eps)),
    )


# ---------------------------------------------------------------------------------------
# the public sweep

_RUNNERS = {
    "mimicry": _mimicry,
    "poisoning": _poisoning,
    "drift": _drift,
    "probing": _probing,
    "coordination": _coordination,
}


def _check_detector(detector: str) -> str:
    if detector not in DETECTORS:
        raise AttackError(f"unknown detector {detector!r}: choose one of {list(DETECTORS)}")
    return detector


def _check_seeds(seeds: Iterable[int]) -> tuple[int, ...]:
    try:
        seed_list = tuple(seeds)
    except TypeError:
        raise AttackError(f"seeds must be an iterable of integers, got {seeds!r}") from None
    if not seed_list:
        raise AttackError("seeds is empty: give at least one seed")
    for s in seed_list:
        if isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 0:
            raise AttackError(f"seeds must be non-negative integers, got {s!r}")
    return tuple(int(s) for s in seed_list)


def _check_budgets(attack: str, budgets: Iterable[float] | None) -> tuple[float, ...]:
    values = DEFAULT_BUDGETS[attack] if budgets is None else tuple(budgets)
    if not values:
        raise AttackError(f"budgets for {attack} is empty")
    out = []
    for b in values:
        if isinstance(b, bool) or not isinstance(b, int | float | np.integer | np.floating):
            raise AttackError(f"budget {b!r} for {attack} is not a number")
        v = float(b)
        if not math.isfinite(v) or v < 0:
            raise AttackError(f"budget {b!r} for {attack} must be finite and >= 0")
        if attack == "poisoning" and v >= 1:
            raise AttackError(f"poisoning budget {b!r} is a fraction and must be < 1")
        if attack in ("probing", "coordination") and (v != int(v) or v < 1):
            raise AttackError(f"{attack} budget {b!r} must be a whole number >= 1")
        out.append(v)
    return tuple(out)


def evasion_curve(
    attack: str,
    detector: str,
    budgets: Iterable[float] | None = None,
    seeds: Iterable[int] = range(10),
    *,
    config: AttackConfig | None = None,
    ci_alpha: float = 0.05,
) -> EvasionCurve:
    """Evasion rate against budget for one attack and one defender, over seeds.

    Parameters
    ----------
    attack : one of ``ATTACKS``.
    detector : ``"naive"`` or ``"tcpkit"`` (see the module docstring).
    budgets : budgets to sweep; ``DEFAULT_BUDGETS[attack]`` when omitted.
    seeds : one seeded world each; ``config.n_attackers`` trials per seed and budget.
    config : world and defender settings (``AttackConfig()`` when omitted).
    ci_alpha : 1 - level of the Wilson intervals.

    Returns
    -------
    EvasionCurve with evaded/trials, rates and Wilson intervals per budget.
    """
    if attack not in _RUNNERS:
        raise AttackError(f"unknown attack {attack!r}: choose one of {list(ATTACKS)}")
    det = _check_detector(detector)
    cfg = config if config is not None else AttackConfig()
    if not isinstance(cfg, AttackConfig):
        raise AttackError(f"config must be an AttackConfig, got {type(cfg).__name__}")
    if not (isinstance(ci_alpha, float) and 0 < ci_alpha < 1):
        raise AttackError(f"ci_alpha must lie in (0, 1), got {ci_alpha!r}")
    budget_list = _check_budgets(attack, budgets)
    seed_list = _check_seeds(seeds)
    runner = _RUNNERS[attack]
    evaded = np.zeros(len(budget_list), dtype=np.int64)
    for s in seed_list:
        evaded += np.asarray(runner(s, det, budget_list, cfg), dtype=np.int64)
    trials = np.full(len(budget_list), cfg.n_attackers * len(seed_list), dtype=np.int64)
    low, high = proportion_confint(evaded, trials, alpha=ci_alpha, method="wilson")
    rates = evaded / trials
    # the Wilson bounds at 0 and 1 come back a rounding error inside the rate itself
    low = np.minimum(np.atleast_1d(low), rates)
    high = np.maximum(np.atleast_1d(high), rates)
    return EvasionCurve(
        attack=attack,
        detector=det,
        budgets=budget_list,
        evaded=tuple(int(e) for e in evaded),
        trials=tuple(int(t) for t in trials),
        rates=tuple(float(r) for r in rates),
        ci_low=tuple(float(x) for x in low),
        ci_high=tuple(float(x) for x in high),
        seeds=seed_list,
        reference_budget=REFERENCE_BUDGETS[attack],
        ci_alpha=ci_alpha,
    )


def with_defences(config: AttackConfig, defences: dict[str, float | int]) -> AttackConfig:
    """Return ``config`` with the production defences (``cusum_k``, ``cusum_h``,
    ``threshold_jitter``, ``max_queries_per_window``) applied; unknown keys are refused."""
    allowed = {"cusum_k", "cusum_h", "threshold_jitter", "max_queries_per_window"}
    unknown = set(defences) - allowed
    if unknown:
        raise AttackError(f"unknown defence(s) {sorted(unknown)}: allowed {sorted(allowed)}")
    return replace(config, **defences)  # type: ignore[arg-type]
