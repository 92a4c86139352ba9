"""Attestations about artifacts: in-toto statements with a SLSA verification summary, and their checks.

:func:`make_statement` writes what a gate decided about an artifact as an in-toto
Statement v1 whose predicate is a SLSA Verification Summary
(``https://slsa.dev/verification_summary/v1``): the gate definition is the policy
(with its digest), the run's report and executed notebook are the input
attestations, and ``verifiedLevels`` holds a tcpkit value such as
``TCPKIT_GATE_STAGING`` (custom values never start with ``SLSA_``).

:func:`verify_artifact` is the one check every consumer uses (``tcpkit verify`` and the
promotion code's ``load_frozen`` before it imports a frozen module): the envelope verifies
against the trust list, the statement names the artifact, and the sha256 of the bytes
equals the statement's digest. :func:`verify_workspace` runs it over ``production/``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tcpkit.release.dsse import (
    STATEMENT_TYPE,
    VerificationError,
    load_envelope,
    verify_envelope_signers,
)
from tcpkit.release.keys import TrustList

VSA_PREDICATE = "https://slsa.dev/verification_summary/v1"
PRODUCTION_DIR = "production"
ENVELOPE_SUFFIX = ".dsse.json"

_SHA256 = re.compile(r"[0-9a-f]{64}")
_GATE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def frozen_subject_name(component: str) -> str:
    """Subject name of a frozen module in statements: ``production/<component>.py``."""
    return f"{PRODUCTION_DIR}/{component}.py"


def _check_sha256(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise ValueError(f"{what} must be 64 lowercase hex characters (a sha256), got {value!r}")
    return value


def _check_text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


def make_statement(
    subject_name: str,
    subject_sha256: str,
    *,
    gate: str,
    policy_uri: str,
    policy_digest: str,
    inputs: Mapping[str, str],
    passed: bool,
    verifier_id: str,
    time: str | None = None,
    resource_uri: str | None = None,
) -> dict[str, Any]:
    """An in-toto Statement v1 with a SLSA Verification Summary predicate.

    Parameters
    ----------
    subject_name, subject_sha256 : str
        The artifact (e.g. ``production/statistics.py``) and the hex sha256 of its bytes.
    gate : str
        Gate name (``DEVELOPMENT`` ... ``PRODUCTION``); becomes ``TCPKIT_GATE_<gate>`` in
        ``verifiedLevels`` when ``passed``.
    policy_uri, policy_digest : str
        Where the gate definition lives (e.g. ``notebooks/pipeline.toml#statistics.STAGING``)
        and the sha256 of its canonical form.
    inputs : mapping of str to str
        Input attestations, URI -> sha256 (the HTML report, the executed notebook).
    passed : bool
        The gate decision: ``verificationResult`` PASSED or FAILED.
    verifier_id : str
        Who decided, e.g. ``https://tcpkit.dev/pipeline@0.1.0`` or a runner name.
    time : str, optional
        RFC 3339 UTC time ending in ``Z``; default now.
    resource_uri : str, optional
        ``resourceUri`` of the summary; default ``subject_name``.

    Raises
    ------
    ValueError
        Naming the first malformed argument.
    """
    _check_text(subject_name, "subject_name")
    _check_sha256(subject_sha256, "subject_sha256")
    if not isinstance(gate, str) or not _GATE.fullmatch(gate):
        raise ValueError(f"gate must be an upper-case name such as 'STAGING', got {gate!r}")
    _check_text(policy_uri, "policy_uri")
    _check_sha256(policy_digest, "policy_digest")
    _check_text(verifier_id, "verifier_id")
    if not isinstance(passed, bool):
        raise ValueError(f"passed must be a bool, got {passed!r}")
    if time is None:
        time = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    elif not isinstance(time, str) or not _TIME.fullmatch(time):
        raise ValueError(f"time must be RFC 3339 UTC like 2025-01-31T12:00:00Z, got {time!r}")
    attestations = []
    for uri, digest in sorted(inputs.items()):
        _check_text(uri, "input URI")
        _check_sha256(digest, f"digest of input {uri!r}")
        attestations.append({"uri": uri, "digest": {"sha256": digest}})
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {"sha256": subject_sha256}}],
        "predicateType": VSA_PREDICATE,
        "predicate": {
            "verifier": {"id": verifier_id},
            "timeVerified": time,
            "resourceUri": resource_uri if resource_uri is not None else subject_name,
            "policy": {"uri": policy_uri, "digest": {"sha256": policy_digest}},
            "inputAttestations": attestations,
            "verificationResult": "PASSED" if passed else "FAILED",
            "verifiedLevels": [f"TCPKIT_GATE_{gate}"] if passed else [],
        },
    }


def verify_artifact(
    data: bytes,
    name: str,
    envelope: Mapping[str, Any] | bytes,
    trust: TrustList,
    *,
    require_passed: bool = True,
) -> dict[str, Any]:
    """The one integrity check: signed statement, matching subject, matching bytes.

    Parameters
    ----------
    data : bytes
        The artifact's bytes as they are on disk (read them once, check them, use them).
    name : str
        The subject name the statement must carry (see :func:`frozen_subject_name`).
    envelope : mapping or bytes
        The DSSE envelope, parsed or as the ``.dsse.json`` bytes.
    trust : TrustList
        The pinned trust list.
    require_passed : bool
        Also demand a SLSA verification summary with ``verificationResult`` PASSED (the
        default: a frozen module must have passed its gate).

    Returns
    -------
    dict
        The verified statement.

    Raises
    ------
    VerificationError
        The first failed condition, in one sentence.
    """
    if isinstance(envelope, bytes | bytearray):
        envelope = load_envelope(bytes(envelope))
    statement, _signers = verify_envelope_signers(envelope, trust)
    _check_subject(statement, data, name, require_passed)
    return statement


def _check_subject(statement: dict[str, Any], data: bytes, name: str, require_passed: bool) -> None:
    subjects = statement.get("subject")
    if not isinstance(subjects, list):
        raise VerificationError("statement has no subject list")
    matching = [s for s in subjects if isinstance(s, dict) and s.get("name") == name]
    if len(matching) != 1:
        named = [s.get("name") for s in subjects if isinstance(s, dict)]
        raise VerificationError(f"statement is about {named}, not exactly once about {name!r}")
    digest = matching[0].get("digest")
    expected = digest.get("sha256") if isinstance(digest, dict) else None
    if not isinstance(expected, str):
        raise VerificationError(f"statement gives no sha256 digest for {name!r}")
    actual = sha256_hex(data)
    if actual != expected:
        raise VerificationError(
            f"digest mismatch: the bytes have sha256 {actual[:16]}..., "
            f"the signed statement says {expected[:16]}..."
        )
    if require_passed:
        predicate = statement.get("predicate")
        if statement.get("predicateType") != VSA_PREDICATE or not isinstance(predicate, dict):
            raise VerificationError(
                f"statement is not a SLSA verification summary ({VSA_PREDICATE})"
            )
        if predicate.get("verificationResult") != "PASSED":
            raise VerificationError(
                f"the signed verification result is {predicate.get('verificationResult')!r}, not PASSED"
            )


@dataclass(frozen=True)
class ArtifactCheck:
    """Outcome of checking one frozen artifact.

    Attributes
    ----------
    name : str
        Workspace-relative path of the module (``production/<component>.py``), or of the
        envelope when the module is missing.
    digest : str
        ``sha256:<hex>`` of the module bytes on disk, ``""`` when there are none.
    ok : bool
        Whether :func:`verify_artifact` accepted it.
    reason : str
        ``"verified"`` (with the signers) or why it failed.
    signers : tuple of str
        Trusted names whose hybrid signatures verified.
    """

    name: str
    digest: str
    ok: bool
    reason: str
    signers: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The ``tcpkit verify --json`` entry."""
        return {"name": self.name, "digest": self.digest, "ok": self.ok, "reason": self.reason}


def _check_one(module: Path, envelope_path: Path, name: str, trust: TrustList) -> ArtifactCheck:
    for path in (module, envelope_path):
        if path.is_symlink() or not path.is_file():
            return ArtifactCheck(name, "", False, f"{path.name} is not a regular file")
    data = module.read_bytes()
    digest = "sha256:" + sha256_hex(data)
    try:
        envelope = load_envelope(envelope_path.read_bytes())
        statement, signers = verify_envelope_signers(envelope, trust)
        _check_subject(statement, data, name, require_passed=True)
    except VerificationError as exc:
        return ArtifactCheck(name, digest, False, exc.reason)
    return ArtifactCheck(name, digest, True, f"verified, signed by {', '.join(signers)}", signers)


def verify_workspace(root: Path) -> list[ArtifactCheck]:
    """Check every frozen module and attestation under ``root/production``.

    Each ``production/<c>.py`` (``__init__.py`` aside) must have ``production/<c>.dsse.json``
    beside it and pass :func:`verify_artifact` against ``root/.tcpkit/trust``; an envelope
    without its module and a module without its envelope are failures too. No
    ``production/`` directory means no artifacts (an empty list).

    Raises
    ------
    tcpkit.release.keys.KeyError_
        The trust list itself is broken (checked only when there is something to verify).
    """
    root = Path(root)
    production = root / PRODUCTION_DIR
    if not production.is_dir():
        return []
    modules = {p.name[: -len(".py")] for p in production.glob("*.py") if p.name != "__init__.py"}
    envelopes = {p.name[: -len(ENVELOPE_SUFFIX)] for p in production.glob("*" + ENVELOPE_SUFFIX)}
    components = sorted(modules | envelopes)
    if not components:
        return []
    trust = TrustList.load(root / ".tcpkit" / "trust")
    checks = []
    for component in components:
        module = production / f"{component}.py"
        envelope_path = production / f"{component}{ENVELOPE_SUFFIX}"
        name = frozen_subject_name(component)
        if component not in envelopes:
            checks.append(
                ArtifactCheck(
                    name,
                    "sha256:" + sha256_hex(module.read_bytes()) if module.is_file() else "",
                    False,
                    f"no attestation {PRODUCTION_DIR}/{component}{ENVELOPE_SUFFIX}",
                )
            )
        elif component not in modules:
            checks.append(
                ArtifactCheck(
                    f"{PRODUCTION_DIR}/{component}{ENVELOPE_SUFFIX}",
                    "",
                    False,
                    f"attestation without its module {name}",
                )
            )
        else:
            checks.append(_check_one(module, envelope_path, name, trust))
    return checks
