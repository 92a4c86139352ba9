"""The per-node moments map: join-semilattice laws, wire format, signatures, incarnations."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpkit.detect.crdt import (
    Entry,
    Replica,
    State,
    StateFormatError,
    Version,
    bump_incarnation,
)
from tcpkit.detect.moments import Moments

_RNG = np.random.default_rng(11)
PAYLOADS = [Moments.from_batch(1e6 + _RNG.normal(size=(k, 3))) for k in (2, 5, 9, 17)]

entries = st.builds(
    lambda node, inc, ctr, p, sig: Entry(node, Version(inc, ctr), PAYLOADS[p].to_bytes(), sig),
    st.sampled_from(["a", "b", "c", "d"]),
    st.integers(0, 2),
    st.integers(0, 3),
    st.integers(0, len(PAYLOADS) - 1),
    st.sampled_from([None, b"s1", b"s2"]),
)
states = st.lists(entries, max_size=8).map(State.of)


@settings(max_examples=150, deadline=None)
@given(states, states)
def test_join_is_commutative(a: State, b: State) -> None:
    assert a.join(b) == b.join(a)


@settings(max_examples=150, deadline=None)
@given(states, states, states)
def test_join_is_associative(a: State, b: State, c: State) -> None:
    assert a.join(b).join(c) == a.join(b.join(c))


@settings(max_examples=100, deadline=None)
@given(states, states)
def test_join_is_idempotent_and_an_upper_bound(a: State, b: State) -> None:
    assert a.join(a) == a
    ab = a.join(b)
    assert ab.join(a) == ab and ab.join(b) == ab


@settings(max_examples=100, deadline=None)
@given(st.lists(states, min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_any_delivery_order_of_any_multiset_converges(messages: list[State], rnd) -> None:  # type: ignore[no-untyped-def]
    # a multiset: some messages duplicated, then delivered in a random order
    multiset = messages + [rnd.choice(messages) for _ in range(rnd.randint(0, 4))]
    shuffled = list(multiset)
    rnd.shuffle(shuffled)
    expected = functools.reduce(State.join, messages, State.of())
    replica = Replica("observer")
    for message in shuffled:
        replica.receive(message.to_bytes())
    assert replica.state == expected
    if len(expected):
        assert replica.baseline().to_bytes() == expected.baseline().to_bytes()


def test_higher_version_wins_and_restart_outranks_old_counters() -> None:
    old = Entry.create("a", Version(0, 9), PAYLOADS[0])
    new = Entry.create("a", Version(1, 1), PAYLOADS[1])
    assert State.of([old]).join(State.of([new])).entries["a"] == new
    assert State.of([new]).join(State.of([old])).entries["a"] == new


def test_baseline_folds_in_sorted_node_order_bit_identically() -> None:
    es = [Entry.create(k, Version(0, 1), p) for k, p in zip("dcba", PAYLOADS, strict=True)]
    one = State.of(es)
    two = State.of(reversed(es))
    assert one.baseline().to_bytes() == two.baseline().to_bytes()
    pooled_n = sum(p.n for p in PAYLOADS)
    assert one.baseline().n == pooled_n


def test_state_wire_format_refuses_damage_and_leaves_replica_unchanged() -> None:
    state = State.of(Entry.create(k, Version(0, 1), PAYLOADS[0], signer=lambda b: b"sig") for k in "abc")
    blob = state.to_bytes()
    assert State.from_bytes(blob) == state
    replica = Replica("z")
    replica.publish(PAYLOADS[1])
    before = replica.state
    for bad in (blob[:-3], blob[:20], b"NOPE" + blob[4:], blob[:4] + b"\x07" + blob[5:]):
        with pytest.raises(StateFormatError):
            replica.receive(bad)
        assert replica.state is before
    garbled = bytearray(blob)
    garbled[len(blob) // 2] ^= 0xFF
    with pytest.raises(StateFormatError, match="checksum"):
        replica.receive(bytes(garbled))
    assert replica.state is before


def test_entry_validation() -> None:
    with pytest.raises(ValueError, match="node_id"):
        Entry.create("", Version(0, 1), PAYLOADS[0])
    with pytest.raises(ValueError, match="incarnation"):
        Version(-1, 0)
    with pytest.raises(ValueError, match="truncated"):
        Entry("a", Version(0, 1), b"TCPM")


# --- signatures: a small Ed25519 verifier built from cryptography directly ------------------
class _Keys:
    def __init__(self, names: str) -> None:
        self.private = {n: Ed25519PrivateKey.generate() for n in names}
        self.public: dict[str, Ed25519PublicKey] = {n: k.public_key() for n, k in self.private.items()}

    def signer(self, name: str):  # type: ignore[no-untyped-def]
        return self.private[name].sign

    def verify(self, node_id: str, message: bytes, signature: bytes) -> bool:
        key = self.public.get(node_id)
        if key is None:
            return False
        try:
            key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


def test_verifier_rejects_unsigned_and_forged_entries() -> None:
    keys = _Keys("abm")
    a = Replica("a", signer=keys.signer("a"))
    b = Replica("b", signer=keys.signer("b"))
    observer = Replica("o", verifier=keys.verify)
    a.publish(PAYLOADS[0])
    b.publish(PAYLOADS[1])
    report = observer.receive(a.state.join(b.state).to_bytes())
    assert report.accepted == 2 and not report.rejected

    unsigned = Entry.create("c", Version(0, 1), PAYLOADS[2])
    # mallory signs an entry claiming to be node "a" with a higher version
    claim = Entry.create("a", Version(5, 1), PAYLOADS[3], signer=keys.signer("m"))
    # a valid signature of "b" transplanted onto a different payload
    good_b = b.state.entries["b"]
    tampered = Entry("b", Version(0, 2), PAYLOADS[3].to_bytes(), good_b.signature)
    report = observer.receive(State.of([unsigned, claim, tampered]))
    assert report.accepted == 0
    assert dict(report.rejected) == {"c": "unsigned", "a": "bad signature", "b": "bad signature"}
    assert observer.state.entries["a"] == a.state.entries["a"]
    assert observer.state.entries["b"] == good_b
    assert "c" not in observer.state.entries


def test_verifier_that_raises_counts_as_rejection() -> None:
    def broken(node_id: str, message: bytes, signature: bytes) -> bool:
        raise RuntimeError("keyring unavailable")

    observer = Replica("o", verifier=broken)
    entry = Entry.create("a", Version(0, 1), PAYLOADS[0], signer=lambda m: b"x")
    report = observer.receive(State.of([entry]))
    assert report.accepted == 0 and not report.changed


# --- incarnations ---------------------------------------------------------------------------
def test_incarnation_is_persisted_and_bumped(tmp_path: Path) -> None:
    path = tmp_path / "node" / "a.incarnation"
    first = Replica.open("a", path)
    assert first.incarnation == 0
    for _ in range(5):
        first.publish(PAYLOADS[0])
    restarted = Replica.open("a", path)
    assert restarted.incarnation == 1 and path.read_text().strip() == "1"
    restarted.publish(PAYLOADS[2])
    merged = restarted.state.join(first.state)
    assert merged.entries["a"].version == Version(1, 1)
    assert merged.entries["a"].moments == PAYLOADS[2]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_without_persisted_incarnation_the_restart_loses(tmp_path: Path) -> None:
    old = Replica("a")
    for _ in range(3):
        old.publish(PAYLOADS[0])
    amnesiac = Replica("a")  # incarnation 0 again, counter restarts
    amnesiac.publish(PAYLOADS[2])
    assert amnesiac.state.join(old.state).entries["a"].moments == PAYLOADS[0]


def test_incarnation_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text("not a number")
    with pytest.raises(ValueError, match="non-negative integer"):
        bump_incarnation(bad)
    assert bad.read_text() == "not a number"
    with pytest.raises(ValueError, match="directory"):
        bump_incarnation(tmp_path)


# --- digests and deltas (the delta anti-entropy exchange) ------------------------------------
@settings(max_examples=60, deadline=None)
@given(states, states)
def test_joining_the_delta_equals_joining_the_whole_state(a: State, b: State) -> None:
    from tcpkit.detect.crdt import Digest

    wire = Digest.from_bytes(b.digest().to_bytes())
    assert wire == b.digest()
    delta = a.delta(wire)
    assert b.join(delta) == b.join(a)
    assert set(delta.entries) <= set(a.entries)
    assert len(a.delta(a.digest())) == 0  # nothing to send to a peer that has it all


def test_delta_leaves_out_what_the_peer_has_and_digest_is_small() -> None:
    from tcpkit.detect.crdt import Digest

    old = Entry.create("a", Version(0, 1), PAYLOADS[0])
    new = Entry.create("a", Version(1, 1), PAYLOADS[1])
    other = Entry.create("b", Version(0, 1), PAYLOADS[2])
    mine = State.of([new, other])
    theirs = State.of([old, other])
    assert dict(mine.delta(theirs.digest()).entries) == {"a": new}
    assert len(theirs.delta(mine.digest())) == 0  # their older "a" is not sent back
    assert len(mine.digest().to_bytes()) < len(mine.to_bytes()) / 5
    with pytest.raises(TypeError, match="Digest"):
        mine.delta(theirs)  # type: ignore[arg-type]
    assert Digest.from_bytes(Digest({}).to_bytes()) == Digest({})


def test_digest_wire_format_refuses_damage() -> None:
    from tcpkit.detect.crdt import Digest

    blob = State.of([Entry.create("a", Version(3, 300), PAYLOADS[0])]).digest().to_bytes()
    assert Digest.from_bytes(blob).versions["a"][:2] == (3, 300)  # multi-byte varint
    with pytest.raises(StateFormatError, match="truncated"):
        Digest.from_bytes(blob[:5])
    with pytest.raises(StateFormatError, match="CRC"):
        Digest.from_bytes(blob[:-6] + bytes([blob[-6] ^ 1]) + blob[-5:])
    with pytest.raises(StateFormatError, match="magic"):
        Digest.from_bytes(b"XXXX" + blob[4:])
    with pytest.raises(StateFormatError, match="truncated"):
        Digest.from_bytes(State.of([Entry.create("a", Version(0, 1), PAYLOADS[0])]).to_bytes()[:3])
    with pytest.raises(ValueError, match="fingerprint"):
        Digest({"a": (0, 1, b"short", bytes(4))})


# --- measured order independence (the integrated notebook's crdt_order_independent) ---------
def _node_entries(n: int = 60, signed: bool = False) -> list[Entry]:
    rng = np.random.default_rng(5)
    sign = (lambda b: b"sig:" + b[-8:]) if signed else None
    return [
        Entry.create(f"node{i:03d}", Version(0, 1 + i % 3), Moments.from_batch(1e6 + rng.normal(size=(9, 3))), sign)
        for i in range(n)
    ]


def _crdt_gate_passes(value: object) -> bool:
    from tcpkit.release.gates import evaluate, load_pipeline

    pipeline = load_pipeline(Path(__file__).resolve().parents[1] / "notebooks" / "pipeline.toml",
                             require_notebooks=False)
    criteria = [c for c in pipeline.components["integrated"].gate("STAGING").criteria
                if c.metric == "crdt_order_independent"]
    assert criteria
    return evaluate(criteria, {"crdt_order_independent": value}).passed


@pytest.mark.parametrize("signed", [False, True])
def test_order_trials_agree_with_ties_restarts_and_duplicates(signed: bool) -> None:
    from tcpkit.detect.crdt import order_independence_trials

    result = order_independence_trials(_node_entries(signed=signed), np.random.default_rng(0), trials=12)
    assert result.order_independent and result.distinct_states == 1 and result.matches_specification
    assert result.n_version_ties > 0 and result.n_signature_ties > 0
    assert result.n_restarts > 0 and result.n_stale >= result.n_restarts and result.n_duplicates > 0
    assert result.n_nodes == 60 and result.trials == 12
    assert _crdt_gate_passes(result.order_independent)


def _arrival_order_wins(a: Entry, b: Entry) -> Entry:
    return b  # the later arrival wins: not a join


def _no_signed_flag(a: Entry, b: Entry) -> Entry:
    """The tie-break before the fix: an unsigned entry and an empty signature tied, first one won."""
    def key(e: Entry) -> tuple[int, int, bytes, bytes]:
        return (e.version.incarnation, e.version.counter, e.digest, e.signature or b"")

    return a if key(a) >= key(b) else b


def _lowest_wins(a: Entry, b: Entry) -> Entry:
    return a if a.order_key <= b.order_key else b  # order independent, but not the specification


@pytest.mark.parametrize("winner, order_dependent", [
    (_arrival_order_wins, True), (_no_signed_flag, True), (_lowest_wins, False),
])
def test_order_trials_fail_on_a_broken_join(monkeypatch: pytest.MonkeyPatch, winner, order_dependent) -> None:  # type: ignore[no-untyped-def]
    from tcpkit.detect import crdt

    monkeypatch.setattr(crdt, "_winner", winner)
    result = crdt.order_independence_trials(_node_entries(), np.random.default_rng(0), trials=12)
    assert not result.order_independent
    assert (result.distinct_states > 1) is order_dependent
    if not order_dependent:
        assert not result.matches_specification
    assert not _crdt_gate_passes(result.order_independent)


def test_order_trials_validate_their_input() -> None:
    from tcpkit.detect.crdt import order_independence_trials

    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="non-empty"):
        order_independence_trials([], rng)
    with pytest.raises(TypeError, match="Generator"):
        order_independence_trials(_node_entries(3), 0)
    with pytest.raises(ValueError, match="trials"):
        order_independence_trials(_node_entries(3), rng, trials=1)
    with pytest.raises(ValueError, match="tie_fraction"):
        order_independence_trials(_node_entries(3), rng, tie_fraction=0.8, restart_fraction=0.5)


def test_unsigned_and_empty_signature_tie_is_decided_by_content() -> None:
    unsigned = Entry.create("a", Version(0, 1), PAYLOADS[0])
    empty = Entry("a", Version(0, 1), PAYLOADS[0].to_bytes(), b"")
    one = State.of([unsigned]).join(State.of([empty]))
    two = State.of([empty]).join(State.of([unsigned]))
    assert one.to_bytes() == two.to_bytes() and one.entries["a"] == empty
