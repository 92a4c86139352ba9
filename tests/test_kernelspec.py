"""Every notebook names the kernel that ``make venv`` installs, by the same display name."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_notebooks_and_makefile_agree_on_the_kernel() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    found = re.search(r'ipykernel install .*--name (\S+) --display-name "([^"]+)"', makefile)
    assert found is not None, "the Makefile no longer installs an ipykernel with --display-name"
    name, display = found.groups()
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert len(notebooks) >= 5
    specs = {nb.name: json.loads(nb.read_text(encoding="utf-8"))["metadata"]["kernelspec"]
             for nb in notebooks}
    wrong = {nb: spec for nb, spec in specs.items()
             if (spec.get("name"), spec.get("display_name")) != (name, display)}
    assert wrong == {}, f"kernelspec differs from the Makefile's ({name}, {display!r}): {wrong}"
