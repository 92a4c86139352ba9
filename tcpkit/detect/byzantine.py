"""Lying nodes: how far do they degrade detection, with the exact and with the robust combine?

Each network node summarises the baseline-period features of its own agents as
:class:`~tcpkit.detect.moments.Moments`; a fraction of the nodes lie. The global
baseline is combined from the published moments (naively or robustly, see
:mod:`tcpkit.detect.combine`), turned into a :class:`~tcpkit.detect.baseline.Baseline`,
calibrated on a vetted clean reference set, and used to detect the compromised
agents of :func:`~tcpkit.detect.simulate.simulate_network`. Two lies:

``shift``
    the gross lie: mean moved by 25 standard deviations in every feature,
    covariance inflated 25 times, count claimed 10 times.
``mask``
    the colluding lie: the mean is honest, but the variance of the half of the
    features in which the compromised agents differ most is inflated 900 times
    (standard deviation x30) and the count claimed 10 times, so those agents look
    ordinary. It needs to know the attack, which a colluding node does.
``alie``
    "A Little Is Enough" (Baruch, Baruch and Goldberg 2019): every liar publishes
    the same summary, the honest nodes' average moved by ``z_max`` honest standard
    deviations *across nodes* in each coordinate the robust screen looks at: the
    mean towards the compromised agents, the log variance upwards (which shrinks
    their distances); its count is the median honest count. ``z_max`` is the paper's
    ``Phi^-1((n - s) / n)`` with ``s = floor(n / 2 + 1) - f`` for ``f`` liars among
    ``n`` nodes: the largest shift for which the liars stay closer to the honest
    median than enough honest nodes do, so a median-based screen keeps them. The
    liars know every honest node's summary (the worst case).

Every row reports the combine's bias, ``max_j |mean_j - honest_j| / sd_j``: the
combined mean against the pooled mean of the honest nodes' agents, in units of the
honest agents' standard deviation, and the fraction of liars the combine kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tcpkit.detect.baseline import Baseline
from tcpkit.detect.combine import make_combine, robust_kept
from tcpkit.detect.moments import Moments, merge_all
from tcpkit.detect.simulate import simulate_network

LIES = ("shift", "mask", "alie")
DEFAULT_COMBINES: Mapping[str, Mapping[str, Any]] = {
    "naive": {"method": "chan"},
    "robust": {"method": "robust", "weight_cap": 3.0, "z_threshold": 5.0},
}
CLAIMED_WEIGHT = 10
SHIFT_SD = 25.0  # the gross lie's mean shift, in honest agent SDs (covariance x this too)
MASK_SD_SCALE = 30.0  # the mask lie's SD inflation on the attacked features


def lie(m: Moments, strategy: str, sd: NDArray[np.float64], targets: NDArray[np.intp]) -> Moments:
    """The moments a lying node publishes instead of its honest ``m`` (``shift`` or ``mask``).

    ``alie`` depends on every honest node's summary, not on one node's: see :func:`alie_lie`.
    """
    if strategy == "shift":
        return Moments(m.n * CLAIMED_WEIGHT, m.mean + SHIFT_SD * sd, m.m2 * (SHIFT_SD * CLAIMED_WEIGHT))
    if strategy == "mask":
        scale = np.ones(m.n_features)
        scale[targets] = MASK_SD_SCALE
        return Moments(m.n * CLAIMED_WEIGHT, m.mean, m.m2 * np.outer(scale, scale) * CLAIMED_WEIGHT)
    raise ValueError(f"unknown lie {strategy!r}; choose one of {LIES[:2]} (alie: use alie_lie)")


def alie_z(n_nodes: int, n_liars: int) -> float:
    """Baruch et al.'s ``z_max = Phi^-1((n - s) / n)``, ``s = floor(n / 2 + 1) - f`` (0 without liars)."""
    from scipy.stats import norm

    if n_nodes < 1 or not 0 <= n_liars < n_nodes:
        raise ValueError(f"need 0 <= n_liars < n_nodes, got {n_liars} of {n_nodes}")
    if n_liars == 0:
        return 0.0
    s = n_nodes // 2 + 1 - n_liars
    return float(norm.ppf((n_nodes - s) / n_nodes))


def alie_lie(honest: Sequence[Moments], z: float, direction: NDArray[np.float64]) -> Moments:
    """The one summary every ALIE liar publishes, from the honest nodes' summaries.

    Mean: the honest node means' average plus ``z`` times their standard deviation
    across nodes, signed by ``direction``; variances: the honest log variances'
    average plus ``z`` times their standard deviation (the liar's correlations are the
    honest pooled ones); count: the median honest count.
    """
    if len(honest) < 2:
        raise ValueError("ALIE needs at least two honest summaries to measure their spread")
    means = np.stack([m.mean for m in honest])
    log_var = np.log(np.stack([np.diag(m.covariance()) for m in honest]))
    sign = np.where(np.asarray(direction) < 0, -1.0, 1.0)
    mean = means.mean(axis=0) + z * sign * means.std(axis=0, ddof=1)
    var = np.exp(log_var.mean(axis=0) + z * log_var.std(axis=0, ddof=1))
    pooled = merge_all(list(honest)).covariance()
    root = np.sqrt(np.diag(pooled))
    corr = pooled / np.outer(root, root)
    n = int(np.median([m.n for m in honest]))
    cov = corr * np.outer(np.sqrt(var), np.sqrt(var))
    return Moments(n, mean, cov * (n - 1))


@dataclass(frozen=True)
class LyingRow:
    """Detection quality for one (lie, lying fraction, combine, p-value method)."""

    lie: str
    lying_fraction: float
    combine: str
    pvalues: str
    recall: float
    fpr: float
    n_flagged: int
    bias_sd: float = float("nan")
    liars_kept: float = float("nan")


def _liars_kept(published: Sequence[Moments], liars: set[int], config: Mapping[str, Any]) -> float:
    """Fraction of the liars that the combine keeps (``nan`` without liars; 1 for ``chan``)."""
    if not liars:
        return float("nan")
    if config.get("method", "chan") != "robust":
        return 1.0
    options = {k: v for k, v in config.items() if k != "method"}
    keep = robust_kept(published, **options)
    return float(np.mean([bool(keep[k]) for k in sorted(liars)]))


def lying_node_experiment(
    fractions: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.45),
    *,
    n_agents: int = 2000,
    n_nodes: int = 40,
    compromised_fraction: float = 0.1,
    lies: Sequence[str] = LIES,
    combines: Mapping[str, Mapping[str, Any]] = DEFAULT_COMBINES,
    pvalue_methods: Sequence[str] = ("conformal", "chi2"),
    alpha: float = 0.05,
    n_calibration: int = 1000,
    seed: int = 0,
    world: Mapping[str, Any] | None = None,
) -> list[LyingRow]:
    """Recall and false-positive rate of detection as the lying fraction grows.

    Detection uses ``Baseline.detect(features, alpha, fdr="bh")``: conformal p-values
    (calibrated on ``n_calibration`` agents of a separate clean network) assume only
    exchangeability with that reference; chi-square p-values assume Gaussian features.
    ``world`` holds extra keyword parameters of ``simulate_network`` for both networks
    (for example ``EASY_WORLD``, the stationary world with gross compromises); None
    means the simulator's default world.
    """
    if not fractions or any(not 0 <= f < 0.5 for f in fractions):
        raise ValueError(f"fractions must be in [0, 0.5), got {list(fractions)}")
    if n_nodes < 3 or n_agents < n_nodes * 2:
        raise ValueError("need at least 3 nodes and 2 agents per node")
    for name in lies:
        if name not in LIES:
            raise ValueError(f"unknown lie {name!r}; choose one of {LIES}")
    combine_fns = {name: make_combine(cfg) for name, cfg in combines.items()}
    extra = dict(world or {})
    net = simulate_network(
        n_agents=n_agents, n_nodes=n_nodes, compromised_fraction=compromised_fraction, seed=seed,
        **extra,
    )
    clean = simulate_network(
        n_agents=n_calibration, n_nodes=min(n_nodes, n_calibration), compromised_fraction=0.0,
        seed=seed + 1, **extra,
    )
    X_ref = net.baseline_features
    honest = [Moments.from_batch(X_ref[net.node == k]) for k in range(n_nodes)]
    pooled = Moments.from_batch(X_ref)
    sd = np.sqrt(np.diag(pooled.covariance()))
    X, labels = net.features, net.labels
    # the features in which compromised agents stand out most (per agent, either direction)
    gap = np.mean(np.abs(X[labels] - X[~labels].mean(axis=0)), axis=0) / sd
    targets = np.argsort(gap)[::-1][: max(1, X.shape[1] // 2)]
    direction = X[labels].mean(axis=0) - X[~labels].mean(axis=0)
    rng = np.random.default_rng([seed, 7])
    order = rng.permutation(n_nodes)
    rows: list[LyingRow] = []
    for strategy in lies:
        for fraction in fractions:
            liars = set(order[: round(fraction * n_nodes)].tolist())
            truth = [m for k, m in enumerate(honest) if k not in liars]
            honest_mean = merge_all(truth).mean
            if strategy == "alie":
                fake = alie_lie(truth, alie_z(n_nodes, len(liars)), direction) if liars else None
                published = [fake if k in liars and fake is not None else m for k, m in enumerate(honest)]
            else:
                published = [lie(m, strategy, sd, targets) if k in liars else m for k, m in enumerate(honest)]
            for cname, fn in combine_fns.items():
                merged = fn(published)
                bias = float(np.max(np.abs(merged.mean - honest_mean) / sd))
                kept = _liars_kept(published, liars, combines[cname])
                baseline = Baseline.from_estimate(merged.mean, merged.covariance())
                baseline.calibrate(clean.baseline_features)
                for method in pvalue_methods:
                    result = baseline.detect(X, alpha=alpha, method=method)
                    flags = result.flags
                    rows.append(
                        LyingRow(
                            lie=strategy,
                            lying_fraction=float(fraction),
                            combine=cname,
                            pvalues=method,
                            recall=float((flags & labels).sum() / max(1, labels.sum())),
                            fpr=float((flags & ~labels).sum() / max(1, (~labels).sum())),
                            n_flagged=int(flags.sum()),
                            bias_sd=bias,
                            liars_kept=kept,
                        )
                    )
    return rows


def recall_drop(
    rows: Sequence[LyingRow],
    combine: str = "robust",
    *,
    max_fraction: float = 0.3,
    pvalues: str = "conformal",
    lies: Sequence[str] = LIES,
) -> float:
    """Largest recall lost against no liars, over ``lies`` and fractions up to ``max_fraction``.

    Raises when a needed row is missing (a fraction of 0 is the reference).
    """
    by = {(r.lie, r.lying_fraction, r.combine, r.pvalues): r for r in rows}
    drops = []
    for name in lies:
        clean = by.get((name, 0.0, combine, pvalues))
        if clean is None:
            raise ValueError(f"no row for lie {name!r} at 0 % liars with combine {combine!r} and {pvalues!r}")
        drops += [
            clean.recall - r.recall
            for (lie_, f, c, p), r in by.items()
            if lie_ == name and c == combine and p == pvalues and 0.0 < f <= max_fraction + 1e-12
        ]
    if not drops:
        raise ValueError(f"no rows with liars at fractions <= {max_fraction} for combine {combine!r}")
    return float(max(drops))


def row_at(
    rows: Sequence[LyingRow], lie_name: str, fraction: float, combine: str = "robust", pvalues: str = "conformal"
) -> LyingRow:
    """The row of one (lie, fraction, combine, p-value method); raises naming what is missing."""
    for r in rows:
        if (r.lie, r.combine, r.pvalues) == (lie_name, combine, pvalues) and abs(r.lying_fraction - fraction) < 1e-12:
            return r
    raise ValueError(f"no row for lie {lie_name!r} at {fraction:.0%} liars, combine {combine!r}, {pvalues!r}")
