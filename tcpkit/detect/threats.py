"""Threat-model directions: one-sided tests along the directions the known compromise types move.

The detector's omnibus tests (the change, level and window distances) spread their evidence
over every feature, and a compromise that moves a few features by about three clean-agent SDs
each is only a few SDs away in twelve dimensions, where a chi-square tail must also pay for the
nine or ten directions that carry nothing. A user who knows what the attacks look like (a red
team's labelled exercises; here the simulator's compromise types, :data:`tcpkit.detect.simulate.ATTACKS`)
can test those directions alone.

:class:`ThreatDirections` holds one unit direction per compromise type in the detector's own
agent space (its change and its level in the level test's space, side by side), learned as the
Fisher direction ``Sigma^-1 (median_attack - median_clean)`` on a *labelled library world*
(:func:`library_world`: a simulated fleet from the tuning seed range, never a gate's). Its score
of an agent is the largest standardised projection ``max_j (x . v_j - m_j) / s_j`` (median and
MAD-based scale ``m_j, s_j`` on the detector's fitting agents), a function of the agent alone, so
the detector's conformal min-p over the calibration agents stays exact: the p-value guarantee
asks nothing of the directions. What they decide is power, and the price is explicit: the test
finds compromises that move *like the library's*; a new kind of attack is left to the omnibus and
adaptive tests. On real telemetry the directions are the simulator's threat model, a hypothesis
that costs power, never validity, when it is wrong.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

LIBRARY_AGENTS = 6000
LIBRARY_COMPROMISED = 0.35


class ThreatError(ValueError):
    """Threat directions that cannot be learned or used (bad shapes, non-finite values)."""


@dataclass(frozen=True)
class ThreatDirections:
    """Unit directions per compromise type and the fitting agents' location and scale along each."""

    attacks: tuple[str, ...]
    directions: NDArray[np.float64]  # (k, p)
    location: NDArray[np.float64]  # (k,)
    scale: NDArray[np.float64]  # (k,)

    def __post_init__(self) -> None:
        k = len(self.attacks)
        d = np.asarray(self.directions, dtype=np.float64)
        if d.ndim != 2 or d.shape[0] != k or k == 0:
            raise ThreatError(f"threat directions have shape {d.shape}: expected ({k}, p) with k >= 1")
        for name in ("location", "scale"):
            v = np.asarray(getattr(self, name), dtype=np.float64)
            if v.shape != (k,):
                raise ThreatError(f"threat {name} has shape {v.shape}: expected ({k},)")
        arrays = (d, self.location, self.scale)
        if not all(np.all(np.isfinite(a)) for a in arrays) or np.any(np.asarray(self.scale) <= 0):
            raise ThreatError("threat directions contain NaN or infinite values or a scale <= 0")

    def projections(self, rows: NDArray[np.float64]) -> NDArray[np.float64]:
        """(n, k) standardised projections of agent rows (n, p) on every direction."""
        if rows.ndim != 2 or rows.shape[1] != self.directions.shape[1]:
            raise ThreatError(f"rows have shape {rows.shape}: expected (n, {self.directions.shape[1]})")
        return np.asarray((rows @ self.directions.T - self.location) / self.scale)

    def score(self, rows: NDArray[np.float64]) -> NDArray[np.float64]:
        """The largest standardised projection of each agent (larger = more like a known attack)."""
        return np.asarray(self.projections(rows).max(axis=1))


def fisher_directions(
    rows: NDArray[np.float64], attack: NDArray[np.str_], attacks: tuple[str, ...], clean: str = ""
) -> NDArray[np.float64]:
    """Unit Fisher directions ``Sigma_clean^+ (median_a - median_clean)``, one row per attack type.

    ``rows`` (n, p) are agents of a labelled world, ``attack`` each one's type (``clean`` for
    honest agents). Medians, not means, so a few extreme agents do not steer a direction; the
    pseudo-inverse, so a constant or redundant column costs nothing.
    """
    x = np.asarray(rows, dtype=np.float64)
    labels = np.asarray(attack)
    if x.ndim != 2 or labels.shape != (x.shape[0],):
        raise ThreatError(f"rows of shape {x.shape} and {labels.shape} labels: expected (n, p) and (n,)")
    if not np.all(np.isfinite(x)):
        raise ThreatError("library rows contain NaN or infinite values")
    honest = x[labels == clean]
    if honest.shape[0] <= x.shape[1]:
        raise ThreatError(f"{honest.shape[0]} clean library agents for {x.shape[1]} columns: too few")
    precision = np.linalg.pinv(np.cov(honest, rowvar=False))
    centre = np.median(honest, axis=0)
    out = []
    for a in attacks:
        members = x[labels == a]
        if members.shape[0] < 10:
            raise ThreatError(f"{members.shape[0]} library agents of type {a!r}: at least 10 are needed")
        v = precision @ (np.median(members, axis=0) - centre)
        norm = float(np.linalg.norm(v))
        if not np.isfinite(norm) or norm == 0.0:
            raise ThreatError(f"type {a!r} does not move the library's agents: no direction")
        out.append(v / norm)
    return np.asarray(out)


@functools.lru_cache(maxsize=4)
def library_world(seed: int, n_windows: int) -> tuple[NDArray[np.float64], NDArray[np.str_]]:
    """(windows, attack labels) of the labelled library world: a default-difficulty simulated fleet.

    :data:`LIBRARY_AGENTS` agents, :data:`LIBRARY_COMPROMISED` of them compromised (about 300
    per type), at strength 1, ``n_windows`` windows as the fleets it will judge. Cached: the
    same seed gives the same world, and a detector fitted many times simulates it once.
    """
    from tcpkit.detect.simulate import simulate_network

    net = simulate_network(
        n_agents=LIBRARY_AGENTS, compromised_fraction=LIBRARY_COMPROMISED, seed=seed, n_windows=n_windows
    )
    windows = np.asarray(net.windows, dtype=np.float64)
    windows.setflags(write=False)
    labels = np.asarray([a or "" for a in net.attack], dtype=np.str_)  # honest agents: ""
    return windows, labels
