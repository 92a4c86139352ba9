"""Shared fixtures: researchers' keys, so that tests act as researchers the way users must (with a key).

Acting as a researcher in the workspace needs that researcher's private key
(``$TCPKIT_KEYS``) and their record on the workspace's trust list. The
``researchers`` fixture points ``$TCPKIT_KEYS`` at a fresh directory and
returns :func:`trust`, which makes keys for the names given and trusts them
on one workspace root.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tcpkit.release.algorithms import REQUIRED_ALGORITHMS, get_algorithm
from tcpkit.release.keys import init_keys, load_signer, private_key_path, trust_path


def trust(keys_dir: Path, root: Path, *names: str) -> None:
    """Make the keys of ``names`` in ``keys_dir`` (once) and trust them on the workspace at ``root``."""
    trust_dir = Path(root) / ".tcpkit" / "trust"
    trust_dir.mkdir(parents=True, exist_ok=True)
    first = get_algorithm(REQUIRED_ALGORITHMS[0])
    for name in names:
        if not private_key_path(name, first, keys_dir).exists():
            init_keys(name, trust_dir=None, keys_dir=keys_dir)
        target = trust_path(name, trust_dir)
        if not target.exists():
            target.write_text(load_signer(name, keys_dir=keys_dir).public_record().to_json())


@pytest.fixture
def researchers(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                ) -> Callable[..., Path]:
    """``researchers(root, *names)``: keys for ``names`` in ``$TCPKIT_KEYS``, trusted on ``root``."""
    keys = tmp_path_factory.mktemp("keys")
    monkeypatch.setenv("TCPKIT_KEYS", str(keys))

    def make(root: Path, *names: str) -> Path:
        trust(keys, root, *names)
        return keys

    return make
