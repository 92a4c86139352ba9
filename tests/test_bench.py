"""The benchmark runs end to end and reports every field; no timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tcpkit.cli import main
from tcpkit.detect.bench import (
    SCHEMA,
    BenchConfig,
    BenchError,
    format_table,
    memory_efficiency,
    run_benchmark,
)

TINY = BenchConfig(
    agents=3_000,
    features=4,
    dtype="float64",
    repeats=2,
    scaling=(1_000, 3_000, 5_000),
    stream_agents=20_000,
    stream_chunk_rows=4_096,
    scipy_rows=50,
    fit_rows=120,
    calibration_rows=200,
    bandwidth_bytes=8 * 1024 * 1024,
    min_seconds=0.0,
)

METHODS = {
    "tcpkit",
    "tcpkit_out",
    "tcpkit_detect",
    "tcpkit_detect_all_p",
    "tcpkit_detect_conformal",
    "tcpkit_detect_conformal_all_p",
    "scipy",
    "numpy",
    "sklearn",
    "pyod",
    "baseline_detect",
}


def _positive(x: Any) -> bool:
    return isinstance(x, int | float) and np.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    return run_benchmark(TINY)


def test_schema_and_methods(result: dict[str, Any]) -> None:
    assert result["schema"] == SCHEMA
    assert {m["name"] for m in result["methods"]} == METHODS
    for entry in result["methods"]:
        if entry["status"] in ("not installed", "not available"):
            assert entry["name"] in ("pyod", "baseline_detect")
            assert entry["ns_per_agent"] is None
            continue
        assert entry["status"] == "ok"
        s = entry["ns_per_agent"]
        assert 0 < s["min"] <= s["median"] <= s["max"]
        assert _positive(entry["agents_per_second"]) and _positive(entry["ratio_to_tcpkit"])
        assert entry["peak_memory_bytes"] >= 0 and entry["timed_agents"] >= 1
    assert result["methods"][0]["ratio_to_tcpkit"] == 1.0
    scipy_entry = next(m for m in result["methods"] if m["name"] == "scipy")
    assert scipy_entry["timed_agents"] == 50
    assert json.loads(json.dumps(result)) == result  # JSON-safe


def test_machine_bandwidth_and_agreement(result: dict[str, Any]) -> None:
    machine = result["machine"]
    assert machine["numpy"] == np.__version__ and machine["cores_available"] >= 1
    assert isinstance(machine["cpu"], str) and machine["cpu"]
    assert isinstance(machine["blas"], list)
    bw = result["bandwidth"]
    assert _positive(bw["bytes_per_second"]) and bw["bytes_per_agent"] == 5 * 8
    assert bw["bound_ns_per_agent"] == pytest.approx(40 / bw["bytes_per_second"] * 1e9)
    assert _positive(bw["tcpkit_ratio_to_bound"])
    # float64 scoring agrees with scikit-learn on the same fit
    assert result["agreement"]["max_relative_difference"] < 1e-10
    assert result["agreement"]["detect_decisions_identical"] is True
    rejections = result["agreement"]["detect_rejections"]
    assert set(rejections) == {"chi2", "conformal"} and all(0 <= v <= 3_000 for v in rejections.values())


def test_scaling_streaming_and_targets(result: dict[str, Any]) -> None:
    assert [row["agents"] for row in result["scaling"]] == [1_000, 3_000, 5_000]
    assert all(row["status"] == "ok" for row in result["scaling"])
    stream = result["streaming"]
    assert stream["status"] == "ok" and stream["agents"] == 20_000
    assert stream["result_bytes"] == 20_000 * 8
    assert stream["tracemalloc_peak_bytes"] >= stream["result_bytes"]
    assert stream["within_budget"] is True
    names = [t["name"] for t in result["targets"]]
    assert "speedup_vs_sklearn" in names and "ratio_to_bandwidth_bound" in names
    assert "end_to_end_conformal_ns_per_agent" in names
    assert all(t["applies"] is False for t in result["targets"])
    table = format_table(result)
    for label in ("tcpkit kernel", "scikit-learn", "bandwidth", "scaling", "memory efficiency"):
        assert label in table


def test_memory_efficiency_is_computed_from_the_shape() -> None:
    me = memory_efficiency(1_000_000, 8, np.dtype(np.float32))
    assert me["raw_bytes"] == 32_000_000
    assert me["moments_bytes"] == 8 + 64 + 512
    assert me["ratio_raw_to_moments"] == pytest.approx(32_000_000 / 584)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"agents": 0},
        {"dtype": "float16"},
        {"repeats": 0},
        {"fit_rows": 4, "features": 4},
        {"alpha": 1.5},
        {"stream_chunk_rows": 0},
    ],
)
def test_bad_config_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(BenchError):
        BenchConfig(**kwargs)


def test_cli_writes_json_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "bench.json"
    code = main(
        [
            "bench", "--agents", "2e3", "--features", "2", "--repeats", "1",
            "--scaling-max", "1e3", "--stream-agents", "0", "--json", str(target),
        ]
    )
    assert code == 0
    data = json.loads(target.read_text())
    assert data["schema"] == SCHEMA and data["config"]["agents"] == 2_000
    assert [row["agents"] for row in data["scaling"]] == [1_000]
    assert "tcpkit kernel" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--agents", "many"], "not a number"),
        (["bench", "--agents", "1.5"], "whole number"),
        (["bench", "--features", "0"], "whole number"),
        (["bench", "--json", "/nonexistent-dir/x.json"], "does not exist"),
    ],
)
def test_cli_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err
