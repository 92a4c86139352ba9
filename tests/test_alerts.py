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


def test_an_audited_reference_is_not_judged_and_its_verdicts_are_explained() -> None:
    net = simulate_network(n_agents=900, compromised_fraction=0.1, seed=12, **EASY_WORLD)
    agents = [f"agent-{i:05d}" for i in range(net.n_agents)]
    audited = [a for a, bad in zip(agents, net.labels, strict=True) if not bad][::2]
    report = judge_fleet(net.windows, agents, FEATURE_NAMES, DetectorConfig(alpha=0.05), audited=audited)
    assert report.detector["detector"] == "NetworkDetector" and report.notes["audited"] == len(audited)
    judged = [a.agent for a in report.agents]
    assert not set(judged) & set(audited) and len(judged) == len(agents) - len(audited)
    truth = dict(zip(agents, net.labels, strict=True))
    flags = np.array([a.flagged for a in report.agents])
    bad = np.array([truth[a] for a in judged])
    assert flags[bad].mean() > 0.7 and (flags & ~bad).sum() <= max(3, 0.2 * flags.sum())
    for a in report.agents:
        assert bool(a.top_features) == a.flagged
        if a.first_alarm_window is not None:
            assert report.reference_windows <= a.first_alarm_window < report.n_windows
    assert report.cusum_paths and report.to_html().count("data:image/png;base64,") >= 2
    # the resolution: conformal p-values are at least 1 / (n_cal + 1), and BH flagged at least the fewest it can
    assert report.detector["smallest_p_value"] == 1.0 / (report.detector["calibration_agents"] + 1)
    assert min(a.p_value for a in report.agents) >= report.detector["smallest_p_value"]
    assert flags.sum() >= report.detector["fewest_flaggable"] >= 1
    assert "Resolution: no p-value can be below" in report.to_html()


def test_a_run_that_can_flag_nobody_says_so() -> None:
    windows = np.random.default_rng(0).normal(size=(60, 10, 2))
    agents = [f"a{i}" for i in range(60)]
    report = judge_fleet(windows, agents, ["x", "y"], DetectorConfig(alpha=0.01), audited=agents[:40])
    assert report.detector["fewest_flaggable"] is None and report.n_flagged == 0
    assert "can flag none of the 20 judged agents" in report.to_html()
    assert json.loads(report.to_json())["detector"]["fewest_flaggable"] is None


def test_the_fleet_report_states_its_resolution(fleet) -> None:
    _, report = fleet
    p, k = report.detector["smallest_p_value"], report.detector["fewest_flaggable"]
    assert 0 < p <= min(a.p_value for a in report.agents) and 1 <= k <= report.n_flagged


def test_an_audited_reference_must_be_agents_of_the_fleet_and_large_enough() -> None:
    windows = np.random.default_rng(0).normal(size=(60, 10, 2))
    agents = [f"a{i}" for i in range(60)]
    with pytest.raises(BaselineError, match="1 audited agents are not among the judged agents.*'ghost'"):
        judge_fleet(windows, agents, ["x", "y"], DetectorConfig(), audited=["a1", "ghost"])
    with pytest.raises(BaselineError, match="39 audited agents: the network detector needs at least 40"):
        judge_fleet(windows, agents, ["x", "y"], DetectorConfig(), audited=agents[:39])
    with pytest.raises(BaselineError, match="nobody is left to judge"):
        judge_fleet(windows, agents, ["x", "y"], DetectorConfig(), audited=agents)


def test_agent_lists_are_read_from_text_or_csv_and_bad_ones_are_named(tmp_path) -> None:
    from tcpkit.detect.events import EventError, read_agent_list

    text = tmp_path / "a.txt"
    text.write_text("# audited in March\nagent-1\n\nagent-2\n")
    assert read_agent_list(text) == ("agent-1", "agent-2")
    table = tmp_path / "a.csv"
    table.write_text("node,agent\nn1,agent-3\nn2,agent-4\n")
    assert read_agent_list(table) == ("agent-3", "agent-4")
    for body, words in [("", "is empty"), ("a\nb\na\n", "line 3: agent 'a' is listed twice (first on line 1)"),
                        ("node,host\nx,y\n", "needs an 'agent' column"), ("agent,node\n,n1\n", "line 2: no agent name"),
                        ("agent\n", "names no agent")]:
        table.write_text(body)
        with pytest.raises(EventError, match=words.replace("(", r"\(").replace(")", r"\)")):
            read_agent_list(table)
    with pytest.raises(EventError, match="cannot read"):
        read_agent_list(tmp_path / "missing.txt")
