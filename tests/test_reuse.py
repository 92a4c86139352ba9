"""Which recorded runs a gate with the same run key reuses, and how a failure is classified."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from tcpkit.release.run import reuse
from tcpkit.release.run.execute import failure_kind


@dataclass(frozen=True)
class _Run:
    decision: str
    metrics: dict[str, Any] = field(default_factory=dict)
    criteria: list[dict[str, Any]] = field(default_factory=list)


@pytest.mark.parametrize(("decision", "failure", "reused"), [
    ("passed", None, True),
    ("failed", "criteria", True),
    ("failed", "cell error", True),
    ("failed", "time limit", False),  # depends on the machine's load
    ("failed", "kernel", False),
    ("failed", "unreadable", False),
    ("failed", None, False),  # recorded before the condition existed: nothing says why
])
def test_reusable(decision: str, failure: str | None, reused: bool) -> None:
    metrics = {} if failure is None else {reuse.FAILURE_METRIC: failure}
    assert reuse.reusable(_Run(decision, metrics)) is reused


def test_failure_kind_of_papermill_errors() -> None:
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    cell = PapermillExecutionError(0, 1, "raise ValueError", "ValueError", "bad", ["tb"])
    assert failure_kind(cell) == reuse.CELL_ERROR
    assert failure_kind(CellTimeoutError("slow")) == reuse.TIME_LIMIT
    assert failure_kind(TimeoutError("start")) == reuse.TIME_LIMIT
    assert failure_kind(DeadKernelError("gone")) == reuse.KERNEL
    assert failure_kind(RuntimeError("Kernel didn't respond")) == reuse.KERNEL


def _bundle(error: str | None) -> bytes:
    statements = [{"predicate": {}}, {"predicate": {"error": error}}]
    return b"\n".join(json.dumps({"payload": base64.b64encode(json.dumps(s).encode()).decode()}).encode()
                      for s in statements) + b"\n"


def test_recorded_error_and_failure_summary() -> None:
    assert reuse.recorded_error(_bundle("ValueError: bad")) == "ValueError: bad"
    assert reuse.recorded_error(_bundle(None)) is None
    assert reuse.recorded_error(b"not json") is None and reuse.recorded_error(None) is None
    missed = _Run("failed", criteria=[{"ok": True, "reason": "fine"}, {"ok": False, "reason": "fpr 0.2 > 0.01"}])
    assert reuse.failure_summary(missed, None) == "fpr 0.2 > 0.01"
    assert reuse.failure_summary(missed, "ValueError: bad\nmore") == "error: ValueError: bad"
    assert reuse.failure_summary(_Run("failed"), None) == "no criterion was evaluated"
