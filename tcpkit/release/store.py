"""Content-addressed object store in DVC's layout: ``objects/sha256/ab/cdef...``.

An object's name is the SHA-256 of its bytes, so storing the same bytes twice
stores them once, and any change to a stored file is detectable: every read
re-hashes the bytes and refuses to return an object whose content no longer
matches its name (:class:`CorruptObjectError`). Writes go through
:func:`tcpkit.release.atomic.write_atomic` (temporary file, fsync, rename), so
an object either exists completely under its final name or not at all.
Stored objects are made read-only, as DVC does, to discourage editing in place.

The store knows nothing about versions or retention: which objects are still
needed is decided by :class:`tcpkit.release.workspace.Workspace` (``gc``),
which calls :meth:`ObjectStore.remove` for the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tcpkit.release.atomic import TMP_MARK, fsync_dir, write_atomic
from tcpkit.release.db import WorkspaceError

ALGORITHM = "sha256"
_DIGEST = re.compile(r"^[0-9a-f]{64}\Z")
_CHUNK = 1 << 20


class StoreError(WorkspaceError):
    """Base class of object-store errors (workspace errors: a caller catching those sees these)."""


class InvalidDigestError(StoreError, ValueError):
    """A string that is not a 64-character lowercase hexadecimal SHA-256 digest."""


class MissingObjectError(StoreError, LookupError):
    """The digest is well formed but no object with it is in the store."""

    def __str__(self) -> str:  # LookupError would quote the message
        return str(self.args[0]) if self.args else ""


class CorruptObjectError(StoreError):
    """A stored object whose bytes no longer hash to its name."""


def check_digest(digest: object) -> str:
    """Return ``digest`` if it is a 64-hex SHA-256 digest, else raise :class:`InvalidDigestError`."""
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise InvalidDigestError(
            f"{digest!r} is not a sha256 digest (expected 64 lowercase hexadecimal characters)"
        )
    return digest


def digest_bytes(data: bytes) -> str:
    """SHA-256 of ``data`` as 64 lowercase hexadecimal characters."""
    return hashlib.sha256(data).hexdigest()


def digest_file(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


class ObjectStore:
    """A directory of immutable blobs named by their SHA-256.

    Parameters
    ----------
    root : Path
        The ``objects`` directory (created if missing). Objects live under
        ``root/sha256/<first 2 hex>/<remaining 62 hex>``; temporary files of
        writes in progress sit beside their destination with ``.tcpkit-tmp-``
        in their name and are never listed as objects.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        (self.root / ALGORITHM).mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"ObjectStore({str(self.root)!r})"

    # -- paths -----------------------------------------------------------------------------
    def path_of(self, digest: str) -> Path:
        """Where the object with ``digest`` lives (whether or not it exists)."""
        check_digest(digest)
        return self.root / ALGORITHM / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        """Whether an object named ``digest`` exists (its content is not re-hashed)."""
        return self.path_of(digest).is_file()

    # -- writes ----------------------------------------------------------------------------
    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` and return its digest; storing existing bytes again writes nothing.

        An existing object that fails verification is replaced by the good bytes,
        so a put heals a corrupted copy instead of trusting it.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"put_bytes needs bytes, got {type(data).__name__}")
        data = bytes(data)
        digest = digest_bytes(data)
        path = self.path_of(digest)
        if path.is_file() and self._verifies(path, digest):
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        self._replace_readonly(path)
        write_atomic(path, data, mode=0o444)
        return digest

    def put_file(self, path: Path | str) -> str:
        """Store a file's bytes (streamed, never loaded whole) and return the digest."""
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"cannot store {str(source)!r}: not a file")
        staging = self.root / ALGORITHM
        fd, tmp_name = tempfile.mkstemp(prefix=f".put{TMP_MARK}", dir=staging)
        tmp = Path(tmp_name)
        try:
            h = hashlib.sha256()
            with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
                for chunk in iter(lambda: src.read(_CHUNK), b""):
                    h.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            digest = h.hexdigest()
            final = self.path_of(digest)
            if final.is_file() and self._verifies(final, digest):
                tmp.unlink()
                return digest
            final.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, 0o444)
            self._replace_readonly(final)
            os.replace(tmp, final)
            fsync_dir(final.parent)
            return digest
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def remove(self, digest: str) -> int:
        """Delete an object; returns the bytes freed (0 when it was not there)."""
        path = self.path_of(digest)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only succeeds when empty
        return size

    # -- reads -----------------------------------------------------------------------------
    def get_bytes(self, digest: str) -> bytes:
        """The object's bytes, after checking that they still hash to ``digest``.

        Raises
        ------
        MissingObjectError
            No object with this digest is stored.
        CorruptObjectError
            The stored bytes hash to something else (edited, truncated, bit rot).
        """
        path = self.path_of(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise MissingObjectError(
                f"object {digest} is not in the store {str(self.root)!r}"
            ) from None
        actual = digest_bytes(data)
        if actual != digest:
            raise CorruptObjectError(
                f"object {digest} in {str(self.root)!r} is corrupted: its bytes hash to {actual}"
            )
        return data

    def verify(self, digest: str) -> None:
        """Raise :class:`MissingObjectError` or :class:`CorruptObjectError` unless the object is intact."""
        path = self.path_of(digest)
        if not path.is_file():
            raise MissingObjectError(f"object {digest} is not in the store {str(self.root)!r}")
        actual = digest_file(path)
        if actual != digest:
            raise CorruptObjectError(
                f"object {digest} in {str(self.root)!r} is corrupted: its bytes hash to {actual}"
            )

    def size_of(self, digest: str) -> int:
        """Size in bytes of a stored object (raises :class:`MissingObjectError` if absent)."""
        try:
            return self.path_of(digest).stat().st_size
        except FileNotFoundError:
            raise MissingObjectError(
                f"object {digest} is not in the store {str(self.root)!r}"
            ) from None

    def iter_digests(self) -> Iterator[str]:
        """Every stored object's digest, in sorted order; temporary files are skipped."""
        base = self.root / ALGORITHM
        for prefix_dir in sorted(base.iterdir()):
            if not prefix_dir.is_dir() or len(prefix_dir.name) != 2:
                continue
            for entry in sorted(prefix_dir.iterdir()):
                digest = prefix_dir.name + entry.name
                if entry.is_file() and _DIGEST.match(digest):
                    yield digest

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _verifies(path: Path, digest: str) -> bool:
        try:
            return digest_file(path) == digest
        except OSError:
            return False

    @staticmethod
    def _replace_readonly(path: Path) -> None:
        """Make room for a replacement of a (corrupted) read-only object."""
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path, 0o644)


def copy_object(store: ObjectStore, digest: str, destination: Path) -> None:
    """Verify an object and copy it to ``destination`` atomically ("restore is a copy").

    The copy keeps the mode of the file it replaces (a new file gets the umask's),
    not the read-only mode of the stored object.
    """
    data = store.get_bytes(digest)
    destination.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(destination, data)


__all__ = [
    "ALGORITHM",
    "CorruptObjectError",
    "InvalidDigestError",
    "MissingObjectError",
    "ObjectStore",
    "StoreError",
    "check_digest",
    "copy_object",
    "digest_bytes",
    "digest_file",
]
