"""Tests for tcpkit.detect.evaluate: intervals that cover, AUROC, effect sizes, power."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tcpkit.detect.evaluate import (
    auroc,
    commands_needed,
    detection_metrics,
    effect_size,
    recall_by_type,
    time_to_detect,
    wilson,
)


def test_detection_metrics_counts_and_wilson_intervals() -> None:
    labels = np.array([True] * 10 + [False] * 90)
    flags = np.array([True] * 8 + [False] * 2 + [True] * 3 + [False] * 87)
    m = detection_metrics(labels, flags)
    assert (m.recall.successes, m.recall.trials) == (8, 10)
    assert m.fpr.value == pytest.approx(3 / 90) and m.precision.value == pytest.approx(8 / 11)
    assert m.f1.value == pytest.approx(2 * 8 / (2 * 8 + 3 + 2))
    for e in (m.recall, m.fpr, m.precision, m.f1):
        assert e.low <= e.value <= e.high
    w = wilson(0, 50)
    assert w.low == pytest.approx(0, abs=1e-12) and 0.05 < w.high < 0.08  # Wilson, not the degenerate Wald [0, 0]
    assert np.isnan(wilson(0, 0).value)
    with pytest.raises(ValueError, match="agents"):
        detection_metrics(labels, flags[:5])


def test_recall_by_type() -> None:
    attack = np.array(["a", "a", "b", None, None], dtype=object)
    flags = np.array([True, False, True, True, False])
    out = recall_by_type(attack, flags)
    assert set(out) == {"a", "b"} and out["a"].value == 0.5 and out["b"].value == 1.0


def test_auroc_matches_sklearn_and_interval_covers() -> None:
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.3
    scores = rng.normal(size=300) + labels * 1.0
    est = auroc(labels, scores, n_resamples=200)
    assert est.value == pytest.approx(roc_auc_score(labels, scores))
    assert est.low < est.value < est.high and est.high - est.low < 0.2
    with pytest.raises(ValueError, match="positive"):
        auroc(np.zeros(5, bool), np.arange(5.0))


def test_time_to_detect() -> None:
    out = time_to_detect(np.array([0, 4, -1, 2]), np.array([True, True, True, False]))
    assert out["median"] == 3.0 and out["detected_share"] == pytest.approx(2 / 3) and out["n"] == 3


def test_effect_size_and_power() -> None:
    rng = np.random.default_rng(1)
    e = effect_size(rng.normal(0.8, 1, 400), rng.normal(0, 1, 400))
    assert e.low < 0.8 < e.high and abs(e.hedges_g) < abs(e.cohens_d)
    with pytest.raises(ValueError, match="constant"):
        effect_size(np.ones(5), np.ones(5))
    # two-sample z test, effect 0.5 SD, alpha 0.05, power 0.8: about 63 per group
    assert commands_needed(0.5, 1.0, alpha=0.05, power=0.8) == 63
    assert commands_needed(0.05, 0.058) > commands_needed(0.1, 0.058)
