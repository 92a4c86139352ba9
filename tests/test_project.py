"""Project: one value owns every path of a tcpkit project."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcpkit.release.project import Project


def test_paths(tmp_path: Path) -> None:
    project = Project.at(tmp_path)
    assert Project.at(project) is project
    assert project.database == tmp_path.resolve() / ".tcpkit" / "tcpkit.db"
    assert project.objects.parent == project.trust_dir.parent == project.state_dir
    assert project.pipeline_file == project.notebooks / "pipeline.toml"
    assert project.report("STAGING", "stats") == project.reports / "STAGING" / "stats.html"
    names = [p.name for p in (project.frozen_module("a"), project.frozen_model("a"),
                              project.frozen_envelope("a"), project.frozen_chain("a"))]
    assert names == ["a.py", "a.model.npz", "a.dsse.json", "a.chain.intoto.jsonl"]
    with pytest.raises(ValueError, match="component name"):
        project.frozen_module("../x")


def test_find(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TCPKIT_ROOT", raising=False)
    (tmp_path / "production").mkdir()
    (tmp_path / "a" / "b").mkdir(parents=True)
    found = Project.find(tmp_path / "a" / "b")
    assert found is not None and found.root == tmp_path.resolve()
    monkeypatch.setenv("TCPKIT_ROOT", str(tmp_path / "a"))
    assert Project.find() == Project.at(tmp_path / "a")
