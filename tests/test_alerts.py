"""Judging a fleet against its own reference, and the report it produces."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from tcpkit.detect.alerts import judge_fleet
from tcpkit.detect.baseline import BaselineError
from tcpkit.detect.config import DetectorConfig
from tcpkit.detect.simulate import EASY_WORLD, FEATURE_NAMES, simulate_network


@pytest.fixture(scope="module")
def fleet():
    # the stationary world with gross compromises these checks were written for
    net = simulate_network(n_agents=3000, compromised_fraction=0.1, seed=11, **EASY_WORLD)
    agents = [f"agent-{i:05d}" for i in range(net.n_agents)]
    report = judge_fleet(
        net.windows,
        agents,
        FEATURE_NAMES,
        DetectorConfig(alpha=0.05),
        nodes=[f"node-{n}" for n in net.node],
        detector_info={"component": "integrated", "digest": "sha256:test"},
        notes={"unmapped_actions": {"frobnicate": 3}},
    )
    return net, report


def test_the_fleet_finds_its_compromised_agents(fleet) -> None:
    net, report = fleet
    flags = np.array([a.flagged for a in report.agents])
    assert flags[net.labels].mean() > 0.5
    false = int((flags & ~net.labels).sum())
    assert false <= max(3, 0.2 * flags.sum())


def test_flagged_agents_are_explained_and_unflagged_are_not(fleet) -> None:
    _, report = fleet
    for a in report.agents:
        assert bool(a.top_features) == a.flagged
        for f in a.top_features:
            assert f.feature in FEATURE_NAMES and f.direction in ("higher", "lower")
        if a.first_alarm_window is not None:
            assert report.reference_windows <= a.first_alarm_window < report.n_windows


def test_json_has_the_documented_fields(fleet) -> None:
    _, report = fleet
    doc = json.loads(report.to_json())
    assert doc["detector"]["component"] == "integrated" and doc["alpha"] == 0.05
    assert doc["notes"]["unmapped_actions"] == {"frobnicate": 3}
    agent = doc["agents"][0]
    for key in ("agent", "node", "flagged", "p_value", "q_value", "first_alarm_window", "top_features"):
        assert key in agent
    assert doc["counts"]["flagged"] == report.n_flagged


def test_csv_has_one_row_per_agent(fleet) -> None:
    _, report = fleet
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert len(rows) == len(report.agents)
    assert {r["flagged"] for r in rows} <= {"True", "False"}


def test_html_is_standalone_with_plots(fleet) -> None:
    _, report = fleet
    page = report.to_html()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("data:image/png;base64,") >= 2
    assert "http://" not in page and "https://" not in page


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(BaselineError, match="expected"):
        judge_fleet(np.zeros((3, 4)), ["a"], ["x"], DetectorConfig())
    with pytest.raises(BaselineError, match="2 agents and 1 feature names"):
        judge_fleet(np.zeros((2, 10, 2)), ["a", "b"], ["x"], DetectorConfig())


def test_json_is_the_text_json_dumps_writes(fleet) -> None:
    from dataclasses import replace

    from tcpkit.detect.alerts import AgentAlert, FeatureContribution

    _, report = fleet
    odd = AgentAlert(agent='a "quoted" \\ agent\n\u00e9\u4e2d', node=None, flagged=True, p_value=float("nan"),
                     q_value=float("inf"), first_alarm_window=None, test="self",
                     top_features=(FeatureContribution("x", -0.0, "lower", float("-inf")),
                                   FeatureContribution("y", 1e-300, "higher", 12345678901234.5)))
    for r in (report, replace(report, agents=report.agents[:3] + (odd,)), replace(report, agents=())):
        assert r.to_json() == json.dumps(r.as_dict(), indent=2, sort_keys=False) + "\n"


def test_report_keeps_paths_of_the_most_significant_flagged_agents_only(fleet) -> None:
    from tcpkit.detect.alerts import PLOTTED_AGENTS

    _, report = fleet
    top = report.most_significant(PLOTTED_AGENTS)
    assert set(report.cusum_paths) == {a.agent for a in top}
    p = [a.p_value for a in report.most_significant()]
    assert p == sorted(p) and len(p) == report.n_flagged
