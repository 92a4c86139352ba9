"""p-values without a slow path: chi-square tails, conformal p-values, Benjamini-Hochberg.

Three functions turn squared Mahalanobis distances into decisions at the cost of
a few passes over memory:

* :func:`chi2_sf` -- the chi-square survival function. For an even number of
  degrees of freedom ``d = 2k`` it has the closed form
  ``exp(-x/2) * sum_{i<k} (x/2)^i / i!``, evaluated by Horner's rule in cache-sized
  blocks (several times faster than :func:`scipy.special.chdtrc`, which is used for
  odd ``d``).
* :func:`conformal_pvalues` -- ``p = (1 + #{calibration >= s}) / (n_cal + 1)`` by
  binary search in the sorted calibration scores, valid when the calibration
  scores and the test score are exchangeable (no Gaussian assumption).
* :func:`bh_reject` -- Benjamini-Hochberg step-up at level ``alpha`` that sorts only
  the p-values that can possibly be rejected; its rejections are identical to
  ``statsmodels.stats.multitest.multipletests(p, alpha, method="fdr_bh")``.
* :func:`chi2_bh_reject` -- the same decisions on chi-square p-values, computing the
  p-value only for agents beyond the ``1 - alpha`` quantile (the only ones BH can
  reject): the fast end-to-end path from distances to decisions.
* :func:`conformal_bh_reject` -- the same for conformal p-values: a conformal p-value
  is at most ``alpha`` only above one calibration score of known rank, so one
  comparison per agent selects the candidates and the binary search runs only for
  them.
* :func:`fewest_rejections` -- the resolution of a run: when no p-value can fall below
  a floor (a conformal p-value is at least ``1 / (n_cal + 1)``), the smallest group of
  agents that BH can flag at all; fewer compromised agents than that are never found.

Scores and calibration scores are compared in the scores' own floating-point type:
float32 scores are searched in a float32 copy of the calibration scores rounded
towards minus infinity (which preserves every ``calibration < score`` comparison
exactly), so no float64 copy of the scores is ever made.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

_BLOCK = 65_536  # elements per block: a few float64 blocks stay in L2 cache
_EXP_SAFE = 700.0  # exp(-y) is a normal float64 for y below this


def _as_distances(d2: ArrayLike) -> NDArray[np.floating]:
    values = np.asarray(d2)
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float64)
    if values.ndim != 1:
        raise ValueError(f"d2 has shape {values.shape}: expected a 1-D array of squared distances")
    if values.size and not (np.isfinite(values.max()) and values.min() >= 0):
        raise ValueError("d2 contains NaN, infinite or negative values")
    return values


def _check_dof(d: int) -> int:
    if isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 1:
        raise ValueError(f"degrees of freedom d={d!r}: expected a positive integer")
    return int(d)


def chi2_sf_even(d2: ArrayLike, d: int) -> NDArray[np.float64]:
    """Chi-square survival function ``P(chi2_d >= d2)`` for even ``d``, in closed form.

    Parameters
    ----------
    d2 : (n,) array of non-negative finite squared distances (float32 or float64).
    d : even positive integer, the degrees of freedom (the number of features).

    Returns
    -------
    (n,) float64 array of p-values. Always float64: float32 would round small tail
    probabilities that the FDR step compares against ``alpha * i / n``.

    Notes
    -----
    ``sf = exp(-y) * (1 + y/1 * (1 + y/2 * (1 + ... (1 + y/(k-1)))))`` with ``y = d2/2``
    and ``k = d/2``, computed in place block by block so that no temporary larger
    than one block is made. Relative error is a few ulp per term, also in the tail.
    """
    dof = _check_dof(d)
    if dof % 2:
        raise ValueError(f"degrees of freedom d={dof} is odd: use chi2_sf, which handles odd d")
    values = _as_distances(d2)
    n = values.size
    out = np.empty(n, dtype=np.float64)
    k = dof // 2
    inverse = [1.0 / i for i in range(1, k)]
    block = min(_BLOCK, max(n, 1))
    y_buf = np.empty(block, dtype=np.float64)
    for start in range(0, n, block):
        stop = min(start + block, n)
        y = y_buf[: stop - start]
        acc = out[start:stop]
        np.multiply(values[start:stop], 0.5, out=y)
        acc.fill(1.0)
        for inv in reversed(inverse):
            acc *= y
            acc *= inv
            acc += 1.0
        if y.max() > _EXP_SAFE:
            # exp(-y) underflows before the product does: combine in log space.
            far = y > _EXP_SAFE
            acc[far] = np.exp(np.log(acc[far]) - y[far])
            y[far] = 0.0
        np.negative(y, out=y)
        np.exp(y, out=y)
        acc *= y
    return out


def chi2_sf(d2: ArrayLike, d: int) -> NDArray[np.float64]:
    """Chi-square survival function for any ``d``: closed form if even, ``chdtrc`` if odd.

    Parameters
    ----------
    d2 : (n,) array of non-negative finite squared distances.
    d : positive integer degrees of freedom.

    Returns
    -------
    (n,) float64 array of p-values ``P(chi2_d >= d2)``. They are exact only if the
    features are Gaussian with the fitted location and covariance.
    """
    dof = _check_dof(d)
    if dof % 2 == 0:
        return chi2_sf_even(d2, dof)
    values = _as_distances(d2)
    return np.asarray(special.chdtrc(float(dof), values.astype(np.float64, copy=False)))


def _as_scores(scores: ArrayLike) -> NDArray[np.floating]:
    s = np.asarray(scores)
    if s.dtype not in (np.float32, np.float64):
        s = s.astype(np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores has shape {s.shape}: expected a 1-D array")
    if s.size and np.isnan(s.max()):
        raise ValueError("scores contains NaN values")
    return s


def _as_calibration(sorted_calibration: ArrayLike, check_sorted: bool) -> NDArray[np.floating]:
    cal = np.asarray(sorted_calibration)
    if cal.dtype not in (np.float32, np.float64):
        cal = cal.astype(np.float64)
    if cal.ndim != 1 or cal.size == 0:
        raise ValueError(f"sorted_calibration has shape {cal.shape}: expected a non-empty 1-D array")
    if not np.all(np.isfinite(cal)):
        raise ValueError("sorted_calibration contains NaN or infinite values")
    if check_sorted and cal.size > 1 and np.any(cal[1:] < cal[:-1]):
        raise ValueError("sorted_calibration is not sorted in ascending order")
    return cal


def _in_dtype_of(cal: NDArray[np.floating], dtype: np.dtype[np.floating]) -> NDArray[np.floating]:
    """``cal`` in ``dtype`` such that ``cal' < s`` iff ``cal < s`` for every ``s`` of ``dtype``.

    float32 -> float64 is exact. float64 -> float32 rounds towards minus infinity: for
    float32 ``s`` and real ``c``, ``s > c`` iff ``s`` is at least the smallest float32
    above ``c``, iff ``s > floor32(c)``. The rounding is monotone, so the order is kept.
    O(n_cal), instead of a float64 copy of all scores inside ``np.searchsorted``.
    """
    if cal.dtype == dtype:
        return cal
    if dtype == np.float64:
        return cal.astype(np.float64)
    with np.errstate(over="ignore"):
        down = cal.astype(np.float32)
    above = down.astype(np.float64) > cal
    down[above] = np.nextafter(down[above], np.float32(-np.inf))
    return down


def conformal_pvalues(
    scores: ArrayLike, sorted_calibration: ArrayLike, *, check_sorted: bool = True
) -> NDArray[np.float64]:
    """Conformal p-values ``(1 + #{calibration >= s}) / (n_cal + 1)`` by binary search.

    Parameters
    ----------
    scores : (n,) array of test scores (larger = more anomalous).
    sorted_calibration : (n_cal,) ascending array of scores of held-out clean agents.
    check_sorted : verify the calibration order (O(n_cal)); turn off only for an
        array this module's caller sorted itself.

    Returns
    -------
    (n,) float64 p-values in ``[1/(n_cal+1), 1]``. Valid (super-uniform) when the
    calibration scores and a clean test score are exchangeable; p < alpha is only
    possible when ``n_cal + 1 > 1/alpha``.

    Notes
    -----
    The search runs in the scores' dtype (see :func:`_in_dtype_of`): comparisons are
    exact whatever the two dtypes, and float32 scores are never copied to float64.
    To decide at an FDR level, :func:`conformal_bh_reject` gives the same decisions
    while searching only for the agents that can be rejected.
    """
    cal = _as_calibration(sorted_calibration, check_sorted)
    s = _as_scores(scores)
    return _conformal_unchecked(s, _in_dtype_of(cal, s.dtype), cal.size)


def _conformal_unchecked(
    s: NDArray[np.floating], cal: NDArray[np.floating], n_cal: int
) -> NDArray[np.float64]:
    below = np.searchsorted(cal, s, side="left")  # #{cal < s}
    out = np.subtract(n_cal + 1, below, dtype=np.float64)
    out /= float(n_cal + 1)
    return out


def _check_pvalues(pvalues: ArrayLike, alpha: float) -> tuple[NDArray[np.floating], np.float64]:
    p = np.asarray(pvalues)
    if p.dtype not in (np.float32, np.float64):
        p = p.astype(np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues has shape {p.shape}: expected a 1-D array")
    if p.size and not (p.min() >= 0 and p.max() <= 1):
        raise ValueError("pvalues contains NaN or values outside [0, 1]")
    return p, _check_alpha(alpha)


def _check_alpha(alpha: float) -> np.float64:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float | np.floating):
        raise ValueError(f"alpha={alpha!r}: expected a number in (0, 1)")
    if not 0 < float(alpha) < 1:
        raise ValueError(f"alpha={alpha!r}: expected a number in (0, 1)")
    return np.float64(alpha)


def _bh_among_candidates(
    cand: NDArray[np.floating], m: int, a: np.float64
) -> NDArray[np.intp]:
    """Positions in ``cand`` that BH over ``m`` tests rejects, given all others exceed alpha.

    The i-th smallest p-value is compared with ``t_i = (i/m) * alpha`` (the same
    floating-point operations as statsmodels). Rejected p-values are at most ``t_c``
    where c counts the candidates, so the set is shrunk to ``{p <= t_c}`` until it
    stops changing; only what is left is sorted.
    """
    fm = float(m)
    index = np.arange(cand.size)
    while index.size:
        keep = cand[index] <= (index.size / fm) * a
        if keep.all():
            break
        index = index[keep]
    if index.size == 0:
        return index
    order = np.argsort(cand[index], kind="stable")
    thresholds = (np.arange(1, index.size + 1) / fm) * a
    passed = np.flatnonzero(cand[index[order]] <= thresholds)
    if passed.size == 0:
        return passed
    return np.asarray(index[order[: passed[-1] + 1]])


def bh_reject(
    pvalues: ArrayLike, alpha: float, *, qvalues: bool = False
) -> tuple[NDArray[np.bool_], NDArray[np.float64] | None]:
    """Benjamini-Hochberg step-up at FDR level ``alpha``, sorting only possible rejections.

    Parameters
    ----------
    pvalues : (m,) array of p-values in [0, 1].
    alpha : target false discovery rate, in (0, 1).
    qvalues : also return BH-adjusted p-values (this needs a full sort, O(m log m)).

    Returns
    -------
    reject : (m,) bool array, identical to
        ``multipletests(pvalues, alpha, method="fdr_bh")[0]``.
    qvalues : (m,) float64 adjusted p-values as statsmodels computes them, or None.

    Notes
    -----
    The i-th smallest p-value is compared with ``t_i = (i/m) * alpha`` (the same
    floating-point operations as statsmodels). Rejected p-values are at most
    ``t_c`` where c counts the candidates, so the candidate set is shrunk to
    ``{p <= t_c}`` until it stops changing; only that set is sorted. Valid for
    independent or positively dependent tests (PRDS).
    """
    p, a = _check_pvalues(pvalues, alpha)
    m = p.size
    reject = np.zeros(m, dtype=np.bool_)
    if m == 0:
        return reject, (np.empty(0, dtype=np.float64) if qvalues else None)
    index = np.flatnonzero(p <= a)  # t_i <= t_m = alpha for every i
    reject[index[_bh_among_candidates(p[index], m, a)]] = True
    if not qvalues:
        return reject, None
    order_all = np.argsort(p)
    ranks = np.arange(1, m + 1) / float(m)
    adjusted = np.minimum.accumulate((p[order_all] / ranks)[::-1])[::-1]
    adjusted[adjusted > 1] = 1
    q = np.empty(m, dtype=np.float64)
    q[order_all] = adjusted
    return reject, q


def chi2_bh_reject(d2: ArrayLike, d: int, alpha: float) -> NDArray[np.bool_]:
    """Benjamini-Hochberg decisions on chi-square p-values, computing only the p-values needed.

    Identical rejections to ``bh_reject(chi2_sf(d2, d), alpha)[0]``: only agents whose
    p-value can be at most ``alpha`` can be rejected, i.e. those with ``d2`` at or
    above the chi-square ``1 - alpha`` quantile. Those candidates are found with one
    comparison per agent (against the quantile lowered by a relative 1e-9 margin,
    far above the rounding of the survival function); their exact p-values are
    computed and BH runs over them with all ``n`` tests counted.

    Parameters
    ----------
    d2 : (n,) array of non-negative finite squared distances.
    d : positive integer degrees of freedom.
    alpha : FDR level in (0, 1).

    Returns
    -------
    (n,) bool array of rejections. The p-values assume Gaussian features.
    """
    from scipy import stats

    dof = _check_dof(d)
    values = _as_distances(d2)
    a = _check_alpha(alpha)
    n = values.size
    reject = np.zeros(n, dtype=np.bool_)
    if n == 0:
        return reject
    cutoff = np.float64(stats.chi2.isf(float(a), dof) * (1.0 - 1e-9))
    index = np.flatnonzero(values >= cutoff)
    if index.size:
        p = chi2_sf(values[index], dof)
        candidates = np.flatnonzero(p <= a)
        reject[index[candidates[_bh_among_candidates(p[candidates], n, a)]]] = True
    return reject


def _largest_count_at_most(alpha: np.float64, n_cal: int) -> int:
    """Largest ``c`` in ``[0, n_cal + 1]`` with ``float(c) / float(n_cal + 1) <= alpha``.

    The same floating-point division as :func:`conformal_pvalues`, so the candidate set
    below is exactly ``{p <= alpha}`` with no margin. Division by a positive number is
    monotone in IEEE arithmetic, so stepping from ``floor(alpha * (n_cal + 1))`` finds it.
    """
    n1 = n_cal + 1
    denominator = float(n1)
    count = min(max(int(np.floor(float(alpha) * n1)), 0), n1)
    while count < n1 and (count + 1) / denominator <= alpha:
        count += 1
    while count > 0 and count / denominator > alpha:
        count -= 1
    return count


def conformal_bh_reject(
    scores: ArrayLike, sorted_calibration: ArrayLike, alpha: float, *, check_sorted: bool = True
) -> NDArray[np.bool_]:
    """Benjamini-Hochberg decisions on conformal p-values, searching only for possible rejections.

    Identical rejections to ``bh_reject(conformal_pvalues(scores, cal), alpha)[0]``.
    BH at level ``alpha`` rejects only p-values ``<= alpha``; the conformal p-value
    ``(n_cal + 1 - #{cal < s}) / (n_cal + 1)`` is at most ``alpha`` exactly when
    ``#{cal < s} >= r`` with ``r = n_cal + 1 - c`` (``c`` the largest count whose
    p-value is ``<= alpha``), i.e. when ``s > cal[r - 1]``. One comparison per agent
    against that score selects the candidates; their exact p-values come from the
    binary search, and BH runs over them with all ``n`` tests counted.

    Parameters
    ----------
    scores : (n,) array of test scores (larger = more anomalous), float32 or float64.
    sorted_calibration : (n_cal,) ascending scores of held-out clean agents.
    alpha : FDR level in (0, 1).
    check_sorted : verify the calibration order (O(n_cal)).

    Returns
    -------
    (n,) bool array of rejections. Nothing can be rejected when
    ``n_cal + 1 < 1/alpha`` (no p-value reaches ``alpha``): size the calibration set
    to at least ``1/alpha`` points, and far more for power under FDR control.
    """
    cal = _as_calibration(sorted_calibration, check_sorted)
    s = _as_scores(scores)
    a = _check_alpha(alpha)
    n, n_cal = s.size, cal.size
    reject = np.zeros(n, dtype=np.bool_)
    count = _largest_count_at_most(a, n_cal)
    if n == 0 or count == 0:
        return reject
    searched = _in_dtype_of(cal, s.dtype)
    threshold = searched[n_cal - count]  # cal[r - 1] with r = n_cal + 1 - count >= 1
    index = np.flatnonzero(s > threshold)
    if index.size:
        p = _conformal_unchecked(s[index], searched, n_cal)
        reject[index[_bh_among_candidates(p, n, a)]] = True
    return reject


def fewest_rejections(smallest_p: float, m: int, alpha: float, fdr: str = "bh") -> int | None:
    """The fewest of ``m`` agents a decision can flag when no p-value is below ``smallest_p``.

    BH at level ``alpha`` flags a set of ``k`` agents only if the ``k``-th smallest p-value
    is at most ``alpha k / m``; no p-value is below ``smallest_p``, so ``k >= m smallest_p /
    alpha``: the answer is the smallest such ``k`` (at least 1). With ``fdr="none"`` each
    agent is tested at ``alpha`` alone: 1 when ``smallest_p <= alpha``. None when no ``k <= m``
    qualifies: this run can flag nobody, whatever the data. It is a property of the
    calibration set's size and ``m``, not of the agents: a run that flags nobody while this
    is large says the reference was too small for the fleet, not that the fleet is clean.
    """
    if not 0.0 < smallest_p <= 1.0:
        raise ValueError(f"smallest_p={smallest_p!r}: expected a p-value in (0, 1]")
    if isinstance(m, bool) or not isinstance(m, int | np.integer) or m < 1:
        raise ValueError(f"m={m!r}: expected a positive number of agents")
    a = float(_check_alpha(alpha))
    if fdr == "none":
        return 1 if smallest_p <= a else None
    if fdr != "bh":
        raise ValueError(f"fdr={fdr!r} is unknown: expected 'bh' or 'none'")
    def reaches(k: int) -> bool:  # the same floating-point threshold as BH's own comparison
        return bool(smallest_p <= (k / float(m)) * a)

    k = max(1, math.ceil(m * smallest_p / a))
    while k > 1 and reaches(k - 1):  # the rounded estimate may be off by a step either way
        k -= 1
    while k <= m and not reaches(k):
        k += 1
    return k if k <= m else None
