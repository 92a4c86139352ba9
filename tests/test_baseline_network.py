"""Tests for the CUSUM, the composite network detector and the ancestor's rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpkit.detect.ancestor import ancestor_detect
from tcpkit.detect.baseline import BaselineError
from tcpkit.detect.composite import NetworkDetector
from tcpkit.detect.config import ConfigError, DetectorConfig
from tcpkit.detect.sequential import CusumDetector, siegmund_arl, threshold_for_arl


def test_cusum_threshold_meets_target_arl_and_detects_drift() -> None:
    h = threshold_for_arl(0.5, 500.0)
    assert siegmund_arl(0.5, h) == pytest.approx(500.0)
    rng = np.random.default_rng(0)
    det = CusumDetector(rng.normal(size=20_000), k=0.5, target_arl=500.0)
    clean = det.run(rng.normal(size=(2000, 50)))
    # in-control: P(alarm within 50 windows) is about 50/500, certainly below 0.2
    assert clean.alarms.mean() < 0.2
    drift = rng.normal(size=(200, 50)) + np.linspace(0, 3, 50)
    result = det.run(drift)
    assert result.alarms.mean() > 0.95
    ttd = result.time_to_detect()
    assert np.nanmedian(ttd) < 30 and (result.alarm_window[result.alarms] >= 0).all()
    with pytest.raises(ValueError, match="NaN"):
        det.run(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="at least 20"):
        CusumDetector(np.zeros(5))


def _fleet(rng: np.random.Generator, n: int, shift: np.ndarray | None = None) -> np.ndarray:
    level = rng.normal(scale=2.0, size=(n, 1, 3))  # heterogeneous agents
    noise = rng.normal(size=(n, 12, 3)) * np.exp(rng.normal(0, 0.2, size=(n, 1, 1)))
    w = level + noise
    if shift is not None:
        w = w + shift
    return w


def test_network_detector_catches_changes_and_levels_with_valid_fpr() -> None:
    rng = np.random.default_rng(1)
    det = NetworkDetector(reference_windows=4, method="ogk").fit(_fleet(rng, 3000))
    clean = _fleet(rng, 2000)
    none = det.detect(clean, alpha=0.05, fdr="none")
    assert 0.03 <= none.flags.mean() <= 0.07  # conformal calibration
    change = _fleet(rng, 40)
    change[:, 4:, 0] += 5.0  # shift after the reference windows
    level = _fleet(rng, 40)
    level[:, :, 1] += 12.0  # present from window 0: invisible to before/after
    monitored = np.concatenate([clean[:400], change, level])
    result = det.detect(monitored, alpha=0.05)
    assert result.flags[400:440].mean() > 0.9 and result.flags[440:].mean() > 0.9
    assert result.flags[:400].mean() < 0.03
    assert (result.components["p_level"][440:] < result.components["p_change"][440:]).mean() > 0.9
    assert (result.components["alarm_window"][400:440] >= 0).mean() > 0.9
    assert len(result.explanations) == result.n_flagged


def test_network_detector_validates_input() -> None:
    rng = np.random.default_rng(2)
    det = NetworkDetector(reference_windows=4, method="ogk")
    with pytest.raises(BaselineError, match="not fitted"):
        det.detect(_fleet(rng, 10))
    with pytest.raises(BaselineError, match="at least 40"):
        det.fit(_fleet(rng, 10))
    det.fit(_fleet(rng, 200))
    bad = _fleet(rng, 10)
    bad[3, 2, 1] = np.nan
    with pytest.raises(BaselineError, match=r"agents \[3\]"):
        det.detect(bad)
    with pytest.raises(BaselineError, match="windows per agent"):
        det.detect(_fleet(rng, 10)[:, :8])
    with pytest.raises(BaselineError, match="features"):
        det.detect(np.zeros((5, 12, 2)))


def test_ancestor_rule_on_window_features() -> None:
    names = ("accuracy", "bias", "bias_safe", "bias_network_privesc", "bias_high_risk")
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.01, size=(4, 10, 5))
    w[:, :, 0] += 0.9
    w[1, 5:, 1] += 0.3  # |mean bias| > 0.15 ...
    w[1, 5:, 0] -= 0.2  # ... and accuracy drop: two pieces, 0.7 points
    w[2, 5:, 1] += 0.3  # bias alone: one piece, not flagged
    result = ancestor_detect(w, names, 5)
    assert result.flags.tolist() == [False, True, False, False]
    assert result.score[1] == pytest.approx(0.7) and result.n_evidence[2] == 1
    with pytest.raises(ValueError, match="lacks"):
        ancestor_detect(w, ("a", "b", "c", "d", "e"), 5)


def test_combined_pvalue_is_exact_full_conformal_rank() -> None:
    """Each of n + 1 agents judged against the other n gets a distinct rank / (n + 1).

    That is the property that makes the combined p-value exactly uniform under
    exchangeability: ties in min-p (frequent, it takes few values) are broken by the
    fixed key instead of being counted as extreme.
    """
    from tcpkit.detect.weighted_minp import WeightedMinp

    rng = np.random.default_rng(4)
    scores = rng.gamma(2.0, size=(61, 3))
    key = np.log1p(scores).sum(axis=1)
    for weights in ((1, 1, 1), (3, 1, 1), (2, 3, 1)):
        ps = []
        for i in range(scores.shape[0]):
            index = WeightedMinp.build(np.delete(scores, i, axis=0), np.delete(key, i), weights)
            ps.append(index.pvalues(scores[[i]], key[[i]])[0])
        np.testing.assert_allclose(np.sort(ps) * 61, np.arange(1, 62))


@pytest.mark.parametrize("names", [None, ("a", "b", "family_underrating")])
def test_combined_false_alarm_rate_in_band_over_many_calibrations(
    names: tuple[str, ...] | None,
) -> None:
    """Clean false-alarm rate at alpha over many independent reference fleets.

    Given one calibration set the rate of an exact full-conformal p-value is
    Beta(k, n_cal + 1 - k) with ``k = floor(alpha (n_cal + 1))``, so the alarms among
    ``m`` clean agents judged against it are beta-binomial. Pooled over ``reps``
    fleets, the rate must lie within 3.5 standard deviations of ``k / (n_cal + 1)``.
    """
    alpha, reps, m = 0.05, 100, 20
    rng = np.random.default_rng(7)
    alarms = 0
    for r in range(reps):
        fleet = _fleet(rng, 160 + m)[:, :6]  # 80 fit, 80 calibrate, m judged
        det = NetworkDetector(
            reference_windows=3, method="empirical", random_state=r, feature_names=names
        ).fit(fleet[:160])
        alarms += int(det.detect(fleet[160:], alpha=alpha, fdr="none").flags.sum())
    assert len(det.components_) == (3 if names is None else 4)
    n1 = det.n_calibration_ + 1
    exact = np.floor(alpha * n1) / n1
    sd = np.sqrt(exact * (1 - exact) * (n1 + m) / (n1 + 1) / (m * reps))
    assert abs(alarms / (m * reps) - exact) <= 3.5 * sd, (alarms / (m * reps), exact, sd)


def test_focus_feature_gets_its_own_one_sided_change_test() -> None:
    """A shift on the focus feature alone is caught by the ``family`` test, one-sided."""
    rng = np.random.default_rng(3)
    names = ("a", "b", "family_underrating")
    reference = _fleet(rng, 3000)
    det = NetworkDetector(reference_windows=4, method="ogk", feature_names=names).fit(reference)
    assert det.components_ == ("change", "level", "cusum", "family") and det.focus_index_ == 2
    plain = NetworkDetector(reference_windows=4, method="ogk", feature_names=("a", "b", "c"))
    assert plain.fit(reference).components_ == ("change", "level", "cusum")
    clean = _fleet(rng, 2000)
    assert 0.03 <= det.detect(clean, alpha=0.05, fdr="none").flags.mean() <= 0.07
    up, down = _fleet(rng, 200), _fleet(rng, 200)
    up[:, 4:, 2] += 2.5  # larger = worse for the focus feature
    down[:, 4:, 2] -= 2.5
    p_up = det.detect(up, alpha=0.05, fdr="none").components["p_family"]
    p_down = det.detect(down, alpha=0.05, fdr="none").components["p_family"]
    assert np.median(p_up) < 0.01 < 0.9 < np.median(p_down)
    with_focus = det.detect(up, alpha=0.05, fdr="none").flags.mean()
    without = plain.detect(up, alpha=0.05, fdr="none").flags.mean()
    assert with_focus > without


def _reference_full_conformal_minp(
    cal_scores: np.ndarray,
    cal_key: np.ndarray,
    test_scores: np.ndarray,
    test_key: np.ndarray,
    weights: tuple[int, ...] | None = None,
) -> np.ndarray:
    """The O(n_cal) per agent definition of the (weighted) full-conformal min-p, kept as the oracle.

    Ranks ``#{cal >= s}`` per component, each multiplied by ``lcm(w) / w_j``; with the judged
    agent added a calibration agent's rank grows by one where the judged score is at least its own.
    """
    n, k = cal_scores.shape
    w = np.ones(k, dtype=np.int64) if weights is None else np.asarray(weights, dtype=np.int64)
    factor = np.lcm.reduce(w) // w
    cols = [np.sort(cal_scores[:, j]) for j in range(k)]
    cal_rank = np.column_stack([n - np.searchsorted(c, cal_scores[:, j], side="left") for j, c in enumerate(cols)])
    test_rank = np.column_stack([n - np.searchsorted(c, test_scores[:, j], side="left") for j, c in enumerate(cols)])
    t = ((test_rank + 1) * factor).min(axis=1)[:, None]
    bumped = cal_scores[None, :, :] <= test_scores[:, None, :]
    stat = ((cal_rank[None, :, :] + bumped) * factor).min(axis=2)
    more = (stat < t).sum(axis=1)
    tied = ((stat == t) & (cal_key[None, :] >= test_key[:, None])).sum(axis=1)
    return (1 + more + tied) / (n + 1.0)


@st.composite
def _minp_case(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Calibration and judged scores on a coarse grid (many ties), judged rows partly copies of calibration rows."""
    k = draw(st.sampled_from([1, 2, 3, 4]))
    n = draw(st.integers(1, 30))
    m = draw(st.integers(1, 30))
    levels = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    cal = rng.integers(0, levels, size=(n, k)).astype(np.float64)
    test = rng.integers(-1, levels + 1, size=(m, k)).astype(np.float64)
    copies = rng.random(m) < draw(st.sampled_from([0.0, 0.5, 1.0]))
    test[copies] = cal[rng.integers(0, n, size=int(copies.sum()))]
    if draw(st.booleans()):  # keys with ties too (in production a continuous function of the scores)
        cal_key = rng.integers(0, 3, size=n).astype(np.float64)
        test_key = rng.integers(0, 3, size=m).astype(np.float64)
    else:
        cal_key, test_key = np.log1p(cal).sum(axis=1), np.log1p(np.maximum(test, 0)).sum(axis=1)
    return cal, test, cal_key, test_key


@settings(max_examples=400, deadline=None)
@given(_minp_case(), st.lists(st.integers(1, 4), min_size=4, max_size=4), st.booleans())
def test_weighted_minp_equals_the_per_agent_definition(
    case: tuple[np.ndarray, ...], weights: list[int], unweighted: bool
) -> None:
    """The band search gives the O(n_cal) definition's p-values exactly, ties included, any weights."""
    from tcpkit.detect.weighted_minp import WeightedMinp

    cal, test, cal_key, test_key = case
    w = tuple([1] * cal.shape[1] if unweighted else weights[: cal.shape[1]])
    expected = _reference_full_conformal_minp(cal, cal_key, test, test_key, w)
    np.testing.assert_array_equal(WeightedMinp.build(cal, cal_key, w).pvalues(test, test_key), expected)


def test_weighted_minp_groups_wide_bands_without_changing_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many tied calibration scores make wide bands; judging them in small groups gives the same p-values."""
    import tcpkit.detect.weighted_minp as wm

    rng = np.random.default_rng(5)
    cal = rng.integers(0, 3, size=(300, 3)).astype(np.float64)
    test = rng.integers(0, 4, size=(200, 3)).astype(np.float64)
    cal_key, test_key = rng.random(300), rng.random(200)
    expected = _reference_full_conformal_minp(cal, cal_key, test, test_key, (3, 1, 2))
    monkeypatch.setattr(wm, "_BAND_BUDGET", 64)
    index = wm.WeightedMinp.build(cal, cal_key, (3, 1, 2))
    assert len(wm._groups(np.full(200, 50), 64)) == 200  # one agent per group at that budget
    np.testing.assert_array_equal(index.pvalues(test, test_key), expected)


def test_weighted_minp_refuses_bad_weights() -> None:
    from tcpkit.detect.weighted_minp import WeightedMinp, WeightError

    cal = np.zeros((5, 2))
    for bad in ((0, 1), (1.5, 1), (1,), (True, 1)):
        with pytest.raises(WeightError):
            WeightedMinp.build(cal, np.zeros(5), bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("names", [None, ("a", "b", "family_underrating")])
@pytest.mark.parametrize("change_weight", [1, 3])
def test_detector_combined_pvalue_equals_the_per_agent_definition(
    names: tuple[str, ...] | None, change_weight: int
) -> None:
    """End to end (3 and 4 components, CUSUM maxima tied at 0): detect's p-values match the oracle."""
    from tcpkit.detect.composite import _features

    rng = np.random.default_rng(11)
    fleet = _fleet(rng, 260)[:, :6]
    det = NetworkDetector(
        reference_windows=3, method="empirical", random_state=3, feature_names=names, change_weight=change_weight
    ).fit(
        fleet[:200]
    )
    judged = np.concatenate([fleet[200:], fleet[:200]])  # includes the calibration agents themselves
    result = det.detect(judged, alpha=0.05)
    _, cal_rows = det.split(200)
    feats = _features(fleet[:200], 3, det.studentize_prior_)
    cal_scores = det._component_scores(feats, cal_rows)
    cal = np.column_stack([cal_scores[c] for c in det.components_])
    test = np.column_stack([result.components[f"score_{c}"] for c in det.components_])
    assert (cal[:, det.components_.index("cusum")] == 0).sum() > 1  # ties really occur
    expected = _reference_full_conformal_minp(
        cal, det._tiebreak_key(cal), test, det._tiebreak_key(test), det._weights()
    )
    np.testing.assert_array_equal(result.pvalues, expected)


def test_change_weight_travels_with_the_model_and_an_older_model_loads_unweighted() -> None:
    """A frozen model decides as it was measured: its weight is stored, and a model frozen
    before the setting existed (no key) keeps the unweighted min-p it was gated with."""
    import json

    rng = np.random.default_rng(12)
    fleet = _fleet(rng, 400)[:, :6]
    for weight in (1, 4):
        det = NetworkDetector(reference_windows=3, change_weight=weight).fit(fleet[:300])
        again = NetworkDetector.from_arrays(det.to_arrays())
        assert again.config.change_weight == weight
        np.testing.assert_array_equal(again.detect(fleet[300:]).pvalues, det.detect(fleet[300:]).pvalues)
    unweighted = NetworkDetector(reference_windows=3, change_weight=1).fit(fleet[:300])
    arrays = unweighted.to_arrays()
    stored = {k: v for k, v in json.loads(str(arrays["config"])).items() if k != "change_weight"}
    loaded = NetworkDetector.from_arrays(dict(arrays, config=np.array(json.dumps(stored, sort_keys=True))))
    assert loaded.config.change_weight == 1
    np.testing.assert_array_equal(loaded.detect(fleet[300:]).pvalues, unweighted.detect(fleet[300:]).pvalues)
    with pytest.raises(ConfigError, match="change_weight"):
        DetectorConfig(change_weight=0)


def test_weighting_the_change_test_finds_more_of_a_shift_that_only_the_change_sees() -> None:
    """The reason for the default: a sustained shift after the reference period, at a fixed BH level."""
    found = {1: 0, 4: 0}
    for seed in (13, 14, 15):
        rng = np.random.default_rng(seed)
        reference = _fleet(rng, 3000)[:, :6]
        monitored = _fleet(rng, 400)[:, :6]
        monitored[:40, 3:] += 2.0  # every feature, from the first detection window on
        for weight in found:
            det = NetworkDetector(reference_windows=3, change_weight=weight).fit(reference)
            result = det.detect(monitored, alpha=0.05)
            found[weight] += int(result.flags[:40].sum())
            assert result.flags[40:].mean() < 0.05
    assert found[4] > found[1], found
