"""A monitored fleet and its vetted reference, drawn from one simulated network.

Why
---
The statistics notebook's vetted reference is a separately seeded network: its agents
lived through other regime changes than the monitored fleet's. A fixed-score detector
barely notices (its omnibus distances are dominated by agents' own noise), but an
adaptive score (:mod:`tcpkit.detect.adaptive`) learns any difference between the two
fleets, so its p-values are only valid when the reference is exchangeable with the
clean monitored agents. In deployment that is a reference audited *inside* the fleet:
some of its own agents, run under audit, sharing its nodes and its history.
:func:`audited_fleet` simulates exactly that: one network whose compromised agents are
all among the monitored ones, and whose reference is a uniformly drawn subset of its
clean agents, so that a clean monitored agent and a reference agent are exchangeable
by construction.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tcpkit.detect.simulate import SimulatedNetwork, simulate_network

__all__ = ["AuditedFleet", "audit_rng", "audited_fleet", "subnetwork"]

_PER_AGENT = ("windows", "features", "baseline_features", "labels", "attack", "node", "hijack_family")


def subnetwork(net: SimulatedNetwork, rows: NDArray[np.intp]) -> SimulatedNetwork:
    """The agents ``rows`` of ``net`` as a network of their own (nodes, regime history and seed kept).

    ``params["n_agents"]`` and ``params["compromised_fraction"]`` describe the subset.
    """
    index = np.asarray(rows, dtype=np.intp)
    parts: dict[str, Any] = {}
    for name in _PER_AGENT:
        part = np.asarray(getattr(net, name))[index]
        part.flags.writeable = False
        parts[name] = part
    n = int(index.size)
    share = float(parts["labels"].sum()) / n if n else 0.0
    return dataclasses.replace(net, params={**net.params, "n_agents": n, "compromised_fraction": share}, **parts)


@dataclass(frozen=True)
class AuditedFleet:
    """One network split into its monitored agents and its audited reference.

    ``network`` holds every agent; ``monitored`` and ``reference`` are row indices into it
    (ascending, disjoint, covering every row). Every compromised agent is monitored, unless
    the reference was drawn contaminated (:func:`audited_fleet`'s ``reference_contamination``).
    """

    network: SimulatedNetwork
    monitored: NDArray[np.intp]
    reference: NDArray[np.intp]

    @property
    def monitored_network(self) -> SimulatedNetwork:
        """The monitored agents as a network of their own (what the detector judges)."""
        return subnetwork(self.network, self.monitored)

    @property
    def reference_network(self) -> SimulatedNetwork:
        """The audited reference agents as a network of their own (what the detector is fitted on)."""
        return subnetwork(self.network, self.reference)

    @property
    def monitored_windows(self) -> NDArray[np.float64]:
        """(n_monitored, n_windows, d) windows of the monitored agents."""
        return np.asarray(self.network.windows[self.monitored])

    @property
    def reference_windows(self) -> NDArray[np.float64]:
        """(n_reference, n_windows, d) windows of the audited reference agents."""
        return np.asarray(self.network.windows[self.reference])

    @property
    def labels(self) -> NDArray[np.bool_]:
        """Ground truth of the monitored agents (True = compromised)."""
        return np.asarray(self.network.labels[self.monitored])

    @property
    def attack(self) -> NDArray[np.object_]:
        """Attack name of each monitored agent (None when clean)."""
        return np.asarray(self.network.attack[self.monitored])

    @property
    def reference_labels(self) -> NDArray[np.bool_]:
        """Ground truth of the reference agents (all False unless ``reference_contamination`` > 0)."""
        return np.asarray(self.network.labels[self.reference])

    @property
    def regime_agents(self) -> NDArray[np.bool_]:
        """Monitored agents whose node had a benign regime change after the reference period."""
        return np.asarray(self.network.regime_change_agents()[self.monitored])


def audit_rng(seed: int) -> np.random.Generator:
    """The generator of the audited draw for ``seed`` (one stream, shared by every audited draw)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0xA0D17,)))


def audited_fleet(
    n_monitored: int,
    n_reference: int,
    compromised_fraction: float,
    seed: int,
    *,
    reference_contamination: float = 0.0,
    **world: Any,
) -> AuditedFleet:
    """Simulate ``n_monitored + n_reference`` agents; compromise ``compromised_fraction`` of the monitored.

    ``world`` passes any other :func:`~tcpkit.detect.simulate.simulate_network` parameter
    (strength, difficulty, attacks, benign change). The reference is drawn uniformly among
    the clean agents with a generator seeded by ``seed``.

    ``reference_contamination`` (default 0: a vetted reference) makes that share of the
    reference compromised agents of the same network and the same attack mix (audited, but
    the audit missed them); the monitored agents keep ``compromised_fraction``. Those
    reference agents are labelled in ``network.labels`` (:attr:`AuditedFleet.reference_labels`).
    """
    for name, value in (("n_monitored", n_monitored), ("n_reference", n_reference)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name}={value!r}: expected a positive integer")
    if not 0.0 <= float(compromised_fraction) < 1.0:
        raise ValueError(f"compromised_fraction={compromised_fraction!r}: expected a share in [0, 1)")
    if not 0.0 <= float(reference_contamination) < 0.5:
        raise ValueError(f"reference_contamination={reference_contamination!r}: expected a share in [0, 0.5)")
    total = int(n_monitored) + int(n_reference)
    n_bad = round(float(compromised_fraction) * int(n_monitored))
    n_bad_reference = round(float(reference_contamination) * int(n_reference))
    net = simulate_network(
        n_agents=total, compromised_fraction=(n_bad + n_bad_reference) / total, seed=seed, **world
    )
    clean = np.flatnonzero(~np.asarray(net.labels))
    rng = audit_rng(seed)
    reference = rng.choice(clean, int(n_reference) - n_bad_reference, replace=False)
    if n_bad_reference:
        bad = np.flatnonzero(np.asarray(net.labels))
        reference = np.concatenate([reference, rng.choice(bad, n_bad_reference, replace=False)])
    reference = np.sort(reference)
    monitored = np.setdiff1d(np.arange(total), reference)
    return AuditedFleet(net, monitored.astype(np.intp), reference.astype(np.intp))
