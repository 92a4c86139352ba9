"""What a gate run's key covers beyond the notebook: tcpkit's code, the installed world, the kernel.

A run is not executed again when its combined input digest equals that of a recorded
run (passed or failed: :mod:`tcpkit.release.run.reuse`), so the digest must change
whenever anything that can change a metric or a decision changes.
Beside the notebook, parameters, module and gate definition (see
:mod:`tcpkit.release.pipeline`), :func:`environment_inputs` gives four groups:

``tcpkit-source``
    the sha256 of every file of the imported ``tcpkit`` package directory (``.py``
    and any data files, caches aside), sorted by relative path;
``distributions``
    the name and version of every installed distribution (``importlib.metadata``);
``python``
    the interpreter's version string and implementation;
``kernel``
    the Jupyter kernel spec the notebooks run in (name, argv, language, env) from
    ``jupyter_client``'s ``KernelSpecManager``, plus the extra kernel arguments.

Each group has one digest (sha256 of the canonical JSON of its items) and the items
themselves, which the run report lists. Everything is cached per process: file
digests are recomputed only for files whose size or modification time changed, so
an edit is always seen while an unchanged tree costs one ``stat`` per file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SKIP_DIRS = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
_SKIP_SUFFIXES = (".pyc", ".pyo")
_file_cache: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class InputGroup:
    """One group of run-key inputs: its name, its digest and the items it digests."""

    name: str
    digest: str
    items: tuple[tuple[str, str], ...]


def _digest_items(items: tuple[tuple[str, str], ...]) -> str:
    text = json.dumps([list(i) for i in items], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def package_dir() -> Path:
    """The directory of the imported ``tcpkit`` package (what the kernels import too)."""
    import tcpkit

    return Path(tcpkit.__file__).resolve().parent


def _file_digest(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _lock:
        cached = _file_cache.get(key)
    if cached is None:
        cached = hashlib.sha256(path.read_bytes()).hexdigest()
        with _lock:
            _file_cache[key] = cached
    return cached


def source_files(root: Path | None = None) -> tuple[tuple[str, str], ...]:
    """``(relative path, sha256)`` of every file of the package at ``root``, sorted by path."""
    base = package_dir() if root is None else Path(root)
    found: list[tuple[str, str]] = []
    for directory, subdirs, files in os.walk(base):
        subdirs[:] = sorted(d for d in subdirs if d not in _SKIP_DIRS)
        for name in files:
            if name.endswith(_SKIP_SUFFIXES):
                continue
            path = Path(directory) / name
            found.append((path.relative_to(base).as_posix(), _file_digest(path)))
    return tuple(sorted(found))


@functools.cache
def distributions() -> tuple[tuple[str, str], ...]:
    """``(name, version)`` of every installed distribution, sorted by normalised name.

    The two header fields are read from each distribution's metadata file directly:
    ``importlib.metadata`` parses every header with the ``email`` package, which for the
    ~470 distributions on this ``sys.path`` cost 0.6-0.8 s of every ``tcpkit run``. A
    distribution whose file does not give both falls back to ``importlib.metadata``.
    """
    from importlib.metadata import distributions as all_distributions

    seen: dict[str, str] = {}
    for dist in all_distributions():
        name, version = _name_and_version(dist)
        if not name:
            continue
        key = name.lower().replace("_", "-").replace(".", "-")
        seen.setdefault(key, version)  # the first on sys.path is the one imported
    return tuple(sorted(seen.items()))


def _name_and_version(dist: Any) -> tuple[str | None, str]:
    """A distribution's ``Name`` and ``Version`` headers (the metadata file's, before its body)."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO")
    fields: dict[str, str] = {}
    for line in (text or "").splitlines():
        if not line.strip():
            break  # the headers end at the first blank line
        key, sep, value = line.partition(":")
        if sep and key in ("Name", "Version") and key not in fields:
            fields[key] = value.strip()
        if len(fields) == 2:
            return fields["Name"], fields["Version"]
    metadata = dist.metadata
    return (metadata["Name"] if metadata is not None else None), str(dist.version)


def python_items() -> tuple[tuple[str, str], ...]:
    """The interpreter's implementation and full version string."""
    return (("implementation", platform.python_implementation()), ("version", sys.version))


@functools.cache
def kernel_items(kernel: str, extra_arguments: tuple[str, ...] = ()) -> tuple[tuple[str, str], ...]:
    """The kernel spec ``kernel`` resolves to: name, argv, language, env, extra arguments.

    Raises
    ------
    ValueError
        No kernel of that name is installed.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(kernel)
    except NoSuchKernel:
        raise ValueError(f"no Jupyter kernel named {kernel!r} is installed "
                         "(python -m ipykernel install --user)") from None
    return (
        ("name", kernel),
        ("argv", json.dumps(list(spec.argv))),
        ("language", str(spec.language)),
        ("env", json.dumps(dict(spec.env or {}), sort_keys=True)),
        ("extra arguments", json.dumps(list(extra_arguments))),
    )


def environment_inputs(kernel: str, extra_arguments: tuple[str, ...] = (),
                       source_root: Path | None = None) -> tuple[InputGroup, ...]:
    """The four environment groups of the run key (see the module docstring)."""
    groups = (
        ("tcpkit-source", source_files(source_root)),
        ("distributions", distributions()),
        ("python", python_items()),
        ("kernel", kernel_items(kernel, tuple(extra_arguments))),
    )
    return tuple(InputGroup(name, _digest_items(items), items) for name, items in groups)
