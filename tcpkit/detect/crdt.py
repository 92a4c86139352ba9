"""The per-node moments map: a state-based CRDT for a coordinator-free baseline.

Every network node K owns exactly one key, its own node id, and publishes
there its current :class:`~tcpkit.detect.moments.Moments` under a version
``(incarnation, counter)``. A replica is the map ``node_id -> Entry``; two
replicas join by keeping, per key, the entry with the higher version (ties, which
only a misbehaving writer can produce, are broken by the payload digest, then by
whether the entry is signed, then by the signature bytes: content only, never
arrival order). That join is a least upper bound in a total order per key,
so it is commutative, associative and idempotent: messages may be lost,
duplicated, reordered or delayed and every replica that has seen the same set of
entries holds the same map. The global baseline folds the entries in sorted
node order, so equal maps give bit-identical baselines.

Why a map and not merged messages: a duplicated message merged as moments would
count its rows twice. Why a persisted incarnation: a node that restarts with its
counter at zero would otherwise publish versions that lose to its own old ones
(:func:`bump_incarnation`).

Signatures are optional and pluggable: a :class:`Replica` given a ``verifier``
callable rejects unsigned and forged entries. The callable receives
``(node_id, signing_bytes, signature)``; this module never imports the key
management of :mod:`tcpkit.release`.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from tcpkit.detect.files import write_text_atomic
from tcpkit.detect.moments import Moments, MomentsFormatError, merge_all

Verifier = Callable[[str, bytes, bytes], bool]
"""``verifier(node_id, signing_bytes, signature) -> bool``: True only for a valid signature."""
Signer = Callable[[bytes], bytes]
"""``signer(signing_bytes) -> signature`` with the publishing node's private key."""
Combine = Callable[[Sequence[Moments]], Moments]
"""A global combine over the entries' moments, given in sorted node order."""

STATE_MAGIC = b"TCPS"
STATE_FORMAT_VERSION = 1
_SIGNING_DOMAIN = b"tcpkit.crdt.entry.v1\x00"
_STATE_HEADER = struct.Struct("<4sBI")
_ENTRY_HEADER = struct.Struct("<HQQII")  # node-id length, incarnation, counter, payload len, sig len
_TRAILER = struct.Struct("<I")
MAX_NODE_ID_BYTES = 255
MAX_SIGNATURE_BYTES = 8192


DIGEST_MAGIC = b"TCPD"
DIGEST_FORMAT_VERSION = 1
_DIGEST_HEADER = struct.Struct("<4sBI")
_DIGEST_TAIL = struct.Struct("<8s4s")  # fingerprint, signature tag
FINGERPRINT_BYTES = 8
SIGNATURE_TAG_BYTES = 4


class StateFormatError(ValueError):
    """A serialised replica state that is truncated, garbled or of an unknown version."""


@dataclass(frozen=True, order=True)
class Version:
    """``(incarnation, counter)``, ordered lexicographically: a restart outranks all earlier writes."""

    incarnation: int
    counter: int

    def __post_init__(self) -> None:
        for name in ("incarnation", "counter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
                raise ValueError(f"version {name} must be an integer in [0, 2**63), got {value!r}")


def _check_node_id(node_id: object) -> str:
    if not isinstance(node_id, str) or not node_id:
        raise ValueError(f"node_id must be a non-empty string, got {node_id!r}")
    if len(node_id.encode("utf-8")) > MAX_NODE_ID_BYTES:
        raise ValueError(f"node_id {node_id[:20]!r}... is longer than {MAX_NODE_ID_BYTES} bytes")
    return node_id


@dataclass(frozen=True)
class Entry:
    """One node's published moments: ``node_id``, ``version``, ``payload`` (Moments wire bytes), ``signature``."""

    node_id: str
    version: Version
    payload: bytes
    signature: bytes | None = None
    _moments: Moments = field(init=False, repr=False, compare=False)
    _digest: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_node_id(self.node_id)
        if not isinstance(self.version, Version):
            raise ValueError(f"version must be a Version, got {type(self.version).__name__}")
        if not isinstance(self.payload, bytes):
            raise ValueError(f"payload must be bytes, got {type(self.payload).__name__}")
        if self.signature is not None and (
            not isinstance(self.signature, bytes) or len(self.signature) > MAX_SIGNATURE_BYTES
        ):
            raise ValueError("signature must be bytes of at most 8192 bytes, or None")
        object.__setattr__(self, "_moments", Moments.from_bytes(self.payload))
        object.__setattr__(self, "_digest", hashlib.sha256(self.payload).digest())

    @classmethod
    def create(
        cls, node_id: str, version: Version, moments: Moments, signer: Signer | None = None
    ) -> Entry:
        """Build (and, with ``signer``, sign) the entry publishing ``moments``."""
        payload = moments.to_bytes()
        signature = None
        if signer is not None:
            signature = signer(signing_bytes(node_id, version, payload))
        return cls(node_id, version, payload, signature)

    @property
    def moments(self) -> Moments:
        return self._moments

    @property
    def digest(self) -> bytes:
        """SHA-256 of the payload."""
        return self._digest

    @property
    def order_key(self) -> tuple[int, int, bytes, bool, bytes]:
        """Total order used by the join: version, payload digest, signed or not, signature.

        Two different entries of one node never share this key (an unsigned entry and
        one with an empty signature differ in the flag), so the join's winner is a
        function of the entries' content alone, whatever order they arrive in.
        """
        return (
            self.version.incarnation,
            self.version.counter,
            self._digest,
            self.signature is not None,
            self.signature if self.signature is not None else b"",
        )

    def signing_bytes(self) -> bytes:
        return signing_bytes(self.node_id, self.version, self.payload)

    @property
    def summary(self) -> tuple[int, int, bytes]:
        """``(incarnation, counter, payload-digest prefix)``, ordered like :attr:`order_key`.

        Only entries sharing a version and a 64-bit payload-digest prefix compare equal
        here while differing in :attr:`order_key`; :attr:`signature_tag` tells apart the
        ones that differ in their signature.
        """
        return (self.version.incarnation, self.version.counter, self._digest[:FINGERPRINT_BYTES])

    @property
    def signature_tag(self) -> bytes:
        """First 4 bytes of SHA-256 of the signature (zeros when unsigned)."""
        if self.signature is None:
            return bytes(SIGNATURE_TAG_BYTES)
        return hashlib.sha256(self.signature).digest()[:SIGNATURE_TAG_BYTES]


def signing_bytes(node_id: str, version: Version, payload: bytes) -> bytes:
    """The exact bytes a node signs: domain tag, node id, version and payload, length-prefixed."""
    name = _check_node_id(node_id).encode("utf-8")
    return (
        _SIGNING_DOMAIN
        + struct.pack("<H", len(name))
        + name
        + struct.pack("<QQI", version.incarnation, version.counter, len(payload))
        + payload
    )


def entry_wire(entry: Entry) -> bytes:
    """One entry's record in the state wire format: header, node id, payload, signature."""
    name = entry.node_id.encode("utf-8")
    sig = entry.signature if entry.signature is not None else b""
    flags = 0x8000_0000 if entry.signature is not None else 0
    header = _ENTRY_HEADER.pack(
        len(name), entry.version.incarnation, entry.version.counter, len(entry.payload), len(sig) | flags
    )
    return header + name + entry.payload + sig


def state_wire(records: Sequence[bytes]) -> bytes:
    """A whole state message from entry records already in sorted node order (see :meth:`State.to_bytes`)."""
    body = _STATE_HEADER.pack(STATE_MAGIC, STATE_FORMAT_VERSION, len(records)) + b"".join(records)
    return body + _TRAILER.pack(zlib.crc32(body))


def _winner(a: Entry, b: Entry) -> Entry:
    return a if a.order_key >= b.order_key else b


@dataclass(frozen=True, eq=False)
class State:
    """An immutable replica map ``node_id -> Entry``; the CRDT value.

    Use :meth:`of` to build one and :meth:`join` to merge two.
    """

    entries: Mapping[str, Entry]

    def __post_init__(self) -> None:
        checked: dict[str, Entry] = {}
        for key in sorted(self.entries):
            entry = self.entries[key]
            if not isinstance(entry, Entry) or entry.node_id != key:
                raise ValueError(f"state key {key!r} must map to an Entry written by that node")
            checked[key] = entry
        object.__setattr__(self, "entries", MappingProxyType(checked))

    @classmethod
    def of(cls, entries: Iterable[Entry] = ()) -> State:
        """The join of the singleton maps of ``entries`` (any order, duplicates harmless)."""
        best: dict[str, Entry] = {}
        for entry in entries:
            old = best.get(entry.node_id)
            best[entry.node_id] = entry if old is None else _winner(old, entry)
        return cls(best)

    def join(self, other: State) -> State:
        """Least upper bound: per key, the entry with the higher version."""
        if not isinstance(other, State):
            raise TypeError(f"can only join a State, not {type(other).__name__}")
        merged = dict(self.entries)
        changed = False
        for key, entry in other.entries.items():
            old = merged.get(key)
            if old is None or _winner(old, entry) is not old:
                merged[key] = entry
                changed = True
        return State(merged) if changed else self

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, State):
            return NotImplemented
        return dict(self.entries) == dict(other.entries)

    def __hash__(self) -> int:
        return hash(tuple(self.entries.items()))

    def __len__(self) -> int:
        return len(self.entries)

    def moments_in_order(self) -> list[Moments]:
        """The entries' moments in sorted node order (the order every fold uses)."""
        return [self.entries[key].moments for key in sorted(self.entries)]

    def baseline(self, combine: Combine | None = None) -> Moments:
        """Global moments: ``combine`` (default: Chan merge) over entries in sorted node order."""
        parts = self.moments_in_order()
        if not parts:
            raise ValueError("the replica holds no entries yet: no baseline to compute")
        if combine is None:
            return merge_all(parts)
        return combine(parts)

    def digest(self) -> Digest:
        """The version vector of this map (what a peer needs to compute a delta for us)."""
        return Digest({key: (*e.summary, e.signature_tag) for key, e in self.entries.items()})

    def delta(self, digest: Digest) -> State:
        """The entries a peer holding ``digest`` is missing or holds in an older version.

        Joining the result into the peer's map gives the same map as joining the whole
        state: every entry left out is one the peer already has at least as new. An entry
        whose summary equals the peer's but whose signature tag differs is sent too (the
        join then picks the winner), so signature ties resolve as in a full exchange.
        """
        if not isinstance(digest, Digest):
            raise TypeError(f"delta needs a Digest, not {type(digest).__name__}")
        known = digest.versions
        keep: dict[str, Entry] = {}
        for key, e in self.entries.items():
            theirs = known.get(key)
            mine = e.summary
            if theirs is None or mine > theirs[:3] or (mine == theirs[:3] and e.signature_tag != theirs[3]):
                keep[key] = e
        return State(keep)

    # --- wire format --------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Serialise every entry (sorted by node id) with a CRC-32 trailer."""
        return state_wire([entry_wire(self.entries[key]) for key in sorted(self.entries)])

    @classmethod
    def from_bytes(cls, data: bytes) -> State:
        """Parse :meth:`to_bytes`; anything truncated or garbled is refused as a whole."""
        raw = bytes(data)
        if len(raw) < _STATE_HEADER.size + _TRAILER.size:
            raise StateFormatError(f"state message is truncated: {len(raw)} bytes")
        body, (crc,) = raw[: -_TRAILER.size], _TRAILER.unpack_from(raw, len(raw) - _TRAILER.size)
        magic, version, count = _STATE_HEADER.unpack_from(body)
        if magic != STATE_MAGIC:
            raise StateFormatError(f"state message has bad magic {magic!r}, expected {STATE_MAGIC!r}")
        if version != STATE_FORMAT_VERSION:
            raise StateFormatError(
                f"state message has format version {version}, this reader knows "
                f"{STATE_FORMAT_VERSION}"
            )
        if zlib.crc32(body) != crc:
            raise StateFormatError("state message fails its CRC-32 checksum: truncated or garbled")
        pos = _STATE_HEADER.size
        entries: list[Entry] = []
        try:
            for _ in range(count):
                name_len, inc, ctr, pay_len, sig_word = _ENTRY_HEADER.unpack_from(body, pos)
                pos += _ENTRY_HEADER.size
                has_sig, sig_len = bool(sig_word & 0x8000_0000), sig_word & 0x7FFF_FFFF
                end = pos + name_len + pay_len + sig_len
                if end > len(body):
                    raise StateFormatError("state message entry runs past the end of the message")
                name = body[pos : pos + name_len].decode("utf-8")
                payload = body[pos + name_len : pos + name_len + pay_len]
                sig = body[pos + name_len + pay_len : end] if has_sig else None
                pos = end
                entries.append(Entry(name, Version(inc, ctr), payload, sig))
        except (struct.error, UnicodeDecodeError, MomentsFormatError, ValueError) as exc:
            if isinstance(exc, StateFormatError):
                raise
            raise StateFormatError(f"state message has a malformed entry: {exc}") from None
        if pos != len(body):
            raise StateFormatError(f"state message has {len(body) - pos} trailing bytes")
        keys = [e.node_id for e in entries]
        if len(set(keys)) != len(keys):
            raise StateFormatError("state message lists a node id twice")
        return cls.of(entries)


@dataclass(frozen=True, eq=False)
class Digest:
    """A replica's version vector: ``node_id -> (incarnation, counter, fingerprint, sig tag)``.

    The first message of a delta anti-entropy exchange: it is much smaller than the
    state (no moments payloads), and lets the peer answer with :meth:`State.delta`.
    The fingerprint is the first 8 bytes of the entry's payload digest, so two entries
    of one version with different payloads are told apart (and ordered as the join
    orders them); the signature tag tells apart entries differing only in signature.
    """

    versions: Mapping[str, tuple[int, int, bytes, bytes]]

    def __post_init__(self) -> None:
        checked: dict[str, tuple[int, int, bytes, bytes]] = {}
        for key in sorted(self.versions):
            _check_node_id(key)
            inc, ctr, fp, tag = self.versions[key]
            Version(inc, ctr)
            if not isinstance(fp, bytes) or len(fp) != FINGERPRINT_BYTES:
                raise ValueError(f"digest fingerprint of {key!r} must be {FINGERPRINT_BYTES} bytes")
            if not isinstance(tag, bytes) or len(tag) != SIGNATURE_TAG_BYTES:
                raise ValueError(f"digest signature tag of {key!r} must be {SIGNATURE_TAG_BYTES} bytes")
            checked[key] = (inc, ctr, fp, tag)
        object.__setattr__(self, "versions", MappingProxyType(checked))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Digest):
            return NotImplemented
        return dict(self.versions) == dict(other.versions)

    def __hash__(self) -> int:
        return hash(tuple(self.versions.items()))

    def __len__(self) -> int:
        return len(self.versions)

    def to_bytes(self) -> bytes:
        """Header, then per key (sorted): name length (1 byte), name, incarnation and counter
        (LEB128 varints: one byte each below 128), fingerprint, signature tag; a CRC-32 trailer."""
        chunks = [_DIGEST_HEADER.pack(DIGEST_MAGIC, DIGEST_FORMAT_VERSION, len(self.versions))]
        for key, (inc, ctr, fp, tag) in self.versions.items():
            name = key.encode("utf-8")
            chunks += [bytes([len(name)]), name, _varint(inc), _varint(ctr), _DIGEST_TAIL.pack(fp, tag)]
        body = b"".join(chunks)
        return body + _TRAILER.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes) -> Digest:
        """Parse :meth:`to_bytes`; anything truncated or garbled is refused as a whole."""
        raw = bytes(data)
        if len(raw) < _DIGEST_HEADER.size + _TRAILER.size:
            raise StateFormatError(f"digest message is truncated: {len(raw)} bytes")
        body, (crc,) = raw[: -_TRAILER.size], _TRAILER.unpack_from(raw, len(raw) - _TRAILER.size)
        magic, version, count = _DIGEST_HEADER.unpack_from(body)
        if magic != DIGEST_MAGIC:
            raise StateFormatError(f"digest message has bad magic {magic!r}, expected {DIGEST_MAGIC!r}")
        if version != DIGEST_FORMAT_VERSION:
            raise StateFormatError(
                f"digest message has format version {version}, this reader knows {DIGEST_FORMAT_VERSION}"
            )
        if zlib.crc32(body) != crc:
            raise StateFormatError("digest message fails its CRC-32 checksum: truncated or garbled")
        pos = _DIGEST_HEADER.size
        versions: dict[str, tuple[int, int, bytes, bytes]] = {}
        try:
            for _ in range(count):
                name_len = body[pos]
                name = body[pos + 1 : pos + 1 + name_len].decode("utf-8")
                pos += 1 + name_len
                inc, pos = _read_varint(body, pos)
                ctr, pos = _read_varint(body, pos)
                fp, tag = _DIGEST_TAIL.unpack_from(body, pos)
                pos += _DIGEST_TAIL.size
                if name in versions:
                    raise StateFormatError("digest message lists a node id twice")
                versions[name] = (inc, ctr, fp, tag)
        except (IndexError, struct.error, UnicodeDecodeError) as exc:
            raise StateFormatError(f"digest message has a malformed entry: {exc}") from None
        if pos != len(body):
            raise StateFormatError(f"digest message has {len(body) - pos} trailing bytes")
        try:
            return cls(versions)
        except ValueError as exc:
            raise StateFormatError(f"digest message has an invalid entry: {exc}") from None


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(body: bytes, pos: int) -> tuple[int, int]:
    """Decode a LEB128 varint at ``pos``; returns (value, next position)."""
    value = shift = 0
    while True:
        if shift > 63:
            raise StateFormatError("digest message has a varint longer than 64 bits")
        byte = body[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


@dataclass(frozen=True)
class ReceiveReport:
    """What :meth:`Replica.receive` did: entries accepted and rejected (with reasons)."""

    accepted: int
    rejected: tuple[tuple[str, str], ...]
    changed: bool


class Replica:
    """One node's replica: owns its key, publishes versions, receives and verifies others' states.

    Parameters
    ----------
    node_id : str
        This node's key.
    incarnation : int
        Restart generation; use :meth:`open` to read and bump it from a file.
    verifier : callable, optional
        ``verifier(node_id, signing_bytes, signature) -> bool``. When given, unsigned
        entries and entries whose signature does not verify are rejected.
    signer : callable, optional
        Signs this node's own entries (``signer(signing_bytes) -> signature``).
    """

    def __init__(
        self,
        node_id: str,
        *,
        incarnation: int = 0,
        verifier: Verifier | None = None,
        signer: Signer | None = None,
    ) -> None:
        self.node_id = _check_node_id(node_id)
        Version(incarnation, 0)  # validates the incarnation
        self.incarnation = incarnation
        self.counter = 0
        self.verifier = verifier
        self.signer = signer
        self.state = State.of()

    @classmethod
    def open(
        cls,
        node_id: str,
        incarnation_path: str | os.PathLike[str],
        *,
        verifier: Verifier | None = None,
        signer: Signer | None = None,
    ) -> Replica:
        """Start (or restart) node ``node_id``: bump the persisted incarnation, start empty."""
        incarnation = bump_incarnation(incarnation_path)
        return cls(node_id, incarnation=incarnation, verifier=verifier, signer=signer)

    def publish(self, moments: Moments) -> Entry:
        """Write this node's key with a fresh version and return the entry."""
        self.counter += 1
        entry = Entry.create(self.node_id, Version(self.incarnation, self.counter), moments, self.signer)
        self.state = self.state.join(State.of([entry]))
        return entry

    def _check(self, entry: Entry) -> str | None:
        if self.verifier is None:
            return None
        if entry.signature is None:
            return "unsigned"
        try:
            ok = self.verifier(entry.node_id, entry.signing_bytes(), entry.signature)
        except Exception:  # a verifier that raises has not verified anything
            ok = False
        return None if ok is True else "bad signature"

    def receive(self, message: State | bytes) -> ReceiveReport:
        """Join a peer's state (or its wire bytes) after verifying every entry.

        A message that does not parse is refused as a whole (:class:`StateFormatError`)
        and changes nothing; individual entries failing verification are dropped.
        """
        incoming = State.from_bytes(message) if isinstance(message, bytes | bytearray) else message
        if not isinstance(incoming, State):
            raise TypeError(f"receive expects a State or bytes, not {type(message).__name__}")
        good: list[Entry] = []
        rejected: list[tuple[str, str]] = []
        for entry in incoming.entries.values():
            reason = self._check(entry)
            if reason is None:
                good.append(entry)
            else:
                rejected.append((entry.node_id, reason))
        before = self.state
        self.state = before.join(State.of(good))
        return ReceiveReport(len(good), tuple(rejected), self.state is not before)

    def baseline(self, combine: Combine | None = None) -> Moments:
        return self.state.baseline(combine)


def bump_incarnation(path: str | os.PathLike[str]) -> int:
    """Read the incarnation stored at ``path``, add one, write it back atomically, return it.

    A missing file means first start (incarnation 0). The write goes to a temporary
    file in the same directory, is fsynced and renamed over the old one, so a crash
    at any instant leaves either the old or the new number, never a torn file.
    """
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"incarnation path {target} is a directory, expected a file")
    current = -1
    if target.exists():
        text = target.read_text(encoding="ascii", errors="replace").strip()
        if not text.isdigit():
            raise ValueError(f"incarnation file {target} does not hold a non-negative integer")
        current = int(text)
    new = current + 1
    Version(new, 0)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, f"{new}\n", encoding="ascii")
    return new


# --- order independence, measured -----------------------------------------------------------
@dataclass(frozen=True)
class OrderTrials:
    """Outcome of :func:`order_independence_trials`.

    Attributes
    ----------
    trials : int
        Random delivery orders tried.
    n_nodes, n_messages : int
        Keys in the map; entries delivered per trial (duplicates included).
    n_duplicates, n_version_ties, n_signature_ties, n_restarts, n_stale : int
        Copies delivered a second time; nodes given a rival payload at their top
        version; rivals differing only in the signature; nodes re-published under a
        higher incarnation; distinct entries whose version is below their node's winner.
    distinct_states : int
        Distinct SHA-256 digests of the serialised joined states over all trials
        (1 when every order gave the same bytes).
    matches_specification : bool
        The joined state's bytes equal those of the map that keeps, per node, the
        entry with the largest ``(incarnation, counter, sha256(payload), signed,
        signature)``, computed here without the join.
    state_sha256 : str
        Hex digest of the first trial's joined state.
    """

    trials: int
    n_nodes: int
    n_messages: int
    n_duplicates: int
    n_version_ties: int
    n_signature_ties: int
    n_restarts: int
    n_stale: int
    distinct_states: int
    matches_specification: bool
    state_sha256: str

    @property
    def order_independent(self) -> bool:
        """Every order agreed byte for byte, on the map the specification names."""
        return self.distinct_states == 1 and self.matches_specification


def _spec_key(entry: Entry) -> tuple[int, int, bytes, bool, bytes]:
    """The join's documented order, recomputed from the entry's fields (not its cached key)."""
    sig = entry.signature
    return (
        entry.version.incarnation,
        entry.version.counter,
        hashlib.sha256(entry.payload).digest(),
        sig is not None,
        sig if sig is not None else b"",
    )


def _perturbed(moments: Moments, rng: np.random.Generator) -> Moments:
    """Other moments of the same shape (a different payload for the same node)."""
    mean = np.asarray(moments.mean) + rng.normal(size=moments.n_features) * (
        1e-6 * (1.0 + np.abs(np.asarray(moments.mean)))
    )
    return Moments(moments.n + 1, mean, np.asarray(moments.m2))


def order_independence_trials(
    entries: Sequence[Entry],
    rng: np.random.Generator,
    trials: int = 20,
    *,
    tie_fraction: float = 0.25,
    restart_fraction: float = 0.25,
    duplicate_fraction: float = 0.5,
) -> OrderTrials:
    """Join ``entries``, mixed with ties, restarts and duplicates, in random orders; compare bytes.

    Per node (taking its highest entry in ``entries``), with probability
    ``tie_fraction`` rival entries are added at that same version: one with a different
    payload (a version tie only a misbehaving writer produces), one with the same
    payload and the signature flipped between absent and empty, and, for half of those
    nodes, one with random signature bytes; otherwise, with probability ``restart_fraction``, the node
    re-publishes other moments under incarnation + 1, counter 1 (a restart), which
    makes the old entry stale. Then ``duplicate_fraction`` times as many entries as
    there are are delivered a second time.

    Each trial shuffles that multiset, cuts it into random messages (``State.of`` of
    each piece), and joins the messages pairwise in a random tree with random operand
    order, then serialises the result. The join is order independent on this input
    when every trial gives the same bytes and those are the bytes of the map the
    specification names (see :class:`OrderTrials`).

    Parameters
    ----------
    entries : sequence of Entry
        At least one entry; several entries of one node are allowed.
    rng : numpy.random.Generator
        Source of the rivals, the duplicates and the orders.
    trials : int
        Random orders (>= 2).
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    base = list(entries)
    if not base or not all(isinstance(e, Entry) for e in base):
        raise ValueError("entries must be a non-empty sequence of Entry")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 2:
        raise ValueError(f"trials must be an integer >= 2, got {trials!r}")
    for name, value in (
        ("tie_fraction", tie_fraction),
        ("restart_fraction", restart_fraction),
        ("duplicate_fraction", duplicate_fraction),
    ):
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if tie_fraction + restart_fraction > 1.0:
        raise ValueError("tie_fraction + restart_fraction must be at most 1")

    top: dict[str, Entry] = {}
    for e in base:
        old = top.get(e.node_id)
        top[e.node_id] = e if old is None or _spec_key(e) > _spec_key(old) else old
    pool = list(base)
    ties = sig_ties = restarts = 0
    for node in sorted(top):
        e = top[node]
        u = float(rng.random())
        if u < tie_fraction:
            pool.append(Entry(node, e.version, _perturbed(e.moments, rng).to_bytes(), e.signature))
            other = b"" if e.signature is None else None
            pool.append(Entry(node, e.version, e.payload, other))
            ties += 1
            sig_ties += 1
            if rng.random() < 0.5:  # else the signed/unsigned pair may be the top of its node
                pool.append(Entry(node, e.version, e.payload, rng.bytes(64)))
                sig_ties += 1
        elif u < tie_fraction + restart_fraction:
            restarted = Version(e.version.incarnation + 1, 1)
            pool.append(Entry(node, restarted, _perturbed(e.moments, rng).to_bytes(), e.signature))
            restarts += 1
    n_dup = int(round(duplicate_fraction * len(pool)))
    messages = pool + [pool[int(i)] for i in rng.integers(0, len(pool), size=n_dup)]

    best: dict[str, Entry] = {}
    for e in pool:
        old = best.get(e.node_id)
        best[e.node_id] = e if old is None or _spec_key(e) > _spec_key(old) else old
    expected = State(best).to_bytes()
    n_stale = sum(e.version < best[e.node_id].version for e in set(pool))

    digests: list[str] = []
    first = b""
    for _ in range(trials):
        order = [messages[int(i)] for i in rng.permutation(len(messages))]
        n_cuts = int(rng.integers(0, len(order)))
        cuts = np.sort(rng.choice(np.arange(1, len(order)), size=min(n_cuts, len(order) - 1), replace=False))
        pieces = [State.of(chunk) for chunk in np.split(np.array(order, dtype=object), cuts)]
        while len(pieces) > 1:
            i, j = (int(k) for k in rng.choice(len(pieces), size=2, replace=False))
            a, b = pieces[i], pieces[j]
            joined = a.join(b) if rng.random() < 0.5 else b.join(a)
            pieces = [p for k, p in enumerate(pieces) if k not in (i, j)] + [joined]
        blob = pieces[0].to_bytes()
        first = first or blob
        digests.append(hashlib.sha256(blob).hexdigest())
    return OrderTrials(
        trials=trials,
        n_nodes=len(best),
        n_messages=len(messages),
        n_duplicates=n_dup,
        n_version_ties=ties,
        n_signature_ties=sig_ties,
        n_restarts=restarts,
        n_stale=n_stale,
        distinct_states=len(set(digests)),
        matches_specification=first == expected,
        state_sha256=digests[0],
    )
