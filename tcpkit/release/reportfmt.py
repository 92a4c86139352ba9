"""How reports show recorded values: 3 significant digits, intervals, yes/no, units, sections.

A notebook records metrics with ``record(name, value)``; its display output also
carries a plain-text ``name = value`` line with Python's full ``repr`` (16 digits).
Reports show those values instead as formatted tables, one per notebook section
(the markdown heading above the recording cell), and drop the raw outputs from the
rendered notebook. Intervals are 2-element numeric lists, or pairs of metrics named
``<base>_low``/``<base>_high`` where the base mentions ``ci``. A numeric value carries the
unit its metric's name gives it (:mod:`tcpkit.release.units`), and so does its threshold.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from tcpkit.release.metrics import METRIC_MIME
from tcpkit.release.units import unit_of, with_unit

SIGNIFICANT = 3
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$")
NO_SECTION = "Recorded metrics"


def format_number(value: float | int, digits: int = SIGNIFICANT) -> str:
    """``value`` with ``digits`` significant digits; integers (counts, seeds) stay exact.

    Plain decimals between 1e-3 and 1e6, scientific notation outside (so no
    number prints with more digits than it carries).
    """
    if isinstance(value, int):
        return str(value)
    number = float(value)
    if not math.isfinite(number):
        return str(number)
    if number == 0:
        return "0"
    number = float(f"{number:.{digits}g}")  # round first: 9.998 is 10.0, not 10.00
    magnitude = math.floor(math.log10(abs(number)))
    if magnitude < -3 or magnitude >= 6:
        return f"{number:.{digits - 1}e}"
    places = digits - 1 - magnitude  # negative: round to tens, hundreds, ...
    return f"{round(number, places):.{max(0, places)}f}"


def is_interval(value: Any) -> bool:
    """A 2-element list of numbers (not booleans): shown as ``[low, high]``."""
    return (isinstance(value, list | tuple) and len(value) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value))


def format_value(value: Any) -> str:
    """One recorded value as a reader sees it: yes/no, 3 significant digits, [low, high]."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "—"
    if isinstance(value, int | float):
        return format_number(value)
    if is_interval(value):
        return f"[{format_number(value[0])}, {format_number(value[1])}]"
    if isinstance(value, list | tuple):
        shown = ", ".join(format_value(v) for v in value[:6])
        return f"[{shown}{', …' if len(value) > 6 else ''}]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in list(value.items())[:6]) + "}"
    return str(value)


def _numeric(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, int | float):
        return True
    return isinstance(value, list | tuple) and bool(value) and all(_numeric(v) for v in value)


def format_measure(metric: str, value: Any) -> str:
    """``value`` formatted (:func:`format_value`) with the unit of ``metric`` when it is a number
    or a list of numbers (``16.5 s``, ``[0.912, 0.988]``, ``3.2×``)."""
    text = format_value(value)
    return with_unit(text, unit_of(metric)) if _numeric(value) else text


def format_requirement(metric: str, op: Any, threshold: Any) -> str:
    """A criterion's requirement as a reader sees it: ``<= 10 s``, ``== yes``."""
    return f"{op} {format_measure(metric, threshold)}"


def pair_intervals(metrics: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Merge ``<base>_low``/``<base>_high`` pairs whose base mentions ``ci`` into ``base: [low, high]``."""
    values = dict(metrics)
    out: list[tuple[str, Any]] = []
    used: set[str] = set()
    for name, value in metrics:
        if name in used:
            continue
        for low, high in (("_low", "_high"), ("_lo", "_hi")):
            base = name[: -len(low)] if name.endswith(low) else None
            if base and "ci" in base.split("_") and base + high in values:
                partner = values[base + high]
                if isinstance(value, int | float) and isinstance(partner, int | float):
                    out.append((base, [value, partner]))
                    used.update((name, base + high))
                    break
        else:
            out.append((name, value))
    return out


def metric_sections(notebook: Mapping[str, Any]) -> list[tuple[str, list[tuple[str, Any]]]]:
    """The recorded metrics grouped by the markdown heading above the cell that recorded them.

    In notebook order; a later recording of a name replaces the earlier one (the
    value the pipeline reads) and moves it to its section. Metrics before any
    heading go to a section named :data:`NO_SECTION`.
    """
    heading = NO_SECTION
    placed: dict[str, tuple[str, Any]] = {}
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "markdown":
            for line in _source(cell).splitlines():
                match = _HEADING.match(line)
                if match:
                    heading = match.group(2)
            continue
        if cell.get("cell_type") != "code":
            continue
        for output in cell.get("outputs", []):
            payload = (output.get("data") or {}).get(METRIC_MIME)
            if isinstance(payload, str):  # some writers store JSON MIME data as text
                payload = json.loads(payload)
            if isinstance(payload, Mapping) and isinstance(payload.get("name"), str):
                placed.pop(payload["name"], None)
                placed[payload["name"]] = (heading, payload.get("value"))
    sections: dict[str, list[tuple[str, Any]]] = {}
    for name, (section, value) in placed.items():
        sections.setdefault(section, []).append((name, value))
    return [(title, pair_intervals(items)) for title, items in sections.items()]


def without_metric_outputs(notebook: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``notebook`` without the ``record()`` display outputs (shown as tables instead)."""
    nb = copy.deepcopy(dict(notebook))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and cell.get("outputs"):
            cell["outputs"] = [o for o in cell["outputs"] if METRIC_MIME not in (o.get("data") or {})]
    return nb


def _source(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)
