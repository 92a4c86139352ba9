"""The tamper-evident audit log: an append-only table whose entries form a hash chain.

Entry ``n`` stores ``hash = sha256(canonical JSON of (seq, at, actor, action,
details, prev_hash))`` with ``prev_hash`` the hash of entry ``n - 1`` (64 zeros
for the first). Editing, inserting or deleting any entry by hand therefore
breaks the chain at that entry or the next, and :func:`verify_chain` names the
first entry where it breaks. Entries are appended inside the same transaction
as the change they describe, so the log accounts for exactly the changes that
were committed. Triggers refuse UPDATE and DELETE on the table; the chain is
what catches someone who removes the triggers first.

Known limit: dropping the newest entries is not detectable from the chain
alone (there is no later entry to disagree); an external copy of the last hash
(``AuditEntry.hash`` from :func:`head`) closes that gap.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit log, as stored."""

    seq: int
    at: str
    actor: str
    action: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class AuditBreak:
    """Where the hash chain breaks: the first entry that does not follow from its predecessor."""

    seq: int
    action: str
    actor: str
    at: str
    reason: str

    def __str__(self) -> str:
        return f"audit entry {self.seq} ({self.action} by {self.actor} at {self.at}): {self.reason}"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no insignificant whitespace (the hashed form)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_hash(seq: int, at: str, actor: str, action: str, details_json: str, prev_hash: str) -> str:
    """The chain hash of one entry."""
    payload = canonical_json(
        {"seq": seq, "at": at, "actor": actor, "action": action, "details": details_json, "prev": prev_hash}
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def now_iso() -> str:
    """Current UTC time, ISO 8601 with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def append(conn: sqlite3.Connection, actor: str, action: str, details: dict[str, Any]) -> AuditEntry:
    """Append one entry; must run inside the caller's write transaction."""
    if not isinstance(details, dict):
        raise TypeError(f"audit details must be a dict, got {type(details).__name__}")
    details_json = canonical_json(details)
    last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (1, GENESIS) if last is None else (int(last[0]) + 1, str(last[1]))
    at = now_iso()
    digest = entry_hash(seq, at, actor, action, details_json, prev)
    conn.execute(
        "INSERT INTO audit (seq, at, actor, action, details, prev_hash, hash) VALUES (?,?,?,?,?,?,?)",
        (seq, at, actor, action, details_json, prev, digest),
    )
    return AuditEntry(seq, at, actor, action, json.loads(details_json), prev, digest)


def _entry(row: sqlite3.Row) -> AuditEntry:
    try:
        details = json.loads(row["details"])
    except (TypeError, ValueError):
        details = {"unparseable": str(row["details"])}
    return AuditEntry(
        int(row["seq"]), row["at"], row["actor"], row["action"], details, row["prev_hash"], row["hash"]
    )


def entries(rows: list[sqlite3.Row]) -> list[AuditEntry]:
    """Rows of the ``audit`` table as :class:`AuditEntry` values."""
    return [_entry(row) for row in rows]


def verify_chain(rows: list[sqlite3.Row]) -> AuditBreak | None:
    """The first entry where the chain breaks, or None when every link holds.

    ``rows`` are the audit table's rows ordered by ``seq``.
    """
    prev = GENESIS
    expected_seq = 1
    for row in rows:
        seq = int(row["seq"])
        action, actor, at = str(row["action"]), str(row["actor"]), str(row["at"])
        if seq != expected_seq:
            why = f"expected entry {expected_seq} here (entries removed or inserted)"
            return AuditBreak(seq, action, actor, at, why)
        if row["prev_hash"] != prev:
            why = "its prev_hash does not match the hash of the entry before"
            return AuditBreak(seq, action, actor, at, why)
        recomputed = entry_hash(seq, row["at"], row["actor"], row["action"], row["details"], row["prev_hash"])
        if recomputed != row["hash"]:
            return AuditBreak(seq, action, actor, at, "its content no longer matches its hash (edited)")
        prev = row["hash"]
        expected_seq += 1
    return None
