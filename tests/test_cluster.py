"""Dask backend on a real LocalCluster with two worker processes (one cluster per module)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tcpkit.detect.cluster import (
    SCHEDULER_ENV,
    ClusterError,
    DaskBackend,
    generate_chunk,
    run_out_of_core,
)
from tcpkit.detect.moments import Moments, chunked_moments


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


def test_moments_equal_single_process(backend: DaskBackend) -> None:
    X = np.random.default_rng(1).normal(size=(20_000, 8)) * 3.0 + 50.0
    dist = backend.moments(X, chunk_rows=1_500)
    assert dist == chunked_moments(X, chunk_rows=1_500)  # same chunks, same bits
    whole = Moments.from_batch(X)
    assert dist.n == whole.n
    assert _rel(dist.mean, whole.mean) <= 1e-12
    assert _rel(dist.covariance(), whole.covariance()) <= 1e-12


def test_out_of_core_matches_local_run_and_detects(backend: DaskBackend) -> None:
    kwargs = dict(n_features=8, chunk_rows=20_000, compromised_fraction=0.002, shift=12.0, seed=4)
    dist = run_out_of_core(100_000, backend, **kwargs)  # type: ignore[arg-type]
    local = run_out_of_core(100_000, None, **kwargs)  # type: ignore[arg-type]
    assert dist.baseline == local.baseline
    assert (dist.n_flagged, dist.true_positives, dist.n_compromised) == (
        local.n_flagged,
        local.true_positives,
        local.n_compromised,
    )
    assert dist.n_agents == 100_000 and dist.n_chunks == 5
    assert dist.recall > 0.9 and dist.fpr < 1e-4
    # the generated chunks never reach the client: its peak is far below one chunk (1.28 MB)
    assert dist.client_peak_bytes < 20_000 * 8 * 8
    X, labels = generate_chunk(4, 0, 20_000, 8, 0.002, 12.0)
    assert Moments.from_batch(X) == Moments.from_batch(generate_chunk(4, 0, 20_000, 8, 0.002, 12.0)[0])
    assert 0 < labels.sum() < 200


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
