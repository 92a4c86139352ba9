"""Execution of one gate run on a worker thread: papermill, metrics, model, criteria, report page.

:func:`execute` runs the component's notebook with the gate's parameters in kernel
:data:`KERNEL` (a per-cell execution limit and a kernel start limit, so a run can fail
but never hang), reads back the metrics and the model it recorded, adds the run's
conditions (whether it ran alone, the 1-minute load average before and after), checks
the gate's criteria and renders the report page. Nothing is recorded here: the
recording happens on the calling thread (:mod:`tcpkit.release.run.record`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tcpkit.release.gates import CriterionResult, GateSpec, evaluate
from tcpkit.release.report import RunSummary
from tcpkit.release.run import reuse

KERNEL = "python3"
# The kernel's own log (a TCP-transport warning on every start, a note when it is
# interrupted at shutdown) would be printed between the progress lines; what a run
# did or why it failed comes from the executed notebook, never from that log.
KERNEL_ARGUMENTS = ("--IPKernelApp.log_level=CRITICAL",)
START_TIMEOUT_S = 120.0
# Once the last cell is done every output has arrived (nbclient waits for each cell's idle
# message), so the kernel is killed with its process group instead of being asked to shut
# down: a graceful shutdown costs 0.4-0.7 s per run and saves nothing a run reads.
SHUTDOWN = "immediate"
# Jupyter picks a kernel's ports by binding and releasing them, then starts the kernel, which
# binds them again: another process (often a kernel starting beside it) can take one in
# between, and the kernel dies with "Address already in use" before it replies (a known race,
# jupyter/jupyter_client#154, nteract/papermill#511). Nothing of the notebook ran, so the start
# is tried again, with new ports, up to this many times in all.
START_ATTEMPTS = 3


@dataclass(frozen=True)
class Job:
    """One gate run to execute: the notebook, its parameters, the gate and the run key."""

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
    details: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Execution:
    """What one executed gate run produced (before it is recorded)."""

    job: Job
    started_at: str
    duration_s: float
    executed: bytes | None
    metrics: Mapping[str, Any]
    results: tuple[CriterionResult, ...]
    error: str | None
    error_cell: str | None
    passed: bool
    page: bytes = field(repr=False, default=b"")
    model: bytes | None = field(repr=False, default=None)
    summary: RunSummary | None = None
    """The run's one record for the report (header of ``page``, cell of the index)."""


def now() -> str:
    """The current UTC time, RFC 3339 to the second."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_error(exc: BaseException, timeout_s: float) -> tuple[str, str | None]:
    """The error of a failed run in one line, and the failing cell when papermill names it."""
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


def died_at_start(exc: BaseException) -> bool:
    """True when the kernel died before its first reply (no cell ran): the port race above."""
    return isinstance(exc, RuntimeError) and "before replying to kernel_info" in str(exc)


def with_start_retries(run: Callable[[], object], attempts: int = START_ATTEMPTS) -> None:
    """``run()``, started again (up to ``attempts`` times in all) while the kernel dies at start.

    Any other exception, and the last start failure, propagate unchanged: a cell's error, a
    time limit or a kernel that dies later is the run's outcome, never retried.
    """
    for attempt in range(1, attempts + 1):
        try:
            run()
            return
        except RuntimeError as exc:
            if attempt == attempts or not died_at_start(exc):
                raise


def failure_kind(exc: BaseException) -> str:
    """Why papermill raised, as the run condition :data:`tcpkit.release.run.reuse.FAILURE_METRIC`
    records it: a cell's own exception, the gate's time limit, or the kernel (start, death)."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        return reuse.CELL_ERROR
    if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
        return reuse.TIME_LIMIT
    return reuse.KERNEL


def execute(job: Job, signer_label: str) -> Execution:
    """Run one gate: papermill, metrics, criteria, and the rendered report (no recording)."""
    import nbformat
    import papermill

    from tcpkit.release.metrics import MetricError, read_metrics, read_model
    from tcpkit.release.report import render_run_report

    started_at = now()
    load_before = load1()
    start = time.monotonic()
    output = job.workdir / f"{job.component}-{job.gate}.ipynb"
    error: str | None = None
    error_cell: str | None = None
    failure: str | None = None
    try:
        with_start_retries(lambda: papermill.execute_notebook(
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
            shutdown_kernel=SHUTDOWN,
        ))
    except Exception as exc:  # every failure mode of a run is a failed gate, never a crash
        error, error_cell = describe_error(exc, job.spec.timeout_s)
        failure = failure_kind(exc)
    duration = time.monotonic() - start
    load_after = load1()
    executed = output.read_bytes() if output.is_file() else None
    notebook = None
    metrics: dict[str, Any] = {}
    model: bytes | None = None
    if executed is not None:
        try:
            notebook = nbformat.reads(executed.decode("utf-8"), as_version=4)
            metrics = read_metrics(notebook)
            model = read_model(notebook)
        except (MetricError, ValueError) as exc:
            error = error or f"the executed notebook cannot be read: {exc}"
            failure = failure or reuse.UNREADABLE
    elif failure is None:  # no exception, yet no executed notebook to read metrics from
        failure = reuse.UNREADABLE
    metrics.update({"tcpkit.exclusive": job.spec.exclusive, "tcpkit.load1_before": load_before,
                    "tcpkit.load1_after": load_after})
    results = list(evaluate(job.spec.criteria, metrics).results)
    if job.gate == "PRODUCTION" and not job.module:
        results.append(CriterionResult(
            "export module", "!=", False, None, False,
            "not evaluated: the notebook has no '#| export' cells, so there is nothing to freeze",
        ))
    passed = error is None and bool(results) and all(r.ok for r in results)
    if not passed:  # why, so that a re-run with the same key knows whether to reuse the decision
        metrics[reuse.FAILURE_METRIC] = failure or reuse.CRITERIA
    summary = run_summary(job, started_at, duration, metrics, tuple(results), error, error_cell,
                       "passed" if passed else "failed", signer_label)
    page = render_run_report(summary, notebook)
    return Execution(job, started_at, duration, executed, metrics, tuple(results), error, error_cell,
                     passed, page, model, summary)


def load1() -> float | None:
    """The 1-minute load average of the machine (None where the OS does not report it)."""
    try:
        return round(os.getloadavg()[0], 3)
    except (OSError, AttributeError):
        return None


def run_summary(job: Job, started_at: str, duration: float, metrics: Mapping[str, Any],
                results: Sequence[CriterionResult], error: str | None, error_cell: str | None,
                decision: str, signer: str) -> RunSummary:
    """The report header (and index cell) of an executed run."""
    return RunSummary(
        component=job.component,
        gate=job.gate,
        decision=decision,
        profile=job.profile,
        criteria=tuple(r.as_dict() for r in results),
        metrics=dict(metrics),
        inputs=dict(job.inputs),
        input_digest=job.input_digest,
        input_details=dict(job.details),
        parameters=dict(job.parameters),
        runner=job.runner,
        signer=signer,
        started_at=started_at,
        duration_s=duration,
        error=error,
        error_cell=error_cell,
        report=f"{job.gate}/{job.component}.html",
    )


@contextlib.contextmanager
def kernel_environment(root: Path) -> Iterator[None]:
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
