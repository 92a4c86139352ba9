"""Attestations about artifacts: in-toto statements, SLSA verification summaries, gate results.

Every gate run signs two in-toto Statement v1 over the same subjects (the
notebook, and the module and fitted model it would freeze):

* :func:`make_statement`: a SLSA Verification Summary
  (``https://slsa.dev/verification_summary/v1``), strictly in that schema: the
  gate definition is the policy (with its digest), ``inputAttestations`` holds the
  run's report, its executed notebook and the previous gate's statement
  (``tcpkit:statement/<component>/<GATE>``), ``verificationResult`` is PASSED or
  FAILED and ``verifiedLevels`` is an array holding a tcpkit value such as
  ``TCPKIT_GATE_STAGING`` (custom values never start with ``SLSA_``);
* :func:`make_gate_result`: what was measured, in tcpkit's own predicate type
  :data:`GATE_RESULT_PREDICATE`, because the SLSA summary has no field for it.

Gate result predicate, version 1 (``https://tcpkit.dev/gate-result/v1``), every key
always present::

    component    str     the component, e.g. "statistics"
    gate         str     DEVELOPMENT | TESTING | STAGING | PRODUCTION
    profile      str     quick | full
    result       str     PASSED | FAILED (the gate decision)
    policy       object  {uri, digest: {sha256}}: the gate definition, as in the summary
    criteria     array   one {metric, op, threshold, value, verdict, reason} per evaluated
                         criterion; value is what was measured (null: not evaluated),
                         verdict PASSED | FAILED
    metrics      object  every metric the run recorded, name -> value
    runKey       object  {digest: {sha256}, inputs: {name: sha256}}: the run's input digests
    previous     object  {gate, uri, digest: {sha256}}: the previous gate's summary
                         statement (sha256 of its DSSE payload bytes); null for DEVELOPMENT
    summary      object  {uri, digest: {sha256}}: this run's own summary statement
    error        str     why the notebook did not complete, or null
    verifier     object  {id}: the runner that decided
    timeVerified str     RFC 3339 UTC

A later incompatible change gets a new URI (``.../v2``); readers refuse versions they do
not know. The digest of a statement is the sha256 of the exact payload bytes its DSSE
envelope signs (:func:`payload_digest`), so the four gates form one chain
(:mod:`tcpkit.release.chain`) that verifies offline.

:func:`verify_artifact` is the one check every consumer uses (``tcpkit verify`` and the
promotion code's ``load_frozen`` before it imports a frozen module): the envelope verifies
against the trust list, the statement names the artifact, and the sha256 of the bytes
equals the statement's digest. :func:`verify_workspace` runs it over ``production/``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
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
from tcpkit.release.project import Project

VSA_PREDICATE = "https://slsa.dev/verification_summary/v1"
GATE_RESULT_PREDICATE = "https://tcpkit.dev/gate-result/v1"
PRODUCTION_DIR = "production"
ENVELOPE_SUFFIX = ".dsse.json"
MODEL_SUFFIX = ".model.npz"
CHAIN_SUFFIX = ".chain.intoto.jsonl"

_SHA256 = re.compile(r"[0-9a-f]{64}")
_GATE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def frozen_subject_name(component: str) -> str:
    """Subject name of a frozen module in statements: ``production/<component>.py``."""
    return f"{PRODUCTION_DIR}/{component}.py"


def frozen_model_subject_name(component: str) -> str:
    """Subject name of a frozen model: ``production/<component>.model.npz``."""
    return f"{PRODUCTION_DIR}/{component}{MODEL_SUFFIX}"


def statement_uri(component: str, gate: str) -> str:
    """The URI naming a gate run's summary statement in ``inputAttestations``."""
    return f"tcpkit:statement/{component}/{gate}"


def level_of(gate: str) -> str:
    """The ``verifiedLevels`` value of a passed gate: ``TCPKIT_GATE_<gate>``."""
    return f"TCPKIT_GATE_{gate}"


def payload_digest(envelope: Mapping[str, Any]) -> str:
    """The digest of the statement an envelope signs: sha256 of its decoded payload bytes."""
    import base64
    import binascii

    try:
        return sha256_hex(base64.b64decode(str(envelope.get("payload", "")), validate=True))
    except (binascii.Error, ValueError):
        raise VerificationError("envelope payload is not valid base64") from None


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
    extra_subjects: Mapping[str, str] | None = None,
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
    extra_subjects : mapping of str to str, optional
        Further subjects, name -> sha256 (the module and model a run would freeze).

    Raises
    ------
    ValueError
        Naming the first malformed argument.
    """
    subjects = _subjects(subject_name, subject_sha256, extra_subjects)
    _check_gate(gate)
    _check_text(policy_uri, "policy_uri")
    _check_sha256(policy_digest, "policy_digest")
    _check_text(verifier_id, "verifier_id")
    if not isinstance(passed, bool):
        raise ValueError(f"passed must be a bool, got {passed!r}")
    time = _check_time(time)
    attestations = []
    for uri, digest in sorted(inputs.items()):
        _check_text(uri, "input URI")
        _check_sha256(digest, f"digest of input {uri!r}")
        attestations.append({"uri": uri, "digest": {"sha256": digest}})
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": VSA_PREDICATE,
        "predicate": {
            "verifier": {"id": verifier_id},
            "timeVerified": time,
            "resourceUri": resource_uri if resource_uri is not None else subject_name,
            "policy": {"uri": policy_uri, "digest": {"sha256": policy_digest}},
            "inputAttestations": attestations,
            "verificationResult": "PASSED" if passed else "FAILED",
            "verifiedLevels": [level_of(gate)] if passed else [],
        },
    }


def _subjects(name: str, digest: str, extra: Mapping[str, str] | None) -> list[dict[str, Any]]:
    _check_text(name, "subject_name")
    _check_sha256(digest, "subject_sha256")
    subjects = [{"name": name, "digest": {"sha256": digest}}]
    for other, value in (extra or {}).items():
        _check_text(other, "subject name")
        _check_sha256(value, f"digest of subject {other!r}")
        if other == name or any(s["name"] == other for s in subjects):
            raise ValueError(f"subject {other!r} is named twice")
        subjects.append({"name": other, "digest": {"sha256": value}})
    return subjects


def _check_gate(gate: Any) -> str:
    if not isinstance(gate, str) or not _GATE.fullmatch(gate):
        raise ValueError(f"gate must be an upper-case name such as 'STAGING', got {gate!r}")
    return gate


def _check_time(time: Any) -> str:
    if time is None:
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if not isinstance(time, str) or not _TIME.fullmatch(time):
        raise ValueError(f"time must be RFC 3339 UTC like 2025-01-31T12:00:00Z, got {time!r}")
    return time


def make_gate_result(
    subjects: list[dict[str, Any]],
    *,
    component: str,
    gate: str,
    profile: str,
    passed: bool,
    policy: Mapping[str, Any],
    criteria: Sequence[Mapping[str, Any]],
    metrics: Mapping[str, Any],
    inputs: Mapping[str, str],
    input_digest: str,
    previous: tuple[str, str] | None,
    summary_digest: str,
    error: str | None,
    verifier_id: str,
    time: str,
) -> dict[str, Any]:
    """The gate result statement (:data:`GATE_RESULT_PREDICATE`) over ``subjects``.

    ``subjects`` and ``policy`` are those of the run's summary statement (pass
    ``summary["subject"]`` and ``summary["predicate"]["policy"]``), ``criteria`` the
    stored criterion dicts (metric/op/threshold/value/ok/reason), ``previous`` the
    previous gate and the digest of its summary statement (None for DEVELOPMENT),
    ``summary_digest`` the digest of this run's summary statement.

    Raises
    ------
    ValueError
        Naming the first malformed argument.
    """
    import json

    _check_gate(gate)
    _check_text(component, "component")
    _check_text(verifier_id, "verifier_id")
    _check_sha256(input_digest, "input_digest")
    _check_sha256(summary_digest, "summary_digest")
    if not isinstance(passed, bool):
        raise ValueError(f"passed must be a bool, got {passed!r}")
    signed_criteria = []
    for index, c in enumerate(criteria):
        missing = {"metric", "op", "threshold", "value", "ok", "reason"} - set(c)
        if missing:
            raise ValueError(f"criterion {index} lacks {', '.join(sorted(missing))}")
        signed_criteria.append({
            "metric": c["metric"], "op": c["op"], "threshold": c["threshold"], "value": c["value"],
            "verdict": "PASSED" if c["ok"] is True else "FAILED", "reason": c["reason"],
        })
    link = None
    if previous is not None:
        prev_gate, prev_digest = previous
        _check_gate(prev_gate)
        _check_sha256(prev_digest, "digest of the previous statement")
        link = {"gate": prev_gate, "uri": statement_uri(component, prev_gate),
                "digest": {"sha256": prev_digest}}
    for name, value in inputs.items():
        _check_sha256(value, f"digest of input {name!r}")
    predicate = {
        "component": component,
        "gate": gate,
        "profile": profile,
        "result": "PASSED" if passed else "FAILED",
        "policy": dict(policy),
        "criteria": signed_criteria,
        "metrics": dict(metrics),
        "runKey": {"digest": {"sha256": input_digest}, "inputs": dict(inputs)},
        "previous": link,
        "summary": {"uri": statement_uri(component, gate), "digest": {"sha256": summary_digest}},
        "error": error,
        "verifier": {"id": verifier_id},
        "timeVerified": _check_time(time),
    }
    try:  # the statement must be JSON exactly as written (no NaN, no tuples turned lists later)
        json.dumps(predicate, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the gate result is not plain JSON: {exc}") from None
    return {"_type": STATEMENT_TYPE, "subject": [dict(s) for s in subjects],
            "predicateType": GATE_RESULT_PREDICATE, "predicate": predicate}


def verify_artifact(
    data: bytes,
    name: str,
    envelope: Mapping[str, Any] | bytes,
    trust: TrustList,
    *,
    require_passed: bool = True,
    require_gate: str | None = None,
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
    require_gate : str, optional
        Also demand that ``verifiedLevels`` holds ``TCPKIT_GATE_<require_gate>`` (frozen
        artifacts require ``"PRODUCTION"``: a DEVELOPMENT pass does not ship).

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
    if require_passed or require_gate is not None:
        check_decision(statement, require_gate)
    check_subject(statement, data, name)
    return statement


def check_decision(statement: Mapping[str, Any], gate: str | None = None) -> None:
    """A SLSA summary with ``verificationResult`` PASSED and, given ``gate``, that gate's level."""
    predicate = statement.get("predicate")
    if statement.get("predicateType") != VSA_PREDICATE or not isinstance(predicate, dict):
        raise VerificationError(f"statement is not a SLSA verification summary ({VSA_PREDICATE})")
    if predicate.get("verificationResult") != "PASSED":
        raise VerificationError(
            f"the signed verification result is {predicate.get('verificationResult')!r}, not PASSED"
        )
    if gate is not None:
        levels = predicate.get("verifiedLevels")
        if not isinstance(levels, list) or level_of(gate) not in levels:
            raise VerificationError(
                f"the signed statement verifies levels {levels!r}, not {level_of(gate)}: "
                f"only a statement of a passed {gate} gate vouches for a frozen artifact"
            )


def subject_digest(statement: Mapping[str, Any], name: str) -> str | None:
    """The sha256 the statement gives for subject ``name``; None when it does not name it.

    Raises
    ------
    VerificationError
        The subject list is malformed, or names ``name`` more than once or without a sha256.
    """
    subjects = statement.get("subject")
    if not isinstance(subjects, list):
        raise VerificationError("statement has no subject list")
    matching = [s for s in subjects if isinstance(s, dict) and s.get("name") == name]
    if not matching:
        return None
    if len(matching) > 1:
        raise VerificationError(f"statement names subject {name!r} more than once")
    digest = matching[0].get("digest")
    expected = digest.get("sha256") if isinstance(digest, dict) else None
    if not isinstance(expected, str):
        raise VerificationError(f"statement gives no sha256 digest for {name!r}")
    return expected


def check_subject(statement: Mapping[str, Any], data: bytes, name: str) -> None:
    """The statement names ``name`` exactly once, with the sha256 of ``data``."""
    expected = subject_digest(statement, name)
    if expected is None:
        named = [s.get("name") for s in statement.get("subject", []) if isinstance(s, dict)]
        raise VerificationError(f"statement is about {named}, not exactly once about {name!r}")
    actual = sha256_hex(data)
    if actual != expected:
        raise VerificationError(
            f"digest mismatch for {name}: the bytes have sha256 {actual[:16]}..., "
            f"the signed statement says {expected[:16]}..."
        )


@dataclass(frozen=True)
class FrozenFiles:
    """The verified bytes of a frozen component: module, model (None when it froze none)."""

    component: str
    module: bytes
    model: bytes | None
    statement: dict[str, Any]
    signers: tuple[str, ...]


def verify_frozen_files(root: Path, component: str, trust: TrustList) -> FrozenFiles:
    """Read ``production/<component>.{py,model.npz,dsse.json}`` once and verify every subject.

    The envelope must verify against ``trust`` and hold a PASSED PRODUCTION summary
    naming the module with the sha256 of its bytes, and the model with the sha256 of
    its bytes when the statement names one. A model file beside a statement that does
    not name it, or a named model that is missing, is refused too.

    Raises
    ------
    VerificationError
        The first failed condition, naming the file.
    """
    project = Project.at(root)
    module_path = project.frozen_module(component)
    envelope_path = project.frozen_envelope(component)
    model_path = project.frozen_model(component)
    for path, what in ((module_path, "frozen module"), (envelope_path, "attestation")):
        if path.is_symlink() or not path.is_file():
            raise VerificationError(f"{what} {path} does not exist or is not a regular file")
    module = module_path.read_bytes()
    envelope = load_envelope(envelope_path.read_bytes())
    model = None
    if model_path.exists() or model_path.is_symlink():
        if model_path.is_symlink() or not model_path.is_file():
            raise VerificationError(f"model {model_path} is not a regular file")
        model = model_path.read_bytes()
    statement, signers = verify_envelope_signers(envelope, trust)
    check_decision(statement, "PRODUCTION")
    check_subject(statement, module, frozen_subject_name(component))
    model_name = frozen_model_subject_name(component)
    signed_model = subject_digest(statement, model_name)
    if signed_model is None and model is not None:
        raise VerificationError(f"{model_name} is not named by the signed statement: it was not frozen "
                                "with this module")
    if signed_model is not None:
        if model is None:
            raise VerificationError(f"the signed statement names {model_name}, which does not exist")
        check_subject(statement, model, model_name)
    return FrozenFiles(component, module, model, statement, signers)


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


def _check_one(root: Path, component: str, trust: TrustList) -> ArtifactCheck:
    name = frozen_subject_name(component)
    module = Project.at(root).frozen_module(component)
    digest = "sha256:" + sha256_hex(module.read_bytes()) if module.is_file() else ""
    try:
        files = verify_frozen_files(root, component, trust)
    except VerificationError as exc:
        return ArtifactCheck(name, digest, False, exc.reason)
    covered = "module and model" if files.model is not None else "module (no model)"
    return ArtifactCheck(name, digest, True,
                         f"verified {covered}, PASSED PRODUCTION, signed by {', '.join(files.signers)}",
                         files.signers)


def frozen_components(root: Path) -> list[str]:
    """Components with any frozen file (module, model or attestation) under ``root/production``."""
    production = Project.at(root).production
    if not production.is_dir():
        return []
    found: set[str] = set()
    for path in production.iterdir():
        for suffix in (ENVELOPE_SUFFIX, MODEL_SUFFIX, ".py"):
            if path.name.endswith(suffix) and path.name != "__init__.py":
                found.add(path.name[: -len(suffix)])
                break
    return sorted(found)


def verify_workspace(root: Path) -> list[ArtifactCheck]:
    """Check every frozen module, model and attestation under ``root/production``.

    Each ``production/<c>.py`` (``__init__.py`` aside) must have ``production/<c>.dsse.json``
    beside it and pass :func:`verify_frozen_files` against ``root/.tcpkit/trust``; an
    envelope or a model without its module and a module without its envelope are failures
    too. No ``production/`` directory means no artifacts (an empty list).

    Raises
    ------
    tcpkit.release.keys.KeyError_
        The trust list itself is broken (checked only when there is something to verify).
    """
    root = Path(root)
    components = frozen_components(root)
    if not components:
        return []
    project = Project.at(root)
    production = project.production
    trust = TrustList.load(project.trust_dir)
    checks = []
    for component in components:
        module = production / f"{component}.py"
        name = frozen_subject_name(component)
        if not (production / f"{component}{ENVELOPE_SUFFIX}").is_file():
            checks.append(ArtifactCheck(
                name, "sha256:" + sha256_hex(module.read_bytes()) if module.is_file() else "", False,
                f"no attestation {PRODUCTION_DIR}/{component}{ENVELOPE_SUFFIX}",
            ))
        elif not module.is_file():
            checks.append(ArtifactCheck(f"{PRODUCTION_DIR}/{component}{ENVELOPE_SUFFIX}", "", False,
                                        f"attestation without its module {name}"))
        else:
            checks.append(_check_one(root, component, trust))
    return checks
