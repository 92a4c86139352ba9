"""``reports/index.html``: gate matrix, collaboration figures, run history, frozen artifacts.

One record per cell: the latest recorded run of each component at each gate, replaced
by this invocation's outcome where there is one; the frozen artifacts with their
verification state (files and chain); the workspace's collaboration figures; every
recorded run per component, for the history plots.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tcpkit.release.gates import GATES, Pipeline
from tcpkit.release.project import Project
from tcpkit.release.report import RunSummary
from tcpkit.release.run.record import Outcome


def write_index(project: Project, pipeline: Pipeline, ws: Any, outcomes: Sequence[Outcome]) -> Path:
    """Gather the index data from the workspace and this invocation; write it; return its path."""
    from tcpkit.release.chain import verify_chains
    from tcpkit.release.report import FrozenRow, IndexData
    from tcpkit.release.report import write_index as write_page
    from tcpkit.release.signing import verify_workspace

    cells: dict[tuple[str, str], RunSummary] = {}
    history: dict[str, list[RunSummary]] = {}
    for run in ws.gate_runs():
        report = project.report(run.gate, run.component)
        cells[(run.component, run.gate)] = RunSummary(
            component=run.component, gate=run.gate, decision=run.decision,
            criteria=tuple(run.criteria), metrics=dict(run.metrics), inputs=dict(run.inputs),
            input_digest=run.input_digest, runner=run.runner, started_at=run.started_at,
            duration_s=run.duration_s,
            report=f"{run.gate}/{run.component}.html" if report.is_file() else None,
        )
        history.setdefault(run.component, []).append(cells[(run.component, run.gate)])
    notes: list[str] = []
    for outcome in outcomes:
        if outcome.summary is not None:
            cells[(outcome.component, outcome.gate)] = outcome.summary
        elif outcome.status in ("error", "blocked"):  # stopped before any kernel started
            cells[(outcome.component, outcome.gate)] = RunSummary(
                component=outcome.component, gate=outcome.gate, decision=outcome.status,
                error=outcome.reason)
        if outcome.status in ("failed", "blocked", "error"):
            what = "configuration error" if outcome.status == "error" else outcome.status
            notes.append(f"{outcome.component} {outcome.gate} {what}"
                         f"{' (reused)' if outcome.reused else ''}: {outcome.reason}")
    frozen: list[FrozenRow] = []
    try:
        checks = verify_workspace(project.root) + verify_chains(project.root)
        frozen = [FrozenRow(c.name, c.digest, c.ok, c.reason) for c in checks]
    except ValueError as exc:
        notes.append(f"frozen artifacts could not be verified: {exc}")
    data = IndexData(
        gates=GATES,
        components=tuple(pipeline.components),
        owners={n: s.owner for n, s in pipeline.components.items()},
        cells=cells,
        collaboration=tuple(collaboration(ws)),
        frozen=tuple(frozen),
        notes=tuple(notes),
        links=((ALERTS_LABEL, ALERTS_PAGE),),
        history={name: tuple(runs) for name, runs in history.items()},
    )
    return write_page(project.reports, data)


ALERTS_PAGE = "alerts.html"
ALERTS_LABEL = "alerts of make run: tcpkit detect on a simulated event log, with the frozen detector"


def collaboration(ws: Any) -> Iterator[tuple[str, str]]:
    """The workspace's figures: researchers, components, versions, pins, leases, runs, audit."""
    status = ws.status()
    people: set[str] = set()
    for row in status:
        people.update((row.owner, *row.contributors))
    yield "researchers", f"{len(people)}: {', '.join(sorted(people))}"
    yield "components", f"{len(status)}: " + ", ".join(f"{r.name} ({r.level or 'no gate yet'})" for r in status)
    yield "versions recorded", str(sum(r.versions for r in status))
    yield "versions kept in the store", str(sum(r.versions_kept for r in status))
    pins = ws.pins()
    yield "pinned backups", f"{len(pins)}" + (": " + "; ".join(sorted(set(pins.values()))) if pins else "")
    live = [f"{r.name} held by {r.lease_holder} until {r.lease_expires}" for r in status if r.lease_holder]
    yield "leases", "; ".join(live) if live else "none held"
    yield "gate runs recorded", str(len(ws.gate_runs()))
    broken = ws.verify_audit()
    yield "audit log", f"{len(ws.audit_log())} entries, hash chain {'BROKEN: ' + str(broken) if broken else 'intact'}"
