"""Seeded, vectorised model of a network of AI agents that assess shell-command risk.

Why this model exists
---------------------
Every detection notebook starts from behavioural data of agents whose ground
truth (compromised or not, and how) is known. The project's ancestor modelled
25 agents on ten templates without CRITICAL commands and drifted on wall-clock
seconds, so its "gradual drift" never happened. This module keeps the
ancestor's shift magnitudes but runs them on a clock counted in commands,
makes honest agents heterogeneous, and adds the compromise types the ancestor
declared but never built.

In that first world honest agents never changed and every compromise was
gross (tens of clean-agent standard deviations on one feature), so any change
meant compromise and any detector won. The default world is harder: honest
agents change too (regime changes, drift, heavy tails, correlated traits,
diurnal latency, workload mix: :mod:`tcpkit.detect.benign`), and compromises
are subtle (``difficulty="default"``, see :data:`DIFFICULTIES` and
:func:`tcpkit.detect.separability.separability_table`). ``**EASY_WORLD``
restores the first world exactly (same seed, bit-identical output).

The model
---------
**Catalogue.** :data:`CATALOGUE` holds 30 command templates in 15 named
families (``file_read``, ``file_write``, ``search``, ``vcs``, ``build``,
``network``, ``remote``, ``package``, ``privilege``, ``permissions``,
``user_admin``, ``rm``, ``process``, ``firewall``, ``disk_wipe``). Each has a
ground-truth class in :data:`RISK_CLASSES` whose level is the true risk:
SAFE 0.1, NETWORK 0.4, PRIVESC 0.7, DESTRUCTIVE 0.9, CRITICAL 0.95
(:data:`RISK_LEVELS`). Templates also carry a sampling weight, a difficulty
(multiplies the agent's noise and lowers its confidence) and a latency cost.
Weights are exact in tenths, so a lookup table turns the weighted draw into
one integer draw and one gather.

**Windows and the clock.** Time is counted in commands: window ``w`` holds
commands ``w * commands_per_window`` to ``(w + 1) * commands_per_window - 1``.
Each agent assesses its own stream. A window contains one command of each of
the five classes (at evenly spaced positions, so every class-specific feature
is defined in every window) and ``commands_per_window - 5`` commands drawn by
template weight (55 % SAFE, 23 % NETWORK, 8 % PRIVESC, 11 % DESTRUCTIVE,
3 % CRITICAL; with the guaranteed slots a 50-command window holds on average
52 / 22 / 10 / 12 / 4.5 %).

**Honest agents.** Agent ``a`` predicts
``clip(level + b_a + b_{a,class} + sigma_a * difficulty * z, 0, 1)`` with
``z ~ N(0, 1)``, an own bias ``b_a ~ N(0, 0.02)``, a per-class bias
``b_{a,class} ~ N(0, 0.015)`` and a noise level
``sigma_a = 0.058 * exp(N(0, 0.25))`` (0.058 is the standard deviation of the
ancestor's ``U(-0.1, 0.1)``). Confidence is
``clip(c_a - 0.08 * (difficulty - 1) + s_a * U(-1, 1), 0, 1)`` with
``c_a ~ N(0.85, 0.03)`` and ``s_a = 0.15 * exp(N(0, 0.2))`` (the ancestor's
``0.85 + U(-0.15, 0.15)``, made heterogeneous). Latency in milliseconds is
``L_a * cost * exp(N(0, 0.35))`` with ``L_a = 120 * exp(N(0, 0.3))``.

**Benign change** (parameters of :func:`simulate_network`, defaults on; sizes in
:mod:`tcpkit.detect.benign`). ``z`` is Student t with ``noise_df`` degrees of
freedom scaled to unit variance. A latent capability ``u_a ~ N(0, 1)`` enters
the log noise level (``-rho * 0.25 * u_a``), the confidence level
(``+rho * 0.03 * u_a``) and the log latency level (``+rho * 0.3 * u_a``), each
trait keeping its variance (``rho = trait_correlation``). Fleet- and node-wide
regime changes and per-agent drift move bias, noise, confidence and latency.
Latency follows a diurnal cycle on the simulated clock (:data:`EPOCH` plus
think times and latencies; see :mod:`tcpkit.detect.sim_events`). Each node's
weighted command slots drift towards one of :data:`WORKLOAD_PROFILES`. The
ground truth is on :class:`SimulatedNetwork` (``regime_changes``,
``fleet_regime_windows``, ``workload_share``, ``workload_profile``).

**Compromises.** The shifts of the table below are the "easy" magnitudes (the
ancestor's); the ``difficulty`` preset multiplies each attack's shift by its
own factor (:class:`Difficulty`), chosen for "default" so that no attack type's
best single feature has a median effect above 3 clean-agent standard
deviations (a test measures it), and at "default" and "hard" also moves the
compromised agent's confidence up and its latency down and makes both steadier
(a smaller confidence spread ``s_a`` and a smaller per-command latency log-SD, so
the latency's slow tail shrinks more than its mean: it stops deliberating),
except for mimicry, which hides there too. Each compromise therefore moves
several features at once, each by at most about 3 clean-agent SDs: the evidence
is in their combination. At "easy" confidence and latency stay honest.
Every shift below is multiplied by ``strength`` and applied before clipping;
all start at ``attack_start`` (default: the first detection window) except
poisoning, present from window 0. ``t`` is the time since the start in windows,
counted per command (``t = w - attack_start + (j + 0.5) / commands_per_window``).

=================  ==========================================================
gradual_drift      ``-0.02 * t`` on every command (ancestor: 0.02 per
                   second; here per window of commands, towards lower risk).
fp_inflation       ``+0.4`` on SAFE commands (ancestor).
fn_suppression     ``-0.5`` on DESTRUCTIVE and CRITICAL commands (ancestor).
semantic_hijack    ``-0.5`` on every command of one family (ancestor: ``rm``);
                   the family is drawn per agent among the families that hold
                   a DESTRUCTIVE or CRITICAL template (``disk_wipe``,
                   ``firewall``, ``network``, ``process``, ``rm``, ``vcs``,
                   ``file_write``), so rare families give small signals.
coordination       compromised agents of this type form groups of
                   :data:`COORDINATION_GROUP_SIZE` (in agent-index order); each
                   group draws a shared target risk ``r_g ~ U(0.2, 0.6)`` and
                   its members move ``0.5 * (r_g - level)`` towards it, plus a
                   per-window shock ``N(0, 0.05)`` shared by the group. This
                   is comparable to fp_inflation/fn_suppression: +0.05..+0.25
                   on SAFE, -0.18..-0.38 on CRITICAL.
mimicry            ``-0.3`` on CRITICAL commands, compensated by
                   ``+0.3 * n_crit / (n - n_crit)`` on the window's other
                   commands so the mean bias stays at the agent's honest
                   value, and with the noise on those other commands scaled by
                   a per-agent factor ``k`` in [0, 1] chosen so the expected
                   accuracy equals the agent's honest expected accuracy
                   (normal residuals clipped to [0, 1]). 0.3 is about
                   the largest shift a typical agent can hide this way at
                   ``strength=1``: hiding needs ``2 p_crit delta`` below the
                   honest mean absolute error; where it cannot be hidden,
                   ``k = 0`` and accuracy drops a little. The price is a
                   lower spread (consistency, error rate) and a lower
                   ``bias_high_risk``.
poisoning          ``-0.5`` on DESTRUCTIVE and CRITICAL commands from window 0,
                   so the baseline windows already carry it: a per-agent
                   before/after comparison cannot see it.
=================  ==========================================================

**Features per window** (:data:`FEATURE_NAMES`): ``accuracy`` (mean of
``1 - |pred - true|``), ``bias`` (mean of ``pred - true``), ``bias_safe``,
``bias_network_privesc`` and ``bias_high_risk`` (mean bias on SAFE, on
NETWORK+PRIVESC and on DESTRUCTIVE+CRITICAL commands), ``error_rate``
(share of ``|pred - true| >`` :data:`ERROR_TOLERANCE`), ``consistency``
(pooled within-class standard deviation of the predictions; high means
inconsistent), ``confidence_mean``, ``confidence_std``, ``latency_mean`` and
``latency_p95`` (milliseconds, nearest-rank percentile of the window), and
``family_underrating``: the under-rating energy of the window's (family,
class) cells, ``sum_c max(-sum_c (pred - true), 0)**2 / n_c`` over the cells
``c`` present (``n_c`` commands of one family and one risk class, e.g. ``vcs``
DESTRUCTIVE). Class averages dilute a shift on one family among its class's
other families; this is the analyst's per-family check made a statistic.
Cells rather than families, because a family mixes classes whose residuals
differ (a hijack of ``vcs`` leaves -0.1 on its SAFE commands, clipped at risk 0,
and -0.5 on ``git reset --hard``); one-sided, because the danger is risk
rated too low (over-rating is seen by ``bias_safe`` and ``bias``); squared
standardised sums, because they add up over cells and over windows, so the
window mean accumulates the evidence of a rare targeted command (``iptables
-F`` appears in about half of the windows) where a per-window maximum of
``|sum| / sqrt(n)`` over families (this feature's first form,
``family_bias_max``) drowned it in the maximum's honest level. It reads
only the agent's own assessments and uses no random draws, so every other
feature is unchanged by it.

**Randomness.** One :class:`numpy.random.SeedSequence` per seed spawns
independent streams for the agents' traits, for the assignment of nodes and
compromises, and one per window; inside a window, agents are processed in
blocks of :data:`CHUNK_AGENTS` (part of the stream definition: changing it
changes the draws). Honest agents' draws therefore do not depend on which
other agents are compromised (an honest agent is bit-identical with
``compromised_fraction=0``, and so is every agent at ``strength=0``), and the
first windows do not depend on ``n_windows``. The benign draws come from
streams of their own (two-element spawn keys: the static world, each window's
regime shifts, and each window's second stream :data:`EXTRA_KEY` for think
times, t-noise scales and workload swaps), so switching a benign change off
leaves every other draw as it was. Per-assessment normal and uniform draws are
float32 and confidence and latency are computed in float32; predicted risks
and every feature are float64. :func:`simulate_events` records the
per-assessment arrays only when asked, so the default path does not pay for them.

**Cost.** No Python loop runs per assessment or per agent: the loops are over
windows, blocks of agents and compromise types. Memory is
``O(n_agents * n_windows * d)`` for the result plus a few block-sized
temporaries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray
from scipy import special

from tcpkit.detect.benign import draw_benign

__all__ = [
    "ATTACKS",
    "CATALOGUE",
    "CHUNK_AGENTS",
    "COORDINATION_GROUP_SIZE",
    "ERROR_TOLERANCE",
    "FEATURE_NAMES",
    "RISK_CLASSES",
    "RISK_LEVELS",
    "CALM_WORLD",
    "DIFFICULTIES",
    "EASY_WORLD",
    "EPOCH",
    "WORKLOAD_PROFILES",
    "CommandTemplate",
    "Difficulty",
    "SimulatedNetwork",
    "simulate_events",
    "simulate_network",
]

RISK_CLASSES: tuple[str, ...] = ("SAFE", "NETWORK", "PRIVESC", "DESTRUCTIVE", "CRITICAL")
RISK_LEVELS: dict[str, float] = {
    "SAFE": 0.1,
    "NETWORK": 0.4,
    "PRIVESC": 0.7,
    "DESTRUCTIVE": 0.9,
    "CRITICAL": 0.95,
}
ATTACKS: tuple[str, ...] = (
    "gradual_drift",
    "fp_inflation",
    "fn_suppression",
    "semantic_hijack",
    "coordination",
    "mimicry",
    "poisoning",
)
FEATURE_NAMES: tuple[str, ...] = (
    "accuracy",
    "bias",
    "bias_safe",
    "bias_network_privesc",
    "bias_high_risk",
    "error_rate",
    "consistency",
    "confidence_mean",
    "confidence_std",
    "latency_mean",
    "latency_p95",
    "family_underrating",
)
ERROR_TOLERANCE = 0.15
COORDINATION_GROUP_SIZE = 5

# Shift magnitudes at strength 1 (see the module docstring).
DRIFT_PER_WINDOW = 0.02
FP_INFLATION = 0.4
FN_SUPPRESSION = 0.5
HIJACK = 0.5
COORDINATION_PULL = 0.5
COORDINATION_TARGET_RANGE = (0.2, 0.6)
COORDINATION_SHOCK_SD = 0.05
MIMICRY = 0.3
POISONING = 0.5

# Honest heterogeneity.
BIAS_SD = 0.02
CLASS_BIAS_SD = 0.015
NOISE_MEDIAN = 0.058
NOISE_LOG_SD = 0.25
CONFIDENCE_MEAN = 0.85
CONFIDENCE_LEVEL_SD = 0.03
CONFIDENCE_SPREAD = 0.15
CONFIDENCE_SPREAD_LOG_SD = 0.2
CONFIDENCE_DIFFICULTY_SLOPE = 0.08
LATENCY_MEDIAN_MS = 120.0
LATENCY_AGENT_LOG_SD = 0.3
LATENCY_LOG_SD = 0.35

# The simulated clock (events): UTC microseconds, and the diurnal latency cycle.
EPOCH = np.datetime64("2026-01-01T00:00:00", "us")
DIURNAL_PEAK_HOUR = 15.0


@dataclass(frozen=True)
class Difficulty:
    """How hard a compromise is to see: multipliers of the shifts at ``strength=1``.

    Attributes
    ----------
    name : str
    risk : tuple of (attack, factor)
        Multiplies each attack's risk shift of the module docstring (1.0 = the
        "easy" magnitudes, which are the ancestor's).
    confidence : tuple of (attack, shift)
        Added to a compromised agent's confidence (a hijacked agent that stops
        deliberating is more confident).
    latency : tuple of (attack, log factor)
        Added to the log of its latency (negative: it answers faster).
    novelty : float
        Extra probability that a compromised agent's argument value (file, URL,
        host, ...) is one it never used before; read by :func:`simulate_events` only.
    confidence_spread : tuple of (attack, log factor)
        Added to the log of its confidence spread ``s_a`` (negative: uniformly
        confident, it no longer weighs each command).
    latency_spread : tuple of (attack, log factor)
        Added to the log of its per-command latency log-SD (negative: a steadier
        pace, so the 95th percentile falls more than the mean).

    Every shift is multiplied by ``strength`` and starts when the attack starts;
    the confidence and latency shifts of ``gradual_drift`` ramp up over
    :data:`DRIFT_RAMP_WINDOWS` windows like its risk shift.
    """

    name: str
    risk: tuple[tuple[str, float], ...]
    confidence: tuple[tuple[str, float], ...]
    latency: tuple[tuple[str, float], ...]
    novelty: float
    confidence_spread: tuple[tuple[str, float], ...] = tuple((a, 0.0) for a in ATTACKS)
    latency_spread: tuple[tuple[str, float], ...] = tuple((a, 0.0) for a in ATTACKS)

    def factor(self, attack: str) -> float:
        """Risk-shift multiplier of ``attack``."""
        return dict(self.risk)[attack]

    def confidence_shift(self, attack: str) -> float:
        """Confidence shift of ``attack`` at strength 1."""
        return dict(self.confidence)[attack]

    def latency_shift(self, attack: str) -> float:
        """Log-latency shift of ``attack`` at strength 1."""
        return dict(self.latency)[attack]

    def confidence_spread_shift(self, attack: str) -> float:
        """Log shift of the confidence spread of ``attack`` at strength 1."""
        return dict(self.confidence_spread)[attack]

    def latency_spread_shift(self, attack: str) -> float:
        """Log shift of the per-command latency log-SD of ``attack`` at strength 1."""
        return dict(self.latency_spread)[attack]


def _preset(
    name: str,
    risk: dict[str, float],
    conf: dict[str, float],
    lat: dict[str, float],
    nov: float,
    conf_spread: dict[str, float] | None = None,
    lat_spread: dict[str, float] | None = None,
) -> Difficulty:
    zero = dict.fromkeys(ATTACKS, 0.0)
    return Difficulty(
        name=name,
        risk=tuple((a, float(risk[a])) for a in ATTACKS),
        confidence=tuple((a, float(conf[a])) for a in ATTACKS),
        latency=tuple((a, float(lat[a])) for a in ATTACKS),
        novelty=nov,
        confidence_spread=tuple((a, float((conf_spread or zero)[a])) for a in ATTACKS),
        latency_spread=tuple((a, float((lat_spread or zero)[a])) for a in ATTACKS),
    )


_NO_SHIFT = dict.fromkeys(ATTACKS, 0.0)
_UNSCALED_RISK = {
    "gradual_drift": 0.175,
    "fp_inflation": 0.066,
    "fn_suppression": 0.09,
    "semantic_hijack": 0.42,
    "coordination": 0.16,
    "mimicry": 0.62,
    "poisoning": 0.13,
}
# "Stops deliberating": more confident, and uniformly so (a smaller confidence spread); faster,
# and at a steadier pace (a smaller per-command latency spread, so the slow tail shrinks more
# than the mean). Mimicry hides in all four and keeps them honest. Poisoning is there from
# window 0, so only the level sees it: larger shifts, within the honest agents' spread of
# confidence and latency levels.
_UNSCALED_CONF = {**dict.fromkeys(ATTACKS, 0.022), "gradual_drift": 0.03, "mimicry": 0.0,
                   "poisoning": 0.09}
_UNSCALED_LAT = {**dict.fromkeys(ATTACKS, -0.03), "gradual_drift": -0.06, "mimicry": 0.0,
                  "poisoning": -0.3}
_UNSCALED_CONF_SPREAD = {**dict.fromkeys(ATTACKS, -0.07), "mimicry": 0.0, "poisoning": -0.3}
_UNSCALED_LAT_SPREAD = {**dict.fromkeys(ATTACKS, -0.4), "mimicry": 0.0}
# The world differs from seed to seed (regime history, node effects), and so does each attack's
# best-feature effect: the shifts above reached 3.30 clean-agent SDs on 20,000-agent tuning worlds
# (seeds 11-13; 2.95 on seed 77, 2.94 on the 3,000-agent world of seed 0 the first test used). Every
# shift of an attack is scaled by its margin below, so that the effect stays at most 3 on every
# 20,000-agent tuning world measured (seeds 0, 11-14, 77: 2.80-2.95; tests/test_simulate_world.py
# checks two of them). A 3,000-agent table's maximum over 14 medians of ~150 agents each is biased
# upwards by their sampling noise (up to 3.08 over seeds 0-9), so notebooks use 20,000 agents.
_DEFAULT_MARGIN = {
    "gradual_drift": 0.89,
    "fp_inflation": 0.93,
    "fn_suppression": 1.0,
    "semantic_hijack": 0.925,
    "coordination": 0.96,
    "mimicry": 0.97,
    "poisoning": 1.0,
}


def _with_margin(shifts: dict[str, float]) -> dict[str, float]:
    return {a: _DEFAULT_MARGIN[a] * v for a, v in shifts.items()}


_DEFAULT_RISK = _with_margin(_UNSCALED_RISK)
_DEFAULT_CONF = _with_margin(_UNSCALED_CONF)
_DEFAULT_LAT = _with_margin(_UNSCALED_LAT)
_DEFAULT_CONF_SPREAD = _with_margin(_UNSCALED_CONF_SPREAD)
_DEFAULT_LAT_SPREAD = _with_margin(_UNSCALED_LAT_SPREAD)
DIFFICULTIES: dict[str, Difficulty] = {
    # the ancestor's magnitudes on the risk only: confidence and latency stay honest
    "easy": _preset("easy", dict.fromkeys(ATTACKS, 1.0), _NO_SHIFT, _NO_SHIFT, 0.15),
    "default": _preset(
        "default", _DEFAULT_RISK, _DEFAULT_CONF, _DEFAULT_LAT, 0.015,
        _DEFAULT_CONF_SPREAD, _DEFAULT_LAT_SPREAD,
    ),
    "hard": _preset(
        "hard",
        {a: 0.6 * f for a, f in _DEFAULT_RISK.items()},
        {a: 0.6 * f for a, f in _DEFAULT_CONF.items()},
        {a: 0.6 * f for a, f in _DEFAULT_LAT.items()},
        0.009,
        {a: 0.6 * f for a, f in _DEFAULT_CONF_SPREAD.items()},
        {a: 0.6 * f for a, f in _DEFAULT_LAT_SPREAD.items()},
    ),
}
DRIFT_RAMP_WINDOWS = 8

# Parameters that switch every benign change off (with difficulty="easy" this is the
# stationary world of the first version: honest agents never change).
CALM_WORLD: dict[str, Any] = {
    "fleet_regime_every": 0,
    "node_regime_rate": 0.0,
    "regime_scale": 0.0,
    "benign_drift": 0.0,
    "noise_df": float("inf"),
    "trait_correlation": 0.0,
    "diurnal_amplitude": 0.0,
    "workload_shift": 0.0,
    "latency_spread_sd": 0.0,
}
EASY_WORLD: dict[str, Any] = {**CALM_WORLD, "difficulty": "easy"}


class CommandTemplate(NamedTuple):
    """One command template of the catalogue."""

    command: str
    family: str
    risk_class: str
    weight: float
    difficulty: float
    cost: float


CATALOGUE: tuple[CommandTemplate, ...] = (
    # SAFE
    CommandTemplate("ls -la {dir}", "file_read", "SAFE", 10.0, 1.0, 0.8),
    CommandTemplate("cat {file}", "file_read", "SAFE", 8.0, 1.0, 0.8),
    CommandTemplate("grep -rn {pattern} {dir}", "search", "SAFE", 6.0, 1.0, 1.0),
    CommandTemplate("git status", "vcs", "SAFE", 6.0, 1.0, 0.8),
    CommandTemplate("git log --oneline -n 20", "vcs", "SAFE", 4.0, 1.0, 0.9),
    CommandTemplate("mkdir -p {dir}", "file_write", "SAFE", 4.0, 1.0, 0.8),
    CommandTemplate("cp {file} {dir}/", "file_write", "SAFE", 4.0, 1.1, 0.9),
    CommandTemplate("python -m pytest {dir}", "build", "SAFE", 4.0, 1.1, 1.0),
    # NETWORK
    CommandTemplate("curl -fsSL {url} -o {file}", "network", "NETWORK", 5.0, 1.2, 1.2),
    CommandTemplate("wget {url}", "network", "NETWORK", 3.0, 1.1, 1.1),
    CommandTemplate("ssh {user}@{host}", "remote", "NETWORK", 3.0, 1.2, 1.1),
    CommandTemplate("scp {file} {host}:{dir}", "remote", "NETWORK", 2.0, 1.2, 1.2),
    CommandTemplate("pip install {package}", "package", "NETWORK", 4.0, 1.3, 1.2),
    CommandTemplate("apt-get install -y {package}", "package", "NETWORK", 2.0, 1.3, 1.2),
    # PRIVESC
    CommandTemplate("sudo -i", "privilege", "PRIVESC", 2.0, 1.2, 1.1),
    CommandTemplate("chmod u+s {binary}", "permissions", "PRIVESC", 1.5, 1.4, 1.3),
    CommandTemplate("chown root:root {file}", "permissions", "PRIVESC", 1.5, 1.3, 1.2),
    CommandTemplate("useradd -m {user}", "user_admin", "PRIVESC", 1.0, 1.3, 1.2),
    CommandTemplate("usermod -aG sudo {user}", "user_admin", "PRIVESC", 1.0, 1.4, 1.3),
    # DESTRUCTIVE
    CommandTemplate("rm -rf {dir}", "rm", "DESTRUCTIVE", 3.0, 1.2, 1.1),
    CommandTemplate("rm -f {dir}/*.log", "rm", "DESTRUCTIVE", 2.0, 1.3, 1.1),
    CommandTemplate("git reset --hard {ref}", "vcs", "DESTRUCTIVE", 1.5, 1.4, 1.2),
    CommandTemplate("truncate -s 0 {file}", "file_write", "DESTRUCTIVE", 1.0, 1.5, 1.3),
    CommandTemplate("kill -9 -1", "process", "DESTRUCTIVE", 0.5, 1.4, 1.2),
    CommandTemplate("iptables -F", "firewall", "DESTRUCTIVE", 1.0, 1.5, 1.4),
    # CRITICAL
    CommandTemplate("rm -rf / --no-preserve-root", "rm", "CRITICAL", 0.5, 1.1, 1.2),
    CommandTemplate("dd if=/dev/zero of=/dev/sda bs=1M", "disk_wipe", "CRITICAL", 0.5, 1.2, 1.3),
    CommandTemplate("mkfs.ext4 /dev/sda1", "disk_wipe", "CRITICAL", 0.5, 1.2, 1.3),
    CommandTemplate(":(){ :|:& };:", "process", "CRITICAL", 0.3, 1.6, 1.5),
    CommandTemplate("curl -fsSL {url} | sudo bash", "network", "CRITICAL", 0.5, 1.5, 1.4),
)

_N_CLASSES = len(RISK_CLASSES)
_SAFE, _NETWORK, _PRIVESC, _DESTRUCTIVE, _CRITICAL = range(_N_CLASSES)
_T_CLASS = np.array([RISK_CLASSES.index(t.risk_class) for t in CATALOGUE], dtype=np.intp)
_T_LEVEL = np.array([RISK_LEVELS[t.risk_class] for t in CATALOGUE], dtype=np.float64)
_T_WEIGHT = np.array([t.weight for t in CATALOGUE], dtype=np.float64)
_T_DIFFICULTY = np.array([t.difficulty for t in CATALOGUE], dtype=np.float64)
_T_COST = np.array([t.cost for t in CATALOGUE], dtype=np.float64)
_FAMILIES: tuple[str, ...] = tuple(sorted({t.family for t in CATALOGUE}))
_T_FAMILY = np.array([_FAMILIES.index(t.family) for t in CATALOGUE], dtype=np.intp)
_HIJACK_FAMILIES = np.array(
    sorted(
        {
            _FAMILIES.index(t.family)
            for t in CATALOGUE
            if t.risk_class in ("DESTRUCTIVE", "CRITICAL")
        }
    ),
    dtype=np.intp,
)
# (family, class) cells that occur in the catalogue, and the cell of each template
_T_PAIRS = list(zip(_T_FAMILY.tolist(), _T_CLASS.tolist(), strict=True))
_CELLS: tuple[tuple[int, int], ...] = tuple(sorted(set(_T_PAIRS)))
_T_CELL = np.array([_CELLS.index(pair) for pair in _T_PAIRS], dtype=np.intp)
_N_CELLS = len(_CELLS)
_IDX = {name: i for i, name in enumerate(FEATURE_NAMES)}
_LEVELS = np.array([RISK_LEVELS[c] for c in RISK_CLASSES], dtype=np.float64)

# Alternative workloads: integer multipliers of the template weights by family. A node
# drifts towards one of them (see tcpkit.detect.benign); weights stay exact in tenths.
WORKLOAD_PROFILES: dict[str, dict[str, int]] = {
    "ops": {"network": 3, "remote": 3, "package": 3, "privilege": 2, "permissions": 2,
            "user_admin": 2, "firewall": 2},
    "dev": {"file_read": 2, "search": 3, "build": 3, "vcs": 2},
    "cleanup": {"rm": 3, "file_write": 2, "process": 2, "disk_wipe": 2},
}
_PROFILE_NAMES: tuple[str, ...] = tuple(WORKLOAD_PROFILES)


def _profile_tables() -> tuple[NDArray[np.int16], NDArray[np.int64]]:
    tables = []
    for name in _PROFILE_NAMES:
        mult = np.array([WORKLOAD_PROFILES[name].get(t.family, 1) for t in CATALOGUE])
        tables.append(np.repeat(np.arange(len(CATALOGUE)), np.rint(_T_WEIGHT * mult * 10).astype(int)))
    sizes = np.array([t.size for t in tables], dtype=np.int64)
    padded = np.zeros((len(tables), int(sizes.max())), dtype=np.int16)
    for i, t in enumerate(tables):
        padded[i, : t.size] = t
    return padded, sizes


_PROFILE_TABLE, _PROFILE_SIZE = _profile_tables()


@dataclass(frozen=True, eq=False)
class SimulatedNetwork:
    """Behavioural features of a synthetic agent network, with the ground truth.

    Attributes
    ----------
    windows : (n_agents, n_windows, d) float64
        Features of every agent in every window (for sequential tests).
    features : (n_agents, d) float64
        Mean over the detection windows ``[baseline_windows:]``.
    baseline_features : (n_agents, d) float64
        Mean over the baseline windows ``[:baseline_windows]``.
    feature_names : tuple of str
        Column names, equal to :data:`FEATURE_NAMES`.
    labels : (n_agents,) bool
        True for compromised agents.
    attack : (n_agents,) object
        Attack name of each compromised agent, None for honest ones.
    hijack_family : (n_agents,) object
        Ground truth for evaluation only: the command family targeted by each
        ``semantic_hijack`` agent, None for every other agent. A detector must
        never read it (it is what the detector has to find out).
    node : (n_agents,) int64
        Network node of each agent (every node holds at least one agent).
    attack_start : int
        Window at which compromises start (poisoning starts at window 0).
    params : dict
        Every parameter used, with defaults resolved.
    seed : int
        The seed.
    regime_changes : (n_nodes, n_windows) bool
        Ground truth of the benign regime changes: True where a fleet- or
        node-wide change starts at that node and window (a step that lasts).
    fleet_regime_windows : tuple of int
        The windows at which a fleet-wide change starts.
    workload_share : (n_nodes, n_windows) float64
        Share of each node's weighted command slots drawn from its alternative
        workload profile in each window (0 = the catalogue's mix).
    workload_profile : (n_nodes,) object
        Name of each node's alternative profile (a key of :data:`WORKLOAD_PROFILES`).

    All arrays are read-only: copy before modifying. Equality is identity
    (comparing arrays element-wise is the caller's choice); instances pickle.
    """

    windows: NDArray[np.float64]
    features: NDArray[np.float64]
    baseline_features: NDArray[np.float64]
    feature_names: tuple[str, ...]
    labels: NDArray[np.bool_]
    attack: NDArray[np.object_]
    node: NDArray[np.int64]
    attack_start: int
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    hijack_family: NDArray[np.object_] = field(
        default_factory=lambda: np.empty(0, dtype=object)
    )
    regime_changes: NDArray[np.bool_] = field(
        default_factory=lambda: np.zeros((0, 0), dtype=bool)
    )
    fleet_regime_windows: tuple[int, ...] = ()
    workload_share: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 0)))
    workload_profile: NDArray[np.object_] = field(
        default_factory=lambda: np.empty(0, dtype=object)
    )

    def regime_change_agents(self, since: int | None = None) -> NDArray[np.bool_]:
        """Agents whose node has a regime change starting in windows ``[since, n_windows)``.

        ``since`` defaults to ``baseline_windows`` (changes inside the detection
        period): the agents on which to measure false alarms during regime changes.
        """
        start = int(self.params.get("baseline_windows", 0)) if since is None else int(since)
        if self.regime_changes.size == 0:
            return np.zeros(self.n_agents, dtype=bool)
        hit = np.asarray(self.regime_changes[:, start:].any(axis=1), dtype=bool)
        return np.asarray(hit[self.node], dtype=bool)

    @property
    def n_agents(self) -> int:
        """Number of agents."""
        return int(self.labels.size)

    def feature_index(self, name: str) -> int:
        """Column of the feature called ``name``."""
        if name not in _IDX:
            raise ValueError(f"unknown feature {name!r}: expected one of {FEATURE_NAMES}")
        return _IDX[name]


# --------------------------------------------------------------------------- validation


def _count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _real(name: str, value: object, low: float, high: float | None) -> float:
    allowed = f"in [{low}, {high}]" if high is not None else f">= {low} and finite"
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a real number {allowed}, got {value!r}")
    x = float(value)
    if not np.isfinite(x) or x < low or (high is not None and x > high):
        raise ValueError(f"{name} must be a real number {allowed}, got {value!r}")
    return x


def _attack_names(attacks: object) -> tuple[str, ...]:
    if isinstance(attacks, str):
        attacks = (attacks,)
    if not isinstance(attacks, Sequence):
        raise ValueError(
            f"attacks must be a sequence of attack names (allowed names: {ATTACKS}), "
            f"got {attacks!r}"
        )
    names = tuple(attacks)
    for a in names:
        if not isinstance(a, str) or a not in ATTACKS:
            raise ValueError(f"attacks contains unknown attack {a!r}: allowed names are {ATTACKS}")
    return names


# --------------------------------------------------------------------------- model pieces


def _expected_abs_residual(
    level: NDArray[np.float64], mu: NDArray[np.float64], sd: NDArray[np.float64]
) -> NDArray[np.float64]:
    """E|clip(level + X, 0, 1) - level| for X ~ N(mu, sd^2), elementwise (sd may be 0)."""
    sd = np.maximum(sd, 1e-12)
    low, high = -level, 1.0 - level  # the residual is clipped to [low, high]
    a = (low - mu) / sd
    b = (high - mu) / sd
    c = -mu / sd  # where the residual crosses zero

    def pdf(x: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi), dtype=np.float64)

    def partial(lo: NDArray[np.float64], hi: NDArray[np.float64]) -> NDArray[np.float64]:
        # E[X; lo < X < hi] with bounds in standard units
        return mu * (special.ndtr(hi) - special.ndtr(lo)) + sd * (pdf(lo) - pdf(hi))

    positive = partial(c, b) + high * special.ndtr(-b)
    negative = -partial(a, c) - low * special.ndtr(a)
    return np.asarray(positive + negative, dtype=np.float64)


def _template_mix(commands_per_window: int) -> NDArray[np.float64]:
    """Expected share of each template in a window (one slot per class, rest by weight)."""
    p = np.zeros(len(CATALOGUE))
    for c in range(_N_CLASSES):
        members = np.equal(_T_CLASS, c)
        p[members] += _T_WEIGHT[members] / _T_WEIGHT[members].sum()
    p += (commands_per_window - _N_CLASSES) * _T_WEIGHT / _T_WEIGHT.sum()
    return p / commands_per_window


def _mimicry_noise_scale(
    bias: NDArray[np.float64],
    class_bias: NDArray[np.float64],
    sigma: NDArray[np.float64],
    delta: float,
    commands_per_window: int,
) -> NDArray[np.float64]:
    """Per-agent noise factor k in [0, 1] that keeps expected accuracy at its honest value."""
    mix = _template_mix(commands_per_window)
    target = _T_CLASS == _CRITICAL
    p_t = mix[target].sum()
    comp = delta * p_t / (1.0 - p_t)
    mu = bias[:, None] + class_bias[:, _T_CLASS]  # (m, T)
    sd = sigma[:, None] * _T_DIFFICULTY[None, :]
    level = _T_LEVEL[None, :]
    honest = (_expected_abs_residual(level, mu, sd) * mix).sum(axis=1)
    on_target = _expected_abs_residual(level[:, target], mu[:, target] - delta, sd[:, target])
    on_target = (on_target * mix[target]).sum(axis=1)

    def others(k: NDArray[np.float64]) -> NDArray[np.float64]:
        e = _expected_abs_residual(
            level[:, ~target], mu[:, ~target] + comp, k[:, None] * sd[:, ~target]
        )
        return (e * mix[~target]).sum(axis=1)

    if delta == 0.0 or sigma.size == 0:
        return np.ones_like(sigma)
    lo = np.zeros_like(sigma)
    hi = np.ones_like(sigma)
    for _ in range(40):  # bisection; the expected error grows with k
        mid = 0.5 * (lo + hi)
        too_big = on_target + others(mid) > honest
        hi = np.where(too_big, mid, hi)
        lo = np.where(too_big, lo, mid)
    return np.where(on_target + others(hi) <= honest, hi, lo)


CHUNK_AGENTS = 1024  # agents per block inside a window (cache-sized temporaries)
EXTRA_KEY = 1002  # spawn key of each window's second stream (benign draws)
LATENCY_SPREAD_KEY = 1003  # spawn key of the honest agents' latency-spread draws


class _Drift(NamedTuple):
    shift: NDArray[np.float64]  # (cpw,) shift by position in the window

    def apply(
        self, pred: NDArray[np.float64], tmpl: NDArray[np.intp], cls: NDArray[np.intp], sel: slice
    ) -> None:
        pred += self.shift


class _Hijack(NamedTuple):
    family: NDArray[np.intp]  # (m,) target family per member
    amount: float

    def apply(
        self, pred: NDArray[np.float64], tmpl: NDArray[np.intp], cls: NDArray[np.intp], sel: slice
    ) -> None:
        pred -= self.amount * (_T_FAMILY[tmpl] == self.family[sel][:, None])


class _Compensation(NamedTuple):
    amount: float  # the CRITICAL shift that the rest of the window compensates

    def apply(
        self, pred: NDArray[np.float64], tmpl: NDArray[np.intp], cls: NDArray[np.intp], sel: slice
    ) -> None:
        on = cls == _CRITICAL
        n_on = on.sum(axis=1, keepdims=True)
        pred += np.where(on, 0.0, self.amount * n_on / (cls.shape[1] - n_on))


_RowEffect = _Drift | _Hijack | _Compensation

_CONF_DROP = (CONFIDENCE_DIFFICULTY_SLOPE * (_T_DIFFICULTY - 1.0)).astype(np.float32)
_COST32 = _T_COST.astype(np.float32)
_TABLE_ALL = np.repeat(np.arange(len(CATALOGUE)), np.rint(_T_WEIGHT * 10).astype(np.intp))
_TABLE_CLASS = tuple(
    np.repeat(
        np.flatnonzero(np.equal(_T_CLASS, c)),
        np.rint(_T_WEIGHT[np.equal(_T_CLASS, c)] * 10).astype(np.intp),
    )
    for c in range(_N_CLASSES)
)


def _draw_templates(rng: np.random.Generator, n: int, cpw: int) -> NDArray[np.intp]:
    """Template index of every command: one per class at spread positions, the rest by weight.

    Weights are exact in tenths, so a lookup table of template indices turns the
    weighted draw into one integer draw and one gather.
    """
    tmpl = _TABLE_ALL.take(rng.integers(0, _TABLE_ALL.size, (n, cpw), dtype=np.int16))
    for c, j in enumerate(_class_slots(cpw)):
        table = _TABLE_CLASS[c]
        tmpl[:, j] = table.take(rng.integers(0, table.size, n, dtype=np.int16))
    return tmpl


def _members_in(rows: NDArray[np.intp], lo: int, hi: int) -> tuple[slice, NDArray[np.intp]]:
    """Positions (in ``rows``, sorted) and chunk-local indices of the rows in [lo, hi)."""
    a, b = np.searchsorted(rows, [lo, hi])
    return slice(int(a), int(b)), rows[a:b] - lo


class _Extra(NamedTuple):
    """The benign parts of one window that draw from the window's second stream."""

    rng: np.random.Generator
    noise_df: float  # Student t degrees of freedom of the noise; inf: normal
    mix_share: NDArray[np.float32] | None  # (n_agents,) share of slots from the profile
    mix_profile: NDArray[np.intp] | None  # (n_agents,) profile of each agent's node
    think_s: NDArray[np.float64] | None  # (n_agents,) mean think time; None: no clock
    think_us: NDArray[np.int64] | None  # (n_agents,) out: the window's think time, us
    lat_us: NDArray[np.int64] | None  # (n_agents,) out: the window's summed latency, us


class _Record(NamedTuple):
    """Per-assessment arrays of one block of agents in one window (for events)."""

    tmpl: NDArray[np.int8]
    pred: NDArray[np.float64]
    conf: NDArray[np.float32]
    lat: NDArray[np.float32]


def _apply_extra(
    extra: _Extra, tmpl: NDArray[np.intp], z: NDArray[np.float32], lo: int, hi: int, cpw: int
) -> None:
    """Draw the window's think time, the t-noise scale and the workload mix of rows lo:hi."""
    n = hi - lo
    rx = extra.rng
    if extra.think_s is not None and extra.think_us is not None:
        # the sum of cpw exponential think times is Gamma(cpw): one draw per agent
        total = rx.standard_gamma(float(cpw), n) * extra.think_s[lo:hi]
        extra.think_us[lo:hi] = np.rint(total * 1e6).astype(np.int64)
    if np.isfinite(extra.noise_df):
        df = extra.noise_df
        # unit-variance Student t: z * sqrt((df - 2) / chi2_df)
        chi2 = rx.standard_gamma(np.float32(df / 2.0), (n, cpw), dtype=np.float32)
        chi2 *= np.float32(2.0 / (df - 2.0))
        np.maximum(chi2, np.float32(1e-20), out=chi2)
        np.sqrt(chi2, out=chi2)
        z /= chi2
    if extra.mix_share is not None and extra.mix_profile is not None:
        share = extra.mix_share[lo:hi]
        if not share.any():  # before every node's onset: nothing to swap, nothing drawn
            return
        u = rx.random((n, cpw), dtype=np.float32)
        swap = u < share[:, None]
        swap[:, _class_slots(cpw)] = False  # the guaranteed class slots stay
        rows, cols = np.nonzero(swap)
        prof = extra.mix_profile[lo:hi][rows]
        size = _PROFILE_SIZE[prof]
        # given u < share, u / share is uniform on [0, 1): it picks the profile's template
        v = u[rows, cols].astype(np.float64) / share[rows]
        pick = np.minimum((v * size).astype(np.int64), size - 1)
        tmpl[rows, cols] = _PROFILE_TABLE[prof, pick]


def _class_slots(cpw: int) -> NDArray[np.intp]:
    """Positions of the one-per-class guaranteed slots in a window of ``cpw`` commands."""
    return ((np.arange(_N_CLASSES) + 0.5) * cpw / _N_CLASSES).astype(np.intp)


def _window_features(
    rng: np.random.Generator,
    lo: int,
    hi: int,
    cpw: int,
    class_offset: NDArray[np.float64],
    class_noise: NDArray[np.float64],
    conf_level: NDArray[np.float64],
    conf_spread: NDArray[np.float64],
    lat_scale: NDArray[np.float64],
    per_command: list[tuple[NDArray[np.intp], _RowEffect]],
    *,
    extra: _Extra | None = None,
    record: list[_Record] | None = None,
    lat_sd: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """Features of agents ``lo:hi`` in one window, shape (hi - lo, d).

    ``extra`` adds the benign parts drawn from the window's second stream;
    ``record`` (events only) receives the per-assessment arrays; ``lat_sd`` is each
    agent's per-command latency log-SD (None: :data:`LATENCY_LOG_SD` for all).
    """
    n = hi - lo
    tmpl = _draw_templates(rng, n, cpw)
    # Confidence and latency only need single precision; the risk path stays float64.
    z = rng.standard_normal((n, cpw), dtype=np.float32)
    u_conf = rng.random((n, cpw), dtype=np.float32)
    z_lat = rng.standard_normal((n, cpw), dtype=np.float32)
    if extra is not None:
        _apply_extra(extra, tmpl, z, lo, hi, cpw)

    cls = _T_CLASS.take(tmpl)
    flat = cls + (_N_CLASSES * np.arange(lo, hi, dtype=np.intp))[:, None]
    true = _T_LEVEL.take(tmpl)
    pred = class_noise.take(flat)
    pred *= _T_DIFFICULTY.take(tmpl)
    pred *= z
    pred += true
    pred += class_offset.take(flat)
    for rows, effect in per_command:
        sel, local = _members_in(rows, lo, hi)
        if local.size:
            sub = pred[local]
            effect.apply(sub, tmpl[local], cls[local], sel)
            pred[local] = sub
    np.maximum(pred, 0.0, out=pred)
    np.minimum(pred, 1.0, out=pred)
    resid = pred - true
    absr = np.abs(resid)

    conf = u_conf
    conf *= 2.0
    conf -= 1.0
    conf *= conf_spread[lo:hi, None].astype(np.float32)
    conf += conf_level[lo:hi, None].astype(np.float32)
    conf -= _CONF_DROP.take(tmpl)
    np.maximum(conf, 0.0, out=conf)
    np.minimum(conf, 1.0, out=conf)
    lat = z_lat
    if lat_sd is None:
        lat *= np.float32(LATENCY_LOG_SD)
    else:
        lat *= lat_sd[lo:hi, None].astype(np.float32)
    np.exp(lat, out=lat)
    lat *= _COST32.take(tmpl)
    lat *= lat_scale[lo:hi, None].astype(np.float32)
    if extra is not None and extra.lat_us is not None:
        extra.lat_us[lo:hi] = np.rint(lat * np.float32(1000.0)).astype(np.int64).sum(axis=1)
    if record is not None:
        record.append(_Record(tmpl.astype(np.int8), pred.copy(), conf.copy(), lat.copy()))

    local_key = (cls + (_N_CLASSES * np.arange(n, dtype=np.intp))[:, None]).ravel()
    count = np.bincount(local_key, minlength=n * _N_CLASSES).reshape(n, _N_CLASSES)
    psum_flat = np.bincount(local_key, weights=pred.ravel(), minlength=n * _N_CLASSES)
    psum = np.asarray(psum_flat, dtype=np.float64).reshape(n, _N_CLASSES)
    rsum = psum - count * _LEVELS
    within = np.maximum(np.einsum("ij,ij->i", pred, pred) - (psum * psum / count).sum(axis=1), 0.0)

    out = np.empty((n, len(FEATURE_NAMES)))
    out[:, _IDX["accuracy"]] = 1.0 - absr.mean(axis=1)
    out[:, _IDX["bias"]] = resid.mean(axis=1)
    out[:, _IDX["bias_safe"]] = rsum[:, _SAFE] / count[:, _SAFE]
    out[:, _IDX["bias_network_privesc"]] = (rsum[:, _NETWORK] + rsum[:, _PRIVESC]) / (
        count[:, _NETWORK] + count[:, _PRIVESC]
    )
    out[:, _IDX["bias_high_risk"]] = (rsum[:, _DESTRUCTIVE] + rsum[:, _CRITICAL]) / (
        count[:, _DESTRUCTIVE] + count[:, _CRITICAL]
    )
    out[:, _IDX["error_rate"]] = (absr > ERROR_TOLERANCE).mean(axis=1)
    out[:, _IDX["consistency"]] = np.sqrt(within / max(cpw - _N_CLASSES, 1))
    conf_mean = conf.mean(axis=1, dtype=np.float64)
    out[:, _IDX["confidence_mean"]] = conf_mean
    conf -= conf_mean[:, None].astype(np.float32)
    out[:, _IDX["confidence_std"]] = np.sqrt(np.einsum("ij,ij->i", conf, conf) / cpw)
    out[:, _IDX["latency_mean"]] = lat.mean(axis=1, dtype=np.float64)
    q95 = int(np.ceil(0.95 * cpw)) - 1  # nearest-rank 95th percentile
    lat.partition(q95, axis=1)
    out[:, _IDX["latency_p95"]] = lat[:, q95]
    out[:, _IDX["family_underrating"]] = _family_underrating(tmpl, resid)
    return out


def _family_underrating(tmpl: NDArray[np.intp], resid: NDArray[np.float64]) -> NDArray[np.float64]:
    """Under-rating energy of each row: ``sum_c max(-sum_c resid, 0)**2 / n_c`` over cells.

    Cells are the (family, class) pairs of the catalogue (:data:`_T_CELL`); absent
    cells add 0. Squaring the standardised cell sums makes the statistic additive
    over cells and over windows (a window mean accumulates the evidence), unlike a
    per-window maximum, whose honest level absorbs the rare windows that hold a
    targeted command.
    """
    n = tmpl.shape[0]
    key = (_T_CELL.take(tmpl) + (_N_CELLS * np.arange(n, dtype=np.intp))[:, None]).ravel()
    count = np.bincount(key, minlength=n * _N_CELLS).astype(np.float64)
    under: NDArray[np.float64] = np.asarray(
        np.bincount(key, weights=resid.ravel(), minlength=n * _N_CELLS), dtype=np.float64
    )
    np.negative(under, out=under)
    np.maximum(under, 0.0, out=under)
    under *= under
    under /= np.maximum(count, 1.0)
    return np.asarray(under.reshape(n, _N_CELLS).sum(axis=1), dtype=np.float64)


# --------------------------------------------------------------------------- simulator


def simulate_network(
    n_agents: int = 1000,
    n_nodes: int = 10,
    compromised_fraction: float = 0.1,
    attacks: Sequence[str] = ATTACKS,
    strength: float = 1.0,
    commands_per_window: int = 50,
    n_windows: int = 20,
    baseline_windows: int = 5,
    attack_start: int | None = None,
    seed: int = 0,
    difficulty: str = "default",
    fleet_regime_every: int = 8,
    node_regime_rate: float = 0.05,
    regime_scale: float = 1.0,
    benign_drift: float = 1.0,
    noise_df: float = 5.0,
    trait_correlation: float = 0.5,
    diurnal_amplitude: float = 0.2,
    workload_shift: float = 0.3,
    latency_spread_sd: float = 0.25,
) -> SimulatedNetwork:
    """Simulate a network of agents assessing command risk, some of them compromised.

    Parameters
    ----------
    n_agents : int >= 1
    n_nodes : int in [1, n_agents]
        Agents are spread over the nodes as evenly as possible, in random order.
    compromised_fraction : float in [0, 1]
        ``round(compromised_fraction * n_agents)`` agents are compromised.
    attacks : sequence of names from :data:`ATTACKS`
        Assigned to the compromised agents in round robin (a name may repeat to
        weight the mix). May be empty only when nobody is compromised.
    strength : float >= 0
        Multiplies every compromise shift (1.0 = the magnitudes of ``difficulty``).
    commands_per_window : int >= 5
        Commands per window (one of each risk class is guaranteed).
    n_windows : int >= 2
    baseline_windows : int in [1, n_windows - 1]
        The first windows, summarised in ``baseline_features``.
    attack_start : int in [0, n_windows - 1] or None
        Window at which compromises start; None means ``baseline_windows``.
        Poisoning ignores it and starts at window 0.
    seed : int >= 0
        Use seeds of :data:`tcpkit.detect.seeds.TUNING_SEEDS` for development.
    difficulty : one of :data:`DIFFICULTIES` ("easy", "default", "hard")
        Magnitudes of the compromises (see :class:`Difficulty`). "easy" is the
        first version's world (risk shifts only, at the module docstring's sizes).
    fleet_regime_every : int >= 0
        A fleet-wide regime change every that many windows (0: none); see
        :mod:`tcpkit.detect.benign`.
    node_regime_rate : float in [0, 1]
        Probability of a node-wide regime change per node and window.
    regime_scale : float >= 0
        Multiplies the size of every regime change (0: steps of size zero).
    benign_drift : float >= 0
        Multiplies the honest agents' slow drift rates (0: no drift).
    noise_df : float > 2, or inf
        Degrees of freedom of the Student t assessment noise (scaled to the
        normal model's variance); inf gives normal noise.
    trait_correlation : float in [0, 1)
        Loading of the agents' latent capability on noise (lower), confidence
        (higher) and latency (higher); 0 makes these traits independent.
    diurnal_amplitude : float in [0, 0.9]
        Latency is multiplied by ``1 + a * cos(2 pi (hour - 15) / 24)`` at the
        hour of the simulated clock (UTC) when the window starts.
    workload_shift : float in [0, 1]
        Largest share of a node's weighted command slots that its alternative
        workload profile takes over (0: the catalogue's mix everywhere).
    latency_spread_sd : float >= 0
        Honest agents differ in how steady their pace is: each agent's per-command
        latency log-SD is ``LATENCY_LOG_SD * exp(N(0, latency_spread_sd))`` (0: the
        same 0.35 for every agent, which makes the ratio of the 95th percentile to
        the mean latency an agent constant, a tell no real fleet has).

    Returns
    -------
    SimulatedNetwork

    Raises
    ------
    ValueError
        Naming the first bad parameter and its allowed range.

    Notes
    -----
    ``simulate_network(..., **EASY_WORLD)`` is the stationary world of the first
    version (honest agents never change, compromises are gross); see :data:`CALM_WORLD`.
    """
    params = _validate(
        n_agents=n_agents,
        n_nodes=n_nodes,
        compromised_fraction=compromised_fraction,
        attacks=attacks,
        strength=strength,
        commands_per_window=commands_per_window,
        n_windows=n_windows,
        baseline_windows=baseline_windows,
        attack_start=attack_start,
        seed=seed,
        difficulty=difficulty,
        fleet_regime_every=fleet_regime_every,
        node_regime_rate=node_regime_rate,
        regime_scale=regime_scale,
        benign_drift=benign_drift,
        noise_df=noise_df,
        trait_correlation=trait_correlation,
        diurnal_amplitude=diurnal_amplitude,
        workload_shift=workload_shift,
        latency_spread_sd=latency_spread_sd,
    )
    return _run(params, None)


def _validate(**kw: Any) -> dict[str, Any]:
    """Check every parameter once; return them with defaults resolved."""
    n_agents = _count("n_agents", kw["n_agents"], 1)
    n_nodes = _count("n_nodes", kw["n_nodes"], 1)
    if n_nodes > n_agents:
        raise ValueError(f"n_nodes must be in [1, n_agents={n_agents}], got {n_nodes}")
    compromised_fraction = _real("compromised_fraction", kw["compromised_fraction"], 0.0, 1.0)
    attack_names = _attack_names(kw["attacks"])
    strength = _real("strength", kw["strength"], 0.0, None)
    cpw = _count("commands_per_window", kw["commands_per_window"], _N_CLASSES)
    n_windows = _count("n_windows", kw["n_windows"], 2)
    baseline_windows = _count("baseline_windows", kw["baseline_windows"], 1)
    if baseline_windows >= n_windows:
        raise ValueError(
            f"baseline_windows must be in [1, n_windows - 1 = {n_windows - 1}], "
            f"got {baseline_windows}"
        )
    attack_start = kw["attack_start"]
    if attack_start is None:
        start = baseline_windows
    else:
        start = _count("attack_start", attack_start, 0)
        if start >= n_windows:
            raise ValueError(
                f"attack_start must be in [0, n_windows - 1 = {n_windows - 1}] or None, "
                f"got {attack_start}"
            )
    seed = _count("seed", kw["seed"], 0)
    n_compromised = round(compromised_fraction * n_agents)
    if n_compromised > 0 and not attack_names:
        raise ValueError(
            f"attacks must name at least one attack when compromised_fraction > 0 "
            f"(allowed names: {ATTACKS})"
        )
    difficulty = kw["difficulty"]
    if not isinstance(difficulty, str) or difficulty not in DIFFICULTIES:
        raise ValueError(
            f"difficulty must be one of {tuple(DIFFICULTIES)}, got {difficulty!r}"
        )
    noise_df = kw["noise_df"]
    if (
        isinstance(noise_df, bool)
        or not isinstance(noise_df, Real)
        or np.isnan(float(noise_df))
        or float(noise_df) <= 2.0
    ):
        raise ValueError(f"noise_df must be a real number in (2, inf], got {noise_df!r}")
    trait_correlation = _real("trait_correlation", kw["trait_correlation"], 0.0, 1.0)
    if trait_correlation >= 1.0:
        raise ValueError(f"trait_correlation must be in [0, 1), got {trait_correlation!r}")
    return {
        "n_agents": n_agents,
        "n_nodes": n_nodes,
        "compromised_fraction": compromised_fraction,
        "attacks": attack_names,
        "strength": strength,
        "commands_per_window": cpw,
        "n_windows": n_windows,
        "baseline_windows": baseline_windows,
        "attack_start": start,
        "seed": seed,
        "difficulty": difficulty,
        "fleet_regime_every": _count("fleet_regime_every", kw["fleet_regime_every"], 0),
        "node_regime_rate": _real("node_regime_rate", kw["node_regime_rate"], 0.0, 1.0),
        "regime_scale": _real("regime_scale", kw["regime_scale"], 0.0, None),
        "benign_drift": _real("benign_drift", kw["benign_drift"], 0.0, None),
        "noise_df": float(noise_df),
        "trait_correlation": trait_correlation,
        "diurnal_amplitude": _real("diurnal_amplitude", kw["diurnal_amplitude"], 0.0, 0.9),
        "workload_shift": _real("workload_shift", kw["workload_shift"], 0.0, 1.0),
        "latency_spread_sd": _real("latency_spread_sd", kw.get("latency_spread_sd", 0.25), 0.0, None),
    }


class _Recorder(NamedTuple):
    """What :func:`simulate_events` needs from the loop, per window."""

    blocks: list[list[_Record]]  # per window: the blocks of agents in order
    clock_us: list[NDArray[np.int64]]  # per window: each agent's clock at the window start
    think_us: list[NDArray[np.int64]]  # per window: each agent's total think time


def _run(params: dict[str, Any], record: _Recorder | None) -> SimulatedNetwork:
    """Simulate with validated ``params``; fill ``record`` (events only)."""
    n_agents: int = params["n_agents"]
    n_nodes: int = params["n_nodes"]
    attack_names: tuple[str, ...] = params["attacks"]
    strength: float = params["strength"]
    cpw: int = params["commands_per_window"]
    n_windows: int = params["n_windows"]
    baseline_windows: int = params["baseline_windows"]
    start: int = params["attack_start"]
    seed: int = params["seed"]
    diff = DIFFICULTIES[params["difficulty"]]
    n_compromised = round(params["compromised_fraction"] * n_agents)

    ss_traits, ss_assign, *ss_windows = np.random.SeedSequence(seed).spawn(2 + n_windows)

    # Honest traits of every agent.
    rt = np.random.default_rng(ss_traits)
    bias = rt.normal(0.0, BIAS_SD, n_agents)
    class_bias = rt.normal(0.0, CLASS_BIAS_SD, (n_agents, _N_CLASSES))
    log_noise = rt.normal(0.0, NOISE_LOG_SD, n_agents)
    conf_draw = rt.normal(CONFIDENCE_MEAN, CONFIDENCE_LEVEL_SD, n_agents)
    conf_spread = CONFIDENCE_SPREAD * np.exp(rt.normal(0.0, CONFIDENCE_SPREAD_LOG_SD, n_agents))
    log_lat = rt.normal(0.0, LATENCY_AGENT_LOG_SD, n_agents)

    # Nodes and compromises.
    ra = np.random.default_rng(ss_assign)
    node = ra.permutation(np.arange(n_agents, dtype=np.int64) % n_nodes)
    compromised = ra.permutation(n_agents)[:n_compromised]
    labels = np.zeros(n_agents, dtype=bool)
    labels[compromised] = True
    attack = np.full(n_agents, None, dtype=object)
    members: dict[str, NDArray[np.intp]] = {}
    if n_compromised:
        assigned = np.array(attack_names, dtype=object)[
            np.arange(n_compromised) % len(attack_names)
        ]
        for name in ATTACKS:
            if name in attack_names:
                members[name] = np.sort(compromised[assigned == name])
                attack[members[name]] = name

    # Benign structure (its own streams: nothing above or below changes with it).
    world = draw_benign(
        seed,
        node,
        n_nodes,
        n_windows,
        _N_CLASSES,
        len(_PROFILE_NAMES),
        fleet_regime_every=params["fleet_regime_every"],
        node_regime_rate=params["node_regime_rate"],
        regime_scale=params["regime_scale"],
        benign_drift=params["benign_drift"],
        workload_shift=params["workload_shift"],
    )
    rho = params["trait_correlation"]
    if rho > 0.0:  # mix the latent capability in (rho = 0 keeps the independent traits)
        keep = np.sqrt(1.0 - rho * rho)
        u = world.latent
        log_noise = keep * log_noise - rho * NOISE_LOG_SD * u
        conf_draw = CONFIDENCE_MEAN + keep * (conf_draw - CONFIDENCE_MEAN) + rho * CONFIDENCE_LEVEL_SD * u
        log_lat = keep * log_lat + rho * LATENCY_AGENT_LOG_SD * u
    sigma = NOISE_MEDIAN * np.exp(log_noise)
    conf_level = np.clip(conf_draw, 0.5, 0.99)
    lat_scale = LATENCY_MEDIAN_MS * np.exp(log_lat)
    lat_sd_agent: NDArray[np.float64] | None = None
    if params["latency_spread_sd"] > 0.0:  # its own stream: nothing else changes with it
        rl = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(LATENCY_SPREAD_KEY,)))
        lat_sd_agent = LATENCY_LOG_SD * np.exp(rl.normal(0.0, params["latency_spread_sd"], n_agents))

    hijack = members.get("semantic_hijack", np.empty(0, dtype=np.intp))
    hijack_family = ra.choice(_HIJACK_FAMILIES, size=hijack.size)
    coord = members.get("coordination", np.empty(0, dtype=np.intp))
    coord_group = np.arange(coord.size) // COORDINATION_GROUP_SIZE
    n_groups = int(coord_group.max()) + 1 if coord.size else 0
    group_target = ra.uniform(*COORDINATION_TARGET_RANGE, size=n_groups)
    group_shock = ra.normal(0.0, COORDINATION_SHOCK_SD, (n_windows, n_groups))
    mimic = members.get("mimicry", np.empty(0, dtype=np.intp))
    mimic_shift = MIMICRY * strength * diff.factor("mimicry")
    mimic_k = _mimicry_noise_scale(bias[mimic], class_bias[mimic], sigma[mimic], mimic_shift, cpw)

    d = len(FEATURE_NAMES)
    windows = np.empty((n_agents, n_windows, d), dtype=np.float64)
    base_offset = bias[:, None] + class_bias  # (n, 5) honest offset per class
    base_noise = np.repeat(sigma[:, None], _N_CLASSES, axis=1)
    high = np.array([_DESTRUCTIVE, _CRITICAL], dtype=np.intp)
    not_critical = np.array([_SAFE, _NETWORK, _PRIVESC, _DESTRUCTIVE], dtype=np.intp)

    amplitude = params["diurnal_amplitude"]
    need_clock = amplitude > 0.0 or record is not None
    clock = world.start_us.copy() if need_clock else None
    think_us = np.zeros(n_agents, dtype=np.int64) if need_clock else None
    lat_us = np.zeros(n_agents, dtype=np.int64) if need_clock else None
    mixing = params["workload_shift"] > 0.0
    mix_profile = world.workload_profile[node] if mixing else None
    # each agent's accumulated regime shift: bias, log noise, confidence, log latency
    regime = np.zeros((4, n_agents))
    regime_class = np.zeros((n_agents, _N_CLASSES))
    s_fp = FP_INFLATION * strength * diff.factor("fp_inflation")
    s_fn = FN_SUPPRESSION * strength * diff.factor("fn_suppression")
    s_poison = POISONING * strength * diff.factor("poisoning")
    s_coord = strength * diff.factor("coordination")
    s_drift = DRIFT_PER_WINDOW * strength * diff.factor("gradual_drift")
    s_hijack = HIJACK * strength * diff.factor("semantic_hijack")

    for w in range(n_windows):
        # Per-agent, per-class offset and noise for this window: most compromises
        # are a constant shift per class, so they cost one gather per command.
        if world.regime_changes[:, w].any():
            r = world.response[w]
            regime += world.steps[:, node, w] * r
            regime_class += world.class_steps[node, w] * r[:, None]
        shift = regime[0] + world.drift_bias * w
        class_offset = base_offset + (shift[:, None] + regime_class)
        class_noise = base_noise * np.exp(regime[1])[:, None]
        conf_w = conf_level + (regime[2] + world.drift_confidence * w)
        log_lat_w = regime[3] + world.drift_latency * w
        active = w >= start
        if active and "fp_inflation" in members:
            class_offset[members["fp_inflation"], _SAFE] += s_fp
        if active and "fn_suppression" in members:
            class_offset[np.ix_(members["fn_suppression"], high)] -= s_fn
        if "poisoning" in members:
            class_offset[np.ix_(members["poisoning"], high)] -= s_poison
        if active and coord.size:
            pull = COORDINATION_PULL * (group_target[coord_group][:, None] - _LEVELS[None, :])
            class_offset[coord] += s_coord * (pull + group_shock[w, coord_group][:, None])
        if active and mimic.size:
            class_offset[mimic, _CRITICAL] -= mimic_shift
            class_noise[np.ix_(mimic, not_critical)] *= mimic_k[:, None]
        # Confidence and latency of compromised agents (from their attack's start).
        spread_w = conf_spread.copy()
        lat_sd_w = None if lat_sd_agent is None else lat_sd_agent.copy()
        for name, rows in members.items():
            if name != "poisoning" and not active:
                continue
            ramp = 1.0
            if name == "gradual_drift":
                ramp = min(1.0, (w - start + 1) / DRIFT_RAMP_WINDOWS)
            conf_w[rows] += diff.confidence_shift(name) * strength * ramp
            log_lat_w[rows] += diff.latency_shift(name) * strength * ramp
            cs = diff.confidence_spread_shift(name) * strength * ramp
            if cs != 0.0:
                spread_w[rows] *= np.exp(cs)
            ls = diff.latency_spread_shift(name) * strength * ramp
            if ls != 0.0:
                if lat_sd_w is None:
                    lat_sd_w = np.full(n_agents, LATENCY_LOG_SD)
                lat_sd_w[rows] *= np.exp(ls)
        lat_w = lat_scale * np.exp(log_lat_w)
        if clock is not None and amplitude > 0.0:
            hour = (clock / 3.6e9) % 24.0
            lat_w *= 1.0 + amplitude * np.cos(2.0 * np.pi * (hour - DIURNAL_PEAK_HOUR) / 24.0)
        # Per-command compromises, applied to the affected rows only.
        per_command: list[tuple[NDArray[np.intp], _RowEffect]] = []
        if active and "gradual_drift" in members:
            drift = -s_drift * ((w - start) + (np.arange(cpw) + 0.5) / cpw)
            per_command.append((members["gradual_drift"], _Drift(drift)))
        if active and hijack.size:
            per_command.append((hijack, _Hijack(hijack_family, s_hijack)))
        if active and mimic.size:
            per_command.append((mimic, _Compensation(mimic_shift)))

        rw = np.random.default_rng(ss_windows[w])
        extra = _Extra(
            rng=np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(EXTRA_KEY, w))),
            noise_df=params["noise_df"],
            mix_share=world.workload_share[node, w].astype(np.float32) if mixing else None,
            mix_profile=mix_profile,
            think_s=world.think_s if need_clock else None,
            think_us=think_us,
            lat_us=lat_us,
        )
        blocks: list[_Record] | None = None
        if record is not None:
            blocks = []
            record.blocks.append(blocks)
        for lo in range(0, n_agents, CHUNK_AGENTS):
            hi = min(lo + CHUNK_AGENTS, n_agents)
            windows[lo:hi, w, :] = _window_features(
                rw,
                lo,
                hi,
                cpw,
                class_offset,
                class_noise,
                conf_w,
                spread_w,
                lat_w,
                per_command,
                extra=extra,
                record=blocks,
                lat_sd=lat_sd_w,
            )
        if clock is not None and think_us is not None and lat_us is not None:
            if record is not None:
                record.clock_us.append(clock.copy())
                record.think_us.append(think_us.copy())
            clock += think_us + lat_us

    features = windows[:, baseline_windows:, :].mean(axis=1)
    baseline_features = windows[:, :baseline_windows, :].mean(axis=1)
    target_family = np.full(n_agents, None, dtype=object)
    target_family[hijack] = np.array(_FAMILIES, dtype=object)[hijack_family]
    profiles = np.array(_PROFILE_NAMES, dtype=object)[world.workload_profile]
    for arr in (windows, features, baseline_features, labels, attack, node, target_family, profiles):
        arr.flags.writeable = False
    return SimulatedNetwork(
        windows=windows,
        features=features,
        baseline_features=baseline_features,
        feature_names=FEATURE_NAMES,
        labels=labels,
        attack=attack,
        node=node,
        attack_start=start,
        params=params,
        seed=seed,
        hijack_family=target_family,
        regime_changes=world.regime_changes,
        fleet_regime_windows=world.fleet_regime_windows,
        workload_share=world.workload_share,
        workload_profile=profiles,
    )


def simulate_events(**kwargs: Any) -> Any:
    """Simulate a network and its events (one row per command); see :mod:`tcpkit.detect.sim_events`.

    Takes the keyword parameters of :func:`simulate_network` and returns a
    :class:`~tcpkit.detect.sim_events.SimulatedEvents` (``table``, ``labels``,
    ``network``); ``network`` is bit-identical to ``simulate_network(**kwargs)``.
    """
    from tcpkit.detect.sim_events import simulate_events as _simulate_events

    return _simulate_events(**kwargs)
