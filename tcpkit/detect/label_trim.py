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
by a robust outlyingness score (:func:`audit_ranking`), have someone check the most
suspicious ones (an operator reading the agents' logs, or in simulation the ground truth),
and remove **only the agents the audit confirms as compromised** (:func:`trim_confirmed`).
The detector is then fitted on what is left, with all its own splits and screens as usual.

Two ways to spend the budget: the top ``budget`` share of the ranking at once
(:meth:`AuditRanking.candidates`), or in batches (:func:`next_audit_batch`, looped by
:func:`run_audit`): the first batches follow the ranking; once the audit has confirmed both
compromised and clean agents, each batch alternates between the agents a logistic
regression of those verdicts on the same per-agent statistics rates most probably
compromised (the audit learns what the compromised agents of *this* reference look like)
and the most outlying agents not yet audited (a missed outlying agent costs the most: it
sits in the calibration above the monitored compromised agents). On the same budget it
catches more of them than the ranking alone (the statistics report measures both: ``label_trim_caught_*`` and
``ranking_caught_*``).

The score
---------
For every reference agent, the change (mean of the windows after ``reference_windows``
minus the mean of those before, as a t statistic on the agent's own window-to-window SD,
shrunk towards the reference's median as :mod:`tcpkit.detect.studentize` does for the
detector) and the level (mean of all windows), each with its own
robust location and covariance (a FAST-MCD :class:`tcpkit.detect.baseline.Baseline`,
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

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import linalg, special, stats
from sklearn.linear_model import LogisticRegression

from tcpkit.detect.baseline import Baseline, BaselineError, check_windows
from tcpkit.detect.studentize import own_sd, studentize_prior

__all__ = ["AuditRanking", "AuditResult", "audit_ranking", "next_audit_batch", "run_audit", "trim_confirmed"]


@dataclass(frozen=True)
class AuditRanking:
    """Reference agents ordered for an audit, most suspicious first.

    Attributes
    ----------
    order : (n,) row indices of the reference, by decreasing ``scores``.
    scores : (n,) outlyingness of each reference row, in row order (see the module docstring).
    statistics : (n, 2 d) the per-agent statistics behind it (studentised change, then level),
        each column centred on its median and scaled by its SD: what :func:`next_audit_batch`
        learns from.
    """

    order: NDArray[np.intp]
    scores: NDArray[np.float64]
    statistics: NDArray[np.float64]

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
        block = block[:, _independent_columns(block)]
        d2 = Baseline(method="mcd", random_state=random_state).fit(block).mahalanobis(block)
        scores += -_chi2_logsf(d2, block.shape[1])
    order = np.argsort(-scores, kind="stable").astype(np.intp)
    both = np.hstack([change, level])
    spread = both.std(axis=0)
    statistics = (both - np.median(both, axis=0)) / np.where(spread > 0, spread, 1.0)
    return AuditRanking(order=order, scores=scores, statistics=statistics)


def _independent_columns(block: NDArray[np.float64], tol: float = 1e-8) -> NDArray[np.bool_]:
    """Columns of ``block`` that are not (numerically) linear combinations of the others.

    Event logs give such features (the shares of actions per risk class sum to one, and so
    their changes sum to zero), whose covariance is singular for every estimator; a pivoted
    QR of the standardised columns keeps a largest independent set, so the robust fit runs
    on them instead of falling back to shrinkage. The distance is unchanged by the columns
    dropped: they carry nothing the kept ones do not.
    """
    spread = block.std(axis=0)
    keep = spread > 0
    z = (block[:, keep] - block[:, keep].mean(axis=0)) / spread[keep]
    if z.shape[1] == 0:
        return keep
    _, r, pivot = linalg.qr(z, mode="economic", pivoting=True)
    diag = np.abs(np.diag(r))
    rank = int(np.sum(diag > tol * diag[0]))
    out = np.zeros(block.shape[1], dtype=bool)
    out[np.flatnonzero(keep)[np.sort(pivot[:rank])]] = True
    return out


def _chi2_logsf(x: ArrayLike, dof: int) -> NDArray[np.float64]:
    """``log P(chi2_dof > x)``, finite where scipy's underflows to -inf (x beyond about 1,500).

    There the leading terms of the upper incomplete gamma function's asymptotic series,
    ``Q(a, y) ~ y**(a-1) exp(-y) / Gamma(a) * (1 + (a-1)/y)``, keep far-out agents ordered by
    distance instead of tied at -inf.
    """
    out = np.asarray(stats.chi2.logsf(x, dof), dtype=np.float64)
    far = ~np.isfinite(out)
    if far.any():
        a, y = dof / 2.0, np.asarray(x, dtype=np.float64)[far] / 2.0
        out[far] = (a - 1.0) * np.log(y) - y - special.gammaln(a) + np.log1p((a - 1.0) / y)
    return out


@dataclass(frozen=True)
class AuditResult:
    """What an audit checked and what it found.

    Attributes
    ----------
    audited : row indices checked, in the order they were checked.
    confirmed : one boolean per audited row (True: found compromised).
    """

    audited: NDArray[np.intp]
    confirmed: NDArray[np.bool_]

    def kept_rows(self, n_agents: int) -> NDArray[np.intp]:
        """:func:`trim_confirmed` of this audit: the reference rows to fit on."""
        return trim_confirmed(n_agents, self.audited, self.confirmed)


def next_audit_batch(
    ranking: AuditRanking, audited: ArrayLike, confirmed: ArrayLike, size: int
) -> NDArray[np.intp]:
    """The next ``size`` rows to audit, given the rows ``audited`` so far and their verdicts.

    By the ranking until the verdicts hold both a compromised and a clean agent; then
    alternately the most probably compromised by a logistic regression of the verdicts on
    :attr:`AuditRanking.statistics` and the next by the ranking. Rows already audited are
    never proposed again; fewer than ``size`` come back only when fewer are left.
    """
    n = ranking.order.size
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise BaselineError(f"size={size!r}: expected a positive number of agents")
    rows = np.asarray(audited, dtype=np.intp) if np.size(audited) else np.empty(0, dtype=np.intp)
    verdict = np.asarray(confirmed, dtype=bool) if np.size(confirmed) else np.empty(0, dtype=bool)
    trim_confirmed(n, rows, verdict)  # the same checks; its result is not needed here
    done = np.zeros(n, dtype=bool)
    done[rows] = True
    by_rank = ranking.order[~done[ranking.order]]
    if verdict.all() or not verdict.any() or by_rank.size == 0:
        return by_rank[: int(size)]
    model = LogisticRegression(max_iter=2000).fit(ranking.statistics[rows], verdict)
    left = np.flatnonzero(~done)
    p = model.predict_proba(ranking.statistics[left])[:, 1]
    learned = left[np.argsort(-p, kind="stable")]
    # alternate: the learned order finds the compromised agents the ranking ranks low, the
    # ranking keeps auditing the most outlying ones (left in calibration, they cost most)
    want = min(int(size), left.size)
    sources = (iter(learned.tolist()), iter(by_rank.tolist()))  # each holds every row left
    picks: list[int] = []
    taken: set[int] = set()
    while len(picks) < want:
        for row in sources[len(picks) % 2]:
            if row not in taken:
                taken.add(row)
                picks.append(row)
                break
    return np.asarray(picks, dtype=np.intp)


def run_audit(
    ranking: AuditRanking,
    budget: float,
    auditor: Callable[[NDArray[np.intp]], ArrayLike],
    batch: float = 0.025,
) -> AuditResult:
    """Audit ``budget`` of the reference in batches of ``batch`` (shares of it), asking ``auditor``.

    ``auditor(rows)`` returns one boolean per row (True: compromised); in simulation the
    ground truth, in production a person's verdicts. ``batch = budget`` is the one-shot audit
    of :meth:`AuditRanking.candidates`.
    """
    total = ranking.candidates(budget).size
    step = ranking.candidates(batch).size
    audited = np.empty(0, dtype=np.intp)
    confirmed = np.empty(0, dtype=bool)
    while audited.size < total:
        rows = next_audit_batch(ranking, audited, confirmed, min(step, total - audited.size))
        verdict = np.asarray(auditor(rows))
        if verdict.dtype != np.bool_ or verdict.shape != rows.shape:
            raise BaselineError(
                f"the auditor returned shape {verdict.shape} and dtype {verdict.dtype}: expected one boolean per row "
                f"({rows.size})"
            )
        audited, confirmed = np.concatenate([audited, rows]), np.concatenate([confirmed, verdict])
    return AuditResult(audited=audited, confirmed=confirmed)


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
