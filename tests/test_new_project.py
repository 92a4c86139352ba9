"""tcpkit the way a new user meets it: the built wheel, installed into a fresh virtual environment
outside the repository, makes a project, adds a component and takes both to PRODUCTION.

Installing the wheel's dependencies from PyPI takes minutes, so the fresh environment gets only the
wheel (``pip --python VENV install --no-deps``, console script included) and finds the dependencies
through ``PYTHONPATH``: a directory of links to the test environment's packages with every trace
of tcpkit left out (its package, its metadata, the editable-install hook). The only tcpkit that
the venv's ``tcpkit`` command, its Python and its kernel can import is the wheel's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
    ".tcpkit", "reports", "production", ".ipynb_checkpoints",
)


def _run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 180) -> str:
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (
        f"{' '.join(argv)} exited {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")
    return done.stdout


def _build_wheel(tmp: Path) -> Path:
    """``pip wheel --no-deps`` from a copy of the source tree (a stale build/ cannot leak in)."""
    source = tmp / "source"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
    out = tmp / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), "."],
         dict(os.environ), source, timeout=300)
    (wheel,) = out.glob("tcpkit-*.whl")
    return wheel


def _dependencies_without_tcpkit(tmp: Path) -> Path:
    """Links to every installed package of this environment except tcpkit itself."""
    site = Path(sysconfig.get_paths()["purelib"])
    deps = tmp / "deps"
    deps.mkdir()
    for entry in site.iterdir():
        name = entry.name.lower()
        if name.startswith(("tcpkit", "__editable__")) or name.endswith(".pth"):
            continue
        (deps / entry.name).symlink_to(entry)
    return deps


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("fresh")
    assert not tmp.resolve().is_relative_to(REPO)
    wheel = _build_wheel(tmp)
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], dict(os.environ), tmp)
    python = venv / "bin" / "python"
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp / "home"),
        "PYTHONPATH": str(_dependencies_without_tcpkit(tmp)),
        "TCPKIT_KEYS": str(tmp / "keys"),
        "TCPKIT_USER": "ada",
        "JUPYTER_DATA_DIR": str(tmp / "jupyter-data"),  # no kernel spec of the user's can win
        "JUPYTER_CONFIG_DIR": str(tmp / "jupyter-config"),
        "IPYTHONDIR": str(tmp / "ipython"),
        "MPLBACKEND": "Agg",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "CI": "1",
    }
    (tmp / "home").mkdir()
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
          "--quiet", str(wheel)], {**os.environ, "PYTHONPATH": ""}, tmp)
    _run([str(python), "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"], env, tmp)
    return venv, env


def test_the_wheel_is_the_only_tcpkit(fresh_env: tuple[Path, dict[str, str]]) -> None:
    venv, env = fresh_env
    where = _run([str(venv / "bin" / "python"), "-c",
                  "import importlib.metadata as m, tcpkit, tcpkit.release.scaffold as s; "
                  "print(tcpkit.__file__); print(m.distribution('tcpkit').locate_file('')); "
                  "print(s.template_text('component.toml')[:12])"], env, venv)
    module, dist, template = where.splitlines()
    site = venv / "lib"
    assert Path(module).is_relative_to(site) and Path(dist).is_relative_to(site)
    assert template == "[components."
    assert (venv / "bin" / "tcpkit").read_text().startswith(f"#!{venv / 'bin' / 'python'}")


def test_init_new_run_verify(fresh_env: tuple[Path, dict[str, str]]) -> None:
    venv, env = fresh_env
    project = venv.parent / "project"
    out = _run(["tcpkit", "init", str(project)], env, venv.parent)
    assert "tcpkit keys init ada" in out
    _run(["tcpkit", "keys", "init", "ada"], env, project)
    _run(["tcpkit", "new", "second", "--owner", "ada"], env, project)
    out = _run(["tcpkit", "run", "--profile", "quick"], env, project)
    assert "ok example        reached PRODUCTION" in out
    assert "ok second         reached PRODUCTION" in out
    assert (project / "production" / "second.py").is_file()
    out = _run(["tcpkit", "verify"], env, project)
    verified = [line.split()[1] for line in out.splitlines() if line.startswith("ok ")]
    assert {"production/example.py", "production/second.py"} <= set(verified)
    assert sum(name.startswith("gate-run/") for name in verified) == 8  # 2 components x 4 gates
    # the owner's own key: trusted after the first run registered the components, then usable
    out = _run(["tcpkit", "trust", "add", env["TCPKIT_KEYS"] + "/ada.pub", "--as", "ada"], env, project)
    assert "trusted ada" in out
    out = _run(["tcpkit", "lease", "acquire", "second", "--reason", "tuning", "--no-pid"], env, project)
    assert "held by ada" in out
    out = _run(["tcpkit", "status"], env, project)
    assert "PRODUCTION" in out and "ada" in out
    _run(["tcpkit", "audit", "verify"], env, project)
