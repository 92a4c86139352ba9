"""Label-trim: audit the most suspicious reference agents, drop the confirmed ones, keep the rest.

Why
---
The shipped detector fits, calibrates and trains its adaptive test on a reference that an
audit called clean. When the audit misses compromised agents, they poison every part at
once: the statistics notebook measures recall 0 with a tenth of the reference compromised
(seven attack types, each within the honest spread, so the reference screen of
:mod:`tcpkit.detect.screen` does not find them), and removing them from one or two of the
three parts (fitting, calibration, null training) does not bring it back; removing them
from all three does. Removing reference agents by score alone cannot be done safely: a
clean agent trimmed from the calibration set for a high score makes every clean monitored
agent's p-value too small (the calibration loses its tail).

Label-trim (after Bashari, Sesia and Romano, "Robust conformal outlier detection under
contaminated reference data") spends a labelling budget instead: rank the reference agents
by a robust outlyingness score (:func:`audit_ranking`), have someone check the top
``budget`` share (:meth:`AuditRanking.candidates`; an operator reading the agents' logs,
or in simulation the ground truth), and remove **only the agents the audit confirms as
compromised** (:func:`trim_confirmed`). The detector is then fitted on what is left, with
all its own splits and screens as usual.

The score
---------
For every reference agent, the change (mean of the windows after ``reference_windows``
minus the mean of those before, as a t statistic on the agent's own window-to-window SD,
shrunk towards the reference's median as :mod:`tcpkit.detect.studentize` does for the
detector) and the level (mean of all windows), each with its own
robust location and covariance (FAST-MCD of :func:`tcpkit.detect.covariance.estimate_covariance`,
which tolerates the contaminated minority), as a squared robust distance turned into a
chi-square tail, ``-log P(chi2_d > D)``; the agent's score is the sum over the two blocks.
A compromised agent moves a few features by up to about 3 honest SDs each, so it is not
beyond every honest agent on this score, but it is near the top: the audit catches most of
them only with a budget well above the contaminated share (the statistics notebook
measures the share it catches and the recall it buys).

The guarantee that remains
--------------------------
Only confirmed compromised agents leave; every clean reference agent, audited or not,
stays. So the clean agents of each part are still all the clean agents that the split put
there, an i.i.d. sample of the clean population, and the conformal p-value of a clean
monitored agent is valid exactly as with a contaminated reference: the compromised agents
the audit missed only sit among the calibration scores and make p-values larger (less
power, never more false alarms). This assumes the audit makes no false confirmations (a
clean agent wrongly removed because it scored high would bias the calibration as a score
trim does) and that the audit's choice of whom to check, a function of the reference
alone, is not informed by the monitored agents.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from tcpkit.detect.baseline import BaselineError, check_windows
from tcpkit.detect.covariance import estimate_covariance
from tcpkit.detect.studentize import own_sd, studentize_prior

__all__ = ["AuditRanking", "audit_ranking", "trim_confirmed"]


@dataclass(frozen=True)
class AuditRanking:
    """Reference agents ordered for an audit, most suspicious first.

    Attributes
    ----------
    order : (n,) row indices of the reference, by decreasing ``scores``.
    scores : (n,) outlyingness of each reference row, in row order (see the module docstring).
    """

    order: NDArray[np.intp]
    scores: NDArray[np.float64]

    def candidates(self, budget: float) -> NDArray[np.intp]:
        """The rows to audit: the top ``budget`` share (0 < budget <= 1) of the ranking, in ranking order."""
        if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0.0 < float(budget) <= 1.0:
            raise BaselineError(f"budget={budget!r}: expected a share of the reference in (0, 1]")
        k = max(1, int(round(float(budget) * self.order.size)))
        return self.order[:k]


def audit_ranking(windows: ArrayLike, reference_windows: int, random_state: int = 0) -> AuditRanking:
    """Rank the agents of ``windows`` (n_agents, n_windows, d) by robust outlyingness.

    ``reference_windows`` are the first windows of each agent (the detector's own setting):
    the change is measured from them. Deterministic given ``random_state`` (FAST-MCD's starts).
    """
    w = check_windows(windows, "windows")
    if isinstance(reference_windows, bool) or not isinstance(reference_windows, int | np.integer):
        raise BaselineError(f"reference_windows={reference_windows!r}: expected an integer")
    if not 1 <= int(reference_windows) < w.shape[1]:
        raise BaselineError(
            f"reference_windows={reference_windows}: expected 1 .. {w.shape[1] - 1} for {w.shape[1]} windows"
        )
    if w.shape[0] < 2 * w.shape[2] + 2:
        raise BaselineError(
            f"windows has {w.shape[0]} agents: a robust fit of {w.shape[2]} features needs at least {2 * w.shape[2] + 2}"
        )
    r = int(reference_windows)
    sd = own_sd(w, r, studentize_prior(w, r))
    change = (w[:, r:].mean(axis=1) - w[:, :r].mean(axis=1)) / (sd * np.sqrt(1.0 / r + 1.0 / (w.shape[1] - r)))
    level = w.mean(axis=1)
    scores = np.zeros(w.shape[0])
    for block in (change, level):
        fit = estimate_covariance(block, "mcd", random_state=random_state)
        centred = block - fit.location
        d2 = np.einsum("ij,ij->i", centred, np.linalg.solve(fit.covariance, centred.T).T)
        scores += -stats.chi2.logsf(d2, block.shape[1])
    order = np.argsort(-scores, kind="stable").astype(np.intp)
    return AuditRanking(order=order, scores=scores)


def trim_confirmed(n_agents: int, audited: ArrayLike, confirmed: ArrayLike) -> NDArray[np.intp]:
    """Rows of a reference of ``n_agents`` to keep: all but the ``audited`` rows the audit ``confirmed``.

    ``audited`` are row indices (distinct, in range); ``confirmed`` is one boolean per audited
    row (True: the audit found the agent compromised). Unaudited rows are always kept.
    """
    if isinstance(n_agents, bool) or not isinstance(n_agents, int | np.integer) or n_agents < 1:
        raise BaselineError(f"n_agents={n_agents!r}: expected a positive integer")
    rows = np.asarray(audited)
    verdict = np.asarray(confirmed)
    if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
        raise BaselineError(f"audited has shape {rows.shape} and dtype {rows.dtype}: expected 1-D row indices")
    if verdict.dtype != np.bool_ or verdict.shape != rows.shape:
        raise BaselineError(
            f"confirmed has shape {verdict.shape} and dtype {verdict.dtype}: expected one boolean per audited row "
            f"({rows.size})"
        )
    if rows.size and (rows.min() < 0 or rows.max() >= n_agents):
        raise BaselineError(f"audited holds rows outside 0 .. {n_agents - 1}")
    if np.unique(rows).size != rows.size:
        raise BaselineError("audited names a row twice")
    keep = np.ones(int(n_agents), dtype=bool)
    keep[rows[verdict]] = False
    if not keep.any():
        raise BaselineError("the audit confirmed every reference agent as compromised: nothing is left to fit on")
    return np.flatnonzero(keep).astype(np.intp)
