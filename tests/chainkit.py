"""Test helper: freeze a component the way the pipeline does, with a signed four-gate chain.

Builds, for each gate, the summary and gate result statements over the module (and
model), linked gate to gate, signs them with ``signer``, and freezes through
:func:`tcpkit.release.promote.freeze` with that chain. ``gate`` lets a test make the
frozen statement claim another level (a DEVELOPMENT statement presented as PRODUCTION).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tcpkit.release.attestation import (
    frozen_model_subject_name,
    frozen_subject_name,
    make_gate_result,
    make_statement,
    payload_digest,
    statement_uri,
)
from tcpkit.release.chain import GATE_ORDER, dump_bundle
from tcpkit.release.dsse import dump_envelope, sign_statement
from tcpkit.release.promote import chain_path, freeze

POLICY = "0" * 64
TIME = "2026-01-01T00:00:00Z"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def gate_bundle(component: str, gate: str, module: bytes, model: bytes | None, signer: Any,
                previous: str | None, *, value: float = 1.0) -> tuple[bytes, str]:
    """One gate's bundle and the digest of its summary statement."""
    subjects = {frozen_subject_name(component): _sha(module)}
    if model is not None:
        subjects[frozen_model_subject_name(component)] = _sha(model)
    index = GATE_ORDER.index(gate)
    inputs = {} if previous is None else {statement_uri(component, GATE_ORDER[index - 1]): previous}
    summary = make_statement(f"notebooks/{component}.ipynb", _sha(b"notebook"), gate=gate,
                             policy_uri=f"file:pipeline.toml#{gate}", policy_digest=POLICY,
                             inputs=inputs, passed=True, verifier_id="runner-unit", time=TIME,
                             resource_uri=f"tcpkit:component/{component}", extra_subjects=subjects)
    envelope = sign_statement(summary, [signer])
    criteria = [{"metric": "score", "op": ">=", "threshold": 0.5, "value": value, "ok": value >= 0.5,
                 "reason": "holds"}]
    result = make_gate_result(
        summary["subject"], component=component, gate=gate, profile="quick", passed=True,
        policy=summary["predicate"]["policy"], criteria=criteria, metrics={"score": value},
        inputs={"notebook": _sha(b"notebook")}, input_digest=_sha(b"key"),
        previous=None if previous is None else (GATE_ORDER[index - 1], previous),
        summary_digest=payload_digest(envelope), error=None, verifier_id="runner-unit", time=TIME,
    )
    return dump_bundle([envelope, sign_statement(result, [signer])]), payload_digest(envelope)


def build_chain(component: str, module: bytes, model: bytes | None, signer: Any) -> tuple[bytes, str]:
    """The four bundles (DEVELOPMENT..PRODUCTION) and the PRODUCTION summary's digest."""
    bundles, previous = [], None
    for gate in GATE_ORDER:
        bundle, previous = gate_bundle(component, gate, module, model, signer, previous)
        bundles.append(bundle)
    assert previous is not None
    return b"".join(bundles), previous


def freeze_with_chain(root: Path, component: str, module: bytes, signer: Any,
                      model: bytes | None = None) -> None:
    """Freeze ``module`` (and ``model``) as the pipeline would after four passing gates."""
    chain, production = build_chain(component, module, model, signer)
    freeze(root, component, module, signer=signer, policy_uri="file:pipeline.toml#PRODUCTION",
           policy_digest=POLICY, inputs={statement_uri(component, "PRODUCTION"): production},
           verifier_id="runner-unit", model=model, chain=chain)
    assert chain_path(root, component).read_bytes() == chain


def write_statement(root: Path, component: str, module: bytes, signer: Any, gate: str,
                    model: bytes | None = None) -> None:
    """Replace the frozen attestation with a PASSED statement of ``gate`` over the same files."""
    subjects = {frozen_model_subject_name(component): _sha(model)} if model is not None else {}
    statement = make_statement(frozen_subject_name(component), _sha(module), gate=gate,
                               policy_uri="file:pipeline.toml#PRODUCTION", policy_digest=POLICY,
                               inputs={}, passed=True, verifier_id="runner-unit",
                               extra_subjects=subjects)
    (root / "production" / f"{component}.dsse.json").write_bytes(
        dump_envelope(sign_statement(statement, [signer])))
