"""The default world hides no cheap tell, and the detector's new options behave as documented."""

from __future__ import annotations

import numpy as np
import pytest

from tcpkit.detect.baseline import BaselineError
from tcpkit.detect.config import DetectorConfig, build_detector
from tcpkit.detect.covariance import estimate_covariance
from tcpkit.detect.regression import LevelRegression, fit_level_regression
from tcpkit.detect.separability import oracle_recall, separability_table
from tcpkit.detect.simulate import ATTACKS, CALM_WORLD, FEATURE_NAMES, simulate_network


def _latency_ratio(net) -> np.ndarray:  # type: ignore[no-untyped-def]
    i, j = FEATURE_NAMES.index("latency_p95"), FEATURE_NAMES.index("latency_mean")
    return np.log(net.features[:, i]) - np.log(net.features[:, j])


def test_honest_agents_differ_in_latency_spread_and_calm_world_does_not() -> None:
    busy = simulate_network(n_agents=400, compromised_fraction=0.0, seed=3)
    calm = simulate_network(n_agents=400, compromised_fraction=0.0, seed=3, **CALM_WORLD)
    # the p95 / mean ratio is an agent constant plus window noise without the heterogeneity
    assert _latency_ratio(busy).std() > 2.0 * _latency_ratio(calm).std()


def test_separability_sees_log_ratios_and_flags_the_old_tell() -> None:
    net = simulate_network(n_agents=3000, compromised_fraction=0.35, seed=0, latency_spread_sd=0.0)
    table = separability_table(net)
    names = {r.change_feature for r in table.rows} | {r.level_feature for r in table.rows}
    assert any(n.startswith("log(") for n in names)
    # without honest heterogeneity in the pace, the p95/mean ratio separates by far more than 3 SDs
    assert table.max_effect > 3.0
    default = separability_table(simulate_network(n_agents=3000, compromised_fraction=0.35, seed=0))
    assert default.max_effect <= 3.0


def test_oracle_recall_is_a_ceiling_that_grows_with_the_rate() -> None:
    net = simulate_network(n_agents=1500, compromised_fraction=0.2, seed=4)
    tight, loose = oracle_recall(net, 0.001), oracle_recall(net, 0.05)
    assert set(tight) == set(ATTACKS)
    assert all(loose[a] >= tight[a] for a in ATTACKS)
    easy = oracle_recall(simulate_network(n_agents=1500, compromised_fraction=0.2, seed=4, difficulty="easy"), 0.001)
    assert min(easy.values()) > 0.9
    with pytest.raises(ValueError, match="fpr"):
        oracle_recall(net, 0.0)


def test_level_regression_recovers_a_known_linear_map() -> None:
    rng = np.random.default_rng(5)
    r = rng.normal(size=(4000, 3))
    coef = np.array([[0.8, 0.1, 0.0], [0.0, 0.5, 0.0], [0.2, 0.0, 0.9]])
    m = 0.3 + r @ coef.T + rng.normal(scale=0.1, size=(4000, 3))
    fitted = fit_level_regression(r, m, method="empirical")
    np.testing.assert_allclose(fitted.coef, coef, atol=0.02)
    np.testing.assert_allclose(fitted.intercept, 0.3, atol=0.02)
    with pytest.raises(BaselineError, match="more than 6"):
        fit_level_regression(r[:5], m[:5])
    with pytest.raises(BaselineError, match="NaN"):
        LevelRegression(np.array([np.nan]), np.eye(1))


def test_predicted_change_model_round_trips_and_matches_its_baseline_rows() -> None:
    ref = simulate_network(n_agents=400, compromised_fraction=0.0, seed=6)
    net = simulate_network(n_agents=200, compromised_fraction=0.2, seed=7)
    config = DetectorConfig(features=FEATURE_NAMES, change_model="predicted", method="empirical")
    det = build_detector(config).fit(ref.windows)
    rows = build_detector(config).baseline_features(ref.windows)
    fit_rows, _ = det.split(ref.n_agents)
    np.testing.assert_allclose(det.change_.location_, rows["change"][fit_rows].mean(axis=0), rtol=1e-12)
    again = type(det).from_arrays(det.to_arrays())
    a, b = det.detect(net.windows), again.detect(net.windows)
    np.testing.assert_array_equal(a.pvalues, b.pvalues)
    difference = build_detector(config.replace(change_model="difference")).fit(ref.windows)
    assert not np.allclose(difference.detect(net.windows).components["score_change"], a.components["score_change"])


def test_trimmed_estimator_drops_gross_outliers_and_keeps_the_bulk() -> None:
    rng = np.random.default_rng(8)
    x = rng.standard_t(5, size=(3000, 4))
    x[:150] += 25.0  # a poisoned block
    est = estimate_covariance(x, "trimmed")
    assert est.support is not None and not est.support[:150].any()
    assert est.support[150:].mean() > 0.95  # heavy tails are not outliers
    assert np.all(np.abs(est.location) < 0.1)


def test_security_world_separability_reports_each_fixed_shift_attack() -> None:
    """The security notebook's table: poisoning shows in the level only, a larger budget stands out more."""
    from tcpkit.detect.attacks import AttackConfig, make_world, world_separability

    cfg = AttackConfig(n_reference=400, n_monitored=120)
    world = make_world(3, cfg)
    table = world_separability(world, cfg)
    assert [r.attack for r in table.rows] == ["mimicry", "drift", "poisoning", "coordination"]
    assert all(r.n_attacked == world.attacked.size for r in table.rows)
    assert table.n_clean == int(world.clean.sum())
    poisoning = table.row("poisoning")
    assert poisoning.level_effect > 3.0 > poisoning.change_effect  # present from window 0
    louder = world_separability(world, cfg, {"mimicry": 6.0}).row("mimicry")
    assert louder.change_effect > table.row("mimicry").change_effect
    assert "security world, budgets mimicry 3" in table.to_markdown()
