"""The workspace database: SQLite in WAL mode, a versioned schema, and clear lock/corruption errors.

One :class:`Database` wraps one connection in autocommit mode; every change
runs inside :meth:`Database.write`, an ``BEGIN IMMEDIATE`` transaction, so
writers queue on SQLite's file lock (which dies with its process: a writer
killed mid-transaction leaves nothing behind) while readers keep reading the
last committed snapshot (WAL). A lock that stays taken longer than
``lock_timeout_s`` becomes :class:`DatabaseLockedError`; a file that is not a
healthy SQLite database (truncated, overwritten) becomes
:class:`CorruptDatabaseError` on open, before anything is written to it.

The schema is versioned in ``schema_version`` and brought up to date by the
ordered :data:`MIGRATIONS` when the database is opened. A new database is
built under a temporary name and renamed into place, so a zero-length
``tcpkit.db`` can only mean damage, never a half-finished creation.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tcpkit.release.atomic import fsync_dir


class WorkspaceError(Exception):
    """Base class of every error raised by the workspace, its database and its leases."""


class DatabaseLockedError(WorkspaceError):
    """Another process held the database's write lock for longer than the timeout."""


class CorruptDatabaseError(WorkspaceError):
    """The database file is damaged or is not a tcpkit database."""


#: Schema migrations, applied in order; entry ``i`` takes version ``i`` to ``i + 1``.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE components (
        name TEXT PRIMARY KEY,
        notebook TEXT NOT NULL,
        owner TEXT NOT NULL,
        contributors TEXT NOT NULL,          -- JSON list of researcher names
        level TEXT,                          -- highest gate passed, NULL before any
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE versions (
        component TEXT NOT NULL REFERENCES components(name),
        seq INTEGER NOT NULL,
        digest TEXT NOT NULL,
        parent TEXT,                         -- digest of the version before, NULL for the first
        author TEXT NOT NULL,
        created_at TEXT NOT NULL,
        message TEXT NOT NULL,
        kind TEXT NOT NULL,                  -- import | modify | backup | restore
        PRIMARY KEY (component, seq)
    );
    CREATE INDEX versions_digest ON versions(digest);
    CREATE TABLE leases (
        component TEXT PRIMARY KEY REFERENCES components(name),
        holder TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER,                         -- NULL: bound to the time-to-live only
        proc_start TEXT,                     -- start time of pid, guards against pid reuse
        acquired_at TEXT NOT NULL,
        expires_at REAL NOT NULL,            -- unix time
        reason TEXT NOT NULL
    );
    CREATE TABLE gate_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        component TEXT NOT NULL,
        gate TEXT NOT NULL,
        input_digest TEXT NOT NULL,
        inputs TEXT NOT NULL,                -- JSON object name -> digest
        decision TEXT NOT NULL,
        metrics TEXT NOT NULL,               -- JSON object
        criteria TEXT NOT NULL,              -- JSON list of objects
        executed_notebook_digest TEXT,
        report_digest TEXT,
        envelope_digest TEXT,
        runner TEXT NOT NULL,
        started_at TEXT NOT NULL,
        duration_s REAL NOT NULL
    );
    CREATE INDEX gate_runs_lookup ON gate_runs(component, gate, input_digest, decision);
    CREATE TABLE pins (
        digest TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        details TEXT NOT NULL,               -- canonical JSON
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    """,
    # 2: every audit entry is signed by the acting key (see tcpkit.release.audit)
    """
    ALTER TABLE audit ADD COLUMN signatures TEXT;  -- canonical JSON list; NULL before version 2
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class Database:
    """The ``tcpkit.db`` connection of one workspace object (not shared between threads).

    Parameters
    ----------
    path : Path
        The database file; created (with the current schema) when missing.
    lock_timeout_s : float
        How long a write waits for another process's lock before
        :class:`DatabaseLockedError`. SQLite's busy handler waits first; this
        class retries with back-off until the total budget is spent.
    """

    def __init__(self, path: Path, *, lock_timeout_s: float = 10.0) -> None:
        if not lock_timeout_s > 0:
            raise ValueError(f"lock_timeout_s must be positive, got {lock_timeout_s!r}")
        self.path = Path(path)
        self.lock_timeout_s = float(lock_timeout_s)
        self._depth = 0
        if not self.path.exists():
            self._create()
        self._check_file()
        self.conn = self._connect()
        try:
            self._check_integrity()
            self._migrate()
        except BaseException:
            self.conn.close()
            raise

    # -- opening ---------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=min(self.lock_timeout_s, 2.0), isolation_level=None
        )
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self._corrupt(exc) from None
        return conn

    def _create(self) -> None:
        """Build an empty database with the current schema and rename it into place."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.init-{os.getpid()}-{time.time_ns()}")
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("BEGIN")
                conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                conn.execute("INSERT INTO schema_version VALUES (0)")
                conn.execute("COMMIT")
            finally:
                conn.close()
            with contextlib.suppress(FileExistsError):
                os.link(tmp, self.path)  # fails if another process created it first
            fsync_dir(self.path.parent)
        finally:
            for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()

    def _check_file(self) -> None:
        size = self.path.stat().st_size
        if size < 100:
            raise CorruptDatabaseError(
                f"workspace database {str(self.path)!r} is damaged: it is {size} bytes long, "
                "shorter than an SQLite header (truncated?); nothing was changed"
            )
        with open(self.path, "rb") as handle:
            header = handle.read(16)
        if header != b"SQLite format 3\x00":
            raise CorruptDatabaseError(
                f"workspace database {str(self.path)!r} is not an SQLite database; nothing was changed"
            )

    def _check_integrity(self) -> None:
        try:
            rows = self.conn.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from None
        problems = [row[0] for row in rows if row[0] != "ok"]
        if problems:
            raise CorruptDatabaseError(
                f"workspace database {str(self.path)!r} is damaged ({problems[0]}); "
                "nothing was changed"
            )

    def _corrupt(self, exc: sqlite3.DatabaseError) -> CorruptDatabaseError:
        return CorruptDatabaseError(
            f"workspace database {str(self.path)!r} is damaged ({exc}); nothing was changed"
        )

    def _migrate(self) -> None:
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise WorkspaceError(
                f"workspace database {str(self.path)!r} has schema version {version}, newer than "
                f"this tcpkit understands ({SCHEMA_VERSION}); upgrade tcpkit"
            )
        if version == SCHEMA_VERSION:
            return
        with self.write() as conn:
            current = int(conn.execute("SELECT version FROM schema_version").fetchone()[0])
            for step in range(current, SCHEMA_VERSION):
                for statement in _split_sql(MIGRATIONS[step]):
                    conn.execute(statement)
            conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        row = self.query_one("SELECT version FROM schema_version")
        if row is None:
            raise CorruptDatabaseError(
                f"workspace database {str(self.path)!r} has no schema version row"
            )
        return int(row[0])

    # -- use -------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (idempotent)."""
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Run a read and return all rows; damage is reported as :class:`CorruptDatabaseError`."""
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if _is_locked(exc):
                raise self._locked() from None
            raise
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from None

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        """Run a read and return its first row, or None."""
        rows = self.query(sql, params)
        return rows[0] if rows else None

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: ``BEGIN IMMEDIATE`` (with retry), COMMIT on success, ROLLBACK on error.

        Nested use joins the outer transaction.
        """
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        self._begin()
        self._depth = 1
        try:
            yield self.conn
        except BaseException:
            self._depth = 0
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            raise
        self._depth = 0
        try:
            self.conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and _is_locked(exc):
                raise self._locked() from None
            raise self._corrupt(exc) from None

    def _begin(self) -> None:
        deadline = time.monotonic() + self.lock_timeout_s
        pause = 0.005
        while True:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc):
                    raise WorkspaceError(
                        f"workspace database {str(self.path)!r} cannot be written ({exc}); "
                        "nothing was changed") from None
                if time.monotonic() >= deadline:
                    raise self._locked() from None
                time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, 0.1)
            except sqlite3.DatabaseError as exc:
                raise self._corrupt(exc) from None

    def _locked(self) -> DatabaseLockedError:
        return DatabaseLockedError(
            f"workspace database {str(self.path)!r} stayed locked by another process for "
            f"{self.lock_timeout_s:g} s; nothing was changed, try again when it finishes"
        )


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements (triggers keep their inner ';')."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines():
        stripped = line.split("--", 1)[0].rstrip()
        if not stripped.strip():
            continue
        buffer += stripped + "\n"
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
