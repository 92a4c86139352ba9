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
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:  # the handlers import tcpkit.release lazily, so --help stays fast
    from tcpkit.release.workspace import Workspace

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left

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
def _add_run(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_command(sub, "run", "run the notebooks through the gates (papermill), record, sign, freeze", _cmd_run)
    p.add_argument("--profile", choices=("quick", "full"), default="full",
                   help="gate parameters: full (default) or the quick overrides from pipeline.toml")
    p.add_argument("--component", action="append", default=[], metavar="NAME",
                   help="run only this component (repeatable; default: all)")
    p.add_argument("--until", default="PRODUCTION", metavar="GATE",
                   help="last gate to run: DEVELOPMENT, TESTING, STAGING or PRODUCTION (default)")
    p.add_argument("--rerun", "--force", dest="force", action="store_true",
                   help="execute every gate, even one whose run key (notebook, parameters, tcpkit's "
                        "code, environment) equals a recorded run's, whose decision (passed or "
                        "failed) is otherwise reused")
    p.add_argument("--jobs", type=int, default=2, metavar="N", help="components run in parallel (default 2)")
    p.add_argument("--root", default=".", metavar="DIR", help="project directory (default: .)")


def _cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tcpkit.release.gates import GATES, PipelineError
    from tcpkit.release.pipeline import RunOptions, run_pipeline, summarize

    if args.until not in GATES:
        raise UsageError(f"--until {args.until!r} is not a gate: use one of {', '.join(GATES)}")
    if not 1 <= args.jobs <= 64:
        raise UsageError(f"--jobs {args.jobs} is out of range: give 1 to 64")
    root = Path(args.root)
    if not (root / "notebooks" / "pipeline.toml").is_file():
        raise UsageError(f"{root / 'notebooks' / 'pipeline.toml'} does not exist: run from the project root or give --root")
    options = RunOptions(profile=args.profile, components=tuple(dict.fromkeys(args.component)),
                         until=args.until, force=args.force, jobs=args.jobs)
    try:
        result = run_pipeline(root, options)
    except PipelineError as exc:
        raise UsageError(str(exc)) from None
    print(summarize(result))
    if not result.ok:
        behind = [c for c, level in result.reached.items() if level != result.until]
        raise CheckFailed(f"{len(behind)} component(s) did not reach {result.until}: {', '.join(behind)}")
    return EXIT_OK


@_registers
def _add_params(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_command(sub, "params", "a component's notebook parameters: type, default, help and "
                     "the value each gate (full / quick) gives it", _cmd_params)
    p.add_argument("name", metavar="NAME", help="component name in notebooks/pipeline.toml")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--root", default=".", metavar="DIR", help="project directory (default: .)")


def _cmd_params(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from tcpkit.release.gates import PipelineError, load_pipeline
    from tcpkit.release.run.paramtable import parameter_table, render_parameter_table

    pipeline_file = Path(args.root) / "notebooks" / "pipeline.toml"
    if not pipeline_file.is_file():
        raise UsageError(f"{pipeline_file} does not exist: run from the project root or give --root")
    try:
        pipeline = load_pipeline(pipeline_file, require_notebooks=True)
    except PipelineError as exc:
        raise UsageError(str(exc)) from None
    if args.name not in pipeline.components:
        raise UsageError(f"unknown component {args.name!r} (the pipeline defines "
                         f"{', '.join(pipeline.components)})")
    try:
        table = parameter_table(pipeline, args.name)
    except PipelineError as exc:
        raise CheckFailed(str(exc)) from None
    if args.json:
        print(json.dumps(table.as_dict(), indent=2, ensure_ascii=False))
    else:
        print(render_parameter_table(table))
    if table.problems:
        raise CheckFailed(f"{len(table.problems)} gate parameter(s) do not fit {table.notebook}")
    return EXIT_OK


@_registers
def _add_keys(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_command(
        sub, "keys", "researcher keys: hybrid Ed25519 + ML-DSA-65, algorithm-agile", _cmd_keys_help
    )
    keys_sub = p.add_subparsers(title="keys commands", metavar="ACTION", parser_class=_Parser)
    init = _add_command(
        keys_sub, "init",
        "create key pairs NAME and NAME.pub (an owner trusts it with 'tcpkit trust add')",
        _cmd_keys_init,
    )
    init.add_argument("name", metavar="NAME", help="key name: [a-z][a-z0-9-]{0,63}")
    init.add_argument(
        "--passphrase-env",
        metavar="VAR",
        help="encrypt the private keys with the passphrase held in environment variable VAR",
    )
    _ws_common(init)
    listing = _add_command(
        keys_sub, "list", "show trusted keys: names, algorithms, fingerprints", _cmd_keys_list
    )
    _ws_common(listing)


def _cmd_keys_help(args: argparse.Namespace) -> int:
    raise UsageError("give an action: 'tcpkit keys init NAME' or 'tcpkit keys list'")


def _cmd_keys_init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tcpkit.release.keys import public_record_path
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
        record = init_keys(args.name, trust_dir=None, passphrase=passphrase)
    except KeyError_ as exc:
        raise UsageError(str(exc)) from None
    pub = public_record_path(record.name)
    print(f"created key {record.name} ({HYBRID_CLAIM})")
    print(f"  private keys in {keys_dir()} (mode 0600{', encrypted' if passphrase else ''})")
    print(f"  public record  {pub}")
    print(f"  not trusted yet on {trust_dir}: an owner of a component runs "
          f"'tcpkit trust add {pub} --as OWNER' (while no owner is trusted, an owner adds their own)")
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
        sub, "verify", "check every frozen module and every recorded gate run against its signed attestation", _cmd_verify
    )
    p.add_argument("--json", action="store_true", help="machine-readable result on stdout")
    _ws_common(p)


def _cmd_verify(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from tcpkit.release.chain import current_policies, verify_chains
    from tcpkit.release.gates import PipelineError
    from tcpkit.release.project import Project
    from tcpkit.release.runcheck import verify_gate_runs
    from tcpkit.release.signing import KeyError_, verify_workspace
    from tcpkit.release.workspace import WorkspaceError

    project = Project.at(Path(args.root))
    try:
        policy = current_policies(project.pipeline_file)
    except PipelineError as exc:
        raise CheckFailed(f"notebooks/pipeline.toml is invalid, so the gate policies cannot be "
                          f"checked: {exc.errors[0]}") from None
    try:
        checks = (verify_workspace(project.root) + verify_chains(project, policy)
                  + verify_gate_runs(project))
    except KeyError_ as exc:
        raise CheckFailed(f"trust list unusable: {exc}") from None
    except WorkspaceError as exc:
        raise CheckFailed(f"workspace unusable: {exc}") from None
    ok = all(check.ok for check in checks)
    if args.json:
        print(json.dumps({"ok": ok, "artifacts": [c.to_dict() for c in checks]}, indent=2))
        return EXIT_OK if ok else EXIT_FAILED
    if not checks:
        print("no frozen artifacts in production/ and no gate runs: nothing to verify (ok)")
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


# --- project: init, new (issue 14) ----------------------------------------------------------
@_registers
def _add_init(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_command(sub, "init", "make a tcpkit project: pipeline.toml, an example component, "
                     ".gitignore, an empty trust list", _cmd_init)
    p.add_argument("dir", nargs="?", default=".", metavar="DIR", help="project directory (default: .)")
    p.add_argument("--owner", default=None, metavar="RESEARCHER",
                   help="owner of the example component (default: $TCPKIT_USER, else the login name)")


def _cmd_init(args: argparse.Namespace) -> int:
    from tcpkit.release.scaffold import ScaffoldError, init_project
    from tcpkit.release.signing import keys_dir

    owner = args.owner or _ws_identity(argparse.Namespace(as_user=None))
    try:
        made = init_project(args.dir, owner)
    except ScaffoldError as exc:
        raise UsageError(str(exc)) from None
    at = "" if args.dir == "." else f" (in {args.dir})"
    pub = keys_dir() / f"{owner}.pub"
    made_rows = [
        ("notebooks/pipeline.toml", f"component {made.component} (owner {owner}): four gates with "
                                    "parameters and criteria"),
        (f"notebooks/{made.component}.ipynb", "a typed 'parameters' cell, an '#| export' cell "
                                              "(CONFIG, make_estimator), record() calls"),
        (".gitignore", "the runtime state (.tcpkit/tcpkit.db*, .tcpkit/objects/, .tcpkit/tmp/, "
                       "reports/*)"),
        (".tcpkit/trust/", "the trust list, empty: commit the .pub records it gets"),
    ]
    steps = [
        (f"tcpkit keys init {owner}", f"your signing key (the private keys stay in {keys_dir()})"),
        ("tcpkit run --profile quick", f"take {made.component} through the four gates; the first "
                                       "run registers it and its runner key becomes the first "
                                       "trusted key"),
        (f"tcpkit trust add {pub} --as {owner}", "trust your own key (after the first run): then "
                                                 "you can lease, restore, add contributors"),
        (f"tcpkit new NAME --owner {owner}", "add a component"),
        ("%load_ext tcpkit", "in a notebook of the project: its lease, versions, diffs and gate "
                             "runs from JupyterLab (%tcpkit help)"),
    ]
    print(f"created a tcpkit project in {made.root}:")
    width = max(len(path) for path, _ in made_rows)
    for path, what in made_rows:
        print(f"  {path:<{width}}  {what}")
    print(f"next steps{at}:")
    for command, what in steps:
        print(f"  {command}\n      {what}")
    return EXIT_OK


@_registers
def _add_new(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_command(sub, "new", "add a component: a notebook and its four gate tables in "
                     "pipeline.toml", _cmd_new)
    p.add_argument("name", metavar="NAME", help="component name: [a-z][a-z0-9-]{0,63}")
    p.add_argument("--owner", required=True, metavar="RESEARCHER", help="who owns the component")
    p.add_argument("--from", dest="source", default=None, metavar="TEMPLATE",
                   help="start from this component (notebook and gate tables) or notebook file "
                        "instead of tcpkit's template")
    p.add_argument("--root", default=".", metavar="DIR", help="project directory (default: .)")


def _cmd_new(args: argparse.Namespace) -> int:
    from tcpkit.release.scaffold import ScaffoldError, new_component

    try:
        made = new_component(args.root, args.name, args.owner, args.source)
    except ScaffoldError as exc:
        raise UsageError(str(exc)) from None
    print(f"added component {made.component} (owner {made.owner}): {', '.join(made.paths)}")
    for note in made.notes:
        print(f"note: {note}")
    print(f"next: edit notebooks/{made.component}.ipynb, then "
          f"'tcpkit run --component {made.component} --profile quick'")
    return EXIT_OK


# --- workspace: lease, backups, restore, status, gc, audit, contributor (issue 7) ------------
def _ws_common(p: _Parser, *, identity: bool = False, json_flag: bool = False) -> None:
    p.add_argument("--root", default=".", metavar="DIR", help="workspace root (default: .)")
    if identity:
        p.add_argument(
            "--as", dest="as_user", metavar="NAME", default=None,
            help="act as researcher NAME (default: $TCPKIT_USER, else the login name); needs "
                 "NAME's private key in $TCPKIT_KEYS and NAME on the trust list",
        )
        p.add_argument(
            "--passphrase-env", metavar="VAR", default=None,
            help="the private key is encrypted with the passphrase held in environment variable VAR",
        )
    if json_flag:
        p.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def _ws_identity(args: argparse.Namespace) -> str:
    import getpass
    import os

    name = args.as_user or os.environ.get("TCPKIT_USER") or getpass.getuser()
    return str(name)


def _ws_unlock(ws: Workspace, args: argparse.Namespace) -> None:
    """Load the acting researcher's passphrase-protected key (--passphrase-env) into ``ws``."""
    import os

    from tcpkit.release.signing import KeyError_, load_signer

    value = os.environ.get(args.passphrase_env)
    if not value:
        raise UsageError(f"environment variable {args.passphrase_env} is unset or empty")
    name = _ws_identity(args)
    try:
        ws.add_signer(load_signer(name, keys_dir=ws.keys_dir, passphrase=value.encode("utf-8")))
    except KeyError_ as exc:
        raise CheckFailed(f"cannot act as {name}: {exc}") from None


def _ws_run(args: argparse.Namespace, action: Callable[[Workspace], int]) -> int:
    """Open the workspace under --root, run ``action(ws)``, map workspace errors to exit codes."""
    from pathlib import Path

    from tcpkit.release.names import InvalidNameError
    from tcpkit.release.store import InvalidDigestError, StoreError
    from tcpkit.release.workspace import (
        UnknownComponentError,
        UnknownVersionError,
        Workspace,
        WorkspaceError,
    )

    root = Path(args.root)
    if not (root / ".tcpkit" / "tcpkit.db").is_file():
        raise UsageError(
            f"no tcpkit workspace in {str(root)!r} (.tcpkit/tcpkit.db is missing); "
            "run 'tcpkit run' there first, or pass --root"
        )
    try:
        ws = Workspace.open(root)
    except WorkspaceError as exc:
        raise CheckFailed(str(exc)) from None
    try:
        if getattr(args, "passphrase_env", None) is not None:
            _ws_unlock(ws, args)
        return action(ws)
    except (InvalidNameError, InvalidDigestError, UnknownComponentError, UnknownVersionError) as exc:
        raise UsageError(str(exc)) from None
    except (WorkspaceError, StoreError) as exc:
        raise CheckFailed(str(exc)) from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    finally:
        ws.close()


@_registers
def _add_lease(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_command(sub, "lease", "take, give back or list component leases", _cmd_lease_help)
    lease_sub = p.add_subparsers(title="lease commands", metavar="ACTION", parser_class=_Parser)
    acquire = _add_command(lease_sub, "acquire", "take (or renew) the lease on NAME", _cmd_lease_acquire)
    acquire.add_argument("name", metavar="NAME", help="component")
    acquire.add_argument("--ttl", type=float, default=3600.0, metavar="SECONDS",
                         help="time to live (default: 3600)")
    acquire.add_argument("--reason", default="", help="why, shown to others")
    acquire.add_argument("--no-pid", action="store_true",
                         help="bind the lease to its TTL only, not to the calling shell's process")
    acquire.add_argument("--pid", type=int, default=None, metavar="PID",
                         help="bind the lease to process PID (default: the calling shell)")
    _ws_common(acquire, identity=True)
    release = _add_command(lease_sub, "release", "give back your lease on NAME", _cmd_lease_release)
    release.add_argument("name", metavar="NAME", help="component")
    _ws_common(release, identity=True)
    listing = _add_command(lease_sub, "list", "show every lease and whether it is live", _cmd_lease_list)
    _ws_common(listing, json_flag=True)


def _cmd_lease_help(args: argparse.Namespace) -> int:
    raise UsageError("give an action: 'tcpkit lease acquire|release NAME' or 'tcpkit lease list'")


def _cmd_lease_acquire(args: argparse.Namespace) -> int:
    import os

    if args.pid is not None and args.pid <= 0:
        raise UsageError(f"--pid {args.pid}: give the id of a running process (a positive number)")

    def act(ws: Workspace) -> int:
        # the CLI process ends at once: bind the lease to the shell that called it
        lease = ws.acquire_lease(args.name, _ws_identity(args), ttl_s=args.ttl, reason=args.reason,
                                 pid=args.pid if args.pid is not None else os.getppid(),
                                 bind_process=not args.no_pid)
        print(f"lease on {lease.component} held by {lease.describe()}")
        return EXIT_OK

    return _ws_run(args, act)


def _cmd_lease_release(args: argparse.Namespace) -> int:
    def act(ws: Workspace) -> int:
        ws.release_lease(args.name, _ws_identity(args))
        print(f"lease on {args.name} released")
        return EXIT_OK

    return _ws_run(args, act)


def _cmd_lease_list(args: argparse.Namespace) -> int:
    import json
    import time

    def act(ws: Workspace) -> int:
        from tcpkit.release.workspace import as_json

        now = time.time()
        rows = [(lease, lease.stale_reason(now)) for lease in ws.leases()]
        if args.json:
            print(json.dumps([{**as_json(lease), "expires": lease.expires_iso, "live": stale is None,
                               "stale_reason": stale} for lease, stale in rows], indent=2))
            return EXIT_OK
        if not rows:
            print("no leases")
        for lease, stale in rows:
            state = "live" if stale is None else f"stale: {stale}"
            print(f"{lease.component:<20} {lease.describe()}  [{state}]")
        return EXIT_OK

    return _ws_run(args, act)


@_registers
def _add_backups(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_command(sub, "backups", "list the stored versions of component NAME", _cmd_backups)
    p.add_argument("name", metavar="NAME", help="component")
    _ws_common(p, json_flag=True)


def _cmd_backups(args: argparse.Namespace) -> int:
    import json

    def act(ws: Workspace) -> int:
        from tcpkit.release.workspace import as_json

        versions = ws.versions(args.name)
        if args.json:
            print(json.dumps([{**as_json(v), "stored": ws.stored(v)} for v in versions], indent=2))
            return EXIT_OK
        if not versions:
            print(f"component {args.name} has no versions yet")
        print(f"{'SEQ':>4}  {'DIGEST':<16} {'KIND':<8} {'AUTHOR':<16} {'TIME':<32} MESSAGE")
        for v in versions:
            mark = "" if ws.stored(v) else " (content removed by gc)"
            print(f"{v.seq:>4}  {v.digest[:16]} {v.kind:<8} {v.author:<16} {v.created_at:<32} "
                  f"{v.message}{mark}")
        return EXIT_OK

    return _ws_run(args, act)


@_registers
def _add_diff(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_command(sub, "diff", "nbdime's diff of stored version DIGEST of NAME against the "
                     "notebook on disk", _cmd_diff)
    p.add_argument("name", metavar="NAME", help="component")
    p.add_argument("digest", metavar="DIGEST", help="digest or unique prefix (see 'tcpkit backups')")
    _ws_common(p)


def _cmd_diff(args: argparse.Namespace) -> int:
    def act(ws: Workspace) -> int:
        from tcpkit.release.diffs import describe_change

        version = ws.version(args.name, args.digest)
        notebook = ws.notebook_path(args.name)
        stored = ws.store.get_bytes(version.digest) if ws.stored(version) else None
        on_disk = notebook.read_bytes() if notebook.is_file() else None
        label = f"version {version.seq} ({version.digest[:12]})"
        print(describe_change(stored, on_disk, label, f"notebooks/{notebook.name} on disk"))
        return EXIT_OK

    return _ws_run(args, act)


@_registers
def _add_restore(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_command(sub, "restore", "write version DIGEST of NAME back as a new version", _cmd_restore)
    p.add_argument("name", metavar="NAME", help="component")
    p.add_argument("digest", metavar="DIGEST", help="digest or unique prefix (see 'tcpkit backups')")
    p.add_argument("--base", metavar="DIGEST", default=None,
                   help="digest (or prefix) of the version you saw as current; the restore is refused "
                        "if another became current since (default: the current version now)")
    _ws_common(p, identity=True)


def _cmd_restore(args: argparse.Namespace) -> int:
    import time

    def act(ws: Workspace) -> int:
        current = ws.current(args.name)
        base = current.digest if current is not None else None
        if args.base is not None:
            base = ws.version(args.name, args.base).digest
        notebook = f"notebooks/{ws.component(args.name).notebook}"
        on_disk = (ws.root / notebook).is_file()
        start = time.perf_counter()
        version = ws.restore(args.name, args.digest, _ws_identity(args), base)
        elapsed = time.perf_counter() - start
        before = {v.seq: v for v in ws.versions(args.name)}.get(version.seq - 1)
        if not on_disk or before is None:
            print(f"{notebook} was not on disk: nothing to back up")
        elif before.kind == "backup":
            print(f"backed up {notebook} as found on disk first: version {before.seq} "
                  f"({before.digest[:12]}), stored at {ws.store.path_of(before.digest)}")
        else:
            print(f"{notebook} on disk was version {before.seq} ({before.digest[:12]}), already "
                  f"stored at {ws.store.path_of(before.digest)}: it is the backup")
        print(f"restored {args.name} to {version.digest} as version {version.seq} "
              f"({notebook}) in {elapsed * 1000:.1f} ms")
        return EXIT_OK

    return _ws_run(args, act)


@_registers
def _add_status(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_command(sub, "status", "per component: owner, contributors, level, versions, lease", _cmd_status)
    _ws_common(p, json_flag=True)


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    def act(ws: Workspace) -> int:
        from tcpkit.release.workspace import as_json

        rows = ws.status()
        if args.json:
            print(json.dumps(as_json(rows), indent=2))
            return EXIT_OK
        if not rows:
            print("no components registered")
            return EXIT_OK
        from tcpkit.release.project import Project

        project = Project.at(ws.root)
        print(f"{'COMPONENT':<16} {'OWNER':<12} {'LEVEL':<12} {'VERSIONS':>8} {'KEPT':>5}  "
              f"{'LEASE':<12} CONTRIBUTORS")
        notes = []
        for s in rows:
            level = (s.level or "-") + (" !" if s.configuration_error else "")
            print(f"{s.name:<16} {s.owner:<12} {level:<12} {s.versions:>8} {s.versions_kept:>5}  "
                  f"{s.lease_holder or '-':<12} {', '.join(s.contributors) or '-'}")
            if s.configuration_error:
                frozen = project.frozen_module(s.name)
                kept = f"level {s.level or '(none)'}" + (
                    f" and {frozen.relative_to(project.root)}" if frozen.is_file() else "")
                notes.append(f"! {s.name}: its last 'tcpkit run' stopped at a configuration error "
                             f"before any gate ran ({kept} unchanged): {s.configuration_error}")
        for note in notes:
            print(note)
        return EXIT_OK

    return _ws_run(args, act)


@_registers
def _add_gc(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_command(sub, "gc", "remove stored objects that retention no longer keeps", _cmd_gc)
    p.add_argument("--keep-last", type=int, default=None, metavar="N",
                   help="versions kept per component (default: the workspace setting, 10)")
    p.add_argument("--grace", type=float, default=3600.0, metavar="SECONDS",
                   help="keep unreferenced objects younger than this (default: 3600)")
    _ws_common(p, identity=True, json_flag=True)


def _cmd_gc(args: argparse.Namespace) -> int:
    import json

    def act(ws: Workspace) -> int:
        from tcpkit.release.workspace import as_json

        report = ws.gc(args.keep_last, grace_s=args.grace, actor=_ws_identity(args))
        if args.json:
            print(json.dumps(as_json(report), indent=2))
            return EXIT_OK
        print(f"gc (keep last {report.keep_last}): removed {len(report.objects_removed)} objects and "
              f"{report.temporaries_removed} temporary files, freed {report.bytes_freed} bytes; "
              f"{len(report.versions_pruned)} old versions no longer stored; "
              f"{report.objects_kept} objects kept")
        return EXIT_OK

    return _ws_run(args, act)


@_registers
def _add_audit(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_command(sub, "audit", "the tamper-evident audit log", _cmd_audit_help)
    audit_sub = p.add_subparsers(title="audit commands", metavar="ACTION", parser_class=_Parser)
    verify = _add_command(audit_sub, "verify",
                          "check the hash chain and every entry's signature against the trust list; "
                          "exit 1 at the first bad entry", _cmd_audit_verify)
    _ws_common(verify, json_flag=True)
    show = _add_command(audit_sub, "log", "print the audit log", _cmd_audit_log)
    _ws_common(show, json_flag=True)


def _cmd_audit_help(args: argparse.Namespace) -> int:
    raise UsageError("give an action: 'tcpkit audit verify' or 'tcpkit audit log'")


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    import json

    from tcpkit.release.runcheck import check_recorded_runs

    def act(ws: Workspace) -> int:
        from tcpkit.release.keys import TrustList
        from tcpkit.release.project import Project
        from tcpkit.release.workspace import as_json

        # the gate runs the log records: metrics and criteria in the database = the signed ones
        runs = check_recorded_runs(ws, TrustList.load(Project.at(ws.root).trust_dir)) \
            if ws.gate_runs() else []
        bad_runs = [f"{c.name}: {c.reason}" for c in runs if not c.ok]
        broken = ws.verify_audit()
        count = len(ws.audit_log())
        if args.json:
            print(json.dumps({"ok": broken is None and not bad_runs, "entries": count,
                              "first_broken": None if broken is None else as_json(broken),
                              "gate_runs": len(runs), "gate_run_failures": bad_runs}, indent=2))
            return EXIT_OK if broken is None and not bad_runs else EXIT_FAILED
        if bad_runs:
            raise CheckFailed("recorded gate runs differ from their signed statements: "
                              + "; ".join(bad_runs))
        if broken is not None:
            raise CheckFailed(f"audit chain broken at {broken}")
        print(f"audit log intact: {count} entries, hash chain and signatures verified "
              "against the trust list")
        return EXIT_OK

    return _ws_run(args, act)


def _cmd_audit_log(args: argparse.Namespace) -> int:
    import json

    def act(ws: Workspace) -> int:
        from tcpkit.release.workspace import as_json

        entries = ws.audit_log()
        if args.json:
            print(json.dumps(as_json(entries), indent=2))
            return EXIT_OK
        for e in entries:
            print(f"{e.seq:>6}  {e.at}  {e.actor:<16} {e.action:<16} {json.dumps(e.details, sort_keys=True)}")
        return EXIT_OK

    return _ws_run(args, act)


@_registers
def _add_contributor(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_command(sub, "contributor", "the owner adds or removes a component's contributors",
                     _cmd_contributor_help)
    c_sub = p.add_subparsers(title="contributor commands", metavar="ACTION", parser_class=_Parser)
    for action, handler in (("add", _cmd_contributor_add), ("remove", _cmd_contributor_remove)):
        q = _add_command(c_sub, action, f"{action} RESEARCHER as a contributor of NAME", handler)
        q.add_argument("name", metavar="NAME", help="component")
        q.add_argument("researcher", metavar="RESEARCHER", help="researcher name")
        _ws_common(q, identity=True)


def _cmd_contributor_help(args: argparse.Namespace) -> int:
    raise UsageError("give an action: 'tcpkit contributor add|remove NAME RESEARCHER'")


def _cmd_contributor_add(args: argparse.Namespace) -> int:
    return _contributor_change(args, add=True)


def _cmd_contributor_remove(args: argparse.Namespace) -> int:
    return _contributor_change(args, add=False)


def _contributor_change(args: argparse.Namespace, *, add: bool) -> int:
    def act(ws: Workspace) -> int:
        change = ws.add_contributor if add else ws.remove_contributor
        info = change(args.name, args.researcher, _ws_identity(args))
        print(f"{info.name}: owner {info.owner}, contributors {', '.join(info.contributors) or '-'}")
        return EXIT_OK

    return _ws_run(args, act)


@_registers
def _add_trust(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_command(sub, "trust", "grant trust to a researcher's or runner's public key",
                     _cmd_trust_help)
    t_sub = p.add_subparsers(title="trust commands", metavar="ACTION", parser_class=_Parser)
    add = _add_command(t_sub, "add", "an owner of a component trusts the key in FILE.pub (audited)",
                       _cmd_trust_add)
    add.add_argument("file", metavar="FILE.pub", help="public key record ('tcpkit keys init' writes it)")
    _ws_common(add, identity=True)


def _cmd_trust_help(args: argparse.Namespace) -> int:
    raise UsageError("give an action: 'tcpkit trust add FILE.pub'")


def _cmd_trust_add(args: argparse.Namespace) -> int:
    def act(ws: Workspace) -> int:
        record, added = ws.trust_add(args.file, _ws_identity(args))
        if not added:
            print(f"{record.name} is already trusted with these keys: nothing changed")
            return EXIT_OK
        entry = ws.audit_log()[-1]
        how = " (the first owner on the trust list, adding their own key)" if entry.details.get(
            "bootstrap") else ""
        print(f"trusted {record.name} in {ws.trust_dir / (record.name + '.pub')}, granted by "
              f"{entry.actor}{how}; audit entry {entry.seq}; commit the file to share it")
        return EXIT_OK

    return _ws_run(args, act)


@_registers
def _add_bench(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_command(
        sub,
        "bench",
        "benchmark the scoring kernel and the public paths against scipy, numpy, scikit-learn and PyOD",
        _cmd_bench,
    )
    p.add_argument("--agents", default="1000000", metavar="N", help="agents scored (default 1e6)")
    p.add_argument("--features", default="8", metavar="D", help="features per agent (default 8)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--repeats", default="5", metavar="R", help="timed repetitions (default 5)")
    p.add_argument(
        "--scaling-max",
        default="10000000",
        metavar="N",
        help="largest N of the scaling run 1e3, 1e4, ... (default 1e7; arrays above 512 MiB are skipped)",
    )
    p.add_argument(
        "--stream-agents",
        default="10000000",
        metavar="N",
        help="agents scored as a stream for the resident-memory measurement (default 1e7; 0 skips)",
    )
    p.add_argument(
        "--network-agents",
        default="20000",
        metavar="N",
        help="agents of the simulated network NetworkDetector.detect judges (default 2e4; 0 skips)",
    )
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="write the full result as JSON to PATH (or stdout when PATH is omitted)",
    )
    p.add_argument("--ingest", nargs="?", const="1000000", default=None, metavar="EVENTS",
                   help="instead: read + features of EVENTS events from Parquet, tcpkit vs pandas (default 1e6)")
    p.add_argument("--detect", nargs="?", const="20000,100000", default=None, metavar="N[,N...]",
                   help="instead: the tcpkit detect pipeline on simulated fleets of N agents, phase by phase "
                        "(default 20000,100000)")
    p.add_argument("--keep", metavar="DIR", help="with --detect: keep the simulated logs in DIR and reuse them")


def _check_outputs(*paths: str | None) -> None:
    """Each output path (None: not asked for) names a file in an existing directory, or a usage error."""
    import os

    for path in paths:
        if path is None or not path:
            continue
        if os.path.isdir(path):
            raise UsageError(f"{path!r} is a directory: give the name of the file to write")
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise UsageError(f"{path!r}: its directory does not exist")


def _count(value: str, name: str, minimum: int = 1) -> int:
    """An integer argument that may be written 1e6 or 1_000_000."""
    try:
        number = float(value.replace("_", ""))
    except ValueError:
        raise UsageError(f"--{name} {value!r} is not a number") from None
    if not number.is_integer() or number < minimum or number > 10**10:
        raise UsageError(f"--{name} {value!r}: expected a whole number between {minimum} and 1e10")
    return int(number)


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.ingest is not None and args.detect is not None:
        raise UsageError("give --ingest or --detect, not both")
    if args.ingest is not None:
        return _cmd_bench_ingest(args)
    if args.detect is not None:
        return _cmd_bench_detect(args)
    import json
    import os
    from pathlib import Path

    from tcpkit.detect.bench import (
        BenchConfig,
        BenchError,
        format_table,
        main_progress,
        run_benchmark,
    )
    from tcpkit.release.atomic import write_atomic

    agents = _count(args.agents, "agents")
    features = _count(args.features, "features")
    repeats = _count(args.repeats, "repeats")
    scaling_max = _count(args.scaling_max, "scaling-max", minimum=0)
    stream = _count(args.stream_agents, "stream-agents", minimum=0)
    network = _count(args.network_agents, "network-agents", minimum=0)
    if features > 4096:
        raise UsageError(f"--features {features}: at most 4096")
    if agents * features > 2 * 10**9:
        raise UsageError(f"--agents {agents} x --features {features} is more than 2e9 values")
    scaling = tuple(10**k for k in range(3, 11) if 10**k <= scaling_max)
    try:
        config = BenchConfig(
            agents=agents,
            features=features,
            dtype=args.dtype,
            repeats=repeats,
            scaling=scaling,
            stream_agents=stream,
            fit_rows=max(500, 10 * features),
            network_agents=network,
        )
    except BenchError as exc:
        raise UsageError(str(exc)) from None
    target = args.json
    if target not in (None, "-"):
        folder = os.path.dirname(os.path.abspath(target))
        if not os.path.isdir(folder):
            raise UsageError(f"--json {target!r}: directory {folder!r} does not exist")
    result = run_benchmark(config, progress=main_progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if target is None:
        print(format_table(result))
    elif target == "-":
        print(json.dumps(result, indent=2))
    else:
        write_atomic(Path(target), json.dumps(result, indent=2).encode("utf-8"))
        print(format_table(result))
        print(f"\nwrote {target}")
    return EXIT_OK


def _bench_json_target(target: str | None) -> str | None:
    """``--json`` of a bench command: None, "-" (standard output) or a file in an existing directory."""
    import os

    if target not in (None, "-") and not os.path.isdir(os.path.dirname(os.path.abspath(target))):
        raise UsageError(f"--json {target!r}: its directory does not exist")
    return target


def _bench_progress() -> Callable[[str], None] | None:
    """Progress lines on standard error when it is a terminal."""
    return (lambda msg: print(msg, file=sys.stderr)) if sys.stderr.isatty() else None


def _bench_output(result: dict[str, Any], target: str | None, table: Callable[[dict[str, Any]], str]) -> int:
    """The result as JSON on standard output (``-``), or its table, and the JSON file when asked."""
    import json

    from tcpkit.detect.events_write import write_text_atomic

    if target == "-":
        print(json.dumps(result, indent=2))
        return EXIT_OK
    print(table(result))
    if target is not None:
        write_text_atomic(target, json.dumps(result, indent=2))
        print(f"\nwrote {target}")
    return EXIT_OK


def _cmd_bench_ingest(args: argparse.Namespace) -> int:
    from tcpkit.detect.bench_ingest import format_ingest, run_ingest_benchmark

    events = _count(args.ingest, "ingest")
    target = _bench_json_target(args.json)
    result = run_ingest_benchmark(events, progress=_bench_progress())
    return _bench_output(result, target, format_ingest)


def _cmd_bench_detect(args: argparse.Namespace) -> int:
    from tcpkit.detect.bench_detect import format_detect, run_detect_benchmark

    agents = [_count(n.strip(), "detect", minimum=20) for n in args.detect.split(",") if n.strip()]
    if not agents:
        raise UsageError("--detect: give one or more fleet sizes, e.g. 20000,100000")
    target = _bench_json_target(args.json)
    result = run_detect_benchmark(agents, keep=args.keep, progress=_bench_progress())
    return _bench_output(result, target, format_detect)


@_registers
def _add_simulate(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_command(sub, "simulate", "write the simulator's agents as an event log (and their labels)",
                     _cmd_simulate)
    p.add_argument("--agents", required=True, metavar="N", help="number of agents")
    p.add_argument("--seed", required=True, metavar="S", help="random seed (>= 0)")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="events file: .jsonl, .csv, .parquet or .json (OTLP), each optionally .gz")
    p.add_argument("--labels", metavar="PATH.csv", help="also write agent,compromised,attack,attack_start_window")
    p.add_argument("--audited", metavar="PATH", help="also write the names of --audited-agents clean agents, "
                   "drawn uniformly: an audited reference for tcpkit detect --audited")
    p.add_argument("--audited-agents", metavar="N", help="agents in the --audited list (default: half the clean agents)")
    p.add_argument("--format", choices=("jsonl", "csv", "parquet", "otlp"), help="override the format of --out")
    p.add_argument("--nodes", metavar="K", help="network nodes")
    p.add_argument("--windows", metavar="W", help="windows per agent")
    p.add_argument("--commands-per-window", metavar="C", help="commands per window")
    p.add_argument("--compromised", type=float, metavar="F", help="compromised fraction in [0, 1]")
    p.add_argument("--attacks", metavar="A,B", help="comma-separated attack names (default: all)")
    p.add_argument("--strength", type=float, metavar="X", help="compromise strength (1 = reference)")
    p.add_argument("--difficulty", metavar="NAME", help="difficulty preset of the simulator (e.g. default, easy)")


def _cmd_simulate(args: argparse.Namespace) -> int:
    from tcpkit.detect import simulate
    from tcpkit.detect.events import EventError, format_of
    from tcpkit.detect.events_write import write_event_batches, write_labels, write_text_atomic

    try:
        format_of(args.out, args.format)
    except EventError as exc:
        raise UsageError(str(exc)) from None
    if args.audited_agents is not None and args.audited is None:
        raise UsageError("--audited-agents needs --audited PATH (where to write the list)")
    _check_outputs(args.out, args.labels, args.audited)
    params: dict[str, object] = {"n_agents": _count(args.agents, "agents"),
                                 "seed": _count(args.seed, "seed", minimum=0)}
    for name, value in (("n_nodes", args.nodes), ("n_windows", args.windows),
                        ("commands_per_window", args.commands_per_window)):
        if value is not None:
            params[name] = _count(value, name.replace("n_", "").replace("_", "-"))
    for name, given in (("compromised_fraction", args.compromised), ("strength", args.strength),
                        ("difficulty", args.difficulty)):
        if given is not None:
            params[name] = given
    if args.attacks is not None:
        params["attacks"] = tuple(a.strip() for a in args.attacks.split(",") if a.strip())
    if getattr(simulate, "simulate_events", None) is None:
        raise CheckFailed("this tcpkit has no tcpkit.detect.simulate.simulate_events")
    from tcpkit.detect import sim_events

    try:
        sim = sim_events.stream_events(**params)  # the events are made and written one block of agents at a time
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    audited: tuple[str, ...] = ()
    if args.audited is not None:
        n_clean = sum(not c for c in sim.labels.column("compromised").to_pylist())
        n_audited = _count(args.audited_agents, "audited-agents") if args.audited_agents else max(n_clean // 2, 1)
        try:
            audited = sim_events.audited_agents(sim.labels, n_audited, _count(args.seed, "seed", minimum=0))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    try:
        _, n_events = write_event_batches(sim.batches, args.out, format=args.format)
        if args.labels is not None:
            write_labels(sim.labels, args.labels)
        if args.audited is not None:
            write_text_atomic(args.audited, "".join(f"{a}\n" for a in audited))
    except EventError as exc:
        raise CheckFailed(str(exc)) from None
    print(f"wrote {n_events:,} events of {params['n_agents']:,} agents to {args.out}"
          + (f" and labels to {args.labels}" if args.labels else "")
          + (f"; {len(audited):,} audited clean agents to {args.audited}" if args.audited else ""))
    return EXIT_OK


@_registers
def _add_detect(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_command(sub, "detect", "judge the agents of an event log with the frozen, verified production detector",
                     _cmd_detect)
    _add_log_arguments(p)
    p.add_argument("--audited", metavar="FILE", help="agents audited clean (one name per line, or a CSV with an "
                   "agent column; tcpkit vet --trimmed writes one): the shipped network detector is fitted on "
                   "them and judges the others; without it the fleet judges itself")
    p.add_argument("--alpha", type=float, metavar="Q", help="FDR level (default: the frozen configuration's)")
    p.add_argument("--component", default=DETECT_COMPONENT, help=f"frozen component to use (default {DETECT_COMPONENT})")
    p.add_argument("--root", help="project root holding production/ and .tcpkit/trust (default: found from here)")
    p.add_argument("--json", metavar="OUT", help="write the alerts as JSON")
    p.add_argument("--csv", metavar="OUT", help="write one CSV row per agent")
    p.add_argument("--html", metavar="OUT", help="write a standalone HTML report with plots")
    p.add_argument("--fail-on-alert", action="store_true", help=f"exit {EXIT_ALERT} when any agent is flagged")


DETECT_COMPONENT = "integrated"
EXIT_ALERT = 3
DEFAULT_REFERENCE_WINDOWS = 8


def _add_log_arguments(p: _Parser) -> None:
    """The event-log arguments that ``detect`` and ``audit`` share (so both read a log alike)."""
    p.add_argument("events", nargs="+", metavar="EVENTS", help="event files (.jsonl, .csv, .parquet, OTLP .json; .gz)")
    p.add_argument("--format", choices=("jsonl", "csv", "parquet", "otlp"), help="override the format of EVENTS")
    p.add_argument("--risk-map", metavar="FILE.toml", help="risk classes for actions (default: tcpkit's map)")
    ref = p.add_mutually_exclusive_group()
    ref.add_argument("--reference-windows", metavar="K", help="each agent's first K windows are its reference (default 8)")
    ref.add_argument("--reference-until", metavar="TIME", help="windows that end by TIME (ISO-8601) are the reference")
    win = p.add_mutually_exclusive_group()
    win.add_argument("--window", metavar="DURATION", help="windows by event time, e.g. 30m, 1h (default), 1d")
    win.add_argument("--window-events", metavar="N", help="windows of N events per agent instead of time windows")


def _log_options(args: argparse.Namespace) -> tuple[str | None, int | None, Any]:
    """(window, window_events, risk map) of :func:`_add_log_arguments`' arguments; bad ones are usage errors."""
    from tcpkit.detect.features import parse_duration
    from tcpkit.detect.riskmap import RiskMapError, load_risk_map

    window_events = _count(args.window_events, "window-events", minimum=2) if args.window_events else None
    window = None if window_events else (args.window or "1h")
    try:
        if window is not None:
            parse_duration(window)
        return window, window_events, load_risk_map(args.risk_map)
    except (ValueError, RiskMapError) as exc:
        raise UsageError(str(exc)) from None


def _log_features(args: argparse.Namespace, options: tuple[str | None, int | None, Any]) -> tuple[Any, int]:
    """The (FeatureTable, number of events) of the log, read with ``options`` of :func:`_log_options`."""
    from tcpkit.detect.baseline import BaselineError
    from tcpkit.detect.events import EventError
    from tcpkit.detect.features import features_of_files

    window, window_events, risk_map = options
    try:
        k = _reference_windows(args, lambda: _first_event_us(args.events, args.format))
        return features_of_files(  # type: ignore[no-any-return]
            args.events, format=args.format, window=window, window_events=window_events,
            reference_windows=k, min_reference_windows=k, risk_map=risk_map, workers=None,
        )
    except (EventError, BaselineError, ValueError) as exc:
        raise CheckFailed(str(exc)) from None


def _detect_outputs(args: argparse.Namespace) -> list[tuple[str, str]]:
    outputs = [(kind, path) for kind, path in (("json", args.json), ("csv", args.csv), ("html", args.html)) if path]
    _check_outputs(*(path for _, path in outputs))
    return outputs


def _reference_windows(args: argparse.Namespace, first_us: Callable[[], int]) -> int:
    """K from --reference-windows, or the number of whole windows that end by --reference-until.

    ``first_us`` gives the first event's time (microseconds), read only for --reference-until.
    """
    if args.reference_until is None:
        return _count(args.reference_windows, "reference-windows") if args.reference_windows else DEFAULT_REFERENCE_WINDOWS
    from datetime import datetime

    from tcpkit.detect.features import parse_duration

    if args.window_events:
        raise UsageError("--reference-until needs time windows: use --reference-windows with --window-events")
    try:
        until = datetime.fromisoformat(args.reference_until.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--reference-until {args.reference_until!r} is not an ISO-8601 time") from None
    if until.tzinfo is None:
        raise UsageError(f"--reference-until {args.reference_until!r} has no time zone (add Z or +HH:MM)")
    until_us = round(until.timestamp() * 1_000_000)
    w_us = parse_duration(args.window or "1h")
    origin = first_us() // w_us * w_us
    k = (until_us - origin) // w_us
    if k < 1:
        raise UsageError(f"--reference-until {args.reference_until} leaves no whole window before it")
    return int(k)


def _first_event_us(paths: list[str], format: str | None) -> int:
    """The earliest event time of the files (a pass over the time column for one Parquet file)."""
    from tcpkit.detect.events import format_of, read_events
    from tcpkit.detect.parquet_stream import time_range

    if len(paths) == 1 and format_of(paths[0], format) == ("parquet", False):
        return time_range(paths[0])[0]
    return int(read_events(paths, format=format).column("time").cast("int64").to_numpy().min())


def _cmd_detect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tcpkit.detect.alerts import PLOTTED_AGENTS, judge_features, resolution_text
    from tcpkit.detect.baseline import BaselineError
    from tcpkit.detect.events import EventError, read_agent_list
    from tcpkit.release.atomic import write_atomic

    outputs = _detect_outputs(args)
    options = _log_options(args)
    try:
        audited = read_agent_list(args.audited) if args.audited is not None else None
    except EventError as exc:
        raise UsageError(str(exc)) from None
    config, info = _frozen_config(args.component, args.root, args.alpha)
    feats, n_events = _log_features(args, options)
    try:
        report = judge_features(
            feats, config, n_events=n_events, audited=audited, detector_info=info,  # type: ignore[arg-type]
            plotted=PLOTTED_AGENTS if any(kind == "html" for kind, _ in outputs) else 0,
        )
    except (EventError, BaselineError, ValueError) as exc:
        raise CheckFailed(str(exc)) from None
    for kind, path in outputs:
        text = {"json": report.to_json, "csv": report.to_csv, "html": report.to_html}[kind]()
        write_atomic(Path(path), text.encode("utf-8"))
    flagged = report.most_significant()
    reference = (f"reference = {report.notes['audited']} audited agents" if "audited" in report.notes
                 else f"reference = first {report.reference_windows} windows")
    print(f"{len(flagged)} of {len(report.agents)} agents flagged at {report.fdr.upper()} level {report.alpha:g} "
          f"({len(report.excluded)} excluded; {reference}; {report.detector['detector']}; "
          f"detector {args.component} sha256 {report.detector['module_sha256'][:12]})")
    limit = resolution_text(report)
    if limit is not None:
        print(f"resolution: {limit}")
    for a in flagged[:20]:
        tops = ", ".join(f"{f.feature} {f.direction}" for f in a.top_features)
        print(f"  {a.agent}  p={a.p_value:.2g} q={a.q_value:.2g}  {a.test}: {tops}")
    if len(flagged) > 20:
        print(f"  ... {len(flagged) - 20} more")
    unmapped = report.notes.get("unmapped_actions") or {}
    if unmapped:
        print(f"note: {sum(unmapped.values())} events of {len(unmapped)} actions have no risk class (see the report)")
    for kind, path in outputs:
        print(f"wrote {kind} to {path}")
    return EXIT_ALERT if (args.fail_on_alert and flagged) else EXIT_OK


@_registers
def _add_vet(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_command(sub, "vet", "vet a reference fleet in rounds: rank it, propose whom to check next, and "
                     "write it without the agents found compromised (for tcpkit detect --audited)", _cmd_vet)
    _add_log_arguments(p)
    p.add_argument("--candidates", required=True, metavar="FILE",
                   help="the candidate reference agents to vet (one name per line, or a CSV with an agent column)")
    p.add_argument("--verdicts", action="append", default=[], metavar="FILE",
                   help="verdicts so far: a CSV with agent and verdict (compromised or clean) columns, e.g. an "
                   "earlier --out filled in; repeat for several rounds")
    p.add_argument("--batch", metavar="N", help="agents to propose (default: a fortieth of the reference)")
    p.add_argument("--out", metavar="FILE.csv", help="write the proposed batch as a verdict file to fill in")
    p.add_argument("--trimmed", metavar="FILE", help="write the reference without the agents found compromised")


def _cmd_vet(args: argparse.Namespace) -> int:
    import warnings

    from tcpkit.detect.audit_round import plan_audit
    from tcpkit.detect.baseline import BaselineError
    from tcpkit.detect.covariance import SingularDataWarning
    from tcpkit.detect.events import EventError, read_agent_list, read_verdicts
    from tcpkit.detect.files import write_text_atomic

    _check_outputs(args.out, args.trimmed)
    batch = _count(args.batch, "batch") if args.batch is not None else None
    options = _log_options(args)
    try:
        reference = read_agent_list(args.candidates)
        verdicts = read_verdicts(args.verdicts)
    except EventError as exc:
        raise UsageError(str(exc)) from None
    feats, _ = _log_features(args, options)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SingularDataWarning)
            plan = plan_audit(feats, reference, verdicts, batch)
    except (BaselineError, ValueError) as exc:
        raise CheckFailed(str(exc)) from None
    if any(issubclass(w.category, SingularDataWarning) for w in caught):
        # e.g. the shares of actions per risk class sum to one: say it once, not per fit
        print("note: the candidates' features are collinear, so the robust fit of the ranking used a "
              "Ledoit-Wolf shrinkage estimate instead of MCD")
    if args.out:
        write_text_atomic(args.out, plan.batch_csv())
    if args.trimmed:
        write_text_atomic(args.trimmed, "".join(f"{a}\n" for a in plan.trimmed()))
    print(f"reference: {len(plan.reference):,} agents, {len(plan.ranked):,} ranked on {len(plan.features)} features "
          f"({len(plan.unranked):,} without usable features); audited {len(plan.confirmed) + len(plan.cleared):,}: "
          f"{len(plan.confirmed):,} compromised, {len(plan.cleared):,} clean")
    if plan.next_batch:
        shown = ", ".join(plan.next_batch[:10]) + (" ..." if len(plan.next_batch) > 10 else "")
        print(f"next batch ({len(plan.next_batch)}): {shown}")
    else:
        print("every ranked reference agent has a verdict: nothing left to propose")
    if args.out:
        print(f"wrote the batch to {args.out}: fill in each verdict (compromised or clean), then pass it "
              "with --verdicts")
    if args.trimmed:
        print(f"wrote {len(plan.trimmed()):,} reference agents to {args.trimmed} (for tcpkit detect --audited)")
    return EXIT_OK


def _model_digest(statement: dict[str, object]) -> str | None:
    for subject in statement.get("subject", []):  # type: ignore[attr-defined]
        if str(subject.get("name", "")).endswith(".model.npz"):
            return str(subject["digest"]["sha256"])
    return None


@_registers
def _add_monitor(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = _add_command(sub, "monitor", "follow a growing JSON Lines event log; print each alert (stable id, seq) as it fires",
                     _cmd_monitor)
    p.add_argument("events", metavar="EVENTS", help="JSON Lines file to follow, or - for standard input")
    p.add_argument("--state", required=True, metavar="DIR", help="directory that keeps the monitor's state")
    p.add_argument("--window", default="1h", metavar="DURATION", help="window length by event time (default 1h)")
    p.add_argument("--reference-windows", metavar="K", help=f"windows forming the reference (default {DEFAULT_REFERENCE_WINDOWS})")
    p.add_argument("--risk-map", metavar="FILE.toml", help="risk classes for actions (default: tcpkit's map)")
    p.add_argument("--audited", metavar="FILE", help="agents audited clean (one name per line, or a CSV with an "
                   "agent column): the shipped network detector is fitted on them and judges the others; "
                   "without it the fleet judges itself")
    p.add_argument("--alpha", type=float, metavar="Q", help="FDR level (default: the frozen configuration's)")
    p.add_argument("--component", default=DETECT_COMPONENT, help=f"frozen component to use (default {DETECT_COMPONENT})")
    p.add_argument("--root", help="project root holding production/ and .tcpkit/trust (default: found from here)")
    p.add_argument("--poll", type=float, default=1.0, metavar="S", help="seconds between reads of a file (default 1)")
    p.add_argument("--once", action="store_true", help="read what is there now, judge, and exit")


STDIN_BATCH_LINES = 5_000


def _frozen_config(component: str, root: str | None, alpha: float | None) -> tuple[object, dict[str, object]]:
    """The verified production configuration and what identifies it (refuses with the reason)."""
    from tcpkit.detect.config import ConfigError, DetectorConfig
    from tcpkit.release.promote import FrozenModuleError, load_model, verify_component

    try:
        verified = verify_component(component, root)
        arrays = load_model(component, root)
        config = DetectorConfig.from_json(str(arrays["config"]))
        if alpha is not None:
            config = config.replace(alpha=alpha)
    except FrozenModuleError as exc:
        raise CheckFailed(f"the production detector is not usable: {exc}") from None
    except KeyError:
        raise CheckFailed(f"the frozen model of {component!r} holds no detector configuration") from None
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    info = {
        "component": component,
        "module_sha256": verified.statement["subject"][0]["digest"]["sha256"],
        "model_sha256": _model_digest(verified.statement),
    }
    return config, info


def _cmd_monitor(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from tcpkit.detect.baseline import BaselineError
    from tcpkit.detect.events import EventError, read_agent_list
    from tcpkit.detect.features import parse_duration
    from tcpkit.detect.monitor import Monitor, MonitorError
    from tcpkit.detect.riskmap import RiskMapError, load_risk_map

    try:
        parse_duration(args.window)
        risk_map = load_risk_map(args.risk_map)
    except (ValueError, RiskMapError) as exc:
        raise UsageError(str(exc)) from None
    if args.poll <= 0:
        raise UsageError(f"--poll {args.poll}: expected a positive number of seconds")
    k = _count(args.reference_windows, "reference-windows") if args.reference_windows else DEFAULT_REFERENCE_WINDOWS
    try:
        audited = read_agent_list(args.audited) if args.audited is not None else None
    except EventError as exc:
        raise UsageError(str(exc)) from None
    config, info = _frozen_config(args.component, args.root, args.alpha)
    try:
        monitor = Monitor(Path(args.state), config, window=args.window, reference_windows=k,  # type: ignore[arg-type]
                          detector_info=info, risk_map=risk_map, audited=audited)
        if args.events == "-":  # judged in batches of lines, and at the end of the stream
            batch: list[bytes] = []
            for line in sys.stdin.buffer:
                batch.append(line if line.endswith(b"\n") else line + b"\n")
                if len(batch) >= STDIN_BATCH_LINES:
                    monitor.feed(b"".join(batch))
                    batch.clear()
            monitor.feed(b"".join(batch))
            return EXIT_OK
        path = Path(args.events)
        if not path.is_file():
            raise UsageError(f"{args.events!r} is not a file")
        with open(path, "rb") as source:
            while True:
                monitor.step(source)
                if args.once:
                    return EXIT_OK
                time.sleep(args.poll)
    except (MonitorError, EventError, BaselineError) as exc:
        raise CheckFailed(str(exc)) from None


# --- end of subcommands -------------------------------------------------------------------------


class _VersionAction(argparse.Action):
    """``--version``: the installed version, looked up only when asked for (it costs a
    metadata scan that no other command needs)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from tcpkit import __version__

        print(f"tcpkit {__version__}")
        parser.exit(0)


def build_parser() -> _Parser:
    """The whole command-line contract of ARCHITECTURE.md, as argparse sees it."""
    parser = _Parser(
        prog="tcpkit",
        description="Detect compromised AI agents from behaviour; run notebooks through safety gates.",
    )
    parser.add_argument("--version", action=_VersionAction, nargs=0, help="show the version and exit")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    for add in _REGISTRY:
        add(sub)
    return parser


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - no real stdout file descriptor
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    from tcpkit.release.run.startup import skip_unused_imports

    skip_unused_imports()  # this process only: see tcpkit.release.run.startup
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        status = handler(args)
        sys.stdout.flush()  # a reader that went away shows up here, not at interpreter exit
        return status
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
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
