"""Promotion: a notebook's export cells become a module; PRODUCTION freezes and signs it.

The module of a component is the code of its cells whose first line is
``#| export`` (nbdev's convention) or that carry the ``export`` tag, in
notebook order, under a generated header that names the notebook, the cells
and the notebook's digest. Passing PRODUCTION freezes it:

* ``production/<component>.py``: the module;
* ``production/<component>.model.npz``: the fitted state the PRODUCTION run recorded
  with :func:`tcpkit.release.metrics.record_model` (numpy arrays, no pickle), when it
  recorded one;
* ``production/<component>.dsse.json``: a DSSE envelope over one in-toto statement (a
  PASSED PRODUCTION verification summary) whose subjects are the module and the model;
* ``production/<component>.chain.intoto.jsonl``: the signed statements of the four
  gate runs that led here (:mod:`tcpkit.release.chain`), so the chain verifies offline.

All are written atomically, with the module and model backed up in the object
store and pinned.

:func:`load_frozen` (the module), :func:`load_model` (the arrays) and
:func:`load_detector` (``module.from_model(arrays)``, a ready detector) are the only
ways production code should use a frozen component: each reads the files once,
verifies every subject against the signed statement and the pinned trust list, and
uses exactly the bytes it verified, so a file swapped between the check and the use
cannot slip through. Tampering with either file refuses all three.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from tcpkit.release.atomic import write_atomic
from tcpkit.release.names import check_component
from tcpkit.release.project import Project

PRODUCTION_DIR = "production"
ENVELOPE_SUFFIX = ".dsse.json"
MODEL_SUFFIX = ".model.npz"
CHAIN_SUFFIX = ".chain.intoto.jsonl"
MODULE_PREFIX = "tcpkit_frozen"
_DIRECTIVE = re.compile(r"^\s*#\s*\|\s*export\s*$")


class PromotionError(ValueError):
    """A notebook cannot be turned into a module, or a module cannot be frozen."""


class FrozenModuleError(ImportError):
    """A frozen module was refused: missing, unsigned, untrusted or tampered (the reason says which)."""


@dataclass(frozen=True)
class ExportCell:
    """One exported cell: its id, its position and its code without the directive line."""

    cell_id: str
    index: int
    source: str


@dataclass(frozen=True)
class FrozenArtifact:
    """A frozen module on disk: paths, the module's sha256 and the envelope's sha256."""

    component: str
    module_path: Path
    envelope_path: Path
    digest: str
    envelope_digest: str
    model_digest: str | None = None


def export_cells(notebook: Mapping[str, Any]) -> list[ExportCell]:
    """The cells marked ``#| export`` (first line) or tagged ``export``, in order."""
    cells: list[ExportCell] = []
    for index, cell in enumerate(notebook.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(source)
        lines = source.splitlines()
        tags = cell.get("metadata", {}).get("tags", []) or []
        marked = bool(lines) and bool(_DIRECTIVE.match(lines[0]))
        if not marked and "export" not in tags:
            continue
        body = "\n".join(lines[1:] if marked else lines).strip("\n")
        cell_id = str(cell.get("id") or f"cell-{index}")
        cells.append(ExportCell(cell_id, index, body))
    return cells


def build_module(notebook_path: str | Path, *, display_name: str | None = None) -> bytes:
    """The module of a notebook: generated header plus its export cells.

    Parameters
    ----------
    notebook_path : str or Path
        The source notebook.
    display_name : str, optional
        How the header names the notebook (default: its file name), e.g.
        ``notebooks/statistics.ipynb``.

    Returns
    -------
    bytes
        UTF-8 Python source; empty (``b""``) when the notebook exports nothing,
        so that a missing module is visible instead of an empty one.

    Raises
    ------
    PromotionError
        The notebook cannot be read or an export cell is not valid Python.
    """
    import nbformat  # here, not at import: load_frozen in every kernel must stay cheap

    path = Path(notebook_path)
    try:
        raw = path.read_bytes()
        notebook = nbformat.reads(raw.decode("utf-8"), as_version=4)
    except (OSError, UnicodeDecodeError) as exc:
        raise PromotionError(f"cannot read notebook {path}: {exc}") from None
    except Exception as exc:  # nbformat raises several unrelated types for bad JSON
        raise PromotionError(f"notebook {path} is not a valid notebook: {exc}") from None
    cells = export_cells(notebook)
    if not cells:
        return b""
    name = display_name or path.name
    digest = hashlib.sha256(raw).hexdigest()
    header = [
        f"# AUTOGENERATED by tcpkit from {name}: generated, do not edit.",
        "# Edit the notebook's '#| export' cells instead; the pipeline regenerates this file.",
        f"# Notebook sha256: {digest}",
        f"# Cells: {', '.join(c.cell_id for c in cells)}",
    ]
    parts = ["\n".join(header), ""]
    for cell in cells:
        try:
            compile(cell.source, f"{name}#{cell.cell_id}", "exec")
        except SyntaxError as exc:
            raise PromotionError(
                f"export cell {cell.cell_id} (cell {cell.index}) of {name} is not valid Python: "
                f"{exc.msg} (line {exc.lineno})"
            ) from None
        parts.append(f"# --- cell {cell.cell_id} ---\n{cell.source}\n")
    return "\n".join(parts).encode("utf-8")


def production_paths(root: Path | Project, component: str) -> tuple[Path, Path]:
    """``(production/<component>.py, production/<component>.dsse.json)`` under ``root``."""
    project = Project.at(root)
    return project.frozen_module(component), project.frozen_envelope(component)


def model_path(root: Path | Project, component: str) -> Path:
    """``production/<component>.model.npz`` under ``root``."""
    return Project.at(root).frozen_model(component)


def chain_path(root: Path | Project, component: str) -> Path:
    """``production/<component>.chain.intoto.jsonl`` under ``root``."""
    return Project.at(root).frozen_chain(component)


def freeze(
    root: str | Path,
    component: str,
    module: bytes,
    *,
    signer: Any,
    policy_uri: str,
    policy_digest: str,
    inputs: Mapping[str, str],
    verifier_id: str,
    model: bytes | None = None,
    chain: bytes | None = None,
    backup: Callable[[bytes], str] | None = None,
    pin: Callable[[str, str], None] | None = None,
) -> FrozenArtifact:
    """Freeze ``module`` (and ``model``) under ``production/`` with their signed attestation.

    The module's and the model's bytes are backed up first (``backup`` returns their
    digest, e.g. ``ObjectStore.put_bytes``) and pinned (``pin(digest, reason)``), then
    the envelope, the chain, the model and the module are written atomically, the
    envelope first, so that a reader never sees new files beside an old attestation
    that would wrongly verify them; any mismatch is refused by :func:`load_frozen`.
    Without a ``model`` a stale ``production/<component>.model.npz`` is removed.

    Parameters
    ----------
    inputs : mapping of str to str
        Input attestations, URI -> sha256; the pipeline names the PRODUCTION run's
        summary statement here (``tcpkit:statement/<component>/PRODUCTION``).
    model : bytes, optional
        The ``.npz`` bytes of the fitted model (a second subject of the statement).
    chain : bytes, optional
        The four gate bundles (``.chain.intoto.jsonl``) that led to this freeze.

    Raises
    ------
    PromotionError
        An empty module (the notebook exports nothing), or a model that does not load
        without pickle.
    """
    from tcpkit.release.attestation import frozen_model_subject_name
    from tcpkit.release.metrics import MetricError, load_model_bytes
    from tcpkit.release.signing import (
        dump_envelope,
        frozen_subject_name,
        make_statement,
        sign_statement,
    )

    check_component(component)
    if not module:
        raise PromotionError(
            f"component {component!r} exports nothing: mark its module cells with '#| export'"
        )
    digest = hashlib.sha256(module).hexdigest()
    model_digest = hashlib.sha256(model).hexdigest() if model is not None else None
    if model is not None:
        try:
            load_model_bytes(model, f"the model of {component}")
        except MetricError as exc:
            raise PromotionError(str(exc)) from None
    if backup is not None:
        for data, expected, what in ((module, digest, f"production/{component}.py"),
                                     (model, model_digest, f"production/{component}{MODEL_SUFFIX}")):
            if data is None:
                continue
            stored = backup(data)
            if stored != expected:
                raise PromotionError(f"backup of {what} returned digest {stored}, expected {expected}")
            if pin is not None:
                pin(stored, f"frozen {what}")
    extra = {frozen_model_subject_name(component): model_digest} if model_digest else {}
    statement = make_statement(
        frozen_subject_name(component),
        digest,
        gate="PRODUCTION",
        policy_uri=policy_uri,
        policy_digest=policy_digest,
        inputs=inputs,
        passed=True,
        verifier_id=verifier_id,
        resource_uri=f"tcpkit:component/{component}",
        extra_subjects=extra,
    )
    envelope = sign_statement(statement, [signer])
    envelope_bytes = dump_envelope(envelope)
    module_file, envelope_path = production_paths(Path(root), component)
    module_file.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(envelope_path, envelope_bytes, mode=0o644)
    if chain is not None:
        write_atomic(chain_path(Path(root), component), chain, mode=0o644)
    model_file = model_path(Path(root), component)
    if model is not None:
        write_atomic(model_file, model, mode=0o644)
    elif model_file.exists() or model_file.is_symlink():
        model_file.unlink()
    write_atomic(module_file, module, mode=0o644)
    return FrozenArtifact(
        component, module_file, envelope_path, digest, hashlib.sha256(envelope_bytes).hexdigest(),
        model_digest,
    )


def find_root(start: str | Path | None = None) -> Path:
    """The project root: ``$TCPKIT_ROOT``, else the nearest ancestor of ``start`` (default
    the working directory) holding ``.tcpkit`` or ``production``."""
    project = Project.find(start)
    if project is not None:
        return project.root
    here = Path(start if start is not None else os.getcwd()).resolve()
    raise FrozenModuleError(
        f"no tcpkit project (a directory with .tcpkit/ or production/) at or above {here}; "
        "set TCPKIT_ROOT"
    )


@dataclass(frozen=True)
class VerifiedComponent:
    """The verified bytes of a frozen component (read once, checked, then used)."""

    component: str
    module: bytes
    model: bytes | None
    statement: dict[str, Any]
    module_path: Path


def verify_component(component: str, root: str | Path | None = None) -> VerifiedComponent:
    """Read and verify every frozen file of ``component``: module, model, attestation.

    Raises
    ------
    FrozenModuleError
        With the reason: no such module, no attestation, untrusted or bad signature,
        a statement that is not a PASSED PRODUCTION summary, a module or model whose
        digest differs from the signed one, a model the statement does not name.
    """
    from tcpkit.release.attestation import verify_frozen_files
    from tcpkit.release.signing import TrustList, VerificationError

    check_component(component)
    base = find_root() if root is None else Path(root)
    module_file, envelope_path = production_paths(base, component)
    for path, what in ((module_file, "frozen module"), (envelope_path, "attestation")):
        if path.is_symlink() or not path.is_file():
            raise FrozenModuleError(
                f"refusing to load {component!r}: {what} {path} does not exist or is not a regular file"
                + (" (has the component passed PRODUCTION?)" if what == "frozen module" else "")
            )
    try:
        trust = TrustList.load(Project.at(base).trust_dir)
        files = verify_frozen_files(base, component, trust)
    except VerificationError as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        raise FrozenModuleError(f"refusing to load {component!r} ({module_file}): {reason}") from None
    except ValueError as exc:  # a broken trust list
        raise FrozenModuleError(f"refusing to load {component!r} ({module_file}): {exc}") from None
    return VerifiedComponent(component, files.module, files.model, files.statement, module_file)


def verify_frozen(component: str, root: str | Path | None = None) -> tuple[bytes, dict[str, Any]]:
    """Read and verify a frozen component (:func:`verify_component`); return
    ``(module bytes, verified statement)``."""
    verified = verify_component(component, root)
    return verified.module, verified.statement


def _import(verified: VerifiedComponent) -> ModuleType:
    name = f"{MODULE_PREFIX}.{verified.component}"
    spec = importlib.util.spec_from_loader(name, loader=None, origin=str(verified.module_path))
    if spec is None:  # pragma: no cover - spec_from_loader only fails without a name
        raise FrozenModuleError(f"cannot create a module spec for {name}")
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(verified.module_path)
    module.__dict__["__tcpkit_statement__"] = verified.statement
    code = compile(verified.module, str(verified.module_path), "exec")
    previous = sys.modules.get(name)
    sys.modules[name] = module  # dataclasses and pickling look the module up while it runs
    try:
        exec(code, module.__dict__)
    except BaseException:
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
        raise
    return module


def _arrays(verified: VerifiedComponent) -> dict[str, Any]:
    from tcpkit.release.metrics import MetricError, load_model_bytes

    if verified.model is None:
        raise FrozenModuleError(
            f"component {verified.component!r} froze no model: its notebook's PRODUCTION run did not "
            "record one with tcpkit.release.metrics.record_model(arrays)"
        )
    try:
        return load_model_bytes(verified.model, f"production/{verified.component}{MODEL_SUFFIX}")
    except MetricError as exc:
        raise FrozenModuleError(f"refusing to load the model of {verified.component!r}: {exc}") from None


def load_frozen(component: str, root: str | Path | None = None) -> ModuleType:
    """Import the frozen module of ``component`` after verifying every frozen file.

    The bytes are read once, verified (signatures against ``.tcpkit/trust``, a PASSED
    PRODUCTION statement, the sha256 of the module and of the model against the signed
    subjects) and then executed from memory as module ``tcpkit_frozen.<component>``;
    the file is not read again after verification.

    Parameters
    ----------
    component : str
        Component name, e.g. ``"statistics"``.
    root : str or Path, optional
        Project root; default ``$TCPKIT_ROOT`` or the nearest ancestor of the
        working directory with ``.tcpkit/`` or ``production/``.

    Raises
    ------
    FrozenModuleError
        The module or model is missing, unsigned, untrusted or tampered; nothing is imported.
    """
    return _import(verify_component(component, root))


def load_model(component: str, root: str | Path | None = None) -> dict[str, Any]:
    """The frozen model of ``component``: its arrays, loaded with ``allow_pickle=False``.

    Verifies every frozen file first, like :func:`load_frozen`.

    Raises
    ------
    FrozenModuleError
        A frozen file fails verification, or the component froze no model.
    """
    return _arrays(verify_component(component, root))


def load_detector(component: str, root: str | Path | None = None) -> Any:
    """A ready detector: ``from_model(arrays)`` of the frozen module, on the frozen model.

    Module and model are read once and verified together (:func:`verify_component`)
    before either is used; the module's export cells must define ``from_model(arrays)``.

    Raises
    ------
    FrozenModuleError
        A frozen file fails verification, the component froze no model, or its module
        defines no ``from_model``.
    """
    verified = verify_component(component, root)
    arrays = _arrays(verified)
    module = _import(verified)
    factory = getattr(module, "from_model", None)
    if not callable(factory):
        raise FrozenModuleError(
            f"the frozen module of {component!r} defines no from_model(arrays): add it to an "
            "'#| export' cell so that load_detector can rebuild the detector from its model"
        )
    return factory(arrays)
