"""`tcpkit init` and `tcpkit new`: what they write, what they refuse, and that a failed change leaves
nothing behind; the template's gated metric fails when the estimator it measures is broken."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tcpkit.cli import main
from tcpkit.release import metrics, scaffold
from tcpkit.release.gates import GATES, PipelineError, evaluate, load_pipeline


def _init(tmp_path: Path, owner: str = "ada") -> Path:
    root = tmp_path / "proj"
    assert main(["init", str(root), "--owner", owner]) == 0
    return root


def test_init_makes_a_valid_project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _init(tmp_path)
    out = capsys.readouterr().out
    pipeline = load_pipeline(root / "notebooks" / "pipeline.toml")  # notebooks must exist
    assert list(pipeline.components) == ["example"]
    spec = pipeline.components["example"]
    assert spec.owner == "ada" and list(spec.gates) == list(GATES)
    nb = json.loads((root / "notebooks" / "example.ipynb").read_text())
    params = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(params) == 1 and "n_samples: int = 200  # " in "".join(params[0]["source"])
    assert any("".join(c["source"]).startswith("#| export") for c in nb["cells"])
    ignored = (root / ".gitignore").read_text().splitlines()
    for entry in (".tcpkit/tcpkit.db*", ".tcpkit/objects/", ".tcpkit/tmp/", "reports/*"):
        assert entry in ignored
    trust = root / ".tcpkit" / "trust"
    assert trust.is_dir() and not any(trust.iterdir())
    for step in ("tcpkit keys init ada", "tcpkit trust add", "tcpkit run --profile quick"):
        assert step in out


def test_init_parameters_are_what_papermill_reads(tmp_path: Path) -> None:
    """Every parameter of the template has a type and a help text that papermill can parse."""
    import papermill

    root = _init(tmp_path)
    found = papermill.inspect_notebook(str(root / "notebooks" / "example.ipynb"))
    assert set(found) == {"n_samples", "repeats", "contamination", "seed"}
    assert all(p["inferred_type_name"] in ("int", "float") and p["help"] for p in found.values())


def test_init_refuses_an_existing_project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _init(tmp_path)
    before = (root / "notebooks" / "pipeline.toml").read_bytes()
    capsys.readouterr()
    assert main(["init", str(root)]) == 2
    err = capsys.readouterr().err
    assert "pipeline.toml already exists" in err and err.count("\n") == 1
    assert (root / "notebooks" / "pipeline.toml").read_bytes() == before


def test_init_keeps_an_existing_gitignore(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / ".gitignore").write_text("data/\nreports/*\n")
    scaffold.init_project(root, "ada")
    lines = (root / ".gitignore").read_text().splitlines()
    assert lines[0] == "data/" and lines.count("reports/*") == 1 and ".tcpkit/objects/" in lines
    scaffold._ignore_runtime_state(root / ".gitignore")  # a second time adds nothing
    assert (root / ".gitignore").read_text().splitlines() == lines


def test_init_refuses_a_bad_owner(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", str(tmp_path / "p"), "--owner", "../x"]) == 2
    assert "researcher name '../x' is invalid" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_new_appends_and_keeps_comments(tmp_path: Path) -> None:
    root = _init(tmp_path)
    path = root / "notebooks" / "pipeline.toml"
    path.write_text(path.read_text() + "# my own note: keep me\n")
    before = path.read_text()
    assert main(["new", "beta", "--owner", "grace", "--root", str(root)]) == 0
    after = path.read_text()
    assert after.startswith(before) and "# my own note: keep me" in after
    pipeline = load_pipeline(path)
    assert list(pipeline.components) == ["example", "beta"]
    assert pipeline.components["beta"].owner == "grace"
    nb = (root / "notebooks" / "beta.ipynb").read_text()
    assert "# beta" in nb and "Owner: grace" in nb


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["new", "example", "--owner", "bob"], "component 'example' already exists"),
        (["new", "Beta", "--owner", "bob"], "component name 'Beta' is invalid"),
        (["new", "beta", "--owner", "bob smith"], "researcher name 'bob smith' is invalid"),
        (["new", "beta", "--owner", "bob", "--from", "nothing-here"], "neither a component"),
    ],
)
def test_new_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                     message: str) -> None:
    root = _init(tmp_path)
    before = (root / "notebooks" / "pipeline.toml").read_bytes()
    capsys.readouterr()
    assert main([*argv, "--root", str(root)]) == 2
    assert message in capsys.readouterr().err
    assert (root / "notebooks" / "pipeline.toml").read_bytes() == before
    assert sorted(p.name for p in (root / "notebooks").iterdir()) == ["example.ipynb", "pipeline.toml"]


def test_new_refuses_an_existing_notebook_file(tmp_path: Path) -> None:
    root = _init(tmp_path)
    (root / "notebooks" / "beta.ipynb").write_text("{}")
    with pytest.raises(scaffold.ScaffoldError, match="beta.ipynb already exists"):
        scaffold.new_component(root, "beta", "bob")


def test_new_rolls_back_when_the_result_is_invalid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _init(tmp_path)
    path = root / "notebooks" / "pipeline.toml"
    before = path.read_bytes()
    broken = scaffold.component_tables("beta", "bob", "beta.ipynb").replace('op = "<="', 'op = "=<"', 1)
    monkeypatch.setattr(scaffold, "component_tables", lambda *a: broken)
    with pytest.raises(scaffold.ScaffoldError, match="nothing was changed") as info:
        scaffold.new_component(root, "beta", "bob")
    assert "criteria[0]" in str(info.value) and "'=<'" in str(info.value)
    assert path.read_bytes() == before
    assert not (root / "notebooks" / "beta.ipynb").exists()


def test_new_refuses_when_pipeline_is_already_invalid(tmp_path: Path) -> None:
    root = _init(tmp_path)
    path = root / "notebooks" / "pipeline.toml"
    path.write_text(path.read_text().replace('op = "<="', 'op = "=<"', 1))
    with pytest.raises(scaffold.ScaffoldError, match="invalid already"):
        scaffold.new_component(root, "beta", "bob")
    assert not (root / "notebooks" / "beta.ipynb").exists()


def test_new_from_a_component_copies_notebook_and_gates(tmp_path: Path) -> None:
    root = _init(tmp_path)
    path = root / "notebooks" / "pipeline.toml"
    path.write_text(path.read_text().replace("quick = { n_samples = 100 }", "quick = { n_samples = 150 }"))
    source = json.loads((root / "notebooks" / "example.ipynb").read_text())
    source["cells"][3]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "old\n"}]
    (root / "notebooks" / "example.ipynb").write_text(json.dumps(source))
    made = scaffold.new_component(root, "beta", "bob", "example")
    assert "gate tables of component example" in made.notes[0]
    pipeline = load_pipeline(path)
    a, b = pipeline.components["example"], pipeline.components["beta"]
    for gate in GATES:
        assert b.gates[gate].parameters == a.gates[gate].parameters
        assert b.gates[gate].quick == a.gates[gate].quick
        assert b.gates[gate].criteria == a.gates[gate].criteria
    assert b.gates["DEVELOPMENT"].quick == {"n_samples": 150}
    copied = json.loads((root / "notebooks" / "beta.ipynb").read_text())
    assert all(not c.get("outputs") for c in copied["cells"] if c["cell_type"] == "code")


def test_new_from_a_foreign_notebook_keeps_only_its_parameters(tmp_path: Path) -> None:
    root = _init(tmp_path)
    nb = json.loads((root / "notebooks" / "example.ipynb").read_text())
    nb["cells"][1]["source"] = ["n_samples: int = 10  # only this one\n"]
    foreign = tmp_path / "mine.ipynb"
    foreign.write_text(json.dumps(nb))
    made = scaffold.new_component(root, "beta", "bob", str(foreign))
    assert "max_abs_error" in made.notes[0]
    spec = load_pipeline(root / "notebooks" / "pipeline.toml").components["beta"]
    assert all(set(g.parameters) == {"n_samples"} for g in spec.gates.values())


def test_concurrent_new_loses_no_component(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    root = _init(tmp_path)
    names = [f"c{i}" for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda n: scaffold.new_component(root, n, "ada"), names))
    pipeline = load_pipeline(root / "notebooks" / "pipeline.toml")
    assert set(pipeline.components) == {"example", *names}


def test_toml_value_round_trips() -> None:
    value: dict[str, Any] = {"a": 1, "b": 2.5, "c": True, "d": "x \"q\" \\ é", "e": [1, [2, 3]],
                             "f": {"g": False}, "h-i": 1e-9}
    assert tomllib.loads(f"v = {scaffold.toml_value(value)}")["v"] == value


def test_bad_owner_in_pipeline_is_a_configuration_error(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Before: the workspace raised InvalidNameError from register_component, a traceback."""
    root = _init(tmp_path)
    path = root / "notebooks" / "pipeline.toml"
    path.write_text(path.read_text().replace('owner = "ada"', 'owner = "ada lovelace"'))
    with pytest.raises(PipelineError, match=r"pipeline.toml:\d+: components.example.owner"):
        load_pipeline(path)
    capsys.readouterr()
    assert main(["run", "--profile", "quick", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "components.example.owner: researcher name 'ada lovelace' is invalid" in err
    assert not (root / ".tcpkit" / "tcpkit.db").exists()  # refused before the workspace and kernels
    path.write_text(path.read_text().replace('owner = "ada lovelace"', 'owner = "ada"')
                    .replace('contributors = ["ada"]', 'contributors = ["ada", "b/c"]'))
    with pytest.raises(PipelineError, match="components.example.contributors: researcher name 'b/c'"):
        load_pipeline(path)


def _run_template(root: Path, gate: str, monkeypatch: pytest.MonkeyPatch, trim: float | None
                  ) -> dict[str, Any]:
    """Execute the template's code cells in-process with a gate's quick parameters."""
    recorded: dict[str, Any] = {}
    monkeypatch.setattr(metrics, "record", lambda name, value: recorded.__setitem__(name, value))
    spec = load_pipeline(root / "notebooks" / "pipeline.toml").components["example"].gates[gate]
    nb = json.loads((root / "notebooks" / "example.ipynb").read_text())
    namespace: dict[str, Any] = {}
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        exec("".join(cell["source"]), namespace)
        if "parameters" in cell["metadata"].get("tags", []):
            namespace.update(spec.parameters_for("quick"))
        if "".join(cell["source"]).startswith("#| export") and trim is not None:
            namespace["CONFIG"] = namespace["Config"](trim=trim)
    return recorded


@pytest.mark.breaks("example", "max_abs_error")
@pytest.mark.parametrize("gate", GATES)
def test_template_metric_fails_for_an_estimator_without_trimming(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gate: str) -> None:
    root = _init(tmp_path)
    spec = load_pipeline(root / "notebooks" / "pipeline.toml").components["example"].gates[gate]
    assert evaluate(spec.criteria, _run_template(root, gate, monkeypatch, None)).passed
    broken = evaluate(spec.criteria, _run_template(root, gate, monkeypatch, 0.0))
    assert not broken.passed and broken.failures[0].metric == "max_abs_error"
