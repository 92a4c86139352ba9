"""Benign change of honest agents: regime changes, slow drift, correlated traits, pace, workload.

Why
---
Real agents are not stationary. A model or prompt update moves every agent of
a node (or of the whole fleet) at one window; agents drift slowly; their noise
has heavy tails; capable agents are at once more accurate, more confident and
slower; latency follows the load of the day; the mix of work a node does
changes. A detector that treats every change as a compromise fails on such a
fleet, so :func:`~tcpkit.detect.simulate.simulate_network` draws these benign
changes (this module) on top of the honest model, with defaults that are on.

What is drawn here (all sizes at scale 1; the simulator multiplies them by its
parameters ``regime_scale`` and ``benign_drift``)
---------------------------------------------------------------------------------
**Regime changes.** A fleet-wide change every ``fleet_regime_every`` windows
(phase drawn per seed in ``[1, fleet_regime_every]``) and, independently, a
node-wide change at each (node, window >= 1) with probability
``node_regime_rate``. A change at window ``w`` is a step that lasts from ``w``
on (changes accumulate). Its steps have a known size and a random sign: with
``s = +-U(1 - STEP_SPREAD, 1 + STEP_SPREAD)`` drawn per component, the node's
agents' bias moves by a shared ``s * REGIME_BIAS_SD`` plus a shared per-class
``N(0, REGIME_CLASS_SD)``, their noise level by a factor
``exp(s * REGIME_NOISE_LOG_SD)``, their confidence by ``s * REGIME_CONFIDENCE_SD``
and their latency by a factor ``exp(s * REGIME_LATENCY_LOG_SD)``. Each agent
responds to each change with its own factor ``exp(N(0, REGIME_RESPONSE_LOG_SD))``
multiplying the step, so peers move alike but not identically, and two
opposite changes do not cancel exactly. A fleet-wide change has
``FLEET_STEP_FACTOR`` times these sizes: a fleet-wide update is rolled out in
small validated increments, while a node's own model or prompt change is larger.
The sizes are modest: comparable to an agent's window noise (a regime step of
the bias, confidence and latency is of the order of one window's noise), so that peers, who
move alike, cancel it while it still changes every honest agent of the node.

**Slow drift.** Each agent's bias, confidence and log latency move linearly
with the window index at rates ``N(0, DRIFT_BIAS_SD)``,
``N(0, DRIFT_CONFIDENCE_SD)`` and ``N(0, DRIFT_LATENCY_LOG_SD)`` per window.

**Latent factor.** One ``N(0, 1)`` factor per agent (its capability), which the
simulator mixes into the agent's noise level (lower), confidence (higher) and
latency (higher) with loading ``trait_correlation``.

**Pace and clock.** Each agent thinks ``THINK_MEDIAN_S * exp(N(0, THINK_LOG_SD))``
seconds on average between commands (exponential think times) and starts at
the epoch plus ``U(0, START_SPREAD_S)`` seconds.

**Workload.** Each node has an alternative workload profile (an index into the
simulator's profiles), an onset window in ``[1, WORKLOAD_ONSET_MAX]``, a ramp
of ``WORKLOAD_RAMP`` windows and a maximum share ``U(0.5, 1)`` (times the
simulator's ``workload_shift``): the share of the node's weighted command slots
drawn from the profile rises linearly from the onset to its maximum.

Randomness: the static draws (per agent and per node) come from one stream, the
shifts of window ``w`` from a stream of their own, so the first windows do not
depend on ``n_windows`` and nothing here depends on who is compromised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["BenignWorld", "draw_benign"]

REGIME_BIAS_SD = 0.009
REGIME_CLASS_SD = 0.003
REGIME_NOISE_LOG_SD = 0.03
REGIME_CONFIDENCE_SD = 0.012
REGIME_LATENCY_LOG_SD = 0.06
REGIME_RESPONSE_LOG_SD = 0.2
DRIFT_BIAS_SD = 0.0005
DRIFT_CONFIDENCE_SD = 0.0008
DRIFT_LATENCY_LOG_SD = 0.004
THINK_MEDIAN_S = 60.0
THINK_LOG_SD = 0.25
START_SPREAD_S = 3600.0
STEP_SPREAD = 0.25
FLEET_STEP_FACTOR = 0.25
WORKLOAD_ONSET_MAX = 15
WORKLOAD_RAMP = (1, 6)

# spawn keys of the streams (two-element keys never collide with SeedSequence.spawn children)
STATIC_KEY = (1000, 0)
WINDOW_KEY = 1001


@dataclass(frozen=True, eq=False)
class BenignWorld:
    """The benign structure of one simulated world (ground truth, read-only arrays).

    Attributes
    ----------
    regime_changes : (n_nodes, n_windows) bool
        True where a regime change (fleet- or node-wide) starts at that node and window.
    fleet_regime_windows : tuple of int
        Windows at which a fleet-wide change starts.
    steps : (4, n_nodes, n_windows) float64
        The regime step starting at each node and window (0 where none) of the
        bias, the log noise level, the confidence and the log latency.
    class_steps : (n_nodes, n_windows, n_classes) float64
        The per-class part of each bias step.
    response : (n_windows, n_agents) float64
        Each agent's factor on the steps of each window.
    drift_bias, drift_confidence, drift_latency : (n_agents,) float64
        Per-window drift rates.
    latent : (n_agents,) float64
        The latent capability factor.
    think_s : (n_agents,) float64
        Mean think time between commands, seconds.
    start_us : (n_agents,) int64
        First command's clock origin, microseconds after the epoch.
    workload_profile : (n_nodes,) intp
        Index of each node's alternative workload profile.
    workload_share : (n_nodes, n_windows) float64
        Share of each node's weighted slots drawn from its profile, per window.
    """

    regime_changes: NDArray[np.bool_]
    fleet_regime_windows: tuple[int, ...]
    steps: NDArray[np.float64]
    class_steps: NDArray[np.float64]
    response: NDArray[np.float64]
    drift_bias: NDArray[np.float64]
    drift_confidence: NDArray[np.float64]
    drift_latency: NDArray[np.float64]
    latent: NDArray[np.float64]
    think_s: NDArray[np.float64]
    start_us: NDArray[np.int64]
    workload_profile: NDArray[np.intp]
    workload_share: NDArray[np.float64]


def _signed(rng: np.random.Generator, shape: tuple[int, ...]) -> NDArray[np.float64]:
    """Random sign times U(1 - STEP_SPREAD, 1 + STEP_SPREAD): steps of a known size."""
    sign = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    return np.asarray(sign * rng.uniform(1.0 - STEP_SPREAD, 1.0 + STEP_SPREAD, shape))


def draw_benign(
    seed: int,
    node: NDArray[np.int64],
    n_nodes: int,
    n_windows: int,
    n_classes: int,
    n_profiles: int,
    *,
    fleet_regime_every: int,
    node_regime_rate: float,
    regime_scale: float,
    benign_drift: float,
    workload_shift: float,
) -> BenignWorld:
    """Draw the benign structure of a world (parameters validated by the caller)."""
    n_agents = node.size
    rs = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=STATIC_KEY))
    drift = rs.normal(0.0, 1.0, (3, n_agents)) * benign_drift
    latent = rs.standard_normal(n_agents)
    think_s = THINK_MEDIAN_S * np.exp(rs.normal(0.0, THINK_LOG_SD, n_agents))
    start_us = np.rint(rs.uniform(0.0, START_SPREAD_S, n_agents) * 1e6).astype(np.int64)
    profile = rs.integers(0, n_profiles, n_nodes).astype(np.intp)
    onset = rs.integers(1, WORKLOAD_ONSET_MAX + 1, n_nodes)
    ramp = rs.integers(WORKLOAD_RAMP[0], WORKLOAD_RAMP[1] + 1, n_nodes)
    top = rs.uniform(0.5, 1.0, n_nodes) * workload_shift
    phase = int(rs.integers(1, fleet_regime_every + 1)) if fleet_regime_every > 0 else 0

    changes = np.zeros((n_nodes, n_windows), dtype=bool)
    step = np.zeros((4, n_nodes, n_windows))  # bias, noise, confidence, latency
    response = np.ones((n_windows, n_agents))
    class_step = np.zeros((n_nodes, n_windows, n_classes))
    fleet: list[int] = []
    for w in range(n_windows):
        rw = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(WINDOW_KEY, w)))
        node_event = rw.random(n_nodes) < node_regime_rate
        node_shift = _signed(rw, (4, n_nodes))
        node_class = rw.standard_normal((n_nodes, n_classes))
        fleet_shift = _signed(rw, (4,))
        fleet_class = rw.standard_normal(n_classes)
        response[w] = np.exp(rw.normal(0.0, REGIME_RESPONSE_LOG_SD, n_agents))
        if w == 0:
            continue  # window 0 is where the world starts: nothing changes there
        is_fleet = fleet_regime_every > 0 and w >= phase and (w - phase) % fleet_regime_every == 0
        if is_fleet:
            fleet.append(w)
            changes[:, w] = True
            step[:, :, w] += FLEET_STEP_FACTOR * fleet_shift[:, None]
            class_step[:, w] += FLEET_STEP_FACTOR * fleet_class[None, :]
        changes[node_event, w] = True
        step[:, node_event, w] += node_shift[:, node_event]
        class_step[node_event, w] += node_class[node_event]
    sds = np.array([REGIME_BIAS_SD, REGIME_NOISE_LOG_SD, REGIME_CONFIDENCE_SD,
                    REGIME_LATENCY_LOG_SD]) * regime_scale

    windows = np.arange(n_windows)
    share = top[:, None] * np.clip((windows[None, :] - onset[:, None] + 1) / ramp[:, None], 0, 1)
    world = BenignWorld(
        regime_changes=changes,
        fleet_regime_windows=tuple(fleet),
        steps=step * sds[:, None, None],
        class_steps=class_step * (REGIME_CLASS_SD * regime_scale),
        response=response,
        drift_bias=drift[0] * DRIFT_BIAS_SD,
        drift_confidence=drift[1] * DRIFT_CONFIDENCE_SD,
        drift_latency=drift[2] * DRIFT_LATENCY_LOG_SD,
        latent=latent,
        think_s=think_s,
        start_us=start_us,
        workload_profile=profile,
        workload_share=share,
    )
    for value in vars(world).values():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
    return world
