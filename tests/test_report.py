"""Run reports and the index: standalone HTML with the decision, criteria and digests."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

from tcpkit.release.report import (
    FrozenRow,
    IndexData,
    RunSummary,
    render_index,
    render_run_report,
    write_index,
)

SUMMARY = RunSummary(
    component="alpha", gate="TESTING", decision="failed", profile="quick",
    criteria=({"metric": "fpr", "op": "<=", "threshold": 0.01, "value": 0.03, "ok": False,
               "reason": "fpr = 0.03 fails: required <= 0.01"},
              {"metric": "recall", "op": ">=", "threshold": 0.9, "value": None, "ok": False,
               "reason": "not evaluated: metric 'recall' was not recorded"}),
    inputs={"notebook": "a" * 64}, input_digest="b" * 64, parameters={"n": 3},
    runner="runner-x", signer="runner-x", started_at="2025-01-01T00:00:00Z", duration_s=1.5,
    error="RuntimeError: <boom>", error_cell="#3 (In [3])", report="TESTING/alpha.html",
)


def _external(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="(https?://[^"]+)"', page)


def test_run_report_header_and_notebook() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Hello report"), nbformat.v4.new_code_cell("secret_code = 1")]
    page = render_run_report(SUMMARY, nb).decode()
    for text in ("alpha", "TESTING", "failed", "fpr", "0.03", "0.01", "not evaluated", "a" * 64,
                 "runner-x", "RuntimeError: &lt;boom&gt;", "Hello report", "show code"):
        assert text in page
    assert "<boom>" not in page  # escaped
    assert _external(page) == []


def test_run_report_without_notebook() -> None:
    page = render_run_report(SUMMARY, None).decode()
    assert "No executed notebook was produced" in page


def test_index_matrix_links_and_frozen(tmp_path: Path) -> None:
    data = IndexData(
        gates=("DEVELOPMENT", "TESTING"), components=("alpha", "beta"), owners={"alpha": "ada"},
        cells={("alpha", "TESTING"): SUMMARY},
        collaboration=(("researchers", "2: ada, grace"),),
        frozen=(FrozenRow("production/alpha.py", "sha256:" + "c" * 64, False, "digest mismatch"),),
        notes=("alpha TESTING failed",),
    )
    page = render_index(data).decode()
    assert 'href="TESTING/alpha.html"' in page and "not run" in page and "FAILED" in page
    assert "researchers" in page and "digest mismatch" in page and 'name="viewport"' in page
    assert _external(page) == []
    path = write_index(tmp_path / "reports", data)
    assert path.read_bytes() == render_index(data) or path.name == "index.html"


def test_code_is_hidden_by_default_by_a_sibling_checkbox() -> None:
    """The CSS hides `.input` inside `.notebook` unless the checkbox before it is ticked."""
    from html.parser import HTMLParser

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("secret_code = 1")]
    page = render_run_report(SUMMARY, nb).decode()
    assert "#showcode:not(:checked) ~ .notebook .input" in page

    class Siblings(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.depth = 0
            self.checkbox_depth: int | None = None
            self.notebook_depth: int | None = None
            self.code_in_input = False
            self._in_input: int | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if tag == "input" and a.get("id") == "showcode":
                self.checkbox_depth = self.depth
                return  # void element
            classes = (a.get("class") or "").split()
            if "notebook" in classes:
                self.notebook_depth = self.depth
            if "input" in classes and self._in_input is None:
                self._in_input = self.depth
            self.depth += 1

        def handle_endtag(self, tag: str) -> None:
            self.depth -= 1
            if self._in_input is not None and self.depth == self._in_input:
                self._in_input = None

        def handle_data(self, data: str) -> None:
            if self._in_input is not None and "secret_code" in data:
                self.code_in_input = True

    parser = Siblings()
    parser.feed(page)
    assert parser.checkbox_depth is not None and parser.checkbox_depth == parser.notebook_depth
    assert parser.code_in_input


def _metric_output(name: str, value: object) -> dict[str, object]:
    from tcpkit.release.metrics import METRIC_MIME

    return nbformat.v4.new_output("display_data", data={METRIC_MIME: {"name": name, "value": value},
                                                        "text/plain": f"{name} = {value!r}"})


def test_format_value_three_significant_digits_intervals_and_booleans() -> None:
    from tcpkit.release.reportfmt import format_value

    assert format_value(0.9712345678901234) == "0.971"
    assert format_value(12.3456) == "12.3"
    assert format_value(9.998) == "10.0" and format_value(0.0099996) == "0.0100"
    assert format_value(123456.7) == "123000"
    assert format_value(0.000012345) == "1.23e-05"
    assert format_value(300) == "300" and format_value(1_000_000) == "1000000"
    assert format_value([0.91234567, 0.98765432]) == "[0.912, 0.988]"
    assert format_value(True) == "yes" and format_value(False) == "no"
    assert format_value(None) == "—" and format_value("float32") == "float32"


def test_metrics_render_as_one_formatted_table_per_section_without_raw_lines() -> None:
    from tcpkit.release.reportfmt import metric_sections

    nb = nbformat.v4.new_notebook()
    first = nbformat.v4.new_code_cell("record('auroc', auroc)")
    first.outputs = [_metric_output("auroc", 0.9712345678901234), _metric_output("ci_auroc", [0.95, 0.99])]
    second = nbformat.v4.new_code_cell("record(...)")
    second.outputs = [_metric_output("fpr_ci_low", 0.0012345), _metric_output("fpr_ci_high", 0.0234567),
                      _metric_output("converged", True)]
    nb.cells = [nbformat.v4.new_markdown_cell("## Accuracy"), first,
                nbformat.v4.new_markdown_cell("## Calibration\ntext"), second]
    sections = metric_sections(nb)
    assert [title for title, _ in sections] == ["Accuracy", "Calibration"]
    assert sections[1][1] == [("fpr_ci", [0.0012345, 0.0234567]), ("converged", True)]
    page = render_run_report(SUMMARY, nb).decode()
    assert "0.9712345678901234" not in page and "auroc = " not in page
    for text in ("<h3>Accuracy</h3>", "<h3>Calibration</h3>", "0.971", "[0.950, 0.990]",
                 "[0.00123, 0.0235]", ">yes<"):
        assert text in page, text
    assert page.count('class="metrics"') == 2


def test_failed_run_shows_the_failing_criterion_or_error_at_the_top() -> None:
    from dataclasses import replace

    no_error = replace(SUMMARY, error=None, error_cell=None)
    page = render_run_report(no_error, None).decode()
    top = page.index('id="failure"')
    assert top < page.index("<h2>Criteria</h2>") and top < page.index("<h2>Inputs</h2>")
    box = page[top:page.index("</div>", page.index("</ul>", top))]
    assert "fpr" in box and "0.0300" in box and "&lt;= 0.0100" in box and "recall" in box
    errored = render_run_report(SUMMARY, None).decode()
    top = errored.index('id="failure"')
    assert errored.index("RuntimeError: &lt;boom&gt;") > top and "#3 (In [3])" in errored[top:]
    assert top < errored.index("<h2>Criteria</h2>")
    passed = replace(no_error, decision="passed", criteria=(dict(SUMMARY.criteria[0], ok=True),))
    assert 'id="failure"' not in render_run_report(passed, None).decode()


def test_criteria_table_puts_threshold_beside_measured_value() -> None:
    from tcpkit.release.report import criteria_table

    table = criteria_table(SUMMARY.criteria)
    assert table.index("<th>measured</th>") + len("<th>measured</th>") == table.index("<th>threshold</th>")
    assert re.search(r"0\.0300</td><td class=\"num\"><code>&lt;= 0\.0100", table)


def test_matrix_shows_effective_decision_reused_and_configuration_error() -> None:
    from dataclasses import replace

    reused = replace(SUMMARY, decision="passed", reused=True, error=None, started_at="2025-01-01T00:00:00Z",
                     criteria=(dict(SUMMARY.criteria[0], ok=True, value=0.004),))
    broken = RunSummary(component="beta", gate="DEVELOPMENT", decision="error",
                        error="pipeline.toml line 7: n_agents must be int, got str")
    data = IndexData(gates=("DEVELOPMENT", "TESTING"), components=("alpha", "beta"), owners={},
                     cells={("alpha", "TESTING"): reused, ("beta", "DEVELOPMENT"): broken})
    page = render_index(data).decode()
    row = page[page.index("<th>alpha"):page.index("</tr>", page.index("<th>alpha"))]
    assert '>passed</a><span class="reused"' in row and ">skipped<" not in row
    assert "0.00400" in row
    row = page[page.index("<th>beta"):page.index("</tr>", page.index("<th>beta"))]
    assert 'class="error-status">error<' in row and "n_agents must be int" in row


def test_matrix_shows_a_reused_failure_as_failed_and_reused() -> None:
    from dataclasses import replace

    failed = replace(SUMMARY, decision="failed", reused=True, error="ValueError: bad", report=None)
    data = IndexData(gates=("DEVELOPMENT",), components=("alpha",), owners={},
                     cells={("alpha", "DEVELOPMENT"): failed})
    page = render_index(data).decode()
    row = page[page.index("<th>alpha"):page.index("</tr>", page.index("<th>alpha"))]
    assert '<span class="failed">failed</span><span class="reused"' in row and "ValueError: bad" in row


def test_index_names_and_digests_do_not_break_mid_word() -> None:
    page = render_index(IndexData(gates=("DEVELOPMENT",), components=(), owners={}, cells={},
                                  frozen=(FrozenRow("production/alpha.py", "c" * 64, True, ""),))).decode()
    assert "word-break: break-all" not in page and "code { white-space: nowrap; }" in page
    digest_at = page.index(f'<td class="digest">{"c" * 64}')
    assert page.rfind('<div class="wrap">', 0, digest_at) > page.rfind("</div>", 0, digest_at)


def test_history_plots_key_metrics_inline_and_links_reports() -> None:
    from dataclasses import replace

    def run(gate: str, value: float, ok: bool, report: str | None) -> RunSummary:
        return replace(SUMMARY, gate=gate, decision="passed" if ok else "failed", error=None,
                       criteria=({"metric": "fpr", "op": "<=", "threshold": 0.01, "value": value, "ok": ok},),
                       report=report)

    runs = (run("DEVELOPMENT", 0.02, False, "DEVELOPMENT/alpha.html"),
            run("DEVELOPMENT", 0.005, True, "DEVELOPMENT/alpha.html"),
            run("TESTING", 0.0071234, True, "TESTING/alpha.html"))
    data = IndexData(gates=("DEVELOPMENT", "TESTING"), components=("alpha",), owners={}, cells={},
                     history={"alpha": runs})
    page = render_index(data).decode()
    history = page[page.index("<h2>History</h2>"):page.index("<h2>Frozen artifacts</h2>")]
    assert history.count("<svg") == 1 and history.count("<circle") == 3
    assert history.count('fill="#cf222e"') == 1 and "0.0200 → 0.00712" in history
    assert 'href="TESTING/alpha.html"' in history and 'href="DEVELOPMENT/alpha.html"' in history
    assert "superseded" in history  # the earlier DEVELOPMENT run's report was replaced
    assert _external(page) == [] and "<img" not in history


def test_sparkline_scales_points_into_the_box() -> None:
    from tcpkit.release.sparkline import HEIGHT, PAD, Point, sparkline

    svg = sparkline([Point(1.0, True, "a"), Point(3.0, False, "b")])
    ys = [float(v) for v in re.findall(r'cy="([0-9.]+)"', svg)]
    assert ys == [HEIGHT - PAD, PAD]  # higher value drawn higher
    assert sparkline([]) == ""


def test_browsercheck_probe_copy_and_missing_browser_fails_loudly(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """No browser runs here: the probe injection, and that a missing chromium is an error, not a skip."""
    import pytest

    from tcpkit.release import browsercheck

    page = tmp_path / "reports" / "TESTING" / "alpha.html"
    page.parent.mkdir(parents=True)
    page.write_bytes(render_run_report(SUMMARY, None))
    copy = browsercheck.probed_copy(page, tmp_path)
    text = copy.read_text()
    assert f'<head><base href="{page.parent.resolve().as_uri()}/">' in text
    assert text.index(browsercheck.MARKER) < text.index("</body>") and "naturalWidth > 0" in text
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(browsercheck.BrowserCheckError, match="chromium is not on PATH"):
        browsercheck.find_chromium(install=False)
    assert browsercheck.main([str(tmp_path / "reports"), "--no-install"]) == 1
    with pytest.raises(browsercheck.BrowserCheckError, match="no \\*.html page"):
        browsercheck.check(tmp_path / "empty", install=False)


def test_metrics_tables_show_units_and_the_gate_threshold_beside_the_value() -> None:
    from dataclasses import replace

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("record(...)")
    cell.outputs = [_metric_output("runtime_s", 12.345), _metric_output("ns_per_agent", 3.21),
                    _metric_output("speedup_vs_scipy", 41.7), _metric_output("fpr", 0.004),
                    _metric_output("scaling_ns_per_agent", [1.5, 2.5, 3.5])]
    nb.cells = [nbformat.v4.new_markdown_cell("## Speed"), cell]
    criteria = ({"metric": "runtime_s", "op": "<=", "threshold": 10, "value": 12.345, "ok": False,
                 "reason": "runtime_s = 12.3 fails: required <= 10"},
                {"metric": "fpr", "op": "<=", "threshold": 0.01, "value": 0.004, "ok": True, "reason": "ok"})
    page = render_run_report(replace(SUMMARY, criteria=criteria, error=None), nb).decode()
    table = page[page.index("<h3>Speed</h3>"):page.index("</table>", page.index("<h3>Speed</h3>"))]
    assert "<th>value</th><th>gate threshold</th>" in table
    assert re.search(r"runtime_s</code></td><td class=\"num\">12\.3 s</td><td class=\"num\">"
                     r"<span class=\"failed\">✗</span> <code>&lt;= 10 s</code>", table)
    assert ">3.21 ns/agent<" in table and ">41.7×<" in table and ">[1.50, 2.50, 3.50] ns/agent<" in table
    assert re.search(r"fpr</code></td><td class=\"num\">0\.00400</td><td class=\"num\"><span class=\"passed\">✓", table)
    # the criteria table and the failure box carry the unit too
    assert "<b>12.3 s</b>, required <code>&lt;= 10 s</code>" in page
    assert re.search(r"12\.3 s</td><td class=\"num\"><code>&lt;= 10 s</code>", page)
