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
tcpkit version, gate definition, and the frozen modules of the components it
depends on) equals that of an earlier passing run is skipped, so an unchanged
re-run costs seconds; ``force`` re-runs. Components that depend on others start
only once every dependency is frozen and verifies.

Components run in parallel (``jobs`` threads, each driving one papermill
kernel process); the recording (database, store, signatures) happens on the
calling thread, one run at a time.
"""

from __future__ import annotations

import ast
import concurrent.futures as cf
import contextlib
import functools
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from tcpkit import __version__
from tcpkit.release.gates import (
    GATES,
    PROFILES,
    ComponentSpec,
    CriterionResult,
    GateSpec,
    Pipeline,
    PipelineError,
    evaluate,
    gate_index,
    load_pipeline,
    locate,
    missing_notebooks,
    sha256_json,
)
from tcpkit.release.names import COMPONENT_PATTERN
from tcpkit.release.report import RunSummary
from tcpkit.release.store import digest_bytes

PIPELINE_FILE = Path("notebooks") / "pipeline.toml"
REPORTS_DIR = "reports"
KERNEL = "python3"
# The kernel's own log (a TCP-transport warning on every start, a note when it is
# interrupted at shutdown) would be printed between the progress lines; what a run
# did or why it failed comes from the executed notebook, never from that log.
KERNEL_ARGUMENTS = ("--IPKernelApp.log_level=CRITICAL",)
START_TIMEOUT_S = 120.0
_RUNNER = re.compile(rf"^{COMPONENT_PATTERN}\Z")  # a runner is a key name


class ParameterError(PipelineError):
    """Gate parameters that a notebook's ``parameters`` cell does not declare."""


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
class Outcome:
    """What happened to one component at one gate in this invocation."""

    component: str
    gate: str
    status: str  # passed | failed | skipped | blocked
    reason: str
    summary: RunSummary | None = None
    duration_s: float = 0.0


@dataclass(frozen=True)
class PipelineResult:
    """The outcomes of one invocation, and how far each selected component got."""

    outcomes: tuple[Outcome, ...]
    reached: Mapping[str, str | None]
    until: str
    index: Path | None
    elapsed_s: float

    @property
    def ok(self) -> bool:
        """True only when every selected component reached the requested gate."""
        return all(level == self.until for level in self.reached.values())


@dataclass(frozen=True)
class _Job:
    component: str
    gate: str
    notebook: Path
    parameters: Mapping[str, Any]
    spec: GateSpec
    inputs: Mapping[str, str]
    input_digest: str
    module: bytes
    profile: str
    runner: str
    workdir: Path


@dataclass(frozen=True)
class _Execution:
    job: _Job
    started_at: str
    duration_s: float
    executed: bytes | None
    metrics: Mapping[str, Any]
    results: tuple[CriterionResult, ...]
    error: str | None
    error_cell: str | None
    passed: bool
    page: bytes = field(repr=False, default=b"")


# --- parameters ---------------------------------------------------------------------------------


def notebook_parameters(notebook: Mapping[str, Any]) -> set[str] | None:
    """Names assigned in the notebook's cell tagged ``parameters``; None when it has none."""
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code" or "parameters" not in (cell.get("metadata", {}).get("tags") or []):
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(source)
        try:
            tree = ast.parse(source)
        except SyntaxError as exc:
            raise ParameterError([f"the parameters cell is not valid Python: {exc.msg} (line {exc.lineno})"]) from None
        names: set[str] = set()
        for node in tree.body:
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = list(node.targets)
            elif isinstance(node, ast.AnnAssign | ast.AugAssign):
                targets = [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name):
                        names.add(sub.id)
        return names
    return None


def check_parameters(notebook_path: Path, parameters: Mapping[str, Any],
                     where: Callable[[str], str]) -> list[str]:
    """Errors for parameters that the notebook does not declare (empty list when all is well).

    ``where(name)`` says where parameter ``name`` is defined (file, line, key).
    """
    import nbformat

    if not parameters:
        return []
    try:
        notebook = nbformat.read(notebook_path, as_version=4)
    except Exception as exc:  # nbformat raises several unrelated types
        return [f"notebook {notebook_path} cannot be read: {exc}"]
    try:
        declared = notebook_parameters(notebook)
    except ParameterError as exc:
        return [f"{notebook_path.name}: {exc}"]
    if declared is None:
        return [
            f"{where(sorted(parameters)[0])}: notebook {notebook_path.name} has no cell tagged "
            f"'parameters', so it cannot take {', '.join(sorted(parameters))}"
        ]
    return [
        f"{where(name)}: parameter {name!r} is not defined in the parameters cell of "
        f"{notebook_path.name} (it defines {', '.join(sorted(declared)) or 'nothing'})"
        for name in sorted(set(parameters) - declared)
    ]


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


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- execution (worker threads) -----------------------------------------------------------------


def _describe_error(exc: BaseException, timeout_s: float) -> tuple[str, str | None]:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        source = exc.source if isinstance(exc.source, str) else "".join(exc.source or [])
        lines = source.strip().splitlines()
        shown = "\n".join(lines[:12]) + ("\n..." if len(lines) > 12 else "")
        return f"{exc.ename}: {exc.evalue}", f"#{exc.cell_index} (In [{exc.exec_count}])\n{shown}"
    name = type(exc).__name__
    if "Timeout" in name or isinstance(exc, TimeoutError):
        return f"{name}: a cell ran longer than the gate's limit of {timeout_s:g} s ({exc})", None
    if "DeadKernel" in name:
        return f"{name}: the kernel died during execution ({exc})", None
    return f"{name}: {exc}", None


def execute(job: _Job, signer_label: str) -> _Execution:
    """Run one gate: papermill, metrics, criteria, and the rendered report (no recording)."""
    import nbformat
    import papermill

    from tcpkit.release.metrics import MetricError, read_metrics
    from tcpkit.release.report import render_run_report

    started_at = _now()
    start = time.monotonic()
    output = job.workdir / f"{job.component}-{job.gate}.ipynb"
    error: str | None = None
    error_cell: str | None = None
    try:
        papermill.execute_notebook(
            str(job.notebook),
            str(output),
            parameters=dict(job.parameters),
            kernel_name=KERNEL,
            progress_bar=False,
            log_output=False,
            request_save_on_cell_execute=False,
            start_timeout=int(START_TIMEOUT_S),
            execution_timeout=int(max(1, round(job.spec.timeout_s))),
            cwd=str(job.notebook.parent),
            extra_arguments=list(KERNEL_ARGUMENTS),
        )
    except Exception as exc:  # every failure mode of a run is a failed gate, never a crash
        error, error_cell = _describe_error(exc, job.spec.timeout_s)
    duration = time.monotonic() - start
    executed = output.read_bytes() if output.is_file() else None
    notebook = None
    metrics: Mapping[str, Any] = {}
    if executed is not None:
        try:
            notebook = nbformat.reads(executed.decode("utf-8"), as_version=4)
            metrics = read_metrics(notebook)
        except (MetricError, ValueError) as exc:
            error = error or f"the executed notebook cannot be read: {exc}"
    results = list(evaluate(job.spec.criteria, metrics).results)
    if job.gate == "PRODUCTION" and not job.module:
        results.append(CriterionResult(
            "export module", "!=", False, None, False,
            "not evaluated: the notebook has no '#| export' cells, so there is nothing to freeze",
        ))
    passed = error is None and bool(results) and all(r.ok for r in results)
    summary = _summary(job, started_at, duration, metrics, tuple(results), error, error_cell,
                       "passed" if passed else "failed", signer_label)
    page = render_run_report(summary, notebook)
    return _Execution(job, started_at, duration, executed, metrics, tuple(results), error, error_cell,
                      passed, page)


def _summary(job: _Job, started_at: str, duration: float, metrics: Mapping[str, Any],
             results: Sequence[CriterionResult], error: str | None, error_cell: str | None,
             decision: str, signer: str) -> RunSummary:
    return RunSummary(
        component=job.component,
        gate=job.gate,
        decision=decision,
        profile=job.profile,
        criteria=tuple(r.as_dict() for r in results),
        metrics=dict(metrics),
        inputs=dict(job.inputs),
        input_digest=job.input_digest,
        parameters=dict(job.parameters),
        runner=job.runner,
        signer=signer,
        started_at=started_at,
        duration_s=duration,
        error=error,
        error_cell=error_cell,
        report=f"{job.gate}/{job.component}.html",
    )


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
        self.root = Path(root).resolve()
        self.options = options
        self.stream = stream if stream is not None else sys.stdout
        self.progress_enabled = progress
        self.pipeline: Pipeline = load_pipeline(self.root / PIPELINE_FILE, require_notebooks=False)
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
        trust_dir = self.root / ".tcpkit" / "trust"
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
            with _kernel_environment(self.root), tempfile.TemporaryDirectory(prefix="tcpkit-run-") as tmp:
                outcomes = self._drive(ws, signer, runner, Path(tmp))
            reached = self._reached(outcomes)
            index = self._write_index(ws, outcomes)
        finally:
            ws.close()
        return PipelineResult(tuple(outcomes), reached, self.options.until, index, time.monotonic() - start)

    # -- scheduling ----------------------------------------------------------------------------
    def _drive(self, ws: Any, signer: Any, runner: str, workdir: Path) -> list[Outcome]:
        outcomes: list[Outcome] = []
        steps = len(self.selected) * (self.last + 1)
        progress = _Progress(steps, self.stream, self.progress_enabled)
        state: dict[str, str] = {}  # component -> waiting | running | done | stopped
        next_gate: dict[str, int] = dict.fromkeys(self.selected, 0)
        futures: dict[cf.Future[_Execution], str] = {}
        counter = [0]

        def log(outcome: Outcome) -> None:
            counter[0] += 1
            outcomes.append(outcome)
            detail = f" {outcome.duration_s:6.1f} s" if outcome.status in ("passed", "failed") else " " * 9
            progress.line(f"[{counter[0]:>2}] {outcome.component:<14} {outcome.gate:<11} "
                          f"{outcome.status:<8}{detail}  {outcome.reason}")
            progress.advance()

        def stop(component: str) -> None:
            state[component] = "stopped"
            progress.advance(self.last + 1 - next_gate[component] - 1)

        def advance(pool: cf.ThreadPoolExecutor, component: str) -> None:
            """Skip what can be skipped; submit the next gate that must run."""
            spec = self.pipeline.components[component]
            while next_gate[component] <= self.last:
                gate = GATES[next_gate[component]]
                job = self._job(spec, gate, runner, workdir)
                previous = None if self.options.force else ws.find_passing_run(component, gate, job.input_digest)
                if previous is None or (gate == "PRODUCTION" and not self._refreeze(ws, signer, job)):
                    state[component] = "running"
                    futures[pool.submit(execute, job, signer.name)] = component
                    return
                log(self._skipped(job, previous))
                next_gate[component] += 1
            state[component] = "done"

        def start_ready(pool: cf.ThreadPoolExecutor) -> None:
            for component in self.selected:
                if state.get(component) is not None:
                    continue
                if component in self.missing:
                    state[component] = "stopped"
                    log(Outcome(component, GATES[0], "failed", self.missing[component]))
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
            while futures:
                done, _ = cf.wait(list(futures), return_when=cf.FIRST_COMPLETED)
                for future in done:
                    component = futures.pop(future)
                    execution = future.result()
                    outcome = self._record(ws, signer, runner, execution)
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
        progress.close()
        return outcomes

    def _unfrozen(self, deps: Sequence[str]) -> str:
        from tcpkit.release.promote import FrozenModuleError, verify_frozen

        missing = []
        for dep in deps:
            try:
                verify_frozen(dep, self.root)
            except FrozenModuleError as exc:
                frozen = self.root / "production" / f"{dep}.py"
                missing.append(f"{dep} (not frozen)" if not frozen.is_file() else f"{dep} ({exc})")
        if missing:
            return "not run: waiting for its dependencies to be frozen and verified: " + "; ".join(missing)
        return ""

    # -- inputs --------------------------------------------------------------------------------
    def _job(self, spec: ComponentSpec, gate: str, runner: str, workdir: Path) -> _Job:
        from tcpkit.release.promote import build_module

        gspec = spec.gates[gate]
        params = gspec.parameters_for(self.options.profile)
        notebook_bytes = spec.notebook.read_bytes()
        module = build_module(spec.notebook, display_name=f"notebooks/{spec.notebook.name}")
        inputs = {
            "notebook": digest_bytes(notebook_bytes),
            "parameters": sha256_json(params),
            "module": digest_bytes(module),
            "tcpkit": digest_bytes(__version__.encode("utf-8")),
            "gate": gspec.digest(self.options.profile),
        }
        for dep in spec.depends_on:
            frozen = self.root / "production" / f"{dep}.py"
            if frozen.is_file():
                inputs[f"frozen:{dep}"] = digest_bytes(frozen.read_bytes())
        return _Job(spec.name, gate, spec.notebook, params, gspec, inputs, sha256_json(inputs), module,
                    self.options.profile, runner, workdir)

    # -- recording (calling thread) ------------------------------------------------------------
    def _record(self, ws: Any, signer: Any, runner: str, ex: _Execution) -> Outcome:
        from tcpkit.release.promote import freeze
        from tcpkit.release.report import write_run_report
        from tcpkit.release.signing import dump_envelope, make_statement, sign_statement
        from tcpkit.release.workspace import GateRun

        job = ex.job
        executed_digest = ws.store.put_bytes(ex.executed) if ex.executed is not None else None
        report_digest = ws.store.put_bytes(ex.page)
        write_run_report(self.root / REPORTS_DIR, _summary(
            job, ex.started_at, ex.duration_s, ex.metrics, ex.results, ex.error, ex.error_cell,
            "passed" if ex.passed else "failed", signer.name), ex.page)
        attested = {f"tcpkit:input/{k}": v for k, v in job.inputs.items()}
        attested[f"reports/{job.gate}/{job.component}.html"] = report_digest
        if executed_digest is not None:
            attested[f"tcpkit:executed/{job.component}-{job.gate}.ipynb"] = executed_digest
        statement = make_statement(
            f"notebooks/{job.notebook.name}",
            job.inputs["notebook"],
            gate=job.gate,
            policy_uri=self.pipeline.policy_uri(job.component, job.gate),
            policy_digest=job.inputs["gate"],
            inputs=attested,
            passed=ex.passed,
            verifier_id=runner,
            resource_uri=f"tcpkit:component/{job.component}",
        )
        envelope_digest = ws.store.put_bytes(dump_envelope(sign_statement(statement, [signer])))
        ws.record_gate_run(GateRun(
            component=job.component, gate=job.gate, input_digest=job.input_digest,
            inputs=dict(job.inputs), decision="passed" if ex.passed else "failed",
            metrics=dict(ex.metrics), criteria=[r.as_dict() for r in ex.results],
            executed_notebook_digest=executed_digest, report_digest=report_digest,
            envelope_digest=envelope_digest, runner=runner, started_at=ex.started_at,
            duration_s=ex.duration_s,
        ))
        summary = _summary(job, ex.started_at, ex.duration_s, ex.metrics, ex.results, ex.error,
                           ex.error_cell, "passed" if ex.passed else "failed", signer.name)
        if not ex.passed:
            return Outcome(job.component, job.gate, "failed", _failure_reason(ex), summary, ex.duration_s)
        ws.set_level(job.component, job.gate, runner)
        reason = _key_values(ex.results)
        if job.gate == "PRODUCTION":
            artifact = freeze(
                self.root, job.component, job.module, signer=signer,
                policy_uri=self.pipeline.policy_uri(job.component, job.gate),
                policy_digest=job.inputs["gate"],
                inputs={**attested, "tcpkit:gate-run-envelope": envelope_digest},
                verifier_id=runner, backup=ws.store.put_bytes,
                pin=lambda digest, why: ws.pin(digest, why, actor=runner),
            )
            reason += f"; frozen production/{job.component}.py sha256 {artifact.digest[:12]}"
        return Outcome(job.component, job.gate, "passed", reason, summary, ex.duration_s)

    def _skipped(self, job: _Job, previous: Any) -> Outcome:
        report = self.root / REPORTS_DIR / job.gate / f"{job.component}.html"
        if previous.report_digest and not report.is_file():
            from tcpkit.release.atomic import write_atomic

            report.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(Exception):
                write_atomic(report, self._store_bytes(previous.report_digest), mode=0o644)
        summary = RunSummary(
            component=job.component, gate=job.gate, decision="skipped", profile=job.profile,
            criteria=tuple(previous.criteria), metrics=dict(previous.metrics), inputs=dict(job.inputs),
            input_digest=job.input_digest, parameters=dict(job.parameters), runner=previous.runner,
            started_at=previous.started_at, duration_s=previous.duration_s,
            report=f"{job.gate}/{job.component}.html" if report.is_file() else None,
        )
        return Outcome(job.component, job.gate, "skipped",
                       f"inputs unchanged since the passing run of {previous.started_at}", summary)

    def _store_bytes(self, digest: str) -> bytes:
        from tcpkit.release.store import ObjectStore

        return ObjectStore(self.root / ".tcpkit" / "objects").get_bytes(digest)

    def _refreeze(self, ws: Any, signer: Any, job: _Job) -> bool:
        """For a skipped PRODUCTION: the frozen module must be there and verify, else re-freeze it
        from the (identical) module the passing run attested. False when that is impossible."""
        from tcpkit.release.promote import FrozenModuleError, PromotionError, freeze, verify_frozen

        try:
            data, _ = verify_frozen(job.component, self.root)
            if digest_bytes(data) == job.inputs["module"]:
                return True
        except FrozenModuleError:
            pass
        if not job.module:
            return False
        try:
            freeze(self.root, job.component, job.module, signer=signer,
                   policy_uri=self.pipeline.policy_uri(job.component, job.gate),
                   policy_digest=job.inputs["gate"],
                   inputs={f"tcpkit:input/{k}": v for k, v in job.inputs.items()},
                   verifier_id=job.runner, backup=ws.store.put_bytes,
                   pin=lambda digest, why: ws.pin(digest, why, actor=job.runner))
        except PromotionError:
            return False
        return True

    def _reached(self, outcomes: Sequence[Outcome]) -> dict[str, str | None]:
        reached: dict[str, str | None] = dict.fromkeys(self.selected)
        for outcome in outcomes:
            if outcome.status in ("passed", "skipped"):
                reached[outcome.component] = outcome.gate
        return reached

    # -- index ---------------------------------------------------------------------------------
    def _write_index(self, ws: Any, outcomes: Sequence[Outcome]) -> Path:
        from tcpkit.release.report import FrozenRow, IndexData, write_index
        from tcpkit.release.signing import verify_workspace

        cells: dict[tuple[str, str], RunSummary] = {}
        for run in ws.gate_runs():
            report = self.root / REPORTS_DIR / run.gate / f"{run.component}.html"
            cells[(run.component, run.gate)] = RunSummary(
                component=run.component, gate=run.gate, decision=run.decision,
                criteria=tuple(run.criteria), metrics=dict(run.metrics), inputs=dict(run.inputs),
                input_digest=run.input_digest, runner=run.runner, started_at=run.started_at,
                duration_s=run.duration_s,
                report=f"{run.gate}/{run.component}.html" if report.is_file() else None,
            )
        notes: list[str] = []
        for outcome in outcomes:
            if outcome.summary is not None:
                cells[(outcome.component, outcome.gate)] = outcome.summary
            if outcome.status in ("failed", "blocked"):
                notes.append(f"{outcome.component} {outcome.gate} {outcome.status}: {outcome.reason}")
        frozen: list[FrozenRow] = []
        try:
            checks = verify_workspace(self.root)
            frozen = [FrozenRow(c.name, c.digest, c.ok, c.reason) for c in checks]
        except ValueError as exc:
            notes.append(f"frozen artifacts could not be verified: {exc}")
        data = IndexData(
            gates=GATES,
            components=tuple(self.pipeline.components),
            owners={n: s.owner for n, s in self.pipeline.components.items()},
            cells=cells,
            collaboration=tuple(_collaboration(ws)),
            frozen=tuple(frozen),
            notes=tuple(notes),
        )
        return write_index(self.root / REPORTS_DIR, data)


def _collaboration(ws: Any) -> Iterator[tuple[str, str]]:
    status = ws.status()
    people: set[str] = set()
    for row in status:
        people.update((row.owner, *row.contributors))
    yield "researchers", f"{len(people)}: {', '.join(sorted(people))}"
    yield "components", f"{len(status)}: " + ", ".join(f"{r.name} ({r.level or 'no gate yet'})" for r in status)
    yield "versions recorded", str(sum(r.versions for r in status))
    yield "versions kept in the store", str(sum(r.versions_kept for r in status))
    pins = ws.pins()
    yield "pinned backups", f"{len(pins)}" + (": " + "; ".join(sorted(set(pins.values()))) if pins else "")
    live = [f"{r.name} held by {r.lease_holder} until {r.lease_expires}" for r in status if r.lease_holder]
    yield "leases", "; ".join(live) if live else "none held"
    yield "gate runs recorded", str(len(ws.gate_runs()))
    broken = ws.verify_audit()
    yield "audit log", f"{len(ws.audit_log())} entries, hash chain {'BROKEN: ' + str(broken) if broken else 'intact'}"


def _failure_reason(ex: _Execution) -> str:
    if ex.error:
        where = f" in cell {ex.error_cell.splitlines()[0]}" if ex.error_cell else ""
        return f"error{where}: {ex.error.splitlines()[0] if ex.error else ''}"
    failures = [r.reason for r in ex.results if not r.ok]
    return "; ".join(failures) if failures else "no criterion was evaluated"


def _key_values(results: Sequence[CriterionResult], limit: int = 3) -> str:
    shown = [f"{r.metric}={_short(r.value)}" for r in results[:limit]]
    if len(results) > limit:
        shown.append(f"+{len(results) - limit} more")
    return ", ".join(shown)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@contextlib.contextmanager
def _kernel_environment(root: Path) -> Iterator[None]:
    """Environment the notebook kernels inherit: the project root, a headless plot backend."""
    settings = {"TCPKIT_ROOT": str(root), "MPLBACKEND": "module://matplotlib_inline.backend_inline",
                "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_pipeline(root: str | Path, options: RunOptions | None = None, *, stream: TextIO | None = None,
                 progress: bool | None = None) -> PipelineResult:
    """Run the gate pipeline of the project at ``root`` (see :class:`GatePipeline`)."""
    return GatePipeline(Path(root), options or RunOptions(), stream, progress).run()


def summarize(result: PipelineResult) -> str:
    """A few closing lines: how far each component got and where the index is."""
    lines = []
    for component, level in result.reached.items():
        mark = "ok " if level == result.until else "-- "
        lines.append(f"{mark}{component:<14} reached {level or 'no gate'}")
    counts = {s: sum(1 for o in result.outcomes if o.status == s) for s in ("passed", "failed", "skipped", "blocked")}
    lines.append(", ".join(f"{v} {k}" for k, v in counts.items()) + f" in {result.elapsed_s:.1f} s")
    if result.index is not None:
        lines.append(f"report: {result.index}")
    return "\n".join(lines)

