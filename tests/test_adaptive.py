"""Adaptive conformal scores (AdaDetect) and the audited reference they need."""

from __future__ import annotations

import numpy as np
import pytest

from tcpkit.detect.adaptive import ADAPTIVE_MODELS, adaptive_pvalues, adaptive_split
from tcpkit.detect.audited import audited_fleet
from tcpkit.detect.baseline import BaselineError, decide
from tcpkit.detect.composite import NetworkDetector
from tcpkit.detect.config import DetectorConfig, build_detector
from tcpkit.detect.pvalues import conformal_pvalues
from tcpkit.detect.simulate import ATTACKS, FEATURE_NAMES


def _null(rng: np.random.Generator, n: int, d: int = 6) -> np.ndarray:
    return rng.standard_t(5, size=(n, d))


@pytest.mark.parametrize("model", ["logistic", "ensemble"])
def test_clean_pvalues_are_super_uniform(model: str) -> None:
    """Clean monitored rows exchangeable with the calibration rows: P(p <= 0.1) stays near 0.1."""
    rng = np.random.default_rng(0)
    hits = total = 0
    for _ in range(40):
        shifted = _null(rng, 40)
        shifted[:, :2] += 3.0  # the monitored fleet holds outliers: the classifier learns something
        test = np.vstack([_null(rng, 160), shifted])
        res = adaptive_pvalues(_null(rng, 300), _null(rng, 199), test, model=model)
        hits += int((res.pvalues[:160] <= 0.1).sum())
        total += 160
    rate = hits / total
    # exact super-uniformity gives at most 20/200 = 0.1; 40 calibration sets scatter it by ~0.01
    assert rate <= 0.1 + 0.03, rate


def test_the_learned_score_finds_a_shift_the_omnibus_distance_misses() -> None:
    """A shift on 2 of 12 coordinates: adaptive BH finds most of it, a fixed distance score little."""
    rng = np.random.default_rng(1)
    d = 12
    null_train, cal = rng.normal(size=(2000, d)), rng.normal(size=(1000, d))
    test = rng.normal(size=(500, d))
    bad = np.zeros(500, dtype=bool)
    bad[:100] = True
    test[bad, :2] += 2.6
    adaptive = decide(adaptive_pvalues(null_train, cal, test, model="logistic").pvalues, 0.05, "bh")[0]
    fixed_p = conformal_pvalues((test**2).sum(axis=1), np.sort((cal**2).sum(axis=1)))
    fixed = decide(fixed_p, 0.05, "bh")[0]
    assert adaptive[bad].mean() >= 0.6
    assert adaptive[bad].mean() >= fixed[bad].mean() + 0.3
    assert adaptive[~bad].mean() <= 0.05


def test_scores_do_not_depend_on_the_order_of_the_agents() -> None:
    """The classifier sees the pooled set as a multiset: a permutation permutes the scores, nothing more."""
    rng = np.random.default_rng(2)
    null_train, cal, test = rng.normal(size=(200, 4)), rng.normal(size=(100, 4)), rng.normal(size=(80, 4))
    test[:10] += 2.0
    a = adaptive_pvalues(null_train, cal, test)
    order_t, order_c, order_0 = rng.permutation(80), rng.permutation(100), rng.permutation(200)
    b = adaptive_pvalues(null_train[order_0], cal[order_c], test[order_t])
    np.testing.assert_array_equal(b.test_scores, a.test_scores[order_t])
    np.testing.assert_array_equal(b.calibration_scores, a.calibration_scores[order_c])
    np.testing.assert_array_equal(b.pvalues, a.pvalues[order_t])


def test_every_model_gives_pvalues_on_the_calibration_grid() -> None:
    rng = np.random.default_rng(3)
    null_train, cal, test = rng.normal(size=(100, 3)), rng.normal(size=(49, 3)), rng.normal(size=(30, 3))
    for model in ADAPTIVE_MODELS:
        res = adaptive_pvalues(null_train, cal, test, model=model)
        assert res.model == model
        k = res.pvalues * 50
        np.testing.assert_allclose(k, np.round(k))
        assert res.pvalues.min() >= 1 / 50 and res.pvalues.max() <= 1.0


def test_bad_input_is_named() -> None:
    rng = np.random.default_rng(4)
    good = rng.normal(size=(40, 3))
    with pytest.raises(BaselineError, match="model='forest'"):
        adaptive_pvalues(good, good, good, model="forest")
    nan = good.copy()
    nan[5, 1] = np.nan
    with pytest.raises(BaselineError, match="test contains NaN"):
        adaptive_pvalues(good, good, nan)
    with pytest.raises(BaselineError, match="calibration has 2 features"):
        adaptive_pvalues(good, good[:, :2], good)
    with pytest.raises(BaselineError, match="null_training has 10 rows"):
        adaptive_pvalues(good[:10], good, good)
    with pytest.raises(BaselineError, match="n_calibration=0"):
        adaptive_split(np.arange(100), 0)
    with pytest.raises(BaselineError, match="fewer than 20 null training"):
        adaptive_split(np.arange(100), 90)


def test_adaptive_split_is_a_seeded_partition() -> None:
    rows = np.arange(10, 110)
    train, cal = adaptive_split(rows, 30, random_state=5)
    assert cal.size == 30 and train.size == 70
    assert set(train) | set(cal) == set(rows) and not set(train) & set(cal)
    again = adaptive_split(rows, 30, random_state=5)
    np.testing.assert_array_equal(again[1], cal)


def test_audited_fleet_keeps_every_compromised_agent_monitored() -> None:
    fleet = audited_fleet(200, 300, 0.2, seed=7)
    net = fleet.network
    assert net.n_agents == 500
    assert fleet.monitored.size == 200 and fleet.reference.size == 300
    assert not np.intersect1d(fleet.monitored, fleet.reference).size
    assert int(fleet.labels.sum()) == 40 and not net.labels[fleet.reference].any()
    assert fleet.reference_windows.shape == (300, *net.windows.shape[1:])
    assert fleet.attack.shape == (200,) and fleet.regime_agents.shape == (200,)
    mon, ref = fleet.monitored_network, fleet.reference_network
    assert mon.n_agents == 200 and ref.n_agents == 300 and mon.params["n_agents"] == 200
    np.testing.assert_array_equal(mon.windows, fleet.monitored_windows)
    np.testing.assert_array_equal(mon.regime_change_agents(), fleet.regime_agents)
    assert mon.params["compromised_fraction"] == 0.2 and not ref.labels.any()
    with pytest.raises(ValueError, match="n_reference=0"):
        audited_fleet(200, 0, 0.2, seed=7)
    with pytest.raises(ValueError, match="compromised_fraction=1.0"):
        audited_fleet(200, 10, 1.0, seed=7)


def test_a_contaminated_reference_holds_that_share_of_compromised_agents() -> None:
    fleet = audited_fleet(200, 300, 0.2, seed=7, reference_contamination=0.1)
    assert int(fleet.labels.sum()) == 40 and int(fleet.reference_labels.sum()) == 30
    assert set(fleet.network.attack[fleet.reference][fleet.reference_labels]) <= set(ATTACKS)
    assert not audited_fleet(200, 300, 0.2, seed=7).reference_labels.any()
    with pytest.raises(ValueError, match="reference_contamination=0.5"):
        audited_fleet(200, 300, 0.2, seed=7, reference_contamination=0.5)


def test_agent_matrix_holds_change_level_and_component_scores() -> None:
    fleet = audited_fleet(60, 200, 0.2, seed=8)
    det = build_detector(DetectorConfig(features=FEATURE_NAMES)).fit(fleet.reference_windows)
    m = det.agent_matrix(fleet.monitored_windows)
    d = len(FEATURE_NAMES)
    assert m.shape == (60, 2 * d + len(det.components_))
    res = det.detect(fleet.monitored_windows)
    np.testing.assert_allclose(m[:, 2 * d], np.log1p(res.components["score_change"]))
    with pytest.raises(BaselineError):
        det.agent_matrix(fleet.monitored_windows[:, :, :3])


def _adaptive_detector(reference: np.ndarray) -> NetworkDetector:
    return build_detector(DetectorConfig(features=FEATURE_NAMES, adaptive=True)).fit(reference)


def test_network_detector_with_the_adaptive_test_is_calibrated_on_clean_fleets() -> None:
    """All-clean audited fleets: the combined p-value of a clean agent is at most 0.1 about 1 time in 10."""
    hits = total = 0
    for seed in range(3):
        fleet = audited_fleet(300, 1200, 0.0, seed=100 + seed)
        det = _adaptive_detector(fleet.reference_windows)
        assert det.components_[-1] == "adaptive" and det.n_calibration_ == 300  # half of the 600 left after fitting
        p = det.detect(fleet.monitored_windows, alpha=0.1, fdr="none").pvalues
        hits += int((p <= 0.1).sum())
        total += p.size
    assert abs(hits / total - 0.1) <= 0.04, hits / total


def test_the_adaptive_test_finds_more_than_the_fixed_tests_alone() -> None:
    # 2000 calibration agents: at 1000 (a 3000-agent reference) BH at 0.01 over 600 agents needs 60 of them at the
    # floor 1 / 1001 at once, so whether anything is flagged turns on a handful of agents (all or nothing)
    fleet = audited_fleet(600, 5000, 0.2, seed=31)
    fixed = build_detector(DetectorConfig(features=FEATURE_NAMES)).fit(fleet.reference_windows)
    adaptive = _adaptive_detector(fleet.reference_windows)
    found_fixed = fixed.detect(fleet.monitored_windows).flags[fleet.labels].mean()
    found_adaptive = adaptive.detect(fleet.monitored_windows).flags[fleet.labels].mean()
    assert found_adaptive >= found_fixed + 0.15, (found_fixed, found_adaptive)


def test_a_frozen_adaptive_detector_gives_the_same_decisions_and_refuses_tampering() -> None:
    fleet = audited_fleet(120, 600, 0.2, seed=32)
    det = _adaptive_detector(fleet.reference_windows)
    arrays = det.to_arrays()
    again = NetworkDetector.from_arrays(arrays)
    np.testing.assert_array_equal(
        again.detect(fleet.monitored_windows).pvalues, det.detect(fleet.monitored_windows).pvalues
    )
    narrow = dict(arrays, adaptive_null=arrays["adaptive_null"][:, :-1])
    with pytest.raises(BaselineError, match="adaptive rows have shapes"):
        NetworkDetector.from_arrays(narrow)
    bad = dict(arrays, adaptive_calibration=np.where(np.eye(*arrays["adaptive_calibration"].shape) > 0, np.nan, 0.0))
    with pytest.raises(BaselineError, match="NaN or infinite"):
        NetworkDetector.from_arrays(bad)
    mixed = dict(arrays, components=arrays["components"][:-1])
    with pytest.raises(BaselineError, match="adaptive setting disagree"):
        NetworkDetector.from_arrays(mixed)


def test_the_fitting_agents_join_the_classifiers_class_0_and_a_small_poisoned_reference_gains() -> None:
    from tcpkit.detect.attacks import AttackConfig, make_world, poisoned_windows

    # security world tuning seed 5: 4000 reference agents, 10 % planted, 30 attacked of 300 at 3 level SDs
    world = make_world(5, AttackConfig(reference_windows=5, poison_fraction=0.1))
    reference, monitored = poisoned_windows(world, 3.0)
    det = build_detector(DetectorConfig(features=FEATURE_NAMES, adaptive=True, reference_screen=True)).fit(reference)
    kept = {part: of - removed for part, removed, of in det.screened_.removed}
    assert det.adaptive_null_.shape[0] == kept["null training"] + kept["fit"]
    attacked = np.zeros(len(monitored), dtype=bool)
    attacked[world.attacked] = True
    caught = det.detect(monitored).flags[attacked].mean()
    det.adaptive_null_ = det.adaptive_null_[: kept["null training"]]  # class 0 without the fitting agents
    assert caught >= 0.9 and det.detect(monitored).flags[attacked].mean() <= 0.1, caught
