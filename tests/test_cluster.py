"""Dask backend on a real LocalCluster with two worker processes (one cluster per module)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2
from statsmodels.stats.multitest import multipletests

from tcpkit.detect import cluster
from tcpkit.detect.cluster import (
    SCHEDULER_ENV,
    ClusterError,
    DaskBackend,
    _sample_rows,
    bh_cutoff,
    conformal_pvalues,
    generate_chunk,
    initial_estimate,
    oracle_recall,
    run_out_of_core,
    same_result,
    truncation_consistency,
)
from tcpkit.detect.kernel import WhiteningKernel
from tcpkit.detect.moments import Moments, chunked_moments
from tcpkit.detect.pvalues import chi2_sf
from tcpkit.release.gates import evaluate, load_pipeline


@pytest.fixture(scope="module")
def backend() -> Iterator[DaskBackend]:
    with DaskBackend(n_workers=2, memory_limit="1GiB") as be:
        yield be
    assert be._client is None and be._cluster is None


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_local_cluster_has_two_workers_on_loopback(backend: DaskBackend) -> None:
    info = backend.client.scheduler_info()
    assert len(info["workers"]) == 2
    assert all(addr.startswith("tcp://127.0.0.1:") for addr in info["workers"])
    assert backend.owns_cluster


def test_workers_import_the_preload_as_they_start(backend: DaskBackend) -> None:
    import sys

    loaded = backend.client.run(lambda: all(m in sys.modules for m in cluster.WORKER_PRELOAD))
    assert len(loaded) == 2 and all(loaded.values())


@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")  # the module's cluster holds it
def test_background_start_waits_on_first_use_and_raises_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with DaskBackend(n_workers=1, background=True, preload=()) as be:
        local = run_out_of_core(20_000, None, chunk_rows=10_000)  # runs while the cluster starts
        dist = run_out_of_core(20_000, be, chunk_rows=10_000)
        assert be.owns_cluster and be.start_seconds is not None and be.start_seconds > 0
    assert dist.baseline == local.baseline and dist.p_cutoff == local.p_cutoff
    assert be._client is None and be._cluster is None

    def refuse(self: DaskBackend) -> None:
        raise OSError("no ports left")

    monkeypatch.setattr(DaskBackend, "_connect", refuse)
    failing = DaskBackend(n_workers=1, background=True).start()
    with pytest.raises(OSError, match="no ports left"):
        failing.wait()
    failing.close()


def test_moments_equal_single_process(backend: DaskBackend) -> None:
    X = np.random.default_rng(1).normal(size=(20_000, 8)) * 3.0 + 50.0
    dist = backend.moments(X, chunk_rows=1_500)
    assert dist == chunked_moments(X, chunk_rows=1_500)  # same chunks, same bits
    whole = Moments.from_batch(X)
    assert dist.n == whole.n
    assert _rel(dist.mean, whole.mean) <= 1e-12
    assert _rel(dist.covariance(), whole.covariance()) <= 1e-12


def _true_covariance(seed: int, d: int) -> np.ndarray:
    """Covariance of the honest agents of generate_chunk (same construction)."""
    population = np.random.default_rng([seed, 0])
    mix = population.normal(size=(d, d)) / np.sqrt(d) + np.eye(d)
    return mix @ mix.T


def test_out_of_core_equals_local_and_in_memory_robust_bh(backend: DaskBackend) -> None:
    n, rows, d, alpha = 60_000, 20_000, 8, 0.05
    kwargs = dict(
        n_features=d, chunk_rows=rows, compromised_fraction=0.02, shift=8.0, seed=4, alpha=alpha,
        initial="ogk",
    )
    dist = run_out_of_core(n, backend, return_flagged=True, **kwargs)  # type: ignore[arg-type]
    local = run_out_of_core(n, None, return_flagged=True, **kwargs)  # type: ignore[arg-type]
    # the cluster and the single-process loop over the same chunks give the same bits
    assert dist.baseline == local.baseline and dist.pooled == local.pooled
    assert np.array_equal(dist.covariance, local.covariance)
    assert dist.flagged is not None and local.flagged is not None
    assert np.array_equal(dist.flagged, local.flagged)
    assert dist.n_agents == n and dist.n_chunks == 3 and dist.n_flagged == dist.flagged.size

    # in memory: every row at once
    chunks = [generate_chunk(4, i, rows, d, 0.02, 8.0) for i in range(3)]
    X = np.concatenate([c[0] for c in chunks])
    labels = np.concatenate([c[1] for c in chunks])
    sample = np.concatenate([c[0][_sample_rows(4, i, rows, -(-2_000 // 3))] for i, c in enumerate(chunks)])
    assert sample.shape[0] == dist.n_subsample
    loc0, cov0 = initial_estimate(sample, "ogk", 4)
    assert _rel(dist.initial_location, loc0) <= 1e-12 and _rel(dist.initial_covariance, cov0) <= 1e-12
    d2 = WhiteningKernel.from_covariance(loc0, cov0).squared_distances(X)
    kept = X[d2 <= chi2.ppf(0.975, d)]
    assert kept.shape[0] == dist.baseline.n
    assert _rel(dist.location, kept.mean(axis=0)) <= 1e-12
    assert _rel(dist.covariance, np.cov(kept.T) * truncation_consistency(d)) <= 1e-12
    assert _rel(dist.pooled.covariance(), np.cov(X.T)) <= 1e-12
    # BH over all N p-values in memory (statsmodels) flags exactly the same agents
    p = chi2_sf(WhiteningKernel.from_covariance(dist.location, dist.covariance).squared_distances(X), d)
    reject = multipletests(p, alpha=alpha, method="fdr_bh")[0]
    assert np.array_equal(np.flatnonzero(reject), dist.flagged)
    assert dist.true_positives == int((reject & labels).sum()) and dist.n_compromised == int(labels.sum())
    assert dist.n_candidates == int((p <= alpha).sum())
    # the generated chunks never reach the client: its peak is far below one chunk (1.28 MB)
    assert dist.client_peak_bytes < rows * d * 8


def test_robust_baseline_unmasks_two_percent_contamination(backend: DaskBackend) -> None:
    d = 8
    res = run_out_of_core(
        200_000, backend, n_features=d, chunk_rows=50_000, compromised_fraction=0.02, shift=8.0, alpha=0.01, seed=1
    )
    assert 3_500 < res.n_compromised < 4_500
    assert res.recall >= 0.95
    assert res.fdp <= 0.02  # BH at 1 %: one run's false discovery proportion, with slack
    # the pooled covariance is inflated by the compromised agents; the robust one is not
    true = _true_covariance(1, d)
    robust_err = _rel(res.covariance, true)
    pooled_err = _rel(res.pooled.covariance(), true)
    assert robust_err < 0.05 < pooled_err
    # the plain pooled baseline masks: with it, far fewer compromised agents clear the same BH level
    X, labels = generate_chunk(1, 0, 50_000, d, 0.02, 8.0)
    p_pooled = chi2_sf(
        WhiteningKernel.from_covariance(res.pooled.mean, res.pooled.covariance()).squared_distances(X), d
    )
    recall_pooled = float((multipletests(p_pooled, alpha=0.01, method="fdr_bh")[0] & labels).sum() / labels.sum())
    assert recall_pooled < res.recall - 0.2


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from([0.0, 1e-6, 1e-4, 2e-4, 1e-3, 0.004, 0.01, 0.02, 0.3, 0.9, 1.0]), min_size=1, max_size=60),
    st.sampled_from([0.01, 0.05, 0.2]),
)
def test_bh_cutoff_equals_statsmodels(values: list[float], alpha: float) -> None:
    p = np.array(values)
    cutoff = bh_cutoff(p[p <= alpha], p.size, alpha)
    assert np.array_equal(p <= cutoff, multipletests(p, alpha=alpha, method="fdr_bh")[0])


def test_truncation_consistency_makes_the_kept_covariance_unbiased() -> None:
    X = np.random.default_rng(3).standard_normal(size=(400_000, 4))
    kept = X[(X**2).sum(axis=1) <= chi2.ppf(0.975, 4)]
    cov = np.cov(kept.T) * truncation_consistency(4)
    assert np.max(np.abs(cov - np.eye(4))) < 0.01
    assert np.max(np.abs(np.cov(kept.T) - np.eye(4))) > 0.05  # without the factor it is biased


def test_bad_inputs(backend: DaskBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ClusterError, match="scheduler"):
        DaskBackend(scheduler="http://example.com")
    monkeypatch.setenv(SCHEDULER_ENV, "localhost:8786")
    with pytest.raises(ClusterError, match=SCHEDULER_ENV):
        DaskBackend()
    monkeypatch.setenv(SCHEDULER_ENV, "tcp://127.0.0.1:8786")
    assert DaskBackend().scheduler == "tcp://127.0.0.1:8786"
    with pytest.raises(ClusterError, match="NaN"):
        backend.moments(np.array([[1.0, np.nan]]))
    with pytest.raises(ClusterError, match="n_agents"):
        run_out_of_core(1, backend)
    with pytest.raises(ClusterError, match="initial"):
        run_out_of_core(100, None, initial="median")
    with pytest.raises(ClusterError, match="reweight_steps"):
        run_out_of_core(100, None, reweight_steps=3)
    with pytest.raises(ClusterError, match="subsample"):
        run_out_of_core(100, None, subsample=5)
    with pytest.raises(ClusterError, match="alpha"):
        run_out_of_core(100, None, alpha=0.0)
    with pytest.raises(ClusterError, match="not started"):
        _ = DaskBackend(scheduler="tcp://127.0.0.1:1").client


def test_existing_scheduler_is_used_not_owned(backend: DaskBackend) -> None:
    address = backend.client.scheduler.address
    with DaskBackend(scheduler=address) as other:
        assert not other.owns_cluster
        X = np.arange(60.0).reshape(20, 3) ** 1.5
        assert other.moments(X, chunk_rows=7) == chunked_moments(X, chunk_rows=7)
    # closing the borrowing client left the cluster running
    assert len(backend.client.scheduler_info()["workers"]) == 2


# --- heavy tails, conformal p-values, and the gated Dask metrics broken one by one ---------------
_PIPELINE = Path(__file__).resolve().parents[1] / "notebooks" / "pipeline.toml"
HEAVY = dict(chunk_rows=50_000, compromised_fraction=0.02, alpha=0.01, df=5.0, n_calibration=100_000, seed=3)


def _gate_passes(metric: str, value: object, gate: str = "PRODUCTION") -> bool:
    spec = load_pipeline(_PIPELINE, require_notebooks=False).components["distributed"].gate(gate)
    criteria = [c for c in spec.criteria if c.metric == metric]
    assert criteria, f"no {metric} criterion at {gate}"
    return evaluate(criteria, {metric: value}).passed


def test_student_t_chunks_have_unit_variance_heavy_tails_and_gaussian_default_is_unchanged() -> None:
    X, _ = generate_chunk(0, 0, 200_000, 4, 0.0, 0.0, 5.0)
    Z = (X - X.mean(axis=0)) @ np.linalg.inv(np.linalg.cholesky(_true_covariance(0, 4))).T
    assert np.allclose(np.cov(Z.T), np.eye(4), atol=0.05)
    kurt = ((Z - Z.mean(axis=0)) ** 4).mean(axis=0) / Z.var(axis=0) ** 2
    assert np.all(kurt > 4.5)  # Gaussian: 3; Student t 5: 9 (heavy tails)
    a, la = generate_chunk(1, 2, 500, 3, 0.1, 4.0)
    b, lb = generate_chunk(1, 2, 500, 3, 0.1, 4.0, float("inf"), 1)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    cal, labels = generate_chunk(1, 2, 500, 3, 0.1, 4.0, stream=cluster.CALIBRATION_STREAM)
    assert not np.array_equal(cal, a)
    with pytest.raises(ValueError, match="df"):
        generate_chunk(0, 0, 10, 2, 0.0, 0.0, 2.0)


def test_conformal_pvalues_count_calibration_scores_at_least_as_large() -> None:
    cal = np.sort(np.random.default_rng(0).exponential(size=999))
    d2 = np.array([-1.0, cal[0], cal[500], cal[-1], cal[-1] + 1.0])
    expected = [(1 + np.sum(cal >= v)) / 1000 for v in d2]
    assert np.array_equal(conformal_pvalues(d2, cal), expected)


@pytest.mark.breaks("distributed", "dask_fdp")
def test_heavy_tailed_gate_world_passes_with_conformal_and_fails_with_chi2() -> None:
    good = run_out_of_core(100_000, None, shift=14.0, pvalues="conformal", **HEAVY)  # type: ignore[arg-type]
    assert good.pvalues == "conformal" and good.n_calibration == 100_000 and good.df == 5.0
    assert _gate_passes("dask_recall", good.recall) and _gate_passes("dask_fdp", good.fdp)
    chi = run_out_of_core(100_000, None, shift=14.0, pvalues="chi2", **HEAVY)  # type: ignore[arg-type]
    assert chi.fdp > 0.2  # heavy tails: chi-square p-values flood BH with honest agents
    assert not _gate_passes("dask_fdp", chi.fdp)


@pytest.mark.breaks("distributed", "dask_recall")
def test_a_shift_below_the_oracle_cliff_fails_dask_recall() -> None:
    weak = run_out_of_core(100_000, None, shift=5.0, pvalues="conformal", **HEAVY)  # type: ignore[arg-type]
    assert weak.recall < 0.9
    assert not _gate_passes("dask_recall", weak.recall)
    oracle = oracle_recall([5.0, 16.0], df=5.0, compromised_fraction=0.02, n_honest=200_000, n_compromised=20_000)
    assert oracle[0] < 0.5 < 0.95 < oracle[1]


@pytest.mark.breaks("distributed", "dask_equals_local")
def test_a_changed_chunk_fails_dask_equals_local(monkeypatch: pytest.MonkeyPatch) -> None:
    kw: dict[str, Any] = dict(chunk_rows=20_000, compromised_fraction=0.02, shift=8.0, alpha=0.01, return_flagged=True)
    a = run_out_of_core(40_000, None, **kw)
    assert same_result(a, run_out_of_core(40_000, None, **kw))
    real = cluster.generate_chunk

    def nudged(*args: Any, **kwargs: Any) -> Any:
        X, labels = real(*args, **kwargs)
        if args[1] == 1:
            X = X.copy()
            X[7] += 1e-6  # one agent of one chunk moved by a millionth of a unit
        return X, labels

    monkeypatch.setattr(cluster, "generate_chunk", nudged)
    b = run_out_of_core(40_000, None, **kw)
    assert not same_result(a, b)
    assert not _gate_passes("dask_equals_local", same_result(a, b), "DEVELOPMENT")
    with pytest.raises(ClusterError, match="return_flagged"):
        same_result(a, run_out_of_core(40_000, None, chunk_rows=20_000))


@pytest.mark.breaks("distributed", "dask_agents_per_s")
def test_a_slow_clock_fails_dask_agents_per_s(monkeypatch: pytest.MonkeyPatch) -> None:
    class Clock:
        now = 0.0

        @classmethod
        def perf_counter(cls) -> float:
            cls.now += 100.0
            return cls.now

    monkeypatch.setattr(cluster, "time", Clock)
    res = run_out_of_core(20_000, None, chunk_rows=10_000)
    assert res.seconds == 100.0 and res.agents_per_second == 200.0
    assert not _gate_passes("dask_agents_per_s", res.agents_per_second)


def test_reuse_initial_gives_the_fit_of_the_same_subsample_only() -> None:
    kw: dict[str, Any] = dict(chunk_rows=10_000, seed=5, shift=8.0, compromised_fraction=0.02, df=5.0)
    first = run_out_of_core(20_000, None, return_flagged=True, pvalues="conformal", n_calibration=5_000, **kw)
    fresh = run_out_of_core(20_000, None, return_flagged=True, **kw)  # chi-square p-values, same agents
    reused = run_out_of_core(20_000, None, return_flagged=True, reuse_initial=first, **kw)
    assert same_result(fresh, reused) and fresh.subsample_digest == first.subsample_digest
    assert np.array_equal(reused.initial_covariance, fresh.initial_covariance)
    with pytest.raises(ClusterError, match="another subsample"):
        run_out_of_core(20_000, None, reuse_initial=first, **{**kw, "seed": 6})
    with pytest.raises(ClusterError, match="another subsample"):
        run_out_of_core(20_000, None, reuse_initial=first, initial="ogk", **kw)


def test_client_peak_pauses_only_its_own_tracing() -> None:
    import tracemalloc

    # a run that starts tracing stops it again; the pause around the in-process fit does not
    # lose what was held before it (the 16,000-row chunks, ~1 MB each, are still counted)
    assert not tracemalloc.is_tracing()
    res = run_out_of_core(32_000, None, chunk_rows=16_000)
    assert not tracemalloc.is_tracing()
    assert res.client_peak_bytes >= 16_000 * 8 * 8
    # a caller's tracing is left on, never paused
    tracemalloc.start()
    try:
        again = run_out_of_core(32_000, None, chunk_rows=16_000)
        assert tracemalloc.is_tracing()
    finally:
        tracemalloc.stop()
    assert again.baseline == res.baseline and again.p_cutoff == res.p_cutoff
    assert again.client_peak_bytes >= 16_000 * 8 * 8


@pytest.mark.breaks("distributed", "dask_client_peak_mib")
def test_chunks_held_on_the_client_fail_dask_client_peak_mib() -> None:
    # backend=None generates every chunk in this process: a 1.1e6-row chunk is ~70 MB on the client
    res = run_out_of_core(1_100_000, None, chunk_rows=1_100_000, subsample=200)
    peak_mib = res.client_peak_bytes / 2**20
    assert peak_mib > 64
    assert not _gate_passes("dask_client_peak_mib", peak_mib)


def test_bad_heavy_tail_inputs() -> None:
    with pytest.raises(ClusterError, match="pvalues"):
        run_out_of_core(100, None, pvalues="empirical")
    with pytest.raises(ClusterError, match="df"):
        run_out_of_core(100, None, df=1.5)
    with pytest.raises(ClusterError, match="n_calibration"):
        run_out_of_core(100, None, pvalues="conformal", n_calibration=10)
