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
* the chunks are scored by worker threads (numpy and OpenBLAS release the GIL;
  the calling thread is one of them), each with its own buffer, while
  threadpoolctl pins BLAS to one thread so that the workers do not oversubscribe
  the cores: BLAS threading only parallelises the GEMM, the workers parallelise
  every step (and a BLAS helper thread that waits for a busy core stalls the
  whole call). Workers claim chunks one at a time rather than owning a fixed
  span, so on a shared machine a worker whose core is busy scores fewer chunks
  instead of holding up the call;
* float32 input is scored in float32 and float64 in float64, never upcast; with
  ``KernelConfig(dtype="float32")`` float64 rows are narrowed chunk by chunk;
* input is validated inside the chunk loop, once: a chunk whose distances are not
  finite (NaN/inf input, or float32 overflow) stops the call, and only then is the
  input searched for the rows to name in the error.

Memory: besides the result (n values) each worker holds one ``d x chunk``
buffer (and one ``chunk x d`` buffer when it narrows float64 rows); nothing of size
``n x d`` is ever allocated.

The settings (precision, rows per chunk, threads) come from one
:class:`~tcpkit.detect.kernel_config.KernelConfig`, which owns their defaults.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import linalg

from tcpkit.detect.kernel_config import (
    KernelConfig,
    available_cores,
    default_chunk_rows,
    default_threads,
)

__all__ = [
    "KernelConfig",
    "NonFiniteRowsError",
    "WhiteningKernel",
    "available_cores",
    "blas_info",
    "default_chunk_rows",
    "default_threads",
    "float32_error_vs_oracle",
]

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


class _Chunks:
    """Chunk indices handed out one at a time to the workers of one call.

    Workers claim chunks as they finish the previous one, so a worker whose core is
    taken by another process scores fewer chunks instead of making the whole call
    wait for its fixed half. ``next`` on an ``itertools.count`` is atomic under the GIL.
    """

    def __init__(self, n: int, rows: int) -> None:
        self.n, self.rows = n, rows
        self._next = itertools.count().__next__
        self.stopped = False

    def claim(self) -> int:
        """First row of the next unscored chunk, or -1 when none is left (or a worker failed)."""
        lo = self._next() * self.rows
        return -1 if self.stopped or lo >= self.n else lo


def _score_rows(
    data: NDArray[np.floating],
    w: NDArray[np.floating],
    b: NDArray[np.floating],
    result: NDArray[np.floating],
    chunks: _Chunks,
) -> int:
    """Score the chunks this worker claims from ``chunks`` into ``result``, with private buffers.

    Returns -1 when every distance it computed is finite, else the first row of the
    chunk whose distances are NaN or infinite (checked per chunk while it is still in
    cache; ``max`` propagates NaN); then every worker stops.
    """
    rows = chunks.rows
    m = min(rows, chunks.n)
    buf = np.empty((w.shape[0], m), dtype=w.dtype)
    narrow = None if data.dtype == w.dtype else np.empty((m, w.shape[1]), dtype=w.dtype)
    # Non-finite input is reported once, as a ValueError, not as RuntimeWarnings.
    with np.errstate(invalid="ignore", over="ignore"):
        while (lo := chunks.claim()) >= 0:
            hi = min(lo + rows, chunks.n)
            block = data[lo:hi]
            if narrow is not None:
                np.copyto(narrow[: hi - lo], block, casting="same_kind")
                block = narrow[: hi - lo]
            z = buf[:, : hi - lo]
            np.matmul(w, block.T, out=z)
            z -= b
            chunk = result[lo:hi]
            np.einsum("ij,ij->j", z, z, out=chunk)
            if not np.isfinite(chunk.max()):
                chunks.stopped = True
                return lo
    return -1


def _shown(rows: NDArray[np.intp]) -> str:
    return ", ".join(str(r) for r in rows[:5]) + (f" ... ({rows.size} rows)" if rows.size > 5 else "")


class NonFiniteRowsError(ValueError):
    """Rows whose squared distance is not finite: NaN/inf input, or an overflow of the dtype.

    Attributes
    ----------
    rows : indices of the offending rows (all of them for NaN/inf input; those of the
        first failing chunk of each worker for an overflow).
    """

    def __init__(self, message: str, rows: NDArray[np.intp]) -> None:
        super().__init__(message)
        self.rows = rows


def _non_finite_error(
    data: NDArray[np.floating],
    result: NDArray[np.floating],
    failed: list[int],
    rows: int,
    name: str,
) -> NonFiniteRowsError:
    """The error for a call whose chunks starting at ``failed`` gave non-finite distances.

    Runs only on the failure path, so it may scan the whole input.
    """
    bad = ~np.isfinite(data)
    bad_rows = np.flatnonzero(bad.any(axis=1))
    if bad_rows.size:
        cols = np.flatnonzero(bad[bad_rows].any(axis=0))
        return NonFiniteRowsError(
            f"{name} contains NaN or infinite values in rows {_shown(bad_rows)} "
            f"(columns {', '.join(str(c) for c in cols[:5])})",
            bad_rows,
        )
    over = np.concatenate(
        [lo + np.flatnonzero(~np.isfinite(result[lo : lo + rows])) for lo in failed]
    ).astype(np.intp)
    return NonFiniteRowsError(
        f"{name} is finite but the distances of rows {_shown(over)} overflow "
        f"{result.dtype.name}: score them in float64",
        over,
    )


@dataclass(frozen=True)
class WhiteningKernel:
    """Precomputed whitening of a fitted location and covariance.

    Attributes
    ----------
    location : (d,) float64 array, the baseline's centre.
    whitening : (d, d) float64 lower-triangular ``W = L^-1`` of the Cholesky factor.
    offset : (d,) float64 ``W @ location``.
    config : the kernel settings (precision, rows per chunk, threads) used when a call
        does not override them.
    """

    location: NDArray[np.float64]
    whitening: NDArray[np.float64]
    offset: NDArray[np.float64]
    config: KernelConfig = field(default_factory=KernelConfig)

    @classmethod
    def from_covariance(
        cls,
        location: NDArray[np.floating],
        covariance: NDArray[np.floating],
        config: KernelConfig | None = None,
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
        if config is not None and not isinstance(config, KernelConfig):
            raise ValueError(f"config must be a KernelConfig: got {type(config).__name__}")
        try:
            chol = linalg.cholesky(cov, lower=True)
        except linalg.LinAlgError:
            raise ValueError(
                "covariance is not positive definite (singular or indefinite): "
                "use a shrinkage estimate"
            ) from None
        whitening = linalg.solve_triangular(chol, np.eye(loc.size), lower=True)
        return cls(
            location=loc,
            whitening=whitening,
            offset=whitening @ loc,
            config=config if config is not None else KernelConfig(),
        )

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
        name: str = "X",
    ) -> NDArray[np.floating]:
        """Squared Mahalanobis distance of every row of ``X``.

        Parameters
        ----------
        X : (n, d) array. float32 is scored in float32 (never upcast); other dtypes in
            float64, or in float32 when ``config.dtype == "float32"`` (narrowed chunk
            by chunk, no copy of ``X``).
        chunk_rows : rows per chunk; default ``config.chunk_rows``, else sized to L2
            for this d and dtype.
        out : optional (n,) array of the scoring dtype to write into (e.g. a slice of
            a larger result when the rows arrive as a stream).
        threads : worker threads; default ``config.threads``, else one per core for
            large n, one for small n. BLAS is pinned to one thread while scoring.
        name : what to call ``X`` in error messages.

        Returns
        -------
        (n,) array of squared distances in the scoring dtype (``out`` when given).

        Raises
        ------
        ValueError
            If ``X`` is not (n, d), or ``out``, ``chunk_rows`` or ``threads`` are invalid.
        NonFiniteRowsError
            (a ValueError) if a distance is not finite: ``X`` holds NaN/inf (the rows
            and columns are named) or a distance overflows float32. ``out`` may have
            been partly written.
        """
        data = np.asarray(X)
        if data.ndim != 2 or data.shape[1] != self.n_features:
            raise ValueError(
                f"{name} has shape {data.shape}: expected (n_agents, {self.n_features})"
            )
        if data.dtype != np.float32 and data.dtype != np.float64:
            data = data.astype(np.float64)
        dtype = self.config.scoring_dtype(data.dtype)
        n = data.shape[0]
        rows = self.config.rows_per_chunk(self.n_features, dtype) if chunk_rows is None else chunk_rows
        if isinstance(rows, bool) or not isinstance(rows, int | np.integer) or rows < 1:
            raise ValueError(f"chunk_rows={chunk_rows!r}: expected a positive integer")
        workers = self.config.workers(n) if threads is None else threads
        if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
            raise ValueError(f"threads={threads!r}: expected a positive integer")
        result = np.empty(n, dtype=dtype) if out is None else out
        if (
            not isinstance(result, np.ndarray)
            or result.shape != (n,)
            or result.dtype != dtype
        ):
            raise ValueError(f"out must be an array of shape ({n},) and dtype {dtype.name}")
        if n == 0:
            return result
        w, b = self._typed(dtype)
        rows = int(min(rows, n))
        workers = int(min(workers, -(-n // rows)))
        chunks = _Chunks(n, rows)
        if n < PIN_BLAS_MIN_ROWS:
            # OpenBLAS runs GEMMs this small on one thread anyway; skip the pinning cost.
            failed = [_score_rows(data, w, b, result, chunks)]
        elif workers == 1:
            with _single_threaded_blas():
                failed = [_score_rows(data, w, b, result, chunks)]
        else:
            # The calling thread is one of the workers; the others come from the pool.
            with _single_threaded_blas():
                futures = [
                    _pool(workers - 1).submit(_score_rows, data, w, b, result, chunks)
                    for _ in range(workers - 1)
                ]
                failed = [_score_rows(data, w, b, result, chunks)]
                failed += [future.result() for future in futures]
        failed = [lo for lo in failed if lo >= 0]
        if failed:
            raise _non_finite_error(data, result, failed, rows, name)
        return result

    def _typed(self, dtype: np.dtype[Any]) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
        """``W`` and the offset column in ``dtype``."""
        w = np.ascontiguousarray(self.whitening, dtype=dtype)
        b = np.asarray(self.offset, dtype=dtype).reshape(-1, 1)
        return w, b


class FittedScorer(Protocol):
    """A fitted baseline: location, covariance and its squared distances (e.g. ``Baseline``)."""

    location_: NDArray[np.float64]
    covariance_: NDArray[np.float64]

    def mahalanobis(self, X: ArrayLike) -> NDArray[np.floating]: ...


ORACLE_BLOCK_ROWS = 65_536
"""Rows per block of the float64 oracle (bounds its temporaries)."""


def oracle_squared_distances(
    X: ArrayLike, location: ArrayLike, covariance: ArrayLike
) -> NDArray[np.float64]:
    """Float64 squared distances by ``numpy.linalg.solve`` (LU), independent of the kernel's Cholesky."""
    data = np.asarray(X, dtype=np.float64)
    loc = np.asarray(location, dtype=np.float64)
    cov = np.asarray(covariance, dtype=np.float64)
    out = np.empty(data.shape[0], dtype=np.float64)
    for lo in range(0, data.shape[0], ORACLE_BLOCK_ROWS):
        diff = data[lo : lo + ORACLE_BLOCK_ROWS] - loc
        out[lo : lo + ORACLE_BLOCK_ROWS] = np.einsum("ij,ji->i", diff, np.linalg.solve(cov, diff.T))
    return out


def float32_error_vs_oracle(baseline: FittedScorer, X: ArrayLike, *, floor: float = 1.0) -> float:
    """Largest relative error of a baseline's float32 scores against a float64 oracle.

    The baseline scores ``X`` through its own public path (``mahalanobis``, with its
    kernel settings); the oracle solves ``covariance_ @ y = x - location_`` in float64
    with :func:`numpy.linalg.solve` on the same ``X`` as float64. The error of a row is
    ``|got - oracle| / max(oracle, floor)``: distances below ``floor`` (default 1, i.e.
    within one standard deviation, far from any decision threshold) are compared in
    absolute terms, since the relative error of a near-zero distance measures the
    cancellation in ``x - location``, not the detector's decisions.

    Raises
    ------
    ValueError
        If the baseline does not score ``X`` in float32 (its error would not be the
        float32 error: configure ``KernelConfig(dtype="float32")`` or pass float32 rows),
        or ``X`` is empty.
    """
    got = np.asarray(baseline.mahalanobis(X))
    if got.dtype != np.float32:
        raise ValueError(
            f"the baseline scores this input in {got.dtype.name}, not float32: "
            "its float32 error is not evaluated"
        )
    if got.size == 0:
        raise ValueError("X is empty: the float32 error is not evaluated")
    want = oracle_squared_distances(X, baseline.location_, baseline.covariance_)
    err = np.abs(got.astype(np.float64) - want) / np.maximum(want, floor)
    return float(err.max())
