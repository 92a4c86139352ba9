"""nbval support for the integrated notebook.

``integrated.ipynb`` imports the four frozen domain modules through
``load_frozen``, and a fresh clone has none (they are produced by ``make run``).
For nbval, the four domain notebooks' export cells are frozen into a temporary
project by the real promotion code, signed with a throwaway key that only that
project trusts, and ``TCPKIT_ROOT`` points the notebook's kernel at it. The
attestations name the policy ``nbval-fixture`` so that nobody can mistake them
for gate decisions; the gate runs themselves are tested in
``tests/test_pipeline_e2e.py``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent
DOMAINS = ("statistics", "distributed", "performance", "security")


def _freeze_domains(root: Path) -> None:
    from tcpkit.release.fixture import freeze_for_checks

    freeze_for_checks(root, NOTEBOOKS, DOMAINS)


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    if not any(Path(str(item.path)).name == "integrated.ipynb" for item in items):
        return
    root = Path(tempfile.mkdtemp(prefix="tcpkit-nbval-"))
    _freeze_domains(root)
    config.stash[_ROOT] = root
    config.stash[_PREVIOUS] = os.environ.get("TCPKIT_ROOT")
    os.environ["TCPKIT_ROOT"] = str(root)  # kernels started by nbval inherit it


def pytest_unconfigure(config: pytest.Config) -> None:
    root = config.stash.get(_ROOT, None)
    if root is None:
        return
    previous = config.stash.get(_PREVIOUS, None)
    if previous is None:
        os.environ.pop("TCPKIT_ROOT", None)
    else:
        os.environ["TCPKIT_ROOT"] = previous
    shutil.rmtree(root, ignore_errors=True)


_ROOT = pytest.StashKey[Path]()
_PREVIOUS = pytest.StashKey[str | None]()
