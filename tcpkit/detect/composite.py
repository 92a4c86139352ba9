"""The whole tcpkit detector over an agent network: change + level + CUSUM, one p-value each.

Honest agents are heterogeneous (each has its own bias, noise and latency), so one
population baseline mixes between-agent differences with compromise. Three tests,
each answering a different question, are therefore run per agent and combined:

``change``
    ``x_i = mean(detection windows) - mean(own reference windows)``. Differencing
    removes the agent's own level, so heterogeneity in level cancels; what remains is
    scored against the covariance of such changes (robust MCD).
``level``
    the agent's mean over *all* its windows against the population of agents (robust
    MCD). Needed for compromises present from the first window (poisoning), which a
    before/after comparison cannot see.
``cusum``
    per window ``w`` after the reference period, the squared distance of
    ``window_w - mean(own reference windows)``; a one-sided CUSUM of its normal scores
    (:class:`tcpkit.detect.sequential.CusumDetector`) catches slow drift; the agent's
    score is the CUSUM maximum.

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
half. The combined statistic is ``min_j p_j``; it is itself calibrated conformally:
the calibration agents' own component p-values are computed leave-one-out, their
``min_j p_j`` form the null distribution, and an agent's final p-value is
``(1 + #{cal min-p <= its min-p}) / (n_cal + 1)``. Assumption: a clean monitored agent
and the calibration agents are exchangeable (same population, same number of windows).
Under it the p-value is valid whatever the dependence between the three tests, and,
unlike Bonferroni, no level is wasted. Benjamini-Hochberg then controls the FDR
across agents; note that conformal p-values are at least ``1 / (n_cal + 1)``, so BH
at level ``q`` over ``m`` agents can flag ``k`` agents only if
``n_cal + 1 >= m / (q k)``: size the reference fleet accordingly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tcpkit.detect.baseline import (
    Baseline,
    BaselineError,
    DetectionResult,
    _check_alpha,
    decide,
)
from tcpkit.detect.explain import explain
from tcpkit.detect.pvalues import conformal_pvalues
from tcpkit.detect.sequential import CusumDetector, CusumResult

COMPONENTS = ("change", "level", "cusum")


class NetworkLike(Protocol):
    """Anything with per-agent windows and a reference period (e.g. SimulatedNetwork)."""

    @property
    def windows(self) -> NDArray[np.float64]: ...

    @property
    def feature_names(self) -> tuple[str, ...]: ...

    @property
    def params(self) -> dict[str, Any]: ...


def _check_windows(windows: ArrayLike, name: str, n_features: int | None = None) -> NDArray[np.float64]:
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim != 3 or min(w.shape) == 0:
        raise BaselineError(f"{name} has shape {w.shape}: expected (n_agents, n_windows, n_features)")
    if n_features is not None and w.shape[2] != n_features:
        raise BaselineError(f"{name} has {w.shape[2]} features: the detector was fitted on {n_features}")
    bad = ~np.isfinite(w)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])[:5].tolist()
        raise BaselineError(f"{name} contains NaN or infinite values (agents {rows})")
    return w


def _loo_pvalues(scores: NDArray[np.float64]) -> NDArray[np.float64]:
    """Leave-one-out conformal p-values of calibration scores among themselves."""
    n = scores.size
    ordered = np.sort(scores)
    at_least = n - np.searchsorted(ordered, scores, side="left")  # includes itself
    return np.asarray(at_least / float(n), dtype=np.float64)  # (1 + #{others >= s}) / ((n-1) + 1)


@dataclass(frozen=True)
class _Features:
    change: NDArray[np.float64]
    level: NDArray[np.float64]
    per_window: NDArray[np.float64]  # (n_agents, n_after, d) window minus own reference mean


def _features(windows: NDArray[np.float64], reference_windows: int) -> _Features:
    ref = windows[:, :reference_windows].mean(axis=1)
    after = windows[:, reference_windows:]
    return _Features(
        change=after.mean(axis=1) - ref,
        level=windows.mean(axis=1),
        per_window=after - ref[:, None, :],
    )


class NetworkDetector:
    """Change + level + CUSUM detector, fitted and calibrated on a vetted clean fleet.

    Parameters
    ----------
    reference_windows : number of leading windows forming each agent's own reference period.
    method : covariance estimator of the three baselines (see :class:`Baseline`). The
        default "ogk" is robust and fits in a fraction of a second where MCD takes
        seconds; since the reference fleet is vetted clean, MCD's higher breakdown
        point buys little here (measured: equal recall on the simulator).
    cusum_k : CUSUM allowance (normal-score units).
    target_arl : in-control average run length (windows) for the CUSUM alarm threshold.
    random_state : seed for the split of the reference fleet and for MCD.
    max_fit_agents : at most this many reference agents fit the baselines (at most half);
        all others calibrate, since conformal resolution grows with the calibration set.
    feature_names : names used in explanations.

    Attributes (after fit)
    ----------------------
    change_ , level_ : fitted :class:`Baseline` for each static test.
    window_ : :class:`Baseline` of single-window changes (for the CUSUM statistic).
    cusum_ : :class:`CusumDetector` with the frozen in-control reference.
    calibration_ : dict of sorted calibration scores per component, and ``"combined"``.
    n_calibration_ : number of calibration agents.
    """

    def __init__(
        self,
        reference_windows: int = 5,
        method: str = "ogk",
        cusum_k: float = 0.5,
        target_arl: float = 500.0,
        random_state: int | None = 0,
        feature_names: tuple[str, ...] | None = None,
        max_fit_agents: int = 1000,
    ) -> None:
        if isinstance(reference_windows, bool) or not isinstance(reference_windows, int | np.integer) or reference_windows < 1:
            raise BaselineError(f"reference_windows={reference_windows!r}: expected a positive integer")
        self.reference_windows = int(reference_windows)
        self.method = method
        self.cusum_k = float(cusum_k)
        self.target_arl = float(target_arl)
        self.random_state = random_state
        self.feature_names = feature_names
        self.max_fit_agents = int(max_fit_agents)

    def _baseline(self) -> Baseline:
        return Baseline(self.method, random_state=self.random_state, feature_names=self.feature_names)

    def fit(self, reference: ArrayLike) -> NetworkDetector:
        """Fit on half of a vetted clean fleet's windows (n, n_windows, d); calibrate on the rest."""
        w = _check_windows(reference, "reference")
        if w.shape[1] <= self.reference_windows:
            raise BaselineError(
                f"reference has {w.shape[1]} windows: more than reference_windows={self.reference_windows} are needed"
            )
        n = w.shape[0]
        if n < 40:
            raise BaselineError(f"reference has {n} agents: at least 40 are needed (half fit, half calibrate)")
        rng = np.random.default_rng(self.random_state)
        order = rng.permutation(n)
        n_fit = min(n // 2, self.max_fit_agents)
        fit_rows, cal_rows = np.sort(order[:n_fit]), np.sort(order[n_fit:])
        feats = _features(w, self.reference_windows)
        d = w.shape[2]
        self.n_features_in_ = d
        self.n_windows_ = int(w.shape[1])
        self.change_ = self._baseline().fit(feats.change[fit_rows])
        self.level_ = self._baseline().fit(feats.level[fit_rows])
        self.window_ = self._baseline().fit(feats.per_window[fit_rows].reshape(-1, d))
        in_control = self.window_.mahalanobis(feats.per_window[fit_rows].reshape(-1, d))
        self.cusum_ = CusumDetector(in_control, k=self.cusum_k, target_arl=self.target_arl)
        cal_scores = self._component_scores(feats, cal_rows)
        self.calibration_ = {name: np.sort(s) for name, s in cal_scores.items()}
        loo = np.column_stack([_loo_pvalues(cal_scores[name]) for name in COMPONENTS])
        self.calibration_["combined"] = np.sort(-loo.min(axis=1))
        self.n_calibration_ = int(cal_rows.size)
        return self

    def _component_scores(
        self, feats: _Features, rows: NDArray[np.intp] | slice
    ) -> dict[str, NDArray[np.float64]]:
        change = self.change_.mahalanobis(feats.change[rows])
        level = self.level_.mahalanobis(feats.level[rows])
        pw = feats.per_window[rows]
        stream = self.window_.mahalanobis(pw.reshape(-1, pw.shape[2])).reshape(pw.shape[:2])
        cusum = self.cusum_.run(stream)
        return {"change": change, "level": level, "cusum": cusum.max_statistic}

    def cusum(self, windows: ArrayLike) -> CusumResult:
        """CUSUM paths over the windows after the reference period (window 0 = first after it)."""
        self._check_fitted()
        w = _check_windows(windows, "windows", self.n_features_in_)
        pw = _features(w, self.reference_windows).per_window
        stream = self.window_.mahalanobis(pw.reshape(-1, pw.shape[2])).reshape(pw.shape[:2])
        return self.cusum_.run(stream)

    def _check_fitted(self) -> None:
        if not hasattr(self, "calibration_"):
            raise BaselineError("this NetworkDetector is not fitted: call fit(reference_windows) first")

    def detect(self, windows: ArrayLike, alpha: float = 0.01, fdr: str = "bh") -> DetectionResult:
        """Combined conformal p-values, BH decisions and explanations for every agent.

        ``components`` of the result hold ``p_change``, ``p_level``, ``p_cusum`` (the
        per-test conformal p-values), ``alarm_window`` (first CUSUM alarm after the
        reference period, -1 if none) and the three raw scores.
        """
        self._check_fitted()
        alpha = _check_alpha(alpha)
        w = _check_windows(windows, "windows", self.n_features_in_)
        if w.shape[1] != self.n_windows_:
            raise BaselineError(
                f"windows has {w.shape[1]} windows per agent but the reference had {self.n_windows_}: "
                "the calibration is only exchangeable for equal lengths"
            )
        feats = _features(w, self.reference_windows)
        scores = self._component_scores(feats, slice(None))
        p = {
            name: conformal_pvalues(scores[name], self.calibration_[name], check_sorted=False)
            for name in COMPONENTS
        }
        min_p = np.minimum.reduce([p[name] for name in COMPONENTS])
        combined = conformal_pvalues(-min_p, self.calibration_["combined"], check_sorted=False)
        n_cal = self.n_calibration_
        if fdr == "none" and n_cal + 1 < 1.0 / alpha:
            raise BaselineError(
                f"the reference fleet gave {n_cal} calibration agents: at alpha={alpha} at least "
                f"{int(np.ceil(1.0 / alpha))} are needed"
            )
        flags, q = decide(combined, alpha, fdr)
        cusum = self.cusum(w)
        rows = np.flatnonzero(flags)
        # Explain with the test that flagged: the smallest component p-value.
        which = np.argmin(np.column_stack([p[name] for name in COMPONENTS]), axis=1)
        explanations = []
        names = self.change_.feature_names_
        for r in rows:
            comp = COMPONENTS[which[r]]
            # a CUSUM alarm is a change too: explain it against the change baseline
            if comp == "level":
                base, x = self.level_, feats.level[[r]]
            else:
                base, x = self.change_, feats.change[[r]]
            (e,) = explain(x, base.location_, base.covariance_, np.array([0]), names)
            explanations.append(e.__class__(int(r), e.score, e.contributions, e.z, names))
        components: dict[str, NDArray[Any]] = {f"p_{name}": p[name] for name in COMPONENTS}
        components.update({f"score_{name}": scores[name] for name in COMPONENTS})
        components["alarm_window"] = cusum.alarm_window
        components["explained_by"] = np.asarray(COMPONENTS, dtype=object)[which]
        return DetectionResult(
            flags, combined, q, -np.log10(min_p), tuple(explanations), alpha, fdr, "conformal-minp", components
        )


def detect_network(
    net: NetworkLike,
    reference: NetworkLike,
    alpha: float = 0.01,
    fdr: str = "bh",
    **detector_args: Any,
) -> DetectionResult:
    """Fit :class:`NetworkDetector` on ``reference`` (vetted clean fleet) and judge ``net``."""
    reference_windows = int(net.params.get("baseline_windows", 5))
    detector = NetworkDetector(
        reference_windows=reference_windows, feature_names=tuple(net.feature_names), **detector_args
    ).fit(reference.windows)
    return detector.detect(net.windows, alpha=alpha, fdr=fdr)
