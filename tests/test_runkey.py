"""The run key covers tcpkit's code and the installed world: an edited library file re-runs a gate.

The end-to-end test copies the tcpkit package into a temporary directory put first on
the kernels' PYTHONPATH, points the source digest at that copy, runs a tiny notebook
that uses :func:`tcpkit.detect.evaluate.wilson`, and shows that after an edit of the
copy's ``evaluate.py`` the next run executes again (not "skipped, inputs unchanged")
and fails the criterion the edit breaks.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from tcpkit.cli import main
from tcpkit.release import runkey
from tcpkit.release.gates import GATES


def _copy_package(target: Path) -> Path:
    package = target / "tcpkit"
    shutil.copytree(runkey.package_dir(), package, ignore=shutil.ignore_patterns("__pycache__"))
    return package


def test_source_digest_follows_every_file_edit(tmp_path: Path) -> None:
    package = _copy_package(tmp_path)
    before = dict(runkey.source_files(package))
    assert "detect/evaluate.py" in before and "release/runkey.py" in before
    assert list(before) == sorted(before)
    again = dict(runkey.source_files(package))
    assert again == before  # cached per file, and still the same
    path = package / "detect" / "evaluate.py"
    path.write_text(path.read_text() + "\n# an edit\n")
    after = dict(runkey.source_files(package))
    assert after["detect/evaluate.py"] != before["detect/evaluate.py"]
    assert {k: v for k, v in after.items() if k != "detect/evaluate.py"} == {
        k: v for k, v in before.items() if k != "detect/evaluate.py"}
    (package / "release" / "new_module.py").write_text("X = 1\n")
    assert "release/new_module.py" in dict(runkey.source_files(package))


def test_environment_groups() -> None:
    groups = {g.name: g for g in runkey.environment_inputs("python3")}
    assert set(groups) == {"tcpkit-source", "distributions", "python", "kernel"}
    names = dict(groups["distributions"].items)
    assert "numpy" in names and "papermill" in names
    assert dict(groups["kernel"].items)["name"] == "python3"
    assert all(len(g.digest) == 64 for g in groups.values())
    with pytest.raises(ValueError, match="no Jupyter kernel named 'no-such-kernel'"):
        runkey.kernel_items("no-such-kernel")


BODY = """from tcpkit.release.metrics import record
from tcpkit.detect import evaluate
estimate = evaluate.wilson(9, 10)
record("interval_ok", bool(estimate.low <= estimate.value <= estimate.high))
record("imported_from", evaluate.__file__)
"""


def _project(root: Path) -> None:
    nbdir = root / "notebooks"
    nbdir.mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("n = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(BODY)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, nbdir / "lib.ipynb")
    text = '[components.lib]\nnotebook = "lib.ipynb"\nowner = "ada"\ncontributors = ["ada"]\n'
    for gate in GATES:
        text += (f"[components.lib.gates.{gate}]\nparameters = {{ n = 1 }}\ntimeout_s = 120\n"
                 'criteria = [ { metric = "interval_ok", op = "==", threshold = true } ]\n')
    (nbdir / "pipeline.toml").write_text(text)


@pytest.fixture()
def copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    lib = tmp_path / "lib"
    package = _copy_package(lib)
    monkeypatch.setattr(runkey, "package_dir", lambda: package)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(lib), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("TCPKIT_KEYS", str(tmp_path / "keys"))
    monkeypatch.setenv("TCPKIT_RUNNER", "runner-test")
    monkeypatch.setenv("CI", "1")
    root = tmp_path / "project"
    _project(root)
    yield root, package


def _run(root: Path) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", "--root", str(root), "--until", "DEVELOPMENT"])
    return code, out.getvalue()


@pytest.mark.slow
def test_an_edited_library_file_runs_the_gate_again_and_fails(copied: tuple[Path, Path]) -> None:
    from tcpkit.release.workspace import Workspace

    root, package = copied
    code, out = _run(root)
    assert code == 0, out
    code, out = _run(root)
    assert code == 0 and " reused " in out and "run key unchanged" in out
    evaluate = package / "detect" / "evaluate.py"
    evaluate.write_text(evaluate.read_text() + (
        "\n\ndef wilson(successes, trials, confidence=0.95):  # an edit that breaks the interval\n"
        "    return Estimate(successes / trials, 1.0, 0.0, successes, trials, confidence)\n"))
    code, out = _run(root)
    assert code == 1, out
    assert "run key unchanged" not in out
    assert "interval_ok = false fails" in out
    with Workspace.open(root) as ws:
        runs = ws.gate_runs()
    assert [r.decision for r in runs] == ["passed", "failed"]
    assert str(runs[0].metrics["imported_from"]).startswith(str(package))  # the kernel ran the copy
    assert runs[0].inputs["tcpkit-source"] != runs[1].inputs["tcpkit-source"]
    assert {k for k in runs[0].inputs if runs[0].inputs[k] != runs[1].inputs[k]} == {"tcpkit-source"}
    page = (root / "reports" / "DEVELOPMENT" / "lib.html").read_text()
    assert "tcpkit-source" in page and "<details>" in page and "detect/evaluate.py" in page
    # the failure is reused while nothing changes; undoing the edit changes the key back
    code, out = _run(root)
    assert code == 1 and re.search(r" failed +reused ", out) and "interval_ok = false fails" in out
    evaluate.write_text(evaluate.read_text().split("\n\ndef wilson(successes, trials, confidence=0.95):  #")[0])
    code, out = _run(root)
    assert code == 0 and re.search(r" passed +reused ", out)  # the first run's key and decision again
    with Workspace.open(root) as ws:
        assert len(ws.gate_runs()) == 2


def test_distributions_read_from_the_headers_equal_importlib_metadata() -> None:
    from importlib.metadata import distributions as all_distributions

    expected: dict[str, str] = {}
    for dist in all_distributions():
        name = dist.metadata["Name"] if dist.metadata is not None else None
        if name:
            expected.setdefault(name.lower().replace("_", "-").replace(".", "-"), str(dist.version))
    assert runkey.distributions() == tuple(sorted(expected.items()))
