"""The whole tcpkit detector over an agent network: change, level, CUSUM and per-family tests, one p-value each.

Honest agents are heterogeneous (each has its own bias, noise and latency), so one
population baseline mixes between-agent differences with compromise. Three tests,
each answering a different question, are therefore run per agent and combined:

``change``
    ``x_i = mean(detection windows) - mean(own reference windows)``. Differencing
    removes the agent's own level, so heterogeneity in level cancels; what remains is
    scored against the covariance of such changes (robust MCD). With
    ``studentize=True`` (default) the change, the single-window changes of ``cusum`` and
    so the ``family`` test are first divided by the agent's own window-to-window SD
    (:mod:`tcpkit.detect.studentize`), so that honest agents' different noise levels
    cancel too; every agent, calibration agents included, goes through the same
    per-agent transform, which keeps the conformal p-values valid.
``level``
    the agent's mean over *all* its windows against the population of agents (robust
    MCD), in the level space of ``config.level_space`` (:mod:`tcpkit.detect.level_space`:
    raw, or each feature gaussianised and near-redundant ones left out, which keeps the
    honest tail near chi-square). Needed for compromises present from the first window
    (poisoning), which a before/after comparison cannot see.
``cusum``
    per window ``w`` after the reference period, the squared distance of
    ``window_w - mean(own reference windows)``; a one-sided CUSUM of its normal scores
    (:class:`tcpkit.detect.sequential.CusumDetector`) catches slow drift; the agent's
    score is the CUSUM maximum.
``family`` (when the features include ``focus_feature``, by default
    ``family_underrating``)
    the one-sided change of that single feature (detection mean minus own reference
    mean), robustly standardised on the fitting agents. A compromise that touches one
    command family moves this one coordinate strongly while the 12-dimensional
    ``change`` distance spreads its evidence over all degrees of freedom.
``directed`` (when ``config.threat_library`` names a library world)
    the largest standardised one-sided projection of the agent's change and level on the
    directions the known compromise types move (:mod:`tcpkit.detect.threats`: Fisher
    directions learned on a labelled simulated world of the tuning seed range, frozen with
    the model). An omnibus distance pays for every direction that carries nothing; this test
    pays for one per known type, and so finds several-SD moves spread over a few features that
    the distances miss. It adds nothing against an attack unlike the library's (the omnibus
    and adaptive tests remain for those) and, being a function of the agent alone, leaves the
    p-values exact.
``adaptive`` (when ``config.adaptive``)
    a score learned from the batch being judged (:mod:`tcpkit.detect.adaptive`,
    AdaDetect): a classifier of reference agents kept aside for it (the null training
    agents, joined by the fitting agents) against the calibration agents pooled with the judged ones, on each agent's
    change, level and fixed test scores (:meth:`NetworkDetector.agent_matrix`). Where
    the judged fleet holds agents the reference lacks, it learns their direction, which
    the omnibus distances cannot. Its score is a symmetric function of the calibration
    + judged set, so the full-conformal min-p below stays exact; the price is that
    ``detect`` becomes transductive (an agent's p-value depends on the batch it is
    judged with) and that the reference must be exchangeable with the clean judged
    agents in every respect a classifier can see (audited inside the fleet:
    :mod:`tcpkit.detect.audited`). With it, every test calibrates on the
    ``adaptive_calibration`` agents and the rest of the calibration part trains it.

What is assumed clean, and why that is realistic
------------------------------------------------
Everything is fitted and calibrated on a **vetted reference fleet**: agents of the
same population, audited clean (in deployment: agents run under audit, or a vetted
reference period of a fleet with no known compromise). Up to ``max_fit_agents`` (at
most half) of the reference agents fit the baselines, the rest provide the
calibration scores. The monitored agents
never influence the reference (a baseline that learns from the agents it judges can be
poisoned or absorb a drift).

The combined p-value
--------------------
Each component score is turned into a conformal p-value against the calibration
agents. The combined statistic is the weighted min-p ``min_j p_j / w_j`` (weight
``change_weight`` for the change test, 1 for the others) and it is itself calibrated
by full conformal inference over the calibration agents plus the judged agent: within
that set of ``n_cal + 1`` agents every agent's component p-values are its ranks
``#{agents in the set with score >= its own} / (n_cal + 1)``, its statistic is the
weighted smallest of them, and the judged agent's final p-value is the share of the
set whose statistic is at least as extreme as its own (computed exactly, in O(K log
n_cal) per judged agent plus a short band of near-ties: see
:mod:`tcpkit.detect.weighted_minp`). The statistic takes few values, so ties
are broken by a fixed continuous key, ``sum_j log(1 + s_j / m_j)`` with ``m_j`` the
median component score of the fitting agents (a function of the agent alone, so it
keeps the symmetry). Assumption: a clean monitored agent and the calibration agents
are exchangeable (same population, same number of windows). Under it the p-value is
exactly uniform on ``{1, ..., n_cal + 1} / (n_cal + 1)`` (ties in the key have
probability zero for continuous scores), whatever the dependence between the tests
and whatever the (fixed) weights: ``P(p <= alpha) = floor(alpha (n_cal + 1)) / (n_cal + 1)``.
Benjamini-Hochberg then controls the FDR across agents; note that conformal p-values are at least ``1 / (n_cal + 1)``, so BH at level ``q`` over
``m`` agents can flag ``k`` agents only if ``n_cal + 1 >= m / (q k)``: size the
reference fleet accordingly.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tcpkit.detect.adaptive import adaptive_pvalues, adaptive_split
from tcpkit.detect.baseline import (
    Baseline,
    BaselineError,
    DetectionResult,
    _check_alpha,
    check_windows,
    decide,
)
from tcpkit.detect.config import ConfigError, DetectorConfig
from tcpkit.detect.explain import Explanation, explain
from tcpkit.detect.kernel_config import KernelConfig
from tcpkit.detect.level_space import LevelSpace, fit_level_space
from tcpkit.detect.pvalues import conformal_pvalues
from tcpkit.detect.regression import LevelRegression, fit_level_regression
from tcpkit.detect.screen import SCREEN_PARTS, ReferenceScreen, ScreenResult, fit_screen
from tcpkit.detect.sequential import CusumDetector, CusumResult
from tcpkit.detect.studentize import own_sd, studentize_prior
from tcpkit.detect.threats import ThreatDirections, ThreatError, fisher_directions, library_world
from tcpkit.detect.weighted_minp import WeightedMinp

COMPONENTS = ("change", "level", "cusum")
FAMILY_COMPONENT = "family"
DIRECTED_COMPONENT = "directed"
ADAPTIVE_COMPONENT = "adaptive"
ESTIMATED_BASELINES = ("change", "level", "window")
SIGNED_COMPONENTS = (FAMILY_COMPONENT, DIRECTED_COMPONENT)  # standardised scores, not distances


class KernelLike(Protocol):
    """A scorer of squared Mahalanobis distances (e.g. :class:`tcpkit.detect.kernel.WhiteningKernel`)."""

    def squared_distances(self, X: NDArray[np.float64]) -> NDArray[np.floating]: ...


KernelFactory = Callable[[NDArray[np.float64], NDArray[np.float64]], KernelLike]


class NetworkLike(Protocol):
    """Anything with per-agent windows and a reference period (e.g. SimulatedNetwork)."""

    @property
    def windows(self) -> NDArray[np.float64]: ...

    @property
    def feature_names(self) -> tuple[str, ...]: ...

    @property
    def params(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class _Features:
    change: NDArray[np.float64]
    level: NDArray[np.float64]
    per_window: NDArray[np.float64]  # (n_agents, n_after, d) window minus own reference mean
    level_test: NDArray[np.float64]  # the level in the level test's space (:mod:`tcpkit.detect.level_space`)


def _features(
    windows: NDArray[np.float64],
    reference_windows: int,
    prior: NDArray[np.float64] | None = None,
    regression: LevelRegression | None = None,
    level_space: LevelSpace | None = None,
) -> _Features:
    """Per-agent change, level and single-window changes; studentised by own noise when ``prior`` is given.

    Studentised (``prior`` not None): every window is divided by ``sd_i``, the agent's own
    shrunk window SD (:func:`tcpkit.detect.studentize.own_sd`), a per-agent t scale, so
    that a noisy honest agent and a quiet one have changes on the same scale. The change
    is the detection mean minus the predicted honest mean: ``regression.predict`` of the
    (scaled) reference mean (:mod:`tcpkit.detect.regression`), or with ``regression=None``
    the reference mean itself (then, studentised, divided by ``sd_i sqrt(1/K_ref + 1/K_det)``
    and each single-window change by ``sd_i sqrt(1 + 1/K_ref)``: the plain t statistics).
    Single-window changes are measured from the same prediction. The level is a
    between-agent test and stays unstudentised; ``level_test`` is it in ``level_space``
    (None: the raw level).
    """
    ref = windows[:, :reference_windows].mean(axis=1)
    after = windows[:, reference_windows:]
    level = windows.mean(axis=1)
    level_test = level if level_space is None else level_space.transform(level)
    if regression is not None:
        ref_s, after_s = _scaled(windows, reference_windows, prior)
        expected = regression.predict(ref_s)
        return _Features(
            change=after_s.mean(axis=1) - expected,
            level=level,
            per_window=after_s - expected[:, None, :],
            level_test=level_test,
        )
    change = after.mean(axis=1) - ref
    per_window = after - ref[:, None, :]
    if prior is not None:
        sd = own_sd(windows, reference_windows, prior)
        k_ref, k_det = reference_windows, after.shape[1]
        change = change / (sd * np.sqrt(1.0 / k_ref + 1.0 / k_det))
        per_window = per_window / (sd * np.sqrt(1.0 + 1.0 / k_ref))[:, None, :]
    return _Features(change=change, level=level, per_window=per_window, level_test=level_test)


def _scaled(
    windows: NDArray[np.float64], reference_windows: int, prior: NDArray[np.float64] | None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(reference mean, detection windows), each divided by the agent's own SD when ``prior`` is given."""
    ref = windows[:, :reference_windows].mean(axis=1)
    after = windows[:, reference_windows:]
    if prior is None:
        return ref, after
    sd = own_sd(windows, reference_windows, prior)
    return ref / sd, after / sd[:, None, :]


class NetworkDetector:
    """Change + level + CUSUM detector, fitted and calibrated on a vetted clean fleet.

    Parameters
    ----------
    config : :class:`tcpkit.detect.config.DetectorConfig`, the one description of every
        setting (FDR level and method, estimator, CUSUM allowance and target ARL, reference
        period, fit/calibration split, focus feature, seed). Default: ``DetectorConfig()``.
        Build the shipped detector with :func:`tcpkit.detect.config.build_detector`.
    kernel_factory : optional ``factory(location, covariance) -> kernel`` whose
        ``squared_distances(X)`` scores the three baselines (e.g. a deployment's tuned
        production kernel). Default: each :class:`Baseline`'s own whitening kernel.
    kernel_config : settings (precision, rows per chunk, threads) of the baselines'
        kernels, a :class:`~tcpkit.detect.kernel_config.KernelConfig` or a mapping;
        default ``KernelConfig()``. Saved by :meth:`to_arrays` with the fitted state.
    feature_names, **settings : shorthands for ``config.replace(features=..., **settings)``
        (validated the same way), e.g. ``NetworkDetector(reference_windows=4)``.

    The estimator (``config.method``, default "empirical") is discussed at
    :class:`~tcpkit.detect.config.DetectorConfig`. ``focus_feature`` is ignored when the
    features do not contain it.

    Attributes (after fit)
    ----------------------
    change_ , level_ : fitted :class:`Baseline` for each static test (``level_`` in ``level_space_``).
    level_space_ : :class:`~tcpkit.detect.level_space.LevelSpace`, the level test's kept
        features and their transforms (the identity on every feature when "raw").
    window_ : :class:`Baseline` of single-window changes (for the CUSUM statistic).
    estimated_ : names of the baselines taken from ``fit``'s ``estimates`` (not fitted here).
    cusum_ : :class:`CusumDetector` with the frozen in-control reference.
    calibration_ : dict of sorted calibration scores per component.
    components_ : names of the tests run (COMPONENTS, plus "family" when used).
    focus_index_ : column of ``focus_feature`` (-1 when not used).
    focus_location_ , focus_scale_ : median and MAD-based scale of the focus change on the
        fitting agents.
    threats_ : :class:`~tcpkit.detect.threats.ThreatDirections` of the threat-directed test (None
        when ``config.threat_library`` is None).
    tiebreak_scale_ : median absolute component score of the fitting agents (tie-break key).
    n_calibration_ : number of calibration agents.
    screened_ : :class:`~tcpkit.detect.screen.ScreenResult`, the reference agents the screen
        removed per part (``config.reference_screen``); ``screen_removed_rows_``: their rows
        in the reference (after ``fit`` only; not frozen).
    adaptive_null_ , adaptive_calibration_ : :meth:`agent_matrix` rows of the adaptive
        test's class 0 (the null training agents, then the fitting agents) and of its
        calibration agents ((0, 0) when the test is off).
    """

    def __init__(
        self,
        config: DetectorConfig | None = None,
        *,
        kernel_factory: KernelFactory | None = None,
        feature_names: tuple[str, ...] | None = None,
        **settings: Any,
    ) -> None:
        base = config if config is not None else DetectorConfig()
        if not isinstance(base, DetectorConfig):
            raise BaselineError(f"config must be a DetectorConfig, not {type(base).__name__}")
        if feature_names is not None:
            settings["features"] = tuple(feature_names)
        try:
            self.config = base.replace(**settings) if settings else base
        except ConfigError as exc:
            raise BaselineError(str(exc)) from None
        self.kernel_factory = kernel_factory

    @property
    def kernel_config(self) -> KernelConfig:
        """The scoring kernel's settings: ``config.kernel``."""
        return self.config.kernel

    # Read-only views of the configuration (the one place the settings live).
    @property
    def reference_windows(self) -> int:
        return self.config.reference_windows

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def cusum_k(self) -> float:
        return self.config.cusum_k

    @property
    def target_arl(self) -> float:
        return self.config.target_arl

    @property
    def random_state(self) -> int:
        return self.config.random_state

    @property
    def feature_names(self) -> tuple[str, ...] | None:
        return self.config.features

    @property
    def max_fit_agents(self) -> int:
        return self.config.max_fit_agents

    @property
    def focus_feature(self) -> str | None:
        return self.config.focus_feature

    def _baseline(self, name: str) -> Baseline:
        return Baseline(
            self.method,
            random_state=self.random_state,
            feature_names=self._baseline_names(name),
            kernel_config=self.kernel_config,
        )

    def _baseline_names(self, name: str) -> tuple[str, ...] | None:
        """Feature names of baseline ``name`` (the level's are its space's columns)."""
        if name == "level":
            return self.level_space_.names(self.feature_names)
        return self.feature_names

    def split(self, n_agents: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """The (fitting rows, calibration rows) that :meth:`fit` uses for ``n_agents`` reference agents.

        Deterministic given ``random_state``: use it to compute baselines elsewhere (e.g.
        per-node moments merged through the CRDT) on exactly the fitting agents.
        """
        if isinstance(n_agents, bool) or not isinstance(n_agents, int | np.integer) or n_agents < 40:
            raise BaselineError(
                f"reference has {n_agents!r} agents: at least 40 are needed (half fit, half calibrate)"
            )
        order = np.random.default_rng(self.random_state).permutation(int(n_agents))
        n_fit = min(int(n_agents) // 2, self.max_fit_agents)
        return np.sort(order[:n_fit]), np.sort(order[n_fit:])

    def baseline_features(self, windows: ArrayLike) -> dict[str, NDArray[np.float64]]:
        """The per-agent rows each baseline is fitted on, keyed like ``fit``'s ``estimates``.

        ``change`` is (n, d) and ``level`` (n, k), in the level test's space (``level_space_``:
        k <= d features); ``window`` is (n, n_windows - reference_windows, d), one row per
        window after the reference period (its baseline is fitted on all of them).
        """
        w = check_windows(windows, "windows")
        if w.shape[1] <= self.reference_windows:
            raise BaselineError(
                f"windows has {w.shape[1]} windows: more than reference_windows={self.reference_windows} are needed"
            )
        prior = self._prior_for(w)
        feats = _features(w, self.reference_windows, prior, self._regression_for(w, prior), self._level_space_for(w))
        return {"change": feats.change, "level": feats.level_test, "window": feats.per_window}

    def _level_space_for(self, windows: NDArray[np.float64]) -> LevelSpace:
        """The level test's space: the fitted one, else what :meth:`fit` would fit on ``windows``.

        Unfitted, the fitting agents are the split's, less those the reference screen
        removes (the screen's fitting-agent rule depends on nothing else), so that rows
        computed here (e.g. per-node moments merged through the CRDT) and ``fit`` agree.
        """
        fitted: LevelSpace | None = getattr(self, "level_space_", None)
        if fitted is not None:
            return fitted
        if self.config.level_space == "raw":
            return LevelSpace.identity(int(windows.shape[2]))
        fit_rows, _ = self.split(int(windows.shape[0]))
        prior = self._prior_for(windows)
        feats = _features(windows, self.reference_windows, prior, self._regression_for(windows, prior))
        if self.config.reference_screen:
            fit_rows = fit_rows[self._screen_fit_kept(feats, fit_rows)]
        return self._fit_level_space(feats.level[fit_rows])

    def _fit_level_space(self, level: NDArray[np.float64]) -> LevelSpace:
        """``config.level_space`` fitted on the fitting agents' level rows."""
        if self.config.level_space == "raw":
            return LevelSpace.identity(int(level.shape[1]))
        return fit_level_space(level)

    def _prior_for(self, windows: NDArray[np.float64]) -> NDArray[np.float64] | None:
        """The studentising prior: the fitted one, else what :meth:`fit` would compute on ``windows``."""
        if not self.config.studentize:
            return None
        fitted = getattr(self, "studentize_prior_", None)
        if fitted is not None:
            return np.asarray(fitted, dtype=np.float64)
        fit_rows, _ = self.split(int(windows.shape[0]))
        return studentize_prior(windows[fit_rows], self.reference_windows)

    def _regression_for(
        self, windows: NDArray[np.float64], prior: NDArray[np.float64] | None
    ) -> LevelRegression | None:
        """The level regression: the fitted one, else what :meth:`fit` would fit on ``windows``."""
        if self.config.change_model == "difference":
            return None
        fitted = getattr(self, "regression_", None)
        if fitted is not None:
            return fitted
        fit_rows, _ = self.split(int(windows.shape[0]))
        return self._fit_regression(windows[fit_rows], prior)

    def _fit_regression(self, windows: NDArray[np.float64], prior: NDArray[np.float64] | None) -> LevelRegression:
        ref, after = _scaled(windows, self.reference_windows, prior)
        return fit_level_regression(ref, after.mean(axis=1), self.method, self.random_state)

    def _given_baseline(self, name: str, estimate: tuple[ArrayLike, ArrayLike], d: int) -> Baseline:
        try:
            location, covariance = estimate
        except (TypeError, ValueError):
            raise BaselineError(f"estimates[{name!r}] must be a (location, covariance) pair") from None
        what = "the level space has" if name == "level" else "the reference has"
        given_d = np.shape(location)[0] if np.ndim(location) == 1 else None
        if given_d is not None and given_d != d:
            raise BaselineError(f"estimates[{name!r}] has {given_d} features: {what} {d}")
        try:
            base = Baseline.from_estimate(
                location, covariance, feature_names=self._baseline_names(name), kernel_config=self.kernel_config
            )
        except BaselineError as exc:
            raise BaselineError(f"estimates[{name!r}]: {exc}") from None
        return base

    def fit(
        self,
        reference: ArrayLike,
        estimates: Mapping[str, tuple[ArrayLike, ArrayLike]] | None = None,
    ) -> NetworkDetector:
        """Fit on half of a vetted clean fleet's windows (n, n_windows, d); calibrate on the rest.

        Parameters
        ----------
        reference : (n_agents, n_windows, d) windows of the vetted clean reference fleet.
        estimates : optional ``{"change" | "level" | "window": (location, covariance)}``
            computed elsewhere on the fitting agents of :meth:`split` (rows as given by
            :meth:`baseline_features`), e.g. exact pooled moments of per-node summaries
            merged through the CRDT. Baselines given here replace the ``method`` fit; the
            others are fitted as usual. Calibration always uses the held-out agents, so the
            p-values stay valid whatever estimate is given (a poor one costs power only).
        """
        w = check_windows(reference, "reference")
        if w.shape[1] <= self.reference_windows:
            raise BaselineError(
                f"reference has {w.shape[1]} windows: more than reference_windows={self.reference_windows} are needed"
            )
        n = w.shape[0]
        if self.feature_names is not None and len(self.feature_names) != w.shape[2]:
            raise BaselineError(
                f"reference has {w.shape[2]} features but the configuration names {len(self.feature_names)}"
            )
        if n < 40:
            raise BaselineError(f"reference has {n} agents: at least 40 are needed (half fit, half calibrate)")
        given = dict(estimates or {})
        unknown = sorted(set(given) - set(ESTIMATED_BASELINES))
        if unknown:
            raise BaselineError(
                f"estimates has unknown baselines {unknown}: choose from {', '.join(ESTIMATED_BASELINES)}"
            )
        fit_rows, cal_rows = self.split(n)
        train_rows = np.empty(0, dtype=np.intp)
        if self.config.adaptive:
            n_cal = min(self.config.adaptive_calibration, cal_rows.size // 2)
            train_rows, cal_rows = adaptive_split(cal_rows, n_cal, self.random_state)
        self.studentize_prior_: NDArray[np.float64] | None = (
            studentize_prior(w[fit_rows], self.reference_windows) if self.config.studentize else None
        )
        self.regression_: LevelRegression | None = (
            self._fit_regression(w[fit_rows], self.studentize_prior_)
            if self.config.change_model == "predicted"
            else None
        )
        feats = _features(w, self.reference_windows, self.studentize_prior_, self.regression_)
        fit_rows, cal_rows, train_rows = self._screen(feats, fit_rows, cal_rows, train_rows)
        self.level_space_: LevelSpace = self._fit_level_space(feats.level[fit_rows])
        feats = dataclasses.replace(feats, level_test=self.level_space_.transform(feats.level))
        d = w.shape[2]
        rows = {
            "change": feats.change[fit_rows],
            "level": feats.level_test[fit_rows],
            "window": feats.per_window[fit_rows].reshape(-1, d),
        }
        fitted = {
            name: self._given_baseline(name, given[name], rows[name].shape[1])
            if name in given
            else self._baseline(name).fit(rows[name])
            for name in ESTIMATED_BASELINES
        }
        self.n_features_in_ = d
        self.n_windows_ = int(w.shape[1])
        self.change_, self.level_, self.window_ = fitted["change"], fitted["level"], fitted["window"]
        self.estimated_ = tuple(name for name in ESTIMATED_BASELINES if name in given)
        self._kernels: dict[str, KernelLike] = {}
        if self.kernel_factory is not None:
            for name, base in fitted.items():
                self._kernels[name] = self.kernel_factory(base.location_, base.covariance_)
        in_control = self._distances("window", rows["window"])
        self.cusum_ = CusumDetector(in_control, k=self.cusum_k, target_arl=self.target_arl)
        names = tuple(self.feature_names or ())
        self.focus_index_ = names.index(self.focus_feature) if self.focus_feature in names else -1
        self.components_: tuple[str, ...] = COMPONENTS
        if self.focus_index_ >= 0:
            self.components_ = (*COMPONENTS, FAMILY_COMPONENT)
            focus = feats.change[fit_rows, self.focus_index_]
            self.focus_location_ = float(np.median(focus))
            mad = float(np.median(np.abs(focus - self.focus_location_)))
            self.focus_scale_ = max(1.4826 * mad, 1e-12)
        self.threats_: ThreatDirections | None = None
        if self.config.threat_library is not None:
            self.threats_ = self._learn_threats(w.shape[1], self._directed_rows(feats, fit_rows))
            self.components_ = (*self.components_, DIRECTED_COMPONENT)
        fit_scores = self._component_scores(feats, fit_rows)
        self.tiebreak_scale_ = np.array(
            [max(float(np.median(np.abs(fit_scores[name]))), 1e-12) for name in self.components_]
        )
        cal_scores = self._component_scores(feats, cal_rows)
        cal_matrix = np.column_stack([cal_scores[name] for name in self.components_])
        self.calibration_ = {name: np.sort(cal_matrix[:, j]) for j, name in enumerate(self.components_)}
        self._minp = WeightedMinp.build(cal_matrix, self._tiebreak_key(cal_matrix), self._weights())
        self.n_calibration_ = int(cal_matrix.shape[0])
        self._calibration_matrix = cal_matrix
        self.adaptive_null_ = np.empty((0, 0))
        self.adaptive_calibration_ = np.empty((0, 0))
        if self.config.adaptive:
            # class 0 of the classifier: the null training agents and the fitting agents. Both are
            # reference agents disjoint from the calibration ones, so, given them, the calibration
            # and clean judged agents stay exchangeable (the guarantee asks nothing more of class 0).
            # The fitting agents' fixed scores are in-sample (a little smaller than out of sample),
            # which costs the classifier a little; their rows give it what a small reference lacks
            # (tests/test_adaptive.py measures both the gain and the guarantee).
            self.adaptive_null_ = np.vstack(
                [self._agent_rows(feats, train_rows), self._agent_rows(feats, fit_rows, fit_scores)]
            )
            self.adaptive_calibration_ = self._agent_rows(feats, cal_rows, cal_scores)
            self.components_ = (*self.components_, ADAPTIVE_COMPONENT)
        return self

    @staticmethod
    def _directed_rows(feats: _Features, rows: NDArray[np.intp] | slice) -> NDArray[np.float64]:
        """The threat-directed test's agent space: the change and the level in the level test's space."""
        return np.hstack([feats.change[rows], feats.level_test[rows]])

    def _learn_threats(self, n_windows: int, fit_rows: NDArray[np.float64]) -> ThreatDirections:
        """Fisher directions of the library world's compromise types, in this detector's agent space."""
        from tcpkit.detect.simulate import ATTACKS, FEATURE_NAMES

        if self.feature_names != FEATURE_NAMES:
            raise BaselineError(
                f"threat_library needs the simulator's features {FEATURE_NAMES}, "
                f"not {self.feature_names}: set threat_library=None for other data"
            )
        seed = self.config.threat_library
        assert seed is not None
        windows, attack = library_world(seed, n_windows)
        rows = self._directed_rows(self._features(windows), slice(None))
        try:
            directions = fisher_directions(rows, attack, ATTACKS)
        except ThreatError as exc:
            raise BaselineError(f"threat library (seed {seed}): {exc}") from None
        along = fit_rows @ directions.T
        location = np.median(along, axis=0)
        scale = np.maximum(1.4826 * np.median(np.abs(along - location), axis=0), 1e-12)
        return ThreatDirections(ATTACKS, directions, location, scale)

    def _screen(
        self,
        feats: _Features,
        fit_rows: NDArray[np.intp],
        cal_rows: NDArray[np.intp],
        train_rows: NDArray[np.intp],
    ) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.intp]]:
        """Drop the reference agents :mod:`tcpkit.detect.screen` removes (when ``reference_screen`` is on).

        One rule on the fitting agents' change rows and one on their level rows, each applied,
        fixed, to the calibration and null-training agents; ``screened_`` records (removed, of) per
        part and ``screen_removed_rows_`` the removed reference rows (not frozen).
        """
        parts = tuple(zip(SCREEN_PARTS, (fit_rows, cal_rows, train_rows), strict=True))
        self.screen_removed_rows_ = np.empty(0, dtype=np.intp)
        if not self.config.reference_screen:
            self.screened_ = ScreenResult(tuple((name, 0, int(r.size)) for name, r in parts))
            return fit_rows, cal_rows, train_rows
        kept = [np.ones(r.size, dtype=bool) for _, r in parts]
        for rule, kept_fit, block in self._screen_rules(feats, fit_rows):
            kept[0] &= kept_fit
            kept[1] &= rule.passes(block[cal_rows])
            kept[2] &= rule.passes(block[train_rows])
        self.screened_ = ScreenResult(
            tuple((name, int(r.size - k.sum()), int(r.size)) for (name, r), k in zip(parts, kept, strict=True))
        )
        self.screen_removed_rows_ = np.sort(np.concatenate([r[~k] for (_, r), k in zip(parts, kept, strict=True)]))
        fit_rows, cal_rows, train_rows = (r[k] for (_, r), k in zip(parts, kept, strict=True))
        if fit_rows.size < 20 or cal_rows.size < 20:
            raise BaselineError(
                f"the reference screen left {fit_rows.size} fitting and {cal_rows.size} calibration agents: "
                "at least 20 of each are needed (is most of the reference one planted cluster?)"
            )
        return fit_rows, cal_rows, train_rows

    def _screen_rules(
        self, feats: _Features, fit_rows: NDArray[np.intp]
    ) -> list[tuple[ReferenceScreen, NDArray[np.bool_], NDArray[np.float64]]]:
        """(rule, fitting agents it keeps, block) for the change and the level rows.

        Each block on its own: a robust fit breaks down sooner in 2 d dimensions.
        """
        out = []
        for block in (feats.change, feats.level):
            rule, kept_fit = fit_screen(block[fit_rows], random_state=self.random_state)
            out.append((rule, np.asarray(kept_fit, dtype=bool), block))
        return out

    def _screen_fit_kept(self, feats: _Features, fit_rows: NDArray[np.intp]) -> NDArray[np.bool_]:
        """Which fitting agents the reference screen keeps (the rule fitted on them alone)."""
        kept = np.ones(fit_rows.size, dtype=bool)
        for _, kept_fit, _ in self._screen_rules(feats, fit_rows):
            kept &= kept_fit
        return kept

    # -- the fitted state as plain arrays (what PRODUCTION freezes) ------------------------

    def to_arrays(self) -> dict[str, NDArray[Any]]:
        """Every fitted value scoring needs, as numeric or unicode arrays (no pickle).

        Saved with ``numpy.savez`` and loaded with ``allow_pickle=False``, the arrays rebuild
        an equivalent detector through :meth:`from_arrays` (same scores, p-values and
        decisions, bit for bit). The configuration travels with them as canonical JSON.
        """
        self._check_fitted()
        out: dict[str, NDArray[Any]] = {
            "format": np.array("tcpkit.network_detector/1"),
            "config": np.array(self.config.to_json()),
            "n_features_in": np.array(self.n_features_in_, dtype=np.int64),
            "n_windows": np.array(self.n_windows_, dtype=np.int64),
            "components": np.array(self.components_, dtype=np.str_),
            "estimated": np.array(self.estimated_, dtype=np.str_),
            "cusum_reference": self.cusum_.reference_,
            "cusum_h": np.array(self.cusum_.h_, dtype=np.float64),
            "tiebreak_scale": np.asarray(self.tiebreak_scale_, dtype=np.float64),
            "calibration_matrix": np.asarray(self._calibration_matrix, dtype=np.float64),
            "adaptive_null": np.asarray(self.adaptive_null_, dtype=np.float64),
            "adaptive_calibration": np.asarray(self.adaptive_calibration_, dtype=np.float64),
            "studentize_prior": np.asarray(
                self.studentize_prior_ if self.studentize_prior_ is not None else np.zeros(0), dtype=np.float64
            ),
            "regression_intercept": np.asarray(
                self.regression_.intercept if self.regression_ is not None else np.zeros(0), dtype=np.float64
            ),
            "regression_coef": np.asarray(
                self.regression_.coef if self.regression_ is not None else np.zeros((0, 0)), dtype=np.float64
            ),
            "screened": self.screened_.as_array(),
            "level_space": self.level_space_.as_array(),
            "focus": np.array(
                [self.focus_index_, getattr(self, "focus_location_", 0.0), getattr(self, "focus_scale_", 1.0)],
                dtype=np.float64,
            ),
        }
        threats = getattr(self, "threats_", None)
        if threats is not None:
            out["threat_attacks"] = np.array(threats.attacks, dtype=np.str_)
            out["threat_directions"] = np.asarray(threats.directions, dtype=np.float64)
            out["threat_location"] = np.asarray(threats.location, dtype=np.float64)
            out["threat_scale"] = np.asarray(threats.scale, dtype=np.float64)
        for name in ESTIMATED_BASELINES:
            base: Baseline = getattr(self, f"{name}_")
            out[f"{name}_location"] = base.location_
            out[f"{name}_covariance"] = base.covariance_
        return out

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, NDArray[Any]], *, kernel_factory: KernelFactory | None = None
    ) -> NetworkDetector:
        """The fitted detector that :meth:`to_arrays` described (the inverse, validated)."""
        try:
            fmt = str(np.asarray(arrays["format"]))
            if fmt != "tcpkit.network_detector/1":
                raise BaselineError(f"model format {fmt!r} is not tcpkit.network_detector/1")
            text = str(np.asarray(arrays["config"]))
            config = DetectorConfig.from_json(text)
            stored = json.loads(text)
            if "studentize" not in stored:  # a model frozen before the setting existed
                config = config.replace(studentize=False)
            if "change_model" not in stored:  # frozen before the level regression existed
                config = config.replace(change_model="difference")
            if "change_weight" not in stored:  # frozen before the weighted min-p existed
                config = config.replace(change_weight=1)
            det = cls(config, kernel_factory=kernel_factory)
            d = int(arrays["n_features_in"])
            det.n_features_in_ = d
            det.n_windows_ = int(arrays["n_windows"])
            det.components_ = tuple(str(c) for c in np.asarray(arrays["components"]))
            det.estimated_ = tuple(str(c) for c in np.asarray(arrays["estimated"]))
            if "level_space" in arrays:  # models frozen before the level space existed use the raw level
                det.level_space_ = LevelSpace.from_array(np.asarray(arrays["level_space"]), d)
            elif config.level_space == "raw":
                det.level_space_ = LevelSpace.identity(d)
            else:
                raise BaselineError(f"the model has no level_space array but its level_space is {config.level_space!r}")
            if config.level_space == "raw" and not det.level_space_.is_identity:
                raise BaselineError("the model's level space is transformed but its level_space setting is 'raw'")
            for name in ESTIMATED_BASELINES:
                width = len(det.level_space_.columns) if name == "level" else d
                base = Baseline.from_estimate(
                    arrays[f"{name}_location"],
                    arrays[f"{name}_covariance"],
                    feature_names=det._baseline_names(name),
                    kernel_config=det.kernel_config,
                )
                if base.n_features_in_ != width:
                    raise BaselineError(f"{name} baseline has {base.n_features_in_} features, the model {width}")
                setattr(det, f"{name}_", base)
            det._kernels = {}
            if kernel_factory is not None:
                for name in ESTIMATED_BASELINES:
                    b: Baseline = getattr(det, f"{name}_")
                    det._kernels[name] = kernel_factory(b.location_, b.covariance_)
            det.cusum_ = CusumDetector(
                np.asarray(arrays["cusum_reference"], dtype=np.float64),
                k=config.cusum_k,
                h=float(arrays["cusum_h"]),
                target_arl=config.target_arl,
            )
            focus = np.asarray(arrays["focus"], dtype=np.float64)
            det.focus_index_ = int(focus[0])
            if det.focus_index_ >= 0:
                det.focus_location_, det.focus_scale_ = float(focus[1]), float(focus[2])
            det.studentize_prior_ = None
            if config.studentize:
                prior = np.asarray(arrays["studentize_prior"], dtype=np.float64)
                if prior.shape != (d,) or not np.all(np.isfinite(prior)) or np.any(prior <= 0):
                    raise BaselineError(
                        f"studentize_prior has shape {prior.shape}: expected {d} positive finite variances"
                    )
                det.studentize_prior_ = prior
            det.regression_ = None
            if config.change_model == "predicted":
                det.regression_ = LevelRegression(
                    np.asarray(arrays["regression_intercept"], dtype=np.float64),
                    np.asarray(arrays["regression_coef"], dtype=np.float64),
                )
                if det.regression_.intercept.size != d:
                    raise BaselineError(
                        f"the level regression has {det.regression_.intercept.size} features, the model {d}"
                    )
            screened = np.asarray(arrays["screened"], dtype=np.int64) if "screened" in arrays else np.zeros((0, 2))
            if screened.ndim != 2 or screened.shape[1] != 2 or screened.shape[0] not in (0, len(SCREEN_PARTS)):
                raise BaselineError(f"screened has shape {screened.shape}: expected ({len(SCREEN_PARTS)}, 2)")
            det.screened_ = ScreenResult(
                tuple((name, int(r), int(of)) for name, (r, of) in zip(SCREEN_PARTS, screened, strict=False))
            )
            det.threats_ = None
            if (DIRECTED_COMPONENT in det.components_) != (config.threat_library is not None):
                raise BaselineError("the model's components and its threat_library setting disagree")
            if config.threat_library is not None:
                try:
                    det.threats_ = ThreatDirections(
                        tuple(str(a) for a in np.asarray(arrays["threat_attacks"]).reshape(-1)),
                        np.asarray(arrays["threat_directions"], dtype=np.float64),
                        np.asarray(arrays["threat_location"], dtype=np.float64),
                        np.asarray(arrays["threat_scale"], dtype=np.float64),
                    )
                except ThreatError as exc:
                    raise BaselineError(f"the model's threat directions: {exc}") from None
                width = d + len(det.level_space_.columns)
                if det.threats_.directions.shape[1] != width:
                    raise BaselineError(
                        f"threat directions have {det.threats_.directions.shape[1]} columns, the model {width}"
                    )
            det.tiebreak_scale_ = np.asarray(arrays["tiebreak_scale"], dtype=np.float64)
            cal = np.asarray(arrays["calibration_matrix"], dtype=np.float64)
            n_fixed = len(det._fixed_components())
            if cal.ndim != 2 or cal.shape[1] != n_fixed or det.tiebreak_scale_.size != cal.shape[1]:
                raise BaselineError(f"calibration matrix has shape {cal.shape}: expected (n, {n_fixed})")
            if not np.all(np.isfinite(cal)):
                raise BaselineError("calibration matrix contains NaN or infinite values")
            det.adaptive_null_, det.adaptive_calibration_ = np.empty((0, 0)), np.empty((0, 0))
            adaptive_last = bool(det.components_) and det.components_[-1] == ADAPTIVE_COMPONENT
            if adaptive_last != config.adaptive or det.components_.count(ADAPTIVE_COMPONENT) > 1:
                raise BaselineError("the model's components and its adaptive setting disagree")
            if config.adaptive:
                width = 2 * d + n_fixed
                null = np.asarray(arrays["adaptive_null"], dtype=np.float64)
                acal = np.asarray(arrays["adaptive_calibration"], dtype=np.float64)
                if null.ndim != 2 or null.shape[1] != width or acal.shape != (cal.shape[0], width):
                    raise BaselineError(
                        f"adaptive rows have shapes {null.shape} and {acal.shape}: expected (n, {width}) "
                        f"and ({cal.shape[0]}, {width})"
                    )
                if not (np.all(np.isfinite(null)) and np.all(np.isfinite(acal))):
                    raise BaselineError("adaptive rows contain NaN or infinite values")
                det.adaptive_null_, det.adaptive_calibration_ = null, acal
        except KeyError as exc:
            raise BaselineError(f"the model has no array {exc.args[0]!r}: not a NetworkDetector model") from None
        except (TypeError, ValueError) as exc:
            if isinstance(exc, BaselineError):
                raise
            raise BaselineError(f"the model is malformed: {exc}") from None
        fixed = det._fixed_components()
        det.calibration_ = {name: np.sort(cal[:, j]) for j, name in enumerate(fixed)}
        det._minp = WeightedMinp.build(cal, det._tiebreak_key(cal), det._weights()[: len(fixed)])
        det.n_calibration_ = int(cal.shape[0])
        det._calibration_matrix = cal
        return det

    def _distances(self, name: str, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """Squared distances to baseline ``name``: the injected kernel when given, else the Baseline's."""
        kernel = self._kernels.get(name)
        if kernel is None:
            base: Baseline = getattr(self, f"{name}_")
            return np.asarray(base.mahalanobis(X), dtype=np.float64)
        return np.asarray(kernel.squared_distances(np.ascontiguousarray(X, dtype=np.float64)), dtype=np.float64)

    def _weights(self) -> tuple[int, ...]:
        """Min-p weight of each component, in ``components_`` order (see ``change_weight`` and ``level_weight``)."""
        weight = {
            "change": self.config.change_weight,
            "level": self.config.level_weight,
            ADAPTIVE_COMPONENT: self.config.adaptive_weight,
            DIRECTED_COMPONENT: self.config.threat_weight,
        }
        return tuple(weight.get(name, 1) for name in self.components_)

    def _tiebreak_key(self, scores: NDArray[np.float64]) -> NDArray[np.float64]:
        """Fixed continuous key (larger = more extreme) that breaks ties in min-p."""
        return np.asarray(np.log1p(np.maximum(scores, 0.0) / self.tiebreak_scale_).sum(axis=1))

    def _window_cusum(self, per_window: NDArray[np.float64]) -> CusumResult:
        """CUSUM over the (n_agents, n_after, d) single-window changes, scored by the window baseline."""
        stream = self._distances("window", per_window.reshape(-1, per_window.shape[2]))
        return self.cusum_.run(stream.reshape(per_window.shape[:2]))

    def _component_scores(
        self, feats: _Features, rows: NDArray[np.intp] | slice, cusum: CusumResult | None = None
    ) -> dict[str, NDArray[np.float64]]:
        """Raw component scores of ``rows``; ``cusum`` is their CUSUM result when already run."""
        change = self._distances("change", feats.change[rows])
        level = self._distances("level", feats.level_test[rows])
        if cusum is None:
            cusum = self._window_cusum(feats.per_window[rows])
        out = {"change": change, "level": level, "cusum": cusum.max_statistic}
        if self.focus_index_ >= 0:
            focus = feats.change[rows, self.focus_index_]
            out[FAMILY_COMPONENT] = (focus - self.focus_location_) / self.focus_scale_
        if self.threats_ is not None:
            out[DIRECTED_COMPONENT] = self.threats_.score(self._directed_rows(feats, rows))
        return out

    def cusum(self, windows: ArrayLike) -> CusumResult:
        """CUSUM paths over the windows after the reference period (window 0 = first after it)."""
        self._check_fitted()
        w = check_windows(windows, "windows", self.n_features_in_)
        return self._window_cusum(self._features(w).per_window)

    def agent_matrix(self, windows: ArrayLike) -> NDArray[np.float64]:
        """Per agent one row: its change, its level and each component's score.

        The inputs of an adaptive score (:mod:`tcpkit.detect.adaptive`). Distances enter as
        ``log1p`` (the family score, signed, as it is). Every column is a function of the
        agent's own windows and the fitted state alone, so the rows of clean agents stay
        exchangeable. Rows of the fitting agents are in-sample (their distances are
        smaller): keep them out of an adaptive score's training and calibration.
        """
        self._check_fitted()
        w = check_windows(windows, "windows", self.n_features_in_)
        return self._agent_rows(self._features(w), slice(None))

    def _agent_rows(
        self,
        feats: _Features,
        rows: NDArray[np.intp] | slice,
        scores: Mapping[str, NDArray[np.float64]] | None = None,
    ) -> NDArray[np.float64]:
        """:meth:`agent_matrix` of ``rows`` from computed features (and their fixed scores, when known)."""
        fixed = self._fixed_components()
        if scores is None:
            scores = self._component_scores(feats, rows)
        columns = [
            scores[name] if name in SIGNED_COMPONENTS else np.log1p(np.maximum(scores[name], 0.0))
            for name in fixed
        ]
        return np.hstack([feats.change[rows], feats.level[rows], np.column_stack(columns)])

    def _fixed_components(self) -> tuple[str, ...]:
        """The tests with fixed score functions (every component but the adaptive one)."""
        return tuple(name for name in self.components_ if name != ADAPTIVE_COMPONENT)

    def _features(self, windows: NDArray[np.float64]) -> _Features:
        """The fitted detector's per-agent features of ``windows``."""
        return _features(windows, self.reference_windows, self.studentize_prior_, self.regression_, self.level_space_)

    def _explain(self, rows: NDArray[np.intp], which: NDArray[np.intp], feats: _Features) -> tuple[Explanation, ...]:
        """Explanations of the flagged ``rows``, in row order, one batched solve per baseline.

        A level alarm is explained against the level baseline, in the level test's space (its
        kept features, each transformed monotonically: directions hold, sizes are in the
        transformed units); every other one (change, CUSUM, family: all changes) against the
        change baseline.
        """
        by_level = np.asarray(self.components_, dtype=object)[which[rows]] == "level"
        out: dict[int, Explanation] = {}
        for mask, base, x in ((by_level, self.level_, feats.level_test), (~by_level, self.change_, feats.change)):
            for e in explain(x, base.location_, base.covariance_, rows[mask], base.feature_names_):
                out[e.index] = e
        return tuple(out[int(r)] for r in rows)

    def _adaptive_combined(
        self, feats: _Features, scores: Mapping[str, NDArray[np.float64]], matrix: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """(combined p-values, adaptive p-values, adaptive scores) of the judged agents.

        The adaptive score is learned from this batch (:func:`tcpkit.detect.adaptive.adaptive_pvalues`):
        a symmetric function of the calibration agents plus the judged ones, so the weighted
        min-p over all tests stays exactly full-conformal. Its tie-break term is scaled by
        the pooled set's median, which is symmetric in it too.
        """
        test_rows = self._agent_rows(feats, slice(None), scores)
        res = adaptive_pvalues(
            self.adaptive_null_,
            self.adaptive_calibration_,
            test_rows,
            model=self.config.adaptive_model,
            random_state=self.random_state,
        )
        pooled = np.concatenate([res.calibration_scores, res.test_scores])
        low = float(pooled.min())
        scale = max(float(np.median(pooled - low)), 1e-12)

        def key(m: NDArray[np.float64]) -> NDArray[np.float64]:
            return self._tiebreak_key(m[:, :-1]) + np.log1p((m[:, -1] - low) / scale)

        cal_full = np.column_stack([self._calibration_matrix, res.calibration_scores])
        test_full = np.column_stack([matrix, res.test_scores])
        minp = WeightedMinp.build(cal_full, key(cal_full), self._weights())
        return minp.pvalues(test_full, key(test_full)), res.pvalues, res.test_scores

    @property
    def smallest_pvalue_(self) -> float:
        """The smallest p-value :meth:`detect` can give: ``1 / (n_calibration_ + 1)`` (its resolution)."""
        self._check_fitted()
        return 1.0 / (self.n_calibration_ + 1.0)

    def _check_fitted(self) -> None:
        if not hasattr(self, "calibration_"):
            raise BaselineError("this NetworkDetector is not fitted: call fit(reference_windows) first")

    def detect(self, windows: ArrayLike, alpha: float | None = None, fdr: str | None = None) -> DetectionResult:
        """Combined conformal p-values, BH decisions and explanations for every agent.

        ``alpha`` and ``fdr`` default to the configuration's (pass them only to explore).

        ``components`` of the result hold ``p_change``, ``p_level``, ``p_cusum`` and ``p_family`` when used (the
        per-test conformal p-values), ``alarm_window`` (first CUSUM alarm after the
        reference period, -1 if none) and the three raw scores.
        """
        self._check_fitted()
        alpha = _check_alpha(self.config.alpha if alpha is None else alpha)
        fdr = self.config.fdr if fdr is None else fdr
        w = check_windows(windows, "windows", self.n_features_in_)
        if w.shape[1] != self.n_windows_:
            raise BaselineError(
                f"windows has {w.shape[1]} windows per agent but the reference had {self.n_windows_}: "
                "the calibration is only exchangeable for equal lengths"
            )
        feats = self._features(w)
        cusum = self._window_cusum(feats.per_window)
        scores = self._component_scores(feats, slice(None), cusum)
        fixed = self._fixed_components()
        p = {
            name: conformal_pvalues(scores[name], self.calibration_[name], check_sorted=False)
            for name in fixed
        }
        matrix = np.column_stack([scores[name] for name in fixed])
        if ADAPTIVE_COMPONENT in self.components_:
            combined, p[ADAPTIVE_COMPONENT], scores[ADAPTIVE_COMPONENT] = self._adaptive_combined(
                feats, scores, matrix
            )
        else:
            combined = self._minp.pvalues(matrix, self._tiebreak_key(matrix))
        min_p = np.minimum.reduce([p[name] for name in self.components_])
        n_cal = self.n_calibration_
        if fdr == "none" and n_cal + 1 < 1.0 / alpha:
            raise BaselineError(
                f"the reference fleet gave {n_cal} calibration agents: at alpha={alpha} at least "
                f"{int(np.ceil(1.0 / alpha))} are needed"
            )
        flags, q = decide(combined, alpha, fdr)
        rows = np.flatnonzero(flags)
        # Explain with the test that flagged: the smallest component p-value.
        which = np.argmin(np.column_stack([p[name] for name in self.components_]), axis=1)
        explanations = self._explain(rows, which, feats)
        components: dict[str, NDArray[Any]] = {f"p_{name}": p[name] for name in self.components_}
        components.update({f"score_{name}": scores[name] for name in self.components_})
        components["alarm_window"] = cusum.alarm_window
        components["explained_by"] = np.asarray(self.components_, dtype=object)[which]
        return DetectionResult(
            flags, combined, q, -np.log10(min_p), tuple(explanations), alpha, fdr, "conformal-minp", components
        )

