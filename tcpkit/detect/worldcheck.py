"""Is the default simulated world hard on one feature and winnable on all of them?

Why
---
The default world (:func:`tcpkit.detect.simulate.simulate_network` with its default
parameters) must be one where no attack type stands out on a single feature by more
than 3 clean-agent SDs (:func:`tcpkit.detect.separability.separability_table`), while
the shipped detectors, which combine every feature, still find the compromises. This
module measures both on a few tuning seeds, so that the world's magnitudes can be set
by measurement rather than by guess:

* the largest best-single-feature effect over attack types (change or level), and the
  recall ceiling of a linear test that knows each attack's shift
  (:func:`tcpkit.detect.separability.oracle_recall`);
* :class:`~tcpkit.detect.composite.NetworkDetector` (built by
  :func:`tcpkit.detect.config.build_detector` on every feature) fitted on a vetted clean
  reference audited inside the monitored fleet (:func:`tcpkit.detect.audited.audited_fleet`:
  one network, so the reference shares the fleet's regime history, as the adaptive test
  needs), judging the monitored agents: recall per attack type and the false-positive rate;
* :class:`~tcpkit.detect.fleet.FleetDetector` fitted and judging the monitored fleet
  itself with its nodes: recall per attack type, realized FDR and the false-positive
  rate among clean agents whose node had a regime change in the detection period.

Every figure is pooled over the seeds given (agents of one fleet share one fit, so the
seeds, not the agents, are the independent units; with a handful of seeds this is a
tuning aid, not a gate). Run ``python -m tcpkit.detect.worldcheck`` (tuning seeds only:
a held-out gate seed is refused).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tcpkit.detect.audited import audited_fleet
from tcpkit.detect.config import DetectorConfig, build_detector
from tcpkit.detect.fleet import FleetDetector
from tcpkit.detect.seeds import check_tuning_seed
from tcpkit.detect.separability import oracle_recall, separability_table
from tcpkit.detect.simulate import ATTACKS, FEATURE_NAMES, SimulatedNetwork

__all__ = ["WorldCheck", "check_seed", "main", "pooled"]


@dataclass(frozen=True)
class WorldCheck:
    """Counts from one tuning seed (pool them with :func:`pooled`).

    ``network_*`` are NetworkDetector counts, ``fleet_*`` FleetDetector counts;
    ``*_hits[a]`` / ``n_attacked[a]`` is the recall of attack ``a``.
    """

    seed: int
    max_effect: float
    effects: dict[str, float]
    n_attacked: dict[str, int]
    n_clean: int
    network_hits: dict[str, int]
    network_false: int
    fleet_hits: dict[str, int]
    fleet_false: int
    fleet_flagged: int
    fleet_regime_clean: int
    fleet_regime_false: int
    oracle: dict[str, float]
    seconds: float


def _hits(flags: np.ndarray, net: SimulatedNetwork) -> dict[str, int]:
    return {a: int(np.sum(flags & (net.attack == a))) for a in ATTACKS if np.any(net.attack == a)}


def check_seed(
    seed: int,
    world: Mapping[str, Any] | None = None,
    *,
    n_monitored: int = 3000,
    n_reference: int = 4000,
    compromised_fraction: float = 0.1,
    network_alpha: float = 0.01,
    fleet_alpha: float = 0.05,
    fleet: bool = True,
    studentize: bool = True,
    detector: Mapping[str, Any] | None = None,
) -> WorldCheck:
    """Separability and both detectors' counts on tuning seed ``seed``.

    ``world`` holds keyword parameters of :func:`simulate_network` that differ from its
    defaults (applied to the monitored and the reference fleet alike). ``studentize`` is
    the NetworkDetector's setting of that name (False: raw changes, to compare);
    ``detector`` holds further :class:`~tcpkit.detect.config.DetectorConfig` settings.
    """
    check_tuning_seed(seed)
    kw = dict(world or {})
    t0 = time.perf_counter()
    audited = audited_fleet(n_monitored, n_reference, compromised_fraction, seed, **kw)
    net, ref = audited.monitored_network, audited.reference_network
    table = separability_table(net)
    clean = ~net.labels
    k = int(net.params["baseline_windows"])
    det = build_detector(
        DetectorConfig(
            features=FEATURE_NAMES, alpha=network_alpha, reference_windows=k, studentize=studentize
        ).replace(**dict(detector or {}))
    ).fit(ref.windows)
    res = det.detect(net.windows)
    fleet_hits: dict[str, int] = {}
    fleet_false = fleet_flagged = regime_clean = regime_false = 0
    if fleet:
        fd = FleetDetector(alpha=fleet_alpha, reference_windows=k, feature_names=FEATURE_NAMES)
        fr = fd.fit(net.windows, net.node).detect(net.windows, net.node)
        fleet_hits = _hits(fr.flags, net)
        fleet_false = int(np.sum(fr.flags & clean))
        fleet_flagged = int(fr.flags.sum())
        regime = net.regime_change_agents() & clean
        regime_clean = int(regime.sum())
        regime_false = int(np.sum(fr.flags & regime))
    return WorldCheck(
        seed=seed,
        max_effect=float(table.max_effect),
        effects={r.attack: r.max_effect for r in table.rows},
        n_attacked={r.attack: r.n_attacked for r in table.rows},
        n_clean=int(clean.sum()),
        network_hits=_hits(res.flags, net),
        network_false=int(np.sum(res.flags & clean)),
        fleet_hits=fleet_hits,
        fleet_false=fleet_false,
        fleet_flagged=fleet_flagged,
        fleet_regime_clean=regime_clean,
        fleet_regime_false=regime_false,
        oracle=oracle_recall(net, network_alpha * compromised_fraction),
        seconds=time.perf_counter() - t0,
    )


def pooled(checks: Sequence[WorldCheck]) -> dict[str, Any]:
    """Pool seeds: recall per attack (hits / attacked), FPR, realized FDR (mean over seeds)."""
    attacks = [a for a in ATTACKS if any(a in c.n_attacked for c in checks)]
    n_att = {a: sum(c.n_attacked.get(a, 0) for c in checks) for a in attacks}
    n_clean = sum(c.n_clean for c in checks)

    def recall(field: str) -> dict[str, float]:
        return {a: sum(getattr(c, field).get(a, 0) for c in checks) / n_att[a] for a in attacks}

    fdr = [c.fleet_false / c.fleet_flagged if c.fleet_flagged else 0.0 for c in checks]
    regime_clean = sum(c.fleet_regime_clean for c in checks)
    return {
        "max_effect": max(c.max_effect for c in checks),
        "effects": {a: max(c.effects.get(a, 0.0) for c in checks) for a in attacks},
        "oracle_recall": {a: float(np.mean([c.oracle[a] for c in checks if a in c.oracle])) for a in attacks},
        "network_recall": recall("network_hits"),
        "network_fpr": sum(c.network_false for c in checks) / n_clean,
        "fleet_recall": recall("fleet_hits"),
        "fleet_fdr": float(np.mean(fdr)),
        "fleet_fdr_max": float(np.max(fdr)),
        "fleet_fpr": sum(c.fleet_false for c in checks) / n_clean,
        "fleet_regime_fpr": sum(c.fleet_regime_false for c in checks) / regime_clean
        if regime_clean
        else float("nan"),
    }


def _format(p: Mapping[str, Any], fleet: bool) -> str:
    def row(d: Mapping[str, float]) -> str:
        return " ".join(f"{a}={v:.3f}" for a, v in d.items())

    lines = [
        f"separability max effect (clean-agent SDs): {p['max_effect']:.2f}",
        f"  per attack: {row(p['effects'])}",
        "ceiling of linear tests of the raw means (knowing each attack's shift, at the per-agent rate BH flags at, "
        f"alpha x compromised share): {row(p['oracle_recall'])}",
        f"NetworkDetector recall: {row(p['network_recall'])}",
        f"NetworkDetector FPR: {p['network_fpr']:.4f}",
    ]
    if fleet:
        lines += [
            f"FleetDetector recall: {row(p['fleet_recall'])}",
            f"FleetDetector realized FDR: mean {p['fleet_fdr']:.4f} max {p['fleet_fdr_max']:.4f}; "
            f"FPR {p['fleet_fpr']:.4f}; FPR on regime-changed clean agents "
            f"{p['fleet_regime_fpr']:.4f}",
        ]
    return "\n".join(lines)


def _assignments(parser: argparse.ArgumentParser, option: str, items: Sequence[str]) -> dict[str, Any]:
    """``NAME=VALUE`` strings as a mapping (integers, then numbers, then strings)."""
    out: dict[str, Any] = {}
    for item in items:
        name, _, value = item.partition("=")
        if not name or not value:
            parser.error(f"{option} {item!r}: expected NAME=VALUE")
        try:
            out[name] = int(value)
        except ValueError:
            try:
                out[name] = float(value)
            except ValueError:
                out[name] = {"true": True, "false": False}.get(value.lower(), value)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m tcpkit.detect.worldcheck [--seeds 0 1 2] [--no-fleet]``."""
    parser = argparse.ArgumentParser(prog="python -m tcpkit.detect.worldcheck", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="tuning seeds")
    parser.add_argument("--no-fleet", action="store_true", help="skip the FleetDetector")
    parser.add_argument("--network-alpha", type=float, default=0.01, help="NetworkDetector BH level")
    parser.add_argument(
        "--no-studentize", action="store_true", help="NetworkDetector on raw changes (studentize=False)"
    )
    parser.add_argument(
        "--detector", action="append", default=[], metavar="NAME=VALUE",
        help="a DetectorConfig setting of the NetworkDetector (repeatable), e.g. change_model=difference",
    )
    parser.add_argument("--n-monitored", type=int, default=3000, help="agents of the monitored fleet")
    parser.add_argument("--n-reference", type=int, default=4000, help="agents of the vetted reference fleet")
    parser.add_argument("--compromised", type=float, default=0.1, help="compromised fraction of the monitored fleet")
    parser.add_argument("--fleet-alpha", type=float, default=0.05, help="FleetDetector BH level")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE",
        help="a simulate_network parameter for both fleets (repeatable), e.g. regime_scale=0.5",
    )
    args = parser.parse_args(argv)
    world = _assignments(parser, "--set", args.set)
    detector = _assignments(parser, "--detector", args.detector)
    checks = []
    for seed in args.seeds:
        c = check_seed(
            seed, world, fleet=not args.no_fleet,
            network_alpha=args.network_alpha, fleet_alpha=args.fleet_alpha,
            studentize=not args.no_studentize, detector=detector,
            n_monitored=args.n_monitored, n_reference=args.n_reference,
            compromised_fraction=args.compromised,
        )
        print(f"seed {seed}: {c.seconds:.1f} s", flush=True)
        checks.append(c)
    print(_format(pooled(checks), not args.no_fleet))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
