"""p-values and FDR decisions: closed-form chi-square tail, conformal p-values, fast BH."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats.multitest import multipletests

from tcpkit.detect.pvalues import (
    bh_reject,
    chi2_bh_reject,
    chi2_sf,
    chi2_sf_even,
    conformal_bh_reject,
    conformal_pvalues,
    fewest_rejections,
)


@pytest.mark.parametrize("d", [2, 4, 8, 16, 32, 64])
def test_chi2_closed_form_matches_scipy(d: int) -> None:
    rng = np.random.default_rng(d)
    x = np.concatenate([rng.chisquare(d, 2_000), [0.0, 1e-9, 3.0 * d, 10.0 * d, 1_000.0]])
    got = chi2_sf_even(x, d)
    want = stats.chi2.sf(x, d)
    normal = want > 1e-300
    np.testing.assert_allclose(got[normal], want[normal], rtol=1e-12, atol=0)
    assert np.all(got[~normal] < 1e-290)
    np.testing.assert_array_equal(chi2_sf(x, d), got)


def test_chi2_float32_distances_give_float64_pvalues() -> None:
    x = np.array([0.5, 8.0, 40.0], dtype=np.float32)
    got = chi2_sf(x, 8)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, stats.chi2.sf(x.astype(np.float64), 8), rtol=1e-12)


@pytest.mark.parametrize("d", [1, 3, 7])
def test_chi2_odd_dof_falls_back_to_scipy(d: int) -> None:
    x = np.linspace(0, 30, 50)
    np.testing.assert_allclose(chi2_sf(x, d), stats.chi2.sf(x, d), rtol=1e-12)
    with pytest.raises(ValueError, match="odd"):
        chi2_sf_even(x, d)


@pytest.mark.parametrize(
    ("d2", "d", "match"),
    [
        ([1.0, np.nan], 4, "NaN, infinite or negative"),
        ([1.0, -1.0], 4, "NaN, infinite or negative"),
        ([1.0, np.inf], 3, "NaN, infinite or negative"),
        ([[1.0]], 4, "1-D"),
        ([1.0], 0, "positive integer"),
        ([1.0], 2.0, "positive integer"),
        ([1.0], True, "positive integer"),
    ],
)
def test_chi2_bad_input(d2: list[float], d: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        chi2_sf(np.array(d2), d)


@settings(max_examples=60, deadline=None)
@given(
    scores=st.lists(st.integers(0, 12), min_size=0, max_size=30),
    calibration=st.lists(st.integers(0, 12), min_size=1, max_size=30),
)
def test_conformal_matches_counting_with_ties(scores: list[int], calibration: list[int]) -> None:
    s = np.array(scores, dtype=np.float64) / 2
    cal = np.sort(np.array(calibration, dtype=np.float64) / 2)
    want = (1 + (cal[None, :] >= s[:, None]).sum(axis=1)) / (cal.size + 1)
    np.testing.assert_array_equal(conformal_pvalues(s, cal), want.reshape(s.shape))


def test_conformal_bad_input() -> None:
    with pytest.raises(ValueError, match="not sorted"):
        conformal_pvalues(np.ones(3), np.array([2.0, 1.0]))
    with pytest.raises(ValueError, match="non-empty"):
        conformal_pvalues(np.ones(3), np.array([]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        conformal_pvalues(np.ones(3), np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="scores contains NaN"):
        conformal_pvalues(np.array([1.0, np.nan]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="1-D"):
        conformal_pvalues(np.ones((2, 2)), np.array([1.0, 2.0]))


_pvalue = st.one_of(
    st.floats(0, 1, allow_nan=False),
    st.sampled_from([0.0, 1e-6, 0.001, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0]),
)


@settings(max_examples=150, deadline=None)
@given(
    pvalues=st.lists(_pvalue, min_size=1, max_size=80),
    alpha=st.sampled_from([0.001, 0.01, 0.05, 0.1, 0.2, 0.5]),
    as_float32=st.booleans(),
)
def test_bh_identical_to_statsmodels(pvalues: list[float], alpha: float, as_float32: bool) -> None:
    p = np.array(pvalues, dtype=np.float32 if as_float32 else np.float64)
    reject, q = bh_reject(p, alpha, qvalues=True)
    want_reject, want_q, _, _ = multipletests(p, alpha=alpha, method="fdr_bh")
    np.testing.assert_array_equal(reject, want_reject)
    assert q is not None
    np.testing.assert_allclose(q, want_q, rtol=1e-15, atol=0)


def test_bh_identical_on_many_random_inputs_with_ties() -> None:
    rng = np.random.default_rng(5)
    for trial in range(300):
        m = int(rng.integers(1, 2_000))
        p = rng.uniform(size=m) ** rng.uniform(0.3, 10.0)  # from all-null to many signals
        if trial % 3 == 0:
            p = np.round(p, 3)  # ties
        alpha = float(rng.choice([0.01, 0.05, 0.1, 0.25]))
        reject, q = bh_reject(p, alpha)
        assert q is None
        np.testing.assert_array_equal(reject, multipletests(p, alpha, method="fdr_bh")[0])


def test_bh_edge_cases() -> None:
    reject, q = bh_reject(np.array([]), 0.05, qvalues=True)
    assert reject.shape == (0,) and q is not None and q.shape == (0,)
    assert bh_reject(np.ones(5), 0.05)[0].sum() == 0
    assert bh_reject(np.zeros(5), 0.05)[0].all()
    for bad_alpha in (0.0, 1.0, -0.1, float("nan"), True, "0.05"):
        with pytest.raises(ValueError, match="alpha"):
            bh_reject(np.array([0.1]), bad_alpha)  # type: ignore[arg-type]
    for bad in ([0.1, np.nan], [0.1, 1.5], [-0.1]):
        with pytest.raises(ValueError, match="pvalues"):
            bh_reject(np.array(bad), 0.05)


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 400),
    d=st.sampled_from([1, 2, 3, 8, 9, 32]),
    scale=st.sampled_from([1.0, 1.5, 3.0]),
    alpha=st.sampled_from([0.001, 0.01, 0.05, 0.2]),
    rounded=st.booleans(),
    as_float32=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_chi2_bh_reject_identical_to_full_path(
    n: int, d: int, scale: float, alpha: float, rounded: bool, as_float32: bool, seed: int
) -> None:
    x = np.random.default_rng(seed).chisquare(d, n) * scale
    if rounded:
        x = np.round(x, 1)  # ties
    if as_float32:
        x = x.astype(np.float32)
    want = multipletests(chi2_sf(x, d), alpha=alpha, method="fdr_bh")[0]
    np.testing.assert_array_equal(chi2_bh_reject(x, d, alpha), want)


def test_chi2_bh_reject_edge_cases() -> None:
    assert chi2_bh_reject(np.array([]), 4, 0.05).shape == (0,)
    assert chi2_bh_reject(np.array([1e6, 0.0]), 4, 0.05).tolist() == [True, False]
    with pytest.raises(ValueError, match="alpha"):
        chi2_bh_reject(np.array([1.0]), 4, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        chi2_bh_reject(np.array([np.nan]), 4, 0.05)


# -- conformal_bh_reject: candidates by one comparison, identical decisions ----------------

_ALPHAS = [0.001, 0.01, 0.05, 0.1, 0.2, 0.25, 0.5]


def _full_conformal_path(s: np.ndarray, cal: np.ndarray, alpha: float) -> np.ndarray:
    p = conformal_pvalues(s, cal)
    ours = bh_reject(p, alpha)[0]
    if s.size:
        np.testing.assert_array_equal(ours, multipletests(p, alpha=alpha, method="fdr_bh")[0])
    return ours


@settings(max_examples=200, deadline=None)
@given(
    scores=st.lists(st.integers(0, 40), min_size=0, max_size=60),
    n_signals=st.integers(0, 20),
    alpha=st.sampled_from(_ALPHAS),
    n_cal_offset=st.sampled_from([-2, -1, 0, 1, 2, 7, 40]),
    cal_levels=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    dtypes=st.sampled_from(["64/64", "32/32", "32/64", "64/32"]),
)
def test_conformal_bh_reject_identical_to_full_path(
    scores: list[int],
    n_signals: int,
    alpha: float,
    n_cal_offset: int,
    cal_levels: int,
    seed: int,
    dtypes: str,
) -> None:
    # n_cal around 1/alpha - 1 and 1/alpha (where the first p-value can reach alpha),
    # scores and calibration on a coarse grid so that ties across and within them abound.
    rng = np.random.default_rng(seed)
    n_cal = max(1, round(1 / alpha) + n_cal_offset)
    cal = np.sort(rng.integers(0, cal_levels, n_cal).astype(np.float64) / 4)
    s = np.concatenate([np.array(scores, dtype=np.float64) / 4, 10.0 + rng.integers(0, 3, n_signals)])
    s_dtype, cal_dtype = (np.float32 if x == "32" else np.float64 for x in dtypes.split("/"))
    s, cal = s.astype(s_dtype), cal.astype(cal_dtype)
    want = _full_conformal_path(s, cal, alpha)
    got = conformal_bh_reject(s, cal, alpha)
    assert got.dtype == np.bool_ and got.shape == s.shape
    np.testing.assert_array_equal(got, want)


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 3_000),
    n_cal=st.sampled_from([9, 10, 19, 20, 99, 100, 101, 999, 1_000, 2_000]),
    alpha=st.sampled_from(_ALPHAS),
    shift=st.sampled_from([0.0, 2.0, 5.0]),
    signal_fraction=st.sampled_from([0.0, 0.01, 0.2, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_conformal_bh_reject_identical_on_continuous_scores(
    n: int, n_cal: int, alpha: float, shift: float, signal_fraction: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    cal = np.sort(rng.chisquare(8, n_cal))
    s = rng.chisquare(8, n)
    signals = rng.uniform(size=n) < signal_fraction
    s[signals] += shift * 8
    np.testing.assert_array_equal(conformal_bh_reject(s, cal, alpha), _full_conformal_path(s, cal, alpha))


def test_conformal_bh_reject_at_the_calibration_size_boundary() -> None:
    # alpha = 0.1: p = c / (n_cal + 1) reaches 0.1 first at n_cal + 1 = 10 (c = 1)
    far = np.array([100.0])
    for n_cal, possible in ((8, False), (9, True), (10, True)):
        cal = np.arange(n_cal, dtype=np.float64)
        assert conformal_bh_reject(far, cal, 0.1)[0] == possible
        np.testing.assert_array_equal(conformal_bh_reject(far, cal, 0.1), _full_conformal_path(far, cal, 0.1))
    # a score equal to the largest calibration score is not beyond it (ties count against it)
    cal = np.arange(19, dtype=np.float64)
    assert conformal_bh_reject(np.array([18.0]), cal, 0.05).tolist() == [False]
    assert conformal_bh_reject(np.array([np.nextafter(18.0, 19.0)]), cal, 0.05).tolist() == [True]
    # with m = 2 tests BH's first threshold is alpha / 2: 1/20 misses it, 1/100 passes
    assert conformal_bh_reject(np.array([np.inf, 1.0]), cal, 0.05).tolist() == [False, False]
    cal = np.arange(99, dtype=np.float64)
    assert conformal_bh_reject(np.array([np.inf, 1.0]), cal, 0.05).tolist() == [True, False]


def test_float64_calibration_for_float32_scores_keeps_exact_comparisons() -> None:
    # calibration values that float32 cannot represent (or that overflow it), and float32
    # scores on both sides of each of them
    c = np.array([0.1, 1 / 3, 2.5, 1e-45, 3.0e38, 4.0e38])
    cal = np.sort(np.concatenate([c, np.nextafter(c, 0), np.nextafter(c, np.inf)]))
    with np.errstate(over="ignore"):
        near = cal.astype(np.float32)
    s32 = np.concatenate(
        [near, np.nextafter(near, np.float32(np.inf)), np.nextafter(near, np.float32(-np.inf)), [np.float32(0)]]
    ).astype(np.float32)
    want = (1 + (cal[None, :] >= s32.astype(np.float64)[:, None]).sum(axis=1)) / (cal.size + 1)
    np.testing.assert_array_equal(conformal_pvalues(s32, cal), want)
    for alpha in (0.05, 0.1, 0.5):
        np.testing.assert_array_equal(conformal_bh_reject(s32, cal, alpha), bh_reject(want, alpha)[0])
    # float32 calibration, float64 scores: the calibration is widened exactly
    cal32 = np.sort(np.array([0.1, 1 / 3, 2.5, 7.0], dtype=np.float32))
    s64 = np.concatenate([cal32.astype(np.float64), np.nextafter(cal32.astype(np.float64), np.inf), [0.1, 1 / 3]])
    want = (1 + (cal32.astype(np.float64)[None, :] >= s64[:, None]).sum(axis=1)) / (cal32.size + 1)
    np.testing.assert_array_equal(conformal_pvalues(s64, cal32), want)


def test_conformal_bh_reject_bad_input() -> None:
    cal = np.arange(100.0)
    assert conformal_bh_reject(np.array([]), cal, 0.05).shape == (0,)
    with pytest.raises(ValueError, match="not sorted"):
        conformal_bh_reject(np.ones(3), cal[::-1], 0.05)
    with pytest.raises(ValueError, match="non-empty"):
        conformal_bh_reject(np.ones(3), np.array([]), 0.05)
    with pytest.raises(ValueError, match="scores contains NaN"):
        conformal_bh_reject(np.array([1.0, np.nan]), cal, 0.05)
    with pytest.raises(ValueError, match="1-D"):
        conformal_bh_reject(np.ones((2, 2)), cal, 0.05)
    for bad_alpha in (0.0, 1.0, float("nan"), True):
        with pytest.raises(ValueError, match="alpha"):
            conformal_bh_reject(np.ones(3), cal, bad_alpha)  # type: ignore[arg-type]


def test_candidate_count_matches_the_pvalue_division_exactly() -> None:
    from tcpkit.detect.pvalues import _largest_count_at_most

    base = [0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 1 / 3, 0.7]
    alphas = sorted({x for a in base for x in (a, np.nextafter(a, 0.0), np.nextafter(a, 1.0))})
    for n_cal in range(1, 1_200):
        n1 = n_cal + 1
        p_levels = np.arange(n1 + 1, dtype=np.float64) / float(n1)  # the values conformal p can take
        for alpha in alphas:
            want = int(np.flatnonzero(p_levels <= alpha)[-1])
            assert _largest_count_at_most(np.float64(alpha), n_cal) == want, (n_cal, alpha)


@settings(max_examples=200, deadline=None)
@given(
    n_cal=st.integers(1, 3000),
    m=st.integers(1, 4000),
    alpha=st.sampled_from([0.001, 0.01, 0.05, 0.1, 0.2]),
)
@example(n_cal=104, m=2583, alpha=0.01)  # a*k/m and (k/m)*a round differently here: BH's form must be used
def test_fewest_rejections_is_where_bh_first_rejects_agents_at_the_floor(n_cal: int, m: int, alpha: float) -> None:
    # k agents at the floor 1 / (n_cal + 1), the rest at 1: BH flags them exactly when k >= the answer
    floor = 1.0 / (n_cal + 1)
    fewest = fewest_rejections(floor, m, alpha)

    def flags(k: int) -> int:
        return int(bh_reject(np.r_[np.full(k, floor), np.ones(m - k)], alpha)[0].sum())

    if fewest is None:
        assert flags(m) == 0
    else:
        assert flags(fewest) == fewest
        assert fewest == 1 or flags(fewest - 1) == 0


def test_fewest_rejections_without_fdr_and_bad_input() -> None:
    assert fewest_rejections(0.004, 10, 0.01, "none") == 1
    assert fewest_rejections(0.02, 10, 0.01, "none") is None
    assert fewest_rejections(1 / 851, 3400, 0.01) == 400  # 3400 judged against 850 calibration agents
    for bad, match in [((0.0, 5, 0.1), "smallest_p"), ((0.1, 0, 0.1), "m=0"), ((0.1, 5, 1.5), "alpha")]:
        with pytest.raises(ValueError, match=match):
            fewest_rejections(*bad)
    with pytest.raises(ValueError, match="fdr='by'"):
        fewest_rejections(0.1, 5, 0.1, "by")
