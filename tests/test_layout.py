"""The package's one structural rule: ``detect`` and ``release`` never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tcpkit"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names.add("." * node.level + (node.module or ""))
    return names


@pytest.mark.parametrize(("half", "other"), [("detect", "release"), ("release", "detect")])
def test_halves_do_not_import_each_other(half: str, other: str) -> None:
    offenders = {
        str(path.relative_to(PACKAGE.parent)): sorted(
            name for name in _imports(path)
            if name.startswith(f"tcpkit.{other}") or name.startswith(f"..{other}")
        )
        for path in sorted((PACKAGE / half).glob("*.py"))
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert offenders == {}, f"tcpkit.{half} imports tcpkit.{other}: {offenders}"
    assert list((PACKAGE / half).glob("*.py")), f"no modules found in tcpkit/{half}"
