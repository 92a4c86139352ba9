"""Each agent's expected detection-period mean, predicted from its own reference mean.

Why
---
A compromise shows as a detection-period mean ``m_i`` that differs from what agent
``i`` would have shown honestly. Two simple predictions of that honest value each throw
information away:

* the agent's own reference mean ``r_i`` (the plain *change* ``m_i - r_i``) treats the
  reference mean as exact, so the noise of a few reference windows enters every change
  in full;
* the population's typical value (the *level*) ignores that honest agents differ.

The best linear prediction uses both: ``E[m | r] = mu_m + B (r - mu_r)`` with
``B = S_mr S_rr^-1`` from the joint covariance of ``(r, m)`` over agents. Where agents
differ much more than their window noise, ``B`` is near the identity (the change);
where they hardly differ, ``B`` is near zero (the level); in between, and feature by
feature with their correlations, it weighs the two as a Gaussian model's conditional
mean does. The residual ``m - E[m | r]`` is then what a detector scores: under a
Gaussian model of honest agents its Mahalanobis distance is the likelihood-ratio
statistic for a shift after the reference period given everything before it.

How much this gains in a given world is measured, not assumed: ``python -m
tcpkit.detect.worldcheck --change-model difference`` runs the detector with the plain change
for comparison.

The joint covariance comes from a robust :class:`~tcpkit.detect.baseline.Baseline` fit
(OGK or MCD), so compromised agents among the fitted ones do not bend ``B``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tcpkit.detect.baseline import Baseline, BaselineError

__all__ = ["LevelRegression", "fit_level_regression"]


@dataclass(frozen=True, eq=False)
class LevelRegression:
    """``E[m | r] = intercept + r @ coef.T``: the honest detection mean given the reference mean.

    Attributes
    ----------
    intercept : (d,) float64
    coef : (d, d) float64, ``coef[j, l]`` the weight of reference feature ``l`` in the
        prediction of detection feature ``j``.
    """

    intercept: NDArray[np.float64]
    coef: NDArray[np.float64]

    def __post_init__(self) -> None:
        intercept = np.asarray(self.intercept, dtype=np.float64)
        coef = np.asarray(self.coef, dtype=np.float64)
        d = intercept.size
        if intercept.shape != (d,) or coef.shape != (d, d):
            raise BaselineError(
                f"a level regression needs intercept (d,) and coef (d, d): got {intercept.shape} and {coef.shape}"
            )
        if not (np.all(np.isfinite(intercept)) and np.all(np.isfinite(coef))):
            raise BaselineError("the level regression contains NaN or infinite values")
        object.__setattr__(self, "intercept", intercept)
        object.__setattr__(self, "coef", coef)

    def predict(self, reference_mean: NDArray[np.float64]) -> NDArray[np.float64]:
        """Predicted honest detection mean, same shape as ``reference_mean`` (..., d)."""
        return np.asarray(self.intercept + reference_mean @ self.coef.T, dtype=np.float64)

    @classmethod
    def identity(cls, d: int) -> LevelRegression:
        """The plain change: ``E[m | r] = r``."""
        return cls(np.zeros(d), np.eye(d))


def fit_level_regression(
    reference_mean: NDArray[np.float64],
    detection_mean: NDArray[np.float64],
    method: str = "ogk",
    random_state: int = 0,
) -> LevelRegression:
    """Fit ``E[m | r]`` from a robust joint covariance of ``(r, m)`` over agents (n, d) each.

    Needs more agents than ``2 d``; a singular joint fit falls back as
    :class:`~tcpkit.detect.baseline.Baseline` does (a ridge), so ``B`` stays finite.
    """
    r = np.asarray(reference_mean, dtype=np.float64)
    m = np.asarray(detection_mean, dtype=np.float64)
    if r.ndim != 2 or r.shape != m.shape:
        raise BaselineError(f"reference and detection means must be (n, d) alike: got {r.shape} and {m.shape}")
    n, d = r.shape
    if n <= 2 * d:
        raise BaselineError(f"{n} agents cannot fit a {d}-feature level regression: more than {2 * d} are needed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a singular fallback is still a valid (if weaker) prediction
        joint = Baseline(method, random_state=random_state).fit(np.hstack([r, m]))
    mu, s = joint.location_, joint.covariance_
    s_rr, s_mr = s[:d, :d], s[d:, :d]
    coef = np.asarray(np.linalg.solve(s_rr, s_mr.T).T, dtype=np.float64)
    intercept = mu[d:] - coef @ mu[:d]
    return LevelRegression(intercept, coef)
