"""``tcpkit bench --detect N[,N...]``: how long ``tcpkit detect`` takes on simulated fleets, phase by phase.

What is measured. For each fleet size ``N`` the simulator's log is written once, as
``tcpkit simulate --agents N --seed 424242`` writes it (20 windows x 50 commands per agent,
Parquet sorted by agent, row groups of 1e6 events; kept in ``--keep DIR`` and reused when
there). Then one fresh Python process (so that its peak resident memory is its own) runs the
pipeline of ``tcpkit detect LOG --window-events 50 --reference-windows 5 --json --csv
--html`` and times its phases:

* ``features``: :func:`tcpkit.detect.features.features_of_files` (read the Parquet file
  by row group, validate, 22 features per agent and window; one process per core, at most
  two, as ``tcpkit detect`` does; the CPU seconds of this phase are the parent's only);
* ``judge``: :func:`tcpkit.detect.alerts.judge_features` (the ``FleetDetector`` fit and
  detection, explanations, the CUSUM paths of the plotted agents);
* ``outputs``: the JSON, CSV and HTML reports written to a temporary folder;
* ``judge_audited``: the same features through ``tcpkit detect --audited`` with half the
  log's clean agents audited (:func:`tcpkit.detect.sim_events.audited_agents`, what
  ``tcpkit simulate --audited`` writes): the shipped ``NetworkDetector`` settings
  (``DetectorConfig(adaptive=True, reference_screen=True)``, alpha 0.01 as shipped),
  fitted on them and judging the others;
* ``judge_unvetted``, ``vet``, ``judge_vetted``: the operator's path without an audited list
  (:func:`_vetting`): half the agents as an unvetted reference, ``tcpkit vet`` rounds answered
  by the ground truth, and ``--audited`` on the unvetted and on the trimmed reference.

Each phase reports wall and CPU seconds (the worker processes' included); the process
reports its peak resident set size (``VmHWM``) and that of its largest worker process (they
run at the same time as the waiting parent, so the sum bounds the total). What it leaves out: ``tcpkit detect`` first verifies the frozen production
detector (hashes and signatures of two files, well under a second) and takes its
configuration; here the configuration is :class:`tcpkit.detect.config.DetectorConfig`'s
defaults with ``alpha`` = 0.1 and nothing is verified, so that no project is needed. The
machine's load is reported beside the numbers: on a shared machine wall time is the
noisier of the two.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["SEED", "format_detect", "run_detect_benchmark"]

SEED = 424242
WINDOW_EVENTS = 50
REFERENCE_WINDOWS = 5
ALPHA = 0.1
_DETECT_PHASES = ("features", "judge", "outputs")


def _peak_rss_mib() -> float:
    from tcpkit.detect.bench_ingest import _peak_rss_mib as peak

    return peak()


def _load() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def _simulate(n_agents: int, events: Path, labels: Path) -> dict[str, Any]:
    """Write the log as ``tcpkit simulate`` does (in this process): seconds and peak memory."""
    from tcpkit.detect.events_write import write_event_batches, write_labels
    from tcpkit.detect.sim_events import stream_events

    wall, cpu = time.perf_counter(), time.process_time()
    sim = stream_events(n_agents=n_agents, seed=SEED)
    _, n_events = write_event_batches(sim.batches, events)
    write_labels(sim.labels, labels)
    return {
        "events": n_events,
        "seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
        "peak_rss_mib": _peak_rss_mib(),
    }


def _detect(events: Path, labels: Path) -> dict[str, Any]:
    """The ``tcpkit detect`` pipeline on ``events`` (in this process), phase by phase."""
    import pyarrow.csv as pcsv

    from tcpkit.detect.alerts import PLOTTED_AGENTS, judge_features
    from tcpkit.detect.config import DetectorConfig
    from tcpkit.detect.features import features_of_files
    from tcpkit.detect.sim_events import audited_agents

    phases: dict[str, dict[str, float]] = {}

    def timed(name: str, work: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), _cpu_seconds()
        out = work()
        phases[name] = {"seconds": time.perf_counter() - wall, "cpu_seconds": _cpu_seconds() - cpu}
        return out

    feats, n_events = timed("features", lambda: features_of_files(
        [events], window=None, window_events=WINDOW_EVENTS, reference_windows=REFERENCE_WINDOWS,
        min_reference_windows=REFERENCE_WINDOWS, workers=None,
    ))
    report = timed("judge", lambda: judge_features(
        feats, DetectorConfig(alpha=ALPHA), n_events=n_events, plotted=PLOTTED_AGENTS
    ))

    def outputs() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for kind, text in (("json", report.to_json), ("csv", report.to_csv), ("html", report.to_html)):
                Path(tmp, f"alerts.{kind}").write_text(text(), encoding="utf-8")

    timed("outputs", outputs)
    label_table = pcsv.read_csv(labels)
    truth = label_table.to_pydict()
    compromised = {a for a, c in zip(truth["agent"], truth["compromised"], strict=True) if c}
    flagged = {a.agent for a in report.agents if a.flagged}
    audited = audited_agents(label_table, max(1, (len(truth["agent"]) - len(compromised)) // 2), SEED)
    audited_report = timed("judge_audited", lambda: judge_features(
        feats, DetectorConfig(adaptive=True, reference_screen=True), n_events=n_events, audited=audited,
        plotted=PLOTTED_AGENTS,
    ))
    flagged_audited = {a.agent for a in audited_report.agents if a.flagged}
    vetting = _vetting(feats, n_events, truth, timed)
    return {
        "events": n_events,
        "agents": len(report.agents),
        "features": len(feats.feature_names),
        "flagged": len(flagged),
        "flagged_compromised": len(flagged & compromised),
        "compromised": len(compromised),
        "audited": len(audited),
        "audited_judged": len(audited_report.agents),
        "audited_flagged": len(flagged_audited),
        "audited_flagged_compromised": len(flagged_audited & compromised),
        # the fewest agents each run could flag at all (None: nobody), whatever the data
        "fewest_flaggable": report.detector["fewest_flaggable"],
        "audited_fewest_flaggable": audited_report.detector["fewest_flaggable"],
        "vetting": vetting,
        "phases": phases,
        # the totals are one tcpkit detect run (without --audited): its three phases
        "seconds": sum(phases[p]["seconds"] for p in _DETECT_PHASES),
        "cpu_seconds": sum(phases[p]["cpu_seconds"] for p in _DETECT_PHASES),
        "peak_rss_mib": _peak_rss_mib(),
        "worker_peak_rss_mib": _children_peak_mib(),
    }


VET_BUDGET = 0.2  # the share of the candidate reference vetted (the statistics notebook's audit_budget)
VET_BATCH = 0.025  # per round (tcpkit vet's default batch)


def _vetting(feats: Any, n_events: int, truth: dict[str, list[Any]], timed: Callable[[str, Callable[[], Any]], Any]
             ) -> dict[str, Any]:
    """``tcpkit detect --audited`` on an unvetted reference, then after ``tcpkit vet`` rounds.

    The candidate reference is half of the log's agents drawn uniformly, compromised ones
    included at the fleet's rate (nobody vetted it). The ground truth answers each round of
    :func:`tcpkit.detect.audit_round.plan_audit` (the code behind ``tcpkit vet``) until
    :data:`VET_BUDGET` of the reference has a verdict, :data:`VET_BATCH` of it per round; the
    trimmed reference is then judged like the unvetted one. Recall is over the compromised
    agents outside the candidate reference (the monitored ones), false alarms over the clean
    judged agents: one fleet, one fit, so no interval.
    """
    from tcpkit.detect.alerts import judge_features
    from tcpkit.detect.audit_round import plan_audit
    from tcpkit.detect.audited import audit_rng
    from tcpkit.detect.config import DetectorConfig

    bad = {a for a, c in zip(truth["agent"], truth["compromised"], strict=True) if c}
    agents = list(feats.agents)
    reference = sorted(audit_rng(SEED).choice(agents, len(agents) // 2, replace=False).tolist())
    monitored_bad = bad & (set(agents) - set(reference))
    config = DetectorConfig(adaptive=True, reference_screen=True)

    def judged(kept: list[str], phase: str) -> dict[str, Any]:
        report = timed(phase, lambda: judge_features(feats, config, n_events=n_events, audited=kept, plotted=0))
        flagged = {a.agent for a in report.agents if a.flagged}
        clean = {a.agent for a in report.agents} - bad
        return {"recall": len(flagged & monitored_bad) / max(1, len(monitored_bad)),
                "false_alarms": len(flagged & clean), "clean_judged": len(clean)}

    before = judged(reference, "judge_unvetted")
    verdicts: dict[str, bool] = {}
    total, step = round(VET_BUDGET * len(reference)), max(1, round(VET_BATCH * len(reference)))

    def rounds() -> Any:
        while len(verdicts) < total:
            plan = plan_audit(feats, reference, verdicts, min(step, total - len(verdicts)))
            verdicts.update({a: a in bad for a in plan.next_batch})
        return plan_audit(feats, reference, verdicts, 1)

    plan = timed("vet", rounds)
    after = judged(list(plan.trimmed()), "judge_vetted")
    return {
        "reference": len(reference),
        "reference_compromised": len(bad & set(reference)),
        "vetted": len(verdicts),
        "confirmed": len(plan.confirmed),
        "monitored_compromised": len(monitored_bad),
        "unvetted": before,
        "after": after,
    }


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished worker processes."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _children_peak_mib() -> float:
    """Peak resident set size of the largest finished worker process (0 without workers)."""
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)


def _child(task: str, *args: str) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[2])] + [p for p in [env.get("PYTHONPATH")] if p]
    )
    env.setdefault("MPLBACKEND", "Agg")
    proc = subprocess.run(
        [sys.executable, "-m", "tcpkit.detect.bench_detect", task, *args],
        capture_output=True, text=True, env=env, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{task} failed: {proc.stderr.strip().splitlines()[-1:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run_detect_benchmark(
    agents: Sequence[int],
    *,
    keep: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Simulate (or reuse from ``keep``) each fleet's log and time the detect pipeline on it.

    Returns ``{"seed", "window_events", "reference_windows", "alpha", "cpus", "runs": [...]}``,
    one run per fleet size with ``simulate`` (None when the log was reused) and ``detect``
    (phases, totals, peak RSS, flagged agents and how many of them are compromised) and the
    load average before and after.
    """
    say = progress or (lambda _msg: None)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(keep) if keep is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for n in agents:
            events = folder / f"events-{n}-{SEED}.parquet"
            labels = folder / f"labels-{n}-{SEED}.csv"
            simulated = None
            if not (events.exists() and labels.exists()):
                say(f"simulating {n:,} agents")
                simulated = _child("simulate", str(n), str(events), str(labels))
            say(f"detecting on {n:,} agents")
            before = _load()
            detected = _child("detect", str(events), str(labels))
            runs.append({
                "agents": n,
                "file_mib": events.stat().st_size / 2**20,
                "simulate": simulated,
                "detect": detected,
                "load_before": before,
                "load_after": _load(),
            })
    return {
        "seed": SEED,
        "window_events": WINDOW_EVENTS,
        "reference_windows": REFERENCE_WINDOWS,
        "alpha": ALPHA,
        "cpus": os.cpu_count(),
        "runs": runs,
    }


def format_detect(result: dict[str, Any]) -> str:
    """A small text table of :func:`run_detect_benchmark`'s result."""
    lines = [
        f"tcpkit detect on simulated fleets (seed {result['seed']}, --window-events {result['window_events']} "
        f"--reference-windows {result['reference_windows']}, alpha {result['alpha']}; {result['cpus']} CPUs)",
        f"{'agents':>8} {'events':>12} {'features s':>11} {'judge s':>8} {'outputs s':>10} {'total s':>8} "
        f"{'CPU s':>7} {'peak RSS MiB':>13} {'worker MiB':>11} {'flagged':>8} {'load':>10}",
    ]
    for run in result["runs"]:
        d = run["detect"]
        ph = d["phases"]
        load = "/".join("?" if x is None else f"{x:.1f}" for x in (run["load_before"], run["load_after"]))
        lines.append(
            f"{run['agents']:>8,} {d['events']:>12,} {ph['features']['seconds']:>11.1f} {ph['judge']['seconds']:>8.1f} "
            f"{ph['outputs']['seconds']:>10.1f} {d['seconds']:>8.1f} {d['cpu_seconds']:>7.1f} "
            f"{d['peak_rss_mib']:>13.0f} {d['worker_peak_rss_mib']:>11.0f} {d['flagged']:>8,} {load:>10}"
        )
        lines.append(
            f"{'':>8} {d['flagged_compromised']:,} of the {d['compromised']:,} compromised among the flagged "
            f"(it can flag no fewer than {_fewest(d['fewest_flaggable'])}); "
            f"--audited ({d['audited']:,} audited, {d['audited_judged']:,} judged, alpha 0.01): "
            f"{ph['judge_audited']['seconds']:.1f} s, {d['audited_flagged']:,} flagged, "
            f"{d['audited_flagged_compromised']:,} of them compromised "
            f"(no fewer than {_fewest(d['audited_fewest_flaggable'])})"
        )
        v = d["vetting"]
        lines.append(
            f"{'':>8} unvetted reference ({v['reference']:,} agents, {v['reference_compromised']:,} compromised), "
            f"--audited: recall {v['unvetted']['recall']:.2f} of the {v['monitored_compromised']:,} monitored "
            f"compromised, {v['unvetted']['false_alarms']} false alarms; after tcpkit vet ({v['vetted']:,} vetted, "
            f"{v['confirmed']:,} confirmed compromised, {ph['vet']['seconds']:.1f} s): recall {v['after']['recall']:.2f}, "
            f"{v['after']['false_alarms']} false alarms of {v['after']['clean_judged']:,} clean"
        )
        if run["simulate"] is not None:
            s = run["simulate"]
            lines.append(f"{'':>8} (simulate: {s['seconds']:.1f} s, {s['peak_rss_mib']:.0f} MiB peak)")
    return "\n".join(lines)


def _fewest(k: int | None) -> str:
    return "any: it can flag nobody" if k is None else f"{k:,}"


if __name__ == "__main__":
    task, *rest = sys.argv[1:]
    if task == "simulate":
        out = _simulate(int(rest[0]), Path(rest[1]), Path(rest[2]))
    elif task == "detect":
        out = _detect(Path(rest[0]), Path(rest[1]))
    else:
        raise SystemExit(f"unknown task {task!r}")
    print(json.dumps(out))
