"""``tcpkit bench --ingest``: read + features from Parquet, tcpkit against plain pandas, in one run.

What is measured. A synthetic event log of ``n_events`` events (catalogue
commands with arguments, every optional column, ~1,000 events per agent over
one day, sorted by agent and time as :func:`~tcpkit.detect.events_write.write_events`
writes it) is written once to a Parquet file with row groups of
``row_group_rows`` events. Then each contender, in its own fresh Python
process (so that its peak resident memory is its own), reads the file and
computes the per-agent, per-hour features of :mod:`tcpkit.detect.features`:

* ``tcpkit``: :func:`~tcpkit.detect.events.read_events` (with the schema's
  validation) + :func:`~tcpkit.detect.features.compute_features`;
* ``tcpkit-stream``: :func:`~tcpkit.detect.features.features_from_parquet`,
  one row group at a time;
* ``pandas``: ``pandas.read_parquet`` + :func:`pandas_features`, a
  straightforward ``groupby`` implementation of the same features (no
  validation: it is given the advantage).

Each reports its wall time and CPU time (work only, imports excluded; CPU
time is the steadier of the two on a shared machine) and its peak resident
set size (``VmHWM`` on Linux, which, unlike ``getrusage``, does not inherit
the parent's high-water mark). The parent checks that the three feature arrays
agree (maximum absolute difference) and reports the speed ratios
``pandas / tcpkit``. The numbers are the run's own; none is quoted here.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from tcpkit.detect.features import ACTIVITY_FEATURES
from tcpkit.detect.simulate import (
    CATALOGUE,
    ERROR_TOLERANCE,
    FEATURE_NAMES,
    RISK_CLASSES,
    RISK_LEVELS,
)

__all__ = [
    "CONTENDERS",
    "format_ingest",
    "pandas_features",
    "run_ingest_benchmark",
    "synthetic_events",
]

CONTENDERS: tuple[str, ...] = ("tcpkit", "tcpkit-stream", "pandas")
WINDOW = "1h"
REFERENCE_WINDOWS = 8
_VARIANTS = 64
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def synthetic_events(n_events: int, *, events_per_agent: int = 1000, seed: int = 0) -> pa.Table:
    """A canonical event table of ``n_events`` catalogue commands, vectorised (no loop per event).

    Agents get ``events_per_agent`` events each (the last agent the rest) spread
    over one day; actions are catalogue templates drawn by weight with one of 64
    fillings of their placeholders, and ``arguments`` holds the filling.
    """
    if n_events < 1:
        raise ValueError(f"n_events must be >= 1, got {n_events}")
    rng = np.random.default_rng(seed)
    weights = np.array([t.weight for t in CATALOGUE])
    tmpl = rng.choice(len(CATALOGUE), size=n_events, p=weights / weights.sum())
    variant = rng.integers(0, _VARIANTS, n_events)
    actions: list[str] = []
    arguments: list[str | None] = []
    for t in CATALOGUE:  # 30 templates x 64 fillings: the pool, not the events
        for v in range(_VARIANTS):
            fill = {k: _filling(k, v) for k in _PLACEHOLDER.findall(t.command)}
            actions.append(t.command.format_map(fill) if fill else t.command)
            arguments.append(json.dumps(fill, separators=(", ", ": ")) if fill else None)
    pool = tmpl * _VARIANTS + variant
    agent_idx = np.arange(n_events) // events_per_agent
    n_agents = int(agent_idx[-1]) + 1
    day = 86_400_000_000
    t0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
    offsets = rng.integers(0, day, n_events)
    order = np.lexsort((offsets, agent_idx))
    offsets = offsets[order]
    level = np.array([RISK_LEVELS[t.risk_class] for t in CATALOGUE])[tmpl]
    names = pa.array([f"agent-{i:06d}" for i in range(n_agents)])
    nodes = pa.array([f"node-{i % 10:02d}" for i in range(n_agents)])
    classes = pa.array([t.risk_class for t in CATALOGUE])
    outcome = rng.choice(3, size=n_events, p=[0.9, 0.07, 0.03])
    return pa.table(
        {
            "agent": names.take(pa.array(agent_idx)),
            "time": pa.array(t0 + offsets, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "action": pa.array(actions).take(pa.array(pool)),
            "node": nodes.take(pa.array(agent_idx)),
            "risk_class": classes.take(pa.array(tmpl)),
            "predicted_risk": np.clip(level + rng.normal(0, 0.06, n_events), 0, 1),
            "confidence": np.clip(rng.normal(0.85, 0.08, n_events), 0, 1),
            "latency_ms": 120 * np.exp(rng.normal(0, 0.35, n_events)),
            "outcome": pa.array(["ok", "error", "refused"]).take(pa.array(outcome)),
            "arguments": pa.array(arguments, pa.string()).take(pa.array(pool)),
        }
    )


def _filling(name: str, v: int) -> str:
    return {
        "dir": f"/srv/app{v % 16}",
        "file": f"notes{v}.txt",
        "pattern": f"TODO{v % 8}",
        "url": f"https://example.org/pkg{v % 32}.sh",
        "user": f"user{v % 8}",
        "host": f"db{v % 4}",
        "package": f"pkg{v % 32}",
        "binary": f"/usr/bin/tool{v % 4}",
        "ref": f"HEAD~{v % 5}",
    }.get(name, f"x{v}")


# --------------------------------------------------------------------------- the pandas contender


def _family_of(actions: list[str]) -> dict[str, str | None]:
    """Catalogue family of each distinct action, with Python's re (the plain way)."""
    patterns = []
    for t in sorted(
        CATALOGUE,
        key=lambda t: (bool(_PLACEHOLDER.search(t.command)), -len(_PLACEHOLDER.sub("", t.command))),
    ):
        parts = _PLACEHOLDER.split(t.command)
        body = "".join(".+" if i % 2 else re.escape(p) for i, p in enumerate(parts))
        patterns.append((re.compile(f"^{body}$"), t.family))
    out: dict[str, str | None] = {}
    for a in actions:
        out[a] = next((fam for rx, fam in patterns if rx.match(a)), None)
    return out


def pandas_features(df: Any, *, window_us: int, reference_windows: int = REFERENCE_WINDOWS) -> Any:
    """The features of :mod:`tcpkit.detect.features` with pandas ``groupby``, time windows only.

    Returns a DataFrame indexed by (agent, window) with one column per feature
    (assessment then activity, as ``feature_set="all"``). Families come from the
    catalogue only (the benchmark's actions are catalogue commands).
    """
    import pandas as pd

    keys = ["agent", "window"]
    t = df["time"].dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[us]").astype("int64")
    origin = (int(t.min()) // window_us) * window_us
    df = df.assign(window=(t - origin) // window_us)
    level = df["risk_class"].map(RISK_LEVELS)
    df = df.assign(resid=df["predicted_risk"] - level)
    df = df.assign(absr=df["resid"].abs(), err=(df["resid"].abs() > ERROR_TOLERANCE).astype(float))
    g = df.groupby(keys, sort=True)
    n = g.size()
    out = pd.DataFrame(index=n.index)
    out["accuracy"] = 1.0 - g["absr"].mean()
    out["bias"] = g["resid"].mean()
    for name, members in (
        ("bias_safe", ["SAFE"]),
        ("bias_network_privesc", ["NETWORK", "PRIVESC"]),
        ("bias_high_risk", ["DESTRUCTIVE", "CRITICAL"]),
    ):
        out[name] = df[df["risk_class"].isin(members)].groupby(keys)["resid"].mean()
    out["error_rate"] = g["err"].mean()
    gc = df.groupby(keys + ["risk_class"])["predicted_risk"]
    within = (gc.var(ddof=0) * gc.size()).groupby(level=[0, 1]).sum()
    k = gc.size().groupby(level=[0, 1]).size()
    out["consistency"] = np.sqrt(within / np.maximum(n - k, 1))
    out["confidence_mean"] = g["confidence"].mean()
    out["confidence_std"] = g["confidence"].std(ddof=0)
    out["latency_mean"] = g["latency_ms"].mean()
    s = df[keys + ["latency_ms"]].sort_values(keys + ["latency_ms"])
    rank = s.groupby(keys).cumcount()
    size = s.groupby(keys)["latency_ms"].transform("size")
    pick = s[rank == np.ceil(0.95 * size) - 1]
    out["latency_p95"] = pick.set_index(keys)["latency_ms"]
    families = _family_of(list(df["action"].unique()))
    df = df.assign(family=df["action"].map(families))
    cell = df.groupby(keys + ["family", "risk_class"])["resid"].agg(["sum", "size"])
    under = np.maximum(-cell["sum"], 0.0) ** 2 / cell["size"]
    out["family_underrating"] = under.groupby(level=[0, 1]).sum()
    out["family_underrating"] = out["family_underrating"].fillna(0.0)
    shares = df.groupby(keys)["risk_class"].value_counts().unstack(fill_value=0)
    for c in RISK_CLASSES:
        col = shares[c] if c in shares.columns else 0
        out[f"share_{c.lower()}"] = col / n
    out["action_rate"] = n / (window_us / 60e6)
    out["novelty_action"] = _pandas_novelty(df[keys + ["action"]], "action", reference_windows)
    items = [
        (i, k + "\x1f" + json.dumps(v, separators=(", ", ": ")))
        for i, text in zip(df.index, df["arguments"], strict=True)
        if isinstance(text, str) and text
        for k, v in json.loads(text).items()
        if v is not None
    ]
    pairs = pd.DataFrame(items, columns=["row", "item"]).set_index("row")
    pairs = pairs.join(df[keys])
    out["novelty_arguments"] = _pandas_novelty(pairs, "item", reference_windows)
    has = df["outcome"].notna().groupby([df["agent"], df["window"]]).sum()
    for label in ("error", "refused"):
        hit = (df["outcome"] == label).groupby([df["agent"], df["window"]]).sum()
        out[f"outcome_{label}_rate"] = hit / has
    return out[list(FEATURE_NAMES) + [a for a in ACTIVITY_FEATURES if a not in FEATURE_NAMES]]


def _pandas_novelty(frame: Any, column: str, reference_windows: int) -> Any:
    ref = frame[frame["window"] < reference_windows]
    seen = ref.groupby(["agent", column])["window"].nunique().rename("seen")
    merged = frame.merge(seen, left_on=["agent", column], right_index=True, how="left")
    count = merged["seen"].fillna(0)
    novel = np.where(merged["window"] < reference_windows, count <= 1, count == 0)
    merged = merged.assign(novel=novel.astype(float))
    return merged.groupby(["agent", "window"])["novel"].mean()


# --------------------------------------------------------------------------- workers and the run


def _work(contender: str, path: str) -> tuple[NDArray[np.float64], float, float]:
    """Run one contender on ``path``: (windows array, wall seconds, CPU seconds)."""
    cpu = time.process_time()
    windows, seconds = _run(contender, path)
    return windows, seconds, time.process_time() - cpu


def _run(contender: str, path: str) -> tuple[NDArray[np.float64], float]:
    from tcpkit.detect.events import read_events
    from tcpkit.detect.features import compute_features, features_from_parquet, parse_duration

    if contender == "tcpkit":
        start = time.perf_counter()
        ft = compute_features(read_events(path), window=WINDOW, reference_windows=REFERENCE_WINDOWS)
        return ft.windows, time.perf_counter() - start
    if contender == "tcpkit-stream":
        start = time.perf_counter()
        ft = features_from_parquet(path, window=WINDOW, reference_windows=REFERENCE_WINDOWS)
        return ft.windows, time.perf_counter() - start
    if contender == "pandas":
        import pandas as pd

        start = time.perf_counter()
        frame = pandas_features(pd.read_parquet(path), window_us=parse_duration(WINDOW))
        seconds = time.perf_counter() - start
        agents = frame.index.get_level_values(0).unique()
        n_win = int(frame.index.get_level_values(1).max()) + 1
        full = pd.MultiIndex.from_product([agents, range(n_win)])
        dense = frame.reindex(full).to_numpy(dtype=np.float64)
        return dense.reshape(len(agents), n_win, frame.shape[1]), seconds
    raise ValueError(f"unknown contender {contender!r}: use one of {CONTENDERS}")


def _peak_rss_mib() -> float:
    """This process's peak resident set size in MiB.

    Linux: ``VmHWM`` of ``/proc/self/status``, which starts afresh at exec
    (``getrusage``'s ``ru_maxrss`` keeps the forking parent's high-water mark);
    elsewhere ``ru_maxrss``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 1024)


def _worker_main(contender: str, path: str, out: str) -> None:
    base = _peak_rss_mib()
    windows, seconds, cpu = _work(contender, path)
    peak = _peak_rss_mib()
    np.save(out, windows)
    print(
        json.dumps(
            {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mib": peak, "start_rss_mib": base}
        )
    )


def run_ingest_benchmark(
    n_events: int,
    *,
    seed: int = 0,
    row_group_rows: int = 1_000_000,
    contenders: tuple[str, ...] = CONTENDERS,
    workdir: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write the synthetic log once, run every contender in its own process, compare.

    Returns
    -------
    dict with ``n_events``, ``n_agents``, ``file_mib``, ``row_group_rows``, per
    contender ``seconds``, ``cpu_seconds``, ``peak_rss_mib`` and ``start_rss_mib``, ``ratios``
    (pandas seconds / tcpkit seconds), ``cpu_ratios`` (the same for CPU
    seconds) and ``max_abs_diff`` of each tcpkit
    contender's features against pandas'.
    """
    import pyarrow.parquet as pq

    say = progress or (lambda _msg: None)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / "events.parquet"
        say(f"writing {n_events:,} events")
        table = synthetic_events(n_events, seed=seed)
        pq.write_table(table, path, row_group_size=row_group_rows)
        n_agents = len(table.column("agent").unique())
        del table
        results: dict[str, dict[str, float]] = {}
        arrays: dict[str, NDArray[np.float64]] = {}
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parents[2])] + [p for p in [env.get("PYTHONPATH")] if p]
        )
        for contender in contenders:
            say(f"running {contender}")
            out = Path(tmp) / f"{contender}.npy"
            proc = subprocess.run(
                [sys.executable, "-m", "tcpkit.detect.bench_ingest", contender, str(path), str(out)],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"{contender} failed: {proc.stderr.strip().splitlines()[-1:]}")
            results[contender] = json.loads(proc.stdout.strip().splitlines()[-1])
            arrays[contender] = np.load(out)
        file_mib = path.stat().st_size / 2**20
    ratios = {}
    cpu_ratios = {}
    diffs = {}
    if "pandas" in results:
        for c in contenders:
            if c != "pandas":
                ratios[c] = results["pandas"]["seconds"] / results[c]["seconds"]
                cpu_ratios[c] = results["pandas"]["cpu_seconds"] / results[c]["cpu_seconds"]
                a, b = arrays[c], arrays["pandas"]
                if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
                    diffs[c] = math.inf
                else:
                    fin = ~np.isnan(a)
                    diffs[c] = float(np.max(np.abs(a[fin] - b[fin]))) if fin.any() else 0.0
    return {
        "n_events": n_events,
        "n_agents": n_agents,
        "file_mib": file_mib,
        "row_group_rows": row_group_rows,
        "window": WINDOW,
        "contenders": results,
        "ratios": ratios,
        "cpu_ratios": cpu_ratios,
        "max_abs_diff": diffs,
    }


def format_ingest(result: dict[str, Any]) -> str:
    """A small text table of :func:`run_ingest_benchmark`'s result."""
    lines = [
        f"ingest: {result['n_events']:,} events, {result['n_agents']:,} agents, "
        f"Parquet {result['file_mib']:.1f} MiB (row groups of {result['row_group_rows']:,}), "
        f"windows of {result['window']}",
        f"{'contender':<15} {'wall s':>8} {'CPU s':>8} {'peak RSS MiB':>13} {'pandas/this':>12} "
        f"{'(CPU)':>8} {'max |diff|':>11}",
    ]
    for name, r in result["contenders"].items():
        ratio = result["ratios"].get(name)
        cpu = result["cpu_ratios"].get(name)
        diff = result["max_abs_diff"].get(name)
        lines.append(
            f"{name:<15} {r['seconds']:>8.2f} {r['cpu_seconds']:>8.2f} {r['peak_rss_mib']:>13.0f} "
            f"{'' if ratio is None else f'{ratio:.2f}x':>12} {'' if cpu is None else f'{cpu:.2f}x':>8} "
            f"{'' if diff is None else f'{diff:.1e}':>11}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    _worker_main(sys.argv[1], sys.argv[2], sys.argv[3])
