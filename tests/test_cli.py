"""The front door: version, help, and the one-line error contract (exit 2)."""

from __future__ import annotations

import subprocess
import sys

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
