"""The one detector configuration, the one factory, and the fitted state that PRODUCTION freezes."""

from __future__ import annotations

import io

import numpy as np
import pytest

from tcpkit.detect.baseline import BaselineError
from tcpkit.detect.composite import NetworkDetector
from tcpkit.detect.config import ConfigError, DetectorConfig, build_detector


def _fleet(rng: np.random.Generator, n: int, windows: int = 10, d: int = 4) -> np.ndarray:
    level = rng.normal(0, 1, size=(n, 1, d))
    return level + rng.normal(0, 0.3, size=(n, windows, d))


def test_defaults_live_in_one_place() -> None:
    cfg = DetectorConfig()
    assert DetectorConfig.from_mapping({}) == cfg
    assert DetectorConfig.from_mapping(cfg.to_mapping()) == cfg
    assert DetectorConfig.from_json(cfg.to_json()) == cfg
    det = build_detector()
    assert det.config == cfg
    assert NetworkDetector().config == cfg


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"alpah": 0.01}, "unknown detector setting 'alpah'"),
        ({"alpha": 0}, "alpha=0: expected a number in (0.0, 1.0)"),
        ({"alpha": "0.01"}, "alpha='0.01': expected a number"),
        ({"alpha": float("nan")}, "alpha=nan"),
        ({"fdr": "by"}, "fdr='by' is unknown: choose one of bh, none"),
        ({"method": "pca"}, "method='pca' is unknown: choose one of ogk, mcd, trimmed, ledoit_wolf, empirical"),
        ({"reference_windows": 0}, "reference_windows=0: expected an integer >= 1"),
        ({"reference_windows": True}, "reference_windows=True"),
        ({"cusum_k": -1}, "cusum_k=-1"),
        ({"target_arl": 1}, "target_arl=1"),
        ({"features": "abc"}, "features='abc'"),
        ({"features": ["a", "a"]}, "names a feature twice"),
        ({"random_state": -2}, "random_state=-2"),
    ],
)
def test_bad_settings_name_the_key(mapping: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        DetectorConfig.from_mapping(mapping)
    assert message in str(info.value)


def test_not_a_mapping_is_refused() -> None:
    with pytest.raises(ConfigError, match="table of settings"):
        DetectorConfig.from_mapping([("alpha", 0.01)])  # type: ignore[arg-type]


def test_shorthand_settings_are_validated_like_the_config() -> None:
    with pytest.raises(BaselineError, match="method='pca'"):
        NetworkDetector(method="pca")
    assert NetworkDetector(reference_windows=4).config == DetectorConfig(reference_windows=4)


def test_detect_uses_the_configured_alpha() -> None:
    rng = np.random.default_rng(1)
    ref = _fleet(rng, 400)
    monitored = _fleet(rng, 200)
    monitored[:20, 5:] += 1.5
    strict = build_detector(DetectorConfig(reference_windows=5, alpha=0.001)).fit(ref).detect(monitored)
    loose = build_detector(DetectorConfig(reference_windows=5, alpha=0.2)).fit(ref).detect(monitored)
    assert strict.alpha == 0.001 and loose.alpha == 0.2
    assert loose.n_flagged > strict.n_flagged


def test_feature_count_must_match_the_configuration() -> None:
    rng = np.random.default_rng(2)
    with pytest.raises(BaselineError, match="configuration names 3"):
        build_detector({"features": ["a", "b", "c"], "reference_windows": 5}).fit(_fleet(rng, 100))


def _round_trip(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def test_fitted_state_round_trips_without_pickle_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    names = ("a", "b", "c", "family_underrating")
    ref = _fleet(rng, 500)
    monitored = _fleet(rng, 300)
    monitored[:30, 5:, 3] += 2.0
    det = build_detector(DetectorConfig(reference_windows=5, features=names, alpha=0.1)).fit(ref)
    again = NetworkDetector.from_arrays(_round_trip(det.to_arrays()))
    assert again.config == det.config
    a, b = det.detect(monitored), again.detect(monitored)
    np.testing.assert_array_equal(a.pvalues, b.pvalues)
    np.testing.assert_array_equal(a.flags, b.flags)
    np.testing.assert_array_equal(a.components["alarm_window"], b.components["alarm_window"])
    assert [e.index for e in a.explanations] == [e.index for e in b.explanations]
    assert a.n_flagged > 0


def test_a_damaged_model_is_refused_with_its_reason() -> None:
    rng = np.random.default_rng(4)
    arrays = build_detector(DetectorConfig(reference_windows=5)).fit(_fleet(rng, 200)).to_arrays()
    missing = {k: v for k, v in arrays.items() if k != "cusum_reference"}
    with pytest.raises(BaselineError, match="no array 'cusum_reference'"):
        NetworkDetector.from_arrays(missing)
    bad = dict(arrays, calibration_matrix=arrays["calibration_matrix"][:, :2])
    with pytest.raises(BaselineError, match="calibration matrix has shape"):
        NetworkDetector.from_arrays(bad)
    wrong = dict(arrays, format=np.array("something/9"))
    with pytest.raises(BaselineError, match="model format"):
        NetworkDetector.from_arrays(wrong)
    nan = dict(arrays, change_location=np.full_like(arrays["change_location"], np.nan))
    with pytest.raises(BaselineError, match="NaN"):
        NetworkDetector.from_arrays(nan)
