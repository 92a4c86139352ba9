"""Lying nodes, gross and within the honest spread (ALIE): the gated metrics and tests that break them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import norm

from tcpkit.detect import byzantine
from tcpkit.detect.byzantine import (
    alie_lie,
    alie_z,
    lying_node_experiment,
    recall_drop,
    row_at,
)
from tcpkit.detect.combine import robust_kept
from tcpkit.detect.moments import Moments
from tcpkit.detect.simulate import EASY_WORLD
from tcpkit.release.gates import evaluate, load_pipeline

PIPELINE = Path(__file__).resolve().parents[1] / "notebooks" / "pipeline.toml"
SMALL = dict(n_agents=800, n_nodes=20, seed=0, pvalue_methods=("conformal",), world=EASY_WORLD)


def _gate_passes(metric: str, value: object, gate: str = "STAGING") -> bool:
    spec = load_pipeline(PIPELINE, require_notebooks=False).components["distributed"].gate(gate)
    criteria = [c for c in spec.criteria if c.metric == metric]
    assert criteria, f"no {metric} criterion at {gate}"
    return evaluate(criteria, {metric: value}).passed


@pytest.fixture(scope="module")
def rows() -> list[byzantine.LyingRow]:
    return lying_node_experiment((0.0, 0.2, 0.3), **SMALL)  # type: ignore[arg-type]


def test_alie_z_is_baruchs_rule() -> None:
    assert alie_z(40, 0) == 0.0
    assert alie_z(40, 8) == pytest.approx(norm.ppf((40 - (21 - 8)) / 40))
    assert alie_z(40, 18) == pytest.approx(norm.ppf(37 / 40))
    assert alie_z(20, 2) < alie_z(20, 5) < alie_z(20, 9)  # more liars can afford a larger shift
    with pytest.raises(ValueError, match="n_liars"):
        alie_z(10, 10)


def test_alie_liars_stay_inside_the_honest_spread_and_are_kept() -> None:
    rng = np.random.default_rng(0)
    honest = [Moments.from_batch(rng.normal(size=(50, 4)) + rng.normal(scale=0.2, size=4)) for _ in range(32)]
    for n_liars in (4, 8, 14):
        fake = alie_lie(honest, alie_z(len(honest) + n_liars, n_liars), np.ones(4))
        keep = robust_kept([*honest, *[fake] * n_liars])
        assert keep[len(honest):].all()  # the screen cannot see them
        means = np.stack([m.mean for m in honest])
        assert np.all(fake.mean <= means.max(axis=0)) and np.all(fake.mean >= means.min(axis=0))
        assert fake.n == int(np.median([m.n for m in honest]))
    with pytest.raises(ValueError, match="two honest"):
        alie_lie(honest[:1], 1.0, np.ones(4))


def test_gated_lying_metrics_hold_with_the_robust_combine(rows: list[byzantine.LyingRow]) -> None:
    assert {r.lie for r in rows} == {"shift", "mask", "alie"}
    assert row_at(rows, "alie", 0.2).liars_kept == 1.0
    assert row_at(rows, "shift", 0.2).liars_kept == 0.0
    assert _gate_passes("lying_recall_drop_robust", recall_drop(rows, "robust"))
    assert _gate_passes("alie_bias_robust_20", row_at(rows, "alie", 0.2).bias_sd)
    # the naive combine is what the gate guards against
    assert not _gate_passes("lying_recall_drop_robust", recall_drop(rows, "naive"))


@pytest.mark.breaks("distributed", "lying_recall_drop_robust")
def test_a_combine_without_screen_fails_lying_recall_drop() -> None:
    unscreened = {"naive": {"method": "chan"}, "robust": {"method": "chan"}}
    rows = lying_node_experiment((0.0, 0.2), combines=unscreened, lies=("mask",), **SMALL)  # type: ignore[arg-type]
    drop = recall_drop(rows, "robust", lies=("mask",))
    assert drop > 0.1
    assert not _gate_passes("lying_recall_drop_robust", drop)


@pytest.mark.breaks("distributed", "alie_bias_robust_20")
def test_liars_beyond_the_spread_without_a_screen_fail_alie_bias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(byzantine, "alie_z", lambda n, f: 0.0 if f == 0 else 40.0)
    open_door = {"robust": {"method": "robust", "weight_cap": None, "z_threshold": 1e9}}
    rows = lying_node_experiment((0.0, 0.2), combines=open_door, lies=("alie",), **SMALL)  # type: ignore[arg-type]
    bias = row_at(rows, "alie", 0.2).bias_sd
    assert bias > 0.25
    assert not _gate_passes("alie_bias_robust_20", bias)


def test_bias_is_measured_against_the_honest_nodes(rows: list[byzantine.LyingRow]) -> None:
    naive_shift = row_at(rows, "shift", 0.2, "naive").bias_sd
    assert naive_shift > 5.0  # a gross lie moves the exact pooled mean by many SDs
    assert row_at(rows, "shift", 0.2).bias_sd < 0.25


def test_row_lookups_name_what_is_missing(rows: list[byzantine.LyingRow]) -> None:
    with pytest.raises(ValueError, match="alie"):
        row_at(rows, "alie", 0.45)
    with pytest.raises(ValueError, match="combine 'median'"):
        recall_drop(rows, "median")
    only_clean: list[Any] = [r for r in rows if r.lying_fraction == 0.0]
    with pytest.raises(ValueError, match="no rows with liars"):
        recall_drop(only_clean, "robust")
    with pytest.raises(ValueError, match="unknown lie"):
        byzantine.lie(Moments.from_batch(np.ones((3, 2))), "alie", np.ones(2), np.array([0]))


@pytest.mark.breaks("distributed", "lying_recall_honest_robust")
def test_a_world_where_detection_fails_fails_lying_recall_honest() -> None:
    easy = lying_node_experiment((0.0,), lies=("shift",), **SMALL)  # type: ignore[arg-type]
    assert _gate_passes("lying_recall_honest_robust", row_at(easy, "shift", 0.0, "robust").recall)
    hard = lying_node_experiment((0.0,), lies=("shift",), **{**SMALL, "world": None})  # type: ignore[arg-type]
    assert not _gate_passes("lying_recall_honest_robust", row_at(hard, "shift", 0.0, "robust").recall)
