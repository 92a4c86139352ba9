"""A kernel that dies before its first reply (the Jupyter port race) is started again; nothing else is."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tcpkit.release.run.execute import START_ATTEMPTS, died_at_start, with_start_retries

RACE = RuntimeError("Kernel died before replying to kernel_info")


def _flaky(failures: int, error: BaseException = RACE) -> tuple[list[int], Callable[[], None]]:
    calls: list[int] = []

    def run() -> None:
        calls.append(1)
        if len(calls) <= failures:
            raise error

    return calls, run


def test_a_start_that_loses_the_port_race_is_tried_again() -> None:
    calls, run = _flaky(START_ATTEMPTS - 1)
    with_start_retries(run)
    assert len(calls) == START_ATTEMPTS


def test_the_last_start_failure_propagates_after_every_attempt() -> None:
    calls, run = _flaky(START_ATTEMPTS)
    with pytest.raises(RuntimeError, match="before replying to kernel_info"):
        with_start_retries(run)
    assert len(calls) == START_ATTEMPTS


@pytest.mark.parametrize("error", [RuntimeError("a cell's own error"), TimeoutError("Kernel didn't respond"),
                                   ValueError("Kernel died before replying to kernel_info")])
def test_other_failures_are_the_runs_outcome_and_never_retried(error: BaseException) -> None:
    calls, run = _flaky(1, error)
    with pytest.raises(type(error)):
        with_start_retries(run)
    assert len(calls) == 1
    assert not died_at_start(error)
