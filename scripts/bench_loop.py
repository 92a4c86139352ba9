"""The researcher's loop, measured: where one gate run's time goes, and the three loop targets.

Two modes, both printing a table and (``--json FILE``) writing the numbers:

``phases COMPONENT [--profile quick|full]``
    Runs the DEVELOPMENT gate of one component in-process through :func:`tcpkit.release.pipeline.run_pipeline`
    (``--rerun``, one job) with timers around each step of the pipeline, so nothing is
    modelled: process start and ``import tcpkit.cli`` (a separate interpreter), the
    pipeline's setup (workspace, signer, registration), the parameter check (papermill's
    ``inspect_notebook``: the first ``import nbformat``), the run key, papermill's own
    import, the kernel start and shutdown (papermill's timestamps in the executed notebook),
    the notebook's cells, the report page (nbconvert) and the recording and index. The
    notebook's own imports are measured beside it: every top-level ``import`` of its code
    cells, run one by one in a fresh kernel, summed per top-level package.

``targets [--component NAME]``
    The three loop times of issue 14, each a ``tcpkit run`` subprocess in a fresh copy of
    the project (``notebooks/`` copied into a temporary directory, an empty workspace):
    ``--profile quick`` for every component, the same command again with nothing changed,
    and one component's DEVELOPMENT gate with ``--rerun`` (full profile by default, as the
    README states it; ``--dev-profile quick`` for the researcher's quick loop). Each row gives the wall time, the target and the 1-minute load average
    before it, since the machine is shared.

Run it from the repository root with the project's interpreter::

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_loop.py phases performance
    PYTHONPATH=$PWD .venv/bin/python scripts/bench_loop.py targets

Timings are reported, never asserted: they move with the load of the machine.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGETS_S = {"quick": 60.0, "rerun": 3.0, "development": 10.0}


@dataclass(frozen=True)
class Phase:
    """One measured step: its name, seconds, and what it covers."""

    name: str
    seconds: float
    note: str = ""


@dataclass
class _Timers:
    """Seconds per wrapped step (a step may run more than once)."""

    seconds: dict[str, float] = field(default_factory=dict)
    captured: list[Any] = field(default_factory=list)

    def wrap(self, name: str, fn: Callable[..., Any], capture: bool = False) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            if capture:
                self.captured.append(result)
            return result
        return timed


@contextlib.contextmanager
def _patched(obj: Any, attr: str, value: Any) -> Iterator[None]:
    saved = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, saved)


def _interpreter_start() -> float:
    """Seconds for a new interpreter to ``import tcpkit.cli`` (what every command pays first)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import tcpkit.cli"], check=True, env=_env())
    return time.perf_counter() - start


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _stamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def notebook_imports(notebook: Path) -> list[str]:
    """Every top-level import statement of the notebook's code cells, in order, once each."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    found: list[str] = []
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        source = "".join(cell.get("source", []))
        source = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Import | ast.ImportFrom) and not (
                    isinstance(node, ast.ImportFrom) and node.module == "__future__"):
                text = ast.unparse(node)
                if text not in found:
                    found.append(text)
    return found


def import_costs(notebook: Path, kernel: str = "python3") -> float:
    """Seconds the notebook's imports take in a fresh kernel, run one statement at a time."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name=kernel, extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
                              cwd=str(notebook.parent))
    total = 0.0
    try:
        kc.execute_interactive("import time", timeout=60, output_hook=lambda m: None)
        for statement in notebook_imports(notebook):
            code = f"_t = time.perf_counter()\n{statement}\n_t = time.perf_counter() - _t"
            kc.execute_interactive(code, timeout=120, output_hook=lambda m: None)
            reply = kc.execute_interactive("", user_expressions={"t": "_t"}, timeout=60,
                                           output_hook=lambda m: None)
            total += float(reply["content"]["user_expressions"]["t"]["data"]["text/plain"])
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return total


def import_attribution(notebook: Path, floor_s: float = 0.02) -> dict[str, float]:
    """Seconds of the notebook's imports per top-level package (``python -X importtime``: each
    module's own time, summed over the package), largest first; packages under ``floor_s`` left out.

    A separate interpreter, not the kernel, so the split is exact whichever statement first
    pulls a library in (``from tcpkit.detect.attacks import ...`` loads scipy and statsmodels).
    """
    code = "\n".join(notebook_imports(notebook))
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True,
                          text=True, env=_env(), cwd=notebook.parent, check=True)
    per: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, _cumulative, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        top = name.split(".")[0]
        if top == "tcpkit":
            top = ".".join(name.split(".")[:3])
        per[top] = per.get(top, 0.0) + int(own) / 1e6
    return dict(sorted(((k, v) for k, v in per.items() if v >= floor_s), key=lambda kv: -kv[1]))


def _project_copy(tmp: Path) -> Path:
    """A fresh project: the repository's notebooks in ``tmp/project`` (no workspace, no reports)."""
    root = tmp / "project"
    shutil.copytree(ROOT / "notebooks", root / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    return root


def phases(component: str, profile: str) -> list[Phase]:
    """The DEVELOPMENT run of ``component``, in-process, split into its steps (see the module docstring)."""
    cli_start = _interpreter_start()
    with tempfile.TemporaryDirectory(prefix="tcpkit-loop-") as tmp:
        root = _project_copy(Path(tmp))
        from tcpkit.release.run.startup import skip_unused_imports

        skip_unused_imports()  # as the tcpkit command does first
        start = time.perf_counter()
        import papermill  # noqa: F401  the first import of papermill, nbformat and jsonschema

        import tcpkit.release.pipeline as pipeline
        import tcpkit.release.report as report
        import tcpkit.release.run.execute as execute
        import tcpkit.release.run.record as record
        import tcpkit.release.runkey as runkey
        first_imports = time.perf_counter() - start

        timers = _Timers()
        paper = sys.modules["papermill"]
        with contextlib.ExitStack() as stack:
            stack.enter_context(_patched(pipeline, "check_parameters",
                                         timers.wrap("parameter check", pipeline.check_parameters)))
            stack.enter_context(_patched(runkey, "environment_inputs",
                                         timers.wrap("run key", runkey.environment_inputs)))
            stack.enter_context(_patched(paper, "execute_notebook",
                                         timers.wrap("papermill", paper.execute_notebook)))
            stack.enter_context(_patched(report, "render_run_report",
                                         timers.wrap("report page", report.render_run_report)))
            stack.enter_context(_patched(pipeline, "execute", timers.wrap("execute", execute.execute,
                                                                          capture=True)))
            stack.enter_context(_patched(record.Recorder, "record",
                                         timers.wrap("record", record.Recorder.record)))
            stack.enter_context(_patched(pipeline, "write_index", timers.wrap("index", pipeline.write_index)))
            options = pipeline.RunOptions(profile=profile, components=(component,), until="DEVELOPMENT",
                                          force=True, jobs=1)
            start = time.perf_counter()
            result = pipeline.run_pipeline(root, options, stream=io.StringIO(), progress=False)
            total = time.perf_counter() - start
        if not timers.captured:
            raise SystemExit(f"{component} DEVELOPMENT did not execute: {[o.reason for o in result.outcomes]}")
        if len(timers.captured) != 1:
            raise SystemExit(f"expected one execution, got {len(timers.captured)}")
        ex = timers.captured[0]
        notebook = json.loads(ex.executed.decode("utf-8")) if ex.executed else None
        import_s = import_costs(ex.job.notebook)
        attribution = import_attribution(ex.job.notebook)

    s = timers.seconds
    out = [Phase("interpreter start + import tcpkit.cli", cli_start, "a separate interpreter")]
    out.append(Phase("first import of papermill/nbformat + tcpkit.release", first_imports,
                     "in the command's process"))
    papermill_s = s.get("papermill", 0.0)
    if notebook is not None:
        meta = notebook["metadata"]["papermill"]
        cells = [c for c in notebook["cells"] if c["cell_type"] == "code"
                 and c["metadata"].get("papermill", {}).get("start_time")]
        first = _stamp(cells[0]["metadata"]["papermill"]["start_time"])
        last = _stamp(cells[-1]["metadata"]["papermill"]["end_time"])
        kernel_start = (first - _stamp(meta["start_time"])).total_seconds()
        cell_s = sum(float(c["metadata"]["papermill"]["duration"] or 0.0) for c in cells)
        notebook_imports_s = import_s
        out.append(Phase("kernel start", kernel_start, "papermill start -> first cell"))
        out.append(Phase("notebook imports (in the kernel)", notebook_imports_s,
                         "by package: " + ", ".join(f"{k} {v:.2f}" for k, v in attribution.items())))
        out.append(Phase("notebook work (cells minus imports)", cell_s - notebook_imports_s,
                         f"{len(cells)} code cells, {cell_s:.2f} s in all"))
        out.append(Phase("kernel shutdown + papermill bookkeeping",
                         papermill_s - kernel_start - (last - first).total_seconds(), ""))
    out.append(Phase("report page (nbconvert)", s.get("report page", 0.0), ""))
    out.append(Phase("metrics read-back", s.get("execute", 0.0) - papermill_s - s.get("report page", 0.0), ""))
    out.append(Phase("parameter check (papermill inspect)", s.get("parameter check", 0.0), ""))
    out.append(Phase("run key (environment digests)", s.get("run key", 0.0), ""))
    out.append(Phase("recording (store, sign, database)", s.get("record", 0.0), ""))
    out.append(Phase("index page", s.get("index", 0.0), ""))
    accounted = sum(s.get(k, 0.0) for k in ("parameter check", "execute", "record", "index"))
    out.append(Phase("setup (workspace, signer, registration)", total - accounted, ""))
    out.append(Phase("total (run_pipeline)", total, f"plus {cli_start + first_imports:.2f} s before it"))
    return out


def _tcpkit(root: Path, *args: str) -> tuple[float, str, float | None]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tcpkit", "run", "--root", str(root), *args],
                          capture_output=True, text=True, env=_env(), cwd=root)
    elapsed = time.perf_counter() - start
    return elapsed, done.stdout + done.stderr, load


def targets(components: list[str], dev_profile: str) -> list[dict[str, Any]]:
    """The three loop times, each a ``tcpkit run`` subprocess in a fresh project copy."""
    rows: list[dict[str, Any]] = []
    steps: list[tuple[str, str, tuple[str, ...]]] = [
        ("quick", "tcpkit run --profile quick (fresh workspace)", ("--profile", "quick")),
        ("rerun", "tcpkit run --profile quick again, nothing changed", ("--profile", "quick")),
    ]
    for component in components:
        steps.append(("development", f"tcpkit run --profile {dev_profile} --component {component} "
                      "--until DEVELOPMENT --rerun",
                      ("--profile", dev_profile, "--component", component, "--until", "DEVELOPMENT",
                       "--rerun")))
    with tempfile.TemporaryDirectory(prefix="tcpkit-loop-") as tmp:
        root = _project_copy(Path(tmp))
        for key, what, args in steps:
            elapsed, output, load = _tcpkit(root, *args)
            lines = [line for line in output.splitlines() if line.startswith("[")]
            tail = [line for line in output.splitlines() if " in " in line and "passed" in line]
            rows.append({"key": key, "what": what, "seconds": round(elapsed, 1), "target_s": TARGETS_S[key],
                         "met": elapsed <= TARGETS_S[key], "runs": len(lines),
                         "summary": tail[-1] if tail else "", "load1_before": load, "lines": lines})
            print(f"{what}: {elapsed:.1f} s (target {TARGETS_S[key]:g} s, load {load}) "
                  f"{tail[-1] if tail else ''}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("phases", help="where one gate run's time goes")
    p.add_argument("component")
    p.add_argument("--profile", choices=("quick", "full"), default="full")
    p.add_argument("--json", type=Path, default=None)
    t = sub.add_parser("targets", help="the three loop times against their targets")
    t.add_argument("--component", action="append", default=None, metavar="NAME",
                   help="a component for a DEVELOPMENT row (repeatable; default: performance)")
    t.add_argument("--dev-profile", choices=("quick", "full"), default="full",
                   help="profile of the DEVELOPMENT rows (default full, as the README states them)")
    t.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    if args.mode == "phases":
        found = phases(args.component, args.profile)
        for phase in found:
            print(f"{phase.name:<48} {phase.seconds:7.2f} s  {phase.note}")
        data: Any = [asdict(p) for p in found]
    else:
        data = targets(args.component or ["performance"], args.dev_profile)
    if args.json is not None:
        args.json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
