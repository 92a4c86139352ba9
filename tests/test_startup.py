"""The tcpkit process starts light: no iri-grammar compilation, no metadata scan on import."""

from __future__ import annotations

import subprocess
import sys


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          check=True)
    return done.stdout.strip()


def test_skip_unused_imports_keeps_nbformat_working() -> None:
    out = _python(
        "from tcpkit.release.run.startup import skip_unused_imports\n"
        "marked = skip_unused_imports()\n"
        "import sys, nbformat\n"
        "nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('1')])\n"
        "nbformat.validate(nb)\n"
        "print(marked, 'rfc3987_syntax' in sys.modules and sys.modules['rfc3987_syntax'] is None)"
    )
    assert out == "('rfc3987_syntax',) True"


def test_skip_unused_imports_is_a_no_op_once_jsonschema_is_imported() -> None:
    out = _python(
        "import jsonschema\n"
        "from tcpkit.release.run.startup import skip_unused_imports\n"
        "print(skip_unused_imports())"
    )
    assert out == "()"


def test_importing_tcpkit_does_not_scan_distributions() -> None:
    out = _python("import sys, tcpkit\nprint('importlib.metadata' in sys.modules)")
    assert out == "False"
    assert _python("import tcpkit\nprint(tcpkit.__version__)")  # still there when asked for
