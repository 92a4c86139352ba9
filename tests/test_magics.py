"""``%tcpkit`` in a real kernel started by jupyter_client (through nbclient), in a project where
someone else holds the lease and then records a newer version; and the mapping from a notebook's
path to its component."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tcpkit.release import scaffold
from tcpkit.release.session import SessionError, locate
from tcpkit.release.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]


def _with_cell(nb_bytes: bytes, text: str, at: int | None = None) -> bytes:
    nb = json.loads(nb_bytes)
    cell = {"cell_type": "markdown", "id": f"c{len(nb['cells'])}{at or ''}", "metadata": {},
            "source": [text]}
    nb["cells"].insert(len(nb["cells"]) if at is None else at, cell)
    return (json.dumps(nb, indent=1) + "\n").encode("utf-8")


@pytest.fixture
def project(tmp_path: Path, researchers: Callable[..., Path]) -> Path:
    """A project whose component ``example`` (owner ada, contributor bob) has versions 1 and 2."""
    root = tmp_path / "proj"
    scaffold.init_project(root, "ada")
    researchers(root, "ada", "bob")
    with Workspace.open(root) as ws:
        ws.register_component("example", "example.ipynb", "ada", ["ada", "bob"])
        v1 = ws.current("example")
        assert v1 is not None
        ws.modify("example", "ada", _with_cell(ws.notebook_path("example").read_bytes(),
                                               "ada's note on trimming"), v1.digest)
    return root


class Kernel:
    """One kernel (started by jupyter_client via nbclient) and a notebook to run cells in."""

    def __init__(self, client: Any, nb: Any) -> None:
        self.client, self.nb = client, nb

    def run(self, source: str) -> tuple[str, str]:
        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        self.client.execute_cell(cell, len(self.nb.cells) - 1)
        out = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")
        err = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stderr")
        errors = [o for o in cell.outputs if o.get("output_type") == "error"]
        assert not errors, f"{source!r} raised {errors[0]['ename']}: {errors[0]['evalue']}"
        return out, err


@pytest.fixture
def kernel(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Kernel]]:
    from nbclient import NotebookClient

    started: list[Any] = []

    def start(session: str | None = "notebooks/example.ipynb", **env: str) -> Kernel:
        if session is None:
            monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
        else:  # what jupyter_server gives a notebook's kernel: the notebook's path
            monkeypatch.setenv("JPY_SESSION_NAME", str(project / session))
        monkeypatch.setenv("TCPKIT_USER", "ada")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        nb = nbformat.v4.new_notebook()
        client = NotebookClient(nb, kernel_name="python3", timeout=120, startup_timeout=120,
                                resources={"metadata": {"path": str(project / "notebooks")}})
        manager = client.setup_kernel()
        manager.__enter__()
        started.append(manager)
        return Kernel(client, nb)

    yield start
    for manager in started:
        manager.__exit__(None, None, None)


@pytest.mark.slow
def test_lease_warning_status_diff_and_newer_version(project: Path,
                                                     kernel: Callable[..., Kernel]) -> None:
    with Workspace.open(project) as ws:
        v1, v2 = ws.versions("example")
        ws.acquire_lease("example", "bob", ttl_s=900, reason="tuning the trim", bind_process=False)
        until = ws.lease("example").expires_iso  # type: ignore[union-attr]
    k = kernel()

    out, err = k.run("%load_ext tcpkit")
    assert "component example (owner ada, level none yet), leased to bob" in out
    assert "you are ada, starting from version 2" in out
    assert f"example is leased to bob until {until}, reason: tuning the trim" in err

    out, _ = k.run(f"%tcpkit diff {v1.digest[:12]}")  # nbdime: stored version 1 vs the file (v2)
    assert f"version 1 ({v1.digest[:12]}) -> notebooks/example.ipynb on disk" in out
    assert "ada's note on trimming" in out
    out, _ = k.run("%tcpkit diff")  # default: the current version, which is the file
    assert "(the notebooks are equal)" in out

    _, err = k.run("%tcpkit lease acquire --ttl 60")
    assert "leased to bob" in err and "nothing was changed" in err

    out, err = k.run("%tcpkit status")
    assert "example" in out and "bob" in out.split("example", 1)[1].splitlines()[0]
    assert "newer version" not in err
    out, _ = k.run("%tcpkit watch 0")
    assert "at most every 0 s after a cell" in out

    # bob, who holds the lease, records a newer version while ada has the notebook open
    with Workspace.open(project) as ws:
        v3 = ws.modify("example", "bob", _with_cell(ws.notebook_path("example").read_bytes(),
                                                     "bob's tuned trim"), v2.digest)
    _, err = k.run("x = 1")  # the after-cell check warns before ada's next save
    assert "1 newer version(s) of example by bob since version 2" in err
    _, err = k.run("x = 2")
    assert "newer version" not in err  # once per newer version
    out, err = k.run("%tcpkit status")  # status always says it
    assert "1 newer version(s) of example by bob since version 2" in err
    command = next(line.strip() for line in err.splitlines() if line.strip().startswith("nbmerge "))
    assert command == ("nbmerge .tcpkit/tmp/merge/example-v2-base.ipynb "
                       ".tcpkit/tmp/merge/example-v3.ipynb notebooks/example.mine.ipynb "
                       "--out notebooks/example.ipynb")
    # the command merges: ada's unsaved copy (v2 plus her new cell) with bob's version 3
    mine = _with_cell(v2_bytes(project, v2.digest), "ada's unsaved work", at=0)
    (project / "notebooks" / "example.mine.ipynb").write_bytes(mine)
    nbmerge = Path(sys.executable).parent / "nbmerge"
    subprocess.run([str(nbmerge), *command.split()[1:]], cwd=project, check=True,
                   capture_output=True, timeout=120)
    merged = (project / "notebooks" / "example.ipynb").read_text()
    assert "bob's tuned trim" in merged and "ada's unsaved work" in merged
    assert v3.seq == 3

    out, _ = k.run("%tcpkit base")
    assert "starts from version 3" in out
    _, err = k.run("%tcpkit status")
    assert "newer version" not in err

    out, _ = k.run("%tcpkit backups")
    assert all(v.digest[:16] in out for v in (v1, v2, v3))
    _, err = k.run("%tcpkit watch soon")
    assert "give seconds from 0 to 86400" in err
    k.run("%unload_ext tcpkit")
    with Workspace.open(project) as ws:
        ws.modify("example", "bob", _with_cell(ws.notebook_path("example").read_bytes(), "more"),
                  ws.current("example").digest)  # type: ignore[union-attr]
    _, err = k.run("x = 3")
    assert "newer version" not in err  # unloaded: the check is gone


def v2_bytes(root: Path, digest: str) -> bytes:
    with Workspace.open(root) as ws:
        return ws.store.get_bytes(digest)


@pytest.mark.slow
def test_make_lab_config_loads_the_extension_before_the_first_cell(
        project: Path, kernel: Callable[..., Kernel], tmp_path: Path) -> None:
    """The file `make lab` installs, where it installs it (<venv>/etc/ipython/): a notebook's
    kernel then has %tcpkit without %load_ext, and the report comes with the first cell."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (venv / "etc" / "ipython").mkdir(parents=True)
    config = REPO / "tcpkit" / "templates" / "ipython_kernel_config.py"
    (venv / "etc" / "ipython" / "ipython_kernel_config.py").write_text(config.read_text())
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(venv / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "venv with the make lab config", "language": "python"}))
    site = sysconfig.get_paths()["purelib"]
    with Workspace.open(project) as ws:
        ws.acquire_lease("example", "bob", ttl_s=900, reason="tuning", bind_process=False)
    k = kernel(JUPYTER_PATH=str(tmp_path / "jupyter"), JUPYTER_PREFER_ENV_PATH="0",
               PYTHONPATH=os.pathsep.join([str(REPO), site]))
    out, err = k.run("import sys; print(sys.prefix)")
    assert out.splitlines()[-1] == str(venv)  # the kernel is the venv's python
    assert "component example" in out and "example is leased to bob" in err
    out, err = k.run("%tcpkit component")
    assert f"component example in {project.resolve()}" in out
    # a kernel that no Jupyter server started for a notebook (papermill's gate runs) is left alone
    plain = kernel(session=None, JUPYTER_PATH=str(tmp_path / "jupyter"),
                   PYTHONPATH=os.pathsep.join([str(REPO), site]))
    out, _ = plain.run("import sys; print(sys.prefix, get_ipython().find_line_magic('tcpkit'))")
    assert out.strip() == f"{venv} None"


@pytest.mark.slow
def test_without_a_notebook_path_the_component_is_named_and_run(
        project: Path, kernel: Callable[..., Kernel], researchers: Callable[..., Path]) -> None:
    researchers(project, "runner-test")  # a runner on the trust list signs the gate run
    k = kernel(session=None, TCPKIT_RUNNER="runner-test")
    out, _ = k.run("%load_ext tcpkit")
    assert "no notebook path" in out
    out, err = k.run(f"%tcpkit component nosuch --root {project}")
    assert "component 'nosuch' is not in" in err
    out, err = k.run(f"%tcpkit component example --root {project}")
    assert "is component example" in out and not err
    out, err = k.run("%tcpkit run --until DEVELOPMENT --profile quick")
    assert "example        DEVELOPMENT passed" in out, err
    assert "ok example        reached DEVELOPMENT" in out
    out, err = k.run('%tcpkit lease acquire --ttl 120 --reason "trying a wider trim"\nimport os; print(os.getpid())')
    pid = out.split()[-1]
    assert f"lease on example held by ada (pid {pid} on " in out  # bound to the kernel's process
    with Workspace.open(project) as ws:
        lease = ws.lease("example")
        assert lease is not None and lease.reason == "trying a wider trim" and str(lease.pid) == pid
    out, err = k.run("%tcpkit lease release")
    assert "lease on example released" in out
    out, err = k.run("%tcpkit run --until NOWHERE")
    assert "--until 'NOWHERE' is not a gate" in err
    out, err = k.run("%tcpkit run --bogus")
    assert "unrecognized arguments: --bogus" in err  # argparse's exit does not end the kernel


def test_locate_maps_paths_to_components(project: Path, tmp_path: Path) -> None:
    notebooks = project / "notebooks"
    assert locate(str(notebooks / "example.ipynb"), tmp_path).component == "example"
    assert locate("example.ipynb", notebooks).component == "example"  # relative to the kernel's cwd
    other = locate(str(notebooks / "scratch.ipynb"), notebooks)
    assert other.component is None and other.root == project.resolve()
    assert locate(None, tmp_path, root=project, component="example").component == "example"
    with pytest.raises(SessionError, match="no tcpkit project"):
        locate(str(tmp_path / "x.ipynb"), tmp_path)


def test_import_tcpkit_stays_light() -> None:
    code = "import sys, tcpkit; print(sorted(m for m in ('IPython', 'tcpkit.magics') if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
