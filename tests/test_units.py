"""A metric's unit comes from its name by one rule (tcpkit.release.units)."""

from __future__ import annotations

import pytest

from tcpkit.release.units import unit_of, with_unit


@pytest.mark.parametrize(("metric", "unit"), [
    ("runtime_s", "s"), ("notebook_seconds", "s"), ("duration_s", "s"),
    ("sign_ms_ed25519", "ms"),  # a qualifier after the unit does not hide it
    ("ns_per_agent", "ns/agent"), ("end_to_end_conformal_ns_per_agent", "ns/agent"),
    ("agents_per_second", "agents/s"), ("dask_agents_per_s", "agents/s"),
    ("bandwidth_gb_per_s", "GB/s"), ("dask_client_peak_mib", "MiB"), ("stream_rss_delta_mb", "MB"),
    ("envelope_bytes_hybrid", "bytes"), ("bytes_per_node_full", "bytes/node"),
    ("speedup_vs_scipy", "×"), ("ratio_to_bandwidth_bound", "×"),
    ("alie_bias_robust_20", "SD"), ("lying_node_shift_pooled", "SD"), ("hedges_g_change", "SD"),
    ("separability_max_effect", "SD"), ("dask_shift", "SD"),
    ("commands_needed_shift_0.05", "commands"),  # the first unit in the name, not the last
    ("time_to_detect", "windows"),
    # pure numbers
    ("time_to_detect_share", None), ("recall_mean_shift", None), ("fpr", None), ("auroc", None),
    ("max_rel_error", None), ("stream_agents", None), ("rounds", None), ("tcpkit.load1_before", None),
    ("converged", None), ("", None),
])
def test_unit_of(metric: str, unit: str | None) -> None:
    assert unit_of(metric) == unit


def test_with_unit() -> None:
    assert with_unit("12.3", "s") == "12.3 s"
    assert with_unit("41.7", "×") == "41.7×"
    assert with_unit("0.5", None) == "0.5" and with_unit("—", "s") == "—"
