"""Parameter inspection: which names a notebook's ``parameters`` cell declares.

Gate parameters from ``pipeline.toml`` are checked against the notebook before any
kernel starts, so a typo is one error naming the file, line and key instead of a
notebook that silently ignores the value (papermill injects parameters it does not know).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tcpkit.release.gates import PipelineError


class ParameterError(PipelineError):
    """Gate parameters that a notebook's ``parameters`` cell does not declare."""


def notebook_parameters(notebook: Mapping[str, Any]) -> set[str] | None:
    """Names assigned in the notebook's cell tagged ``parameters``; None when it has none."""
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code" or "parameters" not in (cell.get("metadata", {}).get("tags") or []):
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(source)
        try:
            tree = ast.parse(source)
        except SyntaxError as exc:
            raise ParameterError([f"the parameters cell is not valid Python: {exc.msg} (line {exc.lineno})"]) from None
        names: set[str] = set()
        for node in tree.body:
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = list(node.targets)
            elif isinstance(node, ast.AnnAssign | ast.AugAssign):
                targets = [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name):
                        names.add(sub.id)
        return names
    return None


def check_parameters(notebook_path: Path, parameters: Mapping[str, Any],
                     where: Callable[[str], str]) -> list[str]:
    """Errors for parameters that the notebook does not declare (empty list when all is well).

    ``where(name)`` says where parameter ``name`` is defined (file, line, key).
    """
    import nbformat

    if not parameters:
        return []
    try:
        notebook = nbformat.read(notebook_path, as_version=4)
    except Exception as exc:  # nbformat raises several unrelated types
        return [f"notebook {notebook_path} cannot be read: {exc}"]
    try:
        declared = notebook_parameters(notebook)
    except ParameterError as exc:
        return [f"{notebook_path.name}: {exc}"]
    if declared is None:
        return [
            f"{where(sorted(parameters)[0])}: notebook {notebook_path.name} has no cell tagged "
            f"'parameters', so it cannot take {', '.join(sorted(parameters))}"
        ]
    return [
        f"{where(name)}: parameter {name!r} is not defined in the parameters cell of "
        f"{notebook_path.name} (it defines {', '.join(sorted(declared)) or 'nothing'})"
        for name in sorted(set(parameters) - declared)
    ]
