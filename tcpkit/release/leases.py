"""Leases: who may change a component right now, for how long, and when a lease is stale.

A lease names a holder, the host and process that took it, and an expiry time.
It is *stale*, and may be taken over by another member of the component, when
its time-to-live has passed or when its process, on this same host, no longer
runs (a killed researcher session must not block everyone until the TTL ends).
A lease taken with ``pid=None`` is bound to its TTL only. The process start
time is stored next to the pid so that a recycled pid is not mistaken for the
original holder. The workspace applies these rules inside its transactions;
this module only decides.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime

DEFAULT_TTL_S = 600.0


def this_host() -> str:
    """The host name recorded with a lease."""
    return socket.gethostname()


def process_start(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (Linux ``/proc``), or None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    # after the command name: state is field 3, starttime is field 22 (1-based)
    return fields[19] if len(fields) > 19 else None


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def process_alive(pid: int, start: str | None = None) -> bool:
    """Whether process ``pid`` on this host still runs (and is the one that started at ``start``)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if _is_zombie(pid):
        return False
    if start is not None:
        now_start = process_start(pid)
        if now_start is not None and now_start != start:
            return False
    return True


@dataclass(frozen=True)
class Lease:
    """A lease on one component, as recorded in the workspace."""

    component: str
    holder: str
    host: str
    pid: int | None
    proc_start: str | None
    acquired_at: str
    expires_at: float
    reason: str

    @property
    def expires_iso(self) -> str:
        """Expiry as an ISO 8601 UTC time."""
        return datetime.fromtimestamp(self.expires_at, UTC).isoformat(timespec="seconds")

    def stale_reason(self, now: float, host: str | None = None) -> str | None:
        """Why the lease may be taken over (expired, holder gone), or None while it is live."""
        if now >= self.expires_at:
            return f"it expired at {self.expires_iso}"
        here = this_host() if host is None else host
        if self.pid is not None and self.host == here and not process_alive(self.pid, self.proc_start):
            return f"its holder process {self.pid} on {self.host} is gone"
        return None

    def describe(self) -> str:
        """One phrase naming holder, process and expiry, for messages."""
        where = f"pid {self.pid} on {self.host}" if self.pid is not None else f"host {self.host}"
        why = f", reason: {self.reason!r}" if self.reason else ""
        return f"{self.holder} ({where}) until {self.expires_iso}{why}"
