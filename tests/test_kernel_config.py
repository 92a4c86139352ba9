"""Kernel settings reach the public path: KernelConfig validation, float32 scoring, in-loop checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tcpkit.detect.baseline import Baseline, BaselineError
from tcpkit.detect.bench import detector_float32_error
from tcpkit.detect.composite import NetworkDetector
from tcpkit.detect.kernel import (
    NonFiniteRowsError,
    WhiteningKernel,
    float32_error_vs_oracle,
    oracle_squared_distances,
)
from tcpkit.detect.kernel_config import (
    DTYPES,
    KernelConfig,
    KernelConfigError,
    default_chunk_rows,
    default_threads,
)


def _data(n: int, d: int, seed: int = 0, offset: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d) + np.eye(d)
    return rng.standard_normal((n, d)) @ mixing.T + offset


# -- KernelConfig ------------------------------------------------------------------------------


def test_defaults_and_round_trip() -> None:
    config = KernelConfig()
    assert (config.dtype, config.chunk_rows, config.threads) == ("float64", None, None)
    assert KernelConfig.from_mapping(None) == config
    assert KernelConfig.from_mapping({}) == config
    tuned = KernelConfig.from_mapping({"dtype": "float32", "chunk_rows": 8192, "threads": 2})
    assert KernelConfig.from_mapping(tuned.to_mapping()) == tuned
    assert KernelConfig.coerce(tuned) is tuned
    assert tuned.rows_per_chunk(8, np.float32) == 8192 and tuned.workers(10) == 2
    assert config.rows_per_chunk(8, np.float32) == default_chunk_rows(8, np.float32)
    assert config.workers(10**6) == default_threads(10**6)
    with pytest.raises(AttributeError):
        config.dtype = "float32"  # type: ignore[misc]


def test_scoring_dtype_never_upcasts_float32() -> None:
    assert KernelConfig().scoring_dtype(np.float32) == np.float32
    assert KernelConfig().scoring_dtype(np.float64) == np.float64
    assert KernelConfig(dtype="float32").scoring_dtype(np.float64) == np.float32


@pytest.mark.parametrize(
    ("mapping", "match"),
    [
        ({"dtype": "float16"}, "dtype='float16': choose one of float64, float32"),
        ({"dtype": 32}, "dtype=32: choose one of"),
        ({"chunk_rows": 0}, "chunk_rows=0: expected a positive integer or None"),
        ({"chunk_rows": 1.5}, "chunk_rows=1.5"),
        ({"chunk_rows": True}, "chunk_rows=True"),
        ({"threads": -1}, "threads=-1: expected a positive integer"),
        ({"threads": "2"}, "threads='2'"),
        ({"chunkrows": 10}, "unknown kernel setting 'chunkrows': allowed keys are dtype, chunk_rows, threads"),
    ],
)
def test_bad_settings_name_the_key_and_the_allowed_values(mapping: dict[str, Any], match: str) -> None:
    with pytest.raises(KernelConfigError, match=match):
        KernelConfig.from_mapping(mapping)


def test_non_mapping_is_refused() -> None:
    with pytest.raises(KernelConfigError, match="must be a mapping"):
        KernelConfig.from_mapping(["float32"])  # type: ignore[arg-type]
    assert DTYPES == ("float64", "float32")


def test_baseline_and_detector_refuse_bad_settings_as_baseline_errors() -> None:
    with pytest.raises(BaselineError, match="unknown kernel setting 'dtyp'"):
        Baseline(kernel_config={"dtyp": "float32"})
    with pytest.raises(BaselineError, match="dtype='half'"):
        NetworkDetector(kernel={"dtype": "half"})


# -- the float32 path --------------------------------------------------------------------------


def test_public_mahalanobis_scores_float32_without_copy_and_matches_oracle() -> None:
    X = _data(50_000, 8)
    base = Baseline("empirical").fit(X)
    X32 = X.astype(np.float32)
    got = base.mahalanobis(X32)
    assert got.dtype == np.float32
    want = oracle_squared_distances(X32, base.location_, base.covariance_)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-4)
    # float64 input keeps float64 scoring by default, and agrees with the oracle closely
    np.testing.assert_allclose(base.mahalanobis(X), oracle_squared_distances(X, base.location_, base.covariance_), rtol=1e-10)


def test_float32_config_narrows_float64_input_chunk_by_chunk() -> None:
    X = _data(30_000, 5, seed=1)
    config = KernelConfig(dtype="float32", chunk_rows=4_096, threads=2)
    base = Baseline("empirical", kernel_config=config).fit(X)
    assert base.kernel_.config == config
    got = base.mahalanobis(X)
    assert got.dtype == np.float32
    want = oracle_squared_distances(X, base.location_, base.covariance_)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-4)
    # the same as scoring a float32 copy of X
    np.testing.assert_array_equal(got, base.kernel_.squared_distances(X.astype(np.float32)))


def test_float32_error_vs_oracle_is_measured_and_can_fail() -> None:
    X = _data(20_000, 8, seed=2)
    base = Baseline("empirical", kernel_config={"dtype": "float32"}).fit(X)
    err = float32_error_vs_oracle(base, X)
    assert 0 < err < 1e-4
    # a baseline that does not score float32 has no float32 error to report
    with pytest.raises(ValueError, match="not float32"):
        float32_error_vs_oracle(Baseline("empirical").fit(X), X)

    class Broken:
        """Scores with a slightly wrong covariance: the oracle must see it."""

        location_ = base.location_
        covariance_ = base.covariance_

        def mahalanobis(self, rows: np.ndarray) -> np.ndarray:
            return (base.mahalanobis(rows) * np.float32(1.001)).astype(np.float32)

    assert float32_error_vs_oracle(Broken(), X) > 5e-4


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("row", [0, 4_095, 4_096, 13_000, 19_999])
def test_non_finite_rows_in_any_chunk_are_named(value: float, row: int) -> None:
    X = _data(20_000, 4, seed=3).astype(np.float32)
    base = Baseline("empirical", kernel_config={"chunk_rows": 4_096, "threads": 2}).fit(X[:1000].astype(np.float64))
    X[row, 2] = value
    with pytest.raises(BaselineError, match=f"NaN or infinite values in rows {row} \\(columns 2\\)"):
        base.mahalanobis(X)


def test_several_bad_rows_are_all_counted_in_the_kernel_error() -> None:
    kernel = WhiteningKernel.from_covariance(np.zeros(3), np.eye(3), KernelConfig(chunk_rows=1_000, threads=2))
    X = np.zeros((9_000, 3))
    bad = [3, 1_500, 4_000, 6_000, 7_000, 8_999]
    X[bad, 1] = np.nan
    with pytest.raises(NonFiniteRowsError, match="rows 3, 1500, 4000, 6000, 7000 ... \\(6 rows\\)") as info:
        kernel.squared_distances(X)
    np.testing.assert_array_equal(info.value.rows, bad)


def test_float32_overflow_names_the_rows() -> None:
    kernel = WhiteningKernel.from_covariance(np.zeros(2), np.eye(2), KernelConfig(dtype="float32"))
    X = np.zeros((10, 2))
    X[7] = 1e30  # finite in float64, its distance overflows float32
    with pytest.raises(NonFiniteRowsError, match="distances of rows 7 overflow float32") as info:
        kernel.squared_distances(X)
    np.testing.assert_array_equal(info.value.rows, [7])


def test_public_path_refuses_bad_shapes_and_types() -> None:
    base = Baseline("empirical").fit(_data(200, 3))
    for bad, match in [
        (np.zeros((0, 3), dtype=np.float32), "empty"),
        (np.zeros(3, dtype=np.float32), "2-D"),
        (np.zeros((4, 2), dtype=np.float32), "2 features"),
        (np.array([["a", "b", "c"]]), "not a numeric array"),
        (np.ones((2, 3), dtype=complex), "not a numeric array"),
    ]:
        with pytest.raises(BaselineError, match=match):
            base.mahalanobis(bad)
    ints = base.mahalanobis(np.ones((2, 3), dtype=np.int64))
    assert ints.dtype == np.float64
    np.testing.assert_allclose(ints, base.mahalanobis([[1.0, 1.0, 1.0]] * 2))


def test_detector_settings_reach_its_baselines() -> None:
    rng = np.random.default_rng(4)
    level = rng.normal(scale=2.0, size=(240, 1, 3))
    reference = level + rng.normal(size=(240, 10, 3))
    monitored = rng.normal(scale=2.0, size=(60, 1, 3)) + rng.normal(size=(60, 10, 3))
    config = KernelConfig(dtype="float32", chunk_rows=2_048)
    det32 = NetworkDetector(reference_windows=4, method="empirical", kernel=config).fit(reference)
    det64 = NetworkDetector(reference_windows=4, method="empirical").fit(reference)
    for name in ("change_", "level_", "window_"):
        assert getattr(det32, name).kernel_.config == config
        assert getattr(det64, name).kernel_.config == KernelConfig()
    a, b = det32.detect(monitored), det64.detect(monitored)
    np.testing.assert_allclose(a.components["score_change"], b.components["score_change"], rtol=1e-4, atol=1e-5)
    assert float32_error_vs_oracle(det32.change_, monitored.mean(axis=1)) < 1e-4
    assert 0 < detector_float32_error(det32, monitored) < 1e-4
    with pytest.raises(ValueError, match="not float32"):
        detector_float32_error(det64, monitored)


def test_public_float32_path_makes_no_copy_of_the_input() -> None:
    import tracemalloc

    X32 = _data(200_000, 8, seed=5).astype(np.float32)  # 6.4 MB; a float64 copy would be 12.8 MB
    base = Baseline("empirical").fit(X32[:2_000].astype(np.float64))
    base.mahalanobis(X32[:10])  # warm up the pool and BLAS
    tracemalloc.start()
    try:
        base.mahalanobis(X32)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # result (0.8 MB) + one 512 KiB chunk buffer per worker; no n x d array
    assert peak < X32.nbytes / 2


def test_kernel_settings_travel_with_the_frozen_detector() -> None:
    import io

    rng = np.random.default_rng(6)
    level = rng.normal(size=(300, 1, 4))
    reference = level + rng.normal(scale=0.3, size=(300, 10, 4))
    monitored = rng.normal(size=(80, 1, 4)) + rng.normal(scale=0.3, size=(80, 10, 4))
    monitored[:10, 5:, 1] += 2.0
    config = KernelConfig(dtype="float32", chunk_rows=4_096)
    det = NetworkDetector(reference_windows=5, kernel=config).fit(reference)
    buf = io.BytesIO()
    np.savez(buf, **det.to_arrays())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    again = NetworkDetector.from_arrays(arrays)
    assert again.kernel_config == config and again.change_.kernel_.config == config
    a, b = det.detect(monitored, alpha=0.1), again.detect(monitored, alpha=0.1)
    np.testing.assert_array_equal(a.pvalues, b.pvalues)
    np.testing.assert_array_equal(a.components["score_change"], b.components["score_change"])
    # the settings travel inside the configuration: a bad one is refused with its key
    import json

    bad = json.loads(str(arrays["config"]))
    bad["kernel"] = {"dtyp": "float32"}
    with pytest.raises(BaselineError, match="unknown kernel setting 'dtyp'"):
        NetworkDetector.from_arrays(dict(arrays, config=np.array(json.dumps(bad))))
