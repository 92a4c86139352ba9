"""How hard is a simulated world? The best single feature's effect per attack type.

Why
---
A detector's recall says little unless the reader knows how separable the
world was: when one feature alone puts every attacked agent beyond every clean
agent, any detector wins. :func:`separability_table` measures, for every
attack type present in a :class:`~tcpkit.detect.simulate.SimulatedNetwork`,
the single feature on which the attacked agents stand out most, so every
notebook can show how hard its world is.

Definitions
-----------
Two per-agent quantities are examined, each feature separately:

``change``
    the detection-window mean minus the reference (baseline-window) mean,
    ``net.features - net.baseline_features``;
``level``
    the detection-window mean, ``net.features``.

Besides the recorded features, every log ratio ``log(x_i / x_j)`` of two features that
are strictly positive for every agent in both periods is examined as a feature of its
own (named ``log(a/b)``): a ratio such as the 95th percentile over the mean latency is a
single number an analyst computes at once, and a world in which it separates the
attacked agents is not hard, however small the effect on each raw feature.

For an attack type and a feature, the *effect* is
``|median(attacked) - median(clean)| / sd(clean)`` with the clean agents'
(``~net.labels``) standard deviation (ddof=1): the median attacked agent's
distance from the typical clean agent, in clean-agent standard deviations.
The *best feature* maximises the effect; *beyond* is the share of attacked
agents beyond every clean agent on that feature, on the side of the effect
(above the clean maximum when the attacked median is higher, below the clean
minimum otherwise). A feature with zero clean spread is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tcpkit.detect.simulate import ATTACKS, SimulatedNetwork

__all__ = ["SeparabilityRow", "SeparabilityTable", "oracle_recall", "separability_of", "separability_table"]


@dataclass(frozen=True)
class SeparabilityRow:
    """Separability of one attack type (see the module docstring for the definitions)."""

    attack: str
    n_attacked: int
    change_feature: str
    change_effect: float
    change_beyond: float
    level_feature: str
    level_effect: float
    level_beyond: float

    @property
    def max_effect(self) -> float:
        """The larger of the change and level effects."""
        return max(self.change_effect, self.level_effect)


@dataclass(frozen=True)
class SeparabilityTable:
    """Per-attack separability of a world; ``rows`` in :data:`ATTACKS` order.

    The unit of every effect is the clean agents' standard deviation of that
    feature; ``n_clean`` agents define it. ``difficulty`` labels the world (the
    simulator's preset, or the security evaluation's budgets).
    """

    rows: tuple[SeparabilityRow, ...]
    n_clean: int
    difficulty: str

    @property
    def max_effect(self) -> float:
        """Largest best-feature effect over attack types, change or level (nan if no rows)."""
        return max((r.max_effect for r in self.rows), default=float("nan"))

    def row(self, attack: str) -> SeparabilityRow:
        """The row of ``attack``."""
        for r in self.rows:
            if r.attack == attack:
                return r
        raise KeyError(f"no attacked agents of type {attack!r} in this network")

    def to_markdown(self) -> str:
        """The table as GitHub Markdown (effects in clean-agent SDs, shares in %)."""
        lines = [
            f"Separability ({self.difficulty}; effect = |median attacked - median "
            f"clean| in clean-agent SDs over {self.n_clean} clean agents; beyond = attacked "
            "agents beyond every clean agent on that feature)",
            "",
            "| attack | n | change: best feature | effect | beyond | "
            "level: best feature | effect | beyond |",
            "|---|---:|---|---:|---:|---|---:|---:|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.attack} | {r.n_attacked} | {r.change_feature} | {r.change_effect:.2f} | "
                f"{100 * r.change_beyond:.0f} % | {r.level_feature} | {r.level_effect:.2f} | "
                f"{100 * r.level_beyond:.0f} % |"
            )
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


def _best(
    bad: NDArray[np.float64], clean: NDArray[np.float64], names: tuple[str, ...]
) -> tuple[str, float, float]:
    sd = clean.std(axis=0, ddof=1)
    centre = np.median(clean, axis=0)
    gap = np.median(bad, axis=0) - centre
    ok = sd > 0
    effect = np.where(ok, np.abs(gap) / np.where(ok, sd, 1.0), -np.inf)
    j = int(np.argmax(effect))
    if not np.isfinite(effect[j]):
        return names[j], float("nan"), float("nan")
    if gap[j] >= 0:
        beyond = float(np.mean(bad[:, j] > clean[:, j].max()))
    else:
        beyond = float(np.mean(bad[:, j] < clean[:, j].min()))
    return names[j], float(effect[j]), beyond


def _with_log_ratios(
    after: NDArray[np.float64], before: NDArray[np.float64], names: tuple[str, ...]
) -> tuple[NDArray[np.float64], NDArray[np.float64], tuple[str, ...]]:
    """Both periods' features with the log ratio of every strictly positive pair appended."""
    positive = [j for j in range(len(names)) if np.all(after[:, j] > 0) and np.all(before[:, j] > 0)]
    pairs = [(i, j) for a, i in enumerate(positive) for j in positive[a + 1 :]]
    if not pairs:
        return after, before, names
    i, j = (np.array(v, dtype=np.intp) for v in zip(*pairs, strict=True))
    extra_names = tuple(f"log({names[a]}/{names[b]})" for a, b in pairs)
    return (
        np.hstack([after, np.log(after[:, i]) - np.log(after[:, j])]),
        np.hstack([before, np.log(before[:, i]) - np.log(before[:, j])]),
        names + extra_names,
    )


def separability_table(net: SimulatedNetwork) -> SeparabilityTable:
    """Best single feature per attack type, for the change and for the level.

    Parameters
    ----------
    net : SimulatedNetwork
        Needs at least two clean agents; attack types without agents are left out.

    Raises
    ------
    ValueError
        When the network has fewer than two clean agents.
    """
    attack = np.asarray(net.attack, dtype=object).copy()
    attack[~np.asarray(net.labels, dtype=bool)] = None
    return separability_of(
        np.asarray(net.features, dtype=np.float64),
        np.asarray(net.baseline_features, dtype=np.float64),
        tuple(net.feature_names),
        attack,
        attacks=ATTACKS,
        difficulty=f"difficulty {str(net.params.get('difficulty', 'unknown'))!r}",
    )


def separability_of(
    after: NDArray[np.float64],
    before: NDArray[np.float64],
    names: tuple[str, ...],
    attack: NDArray[np.object_],
    *,
    attacks: tuple[str, ...],
    difficulty: str,
) -> SeparabilityTable:
    """The table for any world: per-agent detection and reference means and attack names.

    ``after`` and ``before`` are (n_agents, d) means of the detection and the reference
    windows, ``attack`` the attack name of each agent (None for a clean one), ``attacks``
    the types to report in order (types without agents are left out), ``difficulty`` a
    label of the world (the security evaluation passes its budgets).
    """
    attack = np.asarray(attack, dtype=object)
    clean = np.array([a is None for a in attack], dtype=bool)
    if int(clean.sum()) < 2:
        raise ValueError(f"separability needs at least 2 clean agents, got {int(clean.sum())}")
    after, before, names = _with_log_ratios(after, before, names)
    change = after - before
    level = after
    rows = []
    for name in attacks:
        bad = attack == name
        if not bad.any():
            continue
        cf, ce, cb = _best(change[bad], change[clean], names)
        lf, le, lb = _best(level[bad], level[clean], names)
        rows.append(SeparabilityRow(name, int(bad.sum()), cf, ce, cb, lf, le, lb))
    return SeparabilityTable(rows=tuple(rows), n_clean=int(clean.sum()), difficulty=difficulty)


def oracle_recall(net: SimulatedNetwork, fpr: float) -> dict[str, float]:
    """Recall per attack type of the linear test that knows each attack's shift: a ceiling.

    For every attack type, the agents' stacked ``(change, level)`` rows (24 numbers for 12
    features) are projected on ``S^-1 delta``, with ``S`` the clean agents' covariance and
    ``delta`` the attacked agents' median row minus the clean median (the Fisher
    discriminant direction, computed from the ground truth); an agent is flagged above the
    clean agents' ``1 - fpr`` quantile of that projection. No detector that has to find the
    direction from unlabelled data does better with a linear statistic *of these raw rows*
    at that false-positive rate; the figure is in-sample (the same agents define the
    direction and are scored), so it is optimistic for such tests. It is not a bound for
    detectors that transform each agent first: dividing an agent's change by its own noise
    (:mod:`tcpkit.detect.studentize`) or following its windows (CUSUM) uses evidence the raw
    means mix with honest heterogeneity, and the shipped detector exceeds this figure for
    some types (the statistics report shows both).
    ``fpr`` is a per-agent rate in (0, 1); BH at level ``q`` with a share ``pi`` of
    compromised agents flags at about ``q * pi`` per agent.
    """
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"fpr={fpr!r}: expected a per-agent false-positive rate in (0, 1)")
    clean = ~np.asarray(net.labels, dtype=bool)
    if int(clean.sum()) < 2:
        raise ValueError(f"oracle_recall needs at least 2 clean agents, got {int(clean.sum())}")
    after = np.asarray(net.features, dtype=np.float64)
    rows = np.hstack([after - np.asarray(net.baseline_features, dtype=np.float64), after])
    centre = np.median(rows[clean], axis=0)
    precision = np.linalg.pinv(np.cov(rows[clean], rowvar=False))
    out: dict[str, float] = {}
    for attack in ATTACKS:
        bad = np.asarray(net.attack == attack, dtype=bool)
        if not bad.any():
            continue
        direction = precision @ (np.median(rows[bad], axis=0) - centre)
        score = (rows - centre) @ direction
        cut = float(np.quantile(score[clean], 1.0 - fpr))
        out[attack] = float(np.mean(score[bad] > cut))
    return out
