"""Frozen modules for checks outside the gate pipeline (nbval, sabotage tests).

A notebook that loads frozen modules (``load_frozen``) cannot run on a fresh clone, which
has none until ``make run``. For checks, the domain notebooks' export cells are frozen into
a temporary project by the real promotion code, signed with a throwaway key that only that
project trusts. The attestations name the policy :data:`FIXTURE_POLICY`, so nobody can
mistake them for gate decisions; point a kernel at the project with ``TCPKIT_ROOT``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

FIXTURE_POLICY = "nbval-fixture:not-a-gate-run"
FIXTURE_SIGNER = "nbval-fixture"


def freeze_for_checks(root: Path, notebooks: Path, names: Sequence[str]) -> None:
    """Freeze each ``notebooks/<name>.ipynb``'s export cells into the project at ``root``."""
    from tcpkit.release.keys import HybridSigner, trust_path
    from tcpkit.release.promote import build_module, freeze

    signer = HybridSigner.generate(FIXTURE_SIGNER)
    trust = trust_path(FIXTURE_SIGNER, root / ".tcpkit" / "trust")
    trust.parent.mkdir(parents=True, exist_ok=True)
    trust.write_text(signer.public_record().to_json())
    for name in names:
        notebook = notebooks / f"{name}.ipynb"
        freeze(
            root,
            name,
            build_module(notebook),
            signer=signer,
            policy_uri=FIXTURE_POLICY,
            policy_digest=hashlib.sha256(FIXTURE_POLICY.encode()).hexdigest(),
            inputs={f"notebooks/{name}.ipynb": hashlib.sha256(notebook.read_bytes()).hexdigest()},
            verifier_id=FIXTURE_SIGNER,
        )
