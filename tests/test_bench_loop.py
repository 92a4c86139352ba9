"""scripts/bench_loop.py: what it reads from a notebook (its timings are reported, never asserted)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_loop.py"


def _module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_loop", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_loop"] = module
    spec.loader.exec_module(module)
    return module


def test_notebook_imports_are_the_top_level_imports_once_each(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("%matplotlib inline\nimport json\nfrom os import path as p\nx = 1"),
        nbformat.v4.new_markdown_cell("import nothing"),
        nbformat.v4.new_code_cell("from __future__ import annotations\nimport json\n"
                                  "def f():\n    import secrets\n"),
    ])
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    assert _module().notebook_imports(path) == ["import json", "from os import path as p"]


def test_import_attribution_sums_own_time_per_package(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import colorsys\nimport xml.dom.minidom")])
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    found = _module().import_attribution(path, floor_s=0.0)
    assert "colorsys" in found and "xml" in found and all(v >= 0 for v in found.values())
