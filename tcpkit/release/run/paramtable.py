"""``tcpkit params NAME``: a component's notebook parameters beside the value every gate gives them.

One row per parameter the notebook declares (type, default, help, as
:func:`tcpkit.release.run.params.notebook_parameters` reads them), plus a row for
every parameter a gate sets that the notebook does not declare; one column per
gate with its full value and, where the quick profile overrides it, the quick
value. The problems are the same checks the pipeline's preflight makes, for
every gate and both profiles, each naming the file, line and key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from tcpkit.release.gates import GATES, PROFILES, Pipeline, locate
from tcpkit.release.run.params import Parameter, check_parameters, notebook_parameters

_UNSET = object()
_MAX_CELL = 32


@dataclass(frozen=True)
class ParameterRow:
    """One parameter: what the notebook declares (None when it does not) and per gate
    the ``full`` and ``quick`` values (absent key: the gate leaves the notebook's default)."""

    name: str
    declared: Parameter | None
    gates: Mapping[str, Mapping[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        base = self.declared.as_dict() if self.declared is not None else {
            "name": self.name, "type": None, "checked_type": None, "default": None, "help": None}
        return {**base, "declared": self.declared is not None,
                "gates": {g: dict(v) for g, v in self.gates.items()}}


@dataclass(frozen=True)
class ParameterTable:
    """Every parameter of one component, and the problems the preflight would report."""

    component: str
    notebook: str
    rows: tuple[ParameterRow, ...]
    problems: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"component": self.component, "notebook": self.notebook,
                "parameters": [r.as_dict() for r in self.rows], "problems": list(self.problems)}


def parameter_table(pipeline: Pipeline, component: str) -> ParameterTable:
    """The :class:`ParameterTable` of ``component`` (a KeyError names an unknown one).

    Raises
    ------
    ParameterError
        When the notebook cannot be read or has no ``parameters`` cell.
    """
    from tcpkit.release.run.params import ParameterError

    spec = pipeline.components[component]
    declared = notebook_parameters(spec.notebook)
    if declared is None:
        raise ParameterError([f"notebook {spec.notebook.name} of {component} has no cell tagged "
                              "'parameters'"])
    names = list(declared)
    values: dict[str, dict[str, dict[str, Any]]] = {}
    problems: list[str] = []
    for gate in GATES:
        gspec = spec.gates[gate]
        table = ["components", component, "gates", gate]
        for profile in PROFILES:
            params = gspec.parameters_for(profile)
            for name, value in params.items():
                if name not in names:
                    names.append(name)
                values.setdefault(name, {}).setdefault(gate, {})[profile] = value
            quick = set(gspec.quick) if profile == "quick" else set()

            def where(param: str, table: list[str] = table, quick: set[str] = quick) -> str:
                return locate(pipeline.path, [*table, "quick" if param in quick else "parameters"],
                              param)

            for problem in check_parameters(spec.notebook, params, where):
                if problem not in problems:
                    problems.append(problem)
    rows = tuple(
        ParameterRow(name, declared.get(name),
                     MappingProxyType({g: MappingProxyType(v) for g, v in values.get(name, {}).items()}))
        for name in names)
    return ParameterTable(component, spec.notebook.name, rows, tuple(problems))


def _value(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 3] + "..."


def _gate_cell(values: Mapping[str, Any]) -> str:
    full = values.get("full", _UNSET)
    quick = values.get("quick", _UNSET)
    if full is _UNSET:
        return "."
    cell = _value(full)
    if quick is not _UNSET and quick != full:
        cell += f" / {_value(quick)}"
    return cell


def render_parameter_table(table: ParameterTable) -> str:
    """The aligned text table of ``tcpkit params``, a legend, then any problems."""
    header = ["parameter", "type", "default", *GATES, "help"]
    body = []
    for row in table.rows:
        d = row.declared
        body.append([
            row.name,
            d.type_label if d is not None else "NOT DECLARED",
            (d.default if len(d.default) <= _MAX_CELL else d.default[: _MAX_CELL - 3] + "...")
            if d is not None else "-",
            *(_gate_cell(row.gates.get(g, {})) for g in GATES),
            d.help if d is not None else "",
        ])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [f"{table.component} ({table.notebook}): {len(table.rows)} parameter(s)"]
    for r in [header, ["-" * w for w in widths], *body]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    lines.append("gate columns: full value / quick value where the quick profile overrides it; "
                 "'.' = the gate keeps the notebook's default")
    unchecked = [r.name for r in table.rows if r.declared is not None and r.declared.kind is None]
    if unchecked:
        lines.append(f"checked for name only (no int/float/str/bool/list/dict annotation): "
                     f"{', '.join(unchecked)}")
    if table.problems:
        lines.append(f"{len(table.problems)} problem(s):")
        lines.extend(f"  {p}" for p in table.problems)
    return "\n".join(lines)
