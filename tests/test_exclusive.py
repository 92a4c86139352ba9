"""A run marked ``exclusive`` runs with nothing else in parallel, and every run records the load.

Three components, DEVELOPMENT only, ``--jobs 3``: two ordinary ones and one marked
``exclusive = true``. Each notebook records the wall-clock interval it ran in; the two
ordinary runs may overlap each other, the exclusive one overlaps neither.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import nbformat
import pytest

from tcpkit.cli import main
from tcpkit.release.gates import GATES

pytestmark = pytest.mark.slow

BODY = """import time
from tcpkit.release.metrics import record
began = time.time()
time.sleep(1.5)
record("began", began)
record("ended", time.time())
"""


def _project(root: Path, priorities: dict[str, int] | None = None) -> None:
    nbdir = root / "notebooks"
    nbdir.mkdir(parents=True)
    text = ""
    for name in ("alpha", "beta", "timing"):
        nb = nbformat.v4.new_notebook()
        params = nbformat.v4.new_code_cell("n = 0")
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, nbformat.v4.new_code_cell(BODY)]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, nbdir / f"{name}.ipynb")
        text += (f'[components.{name}]\nnotebook = "{name}.ipynb"\nowner = "ada"\n'
                 + ("exclusive = true\n" if name == "timing" and priorities is None else "")
                 + (f"priority = {priorities[name]}\n" if priorities else ""))
        for gate in GATES:
            text += (f"[components.{name}.gates.{gate}]\ntimeout_s = 120\n"
                     'criteria = [ { metric = "ended", op = ">", threshold = 0 } ]\n')
    (nbdir / "pipeline.toml").write_text(text)


def test_exclusive_run_overlaps_nothing_and_load_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tcpkit.release.workspace import Workspace

    monkeypatch.setenv("TCPKIT_KEYS", str(tmp_path / "keys"))
    monkeypatch.setenv("TCPKIT_RUNNER", "runner-test")
    monkeypatch.setenv("CI", "1")
    root = tmp_path / "project"
    _project(root)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", "--root", str(root), "--until", "DEVELOPMENT", "--jobs", "3"])
    assert code == 0, out.getvalue()
    with Workspace.open(root) as ws:
        runs = {r.component: r.metrics for r in ws.gate_runs()}
    spans = {name: (m["began"], m["ended"]) for name, m in runs.items()}

    def overlap(a: str, b: str) -> bool:
        return spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]

    assert not overlap("timing", "alpha") and not overlap("timing", "beta")
    assert overlap("alpha", "beta")  # the others do run in parallel
    assert runs["timing"]["tcpkit.exclusive"] is True and runs["alpha"]["tcpkit.exclusive"] is False
    for metrics in runs.values():
        assert isinstance(metrics["tcpkit.load1_before"], float)
        assert isinstance(metrics["tcpkit.load1_after"], float)
    page = (root / "reports" / "DEVELOPMENT" / "timing.html").read_text()
    assert "run conditions" in page and "load1_before" in page


def test_runs_ready_together_start_by_priority(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tcpkit.release.workspace import Workspace

    monkeypatch.setenv("TCPKIT_KEYS", str(tmp_path / "keys"))
    monkeypatch.setenv("TCPKIT_RUNNER", "runner-test")
    monkeypatch.setenv("CI", "1")
    root = tmp_path / "project"
    _project(root, {"alpha": 0, "beta": 5, "timing": 2})  # file order: alpha, beta, timing
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", "--root", str(root), "--until", "DEVELOPMENT", "--jobs", "1"])
    assert code == 0, out.getvalue()
    with Workspace.open(root) as ws:
        began = {r.component: r.metrics["began"] for r in ws.gate_runs()}
    assert sorted(began, key=began.__getitem__) == ["beta", "timing", "alpha"]
