"""The signature algorithms tcpkit signs with: one table, so the scheme stays algorithm-agile.

tcpkit signs every attestation with a hybrid of two algorithms: Ed25519 (classical,
RFC 8032) and ML-DSA-65 (post-quantum, FIPS 204), both from pyca/cryptography.
Each algorithm is one :class:`Algorithm` entry in :data:`ALGORITHMS`; key files,
trust records, signing and verification all go through this table, so adding or
retiring an algorithm is a change in one place (that is what "algorithm-agile"
means here, no more).

ML-DSA-65 signatures use the FIPS 204 context string :data:`MLDSA_CONTEXT`
(``b"tcpkit-dsse-v1"``). The context binds a signature to tcpkit's DSSE use: an
ML-DSA signature made for another protocol with the same key (or with no
context) does not verify here, and ours do not verify elsewhere. Ed25519 has no
context parameter and signs the DSSE PAE as is, which is what keeps it
verifiable by other DSSE implementations such as securesystemslib.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

MLDSA_CONTEXT = b"tcpkit-dsse-v1"
"""FIPS 204 context string of every ML-DSA-65 signature tcpkit makes or accepts."""

HYBRID_CLAIM = "hybrid Ed25519 + ML-DSA-65, algorithm-agile"
"""The one sentence docs, reports and messages use to describe the signatures."""


@dataclass(frozen=True)
class Algorithm:
    """One signature algorithm: how to make keys, sign, verify and serialise them.

    Attributes
    ----------
    name : str
        Identifier written in key files and trust records (``"ed25519"``, ``"ml-dsa-65"``).
    file_tag : str
        Suffix of the private key file, ``<name>.<file_tag>.pem``.
    signature_size : int
        Exact length in bytes of a signature; anything else is refused before verifying.
    public_key_size : int
        Exact length in bytes of the raw public key.
    keytype, scheme : str
        The securesystemslib-style key type and scheme from which the DSSE ``keyid`` is
        computed (see :func:`tcpkit.release.keys.keyid_for`). For Ed25519 they are
        securesystemslib's own, so our keyid is the one it computes for the same key.
    """

    name: str
    file_tag: str
    keytype: str
    scheme: str
    signature_size: int
    public_key_size: int
    _generate: Callable[[], Any]
    _private_type: type
    _public_type: type
    _from_raw: Callable[[bytes], Any]
    _sign: Callable[[Any, bytes], bytes]
    _verify: Callable[[Any, bytes, bytes], None]

    def generate(self) -> Any:
        """Return a new private key object for this algorithm."""
        return self._generate()

    def is_private_key(self, key: object) -> bool:
        """Whether ``key`` is a private key object of this algorithm."""
        return isinstance(key, self._private_type)

    def sign(self, private_key: Any, message: bytes) -> bytes:
        """Sign ``message`` (for tcpkit: the DSSE PAE) with ``private_key``."""
        return self._sign(private_key, message)

    def verify(self, public_key: Any, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` over ``message`` verifies under ``public_key``; never raises."""
        if len(signature) != self.signature_size:
            return False
        try:
            self._verify(public_key, signature, message)
        except InvalidSignature:
            return False
        return True

    def public_key_from_raw(self, raw: bytes) -> Any:
        """Public key object from its raw encoding; ValueError when the length or bytes are wrong."""
        if len(raw) != self.public_key_size:
            raise ValueError(
                f"{self.name} public key must be {self.public_key_size} bytes, got {len(raw)}"
            )
        key = self._from_raw(raw)
        if not isinstance(key, self._public_type):
            raise ValueError(f"bytes do not encode an {self.name} public key")
        return key

    def public_key_from_pem(self, pem: bytes) -> Any:
        """Public key object from a SubjectPublicKeyInfo PEM, refusing other algorithms."""
        key = serialization.load_pem_public_key(pem)
        if not isinstance(key, self._public_type):
            raise ValueError(f"PEM holds a {type(key).__name__}, not an {self.name} public key")
        return key


def raw_public_bytes(public_key: Any) -> bytes:
    """Raw encoding of a public key (32 bytes for Ed25519, 1,952 for ML-DSA-65)."""
    raw: bytes = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw


def public_pem(public_key: Any) -> str:
    """SubjectPublicKeyInfo PEM of a public key, as text."""
    pem: bytes = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode("ascii")


def fingerprint(public_key: Any) -> str:
    """``sha256:<hex>`` of the raw public key: what ``tcpkit keys list`` shows."""
    return "sha256:" + hashlib.sha256(raw_public_bytes(public_key)).hexdigest()


def _ed25519_verify(key: Any, signature: bytes, message: bytes) -> None:
    key.verify(signature, message)


def _mldsa_verify(key: Any, signature: bytes, message: bytes) -> None:
    key.verify(signature, message, MLDSA_CONTEXT)


ED25519 = Algorithm(
    name="ed25519",
    file_tag="ed25519",
    keytype="ed25519",
    scheme="ed25519",
    signature_size=64,
    public_key_size=32,
    _generate=ed25519.Ed25519PrivateKey.generate,
    _private_type=ed25519.Ed25519PrivateKey,
    _public_type=ed25519.Ed25519PublicKey,
    _from_raw=ed25519.Ed25519PublicKey.from_public_bytes,
    _sign=lambda key, message: key.sign(message),
    _verify=_ed25519_verify,
)

ML_DSA_65 = Algorithm(
    name="ml-dsa-65",
    file_tag="mldsa65",
    keytype="ml-dsa",
    scheme="tcpkit-ml-dsa-65-dsse-v1",
    signature_size=3309,
    public_key_size=1952,
    _generate=mldsa.MLDSA65PrivateKey.generate,
    _private_type=mldsa.MLDSA65PrivateKey,
    _public_type=mldsa.MLDSA65PublicKey,
    _from_raw=mldsa.MLDSA65PublicKey.from_public_bytes,
    _sign=lambda key, message: key.sign(message, MLDSA_CONTEXT),
    _verify=_mldsa_verify,
)

ALGORITHMS: dict[str, Algorithm] = {alg.name: alg for alg in (ED25519, ML_DSA_65)}
"""Every algorithm tcpkit knows, by name."""

REQUIRED_ALGORITHMS: tuple[str, ...] = (ED25519.name, ML_DSA_65.name)
"""The hybrid policy: a trusted key must carry, and an envelope must hold a valid signature
from, every one of these algorithms."""


def get_algorithm(name: str) -> Algorithm:
    """The :class:`Algorithm` called ``name``; ValueError naming the known ones otherwise."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        known = ", ".join(sorted(ALGORITHMS))
        raise ValueError(f"unknown signature algorithm {name!r} (known: {known})") from None
