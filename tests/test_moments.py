"""Mergeable moments: exactness against np.cov, stability under offsets, wire format."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpkit.detect.moments import Moments, MomentsFormatError, chunked_moments, merge_all

OFFSET = 1e6


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _batches(seed: int, d: int = 5, offset: float = OFFSET) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 400, size=12)
    mix = rng.normal(size=(d, d))
    return [offset + rng.normal(size=(m, d)) @ mix + rng.normal(size=d) for m in sizes]


def _naive_covariance(batches: list[np.ndarray]) -> np.ndarray:
    """Raw sums (n, sum x, sum x x^T) merged by addition: the textbook unstable way."""
    n = sum(b.shape[0] for b in batches)
    s1 = sum(b.sum(axis=0) for b in batches)
    s2 = sum(b.T @ b for b in batches)
    mean = s1 / n
    return (s2 - n * np.outer(mean, mean)) / (n - 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merged_matches_pooled_np_cov_with_offset(seed: int) -> None:
    batches = _batches(seed)
    pooled = np.concatenate(batches)
    merged = merge_all(Moments.from_batch(b) for b in batches)
    assert merged.n == pooled.shape[0]
    assert _rel(merged.mean, pooled.mean(axis=0)) <= 1e-12
    assert _rel(merged.covariance(), np.cov(pooled, rowvar=False)) <= 1e-9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_naive_raw_sums_fail_the_same_test(seed: int) -> None:
    batches = _batches(seed)
    pooled = np.concatenate(batches)
    assert _rel(_naive_covariance(batches), np.cov(pooled, rowvar=False)) > 1e-9


def test_merge_is_associative_and_commutative_in_value() -> None:
    a, b, c = (Moments.from_batch(x) for x in _batches(7, offset=10.0)[:3])
    left = a.merge(b).merge(c)
    right = a.merge(b.merge(c))
    swapped = c.merge(a).merge(b)
    for other in (right, swapped):
        assert other.n == left.n
        assert _rel(other.covariance(), left.covariance()) <= 1e-12


def test_empty_is_identity_and_ddof() -> None:
    x = _batches(3)[0]
    m = Moments.from_batch(x)
    e = Moments.empty(x.shape[1])
    assert e.merge(m) == m and m.merge(e) == m
    np.testing.assert_allclose(m.covariance(ddof=0), np.cov(x, rowvar=False, ddof=0), rtol=1e-9)
    with pytest.raises(ValueError, match="n > ddof"):
        Moments.from_batch(x[:1]).covariance()


def test_chunked_equals_single_batch() -> None:
    # 1e-12 holds for moderate offsets; at 1e6 the mean itself is only known to ~1e-10
    x = np.concatenate(_batches(4, offset=10.0))
    whole = Moments.from_batch(x)
    chunked = chunked_moments(x, chunk_rows=97)
    assert chunked.n == whole.n
    assert _rel(chunked.covariance(), whole.covariance()) <= 1e-12


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.array([[1.0, np.nan]]), "NaN"),
        (np.ones(3), "shape"),
        (np.array([[np.inf, 1.0]]), "infinite"),
    ],
)
def test_bad_input_is_refused(bad: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Moments.from_batch(bad)


def test_merge_refuses_mismatched_features() -> None:
    with pytest.raises(ValueError, match="features"):
        Moments.empty(2).merge(Moments.empty(3))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 30),
    d=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_bytes_round_trip(n: int, d: int, seed: int) -> None:
    x = np.random.default_rng(seed).normal(size=(n, d)) * 1e3
    m = Moments.from_batch(x)
    back = Moments.from_bytes(m.to_bytes())
    assert back == m and back.n == n
    assert len(m.to_bytes()) == Moments.wire_size(d)


def test_truncated_and_garbled_messages_are_refused() -> None:
    blob = Moments.from_batch(np.arange(12.0).reshape(4, 3)).to_bytes()
    with pytest.raises(MomentsFormatError, match="truncated"):
        Moments.from_bytes(blob[:10])
    with pytest.raises(MomentsFormatError, match="truncated or padded"):
        Moments.from_bytes(blob[:-1])
    with pytest.raises(MomentsFormatError, match="magic"):
        Moments.from_bytes(b"XXXX" + blob[4:])
    with pytest.raises(MomentsFormatError, match="version"):
        Moments.from_bytes(blob[:4] + bytes([9]) + blob[5:])
    for position in (20, 40, len(blob) - 2):
        garbled = bytearray(blob)
        garbled[position] ^= 0x10
        with pytest.raises(MomentsFormatError, match="checksum"):
            Moments.from_bytes(bytes(garbled))


def test_moments_are_immutable() -> None:
    m = Moments.from_batch(np.ones((3, 2)))
    with pytest.raises(ValueError):
        m.mean[0] = 5.0
