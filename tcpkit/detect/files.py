"""Atomic text writes for the detect half (the release half has its own, with modes and locks).

A file the detect half writes (a monitor's state, a persisted incarnation, an alert report, an
event log) is written to a temporary file in the same folder, flushed to disk and renamed into
place, then the folder is flushed: a process killed at any instant leaves the old file or the
new one, never a part.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    """Create ``path`` atomically with ``write(stream)`` (a binary stream); returns the path."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            write(raw)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


def write_text_atomic(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    data = text.encode(encoding)

    def write(stream: BinaryIO) -> None:
        stream.write(data)

    return write_atomic(path, write)
