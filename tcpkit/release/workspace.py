"""The collaborative workspace ``.tcpkit/``: component registry, versions, leases, gate runs, audit.

Layout under the project root::

    notebooks/<notebook>        the content of each component (its notebook file)
    .tcpkit/tcpkit.db           SQLite (WAL): see :mod:`tcpkit.release.db` for the schema
    .tcpkit/objects/sha256/..   content-addressed blobs (:class:`~tcpkit.release.store.ObjectStore`)
    .tcpkit/trust/              public keys the project trusts (signing module, audit signatures)

Who acts
    Every change is made by a named researcher (or runner) and the workspace
    proves it: the actor's private key is loaded from ``keys_dir`` (default
    ``$TCPKIT_KEYS``, else ``~/.config/tcpkit/keys``) or given with
    :meth:`Workspace.add_signer`, must match the actor's record on the trust
    list (``.tcpkit/trust/NAME.pub``), and signs the change's audit entry.
    Without the key, or with a key the trust list does not hold, the change is
    refused with :class:`IdentityError` before anything is written. Trust is
    granted by :meth:`Workspace.trust_add`, by an owner of a component.

What "the content" of a component is
    the bytes of its notebook file, ``<root>/notebooks/<notebook>``. A
    *version* is a row (component, gapless sequence number, digest, parent
    digest, author, time, message, kind) whose digest names those bytes in the
    object store. :meth:`Workspace.modify` and :meth:`Workspace.restore` write
    the notebook file atomically and record the version in one transaction.

How a modification stays safe among several researchers and processes
    The actor's key is proven first (see "Who acts"). Then every change runs
    in one ``BEGIN IMMEDIATE`` transaction, so concurrent
    writers are serialised by SQLite's file lock (released by the kernel when a
    process dies). Inside it, in this order: permission (owner or contributor),
    lease (the researcher's own live lease, or a transient one when the
    component is free), compare-and-swap on ``base`` (the digest the change was
    made from must still be the current version, or :class:`ConflictError` and
    nothing is written), backup (the notebook file as found on disk is stored;
    if it differs from the recorded current version, e.g. edited by hand or
    left by a writer killed before its commit, it is recorded as a ``backup``
    version first), the new object, the new version row, the audit entry, the
    atomic file write, COMMIT. A process killed anywhere leaves the previous
    committed state, plus at most a complete notebook file whose bytes are in
    the store and are recorded as a backup by the next change.

Retention
    :meth:`Workspace.gc` keeps, per component, the objects of the last
    ``keep_last`` versions (default 10, :meth:`Workspace.set_keep_last`), plus
    every object that a gate run or a pin references; version rows are never
    deleted (sequence numbers stay gapless), their content is just no longer
    stored. Unreferenced objects (from killed writers) go after a grace period.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tcpkit.release import audit as _audit
from tcpkit.release import keys as _keys
from tcpkit.release.atomic import stale_temporaries, write_atomic
from tcpkit.release.audit import AuditBreak, AuditEntry, canonical_json, now_iso
from tcpkit.release.db import CorruptDatabaseError, Database, DatabaseLockedError, WorkspaceError
from tcpkit.release.diffs import describe_change
from tcpkit.release.leases import DEFAULT_TTL_S, Lease, process_start, this_host
from tcpkit.release.names import (
    InvalidNameError,
    check_component,
    check_notebook,
    check_researcher,
)
from tcpkit.release.records import (
    DECISIONS,
    GATES,
    ComponentInfo,
    ComponentStatus,
    Conflict,
    ConflictError,
    GateRun,
    GcReport,
    IdentityError,
    LeaseError,
    PermissionDenied,
    UnknownComponentError,
    UnknownVersionError,
    VersionInfo,
    as_json,
    check_content,
    check_gate,
    check_ttl,
    component_of,
    gate_run_of,
    lease_of,
    version_of,
)
from tcpkit.release.store import (
    CorruptObjectError,
    MissingObjectError,
    ObjectStore,
    check_digest,
)

STATE_DIR = ".tcpkit"
NOTEBOOKS_DIR = "notebooks"
DEFAULT_KEEP_LAST = 10
DEFAULT_GRACE_S = 3600.0
_CONFIG_ERROR_PREFIX = "configuration_error:"  # settings key of a component's noted configuration error


class Workspace:
    """The ``.tcpkit/`` state of one project: open it with :meth:`Workspace.open`.

    One instance holds one SQLite connection; use one instance per thread or
    process (they coordinate through the database). Attributes: ``root`` (the
    project directory), ``state_dir`` (``root/.tcpkit``), ``store`` (the
    object store), ``notebooks_dir`` (``root/notebooks``), ``trust_dir``
    (``root/.tcpkit/trust``), ``keys_dir`` (where actors' private keys are
    looked for), ``db``.
    """

    def __init__(self, root: Path, db: Database, store: ObjectStore,
                 keys_dir: Path | None = None) -> None:
        self.root = root
        self.state_dir = root / STATE_DIR
        self.notebooks_dir = root / NOTEBOOKS_DIR
        self.trust_dir = self.state_dir / "trust"
        self.keys_dir = Path(keys_dir) if keys_dir is not None else _keys.keys_dir()
        self.db = db
        self.store = store
        self._signers: dict[str, _keys.HybridSigner] = {}

    @classmethod
    def open(cls, root: Path | str, *, lock_timeout_s: float = 10.0,
             keys_dir: Path | None = None) -> Workspace:
        """Open (creating if needed) the workspace of project directory ``root``.

        Creates ``root/.tcpkit/{tcpkit.db,objects,trust}``, checks the database
        (a damaged one raises :class:`CorruptDatabaseError` and is left as it
        is) and migrates its schema to the current version. ``keys_dir`` is
        where actors' private keys are looked for (default
        :func:`tcpkit.release.keys.keys_dir`).
        """
        root = Path(root).resolve()
        if not root.is_dir():
            raise WorkspaceError(f"workspace root {str(root)!r} is not a directory")
        state = root / STATE_DIR
        state.mkdir(exist_ok=True)
        (state / "trust").mkdir(exist_ok=True)
        store = ObjectStore(state / "objects")
        db = Database(state / "tcpkit.db", lock_timeout_s=lock_timeout_s)
        return cls(root, db, store, keys_dir)

    # -- identity --------------------------------------------------------------------------
    def add_signer(self, signer: _keys.HybridSigner) -> None:
        """Act as ``signer.name`` with these in-memory keys (a runner's, or a passphrase-protected key).

        The keys must still match the trust list when they are used.
        """
        if not isinstance(signer, _keys.HybridSigner):
            raise TypeError(f"add_signer needs a HybridSigner, got {type(signer).__name__}")
        self._signers[signer.name] = signer

    def signer(self, actor: str) -> _keys.HybridSigner:
        """The proven key of ``actor``: loaded from ``keys_dir`` and checked against the trust list.

        Raises
        ------
        IdentityError
            No private key of ``actor`` (the message names the directory and
            ``tcpkit keys init``), an unusable key file, or a key that is not on
            the trust list (the message gives the ``tcpkit trust add`` command).
        """
        check_researcher(actor)
        signer = self._signers.get(actor)
        if signer is None:
            signer = self._load_signer(actor)
            self._signers[actor] = signer
        try:
            _keys.check_trusted(signer, self._trust(), self.trust_dir, self.keys_dir)
        except _keys.KeyError_ as exc:
            raise IdentityError(f"cannot act as {actor}: {exc}; nothing was changed") from None
        return signer

    def _load_signer(self, actor: str) -> _keys.HybridSigner:
        from tcpkit.release.algorithms import ALGORITHMS

        paths = [_keys.private_key_path(actor, alg, self.keys_dir) for alg in ALGORITHMS.values()]
        if not any(path.exists() for path in paths):
            raise IdentityError(
                f"cannot act as {actor}: no private key of {actor} in {self.keys_dir} (looked for "
                f"{' and '.join(p.name for p in paths)}; set $TCPKIT_KEYS to use another directory); "
                f"make one with 'tcpkit keys init {actor}'; nothing was changed")
        try:
            return _keys.load_signer(actor, keys_dir=self.keys_dir)
        except _keys.KeyError_ as exc:
            raise IdentityError(f"cannot act as {actor}: {exc}; nothing was changed") from None

    def _trust(self) -> _keys.TrustList:
        try:
            return _keys.TrustList.load(self.trust_dir)
        except _keys.KeyError_ as exc:
            raise IdentityError(f"the trust list {self.trust_dir} is unusable: {exc}") from None

    def trust_add(self, record_file: Path | str, actor: str) -> tuple[_keys.PublicKeyRecord, bool]:
        """An owner (``actor``, owner of any component) trusts the key in ``record_file``; audited.

        ``record_file`` is a ``NAME.pub`` record (``tcpkit keys init`` writes one
        beside the private keys). The actor must prove their own key, which must
        already be trusted, with one exception that lets a workspace start:
        while no owner of any component is on the trust list, an owner may add
        their own key (the record must be that of the key they prove). A name
        already trusted with other keys is refused (tcpkit never replaces a
        trust entry silently). Returns ``(record, added)``: ``added`` is False
        when the same record was already trusted.
        """
        path = Path(record_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise WorkspaceError(f"cannot read public key record {str(path)!r}: {exc.strerror}") from None
        try:
            record = _keys.PublicKeyRecord.from_json(text, source=str(path))
        except _keys.KeyError_ as exc:
            raise WorkspaceError(str(exc)) from None
        check_researcher(actor)
        owners = {c.owner for c in self.components()}
        if actor not in owners:
            raise PermissionDenied(
                f"{actor} may not change the trust list: only an owner of a component may "
                f"(owners: {', '.join(sorted(owners)) or 'none, no component is registered'})")
        target = _keys.trust_path(record.name, self.trust_dir)
        with self.db.write() as conn:  # the write lock also serialises concurrent trust changes
            trust = self._trust()
            bootstrap = not any(name in owners for name in trust.names)
            if bootstrap:
                signer = self._signers.get(actor) or self._load_signer(actor)
                if record != signer.public_record():
                    whose = "other private keys" if record.name == actor else f"the key of {record.name}"
                    raise IdentityError(
                        f"no owner is on the trust list {self.trust_dir} yet, so the first key an "
                        f"owner adds must be their own: {path} holds {whose}, not the key {actor} "
                        "proved; nothing was changed")
                self._signers[actor] = signer
            else:
                signer = self.signer(actor)
            existing = trust.get(record.name)
            if existing is not None:
                if existing == record:
                    return record, False
                raise IdentityError(
                    f"{record.name} is already trusted with other keys ({target}); tcpkit never "
                    "replaces a trust entry: remove that file in a reviewed commit first; "
                    "nothing was changed")
            _audit.append(conn, signer, "trust-add", {
                "name": record.name, "bootstrap": bootstrap,
                "fingerprints": {key.algorithm: key.fingerprint for key in record.keys}})
            self.trust_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(target, record.to_json().encode("utf-8"), mode=0o644)
        return record, True

    def close(self) -> None:
        """Close the database connection."""
        self.db.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # -- components ------------------------------------------------------------------------
    def register_component(self, name: str, notebook: str, owner: str,
                           contributors: Iterable[str] = (), *, actor: str | None = None
                           ) -> ComponentInfo:
        """Register a component, or update its notebook/owner/contributors (idempotent; audited on change).

        ``actor`` (default: ``owner``) makes the change and needs their key (the
        pipeline registers as its runner). When the component has no version
        yet and its notebook file exists, the file is imported as version 1
        (kind ``import``, author ``owner``).
        """
        check_component(name)
        check_notebook(notebook)
        check_researcher(owner)
        members = tuple(dict.fromkeys(check_researcher(c) for c in contributors if c != owner))
        who = check_researcher(actor) if actor is not None else owner
        signer = self.signer(who)
        path = self.notebooks_dir / notebook
        with self.db.write() as conn:
            row = conn.execute("SELECT * FROM components WHERE name = ?", (name,)).fetchone()
            stamp = now_iso()
            if row is None:
                conn.execute(
                    "INSERT INTO components (name, notebook, owner, contributors, level, created_at,"
                    " updated_at) VALUES (?,?,?,?,NULL,?,?)",
                    (name, notebook, owner, json.dumps(list(members)), stamp, stamp),
                )
                _audit.append(conn, signer, "register", {"component": name, "notebook": notebook,
                                                      "owner": owner, "contributors": list(members)})
            else:
                old = component_of(row)
                if (old.notebook, old.owner, old.contributors) != (notebook, owner, members):
                    conn.execute(
                        "UPDATE components SET notebook=?, owner=?, contributors=?, updated_at=?"
                        " WHERE name=?", (notebook, owner, json.dumps(list(members)), stamp, name),
                    )
                    _audit.append(conn, signer, "reregister", {
                        "component": name,
                        "before": {"notebook": old.notebook, "owner": old.owner,
                                   "contributors": list(old.contributors)},
                        "after": {"notebook": notebook, "owner": owner, "contributors": list(members)},
                    })
            has_version = conn.execute(
                "SELECT 1 FROM versions WHERE component = ? LIMIT 1", (name,)).fetchone()
            if has_version is None and path.is_file():
                data = path.read_bytes()
                digest = self.store.put_bytes(data)
                self._insert_version(conn, signer, name, 1, digest, None, owner,
                                     f"import of notebooks/{notebook}", "import")
            return self._component_in(conn, name)

    def component(self, name: str) -> ComponentInfo:
        """The registered component ``name`` (:class:`UnknownComponentError` if none)."""
        check_component(name)
        row = self.db.query_one("SELECT * FROM components WHERE name = ?", (name,))
        if row is None:
            raise self._unknown(name)
        return component_of(row)

    def components(self) -> list[ComponentInfo]:
        """Every registered component, by name."""
        return [component_of(r) for r in self.db.query("SELECT * FROM components ORDER BY name")]

    def notebook_path(self, component: str) -> Path:
        """The file whose bytes are the component's content."""
        return self.notebooks_dir / self.component(component).notebook

    def add_contributor(self, component: str, researcher: str, actor: str) -> ComponentInfo:
        """The owner (``actor``) lets ``researcher`` lease and modify the component (audited)."""
        return self._change_contributors(component, researcher, actor, add=True)

    def remove_contributor(self, component: str, researcher: str, actor: str) -> ComponentInfo:
        """The owner (``actor``) withdraws ``researcher``'s right to change the component (audited)."""
        return self._change_contributors(component, researcher, actor, add=False)

    def _change_contributors(self, component: str, researcher: str, actor: str, *, add: bool
                             ) -> ComponentInfo:
        check_component(component)
        check_researcher(researcher)
        signer = self.signer(actor)
        with self.db.write() as conn:
            info = self._component_in(conn, component)
            if actor != info.owner:
                raise PermissionDenied(
                    f"{actor} may not change the contributors of component {component!r}: "
                    f"only its owner {info.owner} may"
                )
            if researcher == info.owner:
                raise ValueError(f"{researcher} owns component {component!r}; owners are always members")
            current = list(info.contributors)
            if add and researcher in current:
                return info
            if not add and researcher not in current:
                raise ValueError(f"{researcher} is not a contributor of component {component!r}")
            updated = [*current, researcher] if add else [c for c in current if c != researcher]
            conn.execute("UPDATE components SET contributors=?, updated_at=? WHERE name=?",
                         (json.dumps(updated), now_iso(), component))
            _audit.append(conn, signer, "contributor-add" if add else "contributor-remove",
                          {"component": component, "researcher": researcher})
            return self._component_in(conn, component)

    def set_level(self, component: str, gate: str, actor: str) -> None:
        """Record that ``component`` has reached ``gate`` (audited). Gate order is the pipeline's job."""
        check_component(component)
        check_gate(gate)
        signer = self.signer(actor)
        with self.db.write() as conn:
            before = self._component_in(conn, component).level
            conn.execute("UPDATE components SET level=?, updated_at=? WHERE name=?",
                         (gate, now_iso(), component))
            _audit.append(conn, signer, "level", {"component": component, "from": before, "to": gate})

    # -- versions --------------------------------------------------------------------------
    def current(self, component: str) -> VersionInfo | None:
        """The latest version of ``component``, or None before the first."""
        self.component(component)
        row = self.db.query_one(
            "SELECT * FROM versions WHERE component = ? ORDER BY seq DESC LIMIT 1", (component,))
        return None if row is None else version_of(row)

    def versions(self, component: str) -> list[VersionInfo]:
        """Every version of ``component``, oldest first (including those whose content gc removed)."""
        self.component(component)
        return [version_of(r) for r in self.db.query(
            "SELECT * FROM versions WHERE component = ? ORDER BY seq", (component,))]

    def version(self, component: str, digest: str) -> VersionInfo:
        """The latest version of ``component`` whose digest is ``digest`` or starts with it (>= 6 hex)."""
        self.component(component)
        if not isinstance(digest, str) or not (6 <= len(digest) <= 64) or any(
                ch not in "0123456789abcdef" for ch in digest):
            raise ValueError(
                f"{digest!r} is not a digest or digest prefix (6 to 64 lowercase hexadecimal characters)")
        rows = self.db.query(
            "SELECT * FROM versions WHERE component = ? AND substr(digest, 1, ?) = ? ORDER BY seq DESC",
            (component, len(digest), digest))
        if not rows:
            raise UnknownVersionError(
                f"{digest} is not a version of component {component!r} "
                f"(see 'tcpkit backups {component}')")
        if len({r["digest"] for r in rows}) > 1:
            raise ValueError(f"digest prefix {digest} of component {component!r} is ambiguous; give more characters")
        return version_of(rows[0])

    def modify(self, component: str, researcher: str, content: bytes, base: str | None,
               message: str = "") -> VersionInfo:
        """Write new content for ``component`` and record it as a new version.

        Parameters
        ----------
        component : str
            A registered component; its content is ``notebooks/<notebook>``.
        researcher : str
            Who makes the change: must be the owner or a contributor, and must
            hold the component's lease unless nobody does (then a transient
            lease covers this one transaction).
        content : bytes
            The complete new notebook file (for ``.ipynb`` it must be notebook JSON).
        base : str or None
            Digest of the version the change was made from (None: the
            component has no version yet). If another version has become
            current since, :class:`ConflictError` is raised and nothing is written.
        message : str
            Why; shown by ``tcpkit backups``.

        Returns
        -------
        VersionInfo
            The recorded version.
        """
        check_component(component)
        check_researcher(researcher)
        if base is not None:
            check_digest(base)
        if not isinstance(message, str):
            raise TypeError(f"message must be a string, got {type(message).__name__}")
        info = self.component(component)
        data = check_content(info.notebook, content)
        return self._commit(component, researcher, data, base, message, kind="modify")

    def restore(self, component: str, digest: str, researcher: str, base: str | None,
                message: str | None = None) -> VersionInfo:
        """Write an earlier version back as a new version (after backing up the file on disk).

        ``digest`` may be a unique prefix (>= 6 hex) of one of the component's
        versions. ``base`` is the digest of the version the caller saw as
        current (None: no version yet), checked as in :meth:`modify`: if
        another version has become current since, :class:`ConflictError` is
        raised and nothing is written. The stored object is verified before
        anything is written; an object that retention removed raises
        :class:`MissingObjectError` naming the rule.
        """
        check_component(component)
        check_researcher(researcher)
        if base is not None:
            check_digest(base)
        target = self.version(component, digest)
        try:
            data = self.store.get_bytes(target.digest)
        except MissingObjectError:
            raise MissingObjectError(self._why_missing(target)) from None
        note = message if message is not None else f"restore of version {target.seq} ({target.digest[:12]})"
        return self._commit(component, researcher, data, base, note, kind="restore", restored=target)

    def _why_missing(self, version: VersionInfo) -> str:
        """The sentence for a version whose content is gone: which retention rule removed it."""
        head = (f"version {version.seq} ({version.digest}) of component {version.component!r} is "
                "no longer in the store")
        gcs = [e for e in self.audit_log() if e.action == "gc" and e.at > version.created_at
               and e.details.get("objects_removed")]
        if not gcs:
            return (f"{head}, and no gc that removed objects is recorded since it was made: the "
                    "object file was deleted outside tcpkit; nothing was changed")
        last = gcs[-1]
        keep = last.details.get("keep_last")
        return (f"{head}: retention removed its content (gc by {last.actor} at {last.at}, audit "
                f"entry {last.seq}, keep_last={keep}: only the last {keep} versions of each "
                "component keep their content, plus those a gate run or a pin references); "
                "nothing was changed")

    def _commit(self, component: str, researcher: str, data: bytes, base: str | None, message: str,
                *, kind: str, restored: VersionInfo | None = None) -> VersionInfo:
        signer = self.signer(researcher)
        try:
            with self.db.write() as conn:
                info = self._component_in(conn, component)
                self._require_member(info, researcher, "modify")
                lease_mode = self._lease_for_change(conn, info, signer)
                row = conn.execute("SELECT * FROM versions WHERE component = ? ORDER BY seq DESC LIMIT 1",
                                   (component,)).fetchone()
                current = None if row is None else version_of(row)
                current_digest = None if current is None else current.digest
                if base != current_digest:
                    raise Conflict(current)
                seq = 0 if current is None else current.seq
                parent = current_digest
                path = self.notebooks_dir / info.notebook
                if path.is_file():
                    on_disk = self.store.put_bytes(path.read_bytes())  # the backup
                    if on_disk != current_digest:
                        seq += 1
                        self._insert_version(
                            conn, signer, component, seq, on_disk, parent, researcher,
                            f"backup of notebooks/{info.notebook} as found on disk before {kind}",
                            "backup")
                        parent = on_disk
                digest = self.store.put_bytes(data)
                seq += 1
                details: dict[str, Any] = {"lease": lease_mode, "base": base}
                if restored is not None:
                    details["restored_seq"] = restored.seq
                version = self._insert_version(conn, signer, component, seq, digest, parent,
                                               researcher, message, kind, details)
                self.notebooks_dir.mkdir(parents=True, exist_ok=True)
                write_atomic(path, data)
                return version
        except Conflict as conflict:
            raise self._conflict_error(component, base, conflict.current) from None

    def _insert_version(self, conn: sqlite3.Connection, signer: _keys.HybridSigner, component: str,
                        seq: int, digest: str, parent: str | None, author: str, message: str, kind: str,
                        extra: Mapping[str, Any] | None = None) -> VersionInfo:
        stamp = now_iso()
        conn.execute(
            "INSERT INTO versions (component, seq, digest, parent, author, created_at, message, kind)"
            " VALUES (?,?,?,?,?,?,?,?)", (component, seq, digest, parent, author, stamp, message, kind))
        extra_author = {} if author == signer.name else {"author": author}
        _audit.append(conn, signer, kind, {"component": component, "seq": seq, "digest": digest,
                                           "parent": parent, **extra_author, **(extra or {})})
        return VersionInfo(component, seq, digest, parent, author, stamp, message, kind)

    def _conflict_error(self, component: str, base: str | None, current: VersionInfo | None
                        ) -> ConflictError:
        current_digest = None if current is None else current.digest
        old: bytes | None
        if base is None:
            old = b""
        else:
            try:
                old = self.store.get_bytes(base)
            except (MissingObjectError, CorruptObjectError):
                old = None
        new: bytes | None = b""
        if current is not None:
            try:
                new = self.store.get_bytes(current.digest)
            except (MissingObjectError, CorruptObjectError):
                new = None
        diff = describe_change(old, new, f"base {str(base)[:12]}", f"current {str(current_digest)[:12]}")
        who = "" if current is None else f" (version {current.seq} by {current.author} at {current.created_at})"
        message = (
            f"component {component!r} changed since your base {base}: its current version is "
            f"{current_digest}{who}; nothing was written. Rebase your change on the current "
            f"version and try again.\n{diff}"
        )
        return ConflictError(message, component=component, base=base, current=current_digest, diff=diff)

    # -- leases ----------------------------------------------------------------------------
    def lease(self, component: str) -> Lease | None:
        """The lease recorded on ``component`` (possibly stale), or None."""
        self.component(component)
        row = self.db.query_one("SELECT * FROM leases WHERE component = ?", (component,))
        return None if row is None else lease_of(row)

    def leases(self) -> list[Lease]:
        """Every recorded lease (stale ones included; see :meth:`Lease.stale_reason`)."""
        return [lease_of(r) for r in self.db.query("SELECT * FROM leases ORDER BY component")]

    def acquire_lease(self, component: str, holder: str, ttl_s: float = DEFAULT_TTL_S, reason: str = "",
                      *, pid: int | None = None, bind_process: bool = True) -> Lease:
        """Take the component's lease for ``ttl_s`` seconds (renewing it if ``holder`` has it).

        The lease is bound to process ``pid`` (default: this process) on this
        host unless ``bind_process`` is False. A lease held by someone else is
        taken over only when stale (expired, or its process on this host is
        gone); the takeover is audited. Otherwise :class:`LeaseError` names the holder.
        """
        check_component(component)
        ttl = check_ttl(ttl_s)
        signer = self.signer(holder)
        owner_pid = (os.getpid() if pid is None else int(pid)) if bind_process else None
        with self.db.write() as conn:
            info = self._component_in(conn, component)
            self._require_member(info, holder, "lease")
            row = conn.execute("SELECT * FROM leases WHERE component = ?", (component,)).fetchone()
            now = time.time()
            if row is not None:
                existing = lease_of(row)
                if existing.holder != holder:
                    stale = existing.stale_reason(now)
                    if stale is None:
                        raise self._held(existing, holder)
                    _audit.append(conn, signer, "lease-takeover", {
                        "component": component, "previous_holder": existing.holder,
                        "previous_pid": existing.pid, "previous_host": existing.host, "why": stale})
            lease = Lease(component, holder, this_host(), owner_pid,
                          None if owner_pid is None else process_start(owner_pid),
                          now_iso(), now + ttl, str(reason))
            conn.execute("INSERT OR REPLACE INTO leases VALUES (?,?,?,?,?,?,?,?)",
                         (lease.component, lease.holder, lease.host, lease.pid, lease.proc_start,
                          lease.acquired_at, lease.expires_at, lease.reason))
            _audit.append(conn, signer, "lease-acquire", {
                "component": component, "pid": owner_pid, "host": lease.host, "ttl_s": ttl,
                "reason": lease.reason})
            return lease

    def renew_lease(self, component: str, holder: str, ttl_s: float = DEFAULT_TTL_S) -> Lease:
        """Extend ``holder``'s lease to ``ttl_s`` from now (:class:`LeaseError` if not theirs)."""
        check_component(component)
        ttl = check_ttl(ttl_s)
        signer = self.signer(holder)
        with self.db.write() as conn:
            self._component_in(conn, component)
            row = conn.execute("SELECT * FROM leases WHERE component = ?", (component,)).fetchone()
            if row is None or row["holder"] != holder:
                raise LeaseError(self._not_holder(component, holder, None if row is None else lease_of(row)))
            existing = lease_of(row)
            expires = time.time() + ttl
            conn.execute("UPDATE leases SET expires_at = ? WHERE component = ?", (expires, component))
            _audit.append(conn, signer, "lease-renew", {"component": component, "ttl_s": ttl})
            return Lease(existing.component, existing.holder, existing.host, existing.pid,
                         existing.proc_start, existing.acquired_at, expires, existing.reason)

    def release_lease(self, component: str, holder: str) -> None:
        """Give up ``holder``'s lease (:class:`LeaseError` if the lease is not theirs)."""
        check_component(component)
        signer = self.signer(holder)
        with self.db.write() as conn:
            self._component_in(conn, component)
            row = conn.execute("SELECT * FROM leases WHERE component = ?", (component,)).fetchone()
            if row is None or row["holder"] != holder:
                raise LeaseError(self._not_holder(component, holder, None if row is None else lease_of(row)))
            conn.execute("DELETE FROM leases WHERE component = ?", (component,))
            _audit.append(conn, signer, "lease-release", {"component": component})

    def _lease_for_change(self, conn: sqlite3.Connection, info: ComponentInfo,
                          signer: _keys.HybridSigner) -> str:
        """Check the lease rule for a change; returns "held" or "transient" (audits takeovers)."""
        researcher = signer.name
        row = conn.execute("SELECT * FROM leases WHERE component = ?", (info.name,)).fetchone()
        if row is None:
            return "transient"
        existing = lease_of(row)
        stale = existing.stale_reason(time.time())
        if existing.holder == researcher:
            if stale is None:
                return "held"
            conn.execute("DELETE FROM leases WHERE component = ?", (info.name,))
            _audit.append(conn, signer, "lease-expire", {"component": info.name, "why": stale})
            return "transient"
        if stale is None:
            raise self._held(existing, researcher)
        conn.execute("DELETE FROM leases WHERE component = ?", (info.name,))
        _audit.append(conn, signer, "lease-takeover", {
            "component": info.name, "previous_holder": existing.holder, "previous_pid": existing.pid,
            "previous_host": existing.host, "why": stale})
        return "transient"

    @staticmethod
    def _held(existing: Lease, who: str) -> LeaseError:
        return LeaseError(
            f"component {existing.component!r} is leased to {existing.describe()}; {who} cannot "
            f"change it until {existing.holder} releases the lease or it expires; nothing was changed")

    @staticmethod
    def _not_holder(component: str, holder: str, existing: Lease | None) -> str:
        if existing is None:
            return f"{holder} holds no lease on component {component!r} (nobody does)"
        return f"{holder} holds no lease on component {component!r}; it is leased to {existing.describe()}"

    # -- gate runs and pins ----------------------------------------------------------------
    def record_gate_run(self, run: GateRun) -> int:
        """Store a gate run (audited, signed by ``run.runner``'s key) and return its id.

        Digests must be 64-hex sha256; the executed notebook, report and
        envelope must already be in the store (:class:`MissingObjectError` otherwise).
        """
        if not isinstance(run, GateRun):
            raise TypeError(f"record_gate_run needs a GateRun, got {type(run).__name__}")
        check_component(run.component)
        check_gate(run.gate)
        if run.decision not in DECISIONS:
            raise ValueError(f"gate run decision {run.decision!r} is invalid: use 'passed' or 'failed'")
        check_digest(run.input_digest)
        for name, digest in run.inputs.items():
            if not isinstance(name, str):
                raise ValueError(f"gate run input name {name!r} is not a string")
            check_digest(digest)
        for artifact in (run.executed_notebook_digest, run.report_digest, run.envelope_digest):
            if artifact is not None:
                self.store.verify(artifact)
        if not isinstance(run.duration_s, int | float) or not math.isfinite(run.duration_s) or run.duration_s < 0:
            raise ValueError(f"gate run duration_s must be a finite number >= 0, got {run.duration_s!r}")
        try:
            metrics_json = json.dumps(run.metrics, sort_keys=True, allow_nan=False)
            criteria_json = json.dumps(run.criteria, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"gate run metrics/criteria are not JSON data: {exc}") from None
        signer = self.signer(run.runner)
        with self.db.write() as conn:
            self._component_in(conn, run.component)
            cursor = conn.execute(
                "INSERT INTO gate_runs (component, gate, input_digest, inputs, decision, metrics, criteria,"
                " executed_notebook_digest, report_digest, envelope_digest, runner, started_at, duration_s)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run.component, run.gate, run.input_digest, canonical_json(run.inputs), run.decision,
                 metrics_json, criteria_json, run.executed_notebook_digest, run.report_digest,
                 run.envelope_digest, run.runner, run.started_at, float(run.duration_s)))
            run_id = int(cursor.lastrowid or 0)
            _audit.append(conn, signer, "gate-run", {
                "id": run_id, "component": run.component, "gate": run.gate,
                "input_digest": run.input_digest, "decision": run.decision,
                "envelope_digest": run.envelope_digest})
            return run_id

    def find_passing_run(self, component: str, gate: str, input_digest: str) -> GateRun | None:
        """The latest passing run of ``component`` at ``gate`` with these inputs, or None."""
        return self._latest_run(component, gate, input_digest, passed_only=True)

    def find_run(self, component: str, gate: str, input_digest: str) -> GateRun | None:
        """The latest run of ``component`` at ``gate`` with these inputs, passed or failed, or None."""
        return self._latest_run(component, gate, input_digest, passed_only=False)

    def _latest_run(self, component: str, gate: str, input_digest: str, *, passed_only: bool) -> GateRun | None:
        check_component(component)
        check_gate(gate)
        check_digest(input_digest)
        decision = " AND decision='passed'" if passed_only else ""
        row = self.db.query_one(
            f"SELECT * FROM gate_runs WHERE component=? AND gate=? AND input_digest=?{decision}"
            " ORDER BY id DESC LIMIT 1", (component, gate, input_digest))
        return None if row is None else gate_run_of(row)

    # -- configuration errors --------------------------------------------------------------
    def note_configuration_error(self, component: str, error: str | None, *, actor: str) -> None:
        """Keep (or, with None, clear) the configuration error that stopped the last ``tcpkit run``
        of ``component`` before any kernel started; audited when it changes.

        Such a run records no gate run and leaves the level and the frozen files as they are,
        so without this note ``tcpkit status`` would show the old level as if nothing had happened.
        """
        check_component(component)
        key = f"{_CONFIG_ERROR_PREFIX}{component}"
        signer = self.signer(actor)
        with self.db.write() as conn:
            self._component_in(conn, component)
            row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
            before = None if row is None else json.loads(row[0]).get("error")
            if before == error:
                return
            if error is None:
                conn.execute("DELETE FROM settings WHERE key = ?", (key,))
            else:
                conn.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)",
                             (key, json.dumps({"at": now_iso(), "error": error})))
            _audit.append(conn, signer, "configuration", {"component": component, "error": error})

    def configuration_errors(self) -> dict[str, tuple[str, str]]:
        """Per component with a noted configuration error: (when it was noted, the error)."""
        rows = self.db.query("SELECT key, value FROM settings WHERE key GLOB ?", (f"{_CONFIG_ERROR_PREFIX}*",))
        found: dict[str, tuple[str, str]] = {}
        for row in rows:
            note = json.loads(row[1])
            found[str(row[0])[len(_CONFIG_ERROR_PREFIX):]] = (str(note.get("at", "")), str(note.get("error", "")))
        return found

    def gate_runs(self, component: str | None = None) -> list[GateRun]:
        """Every recorded gate run (of one component when given), oldest first."""
        if component is None:
            rows = self.db.query("SELECT * FROM gate_runs ORDER BY id")
        else:
            check_component(component)
            rows = self.db.query("SELECT * FROM gate_runs WHERE component=? ORDER BY id", (component,))
        return [gate_run_of(r) for r in rows]

    def pin(self, digest: str, reason: str, *, actor: str) -> None:
        """Keep object ``digest`` from gc (e.g. referenced by a frozen artifact); audited."""
        self.store.verify(digest)
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("a pin needs a non-empty reason")
        signer = self.signer(actor)
        with self.db.write() as conn:
            conn.execute("INSERT OR REPLACE INTO pins VALUES (?,?,?)", (digest, reason, now_iso()))
            _audit.append(conn, signer, "pin", {"digest": digest, "reason": reason})

    def unpin(self, digest: str, *, actor: str) -> None:
        """Let gc consider ``digest`` again (audited; no error if it was not pinned)."""
        check_digest(digest)
        signer = self.signer(actor)
        with self.db.write() as conn:
            if conn.execute("DELETE FROM pins WHERE digest = ?", (digest,)).rowcount:
                _audit.append(conn, signer, "unpin", {"digest": digest})

    def pins(self) -> dict[str, str]:
        """Pinned digests and their reasons."""
        return {r["digest"]: r["reason"] for r in self.db.query("SELECT digest, reason FROM pins")}

    # -- audit -----------------------------------------------------------------------------
    def audit(self, action: str, actor: str, details: dict[str, Any]) -> AuditEntry:
        """Append an entry, signed by ``actor``'s key, to the audit log in its own transaction."""
        if not isinstance(action, str) or not action:
            raise ValueError("audit action must be a non-empty string")
        canonical_json(details)  # refuse non-JSON details before locking anything
        signer = self.signer(actor)
        with self.db.write() as conn:
            return _audit.append(conn, signer, action, details)

    def audit_log(self) -> list[AuditEntry]:
        """The whole audit log, oldest first."""
        return _audit.entries(self.db.query("SELECT * FROM audit ORDER BY seq"))

    def verify_audit(self) -> AuditBreak | None:
        """The first entry whose link, hash or signature (against the trust list) fails, or None."""
        return _audit.verify_chain(self.db.query("SELECT * FROM audit ORDER BY seq"), self._trust())

    # -- retention -------------------------------------------------------------------------
    @property
    def keep_last(self) -> int:
        """How many latest versions per component gc keeps (setting ``keep_last``, default 10)."""
        row = self.db.query_one("SELECT value FROM settings WHERE key = 'keep_last'")
        return DEFAULT_KEEP_LAST if row is None else int(row[0])

    def set_keep_last(self, n: int, actor: str) -> None:
        """Configure the retention depth (>= 1; audited)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"keep_last must be an integer >= 1, got {n!r}")
        signer = self.signer(actor)
        with self.db.write() as conn:
            conn.execute("INSERT OR REPLACE INTO settings VALUES ('keep_last', ?)", (str(n),))
            _audit.append(conn, signer, "retention", {"keep_last": n})

    def gc(self, keep_last: int | None = None, *, grace_s: float = DEFAULT_GRACE_S,
           actor: str) -> GcReport:
        """Remove stored objects that retention no longer protects; report what was freed.

        Kept: objects of each component's last ``keep_last`` versions (default:
        the configured setting), of every gate run, of every pin. Removed:
        objects of older versions, and unreferenced objects and temporary files
        older than ``grace_s`` (writers in progress are younger). Runs in one
        write transaction, so no version is recorded while it decides.
        """
        n = self.keep_last if keep_last is None else keep_last
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"keep_last must be an integer >= 1, got {n!r}")
        if not isinstance(grace_s, int | float) or not grace_s >= 0:
            raise ValueError(f"grace_s must be a number >= 0, got {grace_s!r}")
        signer = self.signer(actor)
        with self.db.write() as conn:
            keep_versions: set[str] = set()
            for row in conn.execute(
                    "SELECT digest FROM (SELECT digest, ROW_NUMBER() OVER (PARTITION BY component"
                    " ORDER BY seq DESC) AS k FROM versions) WHERE k <= ?", (n,)):
                keep_versions.add(row[0])
            keep_runs: set[str] = set()
            for row in conn.execute("SELECT * FROM gate_runs"):
                keep_runs |= gate_run_of(row).digests()
            keep_pins = {row[0] for row in conn.execute("SELECT digest FROM pins")}
            keep = keep_versions | keep_runs | keep_pins
            all_versions = {row[0] for row in conn.execute("SELECT DISTINCT digest FROM versions")}
            cutoff = time.time() - grace_s
            removed: list[str] = []
            freed = 0
            for digest in list(self.store.iter_digests()):
                if digest in keep:
                    continue
                if digest not in all_versions:
                    try:
                        if self.store.path_of(digest).stat().st_mtime > cutoff:
                            continue
                    except FileNotFoundError:
                        continue
                freed += self.store.remove(digest)
                removed.append(digest)
            gone = set(removed)
            pruned = tuple(
                (str(r["component"]), int(r["seq"])) for r in conn.execute(
                    "SELECT component, seq, digest FROM versions ORDER BY component, seq")
                if r["digest"] in gone)
            temporaries = 0
            for directory in (self.store.root, self.notebooks_dir):
                for tmp in list(stale_temporaries(directory, grace_s)):
                    try:
                        freed += tmp.stat().st_size
                        tmp.unlink()
                        temporaries += 1
                    except OSError:
                        continue
            report = GcReport(
                keep_last=n, objects_removed=tuple(removed), bytes_freed=freed, versions_pruned=pruned,
                temporaries_removed=temporaries, objects_kept=sum(1 for _ in self.store.iter_digests()),
                protected={"versions": len(keep_versions), "gate_runs": len(keep_runs),
                           "pins": len(keep_pins)})
            _audit.append(conn, signer, "gc", {
                "keep_last": n, "objects_removed": len(removed), "bytes_freed": freed,
                "versions_pruned": len(pruned), "temporaries_removed": temporaries})
            return report

    def stored(self, version: VersionInfo) -> bool:
        """Whether the version's content is still in the store (gc may have removed old ones)."""
        return self.store.has(version.digest)

    # -- status ----------------------------------------------------------------------------
    def status(self) -> list[ComponentStatus]:
        """Per component: owner, contributors, level, versions (kept), current digest, lease holder,
        and the configuration error that stopped its last ``tcpkit run`` (if it did)."""
        result: list[ComponentStatus] = []
        now = time.time()
        leases = {lease.component: lease for lease in self.leases()}
        errors = self.configuration_errors()
        for info in self.components():
            versions = self.versions(info.name)
            lease = leases.get(info.name)
            live = lease is not None and lease.stale_reason(now) is None
            result.append(ComponentStatus(
                name=info.name, notebook=info.notebook, owner=info.owner, contributors=info.contributors,
                level=info.level, versions=len(versions),
                versions_kept=sum(1 for v in versions if self.store.has(v.digest)),
                current=versions[-1].digest if versions else None,
                lease_holder=lease.holder if live and lease is not None else None,
                lease_expires=lease.expires_iso if live and lease is not None else None,
                configuration_error=errors[info.name][1] if info.name in errors else None))
        return result

    # -- helpers ---------------------------------------------------------------------------
    def _component_in(self, conn: sqlite3.Connection, name: str) -> ComponentInfo:
        row = conn.execute("SELECT * FROM components WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise self._unknown(name)
        return component_of(row)

    def _unknown(self, name: str) -> UnknownComponentError:
        known = [r[0] for r in self.db.query("SELECT name FROM components ORDER BY name")]
        hint = f"known: {', '.join(known)}" if known else "none is registered yet"
        return UnknownComponentError(f"component {name!r} is not registered in {str(self.root)!r} ({hint})")

    @staticmethod
    def _require_member(info: ComponentInfo, researcher: str, what: str) -> None:
        if researcher not in info.members():
            others = f" and contributors {', '.join(info.contributors)}" if info.contributors else ""
            raise PermissionDenied(
                f"{researcher} may not {what} component {info.name!r}: only its owner "
                f"{info.owner}{others} may; ask {info.owner} to add you as a contributor")


__all__ = [
    "GATES",
    "AuditBreak",
    "AuditEntry",
    "ComponentInfo",
    "ComponentStatus",
    "ConflictError",
    "CorruptDatabaseError",
    "CorruptObjectError",
    "DatabaseLockedError",
    "GateRun",
    "GcReport",
    "IdentityError",
    "InvalidNameError",
    "Lease",
    "LeaseError",
    "MissingObjectError",
    "PermissionDenied",
    "UnknownComponentError",
    "UnknownVersionError",
    "VersionInfo",
    "Workspace",
    "WorkspaceError",
    "as_json",
]
