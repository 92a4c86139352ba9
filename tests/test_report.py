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
