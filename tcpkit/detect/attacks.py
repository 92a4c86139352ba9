"""Adversaries against any detector, in the simulator's feature space, and evasion curves.

The attacks run against any object with the small :class:`Detector` protocol
(``fit(reference_windows) -> self``, ``detect(windows) -> DetectionResult`` whose
``flags`` are its decisions), so the security evaluation attacks the detector that
ships: :func:`tcpkit.detect.config.build_detector` of a
:class:`~tcpkit.detect.config.DetectorConfig`. The comparison is :class:`NaiveDetector`
(classical covariance of each agent's change, chi-square p-values, the same FDR rule,
no CUSUM, no level test), attacked by the same attackers on the same fleets in the
same run.

The world
---------
Per seed, :func:`make_world` simulates one clean network with
:func:`tcpkit.detect.simulate.simulate_network` (windows of shape
``(n_agents, n_windows, 12)``) and splits its agents at random into three fleets: the
*reference* the detectors are fitted on (agents audited inside the network, so they
share its nodes and its regime history: the shipped detector's adaptive test needs a
reference exchangeable with the clean agents it judges), the *monitored* fleet they
judge, and a *replay* fleet (fresh agents) where a prober plays what its queries
taught it. A share ``attacked_fraction`` of the monitored
agents is attacker-controlled; the rest are the clean agents whose false alarms are
counted in the same runs.

Budgets are in units of the clean agents' own spread
---------------------------------------------------------
``change_sd`` is, per feature, the robust standard deviation (1.4826 x MAD) of the
clean reference agents' *change* (mean of the detection windows minus mean of the
agent's own reference windows); ``level_sd`` the same for the *level* (mean over
all windows). An attack of budget ``b`` on the change moves feature ``j`` by
``b * change_sd[j]`` in the direction ``sign[j]``: every feature stays within ``b``
clean SDs. The attacker is white-box: among the ``2**(d - 1)`` sign patterns with the
goal feature (default ``bias_high_risk``, under-rating dangerous commands) negative,
it takes the one with the smallest Mahalanobis norm under the clean agents' own
(classical) correlation of changes, i.e. the pattern that looks least unusual
(:func:`whitebox_signs`). The shift is added to the feature windows directly: the
attacker is assumed to control its behaviour finely enough to realise it.

Attacks and their budgets
-------------------------
``mimicry`` (budget: clean change SDs per feature)
    A constant shift of ``b`` SDs per feature from the first detection window on,
    spread over all features so that each stays under the radar.
``poisoning`` (budget: clean *level* SDs per feature)
    The shift is present from window 0, so the agent's change is zero and only its
    level shows it; the same attacker controls ``poison_fraction`` of the reference
    fleet, whose agents carry the same shift, so the detector is fitted and
    calibrated on a poisoned reference (refitted per budget).
``drift`` (budget: clean change SDs per feature at the last window)
    The boiling frog: the shift grows linearly per detection window, from
    ``b / T`` at the first to ``b`` at the last of ``T`` windows (mean about ``b / 2``).
``probing`` (budget: decisions the attacker may query)
    Each attacker queries the detector's decision (its ``flags`` on the monitored
    fleet with the attacker at a candidate shift) and bisects ``[0, probe_max]`` clean
    SDs per feature for the largest undetected shift; it then plays the largest
    shift it saw pass, as a fresh agent of the replay fleet. It *evades* when it is
    not flagged there and that shift is at least ``probe_goal`` SDs per feature (a
    smaller move does not reach its goal).
``coordination`` (budget: colluders per group)
    The attackers form groups of ``k`` that move together (same direction, plus a
    per-window shock of ``coordination_shock`` SDs shared by the group) and share a
    collective shift of ``coordination_total`` SDs per feature: each member moves
    ``coordination_total / k``. More colluders, smaller individual moves.

Evasion and the half-evasion budget
-----------------------------------
The evasion rate at a budget is the share of attacker-controlled agents that the
detector does not flag (over seeds), with a Wilson interval over agents and a
cluster-bootstrap interval over seeds. Agents of one seed share one fit, one
calibration set and one BH cut, so the Wilson interval is too narrow; the seed
interval (the world as the unit) is the honest one once there are several seeds. The gated
budget of each attack is judged on every seed; with ``curve_seeds`` the other budgets of
the sweep (the shape of the curve, reported and not gated) are judged on the first
``curve_seeds`` seeds only, so their intervals are wider and say so (``per_seed`` holds NaN
for a seed a budget was not judged on). :attr:`EvasionCurve.half_budget` is the
budget at which evasion crosses 0.5: for shift attacks (evasion falls with the
budget) the largest shift the attacker can make and still evade half the time
(linear interpolation; ``inf`` when evasion stays above 0.5 over the sweep); for
probing and coordination (evasion grows with the budget) the smallest swept budget
at which evasion exceeds 0.5 (``inf`` when none does).

Note on the conformal-BH resolution: the shipped detector's p-values are at least
``1 / (n_cal + 1)``, so BH at level ``q`` over ``m`` monitored agents flags nothing
unless about ``m / (q (n_cal + 1))`` agents reach that floor. ``n_reference``,
``n_monitored`` and ``attacked_fraction`` therefore matter and are part of the
evaluation's configuration.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from tcpkit.detect.baseline import Baseline, DetectionResult, decide

if TYPE_CHECKING:
    from tcpkit.detect.separability import SeparabilityTable

ATTACKS: tuple[str, ...] = ("mimicry", "poisoning", "drift", "probing", "coordination")

UNITS: dict[str, str] = {
    "mimicry": "clean change SDs per feature",
    "poisoning": "clean level SDs per feature",
    "drift": "clean change SDs per feature at the last window",
    "probing": "queried decisions",
    "coordination": "colluders per group",
}
"""The unit of each attack's budget."""

INCREASING: frozenset[str] = frozenset({"probing", "coordination"})
"""Attacks whose budget helps the attacker (evasion grows with it)."""

DEFAULT_BUDGETS: dict[str, tuple[float, ...]] = {
    "mimicry": (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0),
    "poisoning": (0.0, 1.0, 2.0, 3.0, 5.0),
    "drift": (0.0, 1.0, 2.0, 4.0, 6.0, 8.0),
    "probing": (1.0, 2.0, 4.0, 8.0, 16.0),
    "coordination": (1.0, 2.0, 4.0, 8.0, 16.0),
}
"""Budgets swept by default, per attack (units in :data:`UNITS`)."""

REFERENCE_BUDGETS: dict[str, float] = {
    "mimicry": 3.0,
    "poisoning": 3.0,
    "drift": 6.0,
    "probing": 16.0,
    "coordination": 4.0,
}
"""The budget at which each attack's gated evasion rate is read (always swept)."""

_MAX_SIGN_FEATURES = 16  # 2**15 sign patterns: exhaustive search stays instant


class AttackError(ValueError):
    """An attack, detector, budget or configuration value that cannot be used."""


class Detector(Protocol):
    """What an attack needs of a detector: fit on reference windows, decide on windows."""

    def fit(self, reference: NDArray[np.float64]) -> Detector: ...

    def detect(self, windows: NDArray[np.float64]) -> DetectionResult: ...


DetectorFactory = Callable[[], Detector]
"""Builds a fresh, unfitted detector (poisoning fits one per budget)."""


def _real(name: str, value: Any, low: float, high: float | None = None, *,
          open_low: bool = False, open_high: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise AttackError(f"{name}={value!r}: expected a number")
    v = float(value)
    bad = not math.isfinite(v) or (v <= low if open_low else v < low)
    if high is not None:
        bad = bad or (v >= high if open_high else v > high)
    if bad:
        left = "(" if open_low else "["
        right = "inf)" if high is None else (f"{high})" if open_high else f"{high}]")
        raise AttackError(f"{name}={value!r}: expected a number in {left}{low}, {right}")
    return v


def _int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise AttackError(f"{name}={value!r}: expected an integer >= {low}")
    return int(value)


@dataclass(frozen=True)
class AttackConfig:
    """The world of the security evaluation and the attackers' settings.

    Attributes
    ----------
    n_reference : clean agents of the reference fleet the detectors are fitted on.
    n_monitored : agents of the monitored fleet (attacked plus clean).
    attacked_fraction : share of the monitored agents under the attacker's control.
    n_windows, reference_windows : windows per agent, and the first of them forming
        each agent's own reference period (must equal the detector's).
    poison_fraction : share of the reference fleet the poisoning attacker controls.
    probe_max : upper end of the prober's search, clean SDs per feature.
    probe_goal : smallest shift (clean SDs per feature) that reaches a prober's goal.
    coordination_total : collective shift of a coordinating group, clean SDs per feature.
    coordination_shock : per-window shock shared by a group, clean SDs per feature.
    goal_feature : the feature every attacker moves downwards (its purpose).
    world : further keyword arguments of ``simulate_network`` (e.g. a difficulty).
    """

    n_reference: int = 4000
    n_monitored: int = 300
    attacked_fraction: float = 0.1
    n_windows: int = 20
    reference_windows: int = 5
    poison_fraction: float = 0.1
    probe_max: float = 12.0
    probe_goal: float = 3.0
    coordination_total: float = 12.0
    coordination_shock: float = 0.5
    goal_feature: str = "bias_high_risk"
    world: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _int("n_reference", self.n_reference, 40)
        _int("n_monitored", self.n_monitored, 2)
        _int("n_windows", self.n_windows, 2)
        _int("reference_windows", self.reference_windows, 1)
        if self.reference_windows >= self.n_windows:
            raise AttackError(
                f"reference_windows={self.reference_windows} must be smaller than "
                f"n_windows={self.n_windows}"
            )
        _real("attacked_fraction", self.attacked_fraction, 0.0, 1.0, open_low=True, open_high=True)
        _real("poison_fraction", self.poison_fraction, 0.0, 0.5, open_high=True)
        _real("probe_max", self.probe_max, 0.0, open_low=True)
        _real("probe_goal", self.probe_goal, 0.0, self.probe_max, open_low=True)
        _real("coordination_total", self.coordination_total, 0.0, open_low=True)
        _real("coordination_shock", self.coordination_shock, 0.0)
        if not isinstance(self.goal_feature, str) or not self.goal_feature:
            raise AttackError(f"goal_feature={self.goal_feature!r}: expected a feature name")
        if not isinstance(self.world, Mapping):
            raise AttackError(f"world must be a table of simulate_network settings, not {self.world!r}")
        fixed = {"n_agents", "n_windows", "baseline_windows", "compromised_fraction", "seed"}
        clash = sorted(fixed & set(self.world))
        if clash:
            raise AttackError(f"world may not set {clash}: the evaluation sets them itself")
        if round(self.attacked_fraction * self.n_monitored) < 1:
            raise AttackError(
                f"attacked_fraction={self.attacked_fraction} of n_monitored={self.n_monitored} "
                "gives no attacker"
            )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> AttackConfig:
        """A configuration from a plain mapping (notebook parameter, TOML table)."""
        if mapping is None:
            return cls()
        if not isinstance(mapping, Mapping):
            raise AttackError(f"an attack configuration must be a table, not {type(mapping).__name__}")
        allowed = list(cls.__dataclass_fields__)
        unknown = sorted(set(mapping) - set(allowed))
        if unknown:
            raise AttackError(f"unknown attack setting {unknown[0]!r}: allowed are {', '.join(allowed)}")
        return cls(**dict(mapping))

    @property
    def n_attacked(self) -> int:
        """Attacker-controlled agents of the monitored fleet."""
        return int(round(self.attacked_fraction * self.n_monitored))


# ---------------------------------------------------------------------------------------
# the naive defender


def _change_and_level(windows: NDArray[np.float64], reference_windows: int) -> tuple[
    NDArray[np.float64], NDArray[np.float64]
]:
    """Per agent: mean of the detection windows minus own reference mean, and mean level."""
    ref = windows[:, :reference_windows].mean(axis=1)
    return windows[:, reference_windows:].mean(axis=1) - ref, windows.mean(axis=1)


def _check_windows(windows: ArrayLike, name: str) -> NDArray[np.float64]:
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim != 3 or min(w.shape) == 0:
        raise AttackError(f"{name} has shape {w.shape}: expected (n_agents, n_windows, n_features)")
    if not np.all(np.isfinite(w)):
        raise AttackError(f"{name} contains NaN or infinite values")
    return w


class NaiveDetector:
    """The comparison: classical covariance of each agent's change, chi-square p-values.

    Fitted on the reference fleet's changes (empirical mean and covariance), it scores
    each monitored agent's change by its squared Mahalanobis distance, turns it into a
    chi-square p-value with ``d`` degrees of freedom and decides with the same rule as
    the shipped detector (``decide(p, alpha, fdr)``). No robust estimate, no level
    test, no CUSUM, no conformal calibration.

    Parameters
    ----------
    alpha, fdr : the decision rule (take them from the shipped configuration).
    reference_windows : each agent's own reference period, in windows.
    """

    def __init__(self, alpha: float = 0.01, fdr: str = "bh", reference_windows: int = 5) -> None:
        self.alpha = _real("alpha", alpha, 0.0, 1.0, open_low=True, open_high=True)
        self.fdr = fdr
        self.reference_windows = _int("reference_windows", reference_windows, 1)

    def fit(self, reference: NDArray[np.float64]) -> NaiveDetector:
        w = _check_windows(reference, "reference")
        change, _ = _change_and_level(w, self.reference_windows)
        self.baseline_ = Baseline(method="empirical").fit(change)
        self.n_features_in_ = int(w.shape[2])
        return self

    def detect(self, windows: NDArray[np.float64]) -> DetectionResult:
        if not hasattr(self, "baseline_"):
            raise AttackError("this NaiveDetector is not fitted: call fit(reference) first")
        w = _check_windows(windows, "windows")
        change, _ = _change_and_level(w, self.reference_windows)
        d2 = np.asarray(self.baseline_.mahalanobis(change), dtype=np.float64)
        p = np.asarray(stats.chi2.sf(d2, self.n_features_in_), dtype=np.float64)
        flags, q = decide(p, self.alpha, self.fdr)
        return DetectionResult(flags, p, q, d2, (), self.alpha, self.fdr, "chi-square")


# ---------------------------------------------------------------------------------------
# the world


def robust_sd(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per column: 1.4826 x median absolute deviation (the clean agents' own spread)."""
    x = np.asarray(x, dtype=np.float64)
    mad = np.median(np.abs(x - np.median(x, axis=0)), axis=0)
    sd = 1.4826 * mad
    if np.any(sd <= 0):
        bad = np.flatnonzero(sd <= 0).tolist()
        raise AttackError(f"features {bad} have no spread among the clean agents: no unit for a budget")
    return np.asarray(sd, dtype=np.float64)


def whitebox_signs(stat: NDArray[np.float64], sd: NDArray[np.float64], goal: int) -> NDArray[np.float64]:
    """The sign pattern (goal feature negative) with the smallest Mahalanobis norm.

    ``stat`` holds the clean agents' statistic (n, d), ``sd`` its per-feature spread.
    Among all ``2**(d - 1)`` patterns ``s`` with ``s[goal] = -1`` it returns the one
    minimising ``s' R^+ s`` with ``R`` the classical correlation of ``stat / sd``: the
    direction in which a shift of equal size on every feature looks least unusual.
    """
    d = int(sd.size)
    if d > _MAX_SIGN_FEATURES:
        raise AttackError(f"{d} features: the exhaustive sign search supports at most {_MAX_SIGN_FEATURES}")
    if not 0 <= goal < d:
        raise AttackError(f"goal feature index {goal} is outside 0..{d - 1}")
    z = np.asarray(stat, dtype=np.float64) / sd
    precision = np.linalg.pinv(np.atleast_2d(np.cov(z, rowvar=False)))
    free = [j for j in range(d) if j != goal]
    codes = np.arange(2 ** (d - 1), dtype=np.int64)
    bits = (codes[:, None] >> np.arange(d - 1, dtype=np.int64)) & 1
    patterns = np.empty((codes.size, d), dtype=np.float64)
    patterns[:, free] = 1.0 - 2.0 * bits
    patterns[:, goal] = -1.0
    norms = np.einsum("ij,jk,ik->i", patterns, precision, patterns)
    return np.asarray(patterns[int(np.argmin(norms))], dtype=np.float64)


def shift_distance(stat: NDArray[np.float64], sd: NDArray[np.float64],
                   signs: NDArray[np.float64]) -> float:
    """Mahalanobis length of the budget-1 shift ``signs * sd`` under the clean agents'
    own (classical) covariance of ``stat``: what a budget means as one distance."""
    z = np.asarray(stat, dtype=np.float64) / sd
    precision = np.linalg.pinv(np.atleast_2d(np.cov(z, rowvar=False)))
    return float(np.sqrt(signs @ precision @ signs))


@dataclass(frozen=True, eq=False)
class World:
    """One seed's fleets, the clean spread that sets the budget units, and the attackers.

    Attributes
    ----------
    seed : the evaluation seed (the simulator's seed is ``3 seed``; one network holds the
        reference, monitored and replay fleets).
    reference, monitored, replay : clean windows (n_agents, n_windows, d).
    feature_names : the simulator's feature names.
    change_sd, level_sd : per-feature robust SD of the reference agents' change and level.
    change_signs, level_signs : the white-box attacker's sign pattern for each statistic.
    change_distance, level_distance : :func:`shift_distance` of each budget-1 shift.
    attacked : rows of the monitored (and replay) fleet under the attacker's control.
    poisoned : rows of the reference fleet under the poisoning attacker's control.
    """

    seed: int
    reference: NDArray[np.float64]
    monitored: NDArray[np.float64]
    replay: NDArray[np.float64]
    feature_names: tuple[str, ...]
    change_sd: NDArray[np.float64]
    level_sd: NDArray[np.float64]
    change_signs: NDArray[np.float64]
    level_signs: NDArray[np.float64]
    change_distance: float
    level_distance: float
    attacked: NDArray[np.intp]
    poisoned: NDArray[np.intp]

    @property
    def change_unit(self) -> NDArray[np.float64]:
        """The shift of budget 1 on the change: one clean SD per feature, signed."""
        return self.change_signs * self.change_sd

    @property
    def level_unit(self) -> NDArray[np.float64]:
        """The shift of budget 1 on the level: one clean level SD per feature, signed."""
        return self.level_signs * self.level_sd

    @property
    def clean(self) -> NDArray[np.bool_]:
        """Mask of the monitored agents the attacker does not control."""
        mask = np.ones(self.monitored.shape[0], dtype=bool)
        mask[self.attacked] = False
        return mask


def make_world(seed: int, config: AttackConfig) -> World:
    """Simulate one seed's clean fleets and place the attackers (see :class:`World`)."""
    from tcpkit.detect.simulate import simulate_network

    seed = _int("seed", seed, 0)
    settings = dict(config.world)

    sizes = (config.n_reference, config.n_monitored, config.n_monitored)
    net = simulate_network(
        n_agents=sum(sizes), n_windows=config.n_windows, baseline_windows=config.reference_windows,
        compromised_fraction=0.0, seed=3 * seed, **settings,
    )
    names = tuple(net.feature_names)
    order = np.random.default_rng([seed, 0xF1EE7]).permutation(sum(sizes))
    cuts = np.cumsum(sizes)[:-1]
    reference, monitored, replay = (np.array(net.windows[np.sort(rows)], dtype=np.float64)
                                    for rows in np.split(order, cuts))
    if config.goal_feature not in names:
        raise AttackError(f"goal_feature={config.goal_feature!r} is not a feature: choose one of {names}")
    goal = names.index(config.goal_feature)
    change, level = _change_and_level(reference, config.reference_windows)
    change_sd, level_sd = robust_sd(change), robust_sd(level)
    rng = np.random.default_rng([seed, 0xA77])
    attacked = np.sort(rng.choice(config.n_monitored, size=config.n_attacked, replace=False))
    n_poison = int(round(config.poison_fraction * config.n_reference))
    poisoned = np.sort(rng.choice(config.n_reference, size=n_poison, replace=False))
    change_signs = whitebox_signs(change, change_sd, goal)
    level_signs = whitebox_signs(level, level_sd, goal)
    return World(
        seed=seed, reference=reference, monitored=monitored, replay=replay, feature_names=names,
        change_sd=change_sd, level_sd=level_sd, change_signs=change_signs, level_signs=level_signs,
        change_distance=shift_distance(change, change_sd, change_signs),
        level_distance=shift_distance(level, level_sd, level_signs),
        attacked=attacked.astype(np.intp), poisoned=poisoned.astype(np.intp),
    )


# ---------------------------------------------------------------------------------------
# the attacks: windows the attacker plays, per budget


def mimicry_windows(world: World, budget: float, config: AttackConfig) -> NDArray[np.float64]:
    """Monitored windows with the attackers ``budget`` clean SDs off on every feature."""
    w = world.monitored.copy()
    w[world.attacked, config.reference_windows:] += budget * world.change_unit
    return w


def drift_windows(world: World, budget: float, config: AttackConfig) -> NDArray[np.float64]:
    """Monitored windows with the attackers drifting linearly to ``budget`` SDs."""
    w = world.monitored.copy()
    n_after = config.n_windows - config.reference_windows
    ramp = np.arange(1, n_after + 1, dtype=np.float64) / n_after
    w[world.attacked, config.reference_windows:] += budget * ramp[:, None] * world.change_unit
    return w


def poisoned_windows(world: World, budget: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(reference, monitored) windows with the poisoning shift present from window 0."""
    shift = budget * world.level_unit
    reference = world.reference.copy()
    reference[world.poisoned] += shift
    monitored = world.monitored.copy()
    monitored[world.attacked] += shift
    return reference, monitored


def coordination_windows(world: World, group_size: int, config: AttackConfig) -> NDArray[np.float64]:
    """Monitored windows with the attackers in groups of ``group_size`` moving together."""
    w = world.monitored.copy()
    n_after = config.n_windows - config.reference_windows
    groups = np.arange(world.attacked.size) // group_size
    rng = np.random.default_rng([world.seed, 0xC00, group_size])
    shock = rng.standard_normal((int(groups.max()) + 1, n_after)) * config.coordination_shock
    per_member = config.coordination_total / group_size
    offsets = per_member + shock[groups]  # (n_attacked, n_after), clean SDs
    w[world.attacked, config.reference_windows:] += offsets[:, :, None] * world.change_unit
    return w


def world_separability(
    world: World, config: AttackConfig, budgets: Mapping[str, float] | None = None
) -> SeparabilityTable:
    """How hard this world is: :func:`tcpkit.detect.separability.separability_of` per attack.

    The attacked agents play each fixed-shift attack at its budget (default
    :data:`REFERENCE_BUDGETS`, the gated ones): mimicry, drift, poisoning, and
    coordination with groups of that size. Probing is left out: its shift is whatever
    its queries of a detector taught it, not a property of the world. The clean agents
    are the monitored fleet's others.
    """
    from tcpkit.detect.separability import separability_of

    use = {**REFERENCE_BUDGETS, **dict(budgets or {})}
    played = {
        "mimicry": mimicry_windows(world, use["mimicry"], config),
        "drift": drift_windows(world, use["drift"], config),
        "poisoning": poisoned_windows(world, use["poisoning"])[1],
        "coordination": coordination_windows(world, int(use["coordination"]), config),
    }
    r = config.reference_windows
    parts = [world.monitored[world.clean]] + [w[world.attacked] for w in played.values()]
    stacked = np.concatenate(parts)
    labels = np.array(
        [None] * int(world.clean.sum()) + [name for name in played for _ in range(world.attacked.size)], dtype=object
    )
    label = ", ".join(f"{name} {use[name]:g}" for name in played)
    return separability_of(
        stacked[:, r:].mean(axis=1), stacked[:, :r].mean(axis=1), world.feature_names, labels,
        attacks=tuple(played), difficulty=f"security world, budgets {label}",
    )


def probe(
    detector: Detector, world: World, max_queries: int, config: AttackConfig
) -> NDArray[np.float64]:
    """Bisect each attacker's largest undetected shift with up to ``max_queries`` decisions.

    Returns an array (max_queries + 1, n_attacked): row ``q`` is the largest shift (clean
    SDs per feature) each attacker has seen pass after ``q`` queries (0 before any).
    All attackers query at once: one ``detect`` call on the monitored fleet per query.
    """
    n = world.attacked.size
    lo, hi = np.zeros(n), np.full(n, config.probe_max)
    known = np.zeros((max_queries + 1, n))
    for q in range(1, max_queries + 1):
        mid = 0.5 * (lo + hi)
        w = world.monitored.copy()
        w[world.attacked, config.reference_windows:] += mid[:, None, None] * world.change_unit
        flagged = np.asarray(detector.detect(w).flags, dtype=bool)[world.attacked]
        hi = np.where(flagged, mid, hi)
        lo = np.where(flagged, lo, mid)
        known[q] = lo
    return known


# ---------------------------------------------------------------------------------------
# results


def _wilson(k: NDArray[np.int64], n: NDArray[np.int64], alpha: float) -> tuple[
    NDArray[np.float64], NDArray[np.float64]
]:
    low, high = proportion_confint(k, n, alpha=alpha, method="wilson")
    rate = k / np.maximum(n, 1)
    return np.minimum(np.atleast_1d(low), rate), np.maximum(np.atleast_1d(high), rate)


@dataclass(frozen=True)
class EvasionCurve:
    """Evasion rate against budget for one attack and one detector, over seeds.

    Attributes
    ----------
    attack, detector : what was attacked, and the detector's name.
    budgets : the budgets swept, in ``unit``.
    evaded, trials : per budget, attacker agents not flagged (that reached their goal),
        and attacker agents.
    rates, ci_low, ci_high : ``evaded / trials`` and its Wilson interval (too narrow:
        the agents of one seed share a fit; see ``per_seed`` and :meth:`seed_interval`).
    per_seed : (n_budgets, n_seeds) evasion rate of each seed; NaN where that budget was
        not judged on that seed (off-gate budgets with ``curve_seeds``).
    seeds : the evaluation seeds.
    reference_budget : the budget of the gated number.
    """

    attack: str
    detector: str
    budgets: tuple[float, ...]
    evaded: tuple[int, ...]
    trials: tuple[int, ...]
    rates: tuple[float, ...]
    ci_low: tuple[float, ...]
    ci_high: tuple[float, ...]
    per_seed: tuple[tuple[float, ...], ...]
    seeds: tuple[int, ...]
    reference_budget: float
    ci_alpha: float = 0.05

    @property
    def unit(self) -> str:
        return UNITS[self.attack]

    def at(self, budget: float) -> tuple[float, float, float]:
        """``(rate, ci_low, ci_high)`` at a swept ``budget``."""
        for i, b in enumerate(self.budgets):
            if math.isclose(b, budget):
                return self.rates[i], self.ci_low[i], self.ci_high[i]
        raise AttackError(f"budget {budget!r} was not swept; swept: {list(self.budgets)}")

    @property
    def reference_rate(self) -> float:
        return self.at(self.reference_budget)[0]

    def seed_interval(self, budget: float, n_boot: int = 2000) -> tuple[float, float]:
        """Cluster-bootstrap interval of the rate at ``budget``, resampling seeds.

        The unit is the simulated world (one fit, one calibration, one BH cut each), so
        the interval respects the dependence that the Wilson interval ignores. Every seed
        has the same number of attackers, so the pooled rate is the mean of the seeds'
        rates. Only the seeds ``budget`` was judged on count; ``(nan, nan)`` with fewer than two.
        """
        self.at(budget)
        i = next(j for j, b in enumerate(self.budgets) if math.isclose(b, budget))
        rates = np.asarray(self.per_seed[i], dtype=np.float64)
        rates = rates[np.isfinite(rates)]
        if rates.size < 2:
            return math.nan, math.nan
        rng = np.random.default_rng(0)
        means = rates[rng.integers(0, rates.size, size=(n_boot, rates.size))].mean(axis=1)
        low, high = np.quantile(means, [self.ci_alpha / 2, 1 - self.ci_alpha / 2])
        return float(low), float(high)

    @property
    def half_budget(self) -> float:
        """The budget at which evasion crosses 0.5 (see the module docstring); inf if never."""
        b, r = np.asarray(self.budgets), np.asarray(self.rates)
        if self.attack in INCREASING:
            over = np.flatnonzero(r > 0.5)
            return float(b[over[0]]) if over.size else math.inf
        below = np.flatnonzero(r <= 0.5)
        if below.size == 0:
            return math.inf
        i = int(below[0])
        if i == 0:
            return float(b[0])
        b0, b1, r0, r1 = b[i - 1], b[i], r[i - 1], r[i]
        return float(b0 + (r0 - 0.5) / (r0 - r1) * (b1 - b0))

    def summary(self) -> str:
        judged = [int(np.isfinite(row).sum()) for row in np.asarray(self.per_seed, dtype=np.float64)]
        fewer = sorted({n for n in judged if n < len(self.seeds)})
        off_gate = f" (off-gate budgets on {', '.join(map(str, fewer))})" if fewer else ""
        lines = [
            f"{self.attack} vs {self.detector} (budget: {self.unit}); {len(self.seeds)} seeds{off_gate}; "
            f"{100 * (1 - self.ci_alpha):.0f}% intervals: Wilson over agents, bootstrap over seeds",
            f"{'budget':>8} {'evaded':>11} {'rate':>6}  {'Wilson':<16} {'over seeds':<16} per seed",
        ]
        for i, b in enumerate(self.budgets):
            seeds = " ".join(f"{x:.2f}" if math.isfinite(x) else "-" for x in self.per_seed[i])
            lo, hi = self.seed_interval(b)
            over = f"[{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) else "(one seed)"
            lines.append(
                f"{b:>8g} {self.evaded[i]:>5d}/{self.trials[i]:<5d} {self.rates[i]:6.3f}  "
                f"[{self.ci_low[i]:.3f}, {self.ci_high[i]:.3f}] {over:<16} {seeds}"
            )
        hb = self.half_budget
        lines.append(f"evasion crosses 0.5 at budget {hb:.3g}" if math.isfinite(hb)
                     else "evasion does not cross 0.5 within the sweep")
        return "\n".join(lines)


@dataclass(frozen=True)
class FalseAlarms:
    """Clean monitored agents flagged in the attack runs of one detector."""

    detector: str
    flagged: int
    clean: int
    ci_alpha: float = 0.05

    @property
    def rate(self) -> float:
        return self.flagged / self.clean if self.clean else math.nan

    @property
    def ci(self) -> tuple[float, float]:
        low, high = _wilson(np.array([self.flagged]), np.array([self.clean]), self.ci_alpha)
        return float(low[0]), float(high[0])


@dataclass(frozen=True)
class SecurityEvaluation:
    """Every curve and false-alarm count of one run of :func:`evaluate_attacks`."""

    curves: dict[tuple[str, str], EvasionCurve]
    false_alarms: dict[str, FalseAlarms]
    probe_shift: dict[str, dict[float, float]]
    config: AttackConfig
    seeds: tuple[int, ...]

    @property
    def detectors(self) -> tuple[str, ...]:
        return tuple(self.false_alarms)

    @property
    def attacks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a for a, _ in self.curves))

    def metrics(self) -> dict[str, float | int]:
        """The recorded numbers: evasion at the reference budgets, half-evasion budgets,
        false-alarm rates, and the budgets and trial counts they were measured at."""
        out: dict[str, float | int] = {}
        for (attack, det), c in self.curves.items():
            rate, _, high = c.at(c.reference_budget)
            out[f"evasion_{attack}_{det}"] = rate
            out[f"evasion_{attack}_{det}_ci_high"] = high
            out[f"evasion_{attack}_{det}_seed_ci_high"] = c.seed_interval(c.reference_budget)[1]
            out[f"half_evasion_budget_{attack}_{det}"] = c.half_budget
            out[f"budget_{attack}"] = c.reference_budget
            out[f"evasion_trials_{attack}"] = c.trials[c.budgets.index(c.reference_budget)]
        for det, fa in self.false_alarms.items():
            out[f"false_alarm_rate_{det}"] = fa.rate
            out[f"false_alarm_rate_{det}_ci_high"] = fa.ci[1]
            out[f"clean_agents_judged_{det}"] = fa.clean
        out["attacked_fraction"] = self.config.attacked_fraction
        out["poison_fraction"] = self.config.poison_fraction
        out["probe_goal"] = self.config.probe_goal
        out["coordination_total"] = self.config.coordination_total
        out["security_seeds"] = len(self.seeds)
        return out


# ---------------------------------------------------------------------------------------
# the sweep


def _check_budgets(attack: str, budgets: Iterable[float] | None) -> tuple[float, ...]:
    values = list(DEFAULT_BUDGETS[attack] if budgets is None else budgets)
    out: list[float] = []
    for b in values:
        v = _real(f"{attack} budget", b, 0.0)
        if attack in INCREASING and (v != int(v) or v < 1):
            raise AttackError(f"{attack} budget {b!r} must be a whole number >= 1")
        out.append(v)
    ref = REFERENCE_BUDGETS[attack]
    if not any(math.isclose(v, ref) for v in out):
        out.append(ref)  # the gated number is always measured
    return tuple(sorted(set(out)))


def _check_seeds(seeds: Iterable[int]) -> tuple[int, ...]:
    try:
        seed_list = tuple(seeds)
    except TypeError:
        raise AttackError(f"seeds must be an iterable of integers, got {seeds!r}") from None
    if not seed_list:
        raise AttackError("seeds is empty: give at least one seed")
    return tuple(_int("seed", s, 0) for s in seed_list)


class _Tally:
    """Per (attack, detector): evaded and trials per budget and seed; clean false alarms."""

    def __init__(self) -> None:
        self.evaded: dict[tuple[str, str, float, int], int] = {}
        self.trials: dict[tuple[str, str, float, int], int] = {}
        self.flagged: dict[str, int] = {}
        self.clean: dict[str, int] = {}

    def judge(self, key: tuple[str, str, float, int], world: World, flags: NDArray[np.bool_],
              goal: NDArray[np.bool_] | None = None) -> None:
        flags = np.asarray(flags, dtype=bool)
        if flags.shape != (world.monitored.shape[0],):
            raise AttackError(f"detector {key[1]!r} returned flags of shape {flags.shape} for "
                              f"{world.monitored.shape[0]} agents")
        unseen = ~flags[world.attacked]
        if goal is not None:
            unseen &= goal
        self.evaded[key] = int(unseen.sum())
        self.trials[key] = int(world.attacked.size)
        det = key[1]
        self.flagged[det] = self.flagged.get(det, 0) + int(flags[world.clean].sum())
        self.clean[det] = self.clean.get(det, 0) + int(world.clean.sum())

    def merge(self, other: _Tally) -> None:
        """Add another seed's tally (keys of different seeds never collide)."""
        self.evaded.update(other.evaded)
        self.trials.update(other.trials)
        for det, n in other.flagged.items():
            self.flagged[det] = self.flagged.get(det, 0) + n
        for det, n in other.clean.items():
            self.clean[det] = self.clean.get(det, 0) + n


_SeedResult = tuple[_Tally, dict[str, dict[float, list[float]]]]


def _seed_result(
    seed: int, detectors: Mapping[str, DetectorFactory], cfg: AttackConfig, sweeps: Mapping[str, tuple[float, ...]]
) -> _SeedResult:
    """Every attack of one seed's world against every detector (in this process or a worker)."""
    tally = _Tally()
    probe_shift: dict[str, dict[float, list[float]]] = {}
    world = make_world(seed, cfg)
    for name, factory in detectors.items():
        _attack_world(name, factory, world, cfg, sweeps, tally, probe_shift)
    return tally, probe_shift


def _seed_results(
    seeds: tuple[int, ...], detectors: Mapping[str, DetectorFactory], cfg: AttackConfig,
    sweeps: Sequence[Mapping[str, tuple[float, ...]]], workers: int,
) -> list[_SeedResult]:
    """:func:`_seed_result` of each seed with its sweep (``sweeps[i]`` for ``seeds[i]``), in
    seed order; seeds spread over ``workers`` processes."""
    if workers == 1 or len(seeds) == 1:
        return [_seed_result(seed, detectors, cfg, sweep) for seed, sweep in zip(seeds, sweeps, strict=True)]
    import multiprocessing
    import pickle
    from concurrent.futures import ProcessPoolExecutor

    try:
        pickle.dumps(dict(detectors))
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise AttackError(
            f"workers={workers} needs detector factories a worker process can import (e.g. "
            f"functools.partial of a module-level function, not a lambda): {exc}"
        ) from None
    context = multiprocessing.get_context("spawn")  # sklearn's OpenMP runtime does not survive a fork
    with ProcessPoolExecutor(max_workers=min(workers, len(seeds)), mp_context=context) as pool:
        futures = [pool.submit(_seed_result, seed, dict(detectors), cfg, dict(sweep))
                   for seed, sweep in zip(seeds, sweeps, strict=True)]
        return [f.result() for f in futures]


def evaluate_attacks(
    detectors: Mapping[str, DetectorFactory],
    seeds: Iterable[int],
    *,
    config: AttackConfig | None = None,
    attacks: Sequence[str] = ATTACKS,
    budgets: Mapping[str, Iterable[float]] | None = None,
    ci_alpha: float = 0.05,
    workers: int = 1,
    curve_seeds: int | None = None,
) -> SecurityEvaluation:
    """Run every attack against every detector on the same seeded fleets.

    Parameters
    ----------
    detectors : ``{name: factory}``; each factory builds a fresh unfitted detector with
        the :class:`Detector` protocol (e.g. ``lambda: build_detector(config)``).
    seeds : evaluation seeds (one world each, see :func:`make_world`).
    config : the world and the attackers (``AttackConfig()`` when omitted).
    attacks : which of :data:`ATTACKS` to run.
    budgets : per-attack budgets (default :data:`DEFAULT_BUDGETS`); the reference budget
        is always added.
    ci_alpha : 1 - level of the Wilson intervals.
    workers : processes the seeds are spread over (each seed's world is independent); the
        result is identical to one process (tallies and probe shifts are merged in seed
        order). More than 1 needs factories a spawned process can unpickle.
    curve_seeds : judge the budgets other than each attack's reference budget (the gated
        one, always judged on every seed) on the first ``curve_seeds`` seeds only (None:
        every seed). Every detect call of the shipped detector trains its adaptive test, so
        the off-gate points of the curve cost most of the run; with fewer seeds their
        intervals widen, and the gated numbers are unchanged (a seed's world and fits do
        not depend on which budgets are judged).
    """
    cfg = config if config is not None else AttackConfig()
    if not isinstance(cfg, AttackConfig):
        raise AttackError(f"config must be an AttackConfig, got {type(cfg).__name__}")
    if not detectors:
        raise AttackError("detectors is empty: give at least one {name: factory}")
    unknown = sorted(set(attacks) - set(ATTACKS))
    if unknown or not attacks:
        raise AttackError(f"unknown attack(s) {unknown}: choose from {list(ATTACKS)}")
    extra = sorted(set(budgets or {}) - set(ATTACKS))
    if extra:
        raise AttackError(f"budgets names unknown attack(s) {extra}: choose from {list(ATTACKS)}")
    _real("ci_alpha", ci_alpha, 0.0, 1.0, open_low=True, open_high=True)
    sweeps = {a: _check_budgets(a, (budgets or {}).get(a)) for a in attacks}
    seed_list = _check_seeds(seeds)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise AttackError(f"workers={workers!r}: expected a positive number of processes")
    if curve_seeds is not None and (
        isinstance(curve_seeds, bool) or not isinstance(curve_seeds, int) or curve_seeds < 1
    ):
        raise AttackError(f"curve_seeds={curve_seeds!r}: expected a positive number of seeds, or None")
    gated_only = {a: (REFERENCE_BUDGETS[a],) for a in sweeps}
    per_seed_sweeps = [
        sweeps if curve_seeds is None or i < curve_seeds else gated_only for i in range(len(seed_list))
    ]
    tally = _Tally()
    probe_shift: dict[str, dict[float, list[float]]] = {}
    for seed_tally, seed_shift in _seed_results(seed_list, detectors, cfg, per_seed_sweeps, workers):
        tally.merge(seed_tally)
        for name, by_budget in seed_shift.items():
            for b, values in by_budget.items():
                probe_shift.setdefault(name, {}).setdefault(b, []).extend(values)
    curves = {}
    for attack, sweep in sweeps.items():
        for name in detectors:
            curves[attack, name] = _curve(attack, name, sweep, seed_list, tally, ci_alpha)
    false_alarms = {
        name: FalseAlarms(name, tally.flagged.get(name, 0), tally.clean.get(name, 0), ci_alpha)
        for name in detectors
    }
    shifts = {name: {q: float(np.mean(v)) for q, v in by_q.items()} for name, by_q in probe_shift.items()}
    return SecurityEvaluation(curves, false_alarms, shifts, cfg, seed_list)


def _fit(factory: DetectorFactory, reference: NDArray[np.float64], name: str) -> Detector:
    detector = factory()
    fitted = detector.fit(reference)
    if fitted is None:
        raise AttackError(f"detector {name!r}: fit() must return the fitted detector (self)")
    return fitted


def _attack_world(
    name: str, factory: DetectorFactory, world: World, cfg: AttackConfig,
    sweeps: Mapping[str, tuple[float, ...]], tally: _Tally,
    probe_shift: dict[str, dict[float, list[float]]],
) -> None:
    """All attacks of one seed against one detector (fitted once on the clean reference)."""
    fitted: list[Detector] = []

    def clean() -> Detector:  # fitted on first use: a poisoning-only sweep never needs it
        if not fitted:
            fitted.append(_fit(factory, world.reference, name))
        return fitted[0]

    def flags(d: Detector, w: NDArray[np.float64]) -> NDArray[np.bool_]:
        return np.asarray(d.detect(w).flags, dtype=bool)

    unattacked: list[NDArray[np.bool_]] = []

    def unattacked_flags() -> NDArray[np.bool_]:
        # budget 0 of mimicry, drift and poisoning is the same call: the clean fit on the
        # monitored windows as they are; judged once (each detect trains the adaptive test)
        if not unattacked:
            unattacked.append(flags(clean(), world.monitored))
        return unattacked[0]

    s = world.seed
    for attack, sweep in sweeps.items():
        if attack == "mimicry":
            for b in sweep:
                f = unattacked_flags() if b == 0 else flags(clean(), mimicry_windows(world, b, cfg))
                tally.judge((attack, name, b, s), world, f)
        elif attack == "drift":
            for b in sweep:
                f = unattacked_flags() if b == 0 else flags(clean(), drift_windows(world, b, cfg))
                tally.judge((attack, name, b, s), world, f)
        elif attack == "coordination":
            for b in sweep:
                w = coordination_windows(world, int(b), cfg)
                tally.judge((attack, name, b, s), world, flags(clean(), w))
        elif attack == "poisoning":
            for b in sweep:
                if b == 0:
                    tally.judge((attack, name, b, s), world, unattacked_flags())
                    continue
                reference, monitored = poisoned_windows(world, b)
                tally.judge((attack, name, b, s), world, flags(_fit(factory, reference, name), monitored))
        else:  # probing
            det = clean()
            known = probe(det, world, int(max(sweep)), cfg)
            for b in sweep:
                shift = known[int(b)]
                w = world.replay.copy()
                w[world.attacked, cfg.reference_windows:] += shift[:, None, None] * world.change_unit
                goal = shift >= cfg.probe_goal
                tally.judge((attack, name, b, s), world, flags(det, w), goal)
                probe_shift.setdefault(name, {}).setdefault(b, []).extend(shift.tolist())


def _curve(attack: str, name: str, sweep: tuple[float, ...], seeds: tuple[int, ...],
           tally: _Tally, ci_alpha: float) -> EvasionCurve:
    # a (budget, seed) pair not judged (an off-gate budget beyond curve_seeds) counts 0 of 0
    ev = np.array([[tally.evaded.get((attack, name, b, s), 0) for s in seeds] for b in sweep], dtype=np.int64)
    tr = np.array([[tally.trials.get((attack, name, b, s), 0) for s in seeds] for b in sweep], dtype=np.int64)
    evaded, trials = ev.sum(axis=1), tr.sum(axis=1)
    per_seed = np.where(tr > 0, ev / np.maximum(tr, 1), np.nan)
    low, high = _wilson(evaded, trials, ci_alpha)
    return EvasionCurve(
        attack=attack, detector=name, budgets=sweep,
        evaded=tuple(int(x) for x in evaded), trials=tuple(int(x) for x in trials),
        rates=tuple(float(x) for x in evaded / trials),
        ci_low=tuple(float(x) for x in low), ci_high=tuple(float(x) for x in high),
        per_seed=tuple(tuple(float(x) for x in row) for row in per_seed),
        seeds=seeds, reference_budget=REFERENCE_BUDGETS[attack], ci_alpha=ci_alpha,
    )
