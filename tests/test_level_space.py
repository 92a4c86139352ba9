"""The level test's gaussianised, non-redundant space (tcpkit.detect.level_space)."""

from __future__ import annotations

import numpy as np
import pytest

from tcpkit.detect.audited import audited_fleet
from tcpkit.detect.baseline import BaselineError
from tcpkit.detect.composite import NetworkDetector
from tcpkit.detect.config import ConfigError, DetectorConfig, build_detector
from tcpkit.detect.level_space import LevelSpace, fit_level_space
from tcpkit.detect.simulate import FEATURE_NAMES


def _rows(n: int = 800, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(size=(3, n))
    skewed = np.exp(0.6 * rng.normal(size=n))  # log-normal, like latencies across agents
    return np.column_stack([a, b, 0.5 * a + 0.5 * b + 1e-4 * c, skewed, c])


def test_a_near_exact_combination_of_other_features_is_left_out() -> None:
    space = fit_level_space(_rows())
    assert len(space.columns) == 4
    assert 3 in space.columns and 4 in space.columns  # the skewed and the independent feature stay
    assert len({0, 1, 2} & set(space.columns)) == 2  # one of the three collinear ones goes


def test_the_transform_is_monotone_and_makes_a_skewed_feature_symmetric() -> None:
    X = _rows()
    space = fit_level_space(X)
    k = space.columns.index(3)
    z = space.transform(X)[:, k]
    assert np.all(np.diff(z[np.argsort(X[:, 3])]) >= 0)
    from scipy import stats

    assert abs(stats.skew(X[:, 3])) > 1.0 and abs(stats.skew(z)) < 0.2


def test_a_constant_feature_is_left_out_and_identity_is_raw() -> None:
    X = _rows()
    X[:, 4] = 3.0
    assert 4 not in fit_level_space(X).columns
    ident = LevelSpace.identity(5)
    assert ident.is_identity and np.array_equal(ident.transform(X), X)


def test_the_space_round_trips_and_bad_arrays_are_refused() -> None:
    space = fit_level_space(_rows())
    again = LevelSpace.from_array(space.as_array(), 5)
    assert again == space
    with pytest.raises(BaselineError, match="level_space has shape"):
        LevelSpace.from_array(np.zeros((6, 2)), 5)
    with pytest.raises(BaselineError, match="not increasing feature indices"):
        LevelSpace.from_array(np.array([[1.0, 1.0], [0.0, 1.0]]), 5)
    with pytest.raises(BaselineError, match="exponents"):
        LevelSpace.from_array(np.array([[0.0, 40.0]]), 5)
    with pytest.raises(BaselineError, match="fitting rows"):
        fit_level_space(np.zeros((2, 3)))


def test_level_space_and_weight_are_validated_settings() -> None:
    with pytest.raises(ConfigError, match="level_space"):
        DetectorConfig(level_space="cubed")
    with pytest.raises(ConfigError, match="level_weight"):
        DetectorConfig(level_weight=0)
    det = NetworkDetector(DetectorConfig(level_weight=8, change_weight=4))
    det.components_ = ("change", "level", "cusum")
    assert det._weights() == (4, 8, 1)


@pytest.fixture(scope="module")
def poisoned() -> object:
    # tuning seed 5; a fleet where a third of the monitored agents are poisoned from the first window
    return audited_fleet(600, 3000, 0.3, 5, attacks=("poisoning",))


def _level_hits(config: DetectorConfig, fleet: object) -> tuple[float, float, NetworkDetector]:
    det = build_detector(config).fit(fleet.reference_windows)  # type: ignore[attr-defined]
    res = det.detect(fleet.monitored_windows, fdr="none")  # type: ignore[attr-defined]
    p = np.asarray(res.components["p_level"])
    labels = np.asarray(fleet.labels)  # type: ignore[attr-defined]
    return float(np.mean(p[labels] <= 0.01)), float(np.mean(p[~labels] <= 0.01)), det


def test_the_gaussianised_level_test_finds_poisoning_that_the_raw_one_misses(poisoned: object) -> None:
    base = DetectorConfig(features=FEATURE_NAMES)
    raw_hit, raw_false, _ = _level_hits(base, poisoned)
    hit, false, det = _level_hits(base.replace(level_space="gaussianised"), poisoned)
    assert len(det.level_space_.columns) < len(FEATURE_NAMES)
    assert hit >= 0.6 and raw_hit <= 0.3, (hit, raw_hit)
    assert false <= 0.03 and raw_false <= 0.03  # conformal at 0.01 either way


def test_a_gaussianised_model_freezes_and_reloads_bit_for_bit(poisoned: object) -> None:
    config = DetectorConfig(features=FEATURE_NAMES, level_space="gaussianised", level_weight=8)
    det = build_detector(config).fit(poisoned.reference_windows)  # type: ignore[attr-defined]
    again = NetworkDetector.from_arrays(det.to_arrays())
    assert again.level_space_ == det.level_space_
    a = det.detect(poisoned.monitored_windows)  # type: ignore[attr-defined]
    b = again.detect(poisoned.monitored_windows)  # type: ignore[attr-defined]
    assert np.array_equal(a.pvalues, b.pvalues) and np.array_equal(a.flags, b.flags)
    arrays = det.to_arrays()
    del arrays["level_space"]
    with pytest.raises(BaselineError, match="no level_space array"):
        NetworkDetector.from_arrays(arrays)


def test_level_estimates_live_in_the_level_space(poisoned: object) -> None:
    config = DetectorConfig(features=FEATURE_NAMES, level_space="gaussianised")
    det = build_detector(config)
    ref = poisoned.reference_windows  # type: ignore[attr-defined]
    rows = det.baseline_features(ref)
    fit_rows, _ = det.split(ref.shape[0])
    level = rows["level"][fit_rows]
    k = level.shape[1]
    assert k < len(FEATURE_NAMES)
    det.fit(ref, estimates={"level": (level.mean(axis=0), np.cov(level, rowvar=False))})
    assert det.level_.n_features_in_ == k and det.estimated_ == ("level",)
    d = len(FEATURE_NAMES)
    with pytest.raises(BaselineError, match=rf"estimates\['level'\] has {d} features: the level space has {k}"):
        build_detector(config).fit(ref, estimates={"level": (np.zeros(d), np.eye(d))})


def test_the_unfitted_level_space_is_the_one_fit_uses_with_the_screen_on() -> None:
    fleet = audited_fleet(300, 2000, 0.2, 6, reference_contamination=0.1)  # tuning seed 6
    config = DetectorConfig(features=FEATURE_NAMES, level_space="gaussianised", reference_screen=True)
    ref = fleet.reference_windows
    before = build_detector(config).baseline_features(ref)["level"]
    det = build_detector(config).fit(ref)
    assert np.array_equal(before, det.baseline_features(ref)["level"])
