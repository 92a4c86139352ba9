"""The one scoring kernel: squared Mahalanobis distances by Cholesky whitening.

Every Mahalanobis score in tcpkit goes through :class:`WhiteningKernel`, so there
is one place to make scoring fast and one place to make it correct. With
``Sigma = L L^T`` and ``W = L^-1``, ``d^2(x) = ||W x - W mu||^2``.

How it is fast (each choice measured with ``tcpkit bench``; see
``notebooks/performance.ipynb``):

* rows are processed in chunks sized so that one ``d x chunk`` buffer stays in
  the L2 cache (:func:`default_chunk_rows`); each chunk is one GEMM ``W @ X_c.T``
  written into a preallocated buffer, then the offset is subtracted and the
  squares are summed in place (no temporaries per chunk);
* the rows are split between worker threads (numpy and OpenBLAS release the
  GIL), each with its own buffer, while threadpoolctl pins BLAS to one thread
  so that the workers do not oversubscribe the cores: BLAS threading only
  parallelises the GEMM, the workers parallelise every step (and a BLAS helper
  thread that waits for a busy core stalls the whole call);
* float32 input is scored in float32 and float64 in float64, never upcast.

Memory: besides the result (n values) each worker holds one ``d x chunk``
buffer; nothing of size ``n x d`` is ever allocated.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray
from scipy import linalg

DEFAULT_CHUNK_ROWS = 16_384
"""Rows per chunk for d = 8 float32; :func:`default_chunk_rows` scales it with d and dtype."""

CHUNK_BUFFER_BYTES = 512 * 1024
"""Target size of one worker's ``d x chunk`` buffer: half of a typical 1 MiB L2 cache."""

MIN_ROWS_PER_THREAD = 65_536
"""Below this many rows per extra worker, thread start-up costs more than it saves."""

PIN_BLAS_MIN_ROWS = 4_096
"""From this many rows on, BLAS is pinned to one thread while scoring.

Measured under load on the shared 2-core machine: a multi-threaded OpenBLAS GEMM
whose helper thread is not scheduled spin-waits, and a 10k-row call took 16 ms
instead of 0.1 ms. One BLAS thread per worker never waits for another thread.
"""

_POOL_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_PIN_LOCK = threading.Lock()
_PIN_DEPTH = 0
_PIN_CONTEXT: Any = None
_CONTROLLER: Any = None


def available_cores() -> int:
    """Cores this process may run on (CPU affinity, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def default_chunk_rows(n_features: int, dtype: np.dtype[Any] | type) -> int:
    """Rows per chunk so that one ``n_features x rows`` buffer is about 512 KiB.

    Measured on the 2-core EPYC: 16k rows for d = 8 float32 and 2k-4k rows for
    d = 32 float64 beat both smaller chunks (Python overhead per chunk) and larger
    ones (the buffer falls out of L2 and every in-place pass goes to DRAM).
    """
    itemsize = np.dtype(dtype).itemsize
    rows = CHUNK_BUFFER_BYTES // max(1, n_features * itemsize)
    return int(min(max(rows, 1_024), 131_072))


def default_threads(n_rows: int) -> int:
    """Worker threads for ``n_rows``: one per available core, one per 64k rows at most."""
    return int(max(1, min(available_cores(), n_rows // MIN_ROWS_PER_THREAD)))


def _pool(threads: int) -> ThreadPoolExecutor:
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or threads > _POOL_SIZE:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tcpkit-kernel")
            _POOL_SIZE = threads
        return _POOL


def _forget_pool_after_fork() -> None:
    """A forked child inherits the pool object but not its threads: start afresh."""
    global _POOL, _POOL_SIZE, _POOL_LOCK, _PIN_LOCK, _PIN_DEPTH, _PIN_CONTEXT
    _POOL, _POOL_SIZE, _POOL_LOCK = None, 0, threading.Lock()
    _PIN_LOCK, _PIN_DEPTH, _PIN_CONTEXT = threading.Lock(), 0, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _blas_controller() -> Any:
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER




@contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """BLAS on one thread while any scoring call runs (reference-counted across threads).

    threadpoolctl's limit is process-wide: without the count, two concurrent calls
    could restore each other's limit in the wrong order and leave BLAS pinned.
    """
    global _PIN_DEPTH, _PIN_CONTEXT
    with _PIN_LOCK:
        if _PIN_DEPTH == 0:
            _PIN_CONTEXT = _blas_controller().limit(limits=1, user_api="blas")
        _PIN_DEPTH += 1
    try:
        yield
    finally:
        with _PIN_LOCK:
            _PIN_DEPTH -= 1
            if _PIN_DEPTH == 0 and _PIN_CONTEXT is not None:
                _PIN_CONTEXT.restore_original_limits()
                _PIN_CONTEXT = None


def blas_info() -> list[dict[str, Any]]:
    """The BLAS libraries numpy and scipy loaded, as threadpoolctl reports them."""
    return [dict(info) for info in _blas_controller().info() if info.get("user_api") == "blas"]


def _score_rows(
    data: NDArray[np.floating],
    w: NDArray[np.floating],
    b: NDArray[np.floating],
    result: NDArray[np.floating],
    start: int,
    stop: int,
    rows: int,
) -> bool:
    """Score rows ``start:stop`` of ``data`` into ``result`` with one private buffer.

    Returns False when a distance is NaN or infinite (checked per chunk while it is
    still in cache; ``max`` propagates NaN).
    """
    finite = True
    if stop <= start:
        return finite
    buf = np.empty((w.shape[0], min(rows, stop - start)), dtype=w.dtype)
    # Non-finite input is reported once, as a ValueError, not as RuntimeWarnings.
    with np.errstate(invalid="ignore", over="ignore"):
        for lo in range(start, stop, rows):
            hi = min(lo + rows, stop)
            z = buf[:, : hi - lo]
            np.matmul(w, data[lo:hi].T, out=z)
            z -= b
            chunk = result[lo:hi]
            np.einsum("ij,ij->j", z, z, out=chunk)
            finite = finite and bool(np.isfinite(chunk.max()))
    return finite


@dataclass(frozen=True)
class WhiteningKernel:
    """Precomputed whitening of a fitted location and covariance.

    Attributes
    ----------
    location : (d,) float64 array, the baseline's centre.
    whitening : (d, d) float64 lower-triangular ``W = L^-1`` of the Cholesky factor.
    offset : (d,) float64 ``W @ location``.
    """

    location: NDArray[np.float64]
    whitening: NDArray[np.float64]
    offset: NDArray[np.float64]

    @classmethod
    def from_covariance(
        cls, location: NDArray[np.floating], covariance: NDArray[np.floating]
    ) -> WhiteningKernel:
        """Build the kernel; refuses a covariance that is not symmetric positive definite."""
        loc = np.asarray(location, dtype=np.float64)
        cov = np.asarray(covariance, dtype=np.float64)
        if loc.ndim != 1 or loc.size == 0 or cov.shape != (loc.size, loc.size):
            raise ValueError(
                f"location has shape {loc.shape} and covariance {cov.shape}: "
                "expected (d,) and (d, d) with d >= 1"
            )
        if not (np.all(np.isfinite(loc)) and np.all(np.isfinite(cov))):
            raise ValueError("location or covariance contains NaN or infinite values")
        if np.max(np.abs(cov - cov.T)) > 1e-10 * np.max(np.abs(cov)):
            raise ValueError("covariance is not symmetric")
        try:
            chol = linalg.cholesky(cov, lower=True)
        except linalg.LinAlgError:
            raise ValueError(
                "covariance is not positive definite (singular or indefinite): "
                "use a shrinkage estimate"
            ) from None
        whitening = linalg.solve_triangular(chol, np.eye(loc.size), lower=True)
        return cls(location=loc, whitening=whitening, offset=whitening @ loc)

    @property
    def n_features(self) -> int:
        return int(self.location.size)

    def squared_distances(
        self,
        X: NDArray[np.floating],
        *,
        chunk_rows: int | None = None,
        out: NDArray[np.floating] | None = None,
        threads: int | None = None,
    ) -> NDArray[np.floating]:
        """Squared Mahalanobis distance of every row of ``X``, in ``X``'s float dtype.

        Parameters
        ----------
        X : (n, d) array. float32 is scored in float32 (no silent upcast); any other
            dtype in float64.
        chunk_rows : rows per chunk; default :func:`default_chunk_rows` for this d, dtype.
        out : optional (n,) array of the scoring dtype to write into (e.g. a slice of
            a larger result when the rows arrive as a stream).
        threads : worker threads; default :func:`default_threads` (one per core for
            large n, one for small n). BLAS is pinned to one thread while several
            workers run.

        Returns
        -------
        (n,) array of squared distances (``out`` when given).

        Raises
        ------
        ValueError
            If ``X`` is not (n, d), ``out`` or ``chunk_rows``/``threads`` are invalid, or
            a distance is not finite (``X`` holds NaN/inf or overflows the dtype); in
            that last case ``out`` has been written.
        """
        data = np.asarray(X)
        if data.ndim != 2 or data.shape[1] != self.n_features:
            raise ValueError(
                f"X has shape {data.shape}: expected (n_agents, {self.n_features})"
            )
        dtype = np.float32 if data.dtype == np.float32 else np.float64
        data = data.astype(dtype, copy=False)
        n = data.shape[0]
        rows = default_chunk_rows(self.n_features, dtype) if chunk_rows is None else chunk_rows
        if isinstance(rows, bool) or not isinstance(rows, int | np.integer) or rows < 1:
            raise ValueError(f"chunk_rows={chunk_rows!r}: expected a positive integer")
        workers = default_threads(n) if threads is None else threads
        if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
            raise ValueError(f"threads={threads!r}: expected a positive integer")
        result = np.empty(n, dtype=dtype) if out is None else out
        if (
            not isinstance(result, np.ndarray)
            or result.shape != (n,)
            or result.dtype != dtype
        ):
            raise ValueError(f"out must be an array of shape ({n},) and dtype {np.dtype(dtype).name}")
        if n == 0:
            return result
        w: NDArray[np.floating] = self.whitening.astype(dtype)
        b = cast("NDArray[np.floating]", self.offset.astype(dtype)).reshape(-1, 1)
        rows = int(min(rows, n))
        workers = int(min(workers, -(-n // rows)))
        if n < PIN_BLAS_MIN_ROWS:
            # OpenBLAS runs GEMMs this small on one thread anyway; skip the pinning cost.
            finite = _score_rows(data, w, b, result, 0, n, rows)
        elif workers == 1:
            with _single_threaded_blas():
                finite = _score_rows(data, w, b, result, 0, n, rows)
        else:
            # Contiguous spans per worker, cut on chunk boundaries.
            chunks = -(-n // rows)
            bounds = [min(n, (chunks * i // workers) * rows) for i in range(workers + 1)]
            with _single_threaded_blas():
                futures = [
                    _pool(workers).submit(_score_rows, data, w, b, result, lo, hi, rows)
                    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
                ]
                finite = all([future.result() for future in futures])
        if not finite:
            raise ValueError(
                "X contains NaN or infinite values (or its distances overflow "
                f"{np.dtype(dtype).name})"
            )
        return result
