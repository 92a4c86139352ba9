"""The tamper-evident audit log: an append-only table of signed entries that form a hash chain.

The hash of entry ``n`` (column ``hash``) is the lowercase hex SHA-256 of the
UTF-8 bytes of this JSON object, serialised with sorted keys, no whitespace
(separators ``,`` and ``:``) and non-ASCII characters kept as they are::

    {"action": ACTION, "actor": ACTOR, "at": AT, "details": DETAILS,
     "prev": PREV_HASH, "seq": SEQ}

where ``SEQ`` is the integer ``seq`` column, ``AT``, ``ACTOR``, ``ACTION`` are
the strings of their columns, ``DETAILS`` is the *string* stored in the
``details`` column (itself canonical JSON, so it appears escaped inside the
hashed object, not as a nested object) and ``PREV_HASH`` is the ``prev_hash``
column: the hash of entry ``n - 1``, 64 zeros for the first entry
(:data:`GENESIS`). :func:`entry_hash` computes exactly this.

Every entry is also signed by the acting researcher's (or runner's) key, hybrid
Ed25519 + ML-DSA-65 (:class:`~tcpkit.release.keys.HybridSigner`). The signed
message is the DSSE pre-authentication encoding
``PAE(AUDIT_PAYLOAD_TYPE, hash)`` of the entry's hex hash as ASCII bytes
(:func:`signing_message`); the ``signatures`` column holds the canonical JSON
list ``[{"algorithm": ..., "keyid": ..., "sig": base64}, ...]``, one per
algorithm. The signatures are not part of the hash: altering one leaves the
chain intact and is reported as a bad signature. :func:`verify_chain` checks,
entry by entry, the sequence, the link, the hash, and that every required
algorithm's signature verifies under the key the trust list holds for the
entry's ``actor``; it names the first entry that fails. Entries written before
schema version 2 carry no signature and are reported as unsigned.

Entries are appended inside the same transaction as the change they describe,
so the log accounts for exactly the changes that were committed. Triggers
refuse UPDATE and DELETE on the table; the chain and the signatures are what
catch someone who removes the triggers first.

Known limits: dropping the newest entries is not detectable from the chain
alone (there is no later entry to disagree); an external copy of the last hash
(the ``hash`` of the last entry of ``tcpkit audit log --json``) closes that gap. Signatures are checked
against the trust list as it is now, so an entry by a key later removed from
the trust list no longer verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tcpkit.release.algorithms import REQUIRED_ALGORITHMS, get_algorithm
from tcpkit.release.dsse import pae
from tcpkit.release.keys import HybridSigner, TrustList

GENESIS = "0" * 64
AUDIT_PAYLOAD_TYPE = "application/vnd.tcpkit.audit-entry.v1+sha256"
"""DSSE payload type under which an entry's hash is signed (keeps these signatures apart
from the attestation envelopes' ``application/vnd.in-toto+json``)."""


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
    signatures: tuple[dict[str, str], ...] = field(default=())


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
    """The chain hash of one entry, as the module docstring defines it."""
    payload = canonical_json(
        {"seq": seq, "at": at, "actor": actor, "action": action, "details": details_json, "prev": prev_hash}
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def now_iso() -> str:
    """Current UTC time, ISO 8601 with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def signing_message(digest: str) -> bytes:
    """The bytes an entry's signatures cover: ``PAE(AUDIT_PAYLOAD_TYPE, digest)``."""
    return pae(AUDIT_PAYLOAD_TYPE, digest.encode("ascii"))


def sign_entry(signer: HybridSigner, digest: str) -> tuple[dict[str, str], ...]:
    """One ``{"algorithm", "keyid", "sig"}`` per algorithm of ``signer`` over the entry hash."""
    message = signing_message(digest)
    signed = signer.sign(message)
    return tuple(
        {"algorithm": alg, "keyid": keyid, "sig": base64.b64encode(sig).decode("ascii")}
        for (alg, _key), (keyid, sig) in zip(signer.private_keys, signed, strict=True)
    )


def append(conn: sqlite3.Connection, signer: HybridSigner, action: str, details: dict[str, Any]
           ) -> AuditEntry:
    """Append one entry acted and signed by ``signer``; must run inside the caller's write transaction.

    The entry's ``actor`` is the signer's name: nobody can be recorded as acting
    without the key that proves it.
    """
    if not isinstance(signer, HybridSigner):
        raise TypeError(f"an audit entry is signed by a HybridSigner, got {type(signer).__name__}")
    if not isinstance(details, dict):
        raise TypeError(f"audit details must be a dict, got {type(details).__name__}")
    actor = signer.name
    details_json = canonical_json(details)
    last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (1, GENESIS) if last is None else (int(last[0]) + 1, str(last[1]))
    at = now_iso()
    digest = entry_hash(seq, at, actor, action, details_json, prev)
    signatures = sign_entry(signer, digest)
    conn.execute(
        "INSERT INTO audit (seq, at, actor, action, details, prev_hash, hash, signatures)"
        " VALUES (?,?,?,?,?,?,?,?)",
        (seq, at, actor, action, details_json, prev, digest, canonical_json(list(signatures))),
    )
    return AuditEntry(seq, at, actor, action, json.loads(details_json), prev, digest, signatures)


def _entry(row: sqlite3.Row) -> AuditEntry:
    try:
        details = json.loads(row["details"])
    except (TypeError, ValueError):
        details = {"unparseable": str(row["details"])}
    return AuditEntry(
        int(row["seq"]), row["at"], row["actor"], row["action"], details, row["prev_hash"], row["hash"],
        _signatures(row["signatures"]) or (),
    )


def _signatures(raw: object) -> tuple[dict[str, str], ...] | None:
    """The stored signature list, or None when it is absent or not a list of string maps."""
    if raw is None:
        return None
    try:
        value = json.loads(str(raw))
    except ValueError:
        return None
    if not isinstance(value, list) or not all(
            isinstance(item, dict) and all(isinstance(v, str) for v in item.values()) for item in value):
        return None
    return tuple(value)


def signature_problem(actor: str, digest: str, raw: object, trust: TrustList) -> str | None:
    """Why an entry's signatures do not prove ``actor`` signed ``digest``, or None when they do."""
    if raw is None:
        return "it is unsigned (written before tcpkit signed its audit log, or its signature was removed)"
    signatures = _signatures(raw)
    if signatures is None:
        return "its signatures column is not a list of signatures (edited)"
    record = trust.get(actor)
    if record is None:
        return (f"it is signed as {actor}, whose key is not on the trust list "
                f"(trusted: {', '.join(trust.names) or 'nobody'})")
    message = signing_message(digest)
    for alg_name in REQUIRED_ALGORITHMS:
        algorithm = get_algorithm(alg_name)
        public = record.key(alg_name).key
        ok = False
        for item in signatures:
            if item.get("algorithm") != alg_name:
                continue
            try:
                sig = base64.b64decode(item.get("sig", ""), validate=True)
            except (binascii.Error, ValueError):
                continue
            ok = ok or algorithm.verify(public, sig, message)
        if not ok:
            return (f"its {alg_name} signature does not verify under the trusted key of {actor} "
                    "(altered, or signed with another key)")
    return None


def entries(rows: list[sqlite3.Row]) -> list[AuditEntry]:
    """Rows of the ``audit`` table as :class:`AuditEntry` values."""
    return [_entry(row) for row in rows]


def verify_chain(rows: list[sqlite3.Row], trust: TrustList) -> AuditBreak | None:
    """The first entry whose link, hash or signature fails, or None when every entry holds.

    ``rows`` are the audit table's rows ordered by ``seq``; ``trust`` is the
    workspace's trust list, against which each entry's signatures are checked.
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
        problem = signature_problem(actor, str(row["hash"]), row["signatures"], trust)
        if problem is not None:
            return AuditBreak(seq, action, actor, at, problem)
        prev = row["hash"]
        expected_seq += 1
    return None
