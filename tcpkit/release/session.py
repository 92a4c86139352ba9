"""The notebook a researcher has open, seen from the workspace: its component, lease and base version.

JupyterLab writes a notebook file when the researcher saves; tcpkit does not see
those saves. What it can see is the workspace: who holds the component's lease,
and which versions were recorded (``modify``, ``restore``, the backups they take,
the import on registration). So this module answers, for the notebook open in a
kernel:

- which project and component it is (:func:`locate`, from the notebook's path);
- which recorded version the researcher started from (:func:`opened`: the version
  whose bytes equal the file when the notebook was opened, else the current one);
- whether someone else holds the lease (:func:`lease_warning`);
- whether someone else recorded a newer version since (:func:`newer_warning`),
  which a save from the open notebook would overwrite on disk, with the nbdime
  command that merges the two.

What it cannot detect, and does not claim to: saves of the file that were never
recorded as a version (another editor, ``git pull``); JupyterLab's own "file
changed on disk" check is what catches those at save time.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tcpkit.release.atomic import write_atomic
from tcpkit.release.project import PIPELINE_FILE as PIPELINE
from tcpkit.release.project import Project

if TYPE_CHECKING:
    from tcpkit.release.records import VersionInfo
    from tcpkit.release.workspace import Workspace



class SessionError(ValueError):
    """The open notebook cannot be mapped to a project or component; the message says what to do."""


@dataclass(frozen=True)
class Located:
    """A project root and, when the notebook is one of its components, that component."""

    root: Path
    component: str | None
    notebook: Path | None


@dataclass(frozen=True)
class Opened:
    """What the researcher started from: the recorded version, and whether the file matched it."""

    base: VersionInfo | None
    file_digest: str | None
    file_matches_base: bool


def find_root(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` with ``notebooks/pipeline.toml`` (None if none)."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / PIPELINE).is_file():
            return folder
        if folder.name == "notebooks" and (folder / "pipeline.toml").is_file():
            return folder.parent
    return None


def locate(notebook: str | Path | None, cwd: Path, root: Path | None = None,
           component: str | None = None) -> Located:
    """Map the open notebook (its path as Jupyter gives it, maybe relative to ``cwd``) to a component.

    ``root`` and ``component`` override what the path says (``%tcpkit component NAME``).

    Raises
    ------
    SessionError
        No project above the notebook or ``cwd``, an invalid ``pipeline.toml``,
        or an explicit ``component`` that the pipeline does not define.
    """
    from tcpkit.release.gates import PipelineError, load_pipeline

    path: Path | None = None
    if notebook:
        path = Path(notebook)
        if not path.is_absolute():
            path = next((p for p in (cwd / path, cwd / path.name) if p.is_file()), cwd / path)
        path = path.resolve()
    if root is None:
        root = find_root(path.parent if path is not None else cwd) or find_root(cwd)
    if root is None:
        where = path if path is not None else cwd
        raise SessionError(
            f"no tcpkit project (notebooks/pipeline.toml) at or above {where}; make one with "
            "'tcpkit init', or name it with '%tcpkit component NAME --root DIR'")
    try:
        pipeline = load_pipeline(Project.at(root).pipeline_file, require_notebooks=False)
    except PipelineError as exc:
        raise SessionError(f"{Project.at(root).pipeline_file} is invalid: {exc}") from None
    if component is not None:
        if component not in pipeline.components:
            raise SessionError(f"component {component!r} is not in {Project.at(root).pipeline_file} (it defines "
                               f"{', '.join(pipeline.components)})")
        return Located(root, component, pipeline.components[component].notebook)
    if path is None:
        return Located(root, None, None)
    for name, spec in pipeline.components.items():
        if spec.notebook == path:
            return Located(root, name, spec.notebook)
    return Located(root, None, path)


def file_digest(path: Path) -> str | None:
    """sha256 of the file's bytes (the workspace's version digest), None when it is missing."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def opened(ws: Workspace, component: str) -> Opened:
    """The version the researcher starts from, as the notebook is opened now.

    The recorded version whose bytes equal the notebook file (the latest such), else
    the current version (the file then holds changes that were never recorded).
    """
    digest = file_digest(ws.notebook_path(component))
    versions = ws.versions(component)
    same = [v for v in versions if v.digest == digest]
    if same:
        return Opened(same[-1], digest, True)
    return Opened(versions[-1] if versions else None, digest, False)


def lease_warning(ws: Workspace, component: str, me: str, now: float | None = None) -> str | None:
    """A warning when a live lease on ``component`` is held by someone other than ``me``."""
    lease = ws.lease(component)
    if lease is None or lease.holder == me or lease.stale_reason(time.time() if now is None else now):
        return None
    why = f", reason: {lease.reason}" if lease.reason else ""
    return (f"{component} is leased to {lease.holder} until {lease.expires_iso}{why}. While the "
            f"lease holds, the workspace refuses changes to {component} by anyone else (restore, "
            f"modify); saving this notebook still writes the file, so agree with {lease.holder} "
            "first")


def newer_warning(ws: Workspace, component: str, me: str, base: VersionInfo | None) -> str | None:
    """A warning when versions by someone else were recorded after ``base``, with the merge command.

    The newest such version was written to the notebook file (every recorded change
    writes it), so saving the open notebook would overwrite it there. The base and the newer
    version are written to ``.tcpkit/tmp/merge/`` so that nbdime can merge them with the
    researcher's copy.
    """
    if base is None:
        return None
    newer = [v for v in ws.versions(component) if v.seq > base.seq and v.digest != base.digest]
    others = [v for v in newer if v.author != me]
    if not others:
        return None
    current = newer[-1]
    who = ", ".join(sorted({v.author for v in others}))
    notebook = ws.notebook_path(component)
    rel = notebook.relative_to(ws.root)
    folder = Project.at(ws.root).state_dir / "tmp" / "merge"
    folder.mkdir(parents=True, exist_ok=True)
    base_file = folder / f"{component}-v{base.seq}-base.ipynb"
    theirs_file = folder / f"{component}-v{current.seq}.ipynb"
    for version, target in ((base, base_file), (current, theirs_file)):
        if ws.stored(version):
            write_atomic(target, ws.store.get_bytes(version.digest))
    mine = rel.with_name(f"{rel.stem}.mine{rel.suffix}")
    missing = [f"version {v.seq}" for v in (base, current) if not ws.stored(v)]
    if missing:
        how = (f"{' and '.join(missing)} are no longer stored (gc), so there is nothing to merge "
               f"with: compare with 'tcpkit diff {component} DIGEST' and merge by hand")
    else:
        how = (f"To merge: save your copy as {mine} (File > Save Notebook As), then run, in "
               f"{ws.root}:\n    nbmerge {base_file.relative_to(ws.root)} "
               f"{theirs_file.relative_to(ws.root)} {mine} --out {rel}\n(nbmerge marks "
               "conflicting cells inline and exits 1 when there are any), then run '%tcpkit base' "
               f"in the merged notebook: it then starts from version {current.seq}")
    return (
        f"{len(others)} newer version(s) of {component} by {who} since version {base.seq} "
        f"({base.digest[:12]}) that this notebook started from; the newest, version "
        f"{current.seq} ({current.digest[:12]}, {current.kind} by {current.author} at "
        f"{current.created_at}), was written to {rel}, and saving this notebook would "
        f"overwrite it there (it stays in the store). {how}")
