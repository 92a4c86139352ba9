"""Behavioural baseline: fit, score, calibrated p-values, FDR control and explanations.

A :class:`Baseline` is a scikit-learn style estimator. ``fit(X)`` estimates a location
and covariance (robustly by default, see :mod:`tcpkit.detect.covariance`) and builds
the one scoring kernel (:class:`tcpkit.detect.kernel.WhiteningKernel`); ``mahalanobis``
returns squared distances; ``pvalues`` turns them into p-values under a stated
assumption; ``detect`` controls the false discovery rate across agents with
Benjamini-Hochberg and explains each flag.

P-values and their assumptions
------------------------------
``method="conformal"`` (default)
    ``p = (1 + #{cal >= s}) / (n_cal + 1)`` against the scores of a held-out clean
    calibration set given to :meth:`Baseline.calibrate`. Valid (``P(p <= a) <= a``)
    whenever a clean agent's score and the calibration scores are exchangeable: the
    calibration rows must come from the same population as the honest agents and
    must not have been used to fit the baseline. No distributional assumption.
``method="chi2"``
    ``P(chi2_d >= s)``: exact only if features are multivariate Gaussian with the
    fitted location and covariance. On real, skewed or discrete features it is
    anti-conservative (false alarms several times the nominal rate).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tcpkit.detect.covariance import (
    DEFAULT_MAX_FIT_ROWS,
    METHODS,
    SingularDataWarning,
    estimate_covariance,
)
from tcpkit.detect.explain import Explanation, explain
from tcpkit.detect.kernel import WhiteningKernel
from tcpkit.detect.kernel_config import KernelConfig, KernelConfigError
from tcpkit.detect.pvalues import bh_reject, chi2_sf, conformal_pvalues
from tcpkit.detect.sequential import CusumDetector, CusumResult

__all__ = [
    "Baseline",
    "BaselineError",
    "CusumDetector",
    "CusumResult",
    "DetectionResult",
    "Explanation",
    "SingularDataWarning",
    "check_matrix",
    "check_scoring_matrix",
    "check_windows",
]

PVALUE_METHODS = ("conformal", "chi2")
FDR_METHODS = ("bh", "none")


class BaselineError(ValueError):
    """Bad input to a baseline, or a request it cannot answer honestly."""


def check_windows(windows: ArrayLike, name: str, n_features: int | None = None) -> NDArray[np.float64]:
    """Validate (n_agents, n_windows, n_features) finite windows once, at the boundary; return float64."""
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


def check_matrix(X: ArrayLike, name: str = "X", n_features: int | None = None) -> NDArray[np.float64]:
    """Validate a 2-D finite float matrix once, at the boundary; return it as float64.

    Raises :class:`BaselineError` naming the offending rows or columns.
    """
    try:
        data = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BaselineError(f"{name} is not a numeric array: {exc}") from None
    if data.ndim != 2:
        raise BaselineError(f"{name} has shape {data.shape}: expected a 2-D (n_agents, n_features) array")
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise BaselineError(f"{name} has shape {data.shape}: it is empty")
    if n_features is not None and data.shape[1] != n_features:
        raise BaselineError(
            f"{name} has {data.shape[1]} features: the baseline was fitted on {n_features}"
        )
    bad = ~np.isfinite(data)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        cols = np.unique(np.nonzero(bad)[1])
        shown = ", ".join(str(r) for r in rows[:5]) + (" ..." if rows.size > 5 else "")
        raise BaselineError(
            f"{name} contains NaN or infinite values in rows {shown} "
            f"(columns {', '.join(str(c) for c in cols[:5])})"
        )
    return data


def check_scoring_matrix(X: ArrayLike, name: str, n_features: int) -> NDArray[np.floating]:
    """Check the shape and type of rows to score, without copying float32/float64 arrays.

    Finiteness is not checked here: the kernel checks it inside its chunk loop (one
    pass over the data, not two) and names the offending rows. Other numeric input
    (integers, float16, nested lists) becomes float64.

    Raises :class:`BaselineError` naming what is wrong.
    """
    if isinstance(X, np.ndarray) and X.dtype in (np.float32, np.float64):
        data = X
    else:
        try:
            data = np.asarray(X)
            if data.dtype.kind not in "biuf":
                raise TypeError(f"dtype {data.dtype} is not real numbers")
            data = data.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise BaselineError(f"{name} is not a numeric array: {exc}") from None
    if data.ndim != 2:
        raise BaselineError(f"{name} has shape {data.shape}: expected a 2-D (n_agents, n_features) array")
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise BaselineError(f"{name} has shape {data.shape}: it is empty")
    if data.shape[1] != n_features:
        raise BaselineError(
            f"{name} has {data.shape[1]} features: the baseline was fitted on {n_features}"
        )
    return data


def _kernel_config(value: KernelConfig | Mapping[str, Any] | None) -> KernelConfig:
    """The kernel settings of a baseline, validated once (errors as BaselineError)."""
    try:
        return KernelConfig.coerce(value)
    except KernelConfigError as exc:
        raise BaselineError(str(exc)) from None


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float | np.floating) or not 0 < alpha < 1:
        raise BaselineError(f"alpha={alpha!r}: expected a number in (0, 1)")
    return float(alpha)


@dataclass(frozen=True)
class DetectionResult:
    """What :meth:`Baseline.detect` (or a composite detector) decided, agent by agent.

    Attributes
    ----------
    flags : (n,) bool, rejected at FDR level ``alpha``.
    pvalues : (n,) p-values under ``pvalue_method``'s assumption.
    qvalues : (n,) Benjamini-Hochberg adjusted p-values (equal to ``pvalues`` when fdr="none").
    scores : (n,) squared Mahalanobis distances (or the composite's main score).
    explanations : per-feature explanations of the flagged agents, in index order.
    alpha, fdr, pvalue_method : the decision rule used.
    components : optional named per-agent arrays (e.g. the p-values of each test a
        composite detector combined); empty for a single baseline.
    """

    flags: NDArray[np.bool_]
    pvalues: NDArray[np.float64]
    qvalues: NDArray[np.float64]
    scores: NDArray[np.float64]
    explanations: tuple[Explanation, ...]
    alpha: float
    fdr: str
    pvalue_method: str
    components: dict[str, NDArray[Any]] = field(default_factory=dict)

    @property
    def n_flagged(self) -> int:
        return int(self.flags.sum())

    @property
    def flagged(self) -> NDArray[np.intp]:
        """Indices of the flagged agents."""
        return np.flatnonzero(self.flags)

    def summary(self) -> str:
        """A short text summary (statsmodels style)."""
        lines = [
            f"DetectionResult: {self.n_flagged} of {self.flags.size} agents flagged "
            f"(alpha={self.alpha}, fdr={self.fdr}, p-values={self.pvalue_method})"
        ]
        lines += [f"  {e}" for e in self.explanations[:10]]
        if len(self.explanations) > 10:
            lines.append(f"  ... {len(self.explanations) - 10} more")
        return "\n".join(lines)


class Baseline:
    """A behavioural baseline: location and covariance of clean behaviour, and its scores.

    Parameters
    ----------
    method : "mcd" (reweighted FAST-MCD, default), "ogk", "ledoit_wolf" or "empirical".
    support_fraction : MCD's h/n (None: maximal breakdown, about one half).
    random_state : seed for MCD's random starts and subsampling.
    max_fit_rows : robust fits on more rows use a seeded subsample of this size
        (MCD is O(seconds) per 10^4 rows; scoring still covers every row).
    feature_names : names for explanations; default ``x0, x1, ...``.
    kernel_config : the scoring kernel's settings (precision, rows per chunk, threads),
        a :class:`~tcpkit.detect.kernel_config.KernelConfig` or a mapping validated by
        ``KernelConfig.from_mapping``; default ``KernelConfig()``.

    Attributes
    ----------
    location_ : (d,) fitted location.
    covariance_ : (d, d) fitted covariance.
    kernel_ : WhiteningKernel used for every distance.
    n_features_in_ : d.
    method_ : the estimator actually used (``"ledoit_wolf"`` after a singular fallback).
    support_ : bool mask over the fitted rows kept by a reweighted robust fit, or None.
    calibration_scores_ : sorted squared distances of the calibration set (after calibrate).
    """

    def __init__(
        self,
        method: str = "mcd",
        support_fraction: float | None = None,
        random_state: int | None = 0,
        max_fit_rows: int = DEFAULT_MAX_FIT_ROWS,
        feature_names: tuple[str, ...] | list[str] | None = None,
        kernel_config: KernelConfig | Mapping[str, Any] | None = None,
    ) -> None:
        if method not in METHODS:
            raise BaselineError(f"method={method!r} is unknown: choose one of {', '.join(METHODS)}")
        if support_fraction is not None and not 0 < support_fraction <= 1:
            raise BaselineError(f"support_fraction={support_fraction!r}: expected a number in (0, 1]")
        if max_fit_rows < 2:
            raise BaselineError(f"max_fit_rows={max_fit_rows!r}: expected at least 2")
        self.method = method
        self.support_fraction = support_fraction
        self.random_state = random_state
        self.max_fit_rows = int(max_fit_rows)
        self.feature_names = tuple(feature_names) if feature_names is not None else None
        self.kernel_config = _kernel_config(kernel_config)

    # -- fitting ---------------------------------------------------------------------------

    def fit(self, X: ArrayLike) -> Baseline:
        """Estimate location and covariance from ``X`` (n_samples, n_features); returns self."""
        data = check_matrix(X, "X")
        if self.feature_names is not None and len(self.feature_names) != data.shape[1]:
            raise BaselineError(
                f"feature_names has {len(self.feature_names)} names but X has {data.shape[1]} features"
            )
        try:
            estimate = estimate_covariance(
                data,
                self.method,
                support_fraction=self.support_fraction,
                random_state=self.random_state,
                max_fit_rows=self.max_fit_rows,
            )
        except ValueError as exc:
            raise BaselineError(str(exc)) from None
        self._set_estimate(estimate.location, estimate.covariance)
        self.method_ = estimate.method
        self.support_ = estimate.support
        return self

    @classmethod
    def from_estimate(
        cls,
        location: ArrayLike,
        covariance: ArrayLike,
        *,
        feature_names: tuple[str, ...] | list[str] | None = None,
        method: str = "empirical",
        kernel_config: KernelConfig | Mapping[str, Any] | None = None,
    ) -> Baseline:
        """A fitted baseline from a given location and covariance (e.g. merged moments)."""
        loc = np.asarray(location, dtype=np.float64)
        cov = np.asarray(covariance, dtype=np.float64)
        if loc.ndim != 1 or loc.size == 0 or cov.shape != (loc.size, loc.size):
            raise BaselineError(
                f"location has shape {loc.shape} and covariance {cov.shape}: expected (d,) and (d, d)"
            )
        if not (np.all(np.isfinite(loc)) and np.all(np.isfinite(cov))):
            raise BaselineError("location or covariance contains NaN or infinite values")
        if not np.allclose(cov, cov.T, rtol=1e-10, atol=1e-12):
            raise BaselineError("covariance is not symmetric")
        baseline = cls(method=method, feature_names=feature_names, kernel_config=kernel_config)
        if baseline.feature_names is not None and len(baseline.feature_names) != loc.size:
            raise BaselineError(
                f"feature_names has {len(baseline.feature_names)} names but location has {loc.size}"
            )
        baseline._set_estimate(loc, cov)
        baseline.method_ = "given"
        baseline.support_ = None
        return baseline

    def _set_estimate(self, location: NDArray[np.float64], covariance: NDArray[np.float64]) -> None:
        try:
            kernel = WhiteningKernel.from_covariance(location, covariance, self.kernel_config)
        except ValueError as exc:
            raise BaselineError(str(exc)) from None
        self.location_ = np.array(location, dtype=np.float64)
        self.covariance_ = np.array(covariance, dtype=np.float64)
        self.kernel_ = kernel
        self.n_features_in_ = int(self.location_.size)
        if hasattr(self, "calibration_scores_"):
            del self.calibration_scores_

    def _check_fitted(self) -> None:
        if not hasattr(self, "kernel_"):
            raise BaselineError("this Baseline is not fitted: call fit(X) or Baseline.from_estimate first")

    @property
    def feature_names_(self) -> tuple[str, ...]:
        self._check_fitted()
        if self.feature_names is not None:
            return self.feature_names
        return tuple(f"x{j}" for j in range(self.n_features_in_))

    # -- scoring ---------------------------------------------------------------------------

    def _validated(self, X: ArrayLike) -> NDArray[np.float64]:
        self._check_fitted()
        return check_matrix(X, "X", self.n_features_in_)

    def _scores(self, X: ArrayLike) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
        """(rows as scored, squared distances): shape checked here, finiteness in the kernel."""
        self._check_fitted()
        data = check_scoring_matrix(X, "X", self.n_features_in_)
        try:
            return data, self.kernel_.squared_distances(data)
        except ValueError as exc:
            raise BaselineError(str(exc)) from None

    def mahalanobis(self, X: ArrayLike) -> NDArray[np.floating]:
        """Squared Mahalanobis distances of the rows of ``X`` to the baseline.

        Scored in the kernel's precision (``kernel_config``): float32 input stays
        float32 and is returned as float32; no copy of ``X`` is made and the input is
        checked for NaN/inf inside the kernel's chunk loop.

        Raises
        ------
        BaselineError
            If ``X`` is not (n, n_features_in_) numbers, or a row holds NaN/inf (the rows
            are named) or overflows float32.
        """
        return self._scores(X)[1]

    def calibrate(self, X_clean: ArrayLike) -> Baseline:
        """Store the sorted scores of a held-out clean set for conformal p-values; returns self.

        ``X_clean`` must not overlap the rows used in :meth:`fit` and must be clean (in
        deployment: a vetted reference period), otherwise the p-values lose validity
        (overlap) or power (contamination).
        """
        scores = self.mahalanobis(X_clean)
        self.calibration_scores_ = np.sort(scores)
        return self

    def pvalues(self, X: ArrayLike, method: str = "conformal", *, alpha: float | None = None) -> NDArray[np.float64]:
        """P-values of the rows of ``X``: small = unlike the baseline.

        Parameters
        ----------
        method : "conformal" (needs :meth:`calibrate`) or "chi2" (Gaussian assumption).
        alpha : when given with "conformal", refuse if the calibration set is too small
            for any p-value to fall below ``alpha`` (n_cal < 1/alpha).
        """
        scores = self.mahalanobis(X)
        return self._pvalues_from_scores(scores, method, alpha)

    def _pvalues_from_scores(
        self, scores: NDArray[np.floating], method: str, alpha: float | None
    ) -> NDArray[np.float64]:
        if method == "chi2":
            return chi2_sf(scores, self.n_features_in_)
        if method != "conformal":
            raise BaselineError(f"method={method!r} is unknown: choose one of {', '.join(PVALUE_METHODS)}")
        if not hasattr(self, "calibration_scores_"):
            raise BaselineError(
                "conformal p-values need a held-out clean calibration set: call calibrate(X_clean) "
                "or use method='chi2' (Gaussian assumption)"
            )
        n_cal = self.calibration_scores_.size
        if alpha is not None and n_cal < 1.0 / alpha:
            raise BaselineError(
                f"the calibration set has {n_cal} rows: at alpha={alpha} it needs at least "
                f"{int(np.ceil(1.0 / alpha))}, or no p-value can fall below alpha"
            )
        return conformal_pvalues(scores, self.calibration_scores_, check_sorted=False)

    def detect(
        self,
        X: ArrayLike,
        alpha: float = 0.01,
        fdr: str = "bh",
        *,
        method: str = "conformal",
    ) -> DetectionResult:
        """Flag agents whose behaviour departs from the baseline, controlling the FDR.

        Parameters
        ----------
        alpha : FDR level for "bh" (valid under independence or positive dependence of
            the p-values), or the per-agent level for "none".
        fdr : "bh" (Benjamini-Hochberg) or "none" (each agent tested at ``alpha``).
        method : p-value method, see :meth:`pvalues`.
        """
        alpha = _check_alpha(alpha)
        if fdr not in FDR_METHODS:
            raise BaselineError(f"fdr={fdr!r} is unknown: choose one of {', '.join(FDR_METHODS)}")
        data, distances = self._scores(X)
        scores = np.asarray(distances, dtype=np.float64)
        p = self._pvalues_from_scores(scores, method, alpha)
        flags, q = decide(p, alpha, fdr)
        explanations = explain(
            data, self.location_, self.covariance_, np.flatnonzero(flags), self.feature_names_
        )
        return DetectionResult(flags, p, q, scores, explanations, alpha, fdr, method)

    def explain(self, X: ArrayLike, rows: ArrayLike | None = None) -> tuple[Explanation, ...]:
        """Per-feature explanations for ``rows`` of ``X`` (all rows when None)."""
        data = self._validated(X)
        index = np.arange(data.shape[0]) if rows is None else np.asarray(rows, dtype=np.intp).ravel()
        if index.size and (index.min() < 0 or index.max() >= data.shape[0]):
            raise BaselineError(f"rows must lie in [0, {data.shape[0]}): got {index.min()}..{index.max()}")
        return explain(data, self.location_, self.covariance_, index, self.feature_names_)

    def __repr__(self) -> str:
        return (
            f"Baseline(method={self.method!r}, support_fraction={self.support_fraction!r}, "
            f"random_state={self.random_state!r}, kernel_config={self.kernel_config!r})"
        )


def decide(
    pvalues: NDArray[np.float64], alpha: float, fdr: str = "bh"
) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    """Flags and q-values from p-values: BH step-up (fast path, same rejections) or none."""
    if fdr == "none":
        return pvalues <= alpha, pvalues.copy()
    if fdr != "bh":
        raise BaselineError(f"fdr={fdr!r} is unknown: choose one of {', '.join(FDR_METHODS)}")
    flags, q = bh_reject(pvalues, alpha, qvalues=True)
    assert q is not None
    return flags, q
