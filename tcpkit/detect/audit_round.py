"""One round of an operator's audit of a reference fleet: whom to check next, and what to fit on.

Why
---
``tcpkit detect --audited FILE`` fits the shipped network detector on a reference inside the
fleet. A reference nobody checked may hold compromised agents, and a tenth of them takes the
detector's recall to nothing (the statistics report measures it). :mod:`tcpkit.detect.label_trim`
is the answer in simulation, where the ground truth audits; here an operator does, by reading
agents' logs, in rounds: ``tcpkit vet`` ranks the candidate reference, proposes the next batch
to check, reads the verdicts written so far, and writes the reference with every agent the audit
confirmed compromised removed (``--trimmed``), which ``tcpkit detect --audited`` then fits on.

What a round computes
---------------------
The features are the ones ``tcpkit detect`` would use on the same log
(:func:`tcpkit.detect.alerts.complete_windows` over the whole fleet), so the ranking reads
what the detector reads. :func:`~tcpkit.detect.label_trim.audit_ranking` ranks the reference
agents that have them; :func:`~tcpkit.detect.label_trim.next_audit_batch` picks the next batch
from the ranking and, once the verdicts hold both a compromised and a clean agent, alternately
from a logistic regression of them. The ranking uses the reference alone, never the agents it
will judge, so the guarantee of :mod:`tcpkit.detect.label_trim` holds: clean agents all stay,
missed compromised ones cost power, never false alarms, provided no verdict calls a clean agent
compromised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tcpkit.detect.alerts import complete_windows
from tcpkit.detect.baseline import BaselineError
from tcpkit.detect.features import FeatureTable
from tcpkit.detect.label_trim import audit_ranking, next_audit_batch

__all__ = ["DEFAULT_BATCH_SHARE", "AuditRound", "plan_audit"]

DEFAULT_BATCH_SHARE = 0.025  # run_audit's default batch: a fortieth of the reference per round


@dataclass(frozen=True)
class AuditRound:
    """The state of an audit after the verdicts so far, and the batch to check next.

    Attributes
    ----------
    reference : the candidate reference agents, as listed.
    ranked : the reference agents with features, most outlying first.
    outlyingness : ``{agent: score}`` of :func:`~tcpkit.detect.label_trim.audit_ranking`.
    next_batch : the agents to audit next (empty when every ranked agent has a verdict).
    confirmed : reference agents the audit found compromised, in reference order.
    cleared : reference agents the audit found clean, in reference order.
    unranked : ``{agent: reason}`` for reference agents without usable features (too little
        history, undefined features): never proposed, kept in the trimmed reference unless
        judged compromised.
    features : the feature names the ranking read.
    """

    reference: tuple[str, ...]
    ranked: tuple[str, ...]
    outlyingness: dict[str, float]
    next_batch: tuple[str, ...]
    confirmed: tuple[str, ...]
    cleared: tuple[str, ...]
    unranked: dict[str, str]
    features: tuple[str, ...]

    def trimmed(self) -> tuple[str, ...]:
        """The reference to fit on: every listed agent but the confirmed compromised ones."""
        gone = set(self.confirmed)
        return tuple(a for a in self.reference if a not in gone)

    def batch_csv(self) -> str:
        """The next batch as a verdict file to fill in: ``agent,verdict,position,outlyingness``.

        ``verdict`` is left empty for the auditor (``compromised`` or ``clean``); ``position``
        is the agent's place in the ranking (1: the most outlying).
        """
        position = {a: i + 1 for i, a in enumerate(self.ranked)}
        lines = ["agent,verdict,position,outlyingness"]
        lines += [f"{a},,{position[a]},{self.outlyingness[a]:.6g}" for a in self.next_batch]
        return "\n".join(lines) + "\n"


def plan_audit(
    feats: FeatureTable, reference: Sequence[str], verdicts: Mapping[str, bool], batch: int | None = None
) -> AuditRound:
    """The next round of the audit of ``reference`` (agents of ``feats``) given ``verdicts``.

    ``verdicts`` maps agents to True (compromised) or False (clean), e.g. from
    :func:`tcpkit.detect.events.read_verdicts`; every judged agent must be in ``reference``.
    ``batch`` agents are proposed (default :data:`DEFAULT_BATCH_SHARE` of the ranked reference,
    at least one). Raises :class:`~tcpkit.detect.baseline.BaselineError` naming what is wrong.
    """
    ref = tuple(str(a) for a in reference)
    if not ref:
        raise BaselineError("the reference names no agent")
    if len(set(ref)) != len(ref):
        raise BaselineError("the reference names an agent twice")
    known = set(feats.agents) | set(feats.excluded)
    absent = [a for a in ref if a not in known]
    if absent:
        shown = ", ".join(repr(a) for a in absent[:5]) + (" ..." if len(absent) > 5 else "")
        raise BaselineError(f"{len(absent)} reference agents have no events in the log: {shown}")
    in_ref = set(ref)
    outside = [a for a in verdicts if a not in in_ref]
    if outside:
        shown = ", ".join(repr(a) for a in outside[:5]) + (" ..." if len(outside) > 5 else "")
        raise BaselineError(f"{len(outside)} judged agents are not in the reference: {shown}")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise BaselineError(f"batch={batch!r}: expected a positive number of agents")

    if feats.n_agents == 0:
        raise BaselineError(f"no agent has {feats.reference_windows} reference windows: nothing to rank")
    keep_f, keep_a, _, excluded = complete_windows(feats.windows, feats.feature_names, feats.agents)
    if not keep_f.any():
        raise BaselineError("every feature is undefined in too many windows: nothing to rank on")
    usable = {a for a, k in zip(feats.agents, keep_a, strict=True) if k}
    unranked = {a: feats.excluded.get(a) or excluded.get(a, "no usable features") for a in ref if a not in usable}
    rows_of = {a: i for i, a in enumerate(feats.agents)}
    members = [a for a in ref if a in usable]
    if not members:
        raise BaselineError("no reference agent has usable features: nothing to rank")
    windows = feats.windows[np.asarray([rows_of[a] for a in members])][:, :, keep_f]
    ranking = audit_ranking(windows, int(feats.reference_windows))
    audited = [i for i, a in enumerate(members) if a in verdicts]
    confirmed = np.asarray([verdicts[members[i]] for i in audited], dtype=bool)
    size = batch if batch is not None else max(1, round(DEFAULT_BATCH_SHARE * len(members)))
    picks = next_audit_batch(ranking, np.asarray(audited, dtype=np.intp), confirmed, size)
    return AuditRound(
        reference=ref,
        ranked=tuple(members[int(i)] for i in ranking.order),
        outlyingness={a: float(ranking.scores[i]) for i, a in enumerate(members)},
        next_batch=tuple(members[int(i)] for i in picks),
        confirmed=tuple(a for a in ref if verdicts.get(a) is True),
        cleared=tuple(a for a in ref if verdicts.get(a) is False),
        unranked=unranked,
        features=tuple(n for n, k in zip(feats.feature_names, keep_f, strict=True) if k),
    )
