"""What the ``tcpkit`` process does before its first notebook import, to start faster.

``import nbformat`` (papermill, nbconvert and the parameter check all import it) imports
``jsonschema``, whose format module registers an ``iri`` checker when ``rfc3987_syntax`` is
installed; Jupyter's ``jsonschema[format-nongpl]`` installs it, and importing it compiles 38
lark grammars: 1.5 to 2 s on the 2-core machine, in every command that reads a notebook
(``scripts/bench_loop.py phases`` shows it as the first import of papermill/nbformat).

Nothing tcpkit runs checks that format: nbformat's notebook schema has no ``iri`` field and
``jsonschema`` checks formats only when given a ``FormatChecker``. So the command's own
process, and only it (never a kernel, never a library user's process), goes without: the
module is marked absent before ``jsonschema`` is first imported, which ``jsonschema`` handles
as it handles an uninstalled ``rfc3987_syntax``.
"""

from __future__ import annotations

import sys

SKIPPED_MODULES = ("rfc3987_syntax",)
"""Imported by dependencies at import time, used by nothing tcpkit does."""


def skip_unused_imports() -> tuple[str, ...]:
    """Mark :data:`SKIPPED_MODULES` absent unless something already imported them or ``jsonschema``
    (then it is too late to matter); returns the names marked."""
    if "jsonschema" in sys.modules:
        return ()
    marked = tuple(name for name in SKIPPED_MODULES if name not in sys.modules)
    for name in marked:
        sys.modules[name] = None  # type: ignore[assignment]  # "import name" now raises ImportError
    return marked
