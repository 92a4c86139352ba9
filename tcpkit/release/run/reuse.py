"""When a gate need not run again: a recorded run with the same run key, passed or failed.

A gate run's key (:mod:`tcpkit.release.runkey`, combined in :mod:`tcpkit.release.pipeline`)
covers the notebook, its parameters, the exported module, the gate definition, the frozen
modules it depends on, every source file of tcpkit, every installed distribution, Python
and the kernel spec. A deterministic notebook with the same key decides the same way again,
so ``tcpkit run`` reuses the latest recorded run with that key instead of starting a kernel:
its decision stands, shown as *reused* (``--rerun`` executes anyway).

Not every failure says something about the notebook. Each failed run records why it failed
as the run condition ``tcpkit.failure`` (see :data:`FAILURE_METRIC`):

``criteria``
    the notebook ran and its metrics missed a criterion; reused;
``cell error``
    a cell raised an exception; reused (the same code on the same inputs raises again);
``time limit``
    a cell ran longer than the gate's limit, which depends on the machine's load: run again;
``kernel``
    the kernel did not start or died (out of memory, killed): run again;
``unreadable``
    the executed notebook could not be read back: run again.

A failed run recorded before this condition existed is run again as well: nothing says
which kind of failure it was. A criterion on a speed measured under load (``dask_agents_per_s``
on a busy machine) is a ``criteria`` failure like any other and is reused; its report shows
the load average it ran at, and ``tcpkit run --rerun`` measures again.
"""

from __future__ import annotations

import base64
import json
from typing import Any

FAILURE_METRIC = "tcpkit.failure"
CRITERIA = "criteria"
CELL_ERROR = "cell error"
TIME_LIMIT = "time limit"
KERNEL = "kernel"
UNREADABLE = "unreadable"
REPEATABLE_FAILURES = frozenset({CRITERIA, CELL_ERROR})
"""Failures a deterministic notebook repeats on the same inputs: their decision is reused."""


def reusable(run: Any) -> bool:
    """Whether the recorded ``run`` (a :class:`tcpkit.release.workspace.GateRun`) stands for a new
    run with the same key: every pass (its bundle is checked by the caller), and the failures in
    :data:`REPEATABLE_FAILURES`."""
    if run.decision == "passed":
        return True
    return run.decision == "failed" and run.metrics.get(FAILURE_METRIC) in REPEATABLE_FAILURES


def recorded_error(bundle: bytes | None) -> str | None:
    """The error a recorded run's signed gate result states (None when it states none or the
    bundle cannot be read: the error is shown, never relied on)."""
    if not bundle:
        return None
    try:
        lines = [line for line in bundle.split(b"\n") if line.strip()]
        statement = json.loads(base64.b64decode(json.loads(lines[-1])["payload"]))
        error = statement["predicate"].get("error")
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return error if isinstance(error, str) and error else None


def failure_summary(run: Any, error: str | None) -> str:
    """One line on why the recorded failed ``run`` failed: its error, else the missed criteria."""
    if error:
        return f"error: {error.splitlines()[0]}"
    missed = [str(c.get("reason", "")) for c in run.criteria if not c.get("ok")]
    return "; ".join(missed) if missed else "no criterion was evaluated"
