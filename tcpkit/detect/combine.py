"""Global combines of per-node moments: the exact Chan fold and a robust one against lying nodes.

The CRDT guarantees that every replica sees the same entries; it cannot
guarantee that the entries are honest. A node may publish extreme moments (a
shifted mean, an inflated covariance, a claimed count of a billion rows). The
exact pooled estimate (:func:`combine_chan`) lets one such node move the
baseline arbitrarily far. :func:`combine_robust` bounds that influence in two
steps, both deterministic functions of the entries in sorted node order (so
replicas with equal maps still get bit-identical baselines):

1. **weight cap** - no node counts for more than ``weight_cap`` times the median
   node count (its mean and covariance are kept, its co-moments rescaled);
2. **screening** - each node is summarised by its mean and its log variances;
   a node whose summary lies more than ``z_threshold`` robust z-units from the
   median in any coordinate is left out, and the rest are Chan-merged. The unit
   is the larger of the spread across nodes (MAD) and the node's own sampling
   error (``sqrt(var / n)`` for a mean, ``sqrt(2 / (n - 1))`` for a log
   variance): with few nodes the MAD of a handful of honest summaries can be
   tiny by chance, and a node must not be dropped for deviating no more than
   its own sample size explains.

With fewer than half of the nodes lying, the medians stay honest, so gross lies
are removed and subtle ones can move the result by at most about
``z_threshold`` MADs of the honest node means times the lying fraction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tcpkit.detect.moments import Moments, merge_all

METHODS = ("chan", "robust")
_MAD_SCALE = 1.4826


def combine_chan(parts: Sequence[Moments]) -> Moments:
    """Exact pooled moments: the Chan fold in the given order."""
    if not parts:
        raise ValueError("combine needs at least one Moments")
    return merge_all(parts)


def screen_mask(parts: Sequence[Moments], z_threshold: float) -> np.ndarray:
    """Boolean mask of the nodes kept by the robust screen (see module docstring)."""
    if z_threshold <= 0:
        raise ValueError(f"z_threshold must be positive, got {z_threshold}")
    k = len(parts)
    if k < 3:
        return np.ones(k, dtype=bool)
    means = np.stack([p.mean for p in parts])
    with np.errstate(divide="ignore", invalid="ignore"):
        variances = np.stack(
            [np.diag(p.m2) / (p.n - 1) if p.n > 1 else np.full(p.n_features, np.nan) for p in parts]
        )
        log_var = np.log(variances)
    summary = np.concatenate([means, log_var], axis=1)
    centre = np.nanmedian(summary, axis=0)
    spread = _MAD_SCALE * np.nanmedian(np.abs(summary - centre), axis=0)
    # a spread of zero (identical honest summaries) must not turn rounding into outliers
    floor = 1e-9 * np.maximum(np.abs(centre), 1.0)
    spread = np.where(np.isfinite(spread), np.maximum(spread, floor), np.inf)
    counts = np.array([float(p.n) for p in parts])
    typical_var = np.nanmedian(variances, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sampling = np.concatenate(
            [
                np.sqrt(typical_var[None, :] / counts[:, None]),
                np.repeat(np.sqrt(2.0 / (counts - 1.0))[:, None], means.shape[1], axis=1),
            ],
            axis=1,
        )
    sampling = np.where(np.isfinite(sampling), sampling, 0.0)
    with np.errstate(invalid="ignore"):
        z = np.abs(summary - centre) / np.maximum(spread[None, :], sampling)
    z = np.where(np.isnan(z), 0.0, z)  # nodes with one row have no variance to judge
    return np.asarray(np.max(z, axis=1) <= z_threshold)


def robust_kept(
    parts: Sequence[Moments], *, weight_cap: float | None = 3.0, z_threshold: float = 5.0
) -> np.ndarray:
    """Boolean mask over ``parts``: the nodes :func:`combine_robust` merges.

    Empty parts (no rows) are marked kept: they add nothing to the fold.
    """
    if not parts:
        raise ValueError("combine needs at least one Moments")
    nonempty = np.array([p.n > 0 for p in parts])
    work = [p for p in parts if p.n > 0]
    keep = np.ones(len(parts), dtype=bool)
    if not work:
        return keep
    if weight_cap is not None:
        if weight_cap < 1:
            raise ValueError(f"weight_cap must be >= 1 (a multiple of the median count), got {weight_cap}")
        cap = max(1, int(weight_cap * float(np.median([p.n for p in work]))))
        work = [p.reweighted(cap) if p.n > cap else p for p in work]
    keep[nonempty] = screen_mask(work, z_threshold)
    return keep


def combine_robust(
    parts: Sequence[Moments], *, weight_cap: float | None = 3.0, z_threshold: float = 5.0
) -> Moments:
    """Weight-capped, outlier-screened Chan fold (see module docstring)."""
    keep = robust_kept(parts, weight_cap=weight_cap, z_threshold=z_threshold)
    work = [p for p in parts if p.n > 0]
    if not work:
        return merge_all(parts)
    if weight_cap is not None:
        cap = max(1, int(weight_cap * float(np.median([p.n for p in work]))))
        parts = [p.reweighted(cap) if p.n > cap else p for p in parts]
    kept = [p for p, ok in zip(parts, keep, strict=True) if ok and p.n > 0]
    return merge_all(kept)


def make_combine(config: Mapping[str, Any]) -> Any:
    """A ``combine(parts) -> Moments`` callable from a configuration mapping.

    ``{"method": "chan"}`` or ``{"method": "robust", "weight_cap": 3.0, "z_threshold": 5.0}``.
    """
    options = dict(config)
    method = options.pop("method", "chan")
    if method not in METHODS:
        raise ValueError(f"unknown combine method {method!r}; choose one of {METHODS}")
    if method == "chan":
        if options:
            raise ValueError(f"combine method 'chan' takes no options, got {sorted(options)}")
        return combine_chan
    unknown = set(options) - {"weight_cap", "z_threshold"}
    if unknown:
        raise ValueError(f"unknown robust combine options {sorted(unknown)}")

    def combine(parts: Sequence[Moments]) -> Moments:
        return combine_robust(parts, **options)

    return combine
