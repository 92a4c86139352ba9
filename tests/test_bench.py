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
    network_agents=120,
    network_reference=80,
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
    "baseline_mahalanobis_float64",
    "baseline_mahalanobis_float32",
    "network_detect",
    "network_detect_float32",
    "network_detect_adaptive",
}

TARGETS = {
    "tcpkit_ns_per_agent",
    "speedup_vs_scipy",
    "speedup_vs_sklearn",
    "end_to_end_ns_per_agent",
    "end_to_end_conformal_ns_per_agent",
    "ratio_to_bandwidth_bound",
    "public_ratio_to_kernel",
    "public_ns_per_agent",
    "public_speedup_vs_sklearn",
    "public_ratio_to_bandwidth_bound",
    "network_detect_agents_per_second",
    "network_detect_float32_agents_per_second",
    "network_detect_adaptive_agents_per_second",
    "stream_rss_delta_mb",
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
        if entry["status"] == "not installed":
            assert entry["name"] == "pyod"
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
    assert all(t["applies"] is False for t in result["targets"])
    table = format_table(result)
    for label in (
        "tcpkit kernel", "scikit-learn", "bandwidth", "scaling", "memory efficiency",
        "Baseline.mahalanobis, float32", "NetworkDetector.detect", "public_ratio_to_kernel",
    ):
        assert label in table


def test_targets_report_value_target_and_verdict(result: dict[str, Any]) -> None:
    targets = {t["name"]: t for t in result["targets"]}
    assert set(targets) == TARGETS
    by = {m["name"]: m for m in result["methods"]}
    for t in targets.values():
        assert set(t) >= {"value", "op", "threshold", "target", "met", "applies", "measures"}
        assert t["target"] == f"{t['op']} {t['threshold']:g}"
        if t["value"] is None:
            assert t["met"] is None
        else:
            want = t["value"] <= t["threshold"] if t["op"] == "<=" else t["value"] >= t["threshold"]
            assert t["met"] is want
    # the ratios are computed from entries of the same run
    ns = {name: m["ns_per_agent"]["median"] for name, m in by.items() if m["ns_per_agent"]}
    assert targets["public_ratio_to_kernel"]["value"] == pytest.approx(
        ns["baseline_mahalanobis_float64"] / ns["tcpkit"]
    )
    assert targets["public_speedup_vs_sklearn"]["value"] == pytest.approx(
        ns["sklearn"] / ns["baseline_mahalanobis_float64"]
    )
    assert targets["public_ratio_to_bandwidth_bound"]["value"] == pytest.approx(
        ns["baseline_mahalanobis_float64"] / result["bandwidth"]["bound_ns_per_agent"]
    )
    assert targets["network_detect_agents_per_second"]["value"] == pytest.approx(
        by["network_detect"]["agents_per_second"]
    )
    assert targets["network_detect_agents_per_second"]["threshold"] == 240_000
    assert by["network_detect"]["timed_agents"] == 120
    # the float32 path is compared with a float64 oracle in the same run
    assert 0 < result["agreement"]["float32_max_rel_error_vs_oracle"] < 1e-4
    assert 0 < result["agreement"]["network_float32_max_rel_error_vs_oracle"] < 1e-4


def test_a_target_that_is_missed_says_so() -> None:
    from tcpkit.detect.bench import _targets

    def entry(name: str, ns: float) -> dict[str, Any]:
        return {"name": name, "ns_per_agent": {"median": ns}, "agents_per_second": 1e9 / ns}

    methods = [
        entry("tcpkit", 10.0),
        entry("baseline_mahalanobis_float32", 20.0),  # 2x the kernel: misses <= 1.3
        entry("sklearn", 300.0),
        entry("network_detect", 1e9 / 50_000),
    ]
    targets = {
        t["name"]: t
        for t in _targets(BenchConfig(), methods, {"bound_ns_per_agent": 2.0}, {"status": "skipped"})
    }
    assert targets["public_ratio_to_kernel"]["value"] == 2.0
    assert targets["public_ratio_to_kernel"]["met"] is False
    assert targets["public_speedup_vs_sklearn"]["met"] is True
    assert targets["public_ratio_to_bandwidth_bound"]["met"] is False
    assert targets["network_detect_agents_per_second"]["met"] is False
    assert targets["network_detect_float32_agents_per_second"]["met"] is None  # not run
    assert targets["speedup_vs_scipy"]["met"] is None
    assert all(t["applies"] for t in targets.values())


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
        {"network_agents": -1},
        {"network_reference": 10},
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
            "--scaling-max", "1e3", "--stream-agents", "0", "--network-agents", "0",
            "--json", str(target),
        ]
    )
    assert code == 0
    data = json.loads(target.read_text())
    assert data["schema"] == SCHEMA and data["config"]["agents"] == 2_000
    assert [row["agents"] for row in data["scaling"]] == [1_000]
    assert "network_detect" not in {m["name"] for m in data["methods"]}
    assert next(t for t in data["targets"] if t["name"] == "network_detect_agents_per_second")["met"] is None
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
