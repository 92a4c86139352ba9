"""Typed notebook parameters: papermill's reading of the parameters cell, gate values checked
for name and type before any kernel starts, ``tcpkit params``, and the slowest-runs summary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from tcpkit.cli import main
from tcpkit.release.gates import GATES
from tcpkit.release.pipeline import (
    GatePipeline,
    PipelineResult,
    RunOptions,
    slowest_runs,
    summarize,
)
from tcpkit.release.run.params import check_parameters, notebook_parameters
from tcpkit.release.run.record import Outcome

PARAMETERS = (
    "# parameters\n"
    "n: int = 3            # how many\n"
    "rate: float = 0.5     # a share\n"
    "label = 'x'\n"
    "names: list = ['a']   # some names\n"
    "on: bool = False\n"
)


def _notebook(path: Path, source: str = PARAMETERS) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell("from tcpkit.release.metrics import record\n"
                                                "record('score', n)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def make_project(root: Path, development: str = "n = 5", quick: str = "n = 1") -> Path:
    """A one-component project; ``development`` is its DEVELOPMENT gate's parameters table."""
    nbdir = root / "notebooks"
    nbdir.mkdir(parents=True)
    _notebook(nbdir / "tiny.ipynb")
    text = '[components.tiny]\nnotebook = "tiny.ipynb"\nowner = "ada"\n'
    for i, gate in enumerate(GATES):
        params = development if gate == "DEVELOPMENT" else f"n = {10 + i}, rate = 1"
        text += (f"[components.tiny.gates.{gate}]\nparameters = {{ {params} }}\n"
                 f"quick = {{ {quick} }}\n"
                 'criteria = [ { metric = "score", op = ">=", threshold = 0 } ]\n')
    (nbdir / "pipeline.toml").write_text(text)
    return nbdir / "pipeline.toml"


def test_parameters_come_from_papermill_with_types_defaults_and_help(tmp_path: Path) -> None:
    _notebook(tmp_path / "nb.ipynb")
    params = notebook_parameters(tmp_path / "nb.ipynb")
    assert params is not None and list(params) == ["n", "rate", "label", "names", "on"]
    assert (params["n"].kind, params["n"].default, params["n"].help) == ("int", "3", "how many")
    assert params["rate"].kind == "float" and params["names"].kind == "list"
    assert params["label"].annotation is None and params["label"].kind is None
    assert "name only" in params["label"].type_label


def test_no_parameters_cell_and_an_unparseable_line(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("n = 1")]
    nbformat.write(nb, tmp_path / "none.ipynb")
    assert notebook_parameters(tmp_path / "none.ipynb") is None
    errors = check_parameters(tmp_path / "none.ipynb", {"n": 1}, lambda k: f"here:{k}")
    assert len(errors) == 1 and "no cell tagged 'parameters'" in errors[0]
    _notebook(tmp_path / "eq.ipynb", "n: int = 3  # a table of name = value\n")
    errors = check_parameters(tmp_path / "eq.ipynb", {"n": 1}, lambda k: f"here:{k}")
    assert len(errors) == 1 and "papermill cannot read" in errors[0] and "no '=' in the comment" in errors[0]


@pytest.mark.parametrize(("value", "ok"), [
    (300, True), ("300", False), (3.0, False), (True, False),
])
def test_int_values(tmp_path: Path, value: object, ok: bool) -> None:
    _notebook(tmp_path / "nb.ipynb")
    errors = check_parameters(tmp_path / "nb.ipynb", {"n": value}, lambda k: f"where:{k}")
    assert (errors == []) is ok
    if not ok:
        assert errors[0].startswith("where:n: ") and "expected an int" in errors[0]


@pytest.mark.parametrize(("name", "value", "ok"), [
    ("rate", 1, True), ("rate", 0.25, True), ("rate", "0.25", False), ("rate", False, False),
    ("names", ["b"], True), ("names", "b", False), ("on", True, True), ("on", 1, False),
    ("label", 12345, True),  # no annotation: checked for name only
])
def test_other_types(tmp_path: Path, name: str, value: object, ok: bool) -> None:
    _notebook(tmp_path / "nb.ipynb")
    assert (check_parameters(tmp_path / "nb.ipynb", {name: value}, str) == []) is ok


def test_wrong_type_is_refused_before_any_kernel_with_file_line_and_type(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pipeline_file = make_project(tmp_path, development='n = "300"')
    line = next(i for i, text in enumerate(pipeline_file.read_text().splitlines(), 1) if '"300"' in text)
    errors = GatePipeline(tmp_path, RunOptions(until="DEVELOPMENT")).preflight()
    assert list(errors) == ["tiny"] and len(errors["tiny"]) == 1
    message = errors["tiny"][0]
    assert message.startswith(f"{pipeline_file}:{line}: components.tiny.gates.DEVELOPMENT.parameters.n: ")
    assert "'300' is a string" in message and "expected an int" in message

    def no_kernel(*args: object, **kwargs: object) -> None:
        raise AssertionError("a kernel was started")

    monkeypatch.setattr("tcpkit.release.pipeline.execute", no_kernel)
    monkeypatch.setenv("TCPKIT_KEYS", str(tmp_path / "keys"))
    monkeypatch.setenv("TCPKIT_RUNNER", "runner-test")
    monkeypatch.setenv("CI", "1")
    code = main(["run", "--until", "DEVELOPMENT", "--root", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert f"pipeline.toml:{line}: components.tiny.gates.DEVELOPMENT.parameters.n" in out
    assert "expected an int" in out


def test_quick_override_is_located_in_the_quick_table(tmp_path: Path) -> None:
    pipeline_file = make_project(tmp_path, quick="rate = 'fast'")
    errors = GatePipeline(tmp_path, RunOptions(profile="quick", until="TESTING")).preflight()
    lines = pipeline_file.read_text().splitlines()
    assert len(errors["tiny"]) == 2  # DEVELOPMENT and TESTING both take the bad quick value
    for message in errors["tiny"]:
        number = int(message.split(":")[1])
        assert "'fast'" in lines[number - 1] and ".quick.rate: " in message
        assert "expected a float (or an int)" in message
    assert GatePipeline(tmp_path, RunOptions(profile="full")).preflight() == {}


def test_unknown_parameter_is_refused(tmp_path: Path) -> None:
    make_project(tmp_path, development="n = 5, n_agnets = 3")
    errors = GatePipeline(tmp_path, RunOptions(until="DEVELOPMENT")).preflight()
    assert len(errors["tiny"]) == 1
    assert "parameter 'n_agnets' is not defined in the parameters cell of tiny.ipynb" in errors["tiny"][0]
    assert "DEVELOPMENT.parameters.n_agnets" in errors["tiny"][0]


def test_tcpkit_params_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_project(tmp_path)
    assert main(["params", "tiny", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    header = next(line for line in out if line.startswith("parameter"))
    assert header.split() == ["parameter", "type", "default", *GATES, "help"]
    rows = {line.split()[0]: line for line in out[out.index(header) + 2:] if line and not line.startswith(" ")}
    assert re.split(r"\s{2,}", rows["n"]) == ["n", "int", "3", "5 / 1", "11 / 1", "12 / 1", "13 / 1", "how many"]
    assert re.split(r"\s{2,}", rows["rate"]) == ["rate", "float", "0.5", ".", "1", "1", "1", "a share"]
    assert re.split(r"\s{2,}", rows["label"])[1] == "(none: name only)"
    # every column starts at the same place in every row: the table is aligned
    starts = header.index("DEVELOPMENT")
    assert rows["n"][starts:].startswith("5 / 1") and rows["rate"][starts:].startswith(".")
    assert any("checked for name only" in line and "label" in line for line in out)


def test_tcpkit_params_json_and_a_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_project(tmp_path, development="n = 5, rate = 'high'")
    assert main(["params", "tiny", "--json", "--root", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    by_name = {p["name"]: p for p in data["parameters"]}
    assert by_name["n"]["gates"]["DEVELOPMENT"] == {"full": 5, "quick": 1}
    assert by_name["n"]["type"] == "int" and by_name["n"]["help"] == "how many"
    assert len(data["problems"]) == 1 and "DEVELOPMENT.parameters.rate" in data["problems"][0]
    assert "do not fit tiny.ipynb" in captured.err
    assert main(["params", "nothere", "--root", str(tmp_path)]) == 2


def test_slowest_runs_summary() -> None:
    outcomes = tuple(Outcome(f"c{i}", "DEVELOPMENT", "passed" if i % 2 else "failed", "", None, float(i))
                     for i in range(1, 8))
    outcomes += (Outcome("skip", "TESTING", "passed", "", None, 99.0, reused=True),)
    slow = slowest_runs(outcomes)
    assert [o.component for o in slow] == ["c7", "c6", "c5", "c4", "c3"]
    result = PipelineResult(outcomes, {"c1": "DEVELOPMENT"}, "DEVELOPMENT", None, 30.0)
    last = summarize(result).splitlines()[-1]
    assert last == ("slowest 5 runs: c7 DEVELOPMENT 7.0 s, c6 DEVELOPMENT 6.0 s, c5 DEVELOPMENT 5.0 s, "
                    "c4 DEVELOPMENT 4.0 s, c3 DEVELOPMENT 3.0 s")
    none = PipelineResult(outcomes[-1:], {"skip": "TESTING"}, "TESTING", None, 1.0)
    assert "slowest" not in summarize(none)


def test_every_gate_of_the_repository_pipeline_passes_the_check() -> None:
    """The project's own notebooks annotate every parameter, and every gate value fits."""
    root = Path(__file__).resolve().parents[1]
    for profile in ("full", "quick"):
        assert GatePipeline(root, RunOptions(profile=profile)).preflight() == {}
    for spec in GatePipeline(root, RunOptions()).pipeline.components.values():
        declared = notebook_parameters(spec.notebook)
        assert declared, spec.notebook
        assert [p.name for p in declared.values() if p.kind is None] == [], spec.notebook


def test_notebook_parameters_are_kept_per_content(tmp_path: Path) -> None:
    path = tmp_path / "nb.ipynb"
    cell = nbformat.v4.new_code_cell("n: int = 1")
    cell.metadata["tags"] = ["parameters"]
    spec = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nbformat.write(nbformat.v4.new_notebook(cells=[cell], metadata=spec), path)
    first = notebook_parameters(path)
    assert first is not None and list(first) == ["n"]
    assert notebook_parameters(path) == first
    cell.source = "n: int = 1\nm: float = 2.0"  # an edit is seen at once, whatever the clock says
    nbformat.write(nbformat.v4.new_notebook(cells=[cell], metadata=spec), path)
    again = notebook_parameters(path)
    assert again is not None and list(again) == ["n", "m"]
