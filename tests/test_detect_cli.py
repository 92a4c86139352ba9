"""``tcpkit detect`` and ``tcpkit monitor`` on simulated event logs, with a frozen, verified detector."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tcpkit.cli import main
from tcpkit.detect.config import DetectorConfig, build_detector
from tcpkit.detect.events_write import write_events
from tcpkit.detect.simulate import EASY_WORLD, FEATURE_NAMES, simulate_events, simulate_network
from tcpkit.release.fixture import freeze_for_checks
from tcpkit.release.metrics import model_bytes

pytestmark = pytest.mark.slow
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose 'integrated' component is frozen with a model (signed by a fixture key)."""
    root = tmp_path_factory.mktemp("project")
    reference = simulate_network(n_agents=200, compromised_fraction=0.0, attacks=(), seed=5, **EASY_WORLD)
    det = build_detector(DetectorConfig(features=FEATURE_NAMES, alpha=0.1)).fit(reference.windows)
    freeze_for_checks(root, NOTEBOOKS, ("integrated",), models={"integrated": model_bytes(det.to_arrays())})
    return root


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bool]]:
    sim = simulate_events(n_agents=600, compromised_fraction=0.1, seed=17, **EASY_WORLD)
    path = tmp_path_factory.mktemp("log") / "events.parquet"
    write_events(sim.table, path)
    labels = dict(zip(sim.labels.column("agent").to_pylist(), sim.labels.column("compromised").to_pylist(), strict=True))
    return path, labels


def test_detect_flags_the_compromised_agents_and_writes_every_output(
    project: Path, log: tuple[Path, dict[str, bool]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events, labels = log
    out = tmp_path / "a.json"
    code = main(["detect", str(events), "--root", str(project), "--window-events", "50",
                 "--json", str(out), "--csv", str(tmp_path / "a.csv"), "--html", str(tmp_path / "a.html")])
    assert code == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert doc["detector"]["component"] == "integrated" and len(doc["detector"]["model_sha256"]) == 64
    flagged = {a["agent"] for a in doc["agents"] if a["flagged"]}
    truth = {a for a, c in labels.items() if c}
    assert len(flagged & truth) >= 0.5 * len(truth)
    assert len(flagged - truth) <= max(3, 0.2 * len(flagged))
    assert (tmp_path / "a.html").read_text().startswith("<!DOCTYPE html>")
    assert main(["detect", str(events), "--root", str(project), "--window-events", "50", "--fail-on-alert"]) == 3


def test_detect_refuses_a_tampered_model(
    project: Path, log: tuple[Path, dict[str, bool]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(project, copy)
    model = copy / "production" / "integrated.model.npz"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 1
    model.write_bytes(bytes(data))
    assert main(["detect", str(log[0]), "--root", str(copy), "--json", str(tmp_path / "x.json")]) == 1
    err = capsys.readouterr().err
    assert "not usable" in err and "integrated" in err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--window", "7 parsecs"], "window"),
        (["--reference-until", "yesterday"], "ISO-8601"),
        (["--window-events", "1"], "window-events"),
        (["--json", "/no/such/dir/a.json"], "directory does not exist"),
    ],
)
def test_detect_usage_errors_are_one_line(
    project: Path, log: tuple[Path, dict[str, bool]], extra: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["detect", str(log[0]), "--root", str(project), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err


def test_detect_names_a_bad_event_file(project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"agent": "a", "time": "not a time", "action": "ls"}\n')
    assert main(["detect", str(bad), "--root", str(project)]) == 1
    err = capsys.readouterr().err
    assert "bad.jsonl" in err and "time" in err


# -- monitor -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """A time-ordered JSON Lines log of a small fleet, as lines.

    The simulator's agents run on their own clocks; here every agent's k-th action is re-timed
    to ``k * 72 s`` so that each hour holds exactly one simulated window of 50 actions for every
    agent (the test is about the monitor's bookkeeping, not about clocks).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    sim = simulate_events(n_agents=300, n_windows=10, compromised_fraction=0.1, seed=23, **EASY_WORLD)
    table = sim.table.sort_by([("agent", "ascending"), ("time", "ascending")])
    per_agent = 10 * 50
    k = np.tile(np.arange(per_agent, dtype=np.int64), table.num_rows // per_agent)
    start = pc.min(table.column("time").cast("int64")).as_py() // 3_600_000_000 * 3_600_000_000
    times = pa.array(start + k * 72_000_000, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    table = table.set_column(table.schema.get_field_index("time"), "time", times)
    path = tmp_path_factory.mktemp("stream") / "all.jsonl"
    write_events(table, path)  # canonical JSON Lines, one agent after the other
    lines = path.read_bytes().splitlines(keepends=True)
    order = np.lexsort((np.repeat(np.arange(table.num_rows // per_agent), per_agent), k))
    return [lines[i] for i in order]  # as a live log grows: in time order


def _monitor_cmd(project: Path, log: Path, state: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tcpkit.cli", "monitor", str(log), "--state", str(state), "--root", str(project),
            "--window", "1h", "--reference-windows", "5", "--alpha", "0.1", *extra]


def _log(state: Path) -> list[dict]:
    """The committed alert log of a state directory (alerts.jsonl up to the length state.json records)."""
    doc = json.loads((state / "state.json").read_text())
    data = (state / "alerts.jsonl").read_bytes()[: doc["alerts_bytes"]] if doc["alerts_bytes"] else b""
    return [json.loads(line) for line in data.splitlines()]


def _alerts(state: Path) -> list[str]:
    return [a["agent"] for a in _log(state)]


def _emitted(state: Path) -> int:
    return int(json.loads((state / "state.json").read_text())["emitted"]) if (state / "state.json").exists() else 0


def _printed(out: str) -> list[dict]:
    """The complete JSON lines a monitor printed (a kill can cut the last one short)."""
    lines = []
    for line in out.splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return lines


def test_monitor_killed_at_any_instant_neither_loses_nor_repeats_an_alert(
    project: Path, stream: list[bytes], tmp_path: Path
) -> None:
    # the reference: the whole log at once
    whole = tmp_path / "whole.jsonl"
    whole.write_bytes(b"".join(stream))
    ref_state = tmp_path / "ref"
    done = subprocess.run(_monitor_cmd(project, whole, ref_state, "--once"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    expected = _log(ref_state)
    assert expected, "the reference run raised no alert: the test would prove nothing"
    assert [a["seq"] for a in expected] == list(range(1, len(expected) + 1))
    assert len({a["id"] for a in expected}) == len(expected)
    assert _printed(done.stdout) == expected

    # the same log, growing while a monitor is killed at random instants and restarted
    growing, state = tmp_path / "growing.jsonl", tmp_path / "state"
    growing.write_bytes(b"")
    rng = np.random.default_rng(0)
    printed: list[dict] = []
    written = 0
    kills = 0
    while written < len(stream):
        marked = _emitted(state)  # what the committed state says was printed before this start
        proc = subprocess.Popen(_monitor_cmd(project, growing, state, "--poll", "0.05"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        step = int(rng.integers(len(stream) // 8, len(stream) // 3))
        with open(growing, "ab") as f:
            f.write(b"".join(stream[written:written + step]))
        written += step
        time.sleep(float(rng.uniform(0.3, 2.5)))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        kills += 1
        lines = _printed(out)
        assert all(a["seq"] > marked for a in lines), "an alert marked as printed was printed again"
        printed += lines
    marked = _emitted(state)
    final = subprocess.run(_monitor_cmd(project, growing, state, "--once"), capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    lines = _printed(final.stdout)
    assert all(a["seq"] > marked for a in lines)
    printed += lines
    assert kills >= 3
    assert _log(state) == expected  # the alert log: every alert, once, in order, same ids and seq
    ids = [a["id"] for a in printed]
    assert set(ids) == {a["id"] for a in expected}  # nothing printed was lost
    # a repeat is the one alert being printed when a kill landed: at most one per kill
    assert len(ids) - len(set(ids)) <= kills
    assert {a["id"]: a for a in printed} == {a["id"]: a for a in expected}  # a consumer dedupes by id


def test_monitor_state_is_the_source_of_truth_across_crashes(
    stream: list[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tcpkit.detect import monitor as mon

    config = DetectorConfig(features=FEATURE_NAMES, alpha=0.1)
    info = {"module_sha256": "a" * 64, "model_sha256": "b" * 64}
    data = b"".join(stream)

    def run(state: Path, emit: object) -> mon.Monitor:
        m = mon.Monitor(state, config, window="1h", reference_windows=5, detector_info=info, emit=emit)  # type: ignore[arg-type]
        m.feed(data[m.state.source_offset:]) if m.state.source_offset < len(data) else None
        return m

    clean: list[dict] = []
    reference = run(tmp_path / "clean", clean.append).alerts()
    assert clean == reference and len(reference) >= 2

    # killed after printing the second alert, before the commit that marks it printed
    class Killed(BaseException):
        pass

    shown: list[dict] = []

    def emit_then_die(alert: dict) -> None:
        shown.append(alert)
        if alert["seq"] == 2:
            raise Killed

    with pytest.raises(Killed):
        run(tmp_path / "s1", emit_then_die)
    run(tmp_path / "s1", shown.append)
    assert [a["seq"] for a in shown] == [1, 2] + [a["seq"] for a in reference[1:]]  # only #2 twice
    assert mon.Monitor(tmp_path / "s1", config, window="1h", reference_windows=5, detector_info=info,
                       emit=shown.append).alerts() == reference

    # killed after the alerts were appended to the log, before the state commit that accounts for them
    real_commit = mon.Monitor._commit
    calls = {"n": 0}

    def commit_then_die(self: mon.Monitor, state: mon.MonitorState) -> None:
        calls["n"] += 1
        if state.alerts and calls["n"] == 1:
            raise Killed
        real_commit(self, state)

    monkeypatch.setattr(mon.Monitor, "_commit", commit_then_die)
    seen: list[dict] = []
    with pytest.raises(Killed):
        run(tmp_path / "s2", seen.append)
    assert seen == [] and (tmp_path / "s2" / "alerts.jsonl").stat().st_size > 0  # appended, not committed
    monkeypatch.setattr(mon.Monitor, "_commit", real_commit)
    m = run(tmp_path / "s2", seen.append)
    assert seen == reference and m.alerts() == reference  # the redone step: same alerts, once
    assert len((tmp_path / "s2" / "alerts.jsonl").read_bytes().splitlines()) == len(reference)


def test_alert_ids_are_stable_and_distinct() -> None:
    from tcpkit.detect.monitor import alert_id

    det = {"module_sha256": "a" * 64, "model_sha256": "b" * 64}
    settings = {"window": "1h", "reference_windows": 5}
    one = alert_id(det, settings, "agent-1", 7)
    assert one == alert_id(dict(det), dict(settings), "agent-1", 7) and len(one) == 24
    others = {
        alert_id(det, settings, "agent-2", 7),
        alert_id(det, settings, "agent-1", 8),
        alert_id({**det, "model_sha256": "c" * 64}, settings, "agent-1", 7),
        alert_id(det, {**settings, "window": "30m"}, "agent-1", 7),
    }
    assert one not in others and len(others) == 4


def test_monitor_refuses_a_damaged_state(project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "s"
    state.mkdir()
    (state / "state.json").write_text("{not json")
    log = tmp_path / "e.jsonl"
    log.write_text("")
    assert main(["monitor", str(log), "--state", str(state), "--root", str(project), "--once"]) == 1
    assert "damaged" in capsys.readouterr().err


def test_monitor_reads_standard_input(project: Path, stream: list[bytes], tmp_path: Path) -> None:
    state = tmp_path / "stdin"
    env = {**os.environ}
    done = subprocess.run(
        [sys.executable, "-m", "tcpkit.cli", "monitor", "-", "--state", str(state), "--root", str(project),
         "--window", "1h", "--reference-windows", "5", "--alpha", "0.1"],
        input=b"".join(stream), capture_output=True, timeout=300, env=env,
    )
    assert done.returncode == 0, done.stderr
    assert _alerts(state)


def test_simulate_writes_an_audited_list_of_clean_agents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events, labels, audited = tmp_path / "e.parquet", tmp_path / "l.csv", tmp_path / "audited.txt"
    assert main(["simulate", "--agents", "200", "--seed", "3", "--out", str(events), "--labels", str(labels),
                 "--audited", str(audited), "--audited-agents", "50"]) == 0
    names = audited.read_text().split()
    compromised = {row.split(",")[0].strip('"'): row.split(",")[1] for row in labels.read_text().splitlines()[1:]}
    assert len(names) == len(set(names)) == 50
    assert all(compromised[n] == "false" for n in names)
    assert main(["simulate", "--agents", "20", "--seed", "3", "--out", str(events), "--audited-agents", "5"]) == 2
    assert "--audited-agents needs --audited" in capsys.readouterr().err


def test_detect_with_an_audited_reference_runs_the_network_detector(
    project: Path, log: tuple[Path, dict[str, bool]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events, labels = log
    clean = sorted(a for a, c in labels.items() if not c)
    audited = tmp_path / "audited.csv"
    audited.write_text("agent,note\n" + "".join(f"{a},vetted\n" for a in clean[::2]))
    out = tmp_path / "a.json"
    code = main(["detect", str(events), "--root", str(project), "--window-events", "50", "--audited", str(audited),
                 "--json", str(out), "--html", str(tmp_path / "a.html")])
    assert code == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert doc["detector"]["detector"] == "NetworkDetector" and doc["detector"]["audited_agents"] == len(clean[::2])
    judged = {a["agent"] for a in doc["agents"]}
    assert not judged & set(clean[::2]) and len(judged) == len(labels) - len(clean[::2])
    flagged = {a["agent"] for a in doc["agents"] if a["flagged"]}
    truth = {a for a, c in labels.items() if c}
    assert len(flagged & truth) >= 0.7 * len(truth) and len(flagged - truth) <= max(3, 0.2 * len(flagged))
    printed = capsys.readouterr().out
    assert "audited agents" in printed
    assert f"flags no group of fewer than {doc['detector']['fewest_flaggable']} of the {len(judged)}" in printed
    audited.write_text("agent-does-not-exist\n")
    assert main(["detect", str(events), "--root", str(project), "--audited", str(audited), "--window-events", "50",
                 "--json", str(tmp_path / "b.json")]) == 1
    assert "have no events in the log: 'agent-does-not-exist'" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()
    audited.write_text("")
    assert main(["detect", str(events), "--root", str(project), "--audited", str(audited)]) == 2
    assert "the agent list is empty" in capsys.readouterr().err


def test_monitor_with_an_audited_reference_judges_the_others_and_keeps_to_its_list(
    project: Path, stream: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = simulate_events(n_agents=300, n_windows=10, compromised_fraction=0.1, seed=23, **EASY_WORLD)
    truth = dict(zip(sim.labels.column("agent").to_pylist(), sim.labels.column("compromised").to_pylist(), strict=True))
    clean = sorted(a for a, c in truth.items() if not c)
    listed = tmp_path / "audited.txt"
    listed.write_text("".join(f"{a}\n" for a in clean[::2]) + "agent-not-yet-seen\n")
    log = tmp_path / "e.jsonl"
    log.write_bytes(b"".join(stream))
    state = tmp_path / "s"
    args = ["monitor", str(log), "--state", str(state), "--root", str(project), "--window", "1h",
            "--reference-windows", "5", "--alpha", "0.1", "--audited", str(listed), "--once"]
    assert main(args) == 0, capsys.readouterr().err
    alerted = set(_alerts(state))
    assert alerted and not alerted & set(clean[::2])  # the audited agents are the reference, never judged
    assert sum(truth[a] for a in alerted) >= 0.7 * len(alerted)
    assert {a["test"] for a in _log(state)} <= {"change", "level", "cusum", "family", "adaptive"}  # NetworkDetector's
    listed.write_text("".join(f"{a}\n" for a in clean[1::2]))
    assert main(args) == 1
    assert "was started with" in capsys.readouterr().err  # another list: another state directory


def _vet_command(events: Path, reference: list[str], tmp_path: Path) -> list[str]:
    """``tcpkit vet`` on the log with ``reference`` written as its candidate reference list."""
    listed = tmp_path / "reference.txt"
    listed.write_text("".join(f"{a}\n" for a in reference))
    return ["vet", str(events), "--window-events", "50", "--reference-windows", "5", "--candidates", str(listed)]


def test_vet_rounds_then_detect_on_the_trimmed_reference(
    project: Path, log: tuple[Path, dict[str, bool]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events, labels = log
    agents = sorted(labels)
    common = _vet_command(events, agents[:300], tmp_path)
    first = tmp_path / "round1.csv"
    assert main([*common, "--batch", "30", "--out", str(first)]) == 0, capsys.readouterr().err
    assert "next batch (30)" in capsys.readouterr().out
    rows = first.read_text().splitlines()
    assert rows[0] == "agent,verdict,position,outlyingness" and len(rows) == 31
    proposed = [r.split(",")[0] for r in rows[1:]]
    first.write_text(rows[0] + "\n" + "".join(
        f"{a},{'compromised' if labels[a] else 'clean'},{r.split(',', 2)[2]}\n" for a, r in zip(proposed, rows[1:], strict=True)))
    second, trimmed = tmp_path / "round2.csv", tmp_path / "trimmed.txt"
    assert main([*common, "--verdicts", str(first), "--batch", "30", "--out", str(second),
                 "--trimmed", str(trimmed)]) == 0
    printed = capsys.readouterr().out
    confirmed = {a for a in proposed if labels[a]}
    assert confirmed and f"audited 30: {len(confirmed)} compromised" in printed
    assert not {r.split(",")[0] for r in second.read_text().splitlines()[1:]} & set(proposed)
    kept = trimmed.read_text().split()
    assert kept == [a for a in agents[:300] if a not in confirmed]
    out = tmp_path / "a.json"
    assert main(["detect", str(events), "--root", str(project), "--window-events", "50", "--reference-windows", "5",
                 "--audited", str(trimmed), "--json", str(out)]) == 0, capsys.readouterr().err
    judged = {a["agent"] for a in json.loads(out.read_text())["agents"]}
    assert confirmed <= judged and not judged & set(kept)  # the confirmed ones are judged, the kept ones fit


def test_vet_names_bad_input(
    log: tuple[Path, dict[str, bool]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events, labels = log
    agents = sorted(labels)
    common = _vet_command(events, agents[:100], tmp_path)
    verdicts = tmp_path / "v.csv"
    verdicts.write_text(f"agent,verdict\n{agents[-1]},clean\n")
    assert main([*common, "--verdicts", str(verdicts)]) == 1
    assert f"1 judged agents are not in the reference: '{agents[-1]}'" in capsys.readouterr().err
    verdicts.write_text(f"agent,verdict\n{agents[0]},perhaps\n")
    assert main([*common, "--verdicts", str(verdicts)]) == 2
    assert "v.csv, line 2: agent" in capsys.readouterr().err
    assert main([*common, "--batch", "0"]) == 2
    assert main([*common, "--out", str(tmp_path / "missing" / "b.csv")]) == 2
    assert "its directory does not exist" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()


def test_an_output_that_is_a_directory_is_a_usage_error(
    log: tuple[Path, dict[str, bool]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events, labels = log
    common = _vet_command(events, sorted(labels)[:100], tmp_path)
    assert main([*common, "--out", str(tmp_path)]) == 2
    assert "is a directory: give the name of the file to write" in capsys.readouterr().err
    assert main(["detect", str(events), "--json", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["simulate", "--agents", "20", "--seed", "1", "--out", str(tmp_path)]) == 2
    assert not list(tmp_path.glob(".*.tmp"))  # nothing half-written was left behind
    assert main([*common, "--reference-windows", "30"]) == 1
    assert "no agent has 30 reference windows: nothing to rank" in capsys.readouterr().err
