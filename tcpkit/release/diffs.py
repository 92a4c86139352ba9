"""Human-readable diffs for conflict messages: nbdime for notebooks, unified diff otherwise.

A conflict tells a researcher what someone else changed since the version they
started from. For notebooks a line diff of the JSON is noise (execution counts,
metadata, escaped source), so :func:`describe_change` asks nbdime for a
cell-aware diff; for any other text it falls back to :mod:`difflib`, and for
binary content it states the sizes.
"""

from __future__ import annotations

import difflib
import io
import json
from typing import Any

MAX_LINES = 200


def _as_notebook(data: bytes) -> Any | None:
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("cells"), list):
        return None
    try:
        import nbformat

        return nbformat.reads(data.decode("utf-8"), as_version=4)
    except Exception:  # noqa: BLE001 - anything nbformat cannot read is not a notebook here
        return None


def _clip(text: str) -> str:
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES] + [f"... ({len(lines) - MAX_LINES} more lines)"]
    return "\n".join(lines)


def notebook_diff(old: Any, new: Any) -> str:
    """nbdime's cell-aware description of the changes from ``old`` to ``new`` (no colour)."""
    import nbdime
    from nbdime.prettyprint import PrettyPrintConfig, pretty_print_diff

    diff = nbdime.diff_notebooks(old, new)
    if not diff:
        return "(the notebooks are equal)"
    out = io.StringIO()
    config = PrettyPrintConfig(out=out, use_color=False, use_git=False, use_diff=True)
    pretty_print_diff(old, diff, "notebook", config)
    return out.getvalue().rstrip()


def describe_change(old: bytes | None, new: bytes | None, old_label: str, new_label: str) -> str:
    """What changed from ``old`` to ``new``: nbdime for two notebooks, a unified diff otherwise.

    None stands for content that cannot be read (removed or corrupted); the
    description then names that side.
    """
    if old is None:
        return f"(the content of {old_label} is not available to compare)"
    if new is None:
        return f"(the content of {new_label} is not available to compare)"
    old_nb, new_nb = _as_notebook(old), _as_notebook(new)
    if old_nb is not None and new_nb is not None:
        return _clip(f"nbdime diff {old_label} -> {new_label}:\n" + notebook_diff(old_nb, new_nb))
    try:
        old_text, new_text = old.decode("utf-8"), new.decode("utf-8")
    except UnicodeDecodeError:
        return f"(binary content: {len(old)} bytes in {old_label}, {len(new)} bytes in {new_label})"
    lines = difflib.unified_diff(
        old_text.splitlines(), new_text.splitlines(), old_label, new_label, lineterm=""
    )
    return _clip("\n".join(lines)) or "(no textual difference)"
