"""DSSE envelopes: hybrid signing over the PAE, and strict verification against the trust list.

An envelope is the DSSE JSON ``{"payload", "payloadType", "signatures": [{"keyid", "sig"}]}``
with standard, padded base64. Each signer adds one signature per algorithm
(hybrid Ed25519 + ML-DSA-65, algorithm-agile), all over the same Pre-Authentication
Encoding ``PAE = "DSSEv1" SP len(type) SP type SP len(body) SP body``.

Verification policy (:func:`verify_envelope`):

* the envelope must have exactly the DSSE fields, payloadType
  ``application/vnd.in-toto+json``, canonical base64 everywhere (a base64 string that
  decodes to the same bytes but is spelled differently is refused, so every change to the
  envelope's signed or signature text is a change the verifier sees);
* some single key on the trust list must have produced a valid signature for *every*
  required algorithm. An envelope whose ML-DSA or Ed25519 signature was stripped is a
  downgrade and is refused; so is an Ed25519 signature from one trusted key combined with
  an ML-DSA signature from another;
* ``keyid`` is a hint only: signatures are tried against trusted keys by algorithm
  (told apart by their exact length), never looked up by keyid, so a lying keyid neither
  helps nor hurts;
* the payload must be a UTF-8 JSON in-toto Statement v1 without duplicate keys.

Signatures made for other protocols do not transfer: ML-DSA signatures carry the FIPS 204
context ``b"tcpkit-dsse-v1"``, and Ed25519 signatures are over the PAE, which binds the
payload type.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from typing import Any

from tcpkit.release.algorithms import REQUIRED_ALGORITHMS, get_algorithm
from tcpkit.release.keys import HybridSigner, TrustList

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
MAX_SIGNATURES = 32
"""Envelopes with more signatures are refused before any cryptography (bounded work)."""


class VerificationError(ValueError):
    """An envelope or artifact that does not verify; ``reason`` says why in one sentence."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding of ``payload`` with ``payload_type``."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    """Decode canonical standard base64, refusing any other spelling of the same bytes."""
    if not isinstance(text, str):
        raise VerificationError(f"{what} is not a base64 string")
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise VerificationError(f"{what} is not valid base64") from None
    if _b64(data) != text:
        raise VerificationError(f"{what} is not canonical base64")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def strict_json(raw: bytes, what: str) -> Any:
    """Parse UTF-8 JSON, refusing invalid UTF-8, duplicate keys and NaN/Infinity."""
    try:
        text = raw.decode("utf-8")
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise VerificationError(f"{what} is not valid JSON: {exc}") from None


def dump_envelope(envelope: Mapping[str, Any]) -> bytes:
    """The bytes tcpkit writes for an envelope (``*.dsse.json``): indented, sorted, newline."""
    return (json.dumps(envelope, indent=2, sort_keys=True) + "\n").encode("utf-8")


def load_envelope(raw: bytes) -> dict[str, Any]:
    """Parse envelope bytes strictly; VerificationError if they are not a JSON object."""
    document = strict_json(raw, "envelope")
    if not isinstance(document, dict):
        raise VerificationError("envelope is not a JSON object")
    return document


def canonical_payload(statement: Mapping[str, Any]) -> bytes:
    """The payload bytes tcpkit signs for ``statement``: compact JSON with sorted keys."""
    return json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def sign_statement(statement: Mapping[str, Any], signers: Sequence[HybridSigner]) -> dict[str, Any]:
    """A DSSE envelope over ``statement`` signed by every signer with every algorithm.

    Parameters
    ----------
    statement : mapping
        An in-toto Statement (see :func:`tcpkit.release.attestation.make_statement`).
    signers : sequence of HybridSigner
        At least one; each adds an Ed25519 and an ML-DSA-65 signature.

    Returns
    -------
    dict
        ``{"payload", "payloadType", "signatures": [{"keyid", "sig"}, ...]}``.
    """
    if not signers:
        raise ValueError("sign_statement needs at least one signer")
    names = [signer.name for signer in signers]
    if len(set(names)) != len(names):
        raise ValueError(f"signers must be distinct, got {names}")
    if statement.get("_type") != STATEMENT_TYPE:
        raise ValueError(f"statement '_type' must be {STATEMENT_TYPE!r}")
    payload = canonical_payload(statement)
    message = pae(PAYLOAD_TYPE, payload)
    signatures = [
        {"keyid": keyid, "sig": _b64(sig)}
        for signer in signers
        for keyid, sig in signer.sign(message)
    ]
    return {"payload": _b64(payload), "payloadType": PAYLOAD_TYPE, "signatures": signatures}


def _parse(envelope: Mapping[str, Any]) -> tuple[bytes, list[bytes]]:
    """Structural checks; returns the payload and the raw signatures."""
    if not isinstance(envelope, Mapping):
        raise VerificationError("envelope is not a JSON object")
    fields = set(envelope)
    if fields != {"payload", "payloadType", "signatures"}:
        raise VerificationError(
            f"envelope fields are {sorted(fields)}, expected payload, payloadType, signatures"
        )
    if envelope["payloadType"] != PAYLOAD_TYPE:
        raise VerificationError(
            f"payloadType is {envelope['payloadType']!r}, expected {PAYLOAD_TYPE!r}"
        )
    payload = _unb64(envelope["payload"], "payload")
    entries = envelope["signatures"]
    if not isinstance(entries, list) or not entries:
        raise VerificationError("envelope has no signatures")
    if len(entries) > MAX_SIGNATURES:
        raise VerificationError(
            f"envelope has {len(entries)} signatures (at most {MAX_SIGNATURES})"
        )
    signatures = []
    for index, entry in enumerate(entries):
        if (
            not isinstance(entry, Mapping)
            or "sig" not in entry
            or not set(entry) <= {"keyid", "sig"}
        ):
            raise VerificationError(
                f"signature {index} must be an object with 'sig' and optional 'keyid'"
            )
        if "keyid" in entry and not isinstance(entry["keyid"], str):
            raise VerificationError(f"signature {index} has a keyid that is not a string")
        signatures.append(_unb64(entry["sig"], f"signature {index}"))
    return payload, signatures


def verify_envelope_signers(
    envelope: Mapping[str, Any], trust: TrustList
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Like :func:`verify_envelope`, also returning the trusted names whose policy was met."""
    payload, signatures = _parse(envelope)
    if len(trust) == 0:
        raise VerificationError("the trust list is empty: no key can vouch for this envelope")
    message = pae(PAYLOAD_TYPE, payload)
    accepted: list[str] = []
    partial: list[str] = []
    for record in trust:
        valid = []
        for alg_name in REQUIRED_ALGORITHMS:
            algorithm = get_algorithm(alg_name)
            public = record.key(alg_name).key
            if any(algorithm.verify(public, sig, message) for sig in signatures):
                valid.append(alg_name)
        if len(valid) == len(REQUIRED_ALGORITHMS):
            accepted.append(record.name)
        elif valid:
            missing = [alg for alg in REQUIRED_ALGORITHMS if alg not in valid]
            partial.append(
                f"{record.name} signed with {'+'.join(valid)} but not {'+'.join(missing)}"
            )
    if not accepted:
        if partial:
            raise VerificationError(
                "downgrade refused: "
                + "; ".join(partial)
                + " (hybrid Ed25519 + ML-DSA-65 signatures from one trusted key are required)"
            )
        raise VerificationError(
            f"no signature verifies with a trusted key (trusted: {', '.join(trust.names)})"
        )
    statement = strict_json(payload, "payload")
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise VerificationError(f"payload is not an in-toto Statement ({STATEMENT_TYPE})")
    return statement, tuple(accepted)


def verify_envelope(envelope: Mapping[str, Any], trust: TrustList) -> dict[str, Any]:
    """Verify a DSSE envelope against the trust list and return its in-toto statement.

    Requires a valid Ed25519 *and* a valid ML-DSA-65 signature (context
    ``b"tcpkit-dsse-v1"``) over the PAE from one key on ``trust``; keyids are ignored.

    Raises
    ------
    VerificationError
        With a one-sentence ``reason`` (malformed envelope, downgrade, untrusted signer,
        bad payload).
    """
    statement, _ = verify_envelope_signers(envelope, trust)
    return statement
