"""Metrics that notebooks record and the pipeline reads back.

Inside a notebook, ``record("recall_drift", 0.97)`` emits a display output with
the tcpkit MIME type; after papermill has executed the notebook,
``read_metrics(path)`` returns every recorded value. Recording through the
notebook's own outputs (rather than a side file) means the executed notebook is
the single, self-contained evidence of what was measured. When a name is
recorded twice, the later value wins.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # nbformat pulls in jsonschema: ~1.7 s per kernel that only records
    import nbformat

METRIC_MIME = "application/vnd.tcpkit.metric+json"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}\Z")

MetricValue = bool | int | float | str | list[Any] | None


class MetricError(ValueError):
    """A metric name or value that cannot be recorded or read."""


def _check_value(name: str, value: Any) -> MetricValue:
    """Return ``value`` as JSON-safe data, refusing anything that is not."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float) or _is_numpy_scalar(value):
        number = value.item() if hasattr(value, "item") else value
        if isinstance(number, float) and not math.isfinite(number):
            # NaN/inf are legitimate "could not measure" outcomes; store as a string
            # so the JSON stays valid and a criterion fails with a readable reason.
            return "nan" if math.isnan(number) else ("inf" if number > 0 else "-inf")
        return number  # type: ignore[no-any-return]
    if isinstance(value, list | tuple) or hasattr(value, "tolist"):
        items = value.tolist() if hasattr(value, "tolist") else list(value)
        return [_check_value(name, item) for item in items]
    raise MetricError(
        f"metric {name!r}: value of type {type(value).__name__} is not a number, string, "
        "boolean or list of them"
    )


def _is_numpy_scalar(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0


def record(name: str, value: Any) -> None:
    """Record one metric in the running notebook (a display output with the tcpkit MIME type)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise MetricError(
            f"metric name {name!r} is invalid: use letters, digits, '_', '.', '-' (at most 128)"
        )
    payload = {"name": name, "value": _check_value(name, value)}
    try:
        from IPython.display import display
    except ImportError:  # outside IPython there is nowhere to record to
        raise MetricError("record() must run inside an IPython kernel (a notebook)") from None
    text = f"{name} = {payload['value']!r}"
    display({METRIC_MIME: payload, "text/plain": text}, raw=True)


def read_metrics(notebook: str | Path | nbformat.NotebookNode | Mapping[str, Any]) -> dict[str, MetricValue]:
    """Return the metrics recorded in an executed notebook, in recording order; later wins."""
    nb = _load(notebook)
    found: dict[str, MetricValue] = {}
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        for output in cell.get("outputs", []):
            data = output.get("data") or {}
            if METRIC_MIME not in data:
                continue
            payload = data[METRIC_MIME]
            if isinstance(payload, str):  # some writers store JSON MIME data as text
                payload = json.loads(payload)
            name = payload.get("name")
            if not isinstance(name, str):
                raise MetricError("a recorded metric has no name: the notebook output is malformed")
            found.pop(name, None)
            found[name] = payload.get("value")
    return found


def _load(notebook: str | Path | nbformat.NotebookNode | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(notebook, str | Path):
        import nbformat

        path = Path(notebook)
        try:
            return nbformat.read(path, as_version=4)  # type: ignore[no-any-return]
        except FileNotFoundError:
            raise MetricError(f"notebook {path} does not exist") from None
        except Exception as exc:  # nbformat raises several unrelated types for bad JSON
            raise MetricError(f"notebook {path} is not a valid notebook: {exc}") from None
    return notebook
