"""HTML reports: one standalone page per gate run, and ``reports/index.html``.

A run report is the executed notebook rendered by nbconvert's ``basic``
template (outputs and embedded plots; the code is hidden until the reader
ticks "show code", with no JavaScript), under a header that says what was
decided and why: component, gate, decision, every criterion with its measured
value and threshold, the failing cell and its error, the input digests and the
signer. The index gathers the gate matrix, the collaboration figures of the
workspace and the frozen artifacts with their verification state. Both pages
carry their own small stylesheet and no external assets, so each file stands
alone and reads at a laptop's width.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tcpkit.release.atomic import write_atomic
from tcpkit.release.reportfmt import (
    format_measure,
    format_requirement,
    format_value,
    metric_sections,
    without_metric_outputs,
)
from tcpkit.release.sparkline import Point, sparkline

STATUSES = ("passed", "failed", "error", "blocked", "not run")
"""The decisions a gate-matrix cell shows (a reused run shows the decision it reuses)."""

CSS = """
:root { --ok: #1a7f37; --bad: #cf222e; --skip: #6e7781; --line: #d0d7de; --bg: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       margin: 0 auto; padding: 1.5rem; max-width: 72rem; }
h1 { font-size: 1.5rem; margin: 0 0 .5rem; } h2 { font-size: 1.15rem; margin: 1.75rem 0 .5rem; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0; font-size: .92rem; }
th, td { border: 1px solid var(--line); padding: .35rem .5rem; text-align: left; vertical-align: top; }
th { background: var(--bg); }
code, .digest { font: .85rem ui-monospace, SFMono-Regular, Menlo, monospace; }
code { white-space: nowrap; }
.wrap .digest { overflow-wrap: anywhere; min-width: 12rem; }
.error-status { color: var(--bad); font-weight: 700; }
.reused { display: inline-block; margin-left: .3rem; padding: 0 .4rem; border-radius: .6rem;
          background: var(--bg); border: 1px solid var(--line); color: var(--skip); font-size: .75rem; }
.badge.error { background: var(--bad); color: #fff; }
.why { background: #ffebe9; border: 1px solid #ff818266; padding: .5rem .75rem; margin: .75rem 0; }
.why pre { overflow-x: auto; white-space: pre; max-height: 24rem; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.spark { vertical-align: middle; }
.passed { color: var(--ok); font-weight: 600; } .failed { color: var(--bad); font-weight: 600; }
.skipped { color: var(--skip); font-weight: 600; } .not-run { color: var(--skip); }
.badge { display: inline-block; padding: .1rem .6rem; border-radius: 1rem; color: #fff; font-weight: 600; }
.badge.passed { background: var(--ok); color: #fff; } .badge.failed { background: var(--bad); color: #fff; }
.badge.skipped { background: var(--skip); color: #fff; }
.meta { color: #57606a; font-size: .9rem; }
.error { background: #ffebe9; border: 1px solid #ff818266; padding: .5rem .75rem; overflow-x: auto; }
.small { font-size: .85rem; color: #57606a; }
.wrap { overflow-x: auto; }
pre { white-space: pre-wrap; word-break: break-word; }
img { max-width: 100%; height: auto; }
#showcode { margin-right: .3rem; }
#showcode:not(:checked) ~ .notebook .input { display: none; }
.notebook .prompt { display: none; }
.notebook .cell { margin: .75rem 0; }
.notebook .input_area { background: var(--bg); border: 1px solid var(--line); padding: .25rem .5rem; }
.notebook .output_error pre { background: #ffebe9; }
.ansi-red-fg { color: var(--bad); } .ansi-green-fg { color: var(--ok); } .ansi-cyan-fg { color: #0969da; }
"""


@dataclass(frozen=True)
class RunSummary:
    """What the header of a run report shows; also one cell of the index's gate matrix.

    ``criteria`` are dicts with keys metric/op/threshold/value/ok/reason (as
    stored with gate runs); ``inputs`` maps input names to sha256 digests.
    """

    component: str
    gate: str
    decision: str
    profile: str = "full"
    criteria: tuple[Mapping[str, Any], ...] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, str] = field(default_factory=dict)
    input_digest: str = ""
    input_details: Mapping[str, Sequence[tuple[str, str]]] = field(default_factory=dict)
    """For input groups (tcpkit source, distributions, python, kernel): the items digested."""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    runner: str = ""
    signer: str = ""
    started_at: str = ""
    duration_s: float = 0.0
    error: str | None = None
    error_cell: str | None = None
    report: str | None = None
    """Path of the HTML report relative to the reports directory (for links)."""
    reused: bool = False
    """No kernel ran: ``decision`` is that of the recorded run with the same run key."""


@dataclass(frozen=True)
class FrozenRow:
    """One frozen artifact in the index: its name, digest and verification state."""

    name: str
    digest: str
    ok: bool
    reason: str


@dataclass(frozen=True)
class IndexData:
    """Everything ``reports/index.html`` shows; gathered by the pipeline from the workspace."""

    gates: tuple[str, ...]
    components: tuple[str, ...]
    owners: Mapping[str, str]
    cells: Mapping[tuple[str, str], RunSummary]
    collaboration: tuple[tuple[str, str], ...] = ()
    frozen: tuple[FrozenRow, ...] = ()
    notes: tuple[str, ...] = ()
    generated_at: str = ""
    links: tuple[tuple[str, str], ...] = ()  # (label, href relative to reports/)
    history: Mapping[str, tuple[RunSummary, ...]] = field(default_factory=dict)
    """Per component, every recorded run, oldest first (for the history plots)."""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    return format_value(value)


def _status_class(status: str) -> str:
    return status.replace(" ", "-")


def _page(title: str, body: str) -> bytes:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    ).encode()


def criteria_table(criteria: Sequence[Mapping[str, Any]]) -> str:
    """The criteria of a run as an HTML table: metric, measured value beside its threshold (both
    with the metric's unit), verdict, reason."""
    if not criteria:
        return "<p class=\"failed\">No criterion was evaluated.</p>"
    rows = []
    for c in criteria:
        ok = bool(c.get("ok"))
        name = str(c.get("metric"))
        rows.append(
            "<tr>"
            f"<td><code>{_e(name)}</code></td>"
            f"<td class=\"num\">{_e(format_measure(name, c.get('value')))}</td>"
            f"<td class=\"num\"><code>{_e(format_requirement(name, c.get('op'), c.get('threshold')))}</code></td>"
            f"<td class=\"{'passed' if ok else 'failed'}\">{'holds' if ok else 'fails'}</td>"
            f"<td class=\"small\">{_e(c.get('reason', ''))}</td>"
            "</tr>"
        )
    return (
        "<div class=\"wrap\"><table><tr><th>metric</th><th>measured</th><th>threshold</th>"
        "<th>verdict</th><th>reason</th></tr>" + "".join(rows) + "</table></div>"
    )


def _header(summary: RunSummary) -> str:
    parts = [
        f"<h1>{_e(summary.component)} · {_e(summary.gate)} "
        f"<span class=\"badge {_status_class(summary.decision)}\">{_e(summary.decision)}</span></h1>",
        f"<p class=\"meta\">profile <b>{_e(summary.profile)}</b> · started {_e(summary.started_at)} · "
        f"{summary.duration_s:.1f} s · runner <b>{_e(summary.runner)}</b> · signed by "
        f"<b>{_e(summary.signer or 'nobody')}</b></p>",
    ]
    parts.append(failure_box(summary))
    parts.append("<h2>Criteria</h2>" + criteria_table(summary.criteria))
    if summary.parameters:
        params = "".join(
            f"<tr><td><code>{_e(k)}</code></td><td><code>{_e(format_measure(k, v))}</code></td></tr>"
            for k, v in summary.parameters.items()
        )
        parts.append("<h2>Parameters</h2><div class=\"wrap\"><table><tr><th>name</th><th>value</th></tr>"
                     f"{params}</table></div>")
    conditions = {k: v for k, v in summary.metrics.items() if k.startswith("tcpkit.")}
    if conditions:
        shown = " · ".join(f"{_e(k[len('tcpkit.'):])} <b>{_e(_fmt(v))}</b>" for k, v in conditions.items())
        parts.append(f"<p class=\"meta\">run conditions: {shown}</p>")
    digests = "".join(
        f"<tr><td>{_e(k)}{_details(summary.input_details.get(k))}</td>"
        f"<td class=\"digest\">{_e(v)}</td></tr>" for k, v in summary.inputs.items()
    )
    if summary.input_digest:
        digests += f"<tr><th>combined input digest</th><td class=\"digest\">{_e(summary.input_digest)}</td></tr>"
    parts.append("<h2>Inputs</h2><div class=\"wrap\"><table><tr><th>input</th><th>sha256</th></tr>"
                 f"{digests}</table></div>")
    return "\n".join(p for p in parts if p)


def failure_box(summary: RunSummary) -> str:
    """Why a run did not pass, for the top of its page: the error and its cell, else the
    failing criteria with measured value and threshold (empty for a run that passed)."""
    if summary.error:
        cell = f"<p>In cell <code>{_e(summary.error_cell)}</code>:</p>" if summary.error_cell else ""
        return (f"<div class=\"why error\" id=\"failure\"><b>The run failed with an error.</b>{cell}"
                f"<pre>{_e(summary.error)}</pre></div>")
    failing = [c for c in summary.criteria if not c.get("ok")]
    if summary.decision not in ("failed", "error") and not failing:
        return ""
    if not failing:
        return ("<div class=\"why\" id=\"failure\"><b>The run failed: no criterion was "
                "evaluated.</b></div>")
    items = "".join(
        f"<li><code>{_e(c.get('metric'))}</code> measured "
        f"<b>{_e(format_measure(str(c.get('metric')), c.get('value')))}</b>, required "
        f"<code>{_e(format_requirement(str(c.get('metric')), c.get('op'), c.get('threshold')))}</code>"
        f"<div class=\"small\">{_e(c.get('reason', ''))}</div></li>" for c in failing)
    return (f"<div class=\"why\" id=\"failure\"><b>Failing criteri{'a' if len(failing) > 1 else 'on'}"
            f"</b><ul>{items}</ul></div>")


def metrics_tables(notebook: Mapping[str, Any], criteria: Sequence[Mapping[str, Any]] = ()) -> str:
    """The recorded metrics as one formatted table per notebook section (empty without any):
    each value with its unit, and beside it the gate's threshold for that metric (met or not)."""
    required: dict[str, list[Mapping[str, Any]]] = {}
    for c in criteria:
        required.setdefault(str(c.get("metric")), []).append(c)
    parts = []
    for title, items in metric_sections(notebook):
        rows = "".join(
            f"<tr><td><code>{_e(name)}</code></td><td class=\"num\">{_e(format_measure(name, value))}</td>"
            f"<td class=\"num\">{_thresholds(name, required.get(name, ()))}</td></tr>"
            for name, value in items)
        parts.append(f"<h3>{_e(title)}</h3><div class=\"wrap\"><table class=\"metrics\">"
                     f"<tr><th>metric</th><th>value</th><th>gate threshold</th></tr>{rows}</table></div>")
    return "<h2>Recorded metrics</h2>" + "".join(parts) if parts else ""


def _thresholds(name: str, criteria: Sequence[Mapping[str, Any]]) -> str:
    """The requirements on metric ``name``, each marked met (✓) or missed (✗); empty without any."""
    return "<br>".join(
        f"<span class=\"{'passed' if c.get('ok') else 'failed'}\">{'✓' if c.get('ok') else '✗'}</span> "
        f"<code>{_e(format_requirement(name, c.get('op'), c.get('threshold')))}</code>" for c in criteria)


def _details(items: Sequence[tuple[str, str]] | None) -> str:
    """A closed ``<details>`` listing the items behind a group digest (empty without items)."""
    if not items:
        return ""
    rows = "".join(f"<tr><td><code>{_e(k)}</code></td><td class=\"digest\">{_e(v)}</td></tr>"
                   for k, v in items)
    return (f"<details><summary class=\"small\">{len(items)} items</summary>"
            f"<table>{rows}</table></details>")


def render_notebook(notebook: Mapping[str, Any]) -> str:
    """The executed notebook as an HTML fragment (nbconvert ``basic`` template, images embedded).

    The ``record()`` outputs are left out: :func:`metrics_tables` shows them formatted.
    """
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="basic")
    exporter.embed_images = True
    node = nbformat.from_dict(without_metric_outputs(notebook))
    body, _resources = exporter.from_notebook_node(node)
    return str(body)


def warm_up_renderer() -> None:
    """Render a tiny notebook once, so that the first run report does not pay for nbconvert's
    imports, template compilation, highlighter and markdown set-up (0.6-0.7 s on the 2-core
    machine). The pipeline calls it on a background thread while the first kernel starts;
    any error is left for the real rendering to report."""
    import nbformat

    cell = nbformat.v4.new_code_cell("x = 1")
    cell.outputs = [nbformat.v4.new_output("stream", text="1\n")]
    tiny = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# warm-up\n*text*"), cell])
    with contextlib.suppress(Exception):  # a warm-up that fails changes nothing
        render_notebook(tiny)


def render_run_report(summary: RunSummary, notebook: Mapping[str, Any] | None) -> bytes:
    """One standalone HTML page for a gate run: header, then the executed notebook.

    The notebook's code is hidden by default (a checkbox shows it); when the
    notebook could not be rendered, the page says so instead of omitting it.
    """
    body = [_header(summary)]
    if notebook is None:
        body.append("<h2>Notebook</h2><p class=\"failed\">No executed notebook was produced.</p>")
    else:
        body.append(metrics_tables(notebook, summary.criteria))
        try:
            rendered = render_notebook(notebook)
        except Exception as exc:  # a report must still be written when nbconvert fails
            rendered = f"<p class=\"failed\">The notebook could not be rendered: {_e(exc)}</p>"
        body.append(
            # the checkbox must be a sibling of .notebook for the CSS `~` rule to hide the code
            "<h2>Notebook</h2><input type=\"checkbox\" id=\"showcode\">"
            "<label for=\"showcode\">show code</label>"
            f"<div class=\"notebook\">{rendered}</div>"
        )
    return _page(f"{summary.component} {summary.gate}: {summary.decision}", "\n".join(body))


def report_path(reports_dir: Path, gate: str, component: str) -> Path:
    """``reports/<gate>/<component>.html``."""
    return Path(reports_dir) / gate / f"{component}.html"


def write_run_report(reports_dir: Path, summary: RunSummary, page: bytes) -> Path:
    """Write a rendered run report atomically at :func:`report_path`; return the path."""
    path = report_path(reports_dir, summary.gate, summary.component)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, page, mode=0o644)
    return path


def _key_metrics(summary: RunSummary, limit: int = 3) -> str:
    shown = []
    for c in summary.criteria[:limit]:
        mark = "✓" if c.get("ok") else "✗"
        shown.append(f"{mark} {_e(c.get('metric'))} {_e(format_measure(str(c.get('metric')), c.get('value')))}")
    more = len(summary.criteria) - limit
    if more > 0:
        shown.append(f"+{more} more")
    return "<br>".join(shown)


def effective_decision(summary: RunSummary) -> tuple[str, bool]:
    """The decision a matrix cell stands for, and whether it is reused.

    A reused run executed nothing: its run key equals that of a recorded run, passed
    or failed, whose decision it shows. Every other decision stands as recorded.
    """
    return summary.decision, summary.reused


def matrix_cell(summary: RunSummary) -> str:
    """One cell of the gate matrix: the effective decision (linked to its report), marked
    "reused" for a run that was not executed again; for an error the error itself; else the
    key metrics."""
    decision, reused = effective_decision(summary)
    css = "error-status" if decision in ("error", "blocked") else _status_class(decision)
    label = (f"<a class=\"{css}\" href=\"{_e(summary.report)}\">{_e(decision)}</a>" if summary.report
             else f"<span class=\"{css}\">{_e(decision)}</span>")
    if reused:
        label += (f"<span class=\"reused\" title=\"run key unchanged: the decision of the run "
                  f"of {_e(summary.started_at)} is reused\">reused</span>")
    if summary.error and decision in ("error", "blocked", "failed"):
        detail = _e(summary.error.splitlines()[0] if summary.error else "")
    else:
        detail = _key_metrics(summary)
    return f"<td>{label}<div class=\"small\">{detail}</div></td>"


def render_index(data: IndexData) -> bytes:
    """``reports/index.html``: gate matrix, collaboration figures, history, frozen artifacts."""
    generated = data.generated_at or datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    head = "".join(f"<th>{_e(g)}</th>" for g in data.gates)
    rows = []
    for component in data.components:
        cells = []
        for gate in data.gates:
            summary = data.cells.get((component, gate))
            if summary is None:
                cells.append("<td class=\"not-run\">not run</td>")
                continue
            cells.append(matrix_cell(summary))
        owner = _e(data.owners.get(component, ""))
        rows.append(f"<tr><th>{_e(component)}<div class=\"small\">{owner}</div></th>{''.join(cells)}</tr>")
    parts = [
        "<h1>tcpkit gate pipeline</h1>",
        f"<p class=\"meta\">generated {_e(generated)}</p>",
        "<h2>Gate matrix</h2>",
        f"<div class=\"wrap\"><table><tr><th>component</th>{head}</tr>{''.join(rows)}</table></div>",
        "<p class=\"small\">passed / failed: decided by this or an earlier run (linked report); "
        "<span class=\"reused\">reused</span>: not executed again, its run key (notebook, "
        "parameters, tcpkit's code, the environment) identical to a recorded run whose decision "
        "it shows (<code>tcpkit run --rerun</code> executes it); error: a configuration error "
        "stopped the component before any kernel started; blocked: a dependency is not frozen; "
        "not run: the component has not reached this gate.</p>",
    ]
    if data.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in data.notes) + "</ul>")
    if data.collaboration:
        figures = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in data.collaboration)
        parts.append(f"<h2>Collaboration</h2><table>{figures}</table>")
    if data.links:
        parts.append("<h2>Other reports</h2><ul>" + "".join(
            f'<li><a href="{_e(href)}">{_e(label)}</a></li>' for label, href in data.links) + "</ul>")
    parts.append(history_section(data))
    parts.append("<h2>Frozen artifacts</h2>")
    if data.frozen:
        frozen_rows = "".join(
            f"<tr><td><code>{_e(f.name)}</code></td><td class=\"digest\">{_e(f.digest)}</td>"
            f"<td class=\"{'passed' if f.ok else 'failed'}\">{'verified' if f.ok else 'FAILED'}</td>"
            f"<td class=\"small\">{_e(f.reason)}</td></tr>"
            for f in data.frozen
        )
        parts.append(
            "<div class=\"wrap\"><table><tr><th>module</th><th>sha256</th><th>state</th><th>detail</th></tr>"
            f"{frozen_rows}</table></div>"
        )
    else:
        parts.append("<p>No component is frozen yet.</p>")
    return _page("tcpkit gate pipeline", "\n".join(parts))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def key_metric_points(runs: Sequence[RunSummary]) -> dict[str, list[Point]]:
    """Per metric that has a criterion in any of ``runs``: its numeric value in each run."""
    series: dict[str, list[Point]] = {}
    for run in runs:
        for c in run.criteria:
            name = str(c.get("metric"))
            series.setdefault(name, [])
            value = _number(c.get("value"))
            if value is not None:
                label = (f"{run.gate} {run.started_at}: {format_measure(name, c.get('value'))} "
                         f"({format_requirement(name, c.get('op'), c.get('threshold'))})")
                series[name].append(Point(value, bool(c.get("ok")), label))
    return series


def history_section(data: IndexData) -> str:
    """Per component: its key metrics across recorded runs as sparklines, and every run
    with a link to the report of its gate (a gate's report shows its latest run)."""
    if not data.history:
        return ""
    parts = ["<h2>History</h2>"]
    for component in data.components:
        runs = data.history.get(component, ())
        if not runs:
            continue
        rows = []
        for name, points in key_metric_points(runs).items():
            if points:
                plot = sparkline(points)
                first, last = format_measure(name, points[0].value), format_measure(name, points[-1].value)
                span = f"{_e(first)} → {_e(last)}" if len(points) > 1 else _e(last)
            else:
                plot, span = "", "not a number in any run"
            rows.append(f"<tr><td><code>{_e(name)}</code></td><td>{plot}</td>"
                        f"<td class=\"small\">{len(points)} runs: {span}</td></tr>")
        latest = {r.gate: r for r in runs}
        run_rows = "".join(
            f"<tr><td>{_e(r.gate)}</td><td>{_e(r.started_at)}</td>"
            f"<td class=\"{_status_class(r.decision)}\">{_e(r.decision)}</td>"
            f"<td class=\"num\">{r.duration_s:.1f} s</td><td>"
            + (f"<a href=\"{_e(r.report)}\">report</a>" if r.report and latest[r.gate] is r
               else "superseded" if r.report else "—")
            + "</td></tr>" for r in reversed(runs))
        parts.append(
            f"<h3>{_e(component)}</h3>"
            + ("<div class=\"wrap\"><table><tr><th>key metric</th><th>across runs</th><th>first → latest"
               f"</th></tr>{''.join(rows)}</table></div>" if rows else "<p>No criterion recorded.</p>")
            + f"<details><summary>{len(runs)} recorded runs, newest first</summary><div class=\"wrap\">"
            "<table><tr><th>gate</th><th>started</th><th>decision</th><th>time</th><th>report</th></tr>"
            f"{run_rows}</table></div></details>"
        )
    return "\n".join(parts)


def write_index(reports_dir: Path, data: IndexData) -> Path:
    """Write ``reports_dir/index.html`` atomically; return its path."""
    path = Path(reports_dir) / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, render_index(data), mode=0o644)
    return path
