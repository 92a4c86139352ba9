"""The ``tcpkit`` command: the front door that joins :mod:`tcpkit.detect` and :mod:`tcpkit.release`.

Every subcommand is registered by an ``_add_<name>`` function below and runs a
``_cmd_<name>(args) -> int`` handler that imports its work lazily, so that
``tcpkit --help`` stays fast. Errors: one sentence on stderr; exit 2 for usage
errors, 1 for failed checks.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from tcpkit import __version__

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit status 2."""


class CheckFailed(Exception):
    """A check that ran and failed: reported as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"tcpkit: error: {message} (see '{self.prog} --help')\n")


def _add_command(
    sub: argparse._SubParsersAction[_Parser], name: str, help_text: str, handler: Handler
) -> _Parser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(handler=handler)
    return parser


Registrar = Callable[["argparse._SubParsersAction[_Parser]"], None]
_REGISTRY: list[Registrar] = []


def _registers(add: Registrar) -> Registrar:
    """Decorator: ``add`` declares one subcommand on the parser built by :func:`build_parser`."""
    _REGISTRY.append(add)
    return add


# --- subcommands: one @_registers _add_<name> and one _cmd_<name> each, in help order ---------
# (e.g.  @_registers
#        def _add_bench(sub): p = _add_command(sub, "bench", "...", _cmd_bench); p.add_argument(...)
#        def _cmd_bench(args): from tcpkit.detect.bench import ...; return EXIT_OK)


# --- end of subcommands -------------------------------------------------------------------------


def build_parser() -> _Parser:
    """The whole command-line contract of ARCHITECTURE.md, as argparse sees it."""
    parser = _Parser(
        prog="tcpkit",
        description="Detect compromised AI agents from behaviour; run notebooks through safety gates.",
    )
    parser.add_argument("--version", action="version", version=f"tcpkit {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    for add in _REGISTRY:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args)
    except UsageError as exc:
        print(f"tcpkit: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CheckFailed as exc:
        print(f"tcpkit: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("tcpkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
