"""DSSE envelopes: hybrid signing, the strict verification policy, statements, interop."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpkit.release.algorithms import MLDSA_CONTEXT, get_algorithm
from tcpkit.release.dsse import canonical_payload
from tcpkit.release.signing import (
    PAYLOAD_TYPE,
    HybridSigner,
    TrustList,
    VerificationError,
    dump_envelope,
    load_envelope,
    make_statement,
    pae,
    sha256_hex,
    sign_statement,
    verify_artifact,
    verify_envelope,
    verify_envelope_signers,
)

MODULE = b"THRESHOLD = 3.5\n"
NAME = "production/statistics.py"


@pytest.fixture(scope="module")
def alice() -> HybridSigner:
    return HybridSigner.generate("alice")


@pytest.fixture(scope="module")
def bob() -> HybridSigner:
    return HybridSigner.generate("bob")


@pytest.fixture(scope="module")
def trust(alice: HybridSigner, bob: HybridSigner) -> TrustList:
    return TrustList.of([alice.public_record(), bob.public_record()])


def _statement(data: bytes = MODULE, passed: bool = True) -> dict[str, Any]:
    return make_statement(
        NAME,
        sha256_hex(data),
        gate="PRODUCTION",
        policy_uri="notebooks/pipeline.toml#statistics.PRODUCTION",
        policy_digest=sha256_hex(b"gate definition"),
        inputs={
            "reports/PRODUCTION/statistics.html": sha256_hex(b"report"),
            "runs/PRODUCTION/statistics.ipynb": sha256_hex(b"executed"),
        },
        passed=passed,
        verifier_id="tcpkit-pipeline",
        time="2025-03-01T12:00:00Z",
    )


def _sigs(envelope: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(s["sig"]) for s in envelope["signatures"]]


def test_statement_is_in_toto_v1_with_slsa_vsa() -> None:
    statement = _statement()
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"] == [{"name": NAME, "digest": {"sha256": sha256_hex(MODULE)}}]
    assert statement["predicateType"] == "https://slsa.dev/verification_summary/v1"
    predicate = statement["predicate"]
    assert predicate["verifier"] == {"id": "tcpkit-pipeline"}
    assert predicate["timeVerified"] == "2025-03-01T12:00:00Z"
    assert predicate["resourceUri"] == NAME
    assert predicate["policy"]["digest"]["sha256"] == sha256_hex(b"gate definition")
    assert [a["uri"] for a in predicate["inputAttestations"]] == sorted(
        ["reports/PRODUCTION/statistics.html", "runs/PRODUCTION/statistics.ipynb"]
    )
    assert predicate["verificationResult"] == "PASSED"
    assert predicate["verifiedLevels"] == ["TCPKIT_GATE_PRODUCTION"]
    assert not any(level.startswith("SLSA_") for level in predicate["verifiedLevels"])
    failed = _statement(passed=False)["predicate"]
    assert failed["verificationResult"] == "FAILED" and failed["verifiedLevels"] == []


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("subject_sha256", "abc", "subject_sha256"),
        ("gate", "staging", "gate"),
        ("policy_digest", "Z" * 64, "policy_digest"),
        ("time", "yesterday", "time"),
        ("inputs", {"r": "nothex"}, "digest of input"),
        ("verifier_id", "", "verifier_id"),
    ],
)
def test_make_statement_validates_inputs(field: str, value: Any, match: str) -> None:
    kwargs: dict[str, Any] = dict(
        gate="TESTING",
        policy_uri="p",
        policy_digest="0" * 64,
        inputs={},
        passed=True,
        verifier_id="v",
        time=None,
    )
    positional = [NAME, "0" * 64]
    if field == "subject_sha256":
        positional[1] = value
    else:
        kwargs[field] = value
    with pytest.raises(ValueError, match=match):
        make_statement(*positional, **kwargs)


def test_envelope_shape_and_hybrid_signatures(alice: HybridSigner, trust: TrustList) -> None:
    envelope = sign_statement(_statement(), [alice])
    assert envelope["payloadType"] == PAYLOAD_TYPE == "application/vnd.in-toto+json"
    assert sorted(len(s) for s in _sigs(envelope)) == [64, 3309]
    record = alice.public_record()
    assert [s["keyid"] for s in envelope["signatures"]] == [k.keyid for k in record.keys]
    statement, signers = verify_envelope_signers(envelope, trust)
    assert statement == _statement() and signers == ("alice",)
    # the ML-DSA signature is bound to the documented FIPS 204 context string
    message = pae(PAYLOAD_TYPE, base64.b64decode(envelope["payload"]))
    mldsa_sig = next(s for s in _sigs(envelope) if len(s) == 3309)
    mldsa_pub = record.key("ml-dsa-65").key
    mldsa_pub.verify(mldsa_sig, message, MLDSA_CONTEXT)
    with pytest.raises(InvalidSignature):
        mldsa_pub.verify(mldsa_sig, message)


def test_two_signers(alice: HybridSigner, bob: HybridSigner, trust: TrustList) -> None:
    envelope = sign_statement(_statement(), [alice, bob])
    _, signers = verify_envelope_signers(envelope, trust)
    assert signers == ("alice", "bob")
    with pytest.raises(ValueError, match="distinct"):
        sign_statement(_statement(), [alice, alice])
    with pytest.raises(ValueError, match="at least one"):
        sign_statement(_statement(), [])


@pytest.mark.parametrize("keep", [64, 3309])
def test_downgrade_stripping_one_algorithm_refused(
    alice: HybridSigner, trust: TrustList, keep: int
) -> None:
    envelope = sign_statement(_statement(), [alice])
    envelope["signatures"] = [
        s for s in envelope["signatures"] if len(base64.b64decode(s["sig"])) == keep
    ]
    with pytest.raises(VerificationError, match="downgrade refused"):
        verify_envelope(envelope, trust)


def test_mixing_algorithms_from_two_trusted_keys_refused(
    alice: HybridSigner, bob: HybridSigner, trust: TrustList
) -> None:
    a = sign_statement(_statement(), [alice])
    b = sign_statement(_statement(), [bob])
    mixed = dict(
        a, signatures=[a["signatures"][0], b["signatures"][1]]
    )  # alice Ed25519, bob ML-DSA
    with pytest.raises(VerificationError, match="downgrade refused"):
        verify_envelope(mixed, trust)


def test_untrusted_signer_refused_even_with_trusted_keyids(
    alice: HybridSigner, trust: TrustList
) -> None:
    mallory = HybridSigner.generate("mallory")
    envelope = sign_statement(_statement(), [mallory])
    with pytest.raises(VerificationError, match="no signature verifies with a trusted key"):
        verify_envelope(envelope, trust)
    # lying keyids that name alice's keys do not help mallory
    for entry, key in zip(envelope["signatures"], alice.public_record().keys, strict=True):
        entry["keyid"] = key.keyid
    with pytest.raises(VerificationError, match="no signature verifies"):
        verify_envelope(envelope, trust)
    with pytest.raises(VerificationError, match="trust list is empty"):
        verify_envelope(sign_statement(_statement(), [alice]), TrustList())


def test_keyid_is_only_a_hint(alice: HybridSigner, bob: HybridSigner, trust: TrustList) -> None:
    envelope = sign_statement(_statement(), [alice])
    for entry, key in zip(envelope["signatures"], bob.public_record().keys, strict=True):
        entry["keyid"] = key.keyid  # lie: claim bob's keys
    assert verify_envelope_signers(envelope, trust)[1] == ("alice",)
    for entry in envelope["signatures"]:
        del entry["keyid"]  # keyid is optional in DSSE
    assert verify_envelope(envelope, trust) == _statement()


def test_signature_over_another_payload_type_refused(alice: HybridSigner, trust: TrustList) -> None:
    envelope = sign_statement(_statement(), [alice])
    with pytest.raises(VerificationError, match="payloadType"):
        verify_envelope(dict(envelope, payloadType="application/json"), trust)


@pytest.mark.parametrize(
    "edit",
    [
        lambda e: e.update(extra=1),
        lambda e: e.pop("signatures"),
        lambda e: e.update(signatures=[]),
        lambda e: e["signatures"][0].update(sig=e["signatures"][0]["sig"].rstrip("=")),
        lambda e: e.update(payload="!!!!"),
        lambda e: e["signatures"][0].update(sig=123),
        lambda e: e["signatures"][0].update(note="x"),
        lambda e: e["signatures"][0].update(keyid=5),
        lambda e: e.update(signatures=e["signatures"] * 17),
    ],
)
def test_malformed_envelopes_refused(alice: HybridSigner, trust: TrustList, edit: Any) -> None:
    envelope = sign_statement(_statement(), [alice])
    edit(envelope)
    with pytest.raises(VerificationError):
        verify_envelope(envelope, trust)


def test_non_canonical_base64_refused(alice: HybridSigner, trust: TrustList) -> None:
    envelope = sign_statement(_statement(), [alice])
    sig = envelope["signatures"][0][
        "sig"
    ]  # 64 bytes -> "...==" with 4 unused bits in the last char
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = sig[-3]
    twin = alphabet[alphabet.index(last) ^ 1]  # flips an unused bit: decodes to the same bytes
    spelled = sig[:-3] + twin + sig[-2:]
    assert base64.b64decode(spelled) == base64.b64decode(sig)
    envelope["signatures"][0]["sig"] = spelled
    with pytest.raises(VerificationError, match="canonical"):
        verify_envelope(envelope, trust)


def test_envelope_bytes_round_trip_and_strict_json(alice: HybridSigner, trust: TrustList) -> None:
    envelope = sign_statement(_statement(), [alice])
    raw = dump_envelope(envelope)
    assert load_envelope(raw) == envelope
    assert verify_artifact(MODULE, NAME, raw, trust) == _statement()
    for bad in (b"[1]", b"{", b'{"a": 1, "a": 2}', b'{"a": NaN}', b"\xff{}"):
        with pytest.raises(VerificationError):
            load_envelope(bad)


def test_verify_artifact_checks_bytes_name_and_result(
    alice: HybridSigner, trust: TrustList
) -> None:
    envelope = sign_statement(_statement(), [alice])
    assert verify_artifact(MODULE, NAME, envelope, trust)["subject"][0]["name"] == NAME
    with pytest.raises(VerificationError, match="digest mismatch"):
        verify_artifact(MODULE + b"\n", NAME, envelope, trust)
    with pytest.raises(VerificationError, match="not exactly once about"):
        verify_artifact(MODULE, "production/other.py", envelope, trust)
    failed = sign_statement(_statement(passed=False), [alice])
    with pytest.raises(VerificationError, match="not PASSED"):
        verify_artifact(MODULE, NAME, failed, trust)
    assert verify_artifact(MODULE, NAME, failed, trust, require_passed=False)


def test_payload_must_be_an_in_toto_statement(alice: HybridSigner, trust: TrustList) -> None:
    payload = b'{"hello": "world"}'
    message = pae(PAYLOAD_TYPE, payload)
    envelope = {
        "payload": base64.b64encode(payload).decode(),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [
            {"keyid": k, "sig": base64.b64encode(s).decode()} for k, s in alice.sign(message)
        ],
    }
    with pytest.raises(VerificationError, match="in-toto Statement"):
        verify_envelope(envelope, trust)


@settings(max_examples=25, deadline=None)
@given(payload=st.binary(max_size=200), kind=st.text(max_size=30))
def test_pae_matches_securesystemslib(payload: bytes, kind: str) -> None:
    from securesystemslib.dsse import Envelope

    assert pae(kind, payload) == Envelope(payload, kind, {}).pae()


# --- interoperability with securesystemslib 1.6 --------------------------------------------------


def test_tcpkit_envelope_verifies_with_securesystemslib(alice: HybridSigner) -> None:
    """Our Ed25519 signature is a standard DSSE signature, under the keyid sslib computes."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    envelope = sign_statement(_statement(), [alice])
    ed_private = dict(alice.private_keys)["ed25519"]
    key = SSlibKey.from_crypto(ed_private.public_key())
    assert key.keyid == alice.public_record().key("ed25519").keyid
    sslib_envelope = Envelope.from_dict(copy.deepcopy(envelope))
    accepted = sslib_envelope.verify([key], 1)
    assert list(accepted) == [key.keyid]
    assert json.loads(sslib_envelope.payload) == _statement()


def test_securesystemslib_cannot_verify_our_mldsa_signature_by_design(alice: HybridSigner) -> None:
    """sslib's ML-DSA scheme signs b"tuf\\x01" + SHA-512(PAE) with no context; ours signs the
    PAE with context b"tcpkit-dsse-v1". The formats differ on purpose; interop is on Ed25519."""
    from securesystemslib import exceptions
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    envelope = sign_statement(_statement(), [alice])
    ml_private = dict(alice.private_keys)["ml-dsa-65"]
    sslib_key = SSlibKey.from_crypto(ml_private.public_key())
    forced = SSlibKey(
        alice.public_record().key("ml-dsa-65").keyid,
        sslib_key.keytype,
        sslib_key.scheme,
        sslib_key.keyval,
    )
    with pytest.raises(exceptions.VerificationError):
        Envelope.from_dict(copy.deepcopy(envelope)).verify([forced], 1)


def test_securesystemslib_envelope_with_tcpkit(alice: HybridSigner, trust: TrustList) -> None:
    """An Ed25519 envelope signed by securesystemslib: its signature verifies with tcpkit's PAE
    and Ed25519 check; alone it is refused by the hybrid policy as a downgrade; once the same
    key holder adds the ML-DSA-65 signature, tcpkit accepts the envelope."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import CryptoSigner

    keys = dict(alice.private_keys)
    sslib_signer = CryptoSigner(keys["ed25519"])
    sslib_envelope = Envelope(canonical_payload(_statement()), PAYLOAD_TYPE, {})
    sslib_envelope.sign(sslib_signer)
    envelope = sslib_envelope.to_dict()
    (sig,) = _sigs(envelope)
    message = pae(envelope["payloadType"], base64.b64decode(envelope["payload"]))
    assert message == sslib_envelope.pae()
    ed25519 = get_algorithm("ed25519")
    assert ed25519.verify(alice.public_record().key("ed25519").key, sig, message)
    with pytest.raises(VerificationError, match="downgrade refused"):
        verify_envelope(envelope, trust)
    mldsa = get_algorithm("ml-dsa-65")
    envelope["signatures"].append(
        {
            "keyid": alice.public_record().key("ml-dsa-65").keyid,
            "sig": base64.b64encode(mldsa.sign(keys["ml-dsa-65"], message)).decode(),
        }
    )
    assert verify_envelope_signers(envelope, trust) == (_statement(), ("alice",))
