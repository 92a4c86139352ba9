"""Project scaffolding: ``tcpkit init`` makes a project, ``tcpkit new`` adds a component to it.

A project is a directory with ``notebooks/pipeline.toml`` (the gates of every
component) and one notebook per component. The templates ship with the package
(``tcpkit/templates/``): the pipeline header, one component's four gate tables
and a notebook with the three parts the pipeline relies on (a typed
``parameters`` cell, an ``#| export`` cell with ``CONFIG`` and a factory, and
``record()`` calls).

``new`` appends text to ``pipeline.toml`` so that the user's comments and
layout stay as they are, then validates the whole file with
:func:`tcpkit.release.gates.load_pipeline`; on any error the file and the new
notebook are put back as they were. Names are checked once, here, with the
rules of :mod:`tcpkit.release.names`.
"""

from __future__ import annotations

import contextlib
import json
import math
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from tcpkit.release.atomic import write_atomic
from tcpkit.release.gates import GATES, PipelineError, load_pipeline
from tcpkit.release.names import InvalidNameError, check_component, check_researcher
from tcpkit.release.project import PIPELINE_FILE as PIPELINE
from tcpkit.release.project import Project

EXAMPLE_COMPONENT = "example"
GITIGNORE_TEMPLATE = "gitignore.txt"


class ScaffoldError(ValueError):
    """A project or component that cannot be made as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Created:
    """What ``init`` or ``new`` wrote: the project root, the component, and the paths (relative)."""

    root: Path
    component: str
    owner: str
    paths: tuple[str, ...]
    notes: tuple[str, ...] = ()


def template_text(name: str) -> str:
    """The text of packaged template ``name`` (``tcpkit/templates/<name>``)."""
    return (resources.files("tcpkit") / "templates" / name).read_text(encoding="utf-8")


def _fill(text: str, **values: str) -> str:
    # values are validated names (no quotes, backslashes or '$'), so they are safe in TOML and JSON
    return Template(text).substitute(values)


def component_tables(component: str, owner: str, notebook: str) -> str:
    """The template's four gate tables for ``component`` as TOML text (comments included)."""
    return _fill(template_text("component.toml"), component=component, owner=owner,
                 notebook=notebook)


def template_notebook(component: str, owner: str) -> bytes:
    """The template notebook for ``component``, as file bytes."""
    return _fill(template_text("component.ipynb"), component=component, owner=owner).encode("utf-8")


# --- init ---------------------------------------------------------------------------------------


def init_project(root: str | Path, owner: str) -> Created:
    """Make a project in ``root`` (created if missing) with one example component owned by ``owner``.

    Writes ``notebooks/pipeline.toml``, ``notebooks/example.ipynb``, the
    runtime-state entries of ``.gitignore`` (appended when the file exists;
    lines already there are not repeated) and an empty ``.tcpkit/trust/``.

    Raises
    ------
    ScaffoldError
        ``root`` already has a ``notebooks/pipeline.toml`` or an
        ``notebooks/example.ipynb``, is a file, or ``owner`` is not a valid
        researcher name. Nothing is written then.
    """
    project = Project.at(root)
    root = project.root
    try:
        check_researcher(owner)
    except InvalidNameError as exc:
        raise ScaffoldError(f"--owner: {exc}") from None
    if root.exists() and not root.is_dir():
        raise ScaffoldError(f"{root} exists and is not a directory: give a directory for the project")
    pipeline = project.pipeline_file
    if pipeline.exists():
        raise ScaffoldError(
            f"{pipeline} already exists: {root} is a tcpkit project already; add a component "
            "with 'tcpkit new NAME --owner RESEARCHER'")
    notebook = project.notebooks / f"{EXAMPLE_COMPONENT}.ipynb"
    if notebook.exists():
        raise ScaffoldError(f"{notebook} already exists: move it away or init another directory")
    project.notebooks.mkdir(parents=True, exist_ok=True)
    project.trust_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(notebook, template_notebook(EXAMPLE_COMPONENT, owner))
    text = template_text("pipeline.toml") + "\n" + component_tables(
        EXAMPLE_COMPONENT, owner, notebook.name)
    write_atomic(pipeline, text.encode("utf-8"))
    _ignore_runtime_state(root / ".gitignore")
    try:
        load_pipeline(pipeline)
    except PipelineError as exc:  # the packaged templates themselves are broken: say so loudly
        raise ScaffoldError(f"tcpkit's own project template is invalid (please report): {exc}") from None
    return Created(root, EXAMPLE_COMPONENT, owner,
                   (str(PIPELINE), f"notebooks/{notebook.name}", ".gitignore",
                    f"{project.trust_dir.relative_to(root)}/"))


def _ignore_runtime_state(path: Path) -> None:
    wanted = template_text(GITIGNORE_TEMPLATE).splitlines()
    existing = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    have = {line.strip() for line in existing}
    missing = [line for line in wanted if line.startswith("#") or line.strip() not in have]
    if not [line for line in missing if not line.startswith("#")]:
        return
    lines = [*existing, *([""] if existing and existing[-1].strip() else []), *missing]
    write_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))


# --- new ----------------------------------------------------------------------------------------


def new_component(root: str | Path, name: str, owner: str, source: str | None = None) -> Created:
    """Add component ``name`` owned by ``owner``: a notebook and its four gate tables.

    Parameters
    ----------
    root : str or Path
        The project directory (it has ``notebooks/pipeline.toml``).
    name, owner : str
        The component (``[a-z][a-z0-9-]{0,63}``) and its owner (a researcher name).
    source : str, optional
        Start from this instead of the template: a component of the pipeline
        (its notebook is copied without outputs and its gate tables are copied)
        or a path to a notebook (copied without outputs; its gates are the
        template's, keeping only the parameters the notebook declares).

    Raises
    ------
    ScaffoldError
        Bad or taken name, bad owner, no project, an invalid ``pipeline.toml``
        before the change, or one that is invalid after it (then the file and
        the notebook are put back as they were).
    """
    project = Project.at(root)
    root = project.root
    pipeline_path = project.pipeline_file
    try:
        check_component(name)
        check_researcher(owner)
    except InvalidNameError as exc:
        raise ScaffoldError(str(exc)) from None
    if not pipeline_path.is_file():
        raise ScaffoldError(
            f"{pipeline_path} does not exist: make a project first with 'tcpkit init', or give --root")
    with _locked(project):  # two 'tcpkit new' at once: the second reads what the first wrote
        return _add(project, name, owner, source)


@contextlib.contextmanager
def _locked(project: Project) -> Iterator[None]:
    """An exclusive lock on ``.tcpkit/pipeline.lock`` (released by the kernel if the process dies)."""
    import fcntl

    project.state_dir.mkdir(exist_ok=True)
    with open(project.state_dir / "pipeline.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _add(project: Project, name: str, owner: str, source: str | None) -> Created:
    root, pipeline_path = project.root, project.pipeline_file
    try:
        pipeline = load_pipeline(pipeline_path, require_notebooks=False)
    except PipelineError as exc:
        raise ScaffoldError(
            f"{pipeline_path} is invalid already, so no component is added; fix it first:\n{exc}"
        ) from None
    if name in pipeline.components:
        raise ScaffoldError(f"component {name!r} already exists in {pipeline_path}: choose another name")
    notebook = project.notebooks / f"{name}.ipynb"
    if notebook.exists():
        raise ScaffoldError(f"{notebook} already exists: choose another component name or move the file")

    notes: list[str] = []
    if source is None:
        content = template_notebook(name, owner)
        tables = component_tables(name, owner, notebook.name)
    else:
        content, tables, note = _from_source(root, pipeline, source, name, owner, notebook.name)
        notes.append(note)

    original = pipeline_path.read_bytes()
    text = original.decode("utf-8")
    addition = (f"\n# added by 'tcpkit new {name} --owner {owner}"
                f"{' --from ' + ' '.join(source.split()) if source else ''}'\n{tables}")
    write_atomic(notebook, content)
    try:
        write_atomic(pipeline_path, (text.rstrip("\n") + "\n" + addition).encode("utf-8"))
        load_pipeline(pipeline_path, require_notebooks=False)
    except (PipelineError, OSError) as exc:
        write_atomic(pipeline_path, original)
        notebook.unlink(missing_ok=True)
        raise ScaffoldError(
            f"adding {name} would make {pipeline_path} invalid, so nothing was changed:\n{exc}"
        ) from None
    return Created(root, name, owner, (f"notebooks/{notebook.name}", str(PIPELINE)), tuple(notes))


def _from_source(root: Path, pipeline: Any, source: str, name: str, owner: str, notebook_name: str
                 ) -> tuple[bytes, str, str]:
    """Notebook bytes, gate tables and a note for ``new --from source``."""
    from tcpkit.release.pipeline import notebook_parameters

    spec = pipeline.components.get(source)
    path = spec.notebook if spec is not None else _find_notebook(root, source)
    if spec is None:  # a notebook file: is it some component's?
        spec = next((s for s in pipeline.components.values() if s.notebook == path.resolve()), None)
    nb = _read_notebook(path)
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    content = (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
    if spec is not None:
        gates = {gate: {"parameters": dict(g.parameters), "quick": dict(g.quick),
                        "criteria": [c.as_dict() for c in g.criteria]}
                 for gate, g in spec.gates.items()}
        tables = render_component(name, notebook_name, owner, gates)
        return content, tables, (f"copied {path.name} and the gate tables of component "
                                 f"{spec.name}; edit them in {PIPELINE}")
    template = tomllib.loads(component_tables(name, owner, notebook_name))
    declared = notebook_parameters(path)
    if declared is None:
        raise ScaffoldError(
            f"{path} has no cell tagged 'parameters', so the gates cannot set its parameters: "
            "tag one code cell 'parameters' first")
    gates = {}
    for gate, g in template["components"][name]["gates"].items():
        gates[gate] = {
            "parameters": {k: v for k, v in g["parameters"].items() if k in declared},
            "quick": {k: v for k, v in g["quick"].items() if k in declared},
            "criteria": g["criteria"],
        }
    metrics = sorted({c["metric"] for g in gates.values() for c in g["criteria"]})
    return content, render_component(name, notebook_name, owner, gates), (
        f"copied {path.name}; its gates are the template's, whose criteria check "
        f"{', '.join(metrics)}: change them in {PIPELINE} to the metrics {path.name} records")


def _find_notebook(root: Path, source: str) -> Path:
    for candidate in (Path(source), Project.at(root).notebooks / source):
        if candidate.is_file():
            if candidate.suffix != ".ipynb":
                raise ScaffoldError(f"--from {source!r}: {candidate} is not a notebook (.ipynb)")
            return candidate
    raise ScaffoldError(
        f"--from {source!r} is neither a component of {Project.at(root).pipeline_file} nor a "
        "notebook file")


def _read_notebook(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ScaffoldError(f"--from: cannot read notebook {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise ScaffoldError(f"--from: {path} is not a notebook (no list of cells)")
    return data


def render_component(name: str, notebook: str, owner: str,
                     gates: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML text for one component and its gates (``gates[GATE]``: parameters, quick, criteria)."""
    lines = [
        f"[components.{name}]",
        f"notebook = {toml_value(notebook)}",
        f"owner = {toml_value(owner)}",
        f"contributors = {toml_value([owner])}",
        "depends_on = []",
    ]
    for gate in GATES:
        g = gates[gate]
        lines += ["", f"[components.{name}.gates.{gate}]",
                  f"parameters = {toml_value(dict(g.get('parameters', {})))}",
                  f"quick = {toml_value(dict(g.get('quick', {})))}",
                  "criteria = ["]
        lines += [f"  {toml_value(dict(c))}," for c in g["criteria"]]
        lines.append("]")
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    """``value`` as a TOML inline value (strings, booleans, numbers, lists, inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ScaffoldError(f"{value!r} cannot be written to pipeline.toml (not finite)")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise ScaffoldError(f"{value!r} ({type(value).__name__}) cannot be written to pipeline.toml")


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)
