"""The one scoring kernel: squared Mahalanobis distances by Cholesky whitening.

Every Mahalanobis score in tcpkit goes through :class:`WhiteningKernel`, so there
is one place to make scoring fast and one place to make it correct. With
``Sigma = L L^T`` and ``W = L^-1``, ``d^2(x) = ||W x - W mu||^2``; the rows are
processed in chunks so that no temporary larger than one chunk is ever made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import linalg

DEFAULT_CHUNK_ROWS = 16_384


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
        if loc.ndim != 1 or cov.shape != (loc.size, loc.size):
            raise ValueError(
                f"location has shape {loc.shape} and covariance {cov.shape}: "
                "expected (d,) and (d, d)"
            )
        if not (np.all(np.isfinite(loc)) and np.all(np.isfinite(cov))):
            raise ValueError("location or covariance contains NaN or infinite values")
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
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        out: NDArray[np.floating] | None = None,
    ) -> NDArray[np.floating]:
        """Squared Mahalanobis distance of every row of ``X``, in ``X``'s float dtype.

        float32 input is scored in float32 (no silent upcast); anything else in float64.
        """
        data = np.asarray(X)
        if data.ndim != 2 or data.shape[1] != self.n_features:
            raise ValueError(
                f"X has shape {data.shape}: expected (n_agents, {self.n_features})"
            )
        dtype = np.float32 if data.dtype == np.float32 else np.float64
        data = data.astype(dtype, copy=False)
        n = data.shape[0]
        result = np.empty(n, dtype=dtype) if out is None else out
        if result.shape != (n,) or result.dtype != dtype:
            raise ValueError(f"out must have shape ({n},) and dtype {np.dtype(dtype).name}")
        w = self.whitening.astype(dtype)
        b = self.offset.astype(dtype)[:, None]
        rows = max(1, min(chunk_rows, n))
        buf = np.empty((self.n_features, rows), dtype=dtype)
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            z = buf[:, : stop - start]
            np.matmul(w, data[start:stop].T, out=z)
            z -= b
            np.einsum("ij,ij->j", z, z, out=result[start:stop])
        return result
