"""Per-feature explanations of a Mahalanobis score: which features made an agent stand out.

Two views, both against the baseline's location ``mu`` and covariance ``S``:

* ``contributions``: ``c_j = (x - mu)_j * [S^-1 (x - mu)]_j``. They sum exactly to the
  squared distance, so they say how the score splits over features once correlations
  are accounted for; a negative ``c_j`` means that feature's deviation is *expected*
  given the others (it lowers the score).
* ``z``: the marginal standardised deviation ``(x - mu)_j / sqrt(S_jj)``. For an
  agent's mean behaviour this is the effect size (Cohen's d) of the agent against the
  baseline population in that feature, readable without the covariance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Explanation:
    """Why one agent was flagged.

    Attributes
    ----------
    index : the agent's row in the scored input.
    score : its squared Mahalanobis distance (sum of ``contributions``).
    contributions : (d,) per-feature shares of ``score``.
    z : (d,) per-feature standardised deviations (Cohen's d against the baseline).
    feature_names : the names of the d features.
    """

    index: int
    score: float
    contributions: NDArray[np.float64]
    z: NDArray[np.float64]
    feature_names: tuple[str, ...]

    def top(self, k: int = 3) -> list[tuple[str, float, float]]:
        """The ``k`` features with the largest contributions: (name, contribution, z)."""
        order = np.argsort(-self.contributions)[:k]
        return [
            (self.feature_names[j], float(self.contributions[j]), float(self.z[j])) for j in order
        ]

    def __str__(self) -> str:
        parts = ", ".join(f"{name} {c:+.1f} (z={z:+.1f})" for name, c, z in self.top())
        return f"agent {self.index}: d2={self.score:.1f}; {parts}"


def explain(
    X: NDArray[np.floating],
    location: NDArray[np.float64],
    covariance: NDArray[np.float64],
    rows: NDArray[np.intp],
    feature_names: tuple[str, ...],
) -> tuple[Explanation, ...]:
    """Explanations for the given ``rows`` of ``X`` (already validated, (n, d) float32 or float64)."""
    if rows.size == 0:
        return ()
    diff = X[rows] - location
    solved = np.linalg.solve(covariance, diff.T).T
    contributions = diff * solved
    z = diff / np.sqrt(np.diag(covariance))
    return tuple(
        Explanation(
            index=int(r),
            score=float(contributions[i].sum()),
            contributions=contributions[i],
            z=z[i],
            feature_names=feature_names,
        )
        for i, r in enumerate(rows)
    )
