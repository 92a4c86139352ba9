"""The layout of a tcpkit project: one value that owns every path (like DVC's ``Repo``).

A :class:`Project` is made once, from the project root, and passed to whatever
needs a path; nothing else joins ``".tcpkit"`` or ``"production"`` onto a root.

    <root>/notebooks/pipeline.toml              the gate definitions
    <root>/.tcpkit/tcpkit.db                    the workspace database
    <root>/.tcpkit/objects/                     the content-addressed object store
    <root>/.tcpkit/trust/<name>.pub             the pinned trust list
    <root>/production/<component>.py            frozen module
    <root>/production/<component>.model.npz     frozen fitted model
    <root>/production/<component>.dsse.json     its signed statement
    <root>/production/<component>.chain.intoto.jsonl  the four gate bundles behind it
    <root>/reports/<gate>/<component>.html      run reports, and reports/index.html
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tcpkit.release.names import check_component

STATE_DIR = ".tcpkit"
PRODUCTION_DIR = "production"
REPORTS_DIR = "reports"
NOTEBOOKS_DIR = "notebooks"
PIPELINE_FILE = Path(NOTEBOOKS_DIR) / "pipeline.toml"


@dataclass(frozen=True)
class Project:
    """The paths of the project at ``root`` (resolved once)."""

    root: Path

    @classmethod
    def at(cls, root: str | Path | Project) -> Project:
        """The project at ``root`` (a Project is returned as it is)."""
        if isinstance(root, Project):
            return root
        return cls(Path(root).resolve())

    @classmethod
    def find(cls, start: str | Path | None = None) -> Project | None:
        """``$TCPKIT_ROOT`` (when ``start`` is None), else the nearest ancestor of ``start``
        (default: the working directory) holding ``.tcpkit`` or ``production``; None if none."""
        env = os.environ.get("TCPKIT_ROOT")
        if env and start is None:
            return cls.at(env)
        here = Path(start if start is not None else os.getcwd()).resolve()
        for candidate in (here, *here.parents):
            if (candidate / STATE_DIR).is_dir() or (candidate / PRODUCTION_DIR).is_dir():
                return cls(candidate)
        return None

    # -- state ---------------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        """``.tcpkit/``."""
        return self.root / STATE_DIR

    @property
    def database(self) -> Path:
        """``.tcpkit/tcpkit.db``."""
        return self.state_dir / "tcpkit.db"

    @property
    def objects(self) -> Path:
        """``.tcpkit/objects/``: the object store."""
        return self.state_dir / "objects"

    @property
    def trust_dir(self) -> Path:
        """``.tcpkit/trust/``: the pinned trust list."""
        return self.state_dir / "trust"

    # -- definitions and outputs ---------------------------------------------------------------
    @property
    def notebooks(self) -> Path:
        """``notebooks/``."""
        return self.root / NOTEBOOKS_DIR

    @property
    def pipeline_file(self) -> Path:
        """``notebooks/pipeline.toml``."""
        return self.root / PIPELINE_FILE

    @property
    def reports(self) -> Path:
        """``reports/``."""
        return self.root / REPORTS_DIR

    def report(self, gate: str, component: str) -> Path:
        """``reports/<gate>/<component>.html``."""
        return self.reports / gate / f"{check_component(component)}.html"

    # -- production ----------------------------------------------------------------------------
    @property
    def production(self) -> Path:
        """``production/``."""
        return self.root / PRODUCTION_DIR

    def frozen_module(self, component: str) -> Path:
        """``production/<component>.py``."""
        return self.production / f"{check_component(component)}.py"

    def frozen_model(self, component: str) -> Path:
        """``production/<component>.model.npz``."""
        return self.production / f"{check_component(component)}.model.npz"

    def frozen_envelope(self, component: str) -> Path:
        """``production/<component>.dsse.json``."""
        return self.production / f"{check_component(component)}.dsse.json"

    def frozen_chain(self, component: str) -> Path:
        """``production/<component>.chain.intoto.jsonl``."""
        return self.production / f"{check_component(component)}.chain.intoto.jsonl"
