"""NetworkDetector with baselines estimated elsewhere (e.g. CRDT moments) and an injected kernel."""

from __future__ import annotations

import numpy as np
import pytest

from tcpkit.detect.baseline import BaselineError
from tcpkit.detect.composite import NetworkDetector
from tcpkit.detect.kernel import WhiteningKernel
from tcpkit.detect.moments import Moments, merge_all


def _fleet(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    level = rng.normal(scale=2.0, size=(n, 1, 3))
    w = level + rng.normal(size=(n, 12, 3))
    w[:, 6:, 0] += shift
    return w


def _pooled(rows: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    parts = [Moments.from_batch(chunk) for chunk in np.array_split(rows, groups)]
    merged = merge_all(parts)
    return np.asarray(merged.mean), merged.covariance()


@pytest.mark.parametrize("studentize", [False, True])
def test_given_estimates_equal_central_empirical_fit(studentize: bool) -> None:
    """Baselines pooled from ``baseline_features`` rows give the central fit's scores, raw or studentised."""
    rng = np.random.default_rng(1)
    reference = _fleet(rng, 300)
    monitored = np.concatenate([_fleet(rng, 80), _fleet(rng, 20, shift=4.0)])
    central = NetworkDetector(reference_windows=4, method="empirical", studentize=studentize).fit(reference)
    det = NetworkDetector(reference_windows=4, method="empirical", studentize=studentize)
    fit_rows, _ = det.split(reference.shape[0])
    feats = det.baseline_features(reference)
    estimates = {name: _pooled(feats[name][fit_rows].reshape(-1, 3), 5) for name in ("change", "level", "window")}
    det.fit(reference, estimates=estimates)
    assert det.estimated_ == ("change", "level", "window")
    a, b = central.detect(monitored, alpha=0.05), det.detect(monitored, alpha=0.05)
    np.testing.assert_allclose(b.components["score_change"], a.components["score_change"], rtol=1e-9)
    np.testing.assert_array_equal(a.flags, b.flags)
    if studentize:
        # equal noise for every agent here, so a t statistic only adds denominator noise:
        # the shifted agents are still the extreme ones, short of the BH cut at 150 calibration agents
        assert np.median(b.pvalues[80:]) < 0.02 < np.median(b.pvalues[:80])
    else:
        assert b.flags[80:].mean() > 0.8


def test_default_behaviour_unchanged_and_split_matches_fit() -> None:
    rng = np.random.default_rng(2)
    reference = _fleet(rng, 200)
    det = NetworkDetector(reference_windows=4).fit(reference)
    fit_rows, cal_rows = det.split(200)
    assert det.estimated_ == ()
    assert cal_rows.size == det.n_calibration_ and np.intersect1d(fit_rows, cal_rows).size == 0
    feats = det.baseline_features(reference)
    refit = NetworkDetector(reference_windows=4).fit(reference, estimates={})
    np.testing.assert_array_equal(refit.change_.covariance_, det.change_.covariance_)
    assert det.change_.mahalanobis(feats["change"][cal_rows]).size == cal_rows.size


def test_injected_kernel_factory_is_used_and_agrees() -> None:
    rng = np.random.default_rng(3)
    reference = _fleet(rng, 200)
    monitored = _fleet(rng, 50)
    calls: list[int] = []

    def factory(location: np.ndarray, covariance: np.ndarray) -> WhiteningKernel:
        calls.append(location.size)
        return WhiteningKernel.from_covariance(location, covariance)

    plain = NetworkDetector(reference_windows=4).fit(reference).detect(monitored)
    injected = NetworkDetector(reference_windows=4, kernel_factory=factory).fit(reference).detect(monitored)
    assert calls == [3, 3, 3]
    np.testing.assert_allclose(injected.pvalues, plain.pvalues, rtol=0, atol=0)
    np.testing.assert_allclose(injected.components["score_level"], plain.components["score_level"], rtol=1e-12)


def test_bad_estimates_are_refused_naming_the_baseline() -> None:
    rng = np.random.default_rng(4)
    reference = _fleet(rng, 100)
    det = NetworkDetector(reference_windows=4)
    with pytest.raises(BaselineError, match="unknown baselines"):
        det.fit(reference, estimates={"cusum": (np.zeros(3), np.eye(3))})
    with pytest.raises(BaselineError, match=r"estimates\['change'\] has 2 features"):
        det.fit(reference, estimates={"change": (np.zeros(2), np.eye(2))})
    with pytest.raises(BaselineError, match=r"estimates\['level'\].*NaN"):
        det.fit(reference, estimates={"level": (np.full(3, np.nan), np.eye(3))})
    with pytest.raises(BaselineError, match=r"estimates\['level'\] must be a"):
        det.fit(reference, estimates={"level": np.eye(3)})  # type: ignore[dict-item]
    assert not hasattr(det, "calibration_")
    with pytest.raises(BaselineError, match="at least 40"):
        det.split(10)
