"""Tests for tcpkit.detect.baseline: robust fit, masking, fallbacks, p-values, FDR, explanations."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats.multitest import multipletests

from tcpkit.detect.baseline import (
    Baseline,
    BaselineError,
    DetectionResult,
    SingularDataWarning,
)


def _stackloss() -> np.ndarray:
    from statsmodels.datasets import stackloss

    return np.asarray(stackloss.load_pandas().exog, dtype=np.float64)


def test_stackloss_robust_baseline_resists_masking() -> None:
    X = _stackloss()
    cut = stats.chi2.ppf(0.975, X.shape[1])
    robust = Baseline(method="mcd", random_state=0).fit(X)
    flagged = set((np.flatnonzero(robust.mahalanobis(X) > cut) + 1).tolist())
    assert flagged == {1, 2, 3, 21}
    classical = Baseline(method="empirical").fit(X)
    assert not (set((np.flatnonzero(classical.mahalanobis(X) > cut) + 1).tolist()) & {1, 2, 3, 21})


@pytest.mark.parametrize("method", ["mcd", "ogk", "ledoit_wolf", "empirical"])
def test_fit_recovers_gaussian_parameters(method: str) -> None:
    rng = np.random.default_rng(1)
    A = rng.normal(size=(4, 4))
    cov = A @ A.T + np.eye(4)
    X = rng.multivariate_normal(np.arange(4.0), cov, size=2000)
    b = Baseline(method=method).fit(X)
    assert b.fit(X) is b
    assert b.n_features_in_ == 4
    np.testing.assert_allclose(b.location_, np.arange(4.0), atol=0.25)
    np.testing.assert_allclose(np.diag(b.covariance_), np.diag(cov), rtol=0.2)


def test_robust_fit_ignores_a_contaminating_cluster() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(600, 3))
    X[:60] += 6.0  # 10 % clustered outliers
    mcd = Baseline("mcd").fit(X)
    emp = Baseline("empirical").fit(X)
    assert np.abs(mcd.location_).max() < 0.2
    assert np.abs(emp.location_).min() > 0.4
    assert (mcd.mahalanobis(X[:60]) > stats.chi2.ppf(0.999, 3)).all()


def test_from_estimate_matches_fit_and_scores_through_kernel() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 3))
    fitted = Baseline("empirical").fit(X)
    given_ = Baseline.from_estimate(fitted.location_, fitted.covariance_)
    np.testing.assert_allclose(given_.mahalanobis(X), fitted.mahalanobis(X))
    diff = X - fitted.location_
    direct = np.einsum("ij,jk,ik->i", diff, np.linalg.inv(fitted.covariance_), diff)
    np.testing.assert_allclose(fitted.mahalanobis(X), direct, rtol=1e-9)


def test_singular_inputs_fall_back_with_warning_or_refuse() -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(200, 4))
    X[:, 2] = 1.0
    with pytest.warns(SingularDataWarning, match="Ledoit-Wolf"):
        b = Baseline("mcd").fit(X)
    assert b.method_ == "ledoit_wolf" and np.isfinite(b.mahalanobis(X)).all()
    counts = rng.poisson(0.3, size=(200, 5)).astype(float)  # discrete tool-call counts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularDataWarning)
        assert np.isfinite(Baseline("mcd").fit(counts).mahalanobis(counts)).all()
    with pytest.warns(SingularDataWarning):
        Baseline("empirical").fit(rng.normal(size=(3, 6)))  # more features than rows
    with pytest.raises(BaselineError, match="every column is constant"):
        Baseline("mcd").fit(np.ones((20, 3)))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.array([[0.0, np.nan], [1.0, 2.0]]), "rows 0"),
        (np.array([[0.0, 1.0], [np.inf, 2.0]]), "rows 1"),
        (np.zeros((0, 2)), "empty"),
        (np.zeros(5), "2-D"),
        (np.zeros((4, 3)), "3 features"),
    ],
)
def test_bad_input_is_refused_with_one_clear_error(bad: np.ndarray, message: str) -> None:
    b = Baseline("empirical").fit(np.random.default_rng(5).normal(size=(50, 2)))
    before = b.covariance_.copy()
    with pytest.raises(BaselineError, match=message):
        b.mahalanobis(bad)
    np.testing.assert_array_equal(b.covariance_, before)


def test_unknown_names_and_unfitted_use_are_refused() -> None:
    with pytest.raises(BaselineError, match="method='x'"):
        Baseline(method="x")
    with pytest.raises(BaselineError, match="not fitted"):
        Baseline().mahalanobis(np.zeros((2, 2)))
    b = Baseline("empirical").fit(np.random.default_rng(6).normal(size=(50, 2)))
    with pytest.raises(BaselineError, match="calibrate"):
        b.pvalues(np.zeros((2, 2)))
    with pytest.raises(BaselineError, match="'bogus'"):
        b.pvalues(np.zeros((2, 2)), method="bogus")
    with pytest.raises(BaselineError, match="fdr='by'"):
        b.calibrate(np.zeros((200, 2))).detect(np.zeros((2, 2)), fdr="by")
    with pytest.raises(BaselineError, match="alpha"):
        b.detect(np.zeros((2, 2)), alpha=1.5)


def test_conformal_pvalues_refuse_small_calibration_and_are_valid() -> None:
    rng = np.random.default_rng(7)
    b = Baseline("mcd").fit(rng.normal(size=(500, 3)))
    b.calibrate(rng.normal(size=(50, 3)))
    with pytest.raises(BaselineError, match="at least 100"):
        b.detect(rng.normal(size=(10, 3)), alpha=0.01)
    # Skewed features: conformal keeps its level, chi-square does not.
    train, cal, test = (rng.lognormal(size=(n, 3)) for n in (1000, 2000, 4000))
    b = Baseline("mcd").fit(train).calibrate(cal)
    conformal_fpr = (b.pvalues(test) <= 0.01).mean()
    chi2_fpr = (b.pvalues(test, method="chi2") <= 0.01).mean()
    lo, hi = 0.01 - 3 * np.sqrt(0.01 * 0.99 / 4000), 0.01 + 3 * np.sqrt(0.01 * 0.99 / 4000)
    assert lo - 0.003 <= conformal_fpr <= hi + 0.003
    assert chi2_fpr > 3 * 0.01


def test_detect_flags_shifted_agents_and_bh_matches_statsmodels() -> None:
    rng = np.random.default_rng(8)
    b = Baseline("mcd").fit(rng.normal(size=(1000, 4))).calibrate(rng.normal(size=(5000, 4)))
    X = rng.normal(size=(300, 4))
    X[:15] += 4.0
    result = b.detect(X, alpha=0.05)
    assert isinstance(result, DetectionResult)
    assert result.flags[:15].all() and result.flags[15:].sum() <= 3
    reject, q, _, _ = multipletests(result.pvalues, alpha=0.05, method="fdr_bh")
    np.testing.assert_array_equal(result.flags, reject)
    np.testing.assert_allclose(result.qvalues, q)
    assert len(result.explanations) == result.n_flagged
    e = result.explanations[0]
    np.testing.assert_allclose(e.contributions.sum(), result.scores[e.index], rtol=1e-8)
    assert "agent 0" in result.summary()


def test_explanation_points_at_the_shifted_feature() -> None:
    rng = np.random.default_rng(9)
    b = Baseline("mcd", feature_names=["a", "b", "c"]).fit(rng.normal(size=(800, 3)))
    x = np.array([[0.0, 6.0, 0.0]])
    (e,) = b.explain(x)
    assert e.top(1)[0][0] == "b" and e.z[1] == pytest.approx((6.0 - b.location_[1]) / np.sqrt(b.covariance_[1, 1]))


@settings(max_examples=25, deadline=None)
@given(
    p=st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=60),
    alpha=st.floats(0.001, 0.5),
)
def test_fast_bh_rejections_identical_to_statsmodels(p: list[float], alpha: float) -> None:
    from tcpkit.detect.baseline import decide

    pv = np.asarray(p)
    flags, _ = decide(pv, alpha, "bh")
    np.testing.assert_array_equal(flags, multipletests(pv, alpha=alpha, method="fdr_bh")[0])
