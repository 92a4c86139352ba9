"""Features from events: definitions, windows, omissions, formats, the Dask and streaming paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpkit.detect import simulate
from tcpkit.detect.bench_ingest import pandas_features, synthetic_events
from tcpkit.detect.events import EventError, read_events, validate_events
from tcpkit.detect.events_write import write_events
from tcpkit.detect.features import (
    ACTIVITY_FEATURES,
    FeatureTable,
    compute_features,
    features_from_dataset,
    features_from_parquet,
    parse_duration,
)
from tcpkit.detect.riskmap import RiskMap
from tcpkit.detect.simulate import FEATURE_NAMES

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds
MIN = 60_000_000


def _events(rows: list[dict]) -> pa.Table:
    raw = pa.Table.from_pylist(rows)
    i = raw.column_names.index("time")
    raw = raw.set_column(i, "time", pa.array(raw.column("time").to_pylist(), pa.int64()).cast(
        pa.timestamp("us", tz="UTC")))
    return validate_events(raw)


@pytest.fixture(scope="module")
def log() -> pa.Table:
    return validate_events(synthetic_events(6000, events_per_agent=600, seed=11))


def _same(a: FeatureTable, b: FeatureTable) -> None:
    assert a.agents == b.agents
    assert a.nodes == b.nodes
    assert a.feature_names == b.feature_names
    assert np.array_equal(a.windows, b.windows, equal_nan=True)
    assert np.array_equal(a.counts, b.counts)
    assert np.array_equal(a.window_starts.view(np.int64), b.window_starts.view(np.int64))
    assert a.unmapped == b.unmapped and a.excluded == b.excluded and a.omitted == b.omitted


# --------------------------------------------------------------------------- definitions


def test_every_feature_equals_an_independent_pandas_groupby(log: pa.Table) -> None:
    ft = compute_features(log, window="1h", reference_windows=8)
    assert ft.feature_names == FEATURE_NAMES + ACTIVITY_FEATURES[:-2]
    assert ft.omitted == {}
    ref = pandas_features(log.to_pandas(), window_us=parse_duration("1h"), reference_windows=8)
    assert list(ref.columns) == list(ft.feature_names)
    for (agent, w), row in ref.iterrows():
        got = ft.windows[ft.agents.index(agent), int(w)]
        np.testing.assert_allclose(got, row.to_numpy(dtype=float), rtol=1e-12, atol=1e-12)
    assert int(ft.counts.sum()) == log.num_rows and (ft.counts > 0).sum() == len(ref)


def test_assessment_features_by_hand() -> None:
    preds = [0.1, 0.3, 0.4, 0.7, 0.5, 0.95]  # SAFE SAFE NETWORK PRIVESC DESTRUCTIVE CRITICAL
    classes = ["SAFE", "SAFE", "NETWORK", "PRIVESC", "DESTRUCTIVE", "CRITICAL"]
    lat = [1.0, 2.0, 3.0, 4.0, 5.0, 100.0]
    rows = [
        {"agent": "a", "time": T0 + i * MIN, "action": "x", "risk_class": c, "predicted_risk": p,
         "confidence": 0.5 + 0.1 * (i % 2), "latency_ms": lat[i]}
        for i, (p, c) in enumerate(zip(preds, classes, strict=True))
    ]
    ft = compute_features(_events(rows), window="1h", feature_set="assessment")
    f = dict(zip(ft.feature_names, ft.windows[0, 0], strict=True))
    resid = np.array([0.0, 0.2, 0.0, 0.0, -0.4, 0.0])
    assert f["accuracy"] == pytest.approx(1 - np.abs(resid).mean())
    assert f["bias"] == pytest.approx(resid.mean())
    assert f["bias_safe"] == pytest.approx(0.1)
    assert f["bias_network_privesc"] == pytest.approx(0.0)
    assert f["bias_high_risk"] == pytest.approx(-0.2)
    assert f["error_rate"] == pytest.approx(2 / 6)
    # within-class: only SAFE has two values (0.1, 0.3): sum of squares 0.02, n - k = 6 - 5
    assert f["consistency"] == pytest.approx(np.sqrt(0.02 / 1))
    assert f["confidence_mean"] == pytest.approx(0.55)
    assert f["confidence_std"] == pytest.approx(0.05)
    assert f["latency_p95"] == 100.0  # nearest rank: ceil(0.95 * 6) = 6th smallest
    # cells (family, class): "x" is no catalogue command and no rule -> not in the sum: omitted?
    assert "family_underrating" not in ft.feature_names
    assert "family_underrating" in ft.omitted


def test_family_underrating_from_risk_map_rules_for_real_logs() -> None:
    rm = RiskMap.from_mapping({"tools": {"send_money": "CRITICAL", "read": "SAFE"}})
    rows = [
        {"agent": "a", "time": T0 + i * MIN, "action": a, "predicted_risk": p}
        for i, (a, p) in enumerate([("send_money", 0.45), ("send_money", 0.75), ("read", 0.1)])
    ]
    ft = compute_features(_events(rows), window="1h", risk_map=rm, feature_set="assessment")
    # the send_money cell: resid -0.5 and -0.2, sum -0.7, n 2 -> 0.49 / 2
    assert ft.windows[0, 0, ft.feature_index("family_underrating")] == pytest.approx(0.245)


def test_novelty_of_actions_and_arguments() -> None:
    rows = []
    for w in range(4):  # reference windows 0, 1; then 2, 3
        for j, (action, arg) in enumerate([("ls", "a.txt"), ("cat", "b.txt")]):
            rows.append({"agent": "a", "time": T0 + w * 60 * MIN + j * MIN, "action": action,
                         "arguments": f'{{"file": "{arg}"}}'})
    rows.append({"agent": "a", "time": T0 + 3 * 60 * MIN + 5 * MIN, "action": "wget x",
                 "arguments": '{"file": "a.txt", "url": "http://evil"}'})
    rows.append({"agent": "a", "time": T0 + 0 * 60 * MIN + 7 * MIN, "action": "only-in-ref-0"})
    ft = compute_features(_events(rows), window="1h", reference_windows=2, feature_set="activity")
    nov_a = ft.windows[0, :, ft.feature_index("novelty_action")]
    nov_g = ft.windows[0, :, ft.feature_index("novelty_arguments")]
    # window 0: "only-in-ref-0" is in no *other* reference window -> novel; ls, cat are in window 1
    assert nov_a.tolist() == pytest.approx([1 / 3, 0.0, 0.0, 1 / 3])
    assert nov_g.tolist() == pytest.approx([0.0, 0.0, 0.0, 1 / 4])  # url=http://evil is new


def test_activity_shares_rates_outcomes() -> None:
    rows = [
        {"agent": "a", "time": T0 + i * MIN, "action": a, "outcome": o}
        for i, (a, o) in enumerate(
            [("git status", "ok"), ("sudo -i", "error"), ("iptables -F", None), ("???", "refused")]
        )
    ]
    ft = compute_features(_events(rows), window="30m", feature_set="activity")
    f = dict(zip(ft.feature_names, ft.windows[0, 0], strict=True))
    assert f["share_safe"] == f["share_privesc"] == f["share_destructive"] == 0.25
    assert f["share_network"] == f["share_critical"] == 0.0
    assert f["action_rate"] == pytest.approx(4 / 30)
    assert f["outcome_error_rate"] == pytest.approx(1 / 3)
    assert f["outcome_refused_rate"] == pytest.approx(1 / 3)
    assert ft.unmapped == {"???": 1}


# --------------------------------------------------------------------------- windows


def test_parse_duration() -> None:
    assert parse_duration("30m") == 30 * MIN
    assert parse_duration("1h") == 60 * MIN
    assert parse_duration("1.5h") == 90 * MIN
    assert parse_duration("1d") == 24 * 60 * MIN
    assert parse_duration("90s") == 90_000_000
    for bad in ("1w", "h", "0s", "-1h", ""):
        with pytest.raises(ValueError, match="window"):
            parse_duration(bad)


def test_time_windows_share_one_grid() -> None:
    rows = [{"agent": "a", "time": T0 + m * MIN, "action": "ls"} for m in (10, 50, 65, 179)]
    rows += [{"agent": "b", "time": T0 + 61 * MIN, "action": "ls"}]
    ft = compute_features(_events(rows), window="1h", reference_windows=3, min_reference_windows=1)
    assert ft.counts.tolist() == [[2, 1, 1], [0, 1, 0]]
    assert ft.window_starts.shape == (3,)
    assert ft.window_starts[1] == np.datetime64("2026-01-01T01:00:00", "us")
    assert np.isnan(ft.windows[1, 0]).all() and np.isnan(ft.windows[1, 2]).all()
    half = compute_features(_events(rows), window="30m", reference_windows=6)
    assert half.counts.shape == (2, 6) and half.counts[0].tolist() == [1, 1, 1, 0, 0, 1]


def test_count_windows_drop_partial_tails_and_pad() -> None:
    rows = [{"agent": "a", "time": T0 + i * MIN, "action": "ls"} for i in range(120)]
    rows += [{"agent": "b", "time": T0 + i * MIN, "action": "ls"} for i in range(60)]
    ft = compute_features(_events(rows), window_events=50, reference_windows=1)
    assert ft.counts.tolist() == [[50, 50], [50, 0]]
    assert ft.window_starts.shape == (2, 2)
    assert ft.window_starts[0, 1] == np.datetime64("2026-01-01T00:50:00", "us")
    assert np.isnat(ft.window_starts[1, 1])
    assert ft.windows[0, 0, ft.feature_index("action_rate")] == pytest.approx(1.0)  # 49 / 49 min
    assert np.isnan(ft.windows[1, 1]).all()


def test_agents_without_reference_windows_are_reported_and_excluded() -> None:
    rows = [{"agent": "early", "time": T0 + h * 60 * MIN, "action": "ls"} for h in range(10)]
    rows += [{"agent": "late", "time": T0 + 9 * 60 * MIN, "action": "ls"}]
    ft = compute_features(_events(rows), window="1h", reference_windows=8)
    assert ft.agents == ("early",)
    assert "late" in ft.excluded and "0 non-empty windows" in ft.excluded["late"]
    strict = compute_features(_events(rows[:4]), window="1h", reference_windows=8, min_reference_windows=5)
    assert strict.agents == () and "fewer than min_reference_windows=5" in strict.excluded["early"]


def test_bad_options() -> None:
    t = _events([{"agent": "a", "time": T0, "action": "ls"}])
    with pytest.raises(ValueError, match="feature_set"):
        compute_features(t, feature_set="some")
    with pytest.raises(ValueError, match="window_events"):
        compute_features(t, window_events=1)
    with pytest.raises(ValueError, match="exceeds"):
        compute_features(t, reference_windows=2, min_reference_windows=3)


# --------------------------------------------------------------------------- omissions


def test_features_of_absent_columns_are_omitted_with_reasons() -> None:
    rows = [{"agent": "a", "time": T0 + i * MIN, "action": "git status"} for i in range(5)]
    ft = compute_features(_events(rows), window="1h")
    assert ft.feature_names == (
        "share_safe", "share_network", "share_privesc", "share_destructive", "share_critical",
        "action_rate", "novelty_action",
    )
    assert "predicted_risk" in ft.omitted["accuracy"]
    assert "confidence" in ft.omitted["confidence_std"]
    assert "latency_ms" in ft.omitted["latency_p95"]
    assert "arguments" in ft.omitted["novelty_arguments"]
    assert "outcome" in ft.omitted["outcome_error_rate"]
    assert set(ft.omitted) | set(ft.feature_names) == set(FEATURE_NAMES) | set(ACTIVITY_FEATURES)
    with pytest.raises(KeyError, match="predicted_risk"):
        ft.feature_index("accuracy")


def test_no_risk_classes_at_all() -> None:
    rows = [{"agent": "a", "time": T0 + i * MIN, "action": "mystery", "predicted_risk": 0.5} for i in range(3)]
    ft = compute_features(_events(rows), window="1h")
    assert "no event has both a predicted_risk and a risk class" in ft.omitted["bias"]
    assert "risk class" in ft.omitted["share_safe"]
    assert ft.unmapped == {"mystery": 3}


# --------------------------------------------------------------------------- formats and engines


@pytest.mark.parametrize("suffix", [".jsonl", ".csv.gz", ".parquet", ".json"])
def test_every_format_gives_identical_features(log: pa.Table, tmp_path: Path, suffix: str) -> None:
    expected = compute_features(log, window="1h")
    back = read_events(write_events(log, tmp_path / f"e{suffix}"))
    _same(compute_features(back, window="1h"), expected)
    _same(compute_features(back, window_events=50), compute_features(log, window_events=50))


@pytest.mark.parametrize("options", [{"window": "1h"}, {"window_events": 40}, {"window": "20m"}])
def test_dask_path_equals_in_memory(log: pa.Table, tmp_path: Path, options: dict) -> None:
    folder = tmp_path / "dataset"
    folder.mkdir()
    shuffled = log.take(pa.array(np.random.default_rng(0).permutation(log.num_rows)))
    half = shuffled.num_rows // 2
    pq.write_table(shuffled.slice(0, half), folder / "part-0.parquet", row_group_size=700)
    pq.write_table(shuffled.slice(half), folder / "part-1.parquet", row_group_size=700)
    _same(features_from_dataset(folder, npartitions=3, **options), compute_features(log, **options))


@pytest.mark.parametrize("options", [{"window": "1h"}, {"window_events": 40}])
def test_streaming_path_equals_in_memory(log: pa.Table, tmp_path: Path, options: dict) -> None:
    path = tmp_path / "e.parquet"
    pq.write_table(log, path, row_group_size=450)  # agents span row groups
    _same(features_from_parquet(path, **options), compute_features(log, **options))


@pytest.mark.parametrize(("rows", "workers"), [(45, 3), (450, 2), (5000, 2), (450, 1)])
def test_streaming_path_in_processes_equals_in_memory(log: pa.Table, tmp_path: Path, rows: int, workers: int) -> None:
    path = tmp_path / "e.parquet"
    pq.write_table(log, path, row_group_size=rows)  # 45: every agent spans many row groups and ranges
    options = {"window_events": 40, "reference_windows": 5, "min_reference_windows": 2}
    _same(features_from_parquet(path, workers=workers, **options), compute_features(log, **options))


def test_streaming_path_refuses_unsorted_files(log: pa.Table, tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    pq.write_table(log.take(pa.array(np.arange(log.num_rows)[::-1])), path, row_group_size=1000)
    with pytest.raises(EventError, match="not sorted by agent"):
        features_from_parquet(path)
    swapped = pa.concat_tables([log.slice(3000), log.slice(0, 3000)])  # sorted halves, out of order at row 3001
    pq.write_table(swapped, path, row_group_size=500)
    for workers in (1, 2):
        with pytest.raises(EventError, match="row 3001, column 'agent': the file is not sorted"):
            features_from_parquet(path, workers=workers)


def test_streaming_path_names_bad_rows(log: pa.Table, tmp_path: Path) -> None:
    conf = log.column("confidence").to_pylist()
    conf[4321] = 7.0
    bad = log.set_column(log.column_names.index("confidence"), "confidence", pa.array(conf))
    path = tmp_path / "e.parquet"
    pq.write_table(bad, path, row_group_size=1000)
    with pytest.raises(EventError, match=r"row 4322, column 'confidence'"):
        features_from_parquet(path)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 150))
def test_row_order_does_not_matter(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    times = T0 + rng.choice(5 * 60 * 60, size=n, replace=False) * 1_000_000  # distinct times
    rows = [
        {"agent": f"a{rng.integers(3)}", "time": int(t), "action": str(rng.choice(["ls", "rm -rf x", "zz"])),
         "predicted_risk": float(rng.random()), "latency_ms": float(rng.random() * 9),
         "arguments": json.dumps({"f": str(rng.integers(4))})}
        for t in times
    ]
    a = compute_features(_events(rows), window="1h", reference_windows=2, min_reference_windows=0)
    rng.shuffle(rows)
    b = compute_features(_events(rows), window="1h", reference_windows=2, min_reference_windows=0)
    _same(a, b)


# --------------------------------------------------------------------------- the simulator's events


@pytest.mark.skipif(
    not hasattr(simulate, "simulate_events"), reason="simulate_events is not in this branch yet"
)
def test_simulator_events_reproduce_its_windows() -> None:
    sim = simulate.simulate_events(n_agents=40, n_nodes=4, n_windows=6, commands_per_window=50, seed=7)
    ft = compute_features(sim.table, window_events=50, feature_set="assessment", reference_windows=5)
    assert ft.feature_names == FEATURE_NAMES
    np.testing.assert_allclose(ft.windows, sim.network.windows, rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(
    not hasattr(simulate, "simulate_events"), reason="simulate_events is not in this branch yet"
)
def test_detect_streamed_equals_the_straightforward_path_on_a_simulated_log(tmp_path: Path) -> None:
    """What tcpkit detect runs (streamed, in two processes) against read whole + compute_features + judge."""
    from tcpkit.detect.alerts import judge_features, judge_table
    from tcpkit.detect.config import DetectorConfig
    from tcpkit.detect.features import features_of_files

    sim = simulate.simulate_events(n_agents=120, n_windows=8, commands_per_window=50, compromised_fraction=0.1,
                                   seed=31, **simulate.EASY_WORLD)
    path = tmp_path / "e.parquet"
    pq.write_table(validate_events(sim.table), path, row_group_size=4_000)  # 12 row groups, agents across them
    options = {"window": None, "window_events": 50, "reference_windows": 5, "min_reference_windows": 5}
    config = DetectorConfig(alpha=0.1)
    straightforward = judge_table(read_events(path), config, window=None, window_events=50, reference_windows=5)
    feats, n_events = features_of_files(path, workers=2, **options)
    _same(feats, compute_features(read_events(path), **options))
    streamed = judge_features(feats, config, n_events=n_events)
    assert streamed.to_json() == straightforward.to_json() and streamed.to_csv() == straightforward.to_csv()
    assert [a.flagged for a in streamed.agents] == [a.flagged for a in straightforward.agents]
