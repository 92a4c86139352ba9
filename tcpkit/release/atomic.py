"""Atomic file writes: temporary file in the target directory, fsync, rename, fsync directory.

Every file that tcpkit's workspace writes (stored objects, notebooks restored or
modified through the workspace) goes through :func:`write_atomic`, so a process
killed at any instant leaves either the old file or the new one, never a torn
mixture. Temporary files are named ``.<name>.tcpkit-tmp-<random>`` in the
target's own directory (a rename is only atomic within one file system), and
:func:`stale_temporaries` finds the ones a killed writer left behind.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

TMP_MARK = ".tcpkit-tmp-"


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry (the rename itself) to disk; a no-op where unsupported."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see the old bytes or the new, never a mix.

    Parameters
    ----------
    path : Path
        Destination; its parent directory must exist.
    data : bytes
        The complete new content.
    mode : int, optional
        Permission bits for the new file. Default: those of the file it
        replaces, or for a new file what ``open`` would give under the
        process's umask (``0o666 & ~umask``). The temporary file is created
        owner-only by ``mkstemp`` and given its final mode before the rename,
        so the replaced file never changes mode, even for an instant.
    """
    path = Path(path)
    if mode is None:
        mode = _mode_for(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows.

    Linux reports it in ``/proc/self/status``; elsewhere it is read by setting
    and restoring it (``os.umask`` has no read-only form), which is brief but
    not thread-safe.
    """
    with contextlib.suppress(OSError, ValueError), open(
            "/proc/self/status", encoding="ascii", errors="replace") as handle:
        for line in handle:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def _mode_for(path: Path) -> int:
    """Permission bits a rewrite of ``path`` keeps: the existing file's, else the umask's."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~current_umask()


def stale_temporaries(directory: Path, older_than_s: float) -> Iterator[Path]:
    """Temporary files under ``directory`` (recursively) untouched for ``older_than_s`` seconds."""
    if not directory.is_dir():
        return
    cutoff = time.time() - older_than_s
    for path in directory.rglob(f"*{TMP_MARK}*"):
        with contextlib.suppress(OSError):
            if path.is_file() and path.stat().st_mtime <= cutoff:
                yield path
