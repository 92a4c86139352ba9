"""tcpkit: detect compromised AI agents from their behaviour, and ship the research safely.

The package has two halves that never import each other: :mod:`tcpkit.detect`
(the science) and :mod:`tcpkit.release` (research to production). Notebooks and
:mod:`tcpkit.cli` bring them together.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tcpkit")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
