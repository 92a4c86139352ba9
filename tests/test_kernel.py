"""Correctness of the scoring kernel: agreement with scikit-learn, chunking, threads, errors."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.covariance import MinCovDet

from tcpkit.detect.kernel import WhiteningKernel, default_chunk_rows, default_threads


def _problem(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    cov = a @ a.T + d * np.eye(d)
    loc = rng.normal(size=d)
    X = rng.multivariate_normal(loc, cov, size=n)
    return X, loc, cov


def _direct(X: np.ndarray, loc: np.ndarray, cov: np.ndarray) -> np.ndarray:
    centred = np.asarray(X, dtype=np.float64) - loc
    return np.einsum("ij,ij->i", centred @ np.linalg.inv(cov), centred)


@pytest.fixture(scope="module")
def mcd() -> tuple[np.ndarray, MinCovDet]:
    X, _, _ = _problem(400, 6, seed=1)
    X[:20] += 8.0  # some outliers, so the robust fit differs from the classical one
    return X, MinCovDet(random_state=0).fit(X)


def test_matches_sklearn_mincovdet_float64(mcd: tuple[np.ndarray, MinCovDet]) -> None:
    X, est = mcd
    kernel = WhiteningKernel.from_covariance(est.location_, est.covariance_)
    got = kernel.squared_distances(X)
    want = est.mahalanobis(X)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_matches_sklearn_mincovdet_float32_without_upcast(
    mcd: tuple[np.ndarray, MinCovDet],
) -> None:
    X, est = mcd
    kernel = WhiteningKernel.from_covariance(est.location_, est.covariance_)
    X32 = X.astype(np.float32)
    got = kernel.squared_distances(X32)
    assert got.dtype == np.float32
    want = est.mahalanobis(X32.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=0)


def test_integer_input_is_scored_in_float64() -> None:
    kernel = WhiteningKernel.from_covariance(np.zeros(2), np.eye(2))
    got = kernel.squared_distances(np.array([[3, 4], [0, 0]]))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [25.0, 0.0])


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 60),
    d=st.integers(1, 5),
    chunk_rows=st.integers(1, 25),
    threads=st.integers(1, 3),
    use_float32=st.booleans(),
)
def test_chunk_boundaries_and_threads(
    n: int, d: int, chunk_rows: int, threads: int, use_float32: bool
) -> None:
    X, loc, cov = _problem(n, d, seed=n * 7 + d)
    if use_float32:
        X = X.astype(np.float32)
    kernel = WhiteningKernel.from_covariance(loc, cov)
    got = kernel.squared_distances(X, chunk_rows=chunk_rows, threads=threads)
    assert got.shape == (n,) and got.dtype == X.dtype
    rtol = 1e-4 if use_float32 else 1e-11
    np.testing.assert_allclose(got, _direct(X, loc, cov), rtol=rtol, atol=1e-6 if use_float32 else 0)


def test_default_parallel_path_equals_single_thread() -> None:
    X, loc, cov = _problem(140_000, 3, seed=3)
    kernel = WhiteningKernel.from_covariance(loc, cov)
    assert default_threads(X.shape[0]) >= 1
    one = kernel.squared_distances(X, threads=1)
    several = kernel.squared_distances(X, threads=2, chunk_rows=10_000)
    np.testing.assert_allclose(several, one, rtol=1e-13, atol=0)
    np.testing.assert_allclose(one[:500], _direct(X[:500], loc, cov), rtol=1e-12)


def test_out_is_filled_and_returned() -> None:
    X, loc, cov = _problem(10, 3)
    kernel = WhiteningKernel.from_covariance(loc, cov)
    out = np.zeros(10)
    assert kernel.squared_distances(X, out=out) is out
    np.testing.assert_allclose(out, _direct(X, loc, cov), rtol=1e-12)


def test_empty_input_gives_empty_result() -> None:
    kernel = WhiteningKernel.from_covariance(np.zeros(3), np.eye(3))
    assert kernel.squared_distances(np.empty((0, 3))).shape == (0,)


def test_default_chunk_rows_keeps_buffer_near_512_kib() -> None:
    assert default_chunk_rows(8, np.float32) == 16_384
    assert default_chunk_rows(32, np.float64) == 2_048
    assert default_chunk_rows(100_000, np.float64) == 1_024


@pytest.mark.parametrize(
    ("location", "covariance", "match"),
    [
        (np.zeros(3), np.eye(2), "expected \\(d,\\) and \\(d, d\\)"),
        (np.zeros((3, 1)), np.eye(3), "expected \\(d,\\) and \\(d, d\\)"),
        (np.zeros(0), np.eye(0), "d >= 1"),
        (np.zeros(2), np.array([[1.0, np.nan], [np.nan, 1.0]]), "NaN or infinite"),
        (np.array([np.inf, 0.0]), np.eye(2), "NaN or infinite"),
        (np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), "not symmetric"),
        (np.zeros(2), np.array([[1.0, 1.0], [1.0, 1.0]]), "not positive definite"),
        (np.zeros(2), np.array([[1.0, 0.0], [0.0, -1.0]]), "not positive definite"),
    ],
)
def test_bad_fit_is_refused(location: np.ndarray, covariance: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WhiteningKernel.from_covariance(location, covariance)


def test_bad_inputs_are_refused_with_a_clear_error() -> None:
    kernel = WhiteningKernel.from_covariance(np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="expected \\(n_agents, 3\\)"):
        kernel.squared_distances(np.zeros(3))
    with pytest.raises(ValueError, match="expected \\(n_agents, 3\\)"):
        kernel.squared_distances(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="out must be"):
        kernel.squared_distances(np.zeros((4, 3)), out=np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match="out must be"):
        kernel.squared_distances(np.zeros((4, 3)), out=np.zeros(5))
    with pytest.raises(ValueError, match="chunk_rows"):
        kernel.squared_distances(np.zeros((4, 3)), chunk_rows=0)
    with pytest.raises(ValueError, match="threads"):
        kernel.squared_distances(np.zeros((4, 3)), threads=0)
    bad = np.zeros((5, 3))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        kernel.squared_distances(bad)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_rows_are_refused_in_every_worker(value: float) -> None:
    kernel = WhiteningKernel.from_covariance(np.zeros(3), np.eye(3))
    X = np.zeros((9_000, 3))
    X[8_999, 2] = value  # last chunk of the second worker
    with pytest.raises(ValueError, match="NaN or infinite"):
        kernel.squared_distances(X, threads=2, chunk_rows=1_000)


def test_float32_overflow_is_refused_not_returned_as_inf() -> None:
    kernel = WhiteningKernel.from_covariance(np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="overflow float32"):
        kernel.squared_distances(np.full((3, 2), 1e30, dtype=np.float32))


def test_kernel_is_frozen() -> None:
    kernel = WhiteningKernel.from_covariance(np.zeros(2), np.eye(2))
    with pytest.raises(AttributeError):
        kernel.location = np.ones(2)  # type: ignore[misc]


def _score_in_child(queue: object) -> None:
    kernel = WhiteningKernel.from_covariance(np.zeros(2), np.eye(2))
    queue.put(float(kernel.squared_distances(np.ones((200_000, 2)), threads=2).sum()))  # type: ignore[attr-defined]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_worker_pool_survives_fork() -> None:
    kernel = WhiteningKernel.from_covariance(np.zeros(2), np.eye(2))
    kernel.squared_distances(np.ones((200_000, 2)), threads=2)  # the parent's pool exists
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_score_in_child, args=(queue,))
    child.start()
    assert queue.get(timeout=30) == 400_000.0
    child.join(timeout=30)
    assert child.exitcode == 0
