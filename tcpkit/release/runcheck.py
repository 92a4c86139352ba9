"""Verification of recorded gate runs: the signed decision of every run in the workspace.

``tcpkit verify`` checks the frozen modules in ``production/`` (see
:func:`tcpkit.release.attestation.verify_workspace`) and, through this module,
every gate run the workspace recorded: the run's DSSE envelope must be intact in
the object store and signed (Ed25519 + ML-DSA-65) by a trusted key, and what it
attests must be what the database says happened: the notebook digest, the
decision, and the report and executed notebook, which must still be in the store
with their recorded digests. A run whose evidence was edited, deleted or
re-signed by an untrusted key is reported, never silently accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tcpkit.release.attestation import ArtifactCheck
from tcpkit.release.keys import TrustList
from tcpkit.release.store import StoreError


def _attested_inputs(statement: Mapping[str, Any]) -> dict[str, str]:
    """``uri -> sha256`` of the statement's SLSA input attestations."""
    found: dict[str, str] = {}
    for item in statement.get("predicate", {}).get("inputAttestations", []):
        found[str(item.get("uri"))] = str(item.get("digest", {}).get("sha256"))
    return found


def _check_run(run: Any, store: Any, trust: TrustList) -> ArtifactCheck:
    from tcpkit.release.signing import VerificationError, load_envelope, verify_envelope_signers

    name = f"gate-run/{run.component}/{run.gate}/{run.run_id}"
    if not run.envelope_digest:
        return ArtifactCheck(name, "", False, "the run has no signed attestation")
    digest = f"sha256:{run.envelope_digest}"
    try:
        statement, signers = verify_envelope_signers(
            load_envelope(store.get_bytes(run.envelope_digest)), trust
        )
    except StoreError as exc:
        return ArtifactCheck(name, digest, False, f"attestation object: {exc}")
    except VerificationError as exc:
        return ArtifactCheck(name, digest, False, f"attestation: {exc.reason}")
    subject = statement.get("subject", [{}])[0].get("digest", {}).get("sha256")
    if subject != run.inputs.get("notebook"):
        return ArtifactCheck(name, digest, False, "the signed notebook digest differs from the recorded run")
    signed_result = statement.get("predicate", {}).get("verificationResult")
    if signed_result != ("PASSED" if run.decision == "passed" else "FAILED"):
        return ArtifactCheck(
            name, digest, False, f"recorded decision {run.decision!r} but the signed result is {signed_result!r}"
        )
    attested = _attested_inputs(statement)
    evidence = {"report": run.report_digest, "executed notebook": run.executed_notebook_digest}
    for label, recorded in evidence.items():
        if recorded is None:
            continue
        if recorded not in attested.values():
            return ArtifactCheck(name, digest, False, f"the {label} {recorded[:12]} is not in the signed statement")
        try:
            store.get_bytes(recorded)  # verifies the bytes against their digest
        except StoreError as exc:
            return ArtifactCheck(name, digest, False, f"{label}: {exc}")
    return ArtifactCheck(name, digest, True, f"verified, signed by {', '.join(signers)}", tuple(signers))


def verify_gate_runs(root: Path) -> list[ArtifactCheck]:
    """One check per recorded gate run; empty when the project has no workspace yet."""
    from tcpkit.release.workspace import Workspace

    root = Path(root)
    if not (root / ".tcpkit" / "tcpkit.db").is_file():
        return []
    trust = TrustList.load(root / ".tcpkit" / "trust")
    with Workspace.open(root) as ws:
        return [_check_run(run, ws.store, trust) for run in ws.gate_runs()]
