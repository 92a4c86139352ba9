"""Parameter inspection: what a notebook's ``parameters`` cell declares, and checking gate values.

The parameters come from :func:`papermill.inspect_notebook` (name, the type named by an
annotation such as ``n_agents: int = 300  # help``, the default as written, the help
comment), the same reader papermill uses when it injects them. Gate parameters from
``pipeline.toml`` are checked against them before any kernel starts, for name and, where
the notebook annotates one of the types TOML can express (int, float, str, bool, list,
dict), for type, so a typo or ``n_agents = "300"`` is one error naming the file, line and
key instead of a notebook that silently runs with something else (papermill injects
whatever it is given). A parameter without such an annotation is checked for its name only.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcpkit.release.gates import PipelineError

CHECKED_TYPES: tuple[str, ...] = ("int", "float", "str", "bool", "list", "dict")
"""Annotations whose values are type-checked (the types a TOML value can have)."""

_ALIASES = {"List": "list", "Dict": "dict"}


class ParameterError(PipelineError):
    """A notebook's parameters cell cannot be read, or gate parameters do not fit it."""


@dataclass(frozen=True)
class Parameter:
    """One parameter of a notebook's ``parameters`` cell, as papermill reads it.

    ``annotation`` is the type as written (``None`` when there is none), ``default``
    the source text of the value, ``help`` the trailing comment.
    """

    name: str
    annotation: str | None
    default: str
    help: str

    @property
    def kind(self) -> str | None:
        """The checked type (one of :data:`CHECKED_TYPES`), or None: name checked only."""
        if self.annotation is None:
            return None
        base = self.annotation.split("[", 1)[0].strip()
        base = _ALIASES.get(base, base)
        return base if base in CHECKED_TYPES else None

    @property
    def type_label(self) -> str:
        """The type for people: the annotation, or why the value is not type-checked."""
        if self.annotation is None:
            return "(none: name only)"
        if self.kind is None:
            return f"{self.annotation} (not checked)"
        return self.annotation

    def problem(self, value: Any) -> str | None:
        """Why ``value`` does not fit this parameter's type (None when it does, or is unchecked)."""
        kind = self.kind
        if kind is None or _fits(kind, value):
            return None
        hint = ""
        if isinstance(value, str) and kind in ("int", "float", "bool"):
            hint = " (write it without quotes)"
        return (f"{value!r} is {_describe(value)}, but parameter {self.name!r} is declared "
                f"'{self.name}: {self.annotation}': expected {_expected(kind)}{hint}")

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.annotation, "checked_type": self.kind,
                "default": self.default, "help": self.help}


def _fits(kind: str, value: Any) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "int":
        return isinstance(value, int)
    if kind == "float":
        return isinstance(value, int | float)  # an int is fine where a float is expected
    return isinstance(value, {"str": str, "list": list, "dict": dict}[kind])


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return {int: "an int", float: "a float", str: "a string", list: "a list (TOML array)",
            dict: "a dict (TOML table)"}.get(type(value), f"a {type(value).__name__}")


def _expected(kind: str) -> str:
    return {"int": "an int", "float": "a float (or an int)", "str": "a string",
            "bool": "true or false", "list": "a list (TOML array)",
            "dict": "a dict (TOML table)"}[kind]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _papermill_warnings() -> Iterator[list[str]]:
    """Collect what papermill logs while inspecting (it skips lines it cannot parse)."""
    logger = logging.getLogger("papermill")
    handler = _Collect()
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


_declared: dict[tuple[str, str], dict[str, Parameter] | None] = {}
_declared_lock = threading.Lock()


def notebook_parameters(path: Path) -> dict[str, Parameter] | None:
    """The parameters of the notebook at ``path``, by name; None when it has no ``parameters`` cell.

    Kept per process by path and content digest (a run checks every gate of a notebook against
    the same declarations); errors are never kept.

    Raises
    ------
    ParameterError
        When the notebook cannot be read, or papermill cannot parse a line of the
        parameters cell (it would silently drop that parameter: a comment containing
        ``=`` is the usual cause).
    """
    path = Path(path)
    try:
        key: tuple[str, str] | None = (str(path.resolve()), hashlib.sha256(path.read_bytes()).hexdigest())
    except OSError:
        key = None
    with _declared_lock:
        if key is not None and key in _declared:
            found = _declared[key]
            return None if found is None else dict(found)
    params = _read_parameters(path)
    if key is not None:
        with _declared_lock:
            _declared[key] = None if params is None else dict(params)
    return params


def _read_parameters(path: Path) -> dict[str, Parameter] | None:
    import nbformat
    import papermill

    try:
        notebook = nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several unrelated types
        raise ParameterError([f"notebook {path} cannot be read: {exc}"]) from None
    if not any(cell.get("cell_type") == "code" and "parameters" in (cell.get("metadata", {}).get("tags") or [])
               for cell in notebook.get("cells", [])):
        return None
    with _papermill_warnings() as warnings:
        found = papermill.inspect_notebook(path)
    unparsed = [m for m in warnings if "Unable to parse" in m]
    if unparsed:
        raise ParameterError([
            f"{path.name}: the parameters cell has a line papermill cannot read, so that parameter "
            f"would be ignored: {m} (one assignment per line; no '=' in the comment)" for m in unparsed
        ])
    params: dict[str, Parameter] = {}
    for name, item in found.items():
        annotation = item.get("inferred_type_name")
        params[name] = Parameter(
            name=name,
            annotation=None if annotation in (None, "None") else str(annotation),
            default=str(item.get("default", "")),
            help=str(item.get("help", "")),
        )
    return params


def check_parameters(notebook_path: Path, parameters: Mapping[str, Any],
                     where: Callable[[str], str]) -> list[str]:
    """Errors for gate parameters that the notebook does not declare or whose value has the
    wrong type (empty list when all is well).

    ``where(name)`` says where parameter ``name`` is defined (file, line, key).
    """
    if not parameters:
        return []
    try:
        declared = notebook_parameters(notebook_path)
    except ParameterError as exc:
        return list(exc.errors)
    if declared is None:
        return [
            f"{where(sorted(parameters)[0])}: notebook {notebook_path.name} has no cell tagged "
            f"'parameters', so it cannot take {', '.join(sorted(parameters))}"
        ]
    errors: list[str] = []
    for name in sorted(parameters):
        param = declared.get(name)
        if param is None:
            errors.append(
                f"{where(name)}: parameter {name!r} is not defined in the parameters cell of "
                f"{notebook_path.name} (it defines {', '.join(sorted(declared)) or 'nothing'})")
            continue
        problem = param.problem(parameters[name])
        if problem is not None:
            errors.append(f"{where(name)}: {problem} (in {notebook_path.name})")
    return errors
