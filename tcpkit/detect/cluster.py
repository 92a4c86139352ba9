"""Dask backend: moments and detection over data that does not fit one process.

Every chunk is reduced to :class:`~tcpkit.detect.moments.Moments` on a worker;
the client gathers only those small summaries (moments, a few thousand subsample rows,
the p-values that BH could reject) and merges them
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

import contextlib
import hashlib
import logging
import math
import os
import re
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tcpkit.detect.covariance import estimate_covariance
from tcpkit.detect.kernel import WhiteningKernel
from tcpkit.detect.moments import Moments, merge_all
from tcpkit.detect.pvalues import _bh_among_candidates, chi2_sf

SCHEDULER_ENV = "TCPKIT_DASK_SCHEDULER"
_ADDRESS = re.compile(r"^(tcp|tls|ucx|inproc)://[A-Za-z0-9_.\-\[\]:]+(:\d{1,5})?\Z")
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
    df: float = math.inf,
    stream: int = 1,
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Chunk ``index`` of the synthetic population: agent features and compromise labels.

    Honest agents are ``Z @ mix.T + centre`` with a mixing matrix and centre fixed by
    ``seed``; ``Z`` has independent coordinates, standard normal (``df=inf``) or
    Student t with ``df`` degrees of freedom scaled to unit variance (heavy tails, not
    elliptical after mixing). Compromised agents are moved ``shift`` honest standard
    deviations (Mahalanobis units of the honest covariance ``mix @ mix.T``) along a
    direction fixed by ``seed``. The same ``(seed, stream, index)`` always gives the
    same chunk, so a later pass can regenerate it instead of storing it; ``stream=3``
    is the separate clean calibration population (:data:`CALIBRATION_STREAM`).
    """
    if not (df > 2.0):
        raise ValueError(f"df must be > 2 (finite variance) or inf, got {df!r}")
    population = np.random.default_rng([seed, 0])
    mix = population.normal(size=(n_features, n_features)) / math.sqrt(n_features) + np.eye(n_features)
    direction = population.normal(size=n_features)
    direction /= np.linalg.norm(direction)
    centre = population.normal(scale=10.0, size=n_features) + 100.0
    rng = np.random.default_rng([seed, stream, index])
    if math.isinf(df):
        X = rng.standard_normal(size=(rows, n_features))
    else:
        X = rng.standard_t(df, size=(rows, n_features)) * math.sqrt((df - 2.0) / df)
    labels = rng.random(rows) < compromised_fraction
    X[labels] += shift * direction
    X = X @ mix.T
    X += centre
    return X, labels


CALIBRATION_STREAM = 3
"""The generator stream of the clean calibration agents (the fleet's own agents are stream 1)."""


def _batch_moments(X: NDArray[np.float64]) -> Moments:
    return Moments.from_batch(X)


# --- the backend ------------------------------------------------------------------------------
WORKER_PRELOAD = ("tcpkit.detect.cluster", "sklearn.covariance")
"""Modules every LocalCluster worker imports while it starts: what the tasks of
:func:`run_out_of_core` need (its robust initial fit imports scikit-learn, about a second),
loaded before the first pass instead of inside it."""


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
    preload : sequence of str
        Modules the LocalCluster's workers import as they start (default
        :data:`WORKER_PRELOAD`; ignored with ``scheduler``).
    background : bool
        ``start()`` returns at once and the cluster starts on a thread, so the caller can
        work meanwhile (a notebook's single-process check); the first use of
        :attr:`client` (and :meth:`wait`) waits for it and raises its error.
        ``start_seconds`` is how long the start took.

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
        preload: Sequence[str] = WORKER_PRELOAD,
        background: bool = False,
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
        self.preload = tuple(preload)
        self.background = background
        self.start_seconds: float | None = None
        self._cluster: Any = None
        self._client: Any = None
        self._starting: threading.Thread | None = None
        self._start_error: BaseException | None = None

    def start(self) -> DaskBackend:
        """Connect (or start the LocalCluster): now, or on a thread with ``background``."""
        if self._client is not None or self._starting is not None:
            return self
        if self.background:
            self._starting = threading.Thread(target=self._start_on_thread, name="tcpkit-dask-start", daemon=True)
            self._starting.start()
        else:
            self._connect()
        return self

    def wait(self) -> DaskBackend:
        """Block until a background start is done; raise the error it met."""
        thread = self._starting
        if thread is not None:
            thread.join()
            self._starting = None
            error, self._start_error = self._start_error, None
            if error is not None:
                raise error
        return self

    def _start_on_thread(self) -> None:
        try:
            self._connect()
        except BaseException as exc:  # re-raised by wait() in the caller's thread
            self._start_error = exc

    def _connect(self) -> None:
        from distributed import Client, LocalCluster

        started = time.perf_counter()
        if self.scheduler is None:
            self._cluster = LocalCluster(
                n_workers=self.n_workers,
                threads_per_worker=self.threads_per_worker,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                memory_limit=self.memory_limit,
                silence_logs=logging.ERROR,
                **({"preload": list(self.preload)} if self.preload else {}),
            )
            try:
                self._client = Client(self._cluster, timeout=self.timeout)
            except BaseException:
                self._cluster.close()
                self._cluster = None
                raise
        else:
            self._client = Client(self.scheduler, timeout=self.timeout)
        self.start_seconds = time.perf_counter() - started

    def close(self) -> None:
        """Close the client, and the cluster when tcpkit started it (after a background start ends)."""
        if self._starting is not None:
            self._starting.join()
            self._starting = self._start_error = None
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
        self.wait()
        if self._client is None:
            raise ClusterError("the Dask backend is not started: use it as a context manager")
        return self._client

    @property
    def owns_cluster(self) -> bool:
        """True when this backend started (and will stop) the cluster."""
        self.wait()
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


# --- out-of-core generation, robust baseline and BH flags -------------------------------------
REWEIGHT_QUANTILE = 0.975
INITIAL_METHODS = ("mcd", "ogk")
PVALUE_METHODS = ("chi2", "conformal")
Spec = tuple[int, int, int, int, float, float, float]


def truncation_consistency(n_features: int, quantile: float = REWEIGHT_QUANTILE) -> float:
    """Factor that makes the covariance of Gaussian rows with ``d2 <= chi2_d(quantile)`` consistent.

    For ``X ~ N(mu, S)`` and ``q = chi2_d^{-1}(quantile)``, the rows with ``d2 <= q`` have
    covariance ``S * F_{d+2}(q) / quantile`` (``F_k`` the chi-square cdf with ``k`` degrees
    of freedom; Croux and Haesbroeck 1999), so the truncated covariance is multiplied by
    ``quantile / F_{d+2}(q)``, as in MCD's reweighting step.
    """
    from scipy.stats import chi2

    q = chi2.ppf(quantile, n_features)
    return float(quantile / chi2.cdf(q, n_features + 2))


def _sample_rows(seed: int, index: int, rows: int, k: int) -> NDArray[np.intp]:
    """The ``k`` row positions of chunk ``index`` that enter the initial subsample (sorted)."""
    rng = np.random.default_rng([seed, 2, index])
    return np.sort(rng.choice(rows, size=min(k, rows), replace=False))


def _chunk_sample(spec: Spec, k: int) -> NDArray[np.float64]:
    X, _ = generate_chunk(*spec)
    return X[_sample_rows(spec[0], spec[1], spec[2], k)]


def _chunk_trimmed(
    spec: Spec,
    location: NDArray[np.float64],
    covariance: NDArray[np.float64],
    cutoff: float,
) -> tuple[Moments, Moments]:
    """(moments of all rows, moments of the rows with squared distance <= cutoff) of one chunk."""
    X, _ = generate_chunk(*spec)
    d2 = WhiteningKernel.from_covariance(location, covariance).squared_distances(X)
    return Moments.from_batch(X), Moments.from_batch(X[d2 <= cutoff])


def _chunk_scores(
    spec: Spec, location: NDArray[np.float64], covariance: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Squared distances of one clean calibration chunk under the robust estimate."""
    X, _ = generate_chunk(*spec, stream=CALIBRATION_STREAM)
    return np.asarray(WhiteningKernel.from_covariance(location, covariance).squared_distances(X), np.float64)


def conformal_pvalues(d2: NDArray[np.floating[Any]], calibration: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """``(1 + #{calibration >= d2}) / (n + 1)`` for sorted calibration scores (split conformal)."""
    cal = np.asarray(calibration, dtype=np.float64)
    above = cal.size - np.searchsorted(cal, np.asarray(d2, dtype=np.float64), side="left")
    return np.asarray((1.0 + above) / (cal.size + 1.0), dtype=np.float64)


def _chunk_candidates(
    spec: Spec,
    offset: int,
    location: NDArray[np.float64],
    covariance: NDArray[np.float64],
    alpha: float,
    calibration: NDArray[np.float64] | None = None,
) -> tuple[int, int, NDArray[np.float64], NDArray[np.int64], NDArray[np.bool_]]:
    """(rows, compromised, p-values <= alpha, their global indices, their labels) of one chunk.

    Only agents with ``p <= alpha`` can be rejected by BH at level ``alpha``; their p-values
    are computed exactly, everything else stays on the worker. Without ``calibration``
    the p-values are chi-square (the cheap ``d2`` pre-filter sits 1e-9 below the
    quantile, far outside the rounding of the survival function); with it, conformal
    (:func:`conformal_pvalues`).
    """
    from scipy.stats import chi2

    X, labels = generate_chunk(*spec)
    d2 = WhiteningKernel.from_covariance(location, covariance).squared_distances(X)
    if calibration is None:
        index = np.flatnonzero(d2 >= chi2.isf(alpha, X.shape[1]) * (1.0 - 1e-9))
        p = chi2_sf(d2[index], X.shape[1])
    else:
        p_all = conformal_pvalues(d2, calibration)
        index = np.flatnonzero(p_all <= alpha)
        p = p_all[index]
    keep = p <= alpha
    return (
        X.shape[0],
        int(labels.sum()),
        p[keep],
        (index[keep] + offset).astype(np.int64),
        labels[index[keep]],
    )


def bh_cutoff(candidates: NDArray[np.float64], n_tests: int, alpha: float) -> float:
    """Benjamini-Hochberg p-value cut-off over ``n_tests`` tests from the p-values <= alpha.

    BH over the candidates with all ``n_tests`` tests counted (the step of
    :func:`tcpkit.detect.pvalues.bh_reject`: the i-th smallest compared with
    ``(i / n_tests) * alpha``, statsmodels' floating-point operations) gives the same
    rejections as BH over all ``n_tests`` p-values, because every p-value above
    ``alpha`` fails. Returns
    the largest rejected p-value, or ``-1.0`` when nothing is rejected; BH rejects
    exactly the p-values ``<= cutoff``.
    """
    p = np.asarray(candidates, dtype=np.float64)
    rejected = _bh_among_candidates(p, n_tests, np.float64(alpha))
    return float(p[rejected].max()) if rejected.size else -1.0


@dataclass(frozen=True)
class OutOfCoreResult:
    """Outcome of :func:`run_out_of_core`.

    ``baseline`` holds the moments of the rows kept by the last reweighting step and
    ``location`` / ``covariance`` the robust estimate used for the flags (``covariance``
    is ``baseline.covariance()`` times :func:`truncation_consistency`). ``pooled`` is the
    plain pooled moments of every row (non-robust, for comparison). ``alpha`` is the BH
    false discovery rate level over all agents and ``p_cutoff`` the BH cut-off (agents
    with ``p <= p_cutoff`` are flagged; ``-1`` when none). ``recall``, ``fpr`` and
    ``fdp`` (false discovery proportion) are against the generator's labels;
    ``client_peak_bytes`` is the peak of Python/numpy allocations on the client
    (tracemalloc) during the run (with ``backend=None``, less the in-process robust
    fit, which a cluster runs on a worker; see :class:`_ClientPeak`). ``flagged`` holds the sorted global indices of the
    flagged agents when asked for. ``pvalues`` says how the p-values were computed
    (``"chi2"`` or ``"conformal"`` on ``n_calibration`` clean calibration agents),
    ``df`` and ``shift`` describe the generated population. ``subsample_digest``
    identifies the subsample and the settings of the initial fit (see ``reuse_initial``
    of :func:`run_out_of_core`).
    """

    n_agents: int
    n_features: int
    n_chunks: int
    baseline: Moments
    location: NDArray[np.float64]
    covariance: NDArray[np.float64]
    initial_location: NDArray[np.float64]
    initial_covariance: NDArray[np.float64]
    pooled: Moments
    initial_method: str
    n_subsample: int
    reweight_steps: int
    alpha: float
    p_cutoff: float
    n_candidates: int
    n_flagged: int
    true_positives: int
    n_compromised: int
    recall: float
    fpr: float
    fdp: float
    seconds: float
    agents_per_second: float
    client_peak_bytes: int
    backend: str
    flagged: NDArray[np.int64] | None = None
    pvalues: str = "chi2"
    n_calibration: int = 0
    df: float = math.inf
    shift: float = math.nan
    subsample_digest: str = ""


def _digest(sample: NDArray[np.float64], method: str, seed: int) -> str:
    """sha256 of the subsample's bytes and shape and the fit's settings: what the initial estimate depends on."""
    h = hashlib.sha256(f"{sample.shape}|{sample.dtype.str}|{method}|{seed}|".encode())
    h.update(np.ascontiguousarray(sample).tobytes())
    return h.hexdigest()


class _ClientPeak:
    """Peak bytes of the client's traced allocations (tracemalloc) over one run, with pauses.

    :meth:`paused` stops tracing around work that is not the client's own: with
    ``backend=None`` the robust initial fit runs in this process, where on a cluster it
    runs on a worker. FAST-MCD makes many small numpy allocations and tracemalloc
    makes it about four times slower (seconds of a notebook's check run), while its
    scratch memory on a few thousand rows is far below a chunk's. Memory held when a
    pause starts is counted as held until the end (frees of blocks allocated before a
    pause are not seen after it), so the peak is an upper bound, never an underestimate.
    When tracing was already on (a caller measuring something larger), it is left on
    and never paused.
    """

    def __init__(self) -> None:
        self._own = not tracemalloc.is_tracing()
        if self._own:
            tracemalloc.start()
        tracemalloc.reset_peak()
        self._held = 0
        self._peak = 0

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Run the body untraced (when this run started the tracing)."""
        if not self._own:
            yield
            return
        current, peak = tracemalloc.get_traced_memory()
        self._peak = max(self._peak, self._held + peak)
        self._held += current
        tracemalloc.stop()
        try:
            yield
        finally:
            tracemalloc.start()

    def peak(self) -> int:
        """The peak so far, in bytes."""
        _, peak = tracemalloc.get_traced_memory()
        return max(self._peak, self._held + peak)

    def stop(self) -> None:
        """Stop tracing if this run started it."""
        if self._own:
            tracemalloc.stop()


def _chunk_specs(
    n_agents: int, chunk_rows: int, seed: int, n_features: int, fraction: float, shift: float, df: float
) -> list[Spec]:
    specs = []
    for index, start in enumerate(range(0, n_agents, chunk_rows)):
        rows = min(chunk_rows, n_agents - start)
        specs.append((seed, index, rows, n_features, fraction, shift, df))
    return specs


def initial_estimate(
    sample: NDArray[np.float64], method: str = "mcd", seed: int = 0
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Robust (location, covariance) of the gathered subsample: MCD or OGK, both reweighted."""
    estimate = estimate_covariance(sample, method, random_state=seed, max_fit_rows=max(2, sample.shape[0]))
    return estimate.location, estimate.covariance


def run_out_of_core(
    n_agents: int,
    backend: DaskBackend | None = None,
    *,
    n_features: int = 8,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    compromised_fraction: float = 0.01,
    shift: float = 8.0,
    alpha: float = 0.01,
    seed: int = 0,
    subsample: int = 2_000,
    initial: str = "mcd",
    reweight_steps: int = 1,
    return_flagged: bool = False,
    df: float = math.inf,
    pvalues: str = "chi2",
    n_calibration: int = 200_000,
    reuse_initial: OutOfCoreResult | None = None,
) -> OutOfCoreResult:
    """Generate ``n_agents`` agents in chunks on the workers, fit a robust baseline, flag with BH.

    Every pass regenerates the chunks on the workers from ``(seed, chunk index)``; only
    small summaries travel to the client:

    0. a seeded subsample of about ``subsample`` rows drawn from every chunk; the client
       fits a robust initial estimate on it (``initial="mcd"``: reweighted FAST-MCD;
       ``"ogk"``: statsmodels' OGK), fitted on a worker;
    1. ``reweight_steps`` passes (1 or 2) that merge the moments of only the rows whose
       squared distance under the current estimate is at most the chi-square 0.975
       quantile, then correct the truncated covariance for consistency
       (:func:`truncation_consistency`): MCD's one-step reweighting, done out of core.
       The first of these passes also returns the plain pooled moments;
    2. with ``pvalues="conformal"``, a pass over ``n_calibration`` clean calibration
       agents (a separate stream of the generator, :data:`CALIBRATION_STREAM`) returns
       their squared distances under the robust estimate; the client sorts them;
    3. a last pass computes p-values under the robust estimate (chi-square, or
       conformal against the calibration scores) and returns those ``<= alpha`` (the
       only ones Benjamini-Hochberg can reject); the client finds the BH cut-off over
       all ``n_agents`` tests (:func:`bh_cutoff`) and flags ``p <= cutoff``. This
       equals ``multipletests(p, alpha, "fdr_bh")`` on all agents.

    Chi-square p-values assume Gaussian honest features (``df=inf``); heavy tails
    (``df=5``) make them anti-conservative. Conformal p-values assume only that the
    calibration agents are exchangeable with the honest agents (a vetted clean
    sample); they cannot go below ``1 / (n_calibration + 1)``, so ``n_calibration``
    must be large against ``n_agents / (alpha * n_compromised)``. BH controls the FDR
    at ``alpha`` for independent agents (for conformal p-values sharing one
    calibration set, PRDS holds and BH still controls it: Bates et al. 2023).
    ``backend=None`` runs the same chunks in this process, for comparison (same bits).

    ``reuse_initial``, an earlier result on the same subsample (the same seed, agents,
    chunks, ``subsample`` and ``initial``, e.g. the same data with other p-values), gives
    the initial estimate instead of fitting it again: pass 0 still gathers the subsample
    and must match the earlier one's digest (:class:`ClusterError` otherwise), so the
    estimate is the one this run would fit (FAST-MCD is deterministic for a seed), and
    the robust fit, most of a small run's time, is not paid twice (nor counted in ``seconds``).
    """
    from scipy.stats import chi2

    if isinstance(n_agents, bool) or not isinstance(n_agents, int) or n_agents < 2:
        raise ClusterError(f"n_agents must be an integer >= 2, got {n_agents!r}")
    if chunk_rows < 2 or n_features < 1:
        raise ClusterError("chunk_rows must be >= 2 and n_features >= 1")
    if not 0 <= compromised_fraction < 1 or not 0 < alpha < 1 or not math.isfinite(shift):
        raise ClusterError("compromised_fraction must be in [0, 1), alpha in (0, 1), shift finite")
    if initial not in INITIAL_METHODS:
        raise ClusterError(f"initial={initial!r} is unknown: choose one of {', '.join(INITIAL_METHODS)}")
    if reweight_steps not in (1, 2):
        raise ClusterError(f"reweight_steps must be 1 or 2, got {reweight_steps!r}")
    if isinstance(subsample, bool) or not isinstance(subsample, int) or subsample < 10 * n_features:
        raise ClusterError(f"subsample must be an integer >= 10 * n_features, got {subsample!r}")
    if pvalues not in PVALUE_METHODS:
        raise ClusterError(f"pvalues={pvalues!r} is unknown: choose one of {', '.join(PVALUE_METHODS)}")
    if not (df > 2.0):
        raise ClusterError(f"df must be > 2 (finite variance) or inf, got {df!r}")
    if pvalues == "conformal" and (
        isinstance(n_calibration, bool) or not isinstance(n_calibration, int) or n_calibration < 100
    ):
        raise ClusterError(f"n_calibration must be an integer >= 100, got {n_calibration!r}")
    specs = _chunk_specs(n_agents, chunk_rows, seed, n_features, compromised_fraction, shift, df)
    n = len(specs)
    cutoff = float(chi2.ppf(REWEIGHT_QUANTILE, n_features))
    factor = truncation_consistency(n_features)

    mapper: Callable[..., list[Any]]
    if backend is None:

        def mapper(func: Callable[..., Any], *its: Sequence[Any]) -> list[Any]:
            return [func(*args) for args in zip(*its, strict=True)]

    else:
        mapper = backend.map

    if backend is not None:
        backend.wait()  # a cluster still starting in the background is not this run's time or memory
    client = _ClientPeak()
    started = time.perf_counter()
    try:
        per_chunk = -(-subsample // n)
        sample = np.concatenate(mapper(_chunk_sample, specs, [per_chunk] * n))
        # the robust fit runs on a worker too (MCD's scratch memory stays off the client);
        # in this process it is the workers' work, not the client's, so it is not traced
        digest = _digest(sample, initial, seed)
        if reuse_initial is not None:
            if reuse_initial.subsample_digest != digest:
                raise ClusterError("reuse_initial was fitted on another subsample or with other settings")
            location0, covariance0 = reuse_initial.initial_location, reuse_initial.initial_covariance
        else:
            with client.paused() if backend is None else contextlib.nullcontext():
                location0, covariance0 = mapper(initial_estimate, [sample], [initial], [seed])[0]
        location, covariance = location0, covariance0
        pooled: Moments | None = None
        kept = Moments.empty(n_features)
        for _ in range(reweight_steps):
            parts = mapper(_chunk_trimmed, specs, [location] * n, [covariance] * n, [cutoff] * n)
            if pooled is None:
                pooled = merge_all([whole for whole, _ in parts])
            kept = merge_all([trimmed for _, trimmed in parts])
            if kept.n <= n_features:
                raise ClusterError(
                    f"only {kept.n} rows fall inside the robust estimate's 0.975 ellipsoid: "
                    "too few to estimate a covariance"
                )
            location, covariance = kept.mean, kept.covariance() * factor
        calibration: NDArray[np.float64] | None = None
        if pvalues == "conformal":
            cal_specs = _chunk_specs(n_calibration, chunk_rows, seed, n_features, 0.0, 0.0, df)
            m = len(cal_specs)
            calibration = np.sort(np.concatenate(mapper(_chunk_scores, cal_specs, [location] * m, [covariance] * m)))
        offsets = [index * chunk_rows for index in range(n)]
        found = mapper(
            _chunk_candidates, specs, offsets, [location] * n, [covariance] * n, [alpha] * n, [calibration] * n
        )
        p_all = np.concatenate([f[2] for f in found])
        p_cutoff = bh_cutoff(p_all, n_agents, alpha)
        flags = p_all <= p_cutoff
        labels_all = np.concatenate([f[4] for f in found])
        flagged = np.concatenate([f[3] for f in found])[flags] if return_flagged else None
        seconds = time.perf_counter() - started
        peak = client.peak()
    finally:
        client.stop()
    assert pooled is not None
    rows = int(sum(f[0] for f in found))
    compromised = int(sum(f[1] for f in found))
    n_flagged = int(flags.sum())
    tp = int((flags & labels_all).sum())
    honest = rows - compromised
    return OutOfCoreResult(
        n_agents=rows,
        n_features=n_features,
        n_chunks=n,
        baseline=kept,
        location=np.asarray(location, dtype=np.float64),
        covariance=np.asarray(covariance, dtype=np.float64),
        initial_location=np.asarray(location0, dtype=np.float64),
        initial_covariance=np.asarray(covariance0, dtype=np.float64),
        pooled=pooled,
        initial_method=initial,
        n_subsample=int(sample.shape[0]),
        reweight_steps=reweight_steps,
        alpha=alpha,
        p_cutoff=p_cutoff,
        n_candidates=int(p_all.size),
        n_flagged=n_flagged,
        true_positives=tp,
        n_compromised=compromised,
        recall=tp / compromised if compromised else float("nan"),
        fpr=(n_flagged - tp) / honest if honest else float("nan"),
        fdp=(n_flagged - tp) / n_flagged if n_flagged else 0.0,
        seconds=seconds,
        agents_per_second=rows / seconds,
        client_peak_bytes=int(peak),
        backend="local" if backend is None else ("dask:" + (backend.scheduler or "LocalCluster")),
        flagged=flagged,
        pvalues=pvalues,
        n_calibration=n_calibration if pvalues == "conformal" else 0,
        df=float(df),
        shift=float(shift),
        subsample_digest=digest,
    )


def same_result(a: OutOfCoreResult, b: OutOfCoreResult) -> bool:
    """Bitwise the same baseline, robust estimate, BH cut-off and flagged agents (flags required)."""
    if a.flagged is None or b.flagged is None:
        raise ClusterError("same_result needs both runs with return_flagged=True")
    return bool(
        a.baseline == b.baseline
        and a.pooled == b.pooled
        and np.array_equal(a.location, b.location)
        and np.array_equal(a.covariance, b.covariance)
        and a.p_cutoff == b.p_cutoff
        and np.array_equal(a.flagged, b.flagged)
    )


def oracle_recall(
    shifts: Sequence[float],
    *,
    df: float = math.inf,
    n_features: int = 8,
    compromised_fraction: float = 0.01,
    alpha: float = 0.01,
    seed: int = 0,
    n_honest: int = 1_000_000,
    n_compromised: int = 100_000,
) -> list[float]:
    """Best recall any threshold on the true Mahalanobis distance can reach at FDR ``alpha``.

    The oracle knows the honest distribution of :func:`generate_chunk` exactly (its
    whitened noise and the compromised direction): for each shift it draws ``n_honest``
    honest and ``n_compromised`` compromised whitened rows, and returns the largest
    true-positive rate over thresholds ``t`` whose population false discovery rate
    ``pi0 * fpr(t) / (pi0 * fpr(t) + pi1 * tpr(t))`` is at most ``alpha``. A fitted
    pipeline cannot beat it by scoring distances; it says where recall is contested.
    """
    if not 0 < compromised_fraction < 1 or not 0 < alpha < 1 or not (df > 2.0):
        raise ClusterError("need 0 < compromised_fraction < 1, 0 < alpha < 1 and df > 2")
    population = np.random.default_rng([seed, 0])
    population.normal(size=(n_features, n_features))
    direction = population.normal(size=n_features)
    direction /= np.linalg.norm(direction)
    rng = np.random.default_rng([seed, 4])

    def noise(rows: int) -> NDArray[np.float64]:
        if math.isinf(df):
            return rng.standard_normal(size=(rows, n_features))
        return rng.standard_t(df, size=(rows, n_features)) * math.sqrt((df - 2.0) / df)

    honest = np.sort(np.einsum("ij,ij->i", h := noise(n_honest), h))
    pi1 = compromised_fraction
    out = []
    for shift in shifts:
        c = noise(n_compromised) + float(shift) * direction
        comp = np.sort(np.einsum("ij,ij->i", c, c))
        grid = np.unique(np.concatenate([honest[-20_000:], comp]))
        fpr = 1.0 - np.searchsorted(honest, grid, side="left") / honest.size
        tpr = 1.0 - np.searchsorted(comp, grid, side="left") / comp.size
        fdr = (1 - pi1) * fpr / np.maximum((1 - pi1) * fpr + pi1 * tpr, np.finfo(float).tiny)
        ok = (fdr <= alpha) & (tpr > 0)
        out.append(float(tpr[ok].max()) if ok.any() else 0.0)
    return out
