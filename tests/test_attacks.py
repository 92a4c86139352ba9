"""Mechanics of the adversaries in tcpkit.detect.attacks, and their evasion curves."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpkit.detect.attacks import (
    ATTACKS,
    DEFAULT_BUDGETS,
    REFERENCE_BUDGETS,
    AttackConfig,
    AttackError,
    ClassicalDetector,
    EwmaMonitor,
    FrozenCusumMonitor,
    RobustDetector,
    evasion_curve,
    mimic_windows,
    poison_baseline,
    probing_cost,
    with_defences,
)

SMALL = AttackConfig(n_features=3, n_baseline=150, n_windows=60, n_attackers=20)


def _gaussian(n: int, d: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


# -- mimicry ----------------------------------------------------------------------------


def test_mimicry_keeps_every_window_under_a_frozen_threshold() -> None:
    base = _gaussian(200)
    ref = _gaussian(200, seed=1)
    monitor = FrozenCusumMonitor(np.zeros(3), np.eye(3), reference_scores=(ref**2).sum(1),
                                 k=0.5, h=8.0, threshold=9.0)
    proposed = np.random.default_rng(2).standard_normal((30, 20, 3)) + np.array([5.0, 0, 0])
    played, _ = mimic_windows(monitor, proposed)
    scores = monitor.scores(played.reshape(-1, 3))
    assert np.all(scores <= 9.0)
    # the attacker only shrank windows that were over: the others are untouched
    over = monitor.scores(proposed.reshape(-1, 3)) > 9.0 * (1 - 1e-6)
    np.testing.assert_array_equal(played.reshape(-1, 3)[~over], proposed.reshape(-1, 3)[~over])
    assert base.shape == (200, 3)


def test_mimicry_keeps_every_window_under_an_adaptive_threshold() -> None:
    monitor = EwmaMonitor(np.zeros(3), np.eye(3), lam=0.2, threshold=7.0)
    proposed = np.random.default_rng(3).standard_normal((10, 25, 3)) * 3.0
    played, alarmed = mimic_windows(monitor, proposed)
    assert not alarmed.any()
    monitor.start(10)
    for t in range(25):
        assert np.all(monitor.scores(played[:, t]) <= 7.0)
        monitor.observe(played[:, t])


def test_mimicry_evades_naive_but_cusum_catches_a_persistent_offset() -> None:
    naive = evasion_curve("mimicry", "naive", budgets=[0.0, 2.0], seeds=[0, 1], config=SMALL)
    tcp = evasion_curve("mimicry", "tcpkit", budgets=[0.0, 2.0], seeds=[0, 1], config=SMALL)
    assert naive.at(2.0)[0] >= 0.9
    assert tcp.at(2.0)[0] <= 0.1
    assert tcp.at(0.0)[0] >= 0.85  # the clean case: one minus the false-alarm rate


# -- poisoning --------------------------------------------------------------------------


def test_poisoning_moves_the_classical_estimate_more_than_the_robust_one() -> None:
    clean = _gaussian(300, seed=4)
    target = np.array([6.0, 0.0, 0.0])
    poisoned = poison_baseline(clean, target, 0.2, np.random.default_rng(5))
    shifts = {}
    for det in (ClassicalDetector(), RobustDetector(random_state=0)):
        det.fit(poisoned)
        shifts[type(det).__name__] = float(np.linalg.norm(det.location_))
        # and the target looks less anomalous to the classical estimate
    classical, robust = shifts["ClassicalDetector"], shifts["RobustDetector"]
    assert classical > 2 * robust
    d_classical = ClassicalDetector().fit(poisoned).score(target[None])[0]
    d_robust = RobustDetector().fit(poisoned).score(target[None])[0]
    assert d_classical < d_robust


@given(fraction=st.floats(0.0, 0.9), seed=st.integers(0, 1000))
@settings(max_examples=25, deadline=None)
def test_poison_baseline_replaces_exactly_the_fraction(fraction: float, seed: int) -> None:
    clean = _gaussian(50, seed=seed)
    poisoned = poison_baseline(clean, np.full(3, 4.0), fraction, np.random.default_rng(seed))
    assert poisoned.shape == clean.shape
    changed = np.any(poisoned != clean, axis=1).sum()
    # the first ramp point sits at the centre, so it may coincide with its clean row
    assert int(round(fraction * 50)) - 1 <= changed <= int(round(fraction * 50))


def test_heavy_poisoning_beats_the_robust_estimator() -> None:
    curve = evasion_curve("poisoning", "tcpkit", budgets=[0.1, 0.45], seeds=[0, 1],
                          config=SMALL)
    assert curve.at(0.1)[0] <= 0.1
    assert curve.at(0.45)[0] >= 0.2  # past the breakdown point, MCD fits the poison


# -- slow drift -------------------------------------------------------------------------


def test_cusum_alarms_on_a_drift_that_the_adaptive_baseline_absorbs() -> None:
    naive = evasion_curve("drift", "naive", budgets=[6.0], seeds=[0, 1], config=SMALL)
    tcp = evasion_curve("drift", "tcpkit", budgets=[6.0], seeds=[0, 1], config=SMALL)
    assert naive.rates[0] >= 0.9
    assert tcp.rates[0] <= 0.05


# -- probing ----------------------------------------------------------------------------


def test_probing_without_defences_needs_log2_queries() -> None:
    result = probing_cost(threshold_jitter=0.0, seeds=[0, 1], config=SMALL)
    expected = math.ceil(math.log2(SMALL.probe_radius / SMALL.probe_eps))
    assert result.lower_bound_queries == expected
    assert np.all(result.queries == expected)
    assert result.located.all() and result.held_unflagged.all()
    assert np.all(result.windows == 1)


def test_jitter_costs_queries_and_the_rate_limit_costs_windows() -> None:
    plain = probing_cost(threshold_jitter=0.0, seeds=[0], config=SMALL)
    jittered = probing_cost(threshold_jitter=0.1, max_queries_per_window=2, seeds=[0],
                            config=SMALL)
    assert jittered.mean_queries > plain.mean_queries
    np.testing.assert_array_equal(jittered.windows, -(-jittered.queries // 2))
    assert jittered.success_rate < plain.success_rate


def test_probing_evasion_never_decreases_with_queries_without_jitter() -> None:
    curve = evasion_curve("probing", "naive", budgets=[2, 4, 6, 8, 12], seeds=[0], config=SMALL)
    assert list(curve.rates) == sorted(curve.rates)
    assert curve.rates[-1] == 1.0


# -- coordination -----------------------------------------------------------------------


def test_coordination_spreading_the_displacement_helps_the_attacker() -> None:
    curve = evasion_curve("coordination", "tcpkit", budgets=[1, 16], seeds=[0], config=SMALL)
    assert curve.rates[0] <= curve.rates[1]
    assert curve.trials == (20, 20)


# -- curves, reproducibility, errors ----------------------------------------------------


def test_curve_is_reproducible_per_seed_and_intervals_contain_the_rate() -> None:
    a = evasion_curve("drift", "tcpkit", budgets=[0.0, 2.0], seeds=[3], config=SMALL)
    b = evasion_curve("drift", "tcpkit", budgets=[0.0, 2.0], seeds=[3], config=SMALL)
    assert a == b
    for r, lo, hi in zip(a.rates, a.ci_low, a.ci_high, strict=True):
        assert lo <= r <= hi
    assert "drift vs tcpkit" in a.summary()


def test_every_attack_has_defaults_and_a_swept_reference_budget() -> None:
    for attack in ATTACKS:
        assert REFERENCE_BUDGETS[attack] in DEFAULT_BUDGETS[attack]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"attack": "phishing", "detector": "naive"}, "unknown attack"),
        ({"attack": "drift", "detector": "clever"}, "unknown detector"),
        ({"attack": "drift", "detector": "naive", "seeds": []}, "seeds is empty"),
        ({"attack": "drift", "detector": "naive", "seeds": [-1]}, "non-negative"),
        ({"attack": "drift", "detector": "naive", "budgets": [-1.0]}, "finite and >= 0"),
        ({"attack": "drift", "detector": "naive", "budgets": [float("nan")]}, "finite"),
        ({"attack": "poisoning", "detector": "naive", "budgets": [1.0]}, "fraction"),
        ({"attack": "coordination", "detector": "naive", "budgets": [2.5]}, "whole number"),
        ({"attack": "probing", "detector": "naive", "budgets": [0]}, "whole number"),
        ({"attack": "drift", "detector": "naive", "budgets": []}, "empty"),
    ],
)
def test_bad_sweeps_raise_one_clear_error(kwargs: dict, match: str) -> None:
    with pytest.raises(AttackError, match=match):
        evasion_curve(config=SMALL, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 1.5}, "alpha"),
        ({"n_baseline": 10}, "n_baseline"),
        ({"n_windows": 0}, "n_windows"),
        ({"cusum_h": -1.0}, "cusum_h"),
        ({"threshold_jitter": float("inf")}, "threshold_jitter"),
        ({"probe_eps": 50.0}, "probe_eps"),
        ({"n_attackers": True}, "n_attackers"),
    ],
)
def test_bad_config_raises(kwargs: dict, match: str) -> None:
    with pytest.raises(AttackError, match=match):
        AttackConfig(**kwargs)


def test_other_bad_inputs() -> None:
    with pytest.raises(AttackError, match="NaN"):
        ClassicalDetector().fit(np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 1.0]]))
    with pytest.raises(AttackError, match="unknown defence"):
        with_defences(SMALL, {"moat": 3})
    with pytest.raises(AttackError, match="max_queries_per_window"):
        probing_cost(max_queries_per_window=0, config=SMALL)
    with pytest.raises(AttackError, match="not swept"):
        evasion_curve("drift", "naive", budgets=[1.0], seeds=[0], config=SMALL).at(2.0)
    assert with_defences(SMALL, {"cusum_h": 6.0}).cusum_h == 6.0
