"""An operator's audit of a reference in rounds: the verdict files and :func:`plan_audit`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tcpkit.detect.audit_round import plan_audit
from tcpkit.detect.baseline import BaselineError
from tcpkit.detect.events import EventError, read_verdicts
from tcpkit.detect.features import FeatureTable, compute_features
from tcpkit.detect.simulate import EASY_WORLD, simulate_events


@pytest.fixture(scope="module")
def fleet() -> tuple[FeatureTable, dict[str, bool]]:
    sim = simulate_events(n_agents=600, compromised_fraction=0.2, seed=23, n_windows=12, **EASY_WORLD)
    feats = compute_features(sim.table, window_events=50, reference_windows=5, min_reference_windows=5)
    labels = dict(zip(sim.labels.column("agent").to_pylist(), sim.labels.column("compromised").to_pylist(), strict=True))
    return feats, labels


def test_verdict_files_are_read_with_their_extra_columns_and_across_rounds(tmp_path: Path) -> None:
    one, two = tmp_path / "r1.csv", tmp_path / "r2.csv"
    one.write_text("agent,verdict,position,outlyingness\n# first round\nagent-000001,compromised,1,40.2\n"
                   "agent-000002,Clean,2,30.0\n")
    two.write_text("verdict,agent\nclean,agent-000003\n")
    assert read_verdicts([one, two]) == {"agent-000001": True, "agent-000002": False, "agent-000003": False}
    assert read_verdicts([]) == {}


@pytest.mark.parametrize(("text", "message"), [
    ("agent\nagent-000001\n", r"r\.csv, line 1: .*missing verdict"),
    ("agent,verdict\nagent-000001,\n", r"line 2: agent 'agent-000001' has no verdict: write compromised or clean"),
    ("agent,verdict\nagent-000001,maybe\n", r"line 2: agent 'agent-000001' has 'maybe'"),
    ("agent,verdict\n,clean\n", r"line 2: no agent name"),
    ("agent,verdict\nagent-000001,clean\nagent-000001,compromised\n", r"line 3: .*judged twice \(first in .*line 2\)"),
    ("", r"the verdict file is empty"),
])
def test_a_bad_verdict_file_is_one_error_naming_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "r.csv"
    path.write_text(text)
    with pytest.raises(EventError, match=message):
        read_verdicts([path])


def test_an_agent_judged_in_two_files_is_an_error(tmp_path: Path) -> None:
    one, two = tmp_path / "a.csv", tmp_path / "b.csv"
    one.write_text("agent,verdict\nagent-000001,clean\n")
    two.write_text("agent,verdict\nagent-000001,compromised\n")
    with pytest.raises(EventError, match=r"b\.csv, line 2: agent 'agent-000001' is judged twice \(first in .*a\.csv"):
        read_verdicts([one, two])


def test_rounds_find_the_compromised_reference_agents_and_trim_only_confirmed_ones(
    fleet: tuple[FeatureTable, dict[str, bool]]
) -> None:
    feats, labels = fleet
    reference = list(feats.agents[:300])
    bad = {a for a in reference if labels[a]}
    verdicts: dict[str, bool] = {}
    for _ in range(4):
        plan = plan_audit(feats, reference, verdicts, batch=30)
        assert not set(plan.next_batch) & set(verdicts)  # nobody is asked twice
        assert len(plan.next_batch) == 30 and set(plan.next_batch) <= set(reference)
        verdicts.update({a: labels[a] for a in plan.next_batch})
    plan = plan_audit(feats, reference, verdicts, batch=30)
    caught = set(plan.confirmed)
    # 120 of 300 audited (40 %): a random audit would find 40 % of the compromised ones
    assert len(caught) >= 0.8 * len(bad), (len(caught), len(bad))
    assert caught <= bad and set(plan.cleared) == {a for a in verdicts if not labels[a]}
    assert plan.trimmed() == tuple(a for a in reference if a not in caught)  # clean agents all stay, in order
    assert plan.ranked[0] in bad  # the most outlying is compromised in this easy world
    lines = plan.batch_csv().splitlines()
    assert lines[0] == "agent,verdict,position,outlyingness" and len(lines) == 31
    assert all(line.split(",")[1] == "" for line in lines[1:])  # verdicts left for the auditor


def test_every_ranked_agent_judged_leaves_nothing_to_propose(fleet: tuple[FeatureTable, dict[str, bool]]) -> None:
    feats, labels = fleet
    reference = list(feats.agents[:60])
    plan = plan_audit(feats, reference, {a: labels[a] for a in reference})
    assert plan.next_batch == () and plan.batch_csv() == "agent,verdict,position,outlyingness\n"


def test_the_default_batch_is_a_fortieth_of_the_ranked_reference(fleet: tuple[FeatureTable, dict[str, bool]]) -> None:
    feats, _ = fleet
    assert len(plan_audit(feats, list(feats.agents[:400]), {}).next_batch) == 10


def test_bad_rounds_name_what_is_wrong(fleet: tuple[FeatureTable, dict[str, bool]]) -> None:
    feats, _ = fleet
    reference = list(feats.agents[:100])
    with pytest.raises(BaselineError, match=r"1 reference agents have no events in the log: 'agent-x'"):
        plan_audit(feats, [*reference, "agent-x"], {})
    with pytest.raises(BaselineError, match=r"1 judged agents are not in the reference: 'agent-000500'"):
        plan_audit(feats, reference, {"agent-000500": True})
    with pytest.raises(BaselineError, match="names an agent twice"):
        plan_audit(feats, [*reference, reference[0]], {})
    with pytest.raises(BaselineError, match="names no agent"):
        plan_audit(feats, [], {})
    with pytest.raises(BaselineError, match="batch=0"):
        plan_audit(feats, reference, {}, batch=0)
    with pytest.raises(BaselineError, match="a robust fit of .* needs at least"):
        plan_audit(feats, reference[:5], {})
    assert np.isfinite(list(plan_audit(feats, reference, {}).outlyingness.values())).all()
