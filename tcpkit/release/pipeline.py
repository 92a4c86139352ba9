"""The gate pipeline: papermill runs in gate order, criteria checked, every run recorded and signed.

For each selected component, gates run in order (DEVELOPMENT, TESTING,
STAGING, PRODUCTION): the component's notebook is executed by papermill with
that gate's parameters (kernel ``python3``, a per-cell execution limit and a
kernel start limit, so a run can fail but never hang), the metrics it recorded
are read back and checked against the gate's criteria, and the run is recorded
in the workspace with its input digests, the executed notebook and the HTML
report (both in the object store) and a DSSE attestation of the decision,
signed by the runner's key. A component advances one gate at a time and only
on a pass; a failure stops that component while the others go on. Passing
PRODUCTION freezes the component's exported module (:mod:`tcpkit.release.promote`).

A run whose combined input digest (notebook, parameters, exported module,
tcpkit version, gate definition, the frozen modules of the components it
depends on, and the environment of :mod:`tcpkit.release.runkey`: every source
file of the tcpkit package, every installed distribution, Python, the kernel
spec) equals that of a recorded run is not executed again: the recorded decision,
passed or failed, is reused (:mod:`tcpkit.release.run.reuse`, which also says which
failures run again), so an unchanged re-run costs seconds; ``force`` re-runs. A
configuration error (a parameter the notebook does not declare or of the wrong type, a
missing notebook) stops its component before any kernel starts, is noted in the
workspace for ``tcpkit status`` and leaves the recorded level and the frozen files as
they are. Components that depend on others start only once every dependency is frozen
and verifies.

Each run signs two statements over the notebook and the module and model it
would freeze (a SLSA verification summary and a gate result, see
:mod:`tcpkit.release.attestation`), kept as one bundle in the object store; each
names the previous gate's summary, so a component's four gates form one chain,
which freezing writes beside the frozen module (:mod:`tcpkit.release.chain`).
PRODUCTION freezes the module and the model its run recorded
(:func:`tcpkit.release.metrics.record_model`).

Components run in parallel (``jobs`` threads, each driving one papermill
kernel process), except runs marked ``exclusive`` in the pipeline file, which
run with nothing else in parallel; every run records the 1-minute load average
before and after it. The recording (database, store, signatures) happens on the
calling thread, one run at a time.

This module schedules; the parts live in :mod:`tcpkit.release.run` (parameters,
execution, recording and freezing, the index), and every path comes from one
:class:`tcpkit.release.project.Project`.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import os
import re
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tcpkit import __version__
from tcpkit.release.gates import (
    GATES,
    PROFILES,
    ComponentSpec,
    Pipeline,
    PipelineError,
    gate_index,
    load_pipeline,
    locate,
    missing_notebooks,
    sha256_json,
)
from tcpkit.release.names import COMPONENT_PATTERN
from tcpkit.release.project import PIPELINE_FILE, REPORTS_DIR, Project
from tcpkit.release.report import warm_up_renderer
from tcpkit.release.run.execute import (
    KERNEL,
    KERNEL_ARGUMENTS,
    START_TIMEOUT_S,
    Execution,
    Job,
    execute,
)
from tcpkit.release.run.execute import kernel_environment as _kernel_environment
from tcpkit.release.run.index import write_index
from tcpkit.release.run.params import ParameterError, check_parameters, notebook_parameters
from tcpkit.release.run.record import Outcome, Recorder
from tcpkit.release.run.reuse import reusable
from tcpkit.release.store import digest_bytes

__all__ = [
    "KERNEL",
    "KERNEL_ARGUMENTS",
    "PIPELINE_FILE",
    "REPORTS_DIR",
    "START_TIMEOUT_S",
    "GatePipeline",
    "Outcome",
    "ParameterError",
    "PipelineResult",
    "RunOptions",
    "check_parameters",
    "execute",
    "notebook_parameters",
    "run_pipeline",
    "runner_name",
    "slowest_runs",
    "progress_line",
    "standing",
    "summarize",
]

_RUNNER = re.compile(rf"^{COMPONENT_PATTERN}\Z")  # a runner is a key name


# --- values -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunOptions:
    """What ``tcpkit run`` was asked to do."""

    profile: str = "full"
    components: tuple[str, ...] = ()
    until: str = "PRODUCTION"
    force: bool = False
    jobs: int = 1

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"profile {self.profile!r} is not one of {', '.join(PROFILES)}")
        gate_index(self.until)
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or not 1 <= self.jobs <= 64:
            raise ValueError(f"jobs must be an integer from 1 to 64, got {self.jobs!r}")




@dataclass(frozen=True)
class PipelineResult:
    """The outcomes of one invocation, and how far each selected component got."""

    outcomes: tuple[Outcome, ...]
    reached: Mapping[str, str | None]
    """Per component, the last gate passed (executed or reused) in this invocation."""
    until: str
    index: Path | None
    elapsed_s: float
    levels: Mapping[str, str | None] = field(default_factory=dict)
    """Per component, the level the workspace records after this invocation (earlier passes count)."""
    frozen: tuple[str, ...] = ()
    """The components with a frozen module in ``production/`` after this invocation."""

    @property
    def ok(self) -> bool:
        """True only when every selected component reached the requested gate."""
        return all(level == self.until for level in self.reached.values())



# --- identities ---------------------------------------------------------------------------------


def runner_name() -> str:
    """The runner's signing identity: ``$TCPKIT_RUNNER`` or ``runner-<hostname>``."""
    env = os.environ.get("TCPKIT_RUNNER")
    if env:
        if not _RUNNER.match(env):
            raise ValueError(
                f"TCPKIT_RUNNER={env!r} is not a valid signer name (lower-case letters, digits, '-')"
            )
        return env
    host = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower()).strip("-") or "local"
    return f"runner-{host}"[:64].rstrip("-")


# --- progress -----------------------------------------------------------------------------------


class _Progress:
    """One tqdm bar over the runs on a terminal; plain log lines otherwise (CI, pipes)."""

    def __init__(self, total: int, stream: TextIO, enabled: bool | None = None) -> None:
        self.stream = stream
        interactive = stream.isatty() and not os.environ.get("CI")
        self.bar: Any = None
        if enabled if enabled is not None else interactive:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="run", file=stream, dynamic_ncols=True, leave=False)

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None and n > 0:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --- the runner ---------------------------------------------------------------------------------


class GatePipeline:
    """Runs the selected components of a project through the gates.

    Parameters
    ----------
    root : Path
        The project directory (``notebooks/pipeline.toml``, ``.tcpkit/``,
        ``production/``, ``reports/``).
    options : RunOptions
        Profile, selection, last gate, force, parallel jobs.
    stream : TextIO
        Where progress and log lines go (default stdout).
    """

    def __init__(self, root: Path, options: RunOptions, stream: TextIO | None = None,
                 progress: bool | None = None) -> None:
        self.project = Project.at(root)
        self.root = self.project.root
        self.options = options
        self.stream = stream if stream is not None else sys.stdout
        self.progress_enabled = progress
        self.pipeline: Pipeline = load_pipeline(self.project.pipeline_file, require_notebooks=False)
        unknown = [c for c in options.components if c not in self.pipeline.components]
        if unknown:
            raise PipelineError([
                f"unknown component {name!r} (the pipeline defines "
                f"{', '.join(self.pipeline.components)})" for name in unknown
            ])
        self.selected = [c for layer in self.pipeline.order() for c in layer
                         if not options.components or c in options.components]
        self.last = gate_index(options.until)
        self.missing = missing_notebooks(self.pipeline, self.selected)
        self.recorder = Recorder(self.project, self.pipeline)
        self._modules: dict[tuple[str, str], bytes] = {}  # (component, notebook digest) -> module
        self._warm = threading.Thread()  # replaced in run(): sets up nbconvert beside the first kernel

    def preflight(self) -> dict[str, list[str]]:
        """Check every selected gate's parameters against its notebook before running anything.

        Returns the errors per component; such a component fails without executing.
        """
        errors: dict[str, list[str]] = {}
        for name in self.selected:
            if name in self.missing:
                continue
            spec = self.pipeline.components[name]
            for gate in GATES[: self.last + 1]:
                gspec = spec.gates[gate]
                params = gspec.parameters_for(self.options.profile)
                table = ["components", name, "gates", gate]

                quick = set(gspec.quick) if self.options.profile == "quick" else set()
                where = functools.partial(self._where, table, quick)
                found = check_parameters(spec.notebook, params, where)
                if found:
                    errors.setdefault(name, []).extend(found)
        return errors

    def _where(self, table: list[str], quick: set[str], param: str) -> str:
        return locate(self.pipeline.path, [*table, "quick" if param in quick else "parameters"], param)

    def run(self) -> PipelineResult:
        """Run the pipeline; returns the outcomes (failures are outcomes, not exceptions)."""
        from tcpkit.release.keys import KeyError_, runner_signer
        from tcpkit.release.workspace import Workspace

        start = time.monotonic()
        for name, problems in self.preflight().items():
            self.missing[name] = problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
        runner = runner_name()
        trust_dir = self.project.trust_dir
        ws = Workspace.open(self.root)
        try:
            try:  # trust is granted, not taken: only an empty trust list lets the runner trust itself
                signer, note = runner_signer(runner, trust_dir=trust_dir)
            except KeyError_ as exc:
                raise PipelineError([str(exc)]) from None
            if note is not None:
                print(f"note: {note}", file=self.stream, flush=True)
            ws.add_signer(signer)  # the pipeline acts as its runner: no researcher's key is needed
            for name, spec in self.pipeline.components.items():
                ws.register_component(name, spec.notebook.name, spec.owner, spec.contributors,
                                      actor=runner)
            for name in self.selected:  # so that tcpkit status says why the level did not move
                ws.note_configuration_error(name, self.missing.get(name), actor=runner)
            # the first report page renders faster once nbconvert is set up, which this thread
            # does while the first kernel starts (and nothing of it when every gate is reused)
            self._warm = threading.Thread(target=warm_up_renderer, name="tcpkit-warm-report", daemon=True)
            with _kernel_environment(self.root), tempfile.TemporaryDirectory(prefix="tcpkit-run-") as tmp:
                outcomes = self._drive(ws, signer, runner, Path(tmp))
            if self._warm.ident is not None:  # started with the first kernel
                self._warm.join()
            reached = self._reached(outcomes)
            index = self._write_index(ws, outcomes)
            levels = {row.name: row.level for row in ws.status() if row.name in self.selected}
        finally:
            ws.close()
        frozen = tuple(name for name in self.selected if self.project.frozen_module(name).is_file())
        return PipelineResult(tuple(outcomes), reached, self.options.until, index, time.monotonic() - start,
                              levels, frozen)

    # -- scheduling ----------------------------------------------------------------------------
    def _drive(self, ws: Any, signer: Any, runner: str, workdir: Path) -> list[Outcome]:
        outcomes: list[Outcome] = []
        steps = len(self.selected) * (self.last + 1)
        progress = _Progress(steps, self.stream, self.progress_enabled)
        state: dict[str, str] = {}  # component -> waiting | running | done | stopped
        next_gate: dict[str, int] = dict.fromkeys(self.selected, 0)
        futures: dict[cf.Future[Execution], str] = {}
        exclusive: set[cf.Future[Execution]] = set()
        pending: list[Job] = []
        counter = [0]
        self.recorder.bundles = {name: [] for name in self.selected}

        def log(outcome: Outcome) -> None:
            counter[0] += 1
            outcomes.append(outcome)
            progress.line(progress_line(counter[0], outcome))
            progress.advance()

        def stop(component: str) -> None:
            state[component] = "stopped"
            progress.advance(self.last + 1 - next_gate[component] - 1)

        def advance(pool: cf.ThreadPoolExecutor, component: str) -> None:
            """Reuse what a recorded run with the same key decided; queue the next gate that must run."""
            spec = self.pipeline.components[component]
            while next_gate[component] <= self.last:
                gate = GATES[next_gate[component]]
                job = self._job(spec, gate, runner, workdir)
                previous = None if self.options.force else ws.find_run(component, gate, job.input_digest)
                if previous is not None and not reusable(previous):
                    previous = None  # a failure of the machine, not of the notebook: run it again
                bundle = self.recorder.stored_bundle(ws, previous) if previous is not None else None
                if previous is not None and previous.decision == "failed":
                    log(self.recorder.reused(job, previous, bundle))
                    stop(component)
                    return
                if bundle is not None and gate == "PRODUCTION" and not self.recorder.refreeze(
                        ws, signer, job, previous, bundle):
                    bundle = None
                if bundle is None:
                    state[component] = "running"
                    pending.append(job)
                    return
                self.recorder.bundles[component].append(bundle)
                log(self.recorder.reused(job, previous, bundle))
                next_gate[component] += 1
            state[component] = "done"

        def dispatch(pool: cf.ThreadPoolExecutor) -> None:
            """Start queued runs while a worker is free, the highest component ``priority`` first
            (ties in queue order); an exclusive run waits for an idle machine and holds back
            everything behind it until it is done."""
            while pending and not exclusive and len(futures) < self.options.jobs:
                first = max(range(len(pending)),
                            key=lambda i: (self.pipeline.components[pending[i].component].priority, -i))
                job = pending[first]
                if job.spec.exclusive and futures:
                    return
                pending.pop(first)
                if self._warm.ident is None:
                    self._warm.start()
                future = pool.submit(execute, job, signer.name)
                futures[future] = job.component
                if job.spec.exclusive:
                    exclusive.add(future)

        def start_ready(pool: cf.ThreadPoolExecutor) -> None:
            for component in self.selected:
                if state.get(component) is not None:
                    continue
                if component in self.missing:
                    state[component] = "stopped"
                    log(Outcome(component, GATES[0], "error", self.missing[component]))
                    progress.advance(self.last)
                    continue
                deps = self.pipeline.components[component].depends_on
                if any(state.get(d) in ("waiting", "running") for d in deps if d in self.selected):
                    state[component] = "waiting"
                    continue
                problem = self._unfrozen(deps)
                if problem:
                    state[component] = "stopped"
                    log(Outcome(component, GATES[0], "blocked", problem))
                    progress.advance(self.last)
                    continue
                advance(pool, component)

        with cf.ThreadPoolExecutor(max_workers=self.options.jobs, thread_name_prefix="tcpkit-gate") as pool:
            start_ready(pool)
            dispatch(pool)
            while futures:
                done, _ = cf.wait(list(futures), return_when=cf.FIRST_COMPLETED)
                for future in done:
                    component = futures.pop(future)
                    exclusive.discard(future)
                    execution = future.result()
                    outcome = self.recorder.record(ws, signer, runner, execution)
                    log(outcome)
                    if outcome.status == "passed":
                        next_gate[component] += 1
                        advance(pool, component)
                    else:
                        stop(component)
                # components waiting for dependencies that have now finished
                for component, status in list(state.items()):
                    if status == "waiting":
                        del state[component]
                start_ready(pool)
                dispatch(pool)
        progress.close()
        return outcomes

    def _unfrozen(self, deps: Sequence[str]) -> str:
        from tcpkit.release.promote import FrozenModuleError, verify_frozen

        missing = []
        for dep in deps:
            try:
                verify_frozen(dep, self.root)
            except FrozenModuleError as exc:
                frozen = self.project.frozen_module(dep)
                missing.append(f"{dep} (not frozen)" if not frozen.is_file() else f"{dep} ({exc})")
        if missing:
            return "not run: waiting for its dependencies to be frozen and verified: " + "; ".join(missing)
        return ""

    # -- inputs --------------------------------------------------------------------------------
    def _job(self, spec: ComponentSpec, gate: str, runner: str, workdir: Path) -> Job:
        from tcpkit.release.promote import build_module
        from tcpkit.release.runkey import environment_inputs

        gspec = spec.gates[gate]
        params = gspec.parameters_for(self.options.profile)
        notebook_bytes = spec.notebook.read_bytes()
        notebook_digest = digest_bytes(notebook_bytes)
        module = self._modules.get((spec.name, notebook_digest))
        if module is None:  # one build per notebook version: its four gates share it
            module = build_module(spec.notebook, display_name=f"notebooks/{spec.notebook.name}")
            self._modules[(spec.name, notebook_digest)] = module
        inputs = {
            "notebook": notebook_digest,
            "parameters": sha256_json(params),
            "module": digest_bytes(module),
            "tcpkit": digest_bytes(__version__.encode("utf-8")),
            "gate": gspec.digest(self.options.profile),
        }
        groups = environment_inputs(KERNEL, KERNEL_ARGUMENTS)
        inputs.update({group.name: group.digest for group in groups})
        details = {group.name: group.items for group in groups}
        for dep in spec.depends_on:
            for key, frozen in ((f"frozen:{dep}", self.project.frozen_module(dep)),
                                (f"frozen-model:{dep}", self.project.frozen_model(dep))):
                if frozen.is_file():
                    inputs[key] = digest_bytes(frozen.read_bytes())
        return Job(spec.name, gate, spec.notebook, params, gspec, inputs, sha256_json(inputs), module,
                    self.options.profile, runner, workdir, details)
    def _reached(self, outcomes: Sequence[Outcome]) -> dict[str, str | None]:
        reached: dict[str, str | None] = dict.fromkeys(self.selected)
        for outcome in outcomes:
            if outcome.status == "passed":
                reached[outcome.component] = outcome.gate
        return reached

    # -- index ---------------------------------------------------------------------------------
    def _write_index(self, ws: Any, outcomes: Sequence[Outcome]) -> Path:
        return write_index(self.project, self.pipeline, ws, outcomes)


def run_pipeline(root: str | Path, options: RunOptions | None = None, *, stream: TextIO | None = None,
                 progress: bool | None = None) -> PipelineResult:
    """Run the gate pipeline of the project at ``root`` (see :class:`GatePipeline`)."""
    return GatePipeline(Path(root), options or RunOptions(), stream, progress).run()


def slowest_runs(outcomes: Sequence[Outcome], n: int = 5) -> list[Outcome]:
    """The ``n`` runs executed in this invocation (passed or failed) that took longest, slowest first."""
    executed = [o for o in outcomes if o.executed and o.duration_s > 0]
    return sorted(executed, key=lambda o: o.duration_s, reverse=True)[:n]


def progress_line(number: int, outcome: Outcome) -> str:
    """One log line per outcome: decision, then the elapsed time of an executed run or "reused"."""
    if outcome.executed:
        detail = f"{outcome.duration_s:6.1f} s"
    elif outcome.reused:
        detail = "  reused"
    else:
        detail = " " * 8
    return (f"[{number:>2}] {outcome.component:<14} {outcome.gate:<11} {outcome.status:<8} {detail}  "
            f"{outcome.reason}")


def standing(result: PipelineResult, component: str) -> str:
    """Where ``component`` stands after ``result``, in words that agree with ``tcpkit status``."""
    reached = result.reached.get(component)
    if reached == result.until:
        return f"reached {reached}"
    last = [o for o in result.outcomes if o.component == component]
    outcome = last[-1] if last else None
    if outcome is not None and outcome.status == "error":
        text = f"configuration error, no gate ran: {outcome.reason}"
    elif outcome is not None and outcome.status == "blocked":
        text = "blocked, no gate ran: a dependency is not frozen"
    elif outcome is not None and outcome.status == "failed":
        text = (f"reached {reached or 'no gate'}, failed {outcome.gate}"
                + (" (reused)" if outcome.reused else ""))
    else:
        text = f"reached {reached or 'no gate'}"
    recorded = result.levels.get(component)
    if recorded is not None and recorded != reached:
        frozen = f", production/{component}.py" if component in result.frozen else ""
        text += f"; its recorded level {recorded}{frozen} unchanged"
    return text


def summarize(result: PipelineResult) -> str:
    """A few closing lines: where each component stands, the counts, the slowest runs, the index."""
    lines = []
    for component in result.reached:
        mark = "ok " if result.reached[component] == result.until else "-- "
        lines.append(f"{mark}{component:<14} {standing(result, component)}")
    counts = {s: sum(1 for o in result.outcomes if o.status == s) for s in ("passed", "failed", "blocked")}
    errors = sum(1 for o in result.outcomes if o.status == "error")
    reused = sum(1 for o in result.outcomes if o.reused)
    executed = sum(1 for o in result.outcomes if o.executed)
    lines.append(", ".join(f"{v} {k}" for k, v in counts.items())
                 + f", {errors} configuration error{'' if errors == 1 else 's'}"
                 + f" ({executed} executed, {reused} reused) in {result.elapsed_s:.1f} s")
    slowest = slowest_runs(result.outcomes)
    if slowest:
        lines.append(f"slowest {'run' if len(slowest) == 1 else f'{len(slowest)} runs'}: " + ", ".join(
            f"{o.component} {o.gate} {o.duration_s:.1f} s" for o in slowest))
    if result.index is not None:
        lines.append(f"report: {result.index}")
    return "\n".join(lines)
