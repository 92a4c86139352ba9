"""The gate chain verifies offline and every broken link is named (no kernel: statements built here)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from chainkit import POLICY, build_chain, freeze_with_chain, gate_bundle

from tcpkit.release.attestation import make_gate_result, statement_uri
from tcpkit.release.chain import GATE_ORDER, current_policies, verify_chains
from tcpkit.release.keys import HybridSigner
from tcpkit.release.metrics import model_bytes
from tcpkit.release.project import Project
from tcpkit.release.promote import freeze
from tcpkit.release.signing import ensure_signer

MODULE = b"def from_model(arrays):\n    return arrays\n"


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Project, HybridSigner]:
    monkeypatch.setenv("TCPKIT_KEYS", str(tmp_path / "keys"))
    root = Project.at(tmp_path / "p")
    root.state_dir.mkdir(parents=True)
    signer, _ = ensure_signer("runner-unit", trust_dir=root.trust_dir)
    return root, signer


def _reasons(project: Project) -> dict[str, tuple[bool, str]]:
    return {c.name: (c.ok, c.reason) for c in verify_chains(project)}


NAME = "production/alpha.chain.intoto.jsonl"


def test_a_good_chain_verifies(project: tuple[Project, HybridSigner]) -> None:
    root, signer = project
    freeze_with_chain(root.root, "alpha", MODULE, signer, model_bytes({"v": np.ones(2)}))
    ok, reason = _reasons(root)[NAME]
    assert ok and "DEVELOPMENT -> TESTING -> STAGING -> PRODUCTION" in reason


def _freeze_chain(root: Project, signer: HybridSigner, bundles: list[bytes], production: str,
                  model: bytes | None = None) -> None:
    freeze(root.root, "alpha", MODULE, signer=signer, policy_uri="file:pipeline.toml#PRODUCTION",
           policy_digest=POLICY, inputs={statement_uri("alpha", "PRODUCTION"): production},
           verifier_id="runner-unit", model=model, chain=b"".join(bundles))


def test_a_link_to_another_statement_is_a_broken_chain(project: tuple[Project, HybridSigner]) -> None:
    root, signer = project
    bundles, previous = [], None
    for gate in GATE_ORDER:
        link = "f" * 64 if gate == "STAGING" else previous
        bundle, previous = gate_bundle("alpha", gate, MODULE, None, signer, link)
        bundles.append(bundle)
    assert previous is not None
    _freeze_chain(root, signer, bundles, previous)
    ok, reason = _reasons(root)[NAME]
    assert not ok and "broken chain" in reason and "STAGING" in reason


def test_a_failed_criterion_anywhere_fails_the_chain(project: tuple[Project, HybridSigner]) -> None:
    root, signer = project
    bundles, previous = [], None
    for gate in GATE_ORDER:
        value = 0.1 if gate == "TESTING" else 1.0
        bundle, previous = gate_bundle("alpha", gate, MODULE, None, signer, previous, value=value)
        bundles.append(bundle)
    assert previous is not None
    _freeze_chain(root, signer, bundles, previous)
    ok, reason = _reasons(root)[NAME]
    assert not ok and "TESTING gate result signs failed criteria: ['score']" in reason


def test_a_model_other_than_the_measured_one_is_refused(project: tuple[Project, HybridSigner]) -> None:
    root, signer = project
    measured = model_bytes({"v": np.ones(2)})
    chain, production = build_chain("alpha", MODULE, measured, signer)
    (root.production).mkdir(parents=True, exist_ok=True)
    root.frozen_chain("alpha").write_bytes(chain)
    _freeze_chain(root, signer, [chain], production, model_bytes({"v": np.zeros(2)}))
    ok, reason = _reasons(root)[NAME]
    assert not ok and "production/alpha.model.npz is not the one the PRODUCTION gate measured" in reason


def test_a_chain_signed_by_an_untrusted_key_is_refused(project: tuple[Project, HybridSigner]) -> None:
    root, signer = project
    chain, production = build_chain("alpha", MODULE, None, HybridSigner.generate("mallory"))
    _freeze_chain(root, signer, [chain], production)
    ok, reason = _reasons(root)[NAME]
    assert not ok and "trusted key" in reason


def test_policy_lookup_reports_a_changed_gate(project: tuple[Project, HybridSigner]) -> None:
    root, signer = project
    freeze_with_chain(root.root, "alpha", MODULE, signer)
    result = verify_chains(root, lambda component, gate, profile: "1" * 64 if gate == "STAGING" else None)
    assert not result[0].ok and "the STAGING gate of alpha changed since it was measured" in result[0].reason
    assert current_policies(root.pipeline_file) is None  # no pipeline file: nothing to compare


def test_gate_result_refuses_values_that_are_not_plain_json() -> None:
    summary_subjects = [{"name": "x", "digest": {"sha256": "0" * 64}}]
    kwargs = dict(component="alpha", gate="TESTING", profile="quick", passed=True,
                  policy={"uri": "u", "digest": {"sha256": "0" * 64}}, criteria=[],
                  inputs={}, input_digest="0" * 64, previous=None, summary_digest="0" * 64,
                  error=None, verifier_id="v", time="2026-01-01T00:00:00Z")
    with pytest.raises(ValueError, match="not plain JSON"):
        make_gate_result(summary_subjects, metrics={"x": math.nan}, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="criterion 0 lacks"):
        make_gate_result(summary_subjects, metrics={}, **{**kwargs, "criteria": [{"metric": "x"}]})  # type: ignore[arg-type]
    statement = make_gate_result(summary_subjects, metrics={"x": 1}, **kwargs)  # type: ignore[arg-type]
    assert statement["predicateType"] == "https://tcpkit.dev/gate-result/v1"
    assert json.loads(json.dumps(statement)) == statement
