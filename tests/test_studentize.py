"""NetworkDetector's studentised change: each agent's change divided by its own window noise."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from tcpkit.detect.baseline import BaselineError
from tcpkit.detect.composite import NetworkDetector
from tcpkit.detect.config import ConfigError, DetectorConfig, build_detector
from tcpkit.detect.studentize import window_variances


def _hetero_fleet(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    """Agents whose noise SDs differ tenfold (log-normal); ``shift`` moves the detection windows."""
    level = rng.normal(0, 1, size=(n, 1, 4))
    sd = np.exp(rng.normal(0, 0.9, size=(n, 1, 1)))
    w = level + rng.normal(size=(n, 16, 4)) * sd
    w[:, 5:, :2] += shift * sd[:, :, :1]  # a shift of `shift` own SDs
    return w


def _round_trip(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def test_studentize_is_validated_at_the_one_validation_point() -> None:
    assert DetectorConfig().studentize is True
    with pytest.raises(ConfigError, match="studentize='yes': expected true or false"):
        DetectorConfig.from_mapping({"studentize": "yes"})
    with pytest.raises(BaselineError, match="studentize=1"):
        NetworkDetector(studentize=1)


def test_window_variance_ignores_the_step_between_periods() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2000, 20, 1))
    stepped = w.copy()
    stepped[:, 5:] += 10.0
    np.testing.assert_allclose(window_variances(w, 5), window_variances(stepped, 5), rtol=1e-9)
    assert abs(float(np.median(window_variances(w, 5))) - 1.0) < 0.1


def test_studentising_finds_small_shifts_of_quiet_agents_that_raw_changes_miss() -> None:
    """Quiet agents shifted by 3 of their own SDs hide among noisy honest agents' raw changes."""
    rng = np.random.default_rng(5)
    ref = _hetero_fleet(rng, 1500)
    monitored = np.concatenate([_hetero_fleet(rng, 900), _hetero_fleet(rng, 100, shift=3.0)])
    recall = {}
    for studentize in (False, True):
        det = NetworkDetector(reference_windows=5, studentize=studentize).fit(ref)
        res = det.detect(monitored, alpha=0.05)
        recall[studentize] = float(res.flags[900:].mean())
        assert res.flags[:900].mean() < 0.02
    assert recall[True] > recall[False] + 0.2, recall


@pytest.mark.parametrize("studentize", [False, True])
def test_the_setting_and_its_prior_travel_with_the_model(studentize: bool) -> None:
    rng = np.random.default_rng(6)
    ref = _hetero_fleet(rng, 400)
    monitored = np.concatenate([_hetero_fleet(rng, 150), _hetero_fleet(rng, 50, shift=2.0)])
    det = build_detector(DetectorConfig(reference_windows=5, studentize=studentize, alpha=0.1)).fit(ref)
    again = NetworkDetector.from_arrays(_round_trip(det.to_arrays()))
    assert again.config.studentize is studentize
    a, b = det.detect(monitored), again.detect(monitored)
    np.testing.assert_array_equal(a.pvalues, b.pvalues)
    np.testing.assert_array_equal(a.flags, b.flags)


def test_a_model_frozen_before_the_setting_loads_raw_and_a_bad_prior_is_refused() -> None:
    rng = np.random.default_rng(7)
    ref = _hetero_fleet(rng, 300)
    raw = build_detector(DetectorConfig(reference_windows=5, studentize=False)).fit(ref)
    arrays = raw.to_arrays()
    old_config = {k: v for k, v in json.loads(str(arrays["config"])).items() if k != "studentize"}
    old = {k: v for k, v in arrays.items() if k != "studentize_prior"}
    old["config"] = np.array(json.dumps(old_config, sort_keys=True))
    loaded = NetworkDetector.from_arrays(old)
    assert loaded.config.studentize is False
    np.testing.assert_array_equal(loaded.detect(ref).pvalues, raw.detect(ref).pvalues)
    stud = build_detector(DetectorConfig(reference_windows=5)).fit(ref).to_arrays()
    for bad in (stud["studentize_prior"][:2], -stud["studentize_prior"]):
        with pytest.raises(BaselineError, match="studentize_prior"):
            NetworkDetector.from_arrays(dict(stud, studentize_prior=bad))
    with pytest.raises(BaselineError, match="no array 'studentize_prior'"):
        NetworkDetector.from_arrays({k: v for k, v in stud.items() if k != "studentize_prior"})
