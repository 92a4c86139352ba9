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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tcpkit.detect.baseline import Baseline
from tcpkit.detect.combine import make_combine
from tcpkit.detect.moments import Moments
from tcpkit.detect.simulate import simulate_network

LIES = ("shift", "mask")
DEFAULT_COMBINES: Mapping[str, Mapping[str, Any]] = {
    "naive": {"method": "chan"},
    "robust": {"method": "robust", "weight_cap": 3.0, "z_threshold": 5.0},
}
CLAIMED_WEIGHT = 10


def lie(m: Moments, strategy: str, sd: NDArray[np.float64], targets: NDArray[np.intp]) -> Moments:
    """The moments a lying node publishes instead of its honest ``m``."""
    if strategy == "shift":
        return Moments(m.n * CLAIMED_WEIGHT, m.mean + 25.0 * sd, m.m2 * (25.0 * CLAIMED_WEIGHT))
    if strategy == "mask":
        scale = np.ones(m.n_features)
        scale[targets] = 30.0
        return Moments(m.n * CLAIMED_WEIGHT, m.mean, m.m2 * np.outer(scale, scale) * CLAIMED_WEIGHT)
    raise ValueError(f"unknown lie {strategy!r}; choose one of {LIES}")


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


def lying_node_experiment(
    fractions: Sequence[float] = (0.0, 0.1, 0.2, 0.3),
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
    rng = np.random.default_rng([seed, 7])
    order = rng.permutation(n_nodes)
    rows: list[LyingRow] = []
    for strategy in lies:
        for fraction in fractions:
            liars = set(order[: round(fraction * n_nodes)].tolist())
            published = [lie(m, strategy, sd, targets) if k in liars else m for k, m in enumerate(honest)]
            for cname, fn in combine_fns.items():
                merged = fn(published)
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
                        )
                    )
    return rows
