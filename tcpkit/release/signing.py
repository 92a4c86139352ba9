"""Signing and verification of tcpkit artifacts: the public API in one import.

Signatures are hybrid Ed25519 + ML-DSA-65, algorithm-agile, carried in DSSE
envelopes over in-toto statements. The work is split by job:

* :mod:`tcpkit.release.algorithms` - the algorithm table (sizes, FIPS 204 context);
* :mod:`tcpkit.release.keys` - private key files, the pinned trust list, the signer;
* :mod:`tcpkit.release.dsse` - envelopes, PAE, signing, strict verification;
* :mod:`tcpkit.release.attestation` - statements, :func:`verify_artifact`, the workspace check;
* :mod:`tcpkit.release.integrity_eval` - tamper trials and signature cost measurements.
"""

from __future__ import annotations

from tcpkit.release.algorithms import HYBRID_CLAIM, MLDSA_CONTEXT
from tcpkit.release.attestation import (
    ArtifactCheck,
    frozen_subject_name,
    make_statement,
    sha256_hex,
    verify_artifact,
    verify_workspace,
)
from tcpkit.release.dsse import (
    PAYLOAD_TYPE,
    VerificationError,
    dump_envelope,
    load_envelope,
    pae,
    sign_statement,
    verify_envelope,
    verify_envelope_signers,
)
from tcpkit.release.integrity_eval import TamperReport, signature_benchmark, tamper_trials
from tcpkit.release.keys import (
    HybridSigner,
    KeyError_,
    PublicKey,
    PublicKeyRecord,
    TrustList,
    ensure_signer,
    init_keys,
    keys_dir,
    list_private_keys,
    load_signer,
    validate_name,
)

__all__ = [
    "HYBRID_CLAIM",
    "MLDSA_CONTEXT",
    "PAYLOAD_TYPE",
    "ArtifactCheck",
    "HybridSigner",
    "KeyError_",
    "PublicKey",
    "PublicKeyRecord",
    "TamperReport",
    "TrustList",
    "VerificationError",
    "dump_envelope",
    "ensure_signer",
    "frozen_subject_name",
    "init_keys",
    "keys_dir",
    "list_private_keys",
    "load_envelope",
    "load_signer",
    "make_statement",
    "pae",
    "sha256_hex",
    "sign_statement",
    "signature_benchmark",
    "tamper_trials",
    "validate_name",
    "verify_artifact",
    "verify_envelope",
    "verify_envelope_signers",
    "verify_workspace",
]
