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


@_registers
def _add_keys(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_command(
        sub, "keys", "researcher keys: hybrid Ed25519 + ML-DSA-65, algorithm-agile", _cmd_keys_help
    )
    keys_sub = p.add_subparsers(title="keys commands", metavar="ACTION", parser_class=_Parser)
    init = _add_command(
        keys_sub, "init", "create key pairs NAME and add NAME to the trust list", _cmd_keys_init
    )
    init.add_argument("name", metavar="NAME", help="key name: [a-z][a-z0-9-]{0,63}")
    init.add_argument(
        "--passphrase-env",
        metavar="VAR",
        help="encrypt the private keys with the passphrase held in environment variable VAR",
    )
    init.add_argument("--root", default=".", metavar="DIR", help="workspace root (default: .)")
    listing = _add_command(
        keys_sub, "list", "show trusted keys: names, algorithms, fingerprints", _cmd_keys_list
    )
    listing.add_argument("--root", default=".", metavar="DIR", help="workspace root (default: .)")


def _cmd_keys_help(args: argparse.Namespace) -> int:
    raise UsageError("give an action: 'tcpkit keys init NAME' or 'tcpkit keys list'")


def _cmd_keys_init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tcpkit.release.signing import HYBRID_CLAIM, KeyError_, init_keys, keys_dir

    passphrase = None
    if args.passphrase_env is not None:
        import os

        value = os.environ.get(args.passphrase_env)
        if not value:
            raise UsageError(f"environment variable {args.passphrase_env} is unset or empty")
        passphrase = value.encode("utf-8")
    trust_dir = Path(args.root) / ".tcpkit" / "trust"
    try:
        record = init_keys(args.name, trust_dir=trust_dir, passphrase=passphrase)
    except KeyError_ as exc:
        raise UsageError(str(exc)) from None
    print(f"created key {record.name} ({HYBRID_CLAIM})")
    print(f"  private keys in {keys_dir()} (mode 0600{', encrypted' if passphrase else ''})")
    print(f"  trust record   {trust_dir / (record.name + '.pub')} (commit it to trust this key)")
    for key in record.keys:
        print(f"  {key.algorithm:<10} {key.fingerprint}")
    return EXIT_OK


def _cmd_keys_list(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tcpkit.release.signing import KeyError_, TrustList, list_private_keys

    try:
        trust = TrustList.load(Path(args.root) / ".tcpkit" / "trust")
    except KeyError_ as exc:
        raise CheckFailed(str(exc)) from None
    private = set(list_private_keys())
    if not len(trust) and not private:
        print("no keys: create one with 'tcpkit keys init NAME'")
        return EXIT_OK
    print(f"{'NAME':<20} {'ALGORITHM':<10} {'FINGERPRINT':<71} PRIVATE KEY HERE")
    for record in trust:
        for key in record.keys:
            here = "yes" if record.name in private else "no"
            print(f"{record.name:<20} {key.algorithm:<10} {key.fingerprint:<71} {here}")
    for name in sorted(private - set(trust.names)):
        print(f"{name:<20} (private keys only: not on this workspace's trust list)")
    return EXIT_OK


@_registers
def _add_verify(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_command(
        sub, "verify", "check every frozen module against its signed attestation", _cmd_verify
    )
    p.add_argument("--json", action="store_true", help="machine-readable result on stdout")
    p.add_argument("--root", default=".", metavar="DIR", help="workspace root (default: .)")


def _cmd_verify(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from tcpkit.release.signing import KeyError_, verify_workspace

    try:
        checks = verify_workspace(Path(args.root))
    except KeyError_ as exc:
        raise CheckFailed(f"trust list unusable: {exc}") from None
    ok = all(check.ok for check in checks)
    if args.json:
        print(json.dumps({"ok": ok, "artifacts": [c.to_dict() for c in checks]}, indent=2))
        return EXIT_OK if ok else EXIT_FAILED
    if not checks:
        print("no frozen artifacts in production/: nothing to verify (ok)")
        return EXIT_OK
    for check in checks:
        if check.ok:
            print(f"ok      {check.name}  {check.digest}  {check.reason}")
    for check in checks:
        if not check.ok:
            print(f"tcpkit: FAILED {check.name}: {check.reason}", file=sys.stderr)
    failed = sum(not check.ok for check in checks)
    print(f"{len(checks) - failed} of {len(checks)} artifacts verified")
    return EXIT_OK if ok else EXIT_FAILED


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
