"""Researcher keys: private key files, the pinned trust list, and the hybrid signer.

Each researcher (or runner) NAME owns one key pair per algorithm in
:data:`~tcpkit.release.algorithms.REQUIRED_ALGORITHMS` (hybrid Ed25519 + ML-DSA-65,
algorithm-agile). Private keys live outside the repository in :func:`keys_dir`
(``$TCPKIT_KEYS``, default ``~/.config/tcpkit/keys``) as PKCS#8 PEM files
``NAME.ed25519.pem`` and ``NAME.mldsa65.pem``, mode 0600 in a 0700 directory,
optionally encrypted with a passphrase. A key file that group or others can
read is refused on load, like ssh does, with the ``chmod`` that fixes it.

The public half is one JSON record, ``NAME.pub``, holding both public keys
(PEM), their fingerprints (sha256 of the raw public key) and their DSSE keyids.
It is written beside the private keys; a copy in ``.tcpkit/trust/NAME.pub``
makes NAME trusted on that workspace. The set of those copies is the pinned
trust list (:class:`TrustList`); it is committed to the repository, so trusting
a new researcher is a reviewed change, made with ``tcpkit trust add NAME.pub``
by an owner (audited). Records are checked on load: a fingerprint or keyid that
does not match its key is refused.

Trust is granted, not taken: :func:`runner_signer` lets the pipeline's runner
trust itself only on a workspace whose trust list is still empty (the first
run of a fresh clone); once a trust list exists, an unknown key is refused with
the command that adds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from tcpkit.release.algorithms import (
    ALGORITHMS,
    REQUIRED_ALGORITHMS,
    Algorithm,
    fingerprint,
    get_algorithm,
    public_pem,
    raw_public_bytes,
)
from tcpkit.release.atomic import fsync_dir
from tcpkit.release.names import COMPONENT_PATTERN

TRUST_FORMAT = "tcpkit-trust/v1"
"""Value of the ``format`` field of every ``.tcpkit/trust/NAME.pub`` record."""

_NAME = re.compile(COMPONENT_PATTERN)  # key names follow the component-name rule


class KeyError_(ValueError):  # noqa: N801 - trailing underscore keeps it apart from the builtin
    """A key name, key file or trust record that cannot be used; the message names it and the fix."""


class UntrustedKeyError(KeyError_):
    """A key that is not on the workspace's trust list (or differs from the record there)."""


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid key name (``[a-z][a-z0-9-]{0,63}``), else raise KeyError_."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise KeyError_(
            f"key name {name!r} is invalid: use a lowercase letter followed by up to 63 "
            "lowercase letters, digits or '-'"
        )
    return name


def keys_dir() -> Path:
    """Directory of private keys: ``$TCPKIT_KEYS`` if set, else ``~/.config/tcpkit/keys``."""
    env = os.environ.get("TCPKIT_KEYS")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".config" / "tcpkit" / "keys"


def _resolve_keys_dir(directory: Path | None) -> Path:
    return Path(directory) if directory is not None else keys_dir()


def keyid_for(algorithm: Algorithm, raw_public: bytes) -> str:
    """DSSE keyid of a public key: sha256 of the canonical JSON of keytype, scheme and raw key.

    This is securesystemslib's ``compute_default_keyid``; for Ed25519 (keytype and scheme
    ``"ed25519"``, public value the hex of the 32 raw bytes) it is exactly the keyid
    securesystemslib gives the same key, so its ``Envelope.verify`` finds our signature.
    The keyid is a hint only: verification never trusts it.
    """
    document = {
        "keytype": algorithm.keytype,
        "scheme": algorithm.scheme,
        "keyval": {"public": raw_public.hex()},
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PublicKey:
    """One trusted public key of one algorithm.

    Attributes
    ----------
    algorithm : str
        Algorithm name (a key of :data:`~tcpkit.release.algorithms.ALGORITHMS`).
    raw : bytes
        Raw public key bytes.
    fingerprint : str
        ``sha256:<hex>`` of ``raw``.
    keyid : str
        DSSE keyid written next to signatures made with the matching private key.
    """

    algorithm: str
    raw: bytes = field(repr=False)
    fingerprint: str
    keyid: str

    @classmethod
    def from_key(cls, algorithm: Algorithm, public_key: Any) -> PublicKey:
        """Describe a pyca/cryptography public key object."""
        raw = raw_public_bytes(public_key)
        return cls(algorithm.name, raw, fingerprint(public_key), keyid_for(algorithm, raw))

    @property
    def key(self) -> Any:
        """The pyca/cryptography public key object."""
        return get_algorithm(self.algorithm).public_key_from_raw(self.raw)


@dataclass(frozen=True)
class PublicKeyRecord:
    """The public half of one researcher's hybrid key: what ``NAME.pub`` holds.

    Attributes
    ----------
    name : str
        The researcher or runner name.
    keys : tuple of PublicKey
        One key per algorithm, in :data:`~tcpkit.release.algorithms.ALGORITHMS` order.
    """

    name: str
    keys: tuple[PublicKey, ...]

    def key(self, algorithm: str) -> PublicKey:
        """The public key of ``algorithm``; KeyError_ if this record has none."""
        for key in self.keys:
            if key.algorithm == algorithm:
                return key
        raise KeyError_(f"trusted key {self.name!r} has no {algorithm} public key")

    @property
    def algorithms(self) -> tuple[str, ...]:
        """Algorithm names of the keys, in order."""
        return tuple(key.algorithm for key in self.keys)

    def to_json(self) -> str:
        """The ``NAME.pub`` file content (JSON, sorted keys, trailing newline)."""
        document = {
            "format": TRUST_FORMAT,
            "name": self.name,
            "keys": [
                {
                    "algorithm": key.algorithm,
                    "fingerprint": key.fingerprint,
                    "keyid": key.keyid,
                    "public_key_pem": public_pem(key.key),
                }
                for key in self.keys
            ],
        }
        return json.dumps(document, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str) -> PublicKeyRecord:
        """Parse and check a ``NAME.pub`` record; KeyError_ naming ``source`` when it is wrong.

        Every public key is re-derived from its PEM; the recorded fingerprint and keyid
        must match what that key gives, and every required algorithm must be present.
        """
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise KeyError_(f"trust record {source} is not valid JSON: {exc}") from None
        if not isinstance(document, dict) or document.get("format") != TRUST_FORMAT:
            raise KeyError_(f"trust record {source} is not a {TRUST_FORMAT} record")
        name = document.get("name")
        entries = document.get("keys")
        if not isinstance(name, str) or not isinstance(entries, list):
            raise KeyError_(f"trust record {source} needs a string 'name' and a list 'keys'")
        validate_name(name)
        keys: list[PublicKey] = []
        for entry in entries:
            keys.append(_parse_key_entry(entry, source))
        names = [key.algorithm for key in keys]
        if len(set(names)) != len(names):
            raise KeyError_(f"trust record {source} lists an algorithm twice: {names}")
        missing = [alg for alg in REQUIRED_ALGORITHMS if alg not in names]
        if missing:
            raise KeyError_(f"trust record {source} lacks required key(s): {', '.join(missing)}")
        return cls(name, tuple(keys))


def _parse_key_entry(entry: Any, source: str) -> PublicKey:
    if not isinstance(entry, dict):
        raise KeyError_(f"trust record {source}: each key must be an object")
    try:
        algorithm = get_algorithm(str(entry.get("algorithm")))
        public_key = algorithm.public_key_from_pem(str(entry.get("public_key_pem")).encode())
    except ValueError as exc:
        raise KeyError_(f"trust record {source}: {exc}") from None
    key = PublicKey.from_key(algorithm, public_key)
    if entry.get("fingerprint") != key.fingerprint or entry.get("keyid") != key.keyid:
        raise KeyError_(
            f"trust record {source}: the {algorithm.name} fingerprint or keyid does not match "
            "its public key (the record was edited)"
        )
    return key


@dataclass(frozen=True)
class TrustList:
    """The pinned trust list: every ``.tcpkit/trust/*.pub`` record.

    Attributes
    ----------
    records : tuple of PublicKeyRecord
        Trusted researchers, sorted by name.
    """

    records: tuple[PublicKeyRecord, ...] = ()

    @classmethod
    def load(cls, trust_dir: Path) -> TrustList:
        """Read every ``*.pub`` in ``trust_dir`` (a missing directory is an empty list).

        A record that fails its checks, or whose name differs from its file name, raises
        KeyError_ naming the file: a broken trust list must not silently shrink.
        """
        trust_dir = Path(trust_dir)
        if not trust_dir.is_dir():
            return cls(())
        records = []
        for path in sorted(trust_dir.glob("*.pub")):
            record = PublicKeyRecord.from_json(path.read_text(encoding="utf-8"), source=str(path))
            if record.name != path.stem:
                raise KeyError_(f"trust record {path} names {record.name!r}, not {path.stem!r}")
            records.append(record)
        return cls(tuple(records))

    @classmethod
    def of(cls, records: Iterable[PublicKeyRecord]) -> TrustList:
        """A trust list from records in memory (tests, notebooks)."""
        return cls(tuple(sorted(records, key=lambda record: record.name)))

    def __iter__(self) -> Iterator[PublicKeyRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def names(self) -> tuple[str, ...]:
        """Trusted names, sorted."""
        return tuple(record.name for record in self.records)

    def get(self, name: str) -> PublicKeyRecord | None:
        """The trusted record of ``name``, or None when ``name`` is not trusted."""
        for record in self.records:
            if record.name == name:
                return record
        return None


@dataclass(frozen=True)
class HybridSigner:
    """One researcher's private keys, one per algorithm: signs with all of them.

    Attributes
    ----------
    name : str
        The key name.
    private_keys : tuple of (str, key)
        ``(algorithm name, pyca/cryptography private key)`` pairs.
    """

    name: str
    private_keys: tuple[tuple[str, Any], ...] = field(repr=False)

    @classmethod
    def generate(cls, name: str) -> HybridSigner:
        """New keys for every required algorithm, in memory only (nothing is written)."""
        validate_name(name)
        return cls(name, tuple((alg, get_algorithm(alg).generate()) for alg in REQUIRED_ALGORITHMS))

    def public_record(self) -> PublicKeyRecord:
        """The public half, as written to the trust list."""
        keys = tuple(
            PublicKey.from_key(get_algorithm(alg), key.public_key())
            for alg, key in self.private_keys
        )
        return PublicKeyRecord(self.name, keys)

    def sign(self, message: bytes) -> list[tuple[str, bytes]]:
        """``(keyid, signature)`` for each algorithm, over ``message`` (the DSSE PAE)."""
        out = []
        for alg_name, key in self.private_keys:
            algorithm = get_algorithm(alg_name)
            keyid = keyid_for(algorithm, raw_public_bytes(key.public_key()))
            out.append((keyid, algorithm.sign(key, message)))
        return out


# --- files ------------------------------------------------------------------------------------


def private_key_path(name: str, algorithm: Algorithm, directory: Path) -> Path:
    """Path of the private key file of ``name`` for ``algorithm`` inside ``directory``."""
    return directory / f"{name}.{algorithm.file_tag}.pem"


def trust_path(name: str, trust_dir: Path) -> Path:
    """Path of the public record of ``name`` in the trust directory."""
    return Path(trust_dir) / f"{name}.pub"


def public_record_path(name: str, directory: Path | None = None) -> Path:
    """Path of the public record ``NAME.pub`` beside the private keys (what ``trust add`` takes)."""
    return _resolve_keys_dir(directory) / f"{name}.pub"


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` atomically, refusing to replace an existing file.

    The data goes to a temporary file created with ``O_EXCL`` and ``mode`` (so it is never
    readable by others, whatever the umask allows), is fsynced, and is then hard-linked to
    ``path``; ``link`` fails if ``path`` exists, which makes "no overwrite" race-free.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise KeyError_(f"{path} already exists; tcpkit never overwrites keys") from None
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _ensure_private_dir(directory: Path) -> None:
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
        os.chmod(directory, 0o700)


def init_keys(
    name: str,
    *,
    trust_dir: Path | None,
    keys_dir: Path | None = None,
    passphrase: bytes | None = None,
) -> PublicKeyRecord:
    """Create the hybrid key pair ``name``: private keys and ``NAME.pub`` in ``keys_dir``.

    Parameters
    ----------
    name : str
        Key name, ``[a-z][a-z0-9-]{0,63}``.
    trust_dir : Path or None
        A trust directory (``ROOT/.tcpkit/trust``, created if missing) that also
        receives ``NAME.pub``, which trusts the key there; None writes no trust
        record (``tcpkit keys init`` does that: trust is granted by an owner).
    keys_dir : Path, optional
        Private key directory; default :func:`keys_dir`. Created with mode 0700.
    passphrase : bytes, optional
        If given, the private keys are encrypted with it (PKCS#8, best available encryption).

    Returns
    -------
    PublicKeyRecord
        What was written to ``trust_dir/NAME.pub``.

    Raises
    ------
    KeyError_
        Invalid name, empty passphrase, or any of the three files already exists
        (nothing is written then).
    """
    validate_name(name)
    if passphrase is not None and not passphrase:
        raise KeyError_("the passphrase is empty; omit it for unencrypted keys")
    directory = _resolve_keys_dir(keys_dir)
    trust_dir = Path(trust_dir) if trust_dir is not None else None
    targets = [private_key_path(name, get_algorithm(alg), directory) for alg in REQUIRED_ALGORITHMS]
    targets.append(public_record_path(name, directory))
    if trust_dir is not None:
        targets.append(trust_path(name, trust_dir))
    existing = [str(path) for path in targets if path.exists()]
    if existing:
        raise KeyError_(
            f"key {name!r} already exists ({', '.join(existing)}); tcpkit never overwrites keys"
        )
    signer = HybridSigner.generate(name)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    _ensure_private_dir(directory)
    if trust_dir is not None:
        trust_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    private_paths = targets[: len(REQUIRED_ALGORITHMS)]
    try:
        for (_alg, key), path in zip(signer.private_keys, private_paths, strict=True):
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
            )
            _write_new(path, pem, 0o600)
            written.append(path)
        record = signer.public_record()
        for path in targets[len(REQUIRED_ALGORITHMS):]:
            _write_new(path, record.to_json().encode("utf-8"), 0o644)
            written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return record


def _read_private_key(path: Path, algorithm: Algorithm, passphrase: bytes | None) -> Any:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise KeyError_(
            f"private key {path} does not exist; create it with 'tcpkit keys init NAME'"
        ) from None
    if mode & 0o077:
        raise KeyError_(
            f"private key {path} is readable or writable by group or others "
            f"(mode {mode & 0o777:o}); refusing to use it. Fix with: chmod 600 {path}"
        )
    data = path.read_bytes()
    try:
        key = serialization.load_pem_private_key(data, passphrase)
    except TypeError:
        if passphrase is None:
            raise KeyError_(
                f"private key {path} is encrypted: give its passphrase (--passphrase-env VAR)"
            ) from None
        raise KeyError_(f"private key {path} is not encrypted: give no passphrase") from None
    except ValueError:
        raise KeyError_(
            f"private key {path} cannot be read (wrong passphrase or damaged file)"
        ) from None
    if not algorithm.is_private_key(key):
        raise KeyError_(f"private key {path} is a {type(key).__name__}, not {algorithm.name}")
    return key


def load_signer(
    name: str, *, keys_dir: Path | None = None, passphrase: bytes | None = None
) -> HybridSigner:
    """Load the private keys of ``name``; refuses files readable by group or others.

    Raises
    ------
    KeyError_
        Invalid name; missing, unreadable, wrongly typed or too-open key file (the message
        says ``chmod 600 <path>``); wrong or missing passphrase.
    """
    validate_name(name)
    directory = _resolve_keys_dir(keys_dir)
    keys = []
    for alg_name in REQUIRED_ALGORITHMS:
        algorithm = ALGORITHMS[alg_name]
        path = private_key_path(name, algorithm, directory)
        keys.append((alg_name, _read_private_key(path, algorithm, passphrase)))
    return HybridSigner(name, tuple(keys))


def ensure_signer(
    name: str,
    *,
    trust_dir: Path,
    keys_dir: Path | None = None,
    passphrase: bytes | None = None,
) -> tuple[HybridSigner, bool]:
    """The signer ``name``, creating its keys on first use; ``(signer, created)``.

    If the keys exist, they are loaded and their public record is added to ``trust_dir``
    when absent. A record already there that differs from the keys raises KeyError_: a
    pinned trust entry is never replaced silently. This trusts the key unconditionally,
    so it is for tests and scratch trust directories; the pipeline uses
    :func:`runner_signer`, which only trusts itself on an empty trust list.
    """
    validate_name(name)
    directory = _resolve_keys_dir(keys_dir)
    first = private_key_path(name, get_algorithm(REQUIRED_ALGORITHMS[0]), directory)
    if not first.exists():
        init_keys(name, trust_dir=trust_dir, keys_dir=directory, passphrase=passphrase)
        return load_signer(name, keys_dir=directory, passphrase=passphrase), True
    signer = load_signer(name, keys_dir=directory, passphrase=passphrase)
    record = signer.public_record()
    path = trust_path(name, trust_dir)
    if path.exists():
        pinned = PublicKeyRecord.from_json(path.read_text(encoding="utf-8"), source=str(path))
        if pinned != record:
            raise KeyError_(
                f"trust record {path} does not match the private keys of {name!r} in "
                f"{directory}; restore the right keys or review the trust change by hand"
            )
    else:
        Path(trust_dir).mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(KeyError_):  # written concurrently; the next load re-checks it
            _write_new(path, record.to_json().encode("utf-8"), 0o644)
    return signer, False


def export_public(signer: HybridSigner, directory: Path | None = None) -> Path:
    """Write ``NAME.pub`` of ``signer`` beside its private keys (kept if already right); its path.

    A ``NAME.pub`` there that describes other keys raises KeyError_: it is never replaced.
    """
    path = public_record_path(signer.name, directory)
    record = signer.public_record()
    if path.exists():
        if PublicKeyRecord.from_json(path.read_text(encoding="utf-8"), source=str(path)) != record:
            raise KeyError_(f"{path} describes other keys than the private keys of {signer.name!r}")
        return path
    with contextlib.suppress(KeyError_):  # written concurrently: the same bytes
        _write_new(path, record.to_json().encode("utf-8"), 0o644)
    return path


def check_trusted(signer: HybridSigner, trust: TrustList, trust_dir: Path,
                  keys_dir: Path | None = None) -> PublicKeyRecord:
    """The trusted record of ``signer``; UntrustedKeyError naming the fix when there is none.

    The record must list exactly the signer's public keys: a trust entry of the same
    name made for other keys refuses the signer as well.
    """
    record = trust.get(signer.name)
    if record is None:
        pub = public_record_path(signer.name, keys_dir)
        raise UntrustedKeyError(
            f"key {signer.name!r} is not on the trust list {Path(trust_dir)}: an owner of a "
            f"component adds it with 'tcpkit trust add {pub} --as OWNER'"
        )
    if record != signer.public_record():
        raise UntrustedKeyError(
            f"the private keys of {signer.name!r} in {_resolve_keys_dir(keys_dir)} do not match "
            f"the trusted record {trust_path(signer.name, trust_dir)}; use the keys that record "
            "was made from, or have an owner review the trust change"
        )
    return record


def runner_signer(name: str, *, trust_dir: Path, keys_dir: Path | None = None
                  ) -> tuple[HybridSigner, str | None]:
    """The pipeline runner's signer, creating its local key on first use; ``(signer, note)``.

    Trust is granted, not taken: on a workspace whose trust list is empty the runner
    key is trusted (its record is written to ``trust_dir``) and ``note`` says so; on a
    workspace with a trust list, a runner that is not on it raises UntrustedKeyError
    with the ``tcpkit trust add`` command that an owner runs. ``note`` is None when the
    runner was already trusted and nothing was created.
    """
    validate_name(name)
    directory = _resolve_keys_dir(keys_dir)
    first = private_key_path(name, get_algorithm(REQUIRED_ALGORITHMS[0]), directory)
    created = not first.exists()
    if created:
        init_keys(name, trust_dir=None, keys_dir=directory)
    signer = load_signer(name, keys_dir=directory)
    pub = export_public(signer, directory)
    trust = TrustList.load(trust_dir)
    made = f"created a signing key for runner {name!r} in {directory}; " if created else ""
    if len(trust) == 0:
        path = trust_path(name, trust_dir)
        Path(trust_dir).mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(KeyError_):  # written concurrently; checked just below
            _write_new(path, signer.public_record().to_json().encode("utf-8"), 0o644)
        check_trusted(signer, TrustList.load(trust_dir), trust_dir, directory)
        return signer, (
            f"{made}the workspace had no trust list yet, so runner {name!r} is its first "
            f"trusted key ({path}): commit it so that others trust this runner's attestations"
        )
    try:
        check_trusted(signer, trust, trust_dir, directory)
    except UntrustedKeyError:
        raise UntrustedKeyError(
            f"{made}runner key {name!r} is not on the trust list {Path(trust_dir)}, so the "
            f"pipeline refuses to sign with it: an owner of a component runs 'tcpkit trust add "
            f"{pub} --as OWNER' (or set TCPKIT_RUNNER to a trusted runner's name)"
        ) from None
    return signer, None


def list_private_keys(directory: Path | None = None) -> list[str]:
    """Names that have a complete set of private key files in ``directory``."""
    directory = Path(directory) if directory is not None else keys_dir()
    if not directory.is_dir():
        return []
    names = []
    for path in sorted(directory.glob(f"*.{ALGORITHMS[REQUIRED_ALGORITHMS[0]].file_tag}.pem")):
        name = path.name.split(".", 1)[0]
        if _NAME.fullmatch(name) and all(
            private_key_path(name, get_algorithm(alg), directory).exists()
            for alg in REQUIRED_ALGORITHMS
        ):
            names.append(name)
    return names
