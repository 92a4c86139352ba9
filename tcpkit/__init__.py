"""tcpkit: detect compromised AI agents from their behaviour, and ship the research safely.

The package has two halves that never import each other: :mod:`tcpkit.detect`
(the science) and :mod:`tcpkit.release` (research to production). Notebooks and
:mod:`tcpkit.cli` bring them together.
"""

from functools import cache
from typing import Any

__version__: str  # annotation only: the value comes from __getattr__ below, on first use


@cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tcpkit")
    except PackageNotFoundError:  # running from a source tree without installation
        return "0.0.0+unknown"


def __getattr__(name: str) -> Any:
    """``tcpkit.__version__``, looked up on first use: ``importlib.metadata`` costs about 30 ms,
    which every kernel that imports a tcpkit module would pay for nothing."""
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'tcpkit' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext tcpkit``: the ``%tcpkit`` magics (imported only now, so ``import tcpkit`` stays light)."""
    from tcpkit.magics import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext tcpkit``: stop the after-cell check (IPython keeps the magic itself)."""
    from tcpkit.magics import unload

    unload(ipython)


__all__ = ["__version__", "load_ipython_extension", "unload_ipython_extension"]
