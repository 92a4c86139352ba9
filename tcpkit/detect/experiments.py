"""Measurements of :class:`~tcpkit.detect.fleet.FleetDetector` over many independent simulated fleets.

Every figure is a mean over fleets with a cluster-bootstrap interval whose unit is the
fleet (all agents of one fleet share one fit, one calibration and one BH cut, so they
are not independent draws). The naive baseline (:func:`tcpkit.detect.fleet.naive_detect`:
classical covariance, chi-square p-values, BH) runs on the same fleets in the same run.

Seeds: ``seed0 + i`` for fleet ``i``; pass tuning seeds
(:data:`tcpkit.detect.seeds.TUNING_SEEDS`) during development.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tcpkit.detect.baseline import DetectionResult
from tcpkit.detect.fleet import FleetDetector, naive_detect
from tcpkit.detect.simulate import ATTACKS, simulate_network

__all__ = ["FdrPoint", "FleetEstimate", "cluster_bootstrap", "contamination_curve", "fdr_curve", "regime_false_alarms"]


@dataclass(frozen=True)
class FleetEstimate:
    """A mean over fleets with its cluster-bootstrap interval (unit: fleet)."""

    value: float
    low: float
    high: float
    n_fleets: int

    def __str__(self) -> str:
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}] (fleets={self.n_fleets})"


def cluster_bootstrap(
    numerators: NDArray[np.float64], denominators: NDArray[np.float64] | None = None, *,
    n_boot: int = 2000, confidence: float = 0.95, seed: int = 0,
) -> FleetEstimate:
    """Ratio of sums (or mean, without denominators) over fleets with a percentile bootstrap over fleets.

    ``numerators[i]`` / ``denominators[i]`` are fleet ``i``'s counts (e.g. false positives
    and clean agents); fleets with a zero denominator carry no information and are
    dropped. Without denominators the per-fleet values are averaged (e.g. realized FDR).
    """
    num = np.asarray(numerators, dtype=np.float64)
    den = np.ones_like(num) if denominators is None else np.asarray(denominators, dtype=np.float64)
    keep = den > 0
    num, den = num[keep], den[keep]
    if num.size == 0:
        return FleetEstimate(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, num.size, size=(n_boot, num.size))
    boot = num[idx].sum(axis=1) / den[idx].sum(axis=1)
    lo, hi = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    return FleetEstimate(float(num.sum() / den.sum()), float(lo), float(hi), int(num.size))


def _run(
    n_fleets: int, seed0: int, sim: Mapping[str, Any], make: Callable[[], FleetDetector],
    per_fleet: Callable[[Any, DetectionResult, DetectionResult], dict[str, float]],
) -> dict[str, NDArray[np.float64]]:
    from threadpoolctl import threadpool_limits

    rows: list[dict[str, float]] = []
    with threadpool_limits(1):  # tiny matrices: threaded BLAS only adds contention
        for i in range(n_fleets):
            net = simulate_network(seed=seed0 + i, **sim)
            k = int(net.params["baseline_windows"])
            det = make().fit(net.windows, net.node)
            ours = det.detect(net.windows, net.node)
            naive = naive_detect(net.windows, k, alpha=det.alpha)
            rows.append(per_fleet(net, ours, naive))
    return {key: np.array([r[key] for r in rows]) for key in rows[0]}


def _counts(prefix: str, net: Any, res: DetectionResult) -> dict[str, float]:
    y = np.asarray(net.labels, dtype=bool)
    f = res.flags
    out = {
        f"{prefix}_fp": float((f & ~y).sum()),
        f"{prefix}_neg": float((~y).sum()),
        f"{prefix}_fdp": float((f & ~y).sum() / max(int(f.sum()), 1)),
    }
    for attack in ATTACKS:
        m = np.asarray(net.attack == attack, dtype=bool)
        out[f"{prefix}_tp_{attack}"] = float((f & m).sum())
        out[f"{prefix}_pos_{attack}"] = float(m.sum())
    return out


def _summarise(raw: Mapping[str, NDArray[np.float64]]) -> dict[str, FleetEstimate]:
    out: dict[str, FleetEstimate] = {}
    for who in ("fleet", "naive"):
        out[f"{who}_fpr"] = cluster_bootstrap(raw[f"{who}_fp"], raw[f"{who}_neg"])
        out[f"{who}_fdr"] = cluster_bootstrap(raw[f"{who}_fdp"])
        for attack in ATTACKS:
            if raw[f"{who}_pos_{attack}"].sum() > 0:
                out[f"{who}_recall_{attack}"] = cluster_bootstrap(raw[f"{who}_tp_{attack}"], raw[f"{who}_pos_{attack}"])
    return out


def contamination_curve(
    fractions: Sequence[float] = (0.0, 0.05, 0.1, 0.2), *, n_fleets: int = 50, n_agents: int = 500,
    seed0: int = 1000, detector_args: Mapping[str, Any] | None = None, **sim: Any,
) -> dict[float, dict[str, FleetEstimate]]:
    """FPR, realized FDR and recall per attack of FleetDetector and the naive baseline, per contamination."""
    args = dict(detector_args or {})
    out = {}
    for frac in fractions:
        raw = _run(
            n_fleets, seed0, {"n_agents": n_agents, "compromised_fraction": frac, **sim},
            lambda: FleetDetector(**args),
            lambda net, a, b: {**_counts("fleet", net, a), **_counts("naive", net, b)},
        )
        out[float(frac)] = _summarise(raw)
    return out


@dataclass(frozen=True)
class FdrPoint:
    """Realized FDR at one level ``q`` over independent fleets, with its Monte Carlo error.

    ``realized`` is the mean false discovery proportion over fleets (0 for a fleet with no
    discovery), ``se`` its Monte Carlo standard error (SD of the per-fleet FDP over
    ``sqrt(n_fleets)``; fleets are independent), ``margin = q + 2 se - realized``: the
    requirement "realized FDR within q plus two Monte Carlo standard errors" holds when
    ``margin >= 0``. ``naive`` is the naive baseline's realized FDR on the same fleets.
    ``regime_fpr`` is the false-alarm rate among clean agents whose node had a benign regime
    change after the reference period (ratio of sums over fleets; nan when no fleet had one),
    over ``regime_agents`` such agents.
    """

    q: float
    realized: float
    se: float
    naive: float
    n_fleets: int
    regime_fpr: float = float("nan")
    regime_agents: int = 0

    @property
    def margin(self) -> float:
        return self.q + 2.0 * self.se - self.realized


def fdr_curve(
    qs: Sequence[float] = (0.01, 0.05, 0.1), *, n_fleets: int = 200, n_agents: int = 120,
    compromised_fraction: float = 0.0, seed0: int = 2000,
    detector_args: Mapping[str, Any] | None = None, **sim: Any,
) -> dict[float, FdrPoint]:
    """Realized FDR of FleetDetector (and the naive baseline) at each ``q`` over ``n_fleets`` fleets.

    Each fleet is simulated once and judged once: the p-values do not depend on ``q``
    (the self test is sized for the smallest), so BH at every ``q`` is applied to the same
    p-values, as a user choosing ``q`` afterwards would. Under the all-clean null
    (``compromised_fraction=0``) the FDR is the probability of any false discovery.
    """
    from threadpoolctl import threadpool_limits

    from tcpkit.detect.baseline import decide

    levels = sorted(float(q) for q in qs)
    args = dict(detector_args or {})
    fdp: dict[float, list[float]] = {q: [] for q in levels}
    naive_fdp: dict[float, list[float]] = {q: [] for q in levels}
    regime_false = dict.fromkeys(levels, 0)
    regime_agents = 0
    with threadpool_limits(1):  # tiny matrices: threaded BLAS only adds contention
        for i in range(n_fleets):
            net = simulate_network(
                seed=seed0 + i, n_agents=n_agents, compromised_fraction=compromised_fraction, **sim
            )
            clean = ~np.asarray(net.labels, dtype=bool)
            k = int(net.params["baseline_windows"])
            regime = np.asarray(net.regime_change_agents(since=k), dtype=bool) & clean
            regime_agents += int(regime.sum())
            ours = FleetDetector(alpha=levels[0], **args).fit(net.windows, net.node).detect(net.windows, net.node)
            naive = naive_detect(net.windows, k, alpha=levels[0])
            for q in levels:
                for result, out in ((ours, fdp), (naive, naive_fdp)):
                    flags, _ = decide(result.pvalues, q, "bh")
                    out[q].append(float((flags & clean).sum() / max(int(flags.sum()), 1)))
                    if result is ours:
                        regime_false[q] += int((flags & regime).sum())
    points = {}
    for q in levels:
        values = np.asarray(fdp[q])
        points[q] = FdrPoint(
            q=q,
            realized=float(values.mean()),
            se=float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else float("nan"),
            naive=float(np.mean(naive_fdp[q])),
            n_fleets=int(values.size),
            regime_fpr=regime_false[q] / regime_agents if regime_agents else float("nan"),
            regime_agents=regime_agents,
        )
    return points


def regime_false_alarms(
    *, n_fleets: int = 50, n_agents: int = 500, compromised_fraction: float = 0.1, seed0: int = 3000,
    detector_args: Mapping[str, Any] | None = None, **sim: Any,
) -> dict[str, FleetEstimate]:
    """False-alarm rate among clean agents whose node had a benign regime change after the reference.

    Uses the simulator's ground truth (``SimulatedNetwork.regime_change_agents``); the
    default world has fleet- and node-wide regime changes switched on.
    """
    args = dict(detector_args or {})

    def per_fleet(net: Any, a: DetectionResult, b: DetectionResult) -> dict[str, float]:
        k = int(net.params["baseline_windows"])
        hit = np.asarray(net.regime_change_agents(since=k), dtype=bool) & ~np.asarray(net.labels, dtype=bool)
        return {
            "fleet_fp": float((a.flags & hit).sum()), "naive_fp": float((b.flags & hit).sum()),
            "n": float(hit.sum()),
        }

    raw = _run(n_fleets, seed0, {"n_agents": n_agents, "compromised_fraction": compromised_fraction, **sim},
               lambda: FleetDetector(**args), per_fleet)
    return {
        "fleet_regime_fpr": cluster_bootstrap(raw["fleet_fp"], raw["n"]),
        "naive_regime_fpr": cluster_bootstrap(raw["naive_fp"], raw["n"]),
    }


def _print(title: str, table: Mapping[Any, Mapping[str, FleetEstimate]]) -> None:
    print(title)
    for key, row in table.items():
        for name, est in row.items():
            print(f"  {key}\t{name}\t{est}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tcpkit.detect.experiments WHAT [--world calm|default] [--fleets N] [--agents N]``.

    WHAT is one of ``fdr`` (all-clean null, q = 0.01, 0.05, 0.1), ``contamination``
    (0, 5, 10, 20 %), ``regime`` (false alarms on nodes with a benign regime change) or
    ``small`` (10 % compromised in fleets of ``--agents``, default 240). Every table is
    per fleet with cluster-bootstrap intervals over fleets.
    """
    import argparse
    import warnings

    from tcpkit.detect.simulate import EASY_WORLD

    parser = argparse.ArgumentParser(prog="python -m tcpkit.detect.experiments")
    parser.add_argument("what", choices=("fdr", "contamination", "regime", "small"))
    parser.add_argument("--world", choices=("calm", "default"), default="default")
    parser.add_argument("--fleets", type=int, default=None)
    parser.add_argument("--agents", type=int, default=None)
    parser.add_argument("--seed0", type=int, default=None)
    args = parser.parse_args(argv)
    world: dict[str, Any] = dict(EASY_WORLD) if args.world == "calm" else {}
    warnings.simplefilter("ignore")
    if args.what == "fdr":
        print(f"realized FDR, all-clean null, world={args.world}")
        for q, point in fdr_curve(
            n_fleets=args.fleets or 200, n_agents=args.agents or 120, seed0=args.seed0 or 2000, **world
        ).items():
            print(f"  q={q:g}\trealized {point.realized:.4f} (MC se {point.se:.4f}, margin {point.margin:+.4f}); "
                  f"naive {point.naive:.4f}; fleets={point.n_fleets}")
    elif args.what == "contamination":
        _print(f"contamination curve, world={args.world}", contamination_curve(
            n_fleets=args.fleets or 30, n_agents=args.agents or 500, seed0=args.seed0 or 1000, **world))
    elif args.what == "regime":
        _print(f"false alarms during regime changes, world={args.world}", {"regime": regime_false_alarms(
            n_fleets=args.fleets or 50, n_agents=args.agents or 500, seed0=args.seed0 or 3000, **world)})
    else:
        _print(f"small fleets, world={args.world}", contamination_curve(
            (0.1,), n_fleets=args.fleets or 50, n_agents=args.agents or 240, seed0=args.seed0 or 4000, **world))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
