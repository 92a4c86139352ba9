"""tcpkit: detect compromised AI agents from their behaviour, and ship the research safely.

The package has two halves that never import each other: :mod:`tcpkit.detect`
(the science) and :mod:`tcpkit.release` (research to production). Notebooks and
:mod:`tcpkit.cli` bring them together.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("tcpkit")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext tcpkit``: the ``%tcpkit`` magics (imported only now, so ``import tcpkit`` stays light)."""
    from tcpkit.magics import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext tcpkit``: stop the after-cell check (IPython keeps the magic itself)."""
    from tcpkit.magics import unload

    unload(ipython)


__all__ = ["__version__", "load_ipython_extension", "unload_ipython_extension"]
