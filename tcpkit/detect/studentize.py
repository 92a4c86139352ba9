"""Each agent's own window-to-window noise, for per-agent t statistics of its change.

Honest agents differ in how noisy they are, so a raw change (detection mean minus
reference mean) mostly measures an agent's noise: a noisy honest agent moves more than a
quiet compromised one. Dividing each agent's change by its own noise SD (a studentised
change, a per-agent t statistic) puts every agent on one scale. The SD comes from the
agent's own windows, shrunk towards the population's typical variance (few windows give
a noisy estimate). Every function here is a function of one agent's windows and a prior
fitted elsewhere, so agents that are exchangeable stay exchangeable after the transform.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["own_sd", "studentize_prior", "window_variances"]


def window_variances(windows: NDArray[np.float64], reference_windows: int) -> NDArray[np.float64]:
    """Each agent's window-to-window variance per feature, (n_agents, d), and why this estimator.

    Half the mean squared successive difference (von Neumann) of the windows, taken within
    the reference period and within the detection period, never across their boundary:
    a step between the periods (what the change test looks for) or a benign step inside
    one (a regime change) adds one term of many, and a slow drift adds only its squared
    slope, whereas the plain variance of the windows would absorb both. Using the
    detection windows too gives ``n_windows - 2`` terms instead of ``K - 1``.
    """
    k = reference_windows
    diffs = [np.diff(part, axis=1) for part in (windows[:, :k], windows[:, k:]) if part.shape[1] > 1]
    if not diffs:
        return np.zeros((windows.shape[0], windows.shape[2]))
    d2 = np.concatenate(diffs, axis=1)
    return np.asarray(0.5 * np.mean(d2 * d2, axis=1), dtype=np.float64)


def _n_successive(n_windows: int, reference_windows: int) -> int:
    """Number of successive differences :func:`window_variances` averages."""
    return max(reference_windows - 1, 0) + max(n_windows - reference_windows - 1, 0)


def studentize_prior(windows: NDArray[np.float64], reference_windows: int) -> NDArray[np.float64]:
    """The population's typical window-to-window variance per feature: the median of :func:`window_variances`.

    Computed by the caller on the agents its fit uses (NetworkDetector: the fitting agents,
    frozen with the model; FleetDetector: the whole fleet), so every agent's scale depends
    on itself and fitted state alone.
    """
    if _n_successive(windows.shape[1], reference_windows) == 0:
        return np.ones(windows.shape[2])  # no within-agent variance: a constant scale
    prior = np.median(window_variances(windows, reference_windows), axis=0)
    return np.asarray(np.maximum(prior, 1e-12), dtype=np.float64)


def own_sd(windows: NDArray[np.float64], reference_windows: int, prior: NDArray[np.float64]) -> NDArray[np.float64]:
    """Each agent's window-to-window SD, shrunk towards ``prior`` (empirical-Bayes pooled variance).

    ``(nu0 prior + m v_i) / (nu0 + m)`` with ``v_i`` from :func:`window_variances` over ``m``
    successive differences and ``nu0 = m`` prior degrees of freedom (at least one): the
    agent's own estimate and the population's weigh equally. A lucky quiet agent's own
    estimate alone would explode its t statistic; the prior alone is the raw change. The
    weight was chosen by measurement on tuning seeds.
    """
    k = reference_windows
    m = float(_n_successive(windows.shape[1], k))
    nu0 = max(m, 1.0)
    pooled = (nu0 * prior[None, :] + m * window_variances(windows, k)) / (nu0 + m)
    return np.asarray(np.sqrt(np.maximum(pooled, 1e-24)), dtype=np.float64)
