"""Verification of recorded gate runs: the signed statements of every run against the database.

``tcpkit verify`` checks the frozen artifacts in ``production/`` (see
:func:`tcpkit.release.attestation.verify_workspace` and
:func:`tcpkit.release.chain.verify_chain`) and, through this module, every gate run the
workspace recorded. A run's bundle (its summary and gate result statements) must be
intact in the object store and both statements signed (Ed25519 + ML-DSA-65) by a
trusted key, and what they sign must be what the database says happened: the
notebook digest, the gate, the decision, every metric and every criterion (metric,
op, threshold, measured value, verdict, reason), the input digests and the run key;
the report and the executed notebook must still be in the store with their signed
digests; and the previous gate's statement each run names must be the summary of a
passing run of that gate recorded in the workspace. A metric edited in SQLite is
reported by name; nothing is silently accepted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tcpkit.release.attestation import ArtifactCheck
from tcpkit.release.keys import TrustList
from tcpkit.release.project import Project
from tcpkit.release.store import StoreError

_GATES = ("DEVELOPMENT", "TESTING", "STAGING", "PRODUCTION")


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON (so 1 and True, or 1 and 1.0, are different values)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _attested_inputs(statement: Mapping[str, Any]) -> dict[str, str]:
    """``uri -> sha256`` of the statement's SLSA input attestations."""
    found: dict[str, str] = {}
    for item in statement.get("predicate", {}).get("inputAttestations", []):
        found[str(item.get("uri"))] = str(item.get("digest", {}).get("sha256"))
    return found


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def differences(run: Any, signed: Mapping[str, Any]) -> list[str]:
    """How the database's record of ``run`` differs from its signed gate result (empty: none).

    Each difference is one sentence naming the metric, criterion or input.
    """
    found: list[str] = []
    if signed.get("component") != run.component or signed.get("gate") != run.gate:
        found.append(f"the signed gate result is about {signed.get('component')}/{signed.get('gate')}, "
                     f"the database says {run.component}/{run.gate}")
    decision = "PASSED" if run.decision == "passed" else "FAILED"
    if signed.get("result") != decision:
        found.append(f"recorded decision {run.decision!r} but the signed result is {signed.get('result')!r}")
    metrics: dict[str, Any] = _as_dict(signed.get("metrics"))
    for name in sorted(set(run.metrics) | set(metrics)):
        if name not in metrics:
            found.append(f"metric {name!r} is in the database but not in the signed statement")
        elif name not in run.metrics:
            found.append(f"metric {name!r} is signed ({metrics[name]!r}) but missing from the database")
        elif not _same(run.metrics[name], metrics[name]):
            found.append(f"metric {name!r} is {run.metrics[name]!r} in the database but "
                         f"{metrics[name]!r} in the signed statement")
    raw_criteria = signed.get("criteria")
    criteria: list[Any] = raw_criteria if isinstance(raw_criteria, list) else []
    if len(criteria) != len(run.criteria):
        found.append(f"the database records {len(run.criteria)} criteria, the signed statement "
                     f"{len(criteria)}")
    for db, sig in zip(run.criteria, criteria, strict=False):
        label = f"criterion {db.get('metric')} {db.get('op')} {db.get('threshold')}"
        for key in ("metric", "op", "threshold", "value", "reason"):
            if not _same(db.get(key), sig.get(key)):
                found.append(f"{label}: {key} is {db.get(key)!r} in the database but {sig.get(key)!r} "
                             "in the signed statement")
        verdict = "PASSED" if db.get("ok") is True else "FAILED"
        if sig.get("verdict") != verdict:
            found.append(f"{label}: the database says {'holds' if db.get('ok') else 'fails'}, the signed "
                         f"verdict is {sig.get('verdict')!r}")
    run_key = _as_dict(signed.get("runKey"))
    inputs = _as_dict(run_key.get("inputs"))
    for name in sorted(set(run.inputs) | set(inputs)):
        if run.inputs.get(name) != inputs.get(name):
            found.append(f"input {name!r} is {str(run.inputs.get(name))[:12]} in the database but "
                         f"{str(inputs.get(name))[:12]} in the signed statement")
    if (run_key.get("digest") or {}).get("sha256") != run.input_digest:
        found.append("the recorded run key (input digest) differs from the signed one")
    return found


def _open(run: Any, store: Any, trust: TrustList) -> tuple[Any, ArtifactCheck | None]:
    from tcpkit.release.chain import open_run_bundle
    from tcpkit.release.signing import VerificationError

    name = f"gate-run/{run.component}/{run.gate}/{run.run_id}"
    if not run.envelope_digest:
        return None, ArtifactCheck(name, "", False, "the run has no signed attestation")
    digest = f"sha256:{run.envelope_digest}"
    try:
        return open_run_bundle(store.get_bytes(run.envelope_digest), trust, "attestation"), None
    except StoreError as exc:
        return None, ArtifactCheck(name, digest, False, f"attestation object: {exc}")
    except VerificationError as exc:
        return None, ArtifactCheck(name, digest, False, exc.reason)


def _check_run(run: Any, attestation: Any, store: Any, passing: Mapping[tuple[str, str], set[str]]
               ) -> ArtifactCheck:
    from tcpkit.release.chain import previous_link
    from tcpkit.release.signing import VerificationError

    name = f"gate-run/{run.component}/{run.gate}/{run.run_id}"
    digest = f"sha256:{run.envelope_digest}"
    statement = attestation.summary
    subject = statement.get("subject", [{}])[0].get("digest", {}).get("sha256")
    if subject != run.inputs.get("notebook"):
        return ArtifactCheck(name, digest, False, "the signed notebook digest differs from the recorded run")
    found = differences(run, attestation.result.get("predicate", {}))
    if found:
        return ArtifactCheck(name, digest, False, "; ".join(found))
    try:
        link = previous_link(attestation)
    except VerificationError as exc:
        return ArtifactCheck(name, digest, False, exc.reason)
    if link is not None:
        before = _GATES[_GATES.index(run.gate) - 1]
        if link not in passing.get((run.component, before), set()):
            return ArtifactCheck(name, digest, False, f"broken chain: the {before} statement this run "
                                 "follows is not the summary of any passing run in the workspace")
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
    return ArtifactCheck(name, digest, True, "verified summary and gate result, metrics and criteria "
                         f"equal to the database, signed by {', '.join(attestation.signers)}",
                         attestation.signers)


def verify_gate_runs(root: Path | Project) -> list[ArtifactCheck]:
    """One check per recorded gate run; empty when the project has no workspace yet."""
    from tcpkit.release.workspace import Workspace

    project = Project.at(root)
    if not project.database.is_file():
        return []
    trust = TrustList.load(project.trust_dir)
    with Workspace.open(project.root) as ws:
        return check_recorded_runs(ws, trust)


def check_recorded_runs(ws: Any, trust: TrustList) -> list[ArtifactCheck]:
    """One check per gate run recorded in the open workspace ``ws`` (see the module docstring)."""
    runs = ws.gate_runs()
    opened = [_open(run, ws.store, trust) for run in runs]
    passing: dict[tuple[str, str], set[str]] = {}
    for run, (attestation, _) in zip(runs, opened, strict=True):
        if attestation is not None and run.decision == "passed":
            passing.setdefault((run.component, run.gate), set()).add(attestation.digest)
    return [
        failure if failure is not None else _check_run(run, attestation, ws.store, passing)
        for run, (attestation, failure) in zip(runs, opened, strict=True)
    ]
