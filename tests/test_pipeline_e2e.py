"""End to end: `tcpkit run --profile quick` on tiny notebooks in a temporary project.

One module-scoped project is run once with a passing component, a component
whose TESTING criterion fails, a notebook that raises, and (after the first
is frozen) a dependent component that loads the frozen module inside its
kernel. Later tests reuse that state: a second run reuses every recorded decision
(passes and failures), ``--rerun`` executes again, a configuration error leaves the
recorded level alone and says so, a tampered frozen module is refused. Each notebook execution costs a kernel start, so the number
of executions is kept small (8 in all).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from tcpkit.cli import main
from tcpkit.release.gates import GATES
from tcpkit.release.promote import FrozenModuleError, load_frozen

pytestmark = pytest.mark.slow


def _notebook(parameters: str, body: str, export: str | None = None) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    cells = [nbformat.v4.new_markdown_cell("# tiny test notebook"), params]
    if export is not None:
        cells.append(nbformat.v4.new_code_cell("#| export\n" + export))
    cells.append(nbformat.v4.new_code_cell(body))
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _component(name: str, owner: str, criteria: list[str], deps: str = "[]") -> str:
    text = (f'[components.{name}]\nnotebook = "{name}.ipynb"\nowner = "{owner}"\n'
            f'contributors = ["{owner}"]\ndepends_on = {deps}\n')
    for i, gate in enumerate(GATES):
        text += (f"[components.{name}.gates.{gate}]\nparameters = {{ n = {i + 10} }}\n"
                 f"quick = {{ n = {i + 1} }}\ntimeout_s = 60\ncriteria = [ {criteria[i]} ]\n")
    return text


RECORD = "from tcpkit.release.metrics import record\n"


def make_project(root: Path) -> None:
    nbdir = root / "notebooks"
    nbdir.mkdir(parents=True)
    nbformat.write(_notebook("n = 0", RECORD + "record('score', double(n))\nrecord('recall_a', 0.99)",
                             "SCALE = 2\n\ndef double(x):\n    return SCALE * x\n"), nbdir / "good.ipynb")
    nbformat.write(_notebook("n = 0", RECORD + "record('score', 0.5 * n)"), nbdir / "weak.ipynb")
    nbformat.write(_notebook("n = 0", "raise RuntimeError('deliberate failure in the notebook')"),
                   nbdir / "boom.ipynb")
    nbformat.write(_notebook("n = 0", RECORD + "from tcpkit.release.promote import load_frozen\n"
                             "record('value', load_frozen('good').double(n))", "LABEL = 'joined'\n"),
                   nbdir / "joined.ipynb")
    good = '{ metric = "score", op = ">=", threshold = 2 }, { metric = "recall_*", op = ">=", threshold = 0.95 }'
    weak = ['{ metric = "score", op = "<=", threshold = 1 }'] + ['{ metric = "score", op = "<=", threshold = 0.1 }'] * 3
    text = _component("good", "ada", [good] * 4)
    text += _component("weak", "grace", weak)
    text += _component("boom", "linus", ['{ metric = "score", op = ">=", threshold = 0 }'] * 4)
    text += _component("joined", "margaret", ['{ metric = "value", op = ">=", threshold = 2 }'] * 4, '["good"]')
    (nbdir / "pipeline.toml").write_text(text)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    keys = tmp_path_factory.mktemp("keys")
    saved = {k: os.environ.get(k) for k in ("TCPKIT_KEYS", "TCPKIT_RUNNER", "CI")}
    os.environ.update({"TCPKIT_KEYS": str(keys), "TCPKIT_RUNNER": "runner-test", "CI": "1"})
    try:
        yield keys
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def project(env: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    make_project(root)
    return root


@pytest.fixture(scope="module")
def first_run(project: Path, capfd_module: None = None) -> tuple[int, str]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", "--profile", "quick", "--jobs", "2", "--root", str(project),
                     "--component", "good", "--component", "weak", "--component", "boom"])
    return code, out.getvalue()


def _runs(project: Path) -> list:
    from tcpkit.release.workspace import Workspace

    with Workspace.open(project) as ws:
        return ws.gate_runs()


def test_first_run_outcomes(project: Path, first_run: tuple[int, str]) -> None:
    code, out = first_run
    assert code == 1  # weak and boom do not reach PRODUCTION
    assert "created a signing key" in out and "runner-test" in out
    assert (project / ".tcpkit" / "trust" / "runner-test.pub").is_file()
    decisions = {(r.component, r.gate): r.decision for r in _runs(project)}
    assert decisions == {
        ("good", "DEVELOPMENT"): "passed", ("good", "TESTING"): "passed",
        ("good", "STAGING"): "passed", ("good", "PRODUCTION"): "passed",
        ("weak", "DEVELOPMENT"): "passed", ("weak", "TESTING"): "failed",
        ("boom", "DEVELOPMENT"): "failed",
    }


def test_failures_say_why(project: Path, first_run: tuple[int, str]) -> None:
    _, out = first_run
    assert re.search(r"weak\s+TESTING\s+failed.*score = 1 fails: required <= 0\.1", out)
    assert re.search(r"boom\s+DEVELOPMENT\s+failed.*RuntimeError: deliberate failure", out)
    runs = {(r.component, r.gate): r for r in _runs(project)}
    boom = runs[("boom", "DEVELOPMENT")]
    assert all(not c["ok"] and "not evaluated" in c["reason"] for c in boom.criteria)
    page = (project / "reports" / "DEVELOPMENT" / "boom.html").read_text()
    assert "deliberate failure in the notebook" in page and "failed" in page


def test_runs_are_recorded_with_inputs_store_and_signed_attestation(project: Path, first_run: tuple[int, str]) -> None:
    from tcpkit.release.chain import load_bundle, open_run_bundle
    from tcpkit.release.signing import TrustList, verify_envelope_signers
    from tcpkit.release.store import ObjectStore

    store = ObjectStore(project / ".tcpkit" / "objects")
    trust = TrustList.load(project / ".tcpkit" / "trust")
    for run in _runs(project):
        assert set(run.inputs) >= {"notebook", "parameters", "module", "tcpkit", "gate", "tcpkit-source",
                                   "distributions", "python", "kernel"}
        assert run.runner == "runner-test"
        assert store.has(run.report_digest) and store.has(run.envelope_digest)
        raw = store.get_bytes(run.envelope_digest)
        for envelope in load_bundle(raw):
            _, signers = verify_envelope_signers(envelope, trust)
            assert list(signers) == ["runner-test"]
        attestation = open_run_bundle(raw, trust)
        expected = "PASSED" if run.decision == "passed" else "FAILED"
        assert attestation.summary["predicate"]["verificationResult"] == expected
        assert attestation.result["predicate"]["metrics"] == run.metrics
        assert attestation.result["predicate"]["gate"] == run.gate
    good = [r for r in _runs(project) if r.component == "good"]
    assert {k: v for k, v in good[0].metrics.items() if not k.startswith("tcpkit.")} == {
        "score": 2, "recall_a": 0.99}
    assert good[0].metrics["tcpkit.exclusive"] is False
    assert isinstance(good[0].metrics["tcpkit.load1_before"], float)
    assert len({r.input_digest for r in good}) == 4  # parameters differ per gate


def test_production_freezes_a_verified_module(project: Path, first_run: tuple[int, str]) -> None:
    module = project / "production" / "good.py"
    text = module.read_text()
    assert "AUTOGENERATED" in text and "do not edit" in text and "notebooks/good.ipynb" in text
    frozen = load_frozen("good", project)
    assert frozen.double(21) == 42
    index = (project / "reports" / "index.html").read_text()
    for word in ("good", "weak", "boom", "PRODUCTION", "verified", "not run"):
        assert word in index


def test_dependent_component_loads_frozen_module_in_its_kernel(project: Path, first_run: tuple[int, str]) -> None:
    code = main(["run", "--profile", "quick", "--root", str(project), "--component", "joined",
                 "--until", "DEVELOPMENT"])
    assert code == 0
    runs = [r for r in _runs(project) if r.component == "joined"]
    assert [(r.gate, r.decision, r.metrics["value"]) for r in runs] == [("DEVELOPMENT", "passed", 2)]
    assert "frozen:good" in runs[0].inputs


def test_second_run_skips_unchanged(project: Path, first_run: tuple[int, str], capsys: pytest.CaptureFixture[str]) -> None:
    before = len(_runs(project))
    code = main(["run", "--profile", "quick", "--root", str(project), "--component", "good"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count(" reused ") >= 4 and "(0 executed, 4 reused)" in out
    assert len(_runs(project)) == before  # nothing executed, nothing recorded


def test_unchanged_failures_are_reused_and_rerun_executes_them(
        project: Path, first_run: tuple[int, str], capsys: pytest.CaptureFixture[str]) -> None:
    before = len(_runs(project))
    capsys.readouterr()
    code = main(["run", "--profile", "quick", "--root", str(project), "--component", "weak",
                 "--component", "boom"])
    out = capsys.readouterr().out
    assert code == 1
    assert len(_runs(project)) == before  # a criterion missed and a cell that raised: both reused
    assert re.search(r"weak +TESTING +failed +reused +run key unchanged since the run of \S+: .*--rerun", out)
    assert re.search(r"boom +DEVELOPMENT +failed +reused .*error: RuntimeError: deliberate failure", out)
    assert "(0 executed, 3 reused)" in out
    assert "-- weak           reached DEVELOPMENT, failed TESTING (reused)" in out

    code = main(["run", "--profile", "quick", "--root", str(project), "--component", "boom", "--rerun"])
    out = capsys.readouterr().out
    assert code == 1 and "(1 executed, 0 reused)" in out
    runs = _runs(project)
    assert len(runs) == before + 1 and runs[-1].component == "boom"
    assert runs[-1].metrics["tcpkit.failure"] == "cell error"


def test_unknown_parameter_is_an_error_before_execution(project: Path, first_run: tuple[int, str],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    toml = project / "notebooks" / "pipeline.toml"
    original = toml.read_text()
    before = len(_runs(project))
    try:
        toml.write_text(original.replace("quick = { n = 1 }", "quick = { n = 1, m = 3 }", 1))
        code = main(["run", "--profile", "quick", "--root", str(project), "--component", "good"])
    finally:
        toml.write_text(original)
    assert code == 1
    out = capsys.readouterr().out
    assert "parameter 'm' is not defined in the parameters cell of good.ipynb" in out
    line = next(i for i, text in enumerate(original.splitlines(), start=1) if "quick = { n = 1 }" in text)
    assert f"pipeline.toml:{line}: components.good.gates.DEVELOPMENT.quick.m" in out
    assert len(_runs(project)) == before  # an error before execution: nothing ran
    # the run and status agree: a configuration error, the level and frozen module unchanged
    assert "-- good           configuration error, no gate ran: " in out
    assert "its recorded level PRODUCTION, production/good.py unchanged" in out
    assert main(["status", "--root", str(project)]) == 0
    status = capsys.readouterr().out
    assert re.search(r"^good +ada +PRODUCTION ! ", status, re.M)
    assert ("! good: its last 'tcpkit run' stopped at a configuration error before any gate ran "
            "(level PRODUCTION and production/good.py unchanged): ") in status
    # fixed again: the note goes, nothing executes (the run keys are those of the recorded passes)
    assert main(["run", "--profile", "quick", "--root", str(project), "--component", "good"]) == 0
    capsys.readouterr()
    assert main(["status", "--root", str(project)]) == 0
    assert " ! " not in capsys.readouterr().out
    assert len(_runs(project)) == before


def test_verify_checks_frozen_modules_and_every_gate_run(
    project: Path, first_run: tuple[int, str], capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from tcpkit.release.workspace import Workspace

    capsys.readouterr()
    assert main(["verify", "--json", "--root", str(project)]) == 0
    report = json.loads(capsys.readouterr().out)
    names = [a["name"] for a in report["artifacts"]]
    assert report["ok"] and "production/good.py" in names
    assert sum(n.startswith("gate-run/") for n in names) == len(_runs(project))

    # a report edited in the store after the fact is caught, named, and exit status 1
    with Workspace.open(project) as ws:
        run = next(r for r in ws.gate_runs() if r.component == "weak")
        path = ws.store.path_of(run.report_digest)
    original = path.read_bytes()
    mode = path.stat().st_mode
    try:
        path.chmod(0o644)
        path.write_bytes(original + b"<!-- edited -->")
        assert main(["verify", "--root", str(project)]) == 1
        err = capsys.readouterr().err
        assert f"gate-run/weak/{run.gate}/{run.run_id}" in err and "corrupt" in err
    finally:
        path.write_bytes(original)
        path.chmod(mode)
    assert main(["verify", "--root", str(project)]) == 0


def test_tampered_frozen_module_is_refused_and_blocks_dependents(
    project: Path, first_run: tuple[int, str], capsys: pytest.CaptureFixture[str]
) -> None:
    module = project / "production" / "good.py"
    original = module.read_bytes()
    try:
        module.write_bytes(original.replace(b"SCALE = 2", b"SCALE = 3"))
        with pytest.raises(FrozenModuleError, match="digest mismatch"):
            load_frozen("good", project)
        code = main(["run", "--profile", "quick", "--root", str(project), "--component", "joined",
                     "--until", "DEVELOPMENT"])
        assert code == 1
        assert "waiting for its dependencies to be frozen" in capsys.readouterr().out
    finally:
        module.write_bytes(original)
    (project / "production" / "good.dsse.json").unlink()
    with pytest.raises(FrozenModuleError, match="attestation"):
        load_frozen("good", project)
