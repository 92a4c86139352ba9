"""Validation of the names that reach the workspace from users: components, researchers, notebooks.

Names become file names (``notebooks/<notebook>``, ``trust/<researcher>.pub``)
and database keys, so each is checked once, at the boundary, against a pattern
that cannot express a path separator, a parent directory or an empty string.
"""

from __future__ import annotations

import re

COMPONENT_PATTERN = r"[a-z][a-z0-9-]{0,63}"
RESEARCHER_PATTERN = r"[A-Za-z_][A-Za-z0-9_.-]{0,63}"
NOTEBOOK_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"

_COMPONENT = re.compile(rf"^{COMPONENT_PATTERN}\Z")
_RESEARCHER = re.compile(rf"^{RESEARCHER_PATTERN}\Z")
_NOTEBOOK = re.compile(rf"^{NOTEBOOK_PATTERN}\Z")


class InvalidNameError(ValueError):
    """A component, researcher or notebook name that the workspace refuses."""


def _why(value: str) -> str:
    if value == "":
        return "it is empty"
    if "/" in value or "\\" in value:
        return "it contains a path separator"
    if ".." in value:
        return "it contains '..'"
    return "it has characters that are not allowed"


def check_component(name: object) -> str:
    """Return ``name`` if it matches ``[a-z][a-z0-9-]{0,63}``, else raise :class:`InvalidNameError`."""
    if not isinstance(name, str) or not _COMPONENT.match(name):
        why = _why(name) if isinstance(name, str) else f"it is a {type(name).__name__}"
        raise InvalidNameError(
            f"component name {name!r} is invalid ({why}): use a lowercase letter followed by "
            "up to 63 lowercase letters, digits or '-'"
        )
    return name


def check_researcher(name: object) -> str:
    """Return ``name`` if it is a valid researcher name (letters, digits, '_', '.', '-'; max 64)."""
    if not isinstance(name, str) or not _RESEARCHER.match(name):
        why = _why(name) if isinstance(name, str) else f"it is a {type(name).__name__}"
        raise InvalidNameError(
            f"researcher name {name!r} is invalid ({why}): use a letter or '_' followed by up to "
            "63 letters, digits, '_', '.' or '-'"
        )
    return name


def check_notebook(name: object) -> str:
    """Return ``name`` if it is a plain file name inside ``notebooks/`` (no directories)."""
    if not isinstance(name, str) or not _NOTEBOOK.match(name) or ".." in name:
        why = _why(name) if isinstance(name, str) else f"it is a {type(name).__name__}"
        raise InvalidNameError(
            f"notebook name {name!r} is invalid ({why}): give a file name inside notebooks/, "
            "such as 'statistics.ipynb'"
        )
    return name
