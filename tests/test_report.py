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
