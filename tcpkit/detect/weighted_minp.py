"""Exact full-conformal p-values of a *weighted* min-p statistic over several tests.

The network detector runs several tests per agent (change, level, CUSUM, family) and
combines them by min-p, calibrated by full conformal inference (see
:mod:`tcpkit.detect.composite`). Unweighted min-p spends the same share of the
false-alarm budget on every test; when one test carries most of the evidence (the
change test, for compromises that start after the reference period) and the others
are mostly noise in the world at hand, that costs power: on the simulator's tuning
seeds the level test, a between-agent comparison swamped by honest heterogeneity,
almost never finds anything a change test misses. Weighting (Genovese, Roeder and
Wasserman 2006, *Biometrika*: p-value weighting; here inside min-p) gives test ``j``
the weight ``w_j``: the statistic is ``min_j p_j / w_j``, with ``p_j`` the agent's rank
in test ``j`` over ``n + 1``, so a weight-3 test rejects at a three times larger
rank than a weight-1 test. Validity does not depend on the weights (they are fixed
before the data, and the statistic is calibrated as a whole); only power does.

Exactness. Weights are positive integers ``w_j``; with ``L = lcm(w)`` and
multipliers ``c_j = L / w_j`` the statistic is the integer ``min_j c_j a_ij``, where
``a_ij = #{agents of the set with score_j >= agent i's}`` (its rank, itself included).
Within the set of the ``n`` calibration agents plus the judged agent, a calibration
agent's rank in test ``j`` grows by ``b_ij = [c_ij <= s_j]`` (the judged agent is at
least as extreme there), so its statistic moves from ``m_i = min_j c_j a_ij`` to at
most ``m_i + max_j c_j``. With ``T = min_j c_j (r_j + 1)`` the judged agent's
statistic (``r_j`` its rank among the calibration agents), calibration agents with
``m_i < T - max c`` are certainly more extreme and those with ``m_i > T`` certainly
not; only the band ``T - max c <= m_i <= T`` is recomputed exactly. With distinct
scores each value of the statistic is attained by at most one agent per test, so the band
holds at most ``sum_j (max c / c_j + 1)`` agents: O(K log n + K * band) per judged agent;
tied scores widen it, and wide bands are judged in memory-bounded groups. Ties in
the statistic (frequent: it takes integer values) are broken by a fixed continuous
key, larger = more extreme, exactly as in the unweighted index; so under
exchangeability of a clean judged agent with the calibration agents its p-value is
uniform on ``{1, ..., n + 1} / (n + 1)``. With every weight 1 it equals the
unweighted min-p p-value of :mod:`tcpkit.detect.composite` (a test checks it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce

import numpy as np
from numpy.typing import NDArray


class WeightError(ValueError):
    """Weights that the weighted min-p cannot use."""


def multipliers(weights: Sequence[int]) -> NDArray[np.int64]:
    """``c_j = lcm(w) / w_j`` for positive integer weights: the statistic's integer rank factors."""
    ws = list(weights)
    if not ws or any(isinstance(w, bool) or not isinstance(w, int | np.integer) or w < 1 for w in ws):
        raise WeightError(f"weights={ws!r}: expected one positive integer per test")
    lcm = reduce(lambda a, b: a * b // math.gcd(a, b), (int(w) for w in ws), 1)
    return np.array([lcm // int(w) for w in ws], dtype=np.int64)


def _ranks(sorted_columns: Sequence[NDArray[np.float64]], scores: NDArray[np.float64]) -> NDArray[np.int64]:
    """``#{calibration scores >= s}`` per test (binary search in each sorted column)."""
    return np.column_stack(
        [col.size - np.searchsorted(col, scores[:, j], side="left") for j, col in enumerate(sorted_columns)]
    ).astype(np.int64)


@dataclass(frozen=True, eq=False)
class WeightedMinp:
    """Calibration agents ordered by their weighted min-p statistic (see the module docstring)."""

    sorted_columns: tuple[NDArray[np.float64], ...]
    factors: NDArray[np.int64]  # c_j
    scores: NDArray[np.float64]  # (n, k) calibration scores, rows in order of ``stat``
    ranks: NDArray[np.int64]  # (n, k) their ranks a_ij, same order
    stat: NDArray[np.int64]  # (n,) m_i ascending
    keys: NDArray[np.float64]  # (n,) tie-break keys, same order

    @classmethod
    def build(
        cls, cal_scores: NDArray[np.float64], cal_key: NDArray[np.float64], weights: Sequence[int]
    ) -> WeightedMinp:
        scores = np.asarray(cal_scores, dtype=np.float64)
        if scores.ndim != 2 or scores.shape[0] < 1:
            raise WeightError(f"calibration scores have shape {scores.shape}: expected (n >= 1, k)")
        factors = multipliers(weights)
        if factors.size != scores.shape[1]:
            raise WeightError(f"{factors.size} weights for {scores.shape[1]} tests")
        columns = tuple(np.sort(scores[:, j]) for j in range(scores.shape[1]))
        ranks = _ranks(columns, scores)
        stat = (ranks * factors).min(axis=1)
        order = np.argsort(stat, kind="stable")
        return cls(columns, factors, scores[order], ranks[order], stat[order], np.asarray(cal_key)[order])

    @property
    def n(self) -> int:
        return int(self.stat.size)

    def pvalues(self, test_scores: NDArray[np.float64], test_key: NDArray[np.float64]) -> NDArray[np.float64]:
        """``#{agents of calibration + judged at least as extreme} / (n + 1)`` for each judged agent."""
        s = np.asarray(test_scores, dtype=np.float64)
        key = np.asarray(test_key, dtype=np.float64)
        if s.ndim != 2 or s.shape[1] != self.factors.size or key.shape != (s.shape[0],):
            raise WeightError(f"judged scores have shape {s.shape}: expected (m, {self.factors.size}) and m keys")
        c_max = int(self.factors.max())
        t = ((_ranks(self.sorted_columns, s) + 1) * self.factors).min(axis=1)
        lo = np.searchsorted(self.stat, t - c_max, side="left")  # certainly more extreme below
        hi = np.searchsorted(self.stat, t, side="right")  # certainly not above
        out = np.empty(s.shape[0], dtype=np.float64)
        for group in _groups(hi - lo, _BAND_BUDGET):
            out[group] = self._band_pvalues(s[group], key[group], t[group], lo[group], hi[group])
        return out

    def _band_pvalues(
        self,
        s: NDArray[np.float64],
        key: NDArray[np.float64],
        t: NDArray[np.int64],
        lo: NDArray[np.intp],
        hi: NDArray[np.intp],
    ) -> NDArray[np.float64]:
        """The p-values of judged agents whose bands ``[lo, hi)`` fit in memory together."""
        width = int((hi - lo).max(initial=0))
        rows = lo[:, None] + np.arange(width)[None, :]
        inside = rows < hi[:, None]
        rows = np.minimum(rows, self.n - 1)
        bumped = self.scores[rows] <= s[:, None, :]  # (m, width, k): judged at least as extreme
        stat = ((self.ranks[rows] + bumped) * self.factors).min(axis=2)
        more = ((stat < t[:, None]) & inside).sum(axis=1)
        tied = ((stat == t[:, None]) & (self.keys[rows] >= key[:, None]) & inside).sum(axis=1)
        return np.asarray((1 + lo + more + tied) / (self.n + 1.0), dtype=np.float64)


_BAND_BUDGET = 1 << 21  # band cells (judged agents x band agents) evaluated at once


def _groups(widths: NDArray[np.intp], budget: int) -> list[NDArray[np.intp]]:
    """Judged agents in groups whose ``size x largest band`` stays within ``budget``.

    Bands are short (a few agents) unless many calibration scores tie; sorting by width
    keeps the rare wide bands from inflating the others' work.
    """
    order = np.argsort(widths, kind="stable")
    sorted_widths = np.maximum(widths[order], 1)
    groups: list[NDArray[np.intp]] = []
    start, m = 0, int(order.size)
    while start < m:
        end = start + 1
        step = max(1, budget // int(sorted_widths[start]))
        while end < m:
            candidate = min(m, end + step)
            if (candidate - start) * int(sorted_widths[candidate - 1]) > budget:
                break
            end = candidate
        groups.append(order[start:end])
        start = end
    return groups
