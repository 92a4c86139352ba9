"""Metrics that notebooks record and the pipeline reads back.

Inside a notebook, ``record("recall_drift", 0.97)`` emits a display output with
the tcpkit MIME type; after papermill has executed the notebook,
``read_metrics(path)`` returns every recorded value. Recording through the
notebook's own outputs (rather than a side file) means the executed notebook is
the single, self-contained evidence of what was measured. When a name is
recorded twice, the later value wins.

``record_model(arrays)`` stores the fitted state of the notebook's detector the same
way: numeric, bool or fixed-width unicode numpy arrays only (nothing that needs
pickle), saved with ``numpy.savez`` and emitted as a base64 display output of type
:data:`MODEL_MIME`; ``read_model`` gives the ``.npz`` bytes back. The pipeline freezes
the model of the PRODUCTION run beside the module
(:func:`tcpkit.release.promote.load_detector` rebuilds the detector from it).
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


# --- the fitted model ---------------------------------------------------------------------------

MODEL_MIME = "application/vnd.tcpkit.model+npz"
"""MIME type of the display output that carries a recorded model (base64 of a ``.npz`` file)."""

_ARRAY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
_RESERVED = frozenset({"file", "allow_pickle"})  # parameter names of numpy.savez
_KINDS = {"b": "bool", "i": "signed integer", "u": "unsigned integer", "f": "float",
          "c": "complex", "U": "fixed-width unicode"}


def check_model(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the arrays of a fitted model; return them as a plain dict.

    Only ``numpy.ndarray`` values of numeric, bool or fixed-width unicode dtype
    are accepted (no object, bytes, structured or datetime arrays), so that the
    saved file loads with ``allow_pickle=False`` and loading it runs no code.

    Raises
    ------
    MetricError
        Naming the first array (or key) that is not acceptable.
    """
    import numpy as np

    if not isinstance(arrays, Mapping) or not arrays:
        raise MetricError("a model is a non-empty mapping of names to numpy arrays")
    checked: dict[str, Any] = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not _ARRAY_NAME.match(name) or name in _RESERVED:
            raise MetricError(
                f"model array name {name!r} is invalid: use a Python identifier of at most 128 "
                f"characters other than {', '.join(sorted(_RESERVED))}"
            )
        if type(value) is not np.ndarray:
            raise MetricError(
                f"model array {name!r} is a {type(value).__name__}, not a numpy.ndarray "
                "(convert it with numpy.asarray first)"
            )
        dtype = value.dtype
        if dtype.kind not in _KINDS or dtype.fields is not None or dtype.hasobject:
            raise MetricError(
                f"model array {name!r} has dtype {dtype}: allowed are "
                f"{', '.join(_KINDS.values())} (never object, bytes or structured dtypes)"
            )
        checked[name] = value
    return checked


def model_bytes(arrays: Mapping[str, Any]) -> bytes:
    """The ``.npz`` bytes (``numpy.savez``) of a validated model."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **check_model(arrays))
    return buffer.getvalue()


def load_model_bytes(data: bytes, what: str = "model") -> dict[str, Any]:
    """The arrays of ``.npz`` bytes, loaded with ``allow_pickle=False``; MetricError if invalid."""
    import io
    import zipfile

    import numpy as np

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise MetricError(f"{what} is not a loadable .npz without pickle: {exc}") from None
    try:
        return check_model(arrays)
    except MetricError as exc:
        raise MetricError(f"{what}: {exc}") from None


def record_model(arrays: Mapping[str, Any]) -> None:
    """Record the fitted state of the notebook's detector in the running notebook.

    The arrays are validated (:func:`check_model`), saved with ``numpy.savez``
    and emitted as a display output of type :data:`MODEL_MIME` (base64), so the
    executed notebook carries the model it measured. The pipeline freezes the
    model recorded by the PRODUCTION run as ``production/<component>.model.npz``;
    a later call replaces an earlier one.
    """
    import base64

    data = model_bytes(arrays)
    try:
        from IPython.display import display
    except ImportError:
        raise MetricError("record_model() must run inside an IPython kernel (a notebook)") from None
    names = ", ".join(f"{k}{list(v.shape)}" for k, v in check_model(arrays).items())
    text = f"tcpkit model ({len(data)} bytes): {names}"
    display({MODEL_MIME: base64.b64encode(data).decode("ascii"), "text/plain": text}, raw=True)


def read_model(notebook: str | Path | nbformat.NotebookNode | Mapping[str, Any]) -> bytes | None:
    """The ``.npz`` bytes of the last model recorded in an executed notebook; None if none.

    Raises
    ------
    MetricError
        The recorded model is not valid base64 or not a loadable, pickle-free ``.npz``.
    """
    import base64
    import binascii

    nb = _load(notebook)
    found: bytes | None = None
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        for output in cell.get("outputs", []):
            payload = (output.get("data") or {}).get(MODEL_MIME)
            if payload is None:
                continue
            text = "".join(payload) if isinstance(payload, list) else payload
            try:
                found = base64.b64decode(str(text).encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError):
                raise MetricError("the recorded model output is not valid base64") from None
    if found is not None:
        load_model_bytes(found, "the recorded model")
    return found
