"""`tcpkit verify`: every frozen module in production/ against its signed attestation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tcpkit.cli import main
from tcpkit.release.signing import (
    HybridSigner,
    dump_envelope,
    frozen_subject_name,
    make_statement,
    sha256_hex,
    sign_statement,
    verify_workspace,
)


@pytest.fixture(scope="module")
def alice() -> HybridSigner:
    return HybridSigner.generate("alice")


def _freeze(root: Path, component: str, source: bytes, signer: HybridSigner) -> None:
    from chainkit import build_chain

    production = root / "production"
    production.mkdir(parents=True, exist_ok=True)
    chain, link = build_chain(component, source, None, signer)  # the four gates that led here
    (production / f"{component}.chain.intoto.jsonl").write_bytes(chain)
    production.mkdir(parents=True, exist_ok=True)
    (production / f"{component}.py").write_bytes(source)
    statement = make_statement(
        frozen_subject_name(component),
        sha256_hex(source),
        gate="PRODUCTION",
        policy_uri="file:pipeline.toml#PRODUCTION",
        policy_digest="0" * 64,
        inputs={f"reports/PRODUCTION/{component}.html": sha256_hex(b"r"),
                f"tcpkit:statement/{component}/PRODUCTION": link},
        passed=True,
        verifier_id="tcpkit-pipeline",
    )
    (production / f"{component}.dsse.json").write_bytes(
        dump_envelope(sign_statement(statement, [signer]))
    )


@pytest.fixture
def workspace(tmp_path: Path, alice: HybridSigner) -> Path:
    trust = tmp_path / ".tcpkit" / "trust"
    trust.mkdir(parents=True)
    (trust / "alice.pub").write_text(alice.public_record().to_json())
    _freeze(tmp_path, "statistics", b"A = 1\n", alice)
    _freeze(tmp_path, "security", b"B = 2\n", alice)
    return tmp_path


def _verify_json(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main(["verify", "--json", "--root", str(root)])
    return code, json.loads(capsys.readouterr().out)


def test_empty_workspace_is_ok_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert verify_workspace(tmp_path) == []
    assert main(["verify", "--root", str(tmp_path)]) == 0
    assert "nothing to verify" in capsys.readouterr().out
    assert _verify_json(tmp_path, capsys) == (0, {"ok": True, "artifacts": []})


def test_signed_workspace_verifies(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checks = verify_workspace(workspace)
    assert [(c.name, c.ok) for c in checks] == [
        ("production/security.py", True),
        ("production/statistics.py", True),
    ]
    assert checks[1].digest == "sha256:" + sha256_hex(b"A = 1\n")
    assert checks[1].signers == ("alice",)
    code, report = _verify_json(workspace, capsys)
    assert code == 0 and report["ok"] is True
    assert set(report["artifacts"][0]) == {"name", "digest", "ok", "reason"}
    assert main(["verify", "--root", str(workspace)]) == 0
    assert "4 of 4 artifacts verified" in capsys.readouterr().out  # 2 modules, 2 chains


def test_each_failure_is_one_line_naming_artifact_and_reason(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    production = workspace / "production"
    (production / "statistics.py").write_bytes(b"A = 2\n")  # edited after signing
    (production / "orphan.py").write_bytes(b"C = 3\n")  # never attested
    (production / "ghost.dsse.json").write_bytes((production / "security.dsse.json").read_bytes())
    assert main(["verify", "--root", str(workspace)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3
    assert any("production/statistics.py" in line and "digest mismatch" in line for line in err)
    assert any("production/orphan.py" in line and "no attestation" in line for line in err)
    assert any("ghost" in line and "without its module" in line for line in err)
    code, report = _verify_json(workspace, capsys)
    assert code == 1 and report["ok"] is False
    assert {a["name"]: a["ok"] for a in report["artifacts"]}["production/security.py"] is True


def test_untrusted_signer_and_swapped_envelopes_fail(
    workspace: Path, alice: HybridSigner, capsys: pytest.CaptureFixture[str]
) -> None:
    production = workspace / "production"
    _freeze(workspace, "statistics", b"A = 1\n", HybridSigner.generate("mallory"))
    a, b = production / "security.dsse.json", production / "security.py"
    # an attestation about another module does not vouch for this one
    (production / "extra.py").write_bytes(b.read_bytes())
    (production / "extra.dsse.json").write_bytes(a.read_bytes())
    checks = {c.name: c for c in verify_workspace(workspace)}
    assert "trusted key" in checks["production/statistics.py"].reason
    assert "not exactly once about 'production/extra.py'" in checks["production/extra.py"].reason
    assert checks["production/security.py"].ok


def test_symlinked_module_refused(workspace: Path) -> None:
    production = workspace / "production"
    real = workspace / "elsewhere.py"
    real.write_bytes((production / "statistics.py").read_bytes())
    (production / "statistics.py").unlink()
    os.symlink(real, production / "statistics.py")
    checks = {c.name: c for c in verify_workspace(workspace)}
    assert not checks["production/statistics.py"].ok
    assert "regular file" in checks["production/statistics.py"].reason


def test_broken_trust_list_fails_the_check(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workspace / ".tcpkit" / "trust" / "alice.pub").write_text("{not json")
    assert main(["verify", "--root", str(workspace)]) == 1
    assert "trust" in capsys.readouterr().err
