"""The chain of gate attestations: bundles of a run's two statements, and their offline check.

Each gate run signs two statements (see :mod:`tcpkit.release.attestation`): a SLSA
verification summary and a gate result. They are kept together as an in-toto
*bundle*: JSON Lines, one DSSE envelope per line (compact JSON, sorted keys), the
summary first. The bundle is what the object store keeps for a run.

Both statements of gate *n* name the digest of gate *n-1*'s summary statement, so
DEVELOPMENT -> TESTING -> STAGING -> PRODUCTION is one chain. Freezing writes the four
bundles of the chain that led to the frozen artifact, in gate order, as
``production/<component>.chain.intoto.jsonl``; :func:`verify_chain` checks it against
the frozen statement with nothing but the files and the trust list: every envelope
signed by a trusted key, every gate PASSED at its own level with every criterion met,
every link equal to the previous summary's digest, one notebook and one module through
all four gates, and the frozen module, model and policy equal to what PRODUCTION signed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcpkit.release.attestation import (
    CHAIN_SUFFIX,
    GATE_RESULT_PREDICATE,
    PRODUCTION_DIR,
    VSA_PREDICATE,
    ArtifactCheck,
    check_decision,
    frozen_components,
    frozen_model_subject_name,
    frozen_subject_name,
    payload_digest,
    sha256_hex,
    statement_uri,
    subject_digest,
    verify_frozen_files,
)
from tcpkit.release.dsse import VerificationError, strict_json, verify_envelope_signers
from tcpkit.release.keys import TrustList
from tcpkit.release.project import Project

GATE_ORDER: tuple[str, ...] = ("DEVELOPMENT", "TESTING", "STAGING", "PRODUCTION")


def dump_bundle(envelopes: Sequence[Mapping[str, Any]]) -> bytes:
    """The JSON Lines bytes of ``envelopes`` (one compact, key-sorted envelope per line)."""
    return b"".join(
        (json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8") for e in envelopes
    )


def load_bundle(raw: bytes, what: str = "bundle") -> list[dict[str, Any]]:
    """The envelopes of JSON Lines bytes; VerificationError naming the line that is not one."""
    envelopes = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        document = strict_json(line, f"{what} line {number}")
        if not isinstance(document, dict):
            raise VerificationError(f"{what} line {number} is not a DSSE envelope (a JSON object)")
        envelopes.append(document)
    if not envelopes:
        raise VerificationError(f"{what} holds no envelope")
    return envelopes


@dataclass(frozen=True)
class GateAttestation:
    """The verified statements of one gate run: summary, gate result, the summary's digest."""

    gate: str
    summary: dict[str, Any]
    result: dict[str, Any]
    digest: str
    signers: tuple[str, ...] = ()


def open_run_bundle(raw: bytes, trust: TrustList, what: str = "bundle") -> GateAttestation:
    """Verify a run's bundle (summary + gate result, both signed, paired) and return it.

    Raises
    ------
    VerificationError
        A signature fails, a statement has the wrong type, or the two do not belong together.
    """
    envelopes = load_bundle(raw, what)
    if len(envelopes) != 2:
        raise VerificationError(
            f"{what} holds {len(envelopes)} envelopes, expected 2 (the summary and the gate result); "
            "a run recorded before gate results were signed cannot be verified"
        )
    return _pair(envelopes[0], envelopes[1], trust, what)


def _pair(vsa_env: Mapping[str, Any], result_env: Mapping[str, Any], trust: TrustList,
          what: str) -> GateAttestation:
    summary, signers = verify_envelope_signers(vsa_env, trust)
    result, _ = verify_envelope_signers(result_env, trust)
    if summary.get("predicateType") != VSA_PREDICATE:
        raise VerificationError(f"{what}: the first statement is not a SLSA verification summary")
    if result.get("predicateType") != GATE_RESULT_PREDICATE:
        raise VerificationError(
            f"{what}: the second statement is of type {result.get('predicateType')!r}, "
            f"not {GATE_RESULT_PREDICATE}"
        )
    digest = payload_digest(vsa_env)
    predicate = result["predicate"] if isinstance(result.get("predicate"), dict) else {}
    gate = predicate.get("gate")
    if not isinstance(gate, str) or gate not in GATE_ORDER:
        raise VerificationError(f"{what}: the gate result names no known gate ({gate!r})")
    own = (predicate.get("summary") or {}).get("digest", {}).get("sha256")
    if own != digest:
        raise VerificationError(f"{what}: the {gate} gate result was not signed with this summary")
    if result.get("subject") != summary.get("subject"):
        raise VerificationError(f"{what}: the {gate} summary and gate result name different subjects")
    vsa = summary["predicate"] if isinstance(summary.get("predicate"), dict) else {}
    if predicate.get("policy") != vsa.get("policy"):
        raise VerificationError(f"{what}: the {gate} summary and gate result name different policies")
    decided = vsa.get("verificationResult")
    if predicate.get("result") != decided:
        raise VerificationError(f"{what}: the {gate} summary says {decided!r}, its gate result "
                                f"{predicate.get('result')!r}")
    return GateAttestation(gate, summary, result, digest, tuple(signers))


def previous_link(attestation: GateAttestation) -> str | None:
    """The previous summary's digest named by both statements; VerificationError if they differ."""
    component = attestation.result["predicate"].get("component")
    gate = attestation.gate
    link = attestation.result["predicate"].get("previous")
    result_digest = None if link is None else (link.get("digest") or {}).get("sha256")
    vsa_links = [
        (item.get("digest") or {}).get("sha256")
        for item in attestation.summary["predicate"].get("inputAttestations", [])
        if isinstance(item, dict) and str(item.get("uri", "")).startswith(f"tcpkit:statement/{component}/")
    ]
    if len(vsa_links) > 1:
        raise VerificationError(f"the {gate} summary names {len(vsa_links)} previous statements")
    vsa_digest = vsa_links[0] if vsa_links else None
    if vsa_digest != result_digest:
        raise VerificationError(f"the {gate} summary and gate result name different previous statements")
    if gate == GATE_ORDER[0]:
        if result_digest is not None:
            raise VerificationError("the DEVELOPMENT statements name a previous gate")
        return None
    expected = GATE_ORDER[GATE_ORDER.index(gate) - 1]
    if result_digest is None or link.get("gate") != expected:
        raise VerificationError(f"broken chain: the {gate} statements do not name the {expected} "
                                "statement they follow")
    return str(result_digest)


def check_passed(attestation: GateAttestation) -> None:
    """The gate passed at its own level and every signed criterion holds."""
    check_decision(attestation.summary, attestation.gate)
    criteria = attestation.result["predicate"].get("criteria")
    if not isinstance(criteria, list) or not criteria:
        raise VerificationError(f"the {attestation.gate} gate result signs no criterion")
    failed = [c.get("metric") for c in criteria if not isinstance(c, dict) or c.get("verdict") != "PASSED"]
    if failed:
        raise VerificationError(f"the {attestation.gate} gate result signs failed criteria: {failed}")


PolicyLookup = Callable[[str, str, str], str | None]
"""``(component, gate, profile) -> sha256`` of the gate's current definition (None: not defined)."""


def current_policies(pipeline_file: Path) -> PolicyLookup | None:
    """The policy digests ``pipeline_file`` defines now; None when there is no such file.

    Raises
    ------
    tcpkit.release.gates.PipelineError
        The file exists but is not a valid pipeline definition.
    """
    from tcpkit.release.gates import load_pipeline

    if not Path(pipeline_file).is_file():
        return None
    pipeline = load_pipeline(pipeline_file, require_notebooks=False)

    def lookup(component: str, gate: str, profile: str) -> str | None:
        spec = pipeline.components.get(component)
        if spec is None or gate not in spec.gates or profile not in ("quick", "full"):
            return None
        return spec.gates[gate].digest(profile)

    return lookup


def verify_chain(component: str, frozen: Mapping[str, Any], raw: bytes, trust: TrustList,
                 policy: PolicyLookup | None = None) -> list[str]:
    """Check the chain file of a frozen component against its verified frozen statement.

    With ``policy`` (see :func:`current_policies`), every gate's signed policy digest must
    also equal the definition the pipeline file holds now: a gate whose criteria or
    parameters changed after it was measured no longer vouches for the artifact.

    Returns
    -------
    list of str
        The gates of the chain in order (always all four).

    Raises
    ------
    VerificationError
        The first broken condition, in one sentence.
    """
    what = f"production/{component}.chain.intoto.jsonl"
    envelopes = load_bundle(raw, what)
    if len(envelopes) != 2 * len(GATE_ORDER):
        raise VerificationError(f"{what} holds {len(envelopes)} envelopes, expected "
                                f"{2 * len(GATE_ORDER)} (summary and gate result of each gate)")
    chain = [_pair(envelopes[i], envelopes[i + 1], trust, what) for i in range(0, len(envelopes), 2)]
    previous: GateAttestation | None = None
    for expected, link in zip(GATE_ORDER, chain, strict=True):
        if link.gate != expected:
            raise VerificationError(f"broken chain: {what} has {link.gate} where {expected} belongs")
        if link.result["predicate"].get("component") != component:
            raise VerificationError(f"{what}: the {link.gate} statements are about component "
                                    f"{link.result['predicate'].get('component')!r}")
        check_passed(link)
        named = previous_link(link)
        if previous is not None and named != previous.digest:
            raise VerificationError(f"broken chain: the {link.gate} statements follow a "
                                    f"{previous.gate} statement other than the one in the chain")
        _check_policy(component, link, policy)
        if previous is not None:
            for subject in (_notebook_name(previous), frozen_subject_name(component)):
                if subject_digest(previous.summary, subject) != subject_digest(link.summary, subject):
                    raise VerificationError(f"broken chain: {subject} differs between {previous.gate} "
                                            f"and {link.gate}")
        previous = link
    production = chain[-1]
    links = [
        (item.get("digest") or {}).get("sha256")
        for item in frozen.get("predicate", {}).get("inputAttestations", [])
        if isinstance(item, dict) and item.get("uri") == statement_uri(component, "PRODUCTION")
    ]
    if links != [production.digest]:
        raise VerificationError("broken chain: the frozen statement does not name the PRODUCTION "
                                f"statement of {what}")
    if frozen.get("predicate", {}).get("policy") != production.summary["predicate"].get("policy"):
        raise VerificationError("the frozen statement's policy differs from the one PRODUCTION passed")
    for subject in (frozen_subject_name(component), frozen_model_subject_name(component)):
        if subject_digest(frozen, subject) != subject_digest(production.summary, subject):
            raise VerificationError(f"{subject} is not the one the PRODUCTION gate measured")
    return [link.gate for link in chain]


def _check_policy(component: str, link: GateAttestation, policy: PolicyLookup | None) -> None:
    if policy is None:
        return
    predicate = link.result["predicate"]
    now = policy(component, link.gate, str(predicate.get("profile")))
    signed = (predicate.get("policy") or {}).get("digest", {}).get("sha256")
    if now is not None and now != signed:
        raise VerificationError(
            f"the {link.gate} gate of {component} changed since it was measured: pipeline.toml now "
            f"defines it with digest {now[:12]}, the chain signed {str(signed)[:12]} (run the "
            "pipeline again)"
        )


def _notebook_name(attestation: GateAttestation) -> str:
    subjects = attestation.summary.get("subject") or [{}]
    return str(subjects[0].get("name"))


def verify_chains(root: Path | Project, policy: PolicyLookup | None = None) -> list[ArtifactCheck]:
    """One check per frozen component: its chain file against its verified frozen statement
    (and, given ``policy``, against the gate definitions the pipeline file holds now).

    A component whose frozen files do not verify is reported by
    :func:`tcpkit.release.attestation.verify_workspace`; here it is skipped.
    """
    project = Project.at(root)
    components = [c for c in frozen_components(project.root)
                  if project.frozen_module(c).is_file() and project.frozen_envelope(c).is_file()]
    if not components:
        return []
    trust = TrustList.load(project.trust_dir)
    checks = []
    for component in components:
        name = f"{PRODUCTION_DIR}/{component}{CHAIN_SUFFIX}"
        try:
            frozen = verify_frozen_files(project.root, component, trust)
        except VerificationError:
            continue
        path = project.frozen_chain(component)
        if path.is_symlink() or not path.is_file():
            checks.append(ArtifactCheck(name, "", False, "missing: a frozen component needs the chain of "
                                        "its four gate attestations"))
            continue
        raw = path.read_bytes()
        try:
            gates = verify_chain(component, frozen.statement, raw, trust, policy)
        except VerificationError as exc:
            checks.append(ArtifactCheck(name, "sha256:" + sha256_hex(raw), False, exc.reason))
            continue
        checks.append(ArtifactCheck(name, "sha256:" + sha256_hex(raw), True,
                                    f"chain {' -> '.join(gates)} verified, every criterion met"))
    return checks
