"""The per-window statistics behind :mod:`tcpkit.detect.features`, one pass of numpy each.

Every function takes, per event, the *cell* of its (agent, window), ``key = agent * n_windows
+ window`` (non-decreasing when the events are sorted by agent and time, as the feature code
keeps them), and returns one value per cell (``cells`` of them): sums are
:func:`numpy.bincount` over the keys, order statistics one sort, novelty one sort of
(agent, item) pairs. No Python loop runs per event, per cell or per agent.

Why a module of its own: these are the hot loops of ``tcpkit detect`` (features of 1e8
events), written for speed where the definitions in :mod:`tcpkit.detect.features` are
written for reading; each result is exactly (bit for bit) what the plain definition gives.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from tcpkit.detect.simulate import ERROR_TOLERANCE, RISK_CLASSES, RISK_LEVELS

__all__ = ["assessment", "divide", "mean_std", "novelty", "p95", "underrating"]

LEVELS = np.array([RISK_LEVELS[c] for c in RISK_CLASSES], dtype=np.float64)
N_CLASSES = len(RISK_CLASSES)
_RADIX_CELLS = 1 << 16  # numpy's stable sort of 16-bit integers is a radix sort
_DENSE_CELLS = 1 << 24  # largest (window, family x class) table underrating fills densely


def _sum(key: NDArray[np.int64], weights: NDArray[np.float64], cells: int) -> NDArray[np.float64]:
    """Per-cell sums of ``weights`` (float64 even when there are no events)."""
    return np.bincount(key, weights, minlength=cells).astype(np.float64, copy=False)


def divide(num: NDArray[Any], den: NDArray[Any]) -> NDArray[np.float64]:
    """num / den, NaN where den is 0."""
    out = np.full(num.shape, np.nan)
    np.divide(num.astype(np.float64, copy=False), den, out=out, where=den > 0)
    return out


def assessment(
    values: dict[str, NDArray[np.float64]],
    key: NDArray[np.int64],
    p: NDArray[np.float64],
    cls: NDArray[np.int64],
    cells: int,
) -> None:
    """The seven assessment features of the events (predicted risk ``p``, class index ``cls``)."""
    resid = p - LEVELS[cls]
    absr = np.abs(resid)
    n = np.bincount(key, minlength=cells).astype(np.float64)
    values["accuracy"] = 1.0 - divide(_sum(key, absr, cells), n)
    values["bias"] = divide(_sum(key, resid, cells), n)
    k5 = key * N_CLASSES + cls
    cnt = np.bincount(k5, minlength=cells * N_CLASSES).reshape(cells, N_CLASSES).astype(np.float64)
    rsum = _sum(k5, resid, cells * N_CLASSES).reshape(cells, N_CLASSES)
    psum = _sum(k5, p, cells * N_CLASSES).reshape(cells, N_CLASSES)
    values["bias_safe"] = divide(rsum[:, 0], cnt[:, 0])
    values["bias_network_privesc"] = divide(rsum[:, 1] + rsum[:, 2], cnt[:, 1] + cnt[:, 2])
    values["bias_high_risk"] = divide(rsum[:, 3] + rsum[:, 4], cnt[:, 3] + cnt[:, 4])
    values["error_rate"] = divide(
        _sum(key, (absr > ERROR_TOLERANCE).astype(np.float64), cells), n
    )
    between = np.zeros_like(psum)
    np.divide(psum * psum, cnt, out=between, where=cnt > 0)
    within = np.maximum(_sum(key, p * p, cells) - between.sum(axis=1), 0.0)
    present = (cnt > 0).sum(axis=1)
    consistency = np.sqrt(within / np.maximum(n - present, 1.0))
    values["consistency"] = np.where(n > 0, consistency, np.nan)


def mean_std(
    key: NDArray[np.int64], x: NDArray[np.float64], cells: int, std: bool = True
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean and population standard deviation of ``x`` per cell (NaN for an empty cell)."""
    n = np.bincount(key, minlength=cells).astype(np.float64)
    mean = divide(_sum(key, x, cells), n)
    if not std:
        return mean, mean
    dev = x - mean[key]
    return mean, np.sqrt(divide(_sum(key, dev * dev, cells), n))


def p95(key: NDArray[np.int64], x: NDArray[np.float64], cells: int) -> NDArray[np.float64]:
    """Nearest-rank 95th percentile per cell: the ``ceil(0.95 n)``-th smallest value.

    Cells of one size (count windows) are rows of a matrix, partitioned in place; otherwise
    the values are sorted once and then, stably, by cell (a radix sort for up to 65536 cells).
    """
    n = np.bincount(key, minlength=cells)
    out = np.full(cells, np.nan)
    has = n > 0
    if not has.any():
        return out
    sizes = n[has]
    rank = np.ceil(0.95 * sizes).astype(np.int64) - 1
    contiguous = bool(np.all(key[1:] >= key[:-1]))
    if contiguous and sizes.min() == sizes.max():
        m = int(sizes[0])
        r = int(rank[0])
        out[has] = np.partition(x.reshape(-1, m), r, axis=1)[:, r]
        return out
    by_value = np.argsort(x)  # ties hold equal values: any order gives the same percentile
    cell = key[by_value]
    if cells <= _RADIX_CELLS:
        cell = cell.astype(np.uint16)
    xs = x[by_value[np.argsort(cell, kind="stable")]]  # by cell, then value
    start = np.concatenate(([0], np.cumsum(n)))[:-1]
    out[has] = xs[start[has] + rank]
    return out


def underrating(
    key: NDArray[np.int64],
    resid: NDArray[np.float64],
    cell: NDArray[np.int64],
    n_cell: int,
    cells: int,
) -> NDArray[np.float64]:
    """``sum over (family, class) cells of max(-sum resid, 0)^2 / n_c``, per window.

    The (window, family x class) sums are one bincount over a dense table of the
    combinations that occur (the plain definition sorts the pairs instead: same sums,
    added in the same order).
    """
    used = np.bincount(cell, minlength=n_cell) > 0
    compact = np.cumsum(used) - 1  # the occurring combinations, in order
    m = int(used.sum())
    if m and cells * m <= _DENSE_CELLS:
        k = key * m + compact[cell]
        s = _sum(k, resid, cells * m)
        cnt = np.bincount(k, minlength=cells * m)
        nz = np.flatnonzero(cnt)
        under = np.maximum(-s[nz], 0.0)
        under = under * under / cnt[nz].astype(np.float64)
        return _sum(nz // m, under, cells)
    k = key * n_cell + cell
    uniq, inv = np.unique(k, return_inverse=True)
    sums = np.bincount(inv, resid)
    cnt_f = np.bincount(inv).astype(np.float64)
    under = np.maximum(-sums, 0.0)
    under = under * under / cnt_f
    return _sum(uniq // n_cell, under, cells)


def novelty(
    ag: NDArray[np.int64],
    win: NDArray[np.int64],
    item: NDArray[np.int64],
    key: NDArray[np.int64],
    ref: int,
    cells: int,
) -> NDArray[np.float64]:
    """Share of each window's items the agent did not have in its reference windows.

    In a reference window the window itself does not count as reference: an item
    is novel there when no *other* reference window has it.
    """
    total = np.bincount(key, minlength=cells).astype(np.float64)
    if item.size == 0:
        return divide(np.zeros(cells), total)
    # compact (agent, item) pairs to 0..m-1, one sort
    pair = ag * (int(item.max()) + 1) + item
    order = np.argsort(pair)
    ps = pair[order]
    new = np.empty(ps.size, dtype=bool)
    new[0] = True
    np.not_equal(ps[1:], ps[:-1], out=new[1:])
    code = np.empty(ps.size, dtype=np.int64)
    code[order] = np.cumsum(new) - 1
    m = int(new.sum())
    # reference windows holding each pair: a (pair, window) presence table
    in_ref = win < ref
    present = np.zeros(m * ref, dtype=bool)
    present[code[in_ref] * ref + win[in_ref]] = True
    windows_with = present.reshape(m, ref).sum(axis=1)
    seen_in = windows_with[code]
    novel = np.where(in_ref, seen_in <= 1, seen_in == 0)
    return divide(_sum(key, novel.astype(np.float64), cells), total)
