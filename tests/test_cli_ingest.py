"""`tcpkit simulate` (with a stand-in event stream), streamed event writing, and `tcpkit bench --ingest`."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest

from tcpkit import cli
from tcpkit.detect import sim_events, simulate
from tcpkit.detect.bench_ingest import synthetic_events
from tcpkit.detect.events import EventError, read_events, validate_events
from tcpkit.detect.events_write import write_event_batches, write_events


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A stand-in for the simulator's event stream that records its arguments."""
    seen: dict = {}

    def stream_events(**params: object) -> SimpleNamespace:
        seen.update(params)
        if params.get("strength", 1.0) < 0:
            raise ValueError("strength must be a real number >= 0.0 and finite, got -1.0")
        n = int(params["n_agents"])  # type: ignore[call-overload]
        table = synthetic_events(n * 20, events_per_agent=20, seed=int(params["seed"]))  # type: ignore[call-overload]
        labels = {
            "agent": [f"agent-{i:06d}" for i in range(n)],
            "compromised": [i % 2 == 0 for i in range(n)],
            "attack": ["mimicry" if i % 2 == 0 else None for i in range(n)],
            "attack_start_window": [5] * n,
            "extra": [0] * n,
        }
        return SimpleNamespace(batches=iter(table.to_batches(max_chunksize=50)), labels=labels, network=None)

    monkeypatch.setattr(sim_events, "stream_events", stream_events)
    return seen


def test_simulate_writes_events_and_labels(fake: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out, labels = tmp_path / "e.parquet", tmp_path / "l.csv"
    code = cli.main(["simulate", "--agents", "6", "--seed", "3", "--out", str(out), "--labels", str(labels),
                     "--nodes", "2", "--windows", "4", "--commands-per-window", "10", "--compromised", "0.5",
                     "--attacks", "mimicry, poisoning", "--strength", "0.5", "--difficulty", "easy"])
    assert code == 0
    assert fake == {"n_agents": 6, "seed": 3, "n_nodes": 2, "n_windows": 4, "commands_per_window": 10,
                    "compromised_fraction": 0.5, "strength": 0.5, "difficulty": "easy",
                    "attacks": ("mimicry", "poisoning")}
    assert read_events(out).equals(validate_events(synthetic_events(120, events_per_agent=20, seed=3)))
    with labels.open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["agent", "compromised", "attack", "attack_start_window"]
    assert rows[0]["compromised"] == "true" and rows[1]["attack"] == ""
    assert "wrote 120 events of 6 agents" in capsys.readouterr().out


@pytest.mark.parametrize(("name", "fmt"), [("e.jsonl.gz", None), ("e.json", None), ("e.log", "csv")])
def test_simulate_any_format(fake: dict, tmp_path: Path, name: str, fmt: str | None) -> None:
    out = tmp_path / name
    args = ["simulate", "--agents", "2", "--seed", "1", "--out", str(out)] + (["--format", fmt] if fmt else [])
    assert cli.main(args) == 0
    assert read_events(out, format=fmt).num_rows == 40


def test_simulate_bad_input_writes_nothing(fake: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["simulate", "--agents", "2", "--seed", "1", "--out", str(tmp_path / "e.xml")]) == 2
    assert "cannot tell the format" in capsys.readouterr().err
    assert cli.main(["simulate", "--agents", "2", "--seed", "1", "--out", str(tmp_path / "no" / "e.csv")]) == 2
    assert cli.main(["simulate", "--agents", "0", "--seed", "1", "--out", str(tmp_path / "e.csv")]) == 2
    assert cli.main(["simulate", "--agents", "2", "--seed", "1", "--strength", "-1",
                     "--out", str(tmp_path / "e.csv")]) == 2
    assert "strength" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_simulate_without_simulate_events(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delattr(simulate, "simulate_events", raising=False)
    assert cli.main(["simulate", "--agents", "2", "--seed", "1", "--out", str(tmp_path / "e.csv")]) == 1


@pytest.mark.parametrize("name", ["e.parquet", "e.jsonl", "e.csv.gz", "e.json"])
def test_batches_write_the_file_write_events_writes(tmp_path: Path, name: str) -> None:
    table = validate_events(synthetic_events(3000, events_per_agent=70, seed=5))
    whole = read_events(write_events(table, tmp_path / f"whole-{name}"))
    path, rows = write_event_batches(table.to_batches(max_chunksize=700), tmp_path / name)
    assert rows == table.num_rows
    assert read_events(path).equals(whole)


def test_batches_out_of_agent_order_write_nothing(tmp_path: Path) -> None:
    table = validate_events(synthetic_events(300, events_per_agent=100, seed=5))
    batches = table.to_batches(max_chunksize=100)
    with pytest.raises(EventError, match="batch 2 .* agent order"):
        write_event_batches([batches[2], batches[0]], tmp_path / "e.parquet")
    assert list(tmp_path.iterdir()) == []


def test_streamed_simulation_is_the_simulation() -> None:
    params = {"n_agents": 1500, "n_windows": 6, "commands_per_window": 10, "seed": 9}
    whole = sim_events.simulate_events(**params)
    streamed = sim_events.stream_events(**params)
    assert pa.Table.from_batches(list(streamed.batches)).equals(whole.table)
    assert streamed.labels.equals(whole.labels)


@pytest.mark.slow
def test_bench_ingest_runs_and_agrees(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "ingest.json"
    assert cli.main(["bench", "--ingest", "3000", "--json", str(target)]) == 0
    result = json.loads(target.read_text())
    assert result["n_events"] == 3000
    assert set(result["contenders"]) == {"tcpkit", "tcpkit-stream", "pandas"}
    for name in ("tcpkit", "tcpkit-stream"):
        assert result["ratios"][name] > 0
        assert result["max_abs_diff"][name] < 1e-9  # the same features as the pandas groupby
        assert result["contenders"][name]["peak_rss_mib"] > 0
    assert "pandas/this" in capsys.readouterr().out


def test_labels_need_their_columns(tmp_path: Path) -> None:
    from tcpkit.detect.events import EventError
    from tcpkit.detect.events_write import write_labels

    with pytest.raises(EventError, match="attack_start_window"):
        write_labels(pa.table({"agent": ["a"], "compromised": [True], "attack": ["x"]}), tmp_path / "l.csv")


@pytest.mark.slow
def test_bench_detect_runs_and_reuses_its_logs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target, keep = tmp_path / "detect.json", tmp_path / "logs"
    assert cli.main(["bench", "--detect", "300", "--keep", str(keep), "--json", str(target)]) == 0
    run = json.loads(target.read_text())["runs"][0]
    assert run["agents"] == 300 and run["detect"]["events"] == 300_000 and run["simulate"]["events"] == 300_000
    assert set(run["detect"]["phases"]) == {"features", "judge", "outputs", "judge_audited", "judge_unvetted", "vet",
                                            "judge_vetted"}
    assert run["detect"]["audited"] + run["detect"]["audited_judged"] == 300
    v = run["detect"]["vetting"]
    assert v["reference"] == 150 and v["vetted"] == 30  # a fifth of the candidate reference
    assert 0 <= v["confirmed"] <= v["reference_compromised"] and 0.0 <= v["after"]["recall"] <= 1.0
    assert run["detect"]["peak_rss_mib"] > 0 and run["detect"]["agents"] == 300
    for fewest, flagged in (("fewest_flaggable", "flagged"), ("audited_fewest_flaggable", "audited_flagged")):
        k, n = run["detect"][fewest], run["detect"][flagged]  # BH never flags a group smaller than k
        assert n == 0 if k is None else (n == 0 or n >= k >= 1)
    printed = capsys.readouterr().out
    assert "features s" in printed and "no fewer than" in printed and "after tcpkit vet (30 vetted" in printed
    assert cli.main(["bench", "--detect", "300", "--keep", str(keep), "--json", str(target)]) == 0
    assert json.loads(target.read_text())["runs"][0]["simulate"] is None  # the kept log was reused
