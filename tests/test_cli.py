"""The front door: version, help, and the one-line error contract (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tcpkit import __version__
from tcpkit.cli import main


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tcpkit.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_version() -> None:
    done = _run("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"tcpkit {__version__}"


def test_help_lists_commands() -> None:
    done = _run("--help")
    assert done.returncode == 0
    assert "usage: tcpkit" in done.stdout


@pytest.mark.parametrize(
    "args",
    [["--no-such-option"], ["no-such-command"]],
)
def test_unknown_input_is_one_line_on_stderr_and_exit_2(args: list[str]) -> None:
    done = _run(*args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("tcpkit: error:")
    assert done.stdout == ""


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: tcpkit" in capsys.readouterr().err


def test_a_reader_that_goes_away_ends_quietly(tmp_path: Path, researchers: Callable[..., Path]) -> None:
    """``tcpkit audit log | head``: no BrokenPipeError traceback when the reader closes the pipe."""
    import os

    from tcpkit.release.workspace import Workspace

    researchers(tmp_path, "alice")
    with Workspace.open(tmp_path) as ws:
        ws.register_component("stats", "stats.ipynb", "alice")
        for i in range(3):
            ws.audit("note", "alice", {"i": i})
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before tcpkit writes anything
    try:
        done = subprocess.run([sys.executable, "-m", "tcpkit.cli", "audit", "log", "--root", str(tmp_path)],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 141
