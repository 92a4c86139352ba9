"""Values and errors of the workspace: components, versions, gate runs, status, gc reports.

Frozen dataclasses that :class:`tcpkit.release.workspace.Workspace` returns,
the conversions from database rows, and the checks of user input that the
workspace applies once at its boundary. Kept apart from the workspace so that
readers of these values (the pipeline, the CLI) import no database code.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from tcpkit.release.db import WorkspaceError
from tcpkit.release.leases import Lease

GATES: tuple[str, ...] = ("DEVELOPMENT", "TESTING", "STAGING", "PRODUCTION")
DECISIONS: tuple[str, ...] = ("passed", "failed")


class ConflictError(WorkspaceError):
    """The component changed since the ``base`` a modification was made from; nothing was written.

    Attributes
    ----------
    component, base, current : str
        The component, the digest the caller started from, the digest that is current.
    diff : str
        What changed from ``base`` to ``current`` (nbdime for notebooks).
    """

    def __init__(self, message: str, *, component: str, base: str | None, current: str | None,
                 diff: str) -> None:
        super().__init__(message)
        self.component = component
        self.base = base
        self.current = current
        self.diff = diff


class LeaseError(WorkspaceError):
    """The component is leased to someone else (or the caller holds no lease to renew/release)."""


class PermissionDenied(WorkspaceError):
    """The researcher is neither the component's owner nor one of its contributors."""


class IdentityError(WorkspaceError):
    """Acting as a researcher without their private key, or with a key the workspace does not trust."""


class UnknownComponentError(WorkspaceError, LookupError):
    """No component of that name is registered."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownVersionError(WorkspaceError, LookupError):
    """The digest (or prefix) names no version of the component."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class ComponentInfo:
    """A registered component: who owns it, who may change it, how far it has come."""

    name: str
    notebook: str
    owner: str
    contributors: tuple[str, ...]
    level: str | None
    created_at: str
    updated_at: str

    def members(self) -> tuple[str, ...]:
        """Owner first, then contributors: everyone allowed to lease and modify."""
        return (self.owner, *[c for c in self.contributors if c != self.owner])


@dataclass(frozen=True)
class VersionInfo:
    """One recorded version of a component's notebook."""

    component: str
    seq: int
    digest: str
    parent: str | None
    author: str
    created_at: str
    message: str
    kind: str  # import | modify | backup | restore


@dataclass(frozen=True)
class GateRun:
    """One execution of a component's notebook at a gate, and its decision.

    ``run_id`` is assigned by :meth:`Workspace.record_gate_run`; leave it None
    when constructing a run to record.
    """

    component: str
    gate: str
    input_digest: str
    inputs: dict[str, str]
    decision: str
    metrics: dict[str, Any]
    criteria: list[dict[str, Any]]
    executed_notebook_digest: str | None
    report_digest: str | None
    envelope_digest: str | None
    runner: str
    started_at: str
    duration_s: float
    run_id: int | None = None

    def digests(self) -> set[str]:
        """Every digest this run references (kept by :meth:`Workspace.gc`)."""
        found = {self.input_digest, *self.inputs.values()}
        for d in (self.executed_notebook_digest, self.report_digest, self.envelope_digest):
            if d is not None:
                found.add(d)
        return found


@dataclass(frozen=True)
class ComponentStatus:
    """A row of ``tcpkit status``."""

    name: str
    notebook: str
    owner: str
    contributors: tuple[str, ...]
    level: str | None
    versions: int
    versions_kept: int
    current: str | None
    lease_holder: str | None
    lease_expires: str | None
    configuration_error: str | None = None
    """Why the last ``tcpkit run`` stopped before any gate ran; ``level`` is unchanged by it."""


@dataclass(frozen=True)
class GcReport:
    """What :meth:`Workspace.gc` freed and kept."""

    keep_last: int
    objects_removed: tuple[str, ...]
    bytes_freed: int
    versions_pruned: tuple[tuple[str, int], ...]
    temporaries_removed: int
    objects_kept: int
    protected: dict[str, int] = field(default_factory=dict)


class Conflict(Exception):
    """Internal: raised inside the transaction so that it rolls back before the diff is built."""

    def __init__(self, current: VersionInfo | None) -> None:
        super().__init__("conflict")
        self.current = current


def version_of(row: sqlite3.Row) -> VersionInfo:
    return VersionInfo(
        component=row["component"], seq=int(row["seq"]), digest=row["digest"], parent=row["parent"],
        author=row["author"], created_at=row["created_at"], message=row["message"], kind=row["kind"],
    )


def component_of(row: sqlite3.Row) -> ComponentInfo:
    return ComponentInfo(
        name=row["name"], notebook=row["notebook"], owner=row["owner"],
        contributors=tuple(json.loads(row["contributors"])), level=row["level"],
        created_at=row["created_at"], updated_at=row["updated_at"],
    )


def lease_of(row: sqlite3.Row) -> Lease:
    return Lease(
        component=row["component"], holder=row["holder"], host=row["host"],
        pid=None if row["pid"] is None else int(row["pid"]), proc_start=row["proc_start"],
        acquired_at=row["acquired_at"], expires_at=float(row["expires_at"]), reason=row["reason"],
    )


def gate_run_of(row: sqlite3.Row) -> GateRun:
    return GateRun(
        component=row["component"], gate=row["gate"], input_digest=row["input_digest"],
        inputs=json.loads(row["inputs"]), decision=row["decision"], metrics=json.loads(row["metrics"]),
        criteria=json.loads(row["criteria"]), executed_notebook_digest=row["executed_notebook_digest"],
        report_digest=row["report_digest"], envelope_digest=row["envelope_digest"],
        runner=row["runner"], started_at=row["started_at"], duration_s=float(row["duration_s"]),
        run_id=int(row["id"]),
    )


def check_ttl(ttl_s: float) -> float:
    if not isinstance(ttl_s, int | float) or not math.isfinite(ttl_s) or ttl_s <= 0:
        raise ValueError(f"lease ttl_s must be a positive number of seconds, got {ttl_s!r}")
    return float(ttl_s)


def check_gate(gate: object) -> str:
    if gate not in GATES:
        raise ValueError(f"gate {gate!r} is unknown: use one of {', '.join(GATES)}")
    return str(gate)


def check_content(notebook: str, content: object) -> bytes:
    if not isinstance(content, bytes | bytearray):
        raise TypeError(f"content must be bytes, got {type(content).__name__}")
    data = bytes(content)
    if notebook.endswith(".ipynb"):
        try:
            parsed = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"content for notebook {notebook!r} is not notebook JSON: {exc}") from None
        if not isinstance(parsed, dict) or not isinstance(parsed.get("cells"), list):
            raise ValueError(f"content for notebook {notebook!r} is JSON but not a notebook (no cells list)")
    return data


def as_json(value: Any) -> Any:
    """Dataclass values of this module as JSON-able dicts (for ``--json`` output)."""
    from dataclasses import asdict, is_dataclass

    if is_dataclass(value) and not isinstance(value, type):
        return {k: as_json(v) for k, v in asdict(value).items()}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): as_json(v) for k, v in value.items()}
    return value
