"""``%tcpkit``: the workspace's collaboration commands from inside a notebook (``%load_ext tcpkit``).

The magic works on the component whose notebook is open in the kernel: the
notebook's path comes from ``JPY_SESSION_NAME`` (set by jupyter_server for the
kernels of notebooks) or IPython's ``__session__``, and is mapped to a
component through ``notebooks/pipeline.toml``; ``%tcpkit component NAME
[--root DIR]`` names it explicitly. Every command runs the ``tcpkit`` command
line in the kernel (:func:`tcpkit.cli.main`) with that component filled in, so
its output and errors are the CLI's::

    %tcpkit status                         every component, then this one's lease and versions
    %tcpkit lease acquire [--ttl S] [--reason TEXT]   bound to this kernel's process
    %tcpkit lease release | list
    %tcpkit backups                        the stored versions
    %tcpkit diff [DIGEST]                  nbdime: a stored version (default: the current) vs the file
    %tcpkit run [--until GATE] [--profile quick|full] [--rerun]
    %tcpkit component [NAME] [--root DIR]  show or set the component
    %tcpkit base [DIGEST]                  show or set the version your work starts from
    %tcpkit watch [SECONDS|off]            after a cell, check for newer versions (default 30 s)

Loading the extension (and ``%tcpkit status``) warns when someone else holds the
component's lease (who, until when, why) and when someone else recorded a newer
version than the one the notebook started from (the command that merges); after
a cell runs, at most every ``watch`` seconds, the newer-version check runs again
and warns once per newer version, so the warning comes before the next save;
:mod:`tcpkit.release.session` says what can and cannot be detected.
"""

from __future__ import annotations

import getpass
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from IPython.core.magic import Magics, line_magic, magics_class

USAGE = __doc__.split("::", 1)[1].lstrip("\n").split("\n\n", 1)[0] if __doc__ else ""


DEFAULT_WATCH_S = 30.0


@dataclass(frozen=True)
class _State:
    root: Path | None = None
    component: str | None = None
    base_seq: int | None = None
    base_digest: str | None = None


def _me() -> str:
    """Who acts: the CLI's rule ($TCPKIT_USER, else the login name)."""
    return os.environ.get("TCPKIT_USER") or getpass.getuser()


def _warn(text: str) -> None:
    print(f"tcpkit: WARNING: {text}", file=sys.stderr)


@magics_class
class TcpkitMagics(Magics):
    """The ``%tcpkit`` line magic; one instance per kernel, holding the open component."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.state = _State()
        self.watch_s: float | None = DEFAULT_WATCH_S
        self._checked_at = time.monotonic()
        self._warned_seq: int | None = None

    # -- finding the component -----------------------------------------------------------------
    def _session_path(self) -> str | None:
        return os.environ.get("JPY_SESSION_NAME") or (self.shell.user_ns.get("__session__")
                                                      if self.shell is not None else None)

    def locate(self, component: str | None = None, root: Path | None = None) -> bool:
        """Find the project and component; True when a component is known. Prints why not."""
        from tcpkit.release.session import SessionError, locate

        try:
            found = locate(self._session_path(), Path.cwd(), root, component)
        except SessionError as exc:
            print(f"tcpkit: {exc}", file=sys.stderr)
            return False
        self.state = _State(found.root, found.component)
        if found.component is None:
            what = f"{found.notebook}" if found.notebook else "this kernel's notebook (unknown)"
            print(f"tcpkit: {what} is not a component of {found.root / 'notebooks' / 'pipeline.toml'}; "
                  "name one with '%tcpkit component NAME'", file=sys.stderr)
            return False
        return True

    def _workspace(self) -> Any:
        from tcpkit.release.workspace import Workspace

        assert self.state.root is not None
        if not (self.state.root / ".tcpkit" / "tcpkit.db").is_file():
            return None
        return Workspace.open(self.state.root)

    def report(self, *, set_base: bool = False) -> None:
        """The component's line: owner, level, lease; the warnings; records the base when asked."""
        from tcpkit.release.session import lease_warning, opened
        from tcpkit.release.workspace import UnknownComponentError

        name, me = self.state.component, _me()
        assert name is not None
        ws = self._workspace()
        if ws is None:
            print(f"tcpkit: {name} ({self.state.root}): no workspace yet; 'tcpkit run' makes it")
            return
        try:
            try:
                info = ws.component(name)
            except UnknownComponentError:
                print(f"tcpkit: {name} is not registered in the workspace yet; 'tcpkit run' "
                      "registers it")
                return
            if set_base or self.state.base_digest is None:
                start = opened(ws, name)
                if start.base is not None:
                    self.state = replace(self.state, base_seq=start.base.seq,
                                         base_digest=start.base.digest)
                if start.base is not None and not start.file_matches_base:
                    print(f"tcpkit: notebooks/{info.notebook} on disk differs from every recorded "
                          f"version; taking the current one, version {start.base.seq}, as your base")
            lease = ws.lease(name)
            live = lease is not None and lease.stale_reason(time.time()) is None
            held = "not leased"
            if live and lease is not None:
                held = (f"leased to you until {lease.expires_iso}" if lease.holder == me
                        else f"leased to {lease.holder} (see below)")
            base = (f"version {self.state.base_seq} ({(self.state.base_digest or '')[:12]})"
                    if self.state.base_digest else "no version yet")
            print(f"tcpkit: notebooks/{info.notebook} is component {name} (owner {info.owner}, "
                  f"level {info.level or 'none yet'}), {held}; you are {me}, starting from {base}")
            warning = lease_warning(ws, name, me)
            if warning:
                _warn(warning)
            self._newer(ws, always=True)
        finally:
            ws.close()

    def _newer(self, ws: Any, *, always: bool) -> None:
        """Warn about versions by others newer than the base (once per newest version unless
        ``always``)."""
        from tcpkit.release.session import newer_warning

        name = str(self.state.component)
        if self.state.base_digest is None:
            return
        current = ws.current(name)
        if current is None or (not always and current.seq == self._warned_seq):
            return
        warning = newer_warning(ws, name, _me(), ws.version(name, self.state.base_digest))
        if warning:
            self._warned_seq = current.seq
            _warn(warning)

    def after_cell(self, *_: Any) -> None:
        """``post_run_cell``: the newer-version check, at most every ``watch_s`` seconds."""
        if self.watch_s is None or self.state.component is None or self.state.base_digest is None:
            return
        now = time.monotonic()
        if now - self._checked_at < self.watch_s:
            return
        self._checked_at = now
        try:
            ws = self._workspace()
            if ws is None:
                return
            try:
                self._newer(ws, always=False)
            finally:
                ws.close()
        except Exception as exc:  # noqa: BLE001 - a failing check must not break the user's cells
            self.watch_s = None
            print(f"tcpkit: the newer-version check failed and is off until '%tcpkit watch': "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr)

    # -- the magic ------------------------------------------------------------------------------
    @line_magic
    def tcpkit(self, line: str) -> None:
        """Run a tcpkit command on the open component (``%tcpkit help`` lists them)."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            print(f"tcpkit: error: {exc}", file=sys.stderr)
            return
        if not words or words[0] in ("help", "-h", "--help"):
            print(USAGE)
            return
        command, rest = words[0], words[1:]
        if command == "component":
            self._component(rest)
            return
        if self.state.component is None and not self.locate():
            return
        root, name = str(self.state.root), str(self.state.component)
        if command == "status":
            self._cli(["status", "--root", root, *rest])
            self.report()
        elif command == "base":
            self._base(rest)
        elif command == "watch":
            self._watch(rest)
        elif command == "lease" and rest[:1] == ["acquire"]:
            self._cli(["lease", "acquire", name, "--root", root, "--pid", str(os.getpid()), *rest[1:]])
        elif command == "lease" and rest[:1] == ["release"]:
            self._cli(["lease", "release", name, "--root", root, *rest[1:]])
        elif command == "lease" and rest[:1] == ["list"]:
            self._cli(["lease", "list", "--root", root, *rest[1:]])
        elif command == "backups":
            self._cli(["backups", name, "--root", root, *rest])
        elif command == "diff":
            given = bool(rest) and not rest[0].startswith("-")
            digest = rest[0] if given else self._current_digest()
            if digest is not None:
                self._cli(["diff", name, digest, "--root", root, *rest[1 if given else 0:]])
        elif command == "run":
            self._cli(["run", "--component", name, "--root", root, *rest])
        else:
            print(f"tcpkit: error: unknown command {' '.join(words[:2])!r}; %tcpkit help lists them",
                  file=sys.stderr)

    def _cli(self, argv: Sequence[str]) -> int:
        from tcpkit.cli import main

        try:
            status = main(list(argv))
        except SystemExit as exc:  # argparse: --help or a usage error (already printed)
            status = exc.code if isinstance(exc.code, int) else 2
        sys.stdout.flush()
        sys.stderr.flush()
        return status

    def _component(self, rest: list[str]) -> None:
        root = None
        if "--root" in rest:
            at = rest.index("--root")
            if at + 1 >= len(rest):
                print("tcpkit: error: --root needs a directory", file=sys.stderr)
                return
            root = Path(rest[at + 1]).expanduser().resolve()
            rest = rest[:at] + rest[at + 2:]
        if not rest and root is None:
            if self.state.component is not None or self.locate():
                print(f"tcpkit: component {self.state.component} in {self.state.root}")
            return
        if self.locate(rest[0] if rest else None, root):
            self.report(set_base=True)

    def _current_digest(self) -> str | None:
        ws = self._workspace()
        if ws is None:
            print("tcpkit: no workspace yet, so no stored version to compare with", file=sys.stderr)
            return None
        try:
            current = ws.current(str(self.state.component))
        finally:
            ws.close()
        if current is None:
            print(f"tcpkit: {self.state.component} has no recorded version", file=sys.stderr)
            return None
        return current.digest

    def _watch(self, rest: list[str]) -> None:
        if rest and rest[0] == "off":
            self.watch_s = None
        elif rest:
            try:
                seconds = float(rest[0])
            except ValueError:
                seconds = -1.0
            if not 0 <= seconds <= 86400:
                print(f"tcpkit: error: watch {rest[0]!r}: give seconds from 0 to 86400, or 'off'",
                      file=sys.stderr)
                return
            self.watch_s = seconds
        elif self.watch_s is None:
            self.watch_s = DEFAULT_WATCH_S
        self._checked_at = time.monotonic() - (self.watch_s or 0.0)
        state = "off" if self.watch_s is None else f"at most every {self.watch_s:g} s after a cell"
        print(f"tcpkit: newer-version check {state}")

    def _base(self, rest: list[str]) -> None:
        ws = self._workspace()
        if ws is None:
            print("tcpkit: no workspace yet, so no version to start from", file=sys.stderr)
            return
        name = str(self.state.component)
        try:
            version = ws.version(name, rest[0]) if rest else ws.current(name)
        except ValueError as exc:
            print(f"tcpkit: error: {exc}", file=sys.stderr)
            return
        finally:
            ws.close()
        if version is None:
            print(f"tcpkit: {name} has no recorded version", file=sys.stderr)
            return
        self.state = replace(self.state, base_seq=version.seq, base_digest=version.digest)
        print(f"tcpkit: {name}: your work now starts from version {version.seq} "
              f"({version.digest[:12]}, {version.kind} by {version.author})")


def unload(ipython: Any) -> None:
    """Stop the newer-version check of the magics that :func:`load` registered."""
    for callback in list(ipython.events.callbacks.get("post_run_cell", [])):
        if isinstance(getattr(callback, "__self__", None), TcpkitMagics):
            ipython.events.unregister("post_run_cell", callback)


def _in_cell(ipython: Any) -> bool:
    """Whether a cell is executing now (``%load_ext`` in a cell) rather than the kernel starting."""
    kernel = getattr(ipython, "kernel", None)
    if kernel is None or not hasattr(kernel, "get_parent"):
        return True  # terminal IPython: printing now is seen
    parent = kernel.get_parent()
    return bool(parent and parent.get("header"))


def load(ipython: Any) -> TcpkitMagics:
    """Register ``%tcpkit`` in ``ipython`` and report on the open notebook's component.

    Loaded while the kernel starts (the ``make lab`` configuration), the report would go
    to no cell, so it is printed before the first cell that runs instead.
    """
    magics = TcpkitMagics(ipython)
    ipython.register_magics(magics)
    ipython.events.register("post_run_cell", magics.after_cell)

    def report() -> None:
        if magics._session_path() is None:  # a console or script: no notebook to map
            print("tcpkit: %tcpkit loaded; this kernel has no notebook path, so name the "
                  "component with '%tcpkit component NAME [--root DIR]'")
        elif magics.state.component is not None or magics.locate():
            magics.report(set_base=magics.state.base_digest is None)

    if _in_cell(ipython):
        report()
        return magics

    def once(*_: Any) -> None:
        ipython.events.unregister("pre_run_cell", once)
        report()

    ipython.events.register("pre_run_cell", once)
    return magics
