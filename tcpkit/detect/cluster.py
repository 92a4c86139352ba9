"""Dask backend: moments and detection over data that does not fit one process.

Every chunk is reduced to :class:`~tcpkit.detect.moments.Moments` on a worker;
the client gathers only those small summaries (or flag counts) and merges them
in chunk order with the same Chan merge as everywhere else, so the result has
the same bits as the single-process loop over the same chunks
(:func:`run_out_of_core` with ``backend=None``).

By default :class:`DaskBackend` starts a ``LocalCluster`` on loopback with worker
processes and closes it on exit; ``scheduler="tcp://host:port"`` (or the
``TCPKIT_DASK_SCHEDULER`` environment variable) connects to an existing cluster
instead, whose workers must have tcpkit installed. Scripts using the local
cluster need the usual ``if __name__ == "__main__":`` guard (worker processes are
spawned); notebooks and pytest do not.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tcpkit.detect.kernel import WhiteningKernel
from tcpkit.detect.moments import Moments, merge_all

SCHEDULER_ENV = "TCPKIT_DASK_SCHEDULER"
_ADDRESS = re.compile(r"^(tcp|tls|ucx|inproc)://[A-Za-z0-9_.\-\[\]:]+(:\d{1,5})?$")
DEFAULT_CHUNK_ROWS = 500_000


class ClusterError(ValueError):
    """A bad scheduler address or backend parameter."""


# --- work done on the workers (module-level so it pickles by reference) -----------------------
def generate_chunk(
    seed: int,
    index: int,
    rows: int,
    n_features: int,
    compromised_fraction: float,
    shift: float,
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Chunk ``index`` of the synthetic population: agent features and compromise labels.

    Honest agents are Gaussian with a covariance fixed by ``seed``; compromised agents
    are moved ``shift`` Mahalanobis units along a direction fixed by ``seed``. The same
    ``(seed, index)`` always gives the same chunk, so a second pass can regenerate it
    instead of storing it.
    """
    population = np.random.default_rng([seed, 0])
    mix = population.normal(size=(n_features, n_features)) / math.sqrt(n_features) + np.eye(n_features)
    direction = population.normal(size=n_features)
    direction /= np.linalg.norm(direction)
    centre = population.normal(scale=10.0, size=n_features) + 100.0
    rng = np.random.default_rng([seed, 1, index])
    X = rng.standard_normal(size=(rows, n_features))
    labels = rng.random(rows) < compromised_fraction
    X[labels] += shift * direction
    X = X @ mix.T
    X += centre
    return X, labels


def _chunk_moments(spec: tuple[int, int, int, int, float, float]) -> Moments:
    X, _ = generate_chunk(*spec)
    return Moments.from_batch(X)


def _chunk_flags(
    spec: tuple[int, int, int, int, float, float],
    location: NDArray[np.float64],
    covariance: NDArray[np.float64],
    threshold: float,
) -> tuple[int, int, int, int]:
    """(rows, flagged, true positives, compromised) of one regenerated chunk."""
    X, labels = generate_chunk(*spec)
    d2 = WhiteningKernel.from_covariance(location, covariance).squared_distances(X)
    flags = d2 > threshold
    return X.shape[0], int(flags.sum()), int((flags & labels).sum()), int(labels.sum())


def _batch_moments(X: NDArray[np.float64]) -> Moments:
    return Moments.from_batch(X)


# --- the backend ------------------------------------------------------------------------------
class DaskBackend:
    """A Dask client, on a LocalCluster that tcpkit starts and stops or on a given scheduler.

    Parameters
    ----------
    scheduler : str, optional
        ``"tcp://host:port"`` of an existing scheduler. Default: ``$TCPKIT_DASK_SCHEDULER``,
        else a new LocalCluster on 127.0.0.1.
    n_workers, threads_per_worker : int
        Size of the LocalCluster (ignored with ``scheduler``).
    memory_limit : str
        Per-worker memory limit of the LocalCluster.

    Use as a context manager; :meth:`close` is idempotent.
    """

    def __init__(
        self,
        scheduler: str | None = None,
        *,
        n_workers: int = 2,
        threads_per_worker: int = 1,
        memory_limit: str = "2GiB",
        timeout: float = 60.0,
    ) -> None:
        address = scheduler if scheduler is not None else os.environ.get(SCHEDULER_ENV) or None
        if address is not None and not _ADDRESS.match(address):
            source = "scheduler" if scheduler is not None else SCHEDULER_ENV
            raise ClusterError(f"{source}={address!r} is not a scheduler address like tcp://host:8786")
        if n_workers < 1 or threads_per_worker < 1:
            raise ClusterError("n_workers and threads_per_worker must be >= 1")
        self.scheduler = address
        self.n_workers = n_workers
        self.threads_per_worker = threads_per_worker
        self.memory_limit = memory_limit
        self.timeout = timeout
        self._cluster: Any = None
        self._client: Any = None

    def start(self) -> DaskBackend:
        from distributed import Client, LocalCluster

        if self._client is not None:
            return self
        if self.scheduler is None:
            self._cluster = LocalCluster(
                n_workers=self.n_workers,
                threads_per_worker=self.threads_per_worker,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                memory_limit=self.memory_limit,
                silence_logs=logging.ERROR,
            )
            try:
                self._client = Client(self._cluster, timeout=self.timeout)
            except BaseException:
                self._cluster.close()
                self._cluster = None
                raise
        else:
            self._client = Client(self.scheduler, timeout=self.timeout)
        return self

    def close(self) -> None:
        """Close the client, and the cluster when tcpkit started it."""
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    def __enter__(self) -> DaskBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def client(self) -> Any:
        if self._client is None:
            raise ClusterError("the Dask backend is not started: use it as a context manager")
        return self._client

    @property
    def owns_cluster(self) -> bool:
        """True when this backend started (and will stop) the cluster."""
        return self._cluster is not None

    @property
    def dashboard_link(self) -> str | None:
        return None if self._client is None else self._client.dashboard_link

    def map(self, func: Callable[..., Any], *iterables: Iterable[Any], **kwargs: Any) -> list[Any]:
        """``[func(*args, **kwargs) ...]`` on the workers, results gathered in input order."""
        futures = self.client.map(func, *iterables, **kwargs)
        return list(self.client.gather(futures))

    def moments(self, X: NDArray[np.floating], chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Moments:
        """Moments of ``X`` computed chunk-wise on the workers, merged in chunk order.

        Bitwise equal to :func:`tcpkit.detect.moments.chunked_moments` with the same ``chunk_rows``.
        """
        data = np.asarray(X, dtype=np.float64)
        if data.ndim != 2 or data.shape[0] == 0:
            raise ClusterError(f"X has shape {data.shape}: expected a non-empty (n_rows, n_features)")
        if chunk_rows < 1:
            raise ClusterError(f"chunk_rows must be >= 1, got {chunk_rows}")
        if not np.all(np.isfinite(data)):
            raise ClusterError("X contains NaN or infinite values")
        chunks = [data[s : s + chunk_rows] for s in range(0, data.shape[0], chunk_rows)]
        scattered = self.client.scatter(chunks)
        parts = self.client.gather(self.client.map(_batch_moments, scattered))
        return merge_all(parts)


# --- out-of-core generation, baseline and flags -----------------------------------------------
@dataclass(frozen=True)
class OutOfCoreResult:
    """Outcome of :func:`run_out_of_core`.

    ``recall`` and ``fpr`` are against the generator's labels; ``client_peak_bytes`` is
    the peak of Python/numpy allocations on the client (tracemalloc) during the run.
    """

    n_agents: int
    n_features: int
    n_chunks: int
    baseline: Moments
    threshold: float
    alpha: float
    n_flagged: int
    true_positives: int
    n_compromised: int
    recall: float
    fpr: float
    seconds: float
    agents_per_second: float
    client_peak_bytes: int
    backend: str


def _chunk_specs(
    n_agents: int, chunk_rows: int, seed: int, n_features: int, fraction: float, shift: float
) -> list[tuple[int, int, int, int, float, float]]:
    specs = []
    for index, start in enumerate(range(0, n_agents, chunk_rows)):
        rows = min(chunk_rows, n_agents - start)
        specs.append((seed, index, rows, n_features, fraction, shift))
    return specs


def run_out_of_core(
    n_agents: int,
    backend: DaskBackend | None = None,
    *,
    n_features: int = 8,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    compromised_fraction: float = 0.01,
    shift: float = 8.0,
    alpha: float = 1e-6,
    seed: int = 0,
) -> OutOfCoreResult:
    """Generate ``n_agents`` agents in chunks on the workers, fit the baseline, flag agents.

    Pass 1 reduces every generated chunk to moments (merged on the client, in chunk
    order); pass 2 regenerates each chunk from its seed and counts the agents whose
    squared Mahalanobis distance exceeds the chi-square ``1 - alpha`` quantile (each
    agent tested at level ``alpha``; assumes Gaussian honest features, which holds for
    this generator). No chunk ever travels to the client. ``backend=None`` runs the same
    chunks in this process, for comparison.
    """
    from scipy.stats import chi2

    if isinstance(n_agents, bool) or not isinstance(n_agents, int) or n_agents < 2:
        raise ClusterError(f"n_agents must be an integer >= 2, got {n_agents!r}")
    if chunk_rows < 2 or n_features < 1:
        raise ClusterError("chunk_rows must be >= 2 and n_features >= 1")
    if not 0 <= compromised_fraction < 1 or not 0 < alpha < 1 or not math.isfinite(shift):
        raise ClusterError("compromised_fraction must be in [0, 1), alpha in (0, 1), shift finite")
    specs = _chunk_specs(n_agents, chunk_rows, seed, n_features, compromised_fraction, shift)
    threshold = float(chi2.isf(alpha, n_features))

    mapper: Callable[..., list[Any]]
    if backend is None:

        def mapper(func: Callable[..., Any], *its: Sequence[Any]) -> list[Any]:
            return [func(*args) for args in zip(*its, strict=True)]

    else:
        mapper = backend.map

    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    started = time.perf_counter()
    try:
        baseline = merge_all(mapper(_chunk_moments, specs))
        location, covariance = baseline.mean, baseline.covariance()
        n = len(specs)
        counts = mapper(_chunk_flags, specs, [location] * n, [covariance] * n, [threshold] * n)
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not tracing:
            tracemalloc.stop()
    rows, flagged, tp, compromised = (int(v) for v in np.sum(np.array(counts, dtype=np.int64), axis=0))
    honest = rows - compromised
    return OutOfCoreResult(
        n_agents=rows,
        n_features=n_features,
        n_chunks=len(specs),
        baseline=baseline,
        threshold=threshold,
        alpha=alpha,
        n_flagged=flagged,
        true_positives=tp,
        n_compromised=compromised,
        recall=tp / compromised if compromised else float("nan"),
        fpr=(flagged - tp) / honest if honest else float("nan"),
        seconds=seconds,
        agents_per_second=rows / seconds,
        client_peak_bytes=int(peak),
        backend="local" if backend is None else ("dask:" + (backend.scheduler or "LocalCluster")),
    )
