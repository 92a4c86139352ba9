"""Mergeable first and second moments: ``(n, mean, M2)`` after Chan, Golub and LeVeque.

A :class:`Moments` value summarises a batch of rows by its count, its mean and
its co-moment matrix ``M2 = sum_i (x_i - mean)(x_i - mean)^T``. Two summaries
merge exactly (up to rounding) into the summary of the union of their batches,
so a population baseline can be computed chunk by chunk, node by node or worker
by worker and still equal the pooled batch statistics.

Why not raw sums? ``E[x x^T] - mean mean^T`` cancels catastrophically when the
features carry a large offset (1e6 in float64 loses about half the digits of
the covariance); the centred update below keeps the error near machine
precision (Chan, Golub & LeVeque 1979, "Updating formulae and a pairwise
algorithm for computing sample variances").

The wire format (:meth:`Moments.to_bytes`) is versioned and checksummed: a
truncated or garbled message is refused with :class:`MomentsFormatError`, never
half-read.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

MAGIC = b"TCPM"
FORMAT_VERSION = 1
# magic(4) version(1) d(uint32) n(uint64), then mean (d f64) and upper-triangle-free full M2
# (d*d f64), then crc32 of everything before it. Little-endian throughout.
_HEADER = struct.Struct("<4sBIQ")
_TRAILER = struct.Struct("<I")
MAX_FEATURES = 4096


class MomentsFormatError(ValueError):
    """A serialised :class:`Moments` message that is truncated, garbled or of an unknown version."""


def _frozen_array(values: NDArray[Any]) -> NDArray[np.float64]:
    out = np.array(values, dtype=np.float64, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class Moments:
    """Count, mean and co-moment matrix of a batch of rows.

    Attributes
    ----------
    n : int
        Number of rows summarised (0 for the empty summary).
    mean : (d,) float64 array, read-only
        Mean of the rows (zeros when ``n == 0``).
    m2 : (d, d) float64 array, read-only
        ``sum_i (x_i - mean)(x_i - mean)^T``.

    Equality is exact (bitwise on the arrays); use :meth:`digest` as a stable
    content identifier.
    """

    n: int
    mean: NDArray[np.float64]
    m2: NDArray[np.float64]

    def __post_init__(self) -> None:
        mean = _frozen_array(self.mean)
        m2 = _frozen_array(self.m2)
        if isinstance(self.n, bool) or not isinstance(self.n, int | np.integer) or self.n < 0:
            raise ValueError(f"n must be a non-negative integer, got {self.n!r}")
        if mean.ndim != 1 or m2.shape != (mean.size, mean.size):
            raise ValueError(
                f"mean has shape {mean.shape} and m2 {m2.shape}: expected (d,) and (d, d)"
            )
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(m2))):
            raise ValueError("mean or m2 contains NaN or infinite values")
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "m2", m2)

    # --- construction -------------------------------------------------------------------
    @classmethod
    def _trusted(cls, n: int, mean: NDArray[np.float64], m2: NDArray[np.float64]) -> Moments:
        """Wrap arrays this module just computed (finite, right shapes, owned): no copy, no checks."""
        mean.setflags(write=False)
        m2.setflags(write=False)
        out = object.__new__(cls)
        object.__setattr__(out, "n", int(n))
        object.__setattr__(out, "mean", mean)
        object.__setattr__(out, "m2", m2)
        return out

    @classmethod
    def empty(cls, n_features: int) -> Moments:
        """The identity of :meth:`merge`: no rows, ``n_features`` columns."""
        if n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {n_features}")
        return cls(0, np.zeros(n_features), np.zeros((n_features, n_features)))

    @classmethod
    def from_batch(cls, X: NDArray[np.floating] | Iterable[Iterable[float]]) -> Moments:
        """Summarise the rows of ``X`` (shape ``(n, d)``), vectorised, in float64.

        The mean is computed first and the co-moments from centred rows (two
        passes), which is what keeps large offsets harmless.
        """
        data = np.asarray(X, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] < 1:
            raise ValueError(f"X has shape {data.shape}: expected (n_rows, n_features)")
        if not np.all(np.isfinite(data)):
            raise ValueError("X contains NaN or infinite values")
        n, d = data.shape
        if n == 0:
            return cls.empty(d)
        mean = data.mean(axis=0)
        centred = data - mean
        # one correction step removes the rounding left in the first mean
        shift = centred.mean(axis=0)
        mean = mean + shift
        centred -= shift
        m2 = centred.T @ centred
        m2 = 0.5 * (m2 + m2.T)
        return cls._trusted(n, mean, m2)

    # --- algebra ------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        return int(self.mean.size)

    def merge(self, other: Moments) -> Moments:
        """Summary of the union of both batches (Chan, Golub & LeVeque pairwise update)."""
        if not isinstance(other, Moments):
            raise TypeError(f"can only merge Moments, not {type(other).__name__}")
        if other.n_features != self.n_features:
            raise ValueError(
                f"cannot merge moments of {self.n_features} and {other.n_features} features"
            )
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + np.outer(delta, delta) * (self.n * other.n / n)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(m2))):
            raise ValueError("merging these moments overflows float64")
        return Moments._trusted(n, mean, m2)

    def covariance(self, ddof: int = 1) -> NDArray[np.float64]:
        """Covariance ``M2 / (n - ddof)``; ``ddof=1`` matches :func:`numpy.cov`."""
        if self.n - ddof <= 0:
            raise ValueError(f"covariance needs n > ddof, got n={self.n}, ddof={ddof}")
        return self.m2 / (self.n - ddof)

    def reweighted(self, n: int) -> Moments:
        """The same mean and covariance shape, as if summarising ``n`` rows (weight capping)."""
        if n < 1 or self.n < 1:
            raise ValueError(f"reweighting needs n >= 1 on both sides, got {self.n} -> {n}")
        return Moments(n, self.mean, self.m2 * (n / self.n))

    # --- identity and wire format -------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Moments):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        # pickles (e.g. to and from Dask workers) through the validated wire format
        return (_from_bytes, (self.to_bytes(),))

    def digest(self) -> bytes:
        """SHA-256 of the wire format: a content identifier that is equal iff the bits are."""
        import hashlib

        return hashlib.sha256(self.to_bytes()).digest()

    def to_bytes(self) -> bytes:
        """Serialise: header, little-endian float64 mean and M2, CRC-32 trailer."""
        body = (
            _HEADER.pack(MAGIC, FORMAT_VERSION, self.n_features, self.n)
            + self.mean.astype("<f8").tobytes()
            + self.m2.astype("<f8").tobytes()
        )
        return body + _TRAILER.pack(zlib.crc32(body))

    @staticmethod
    def wire_size(n_features: int) -> int:
        """Length in bytes of :meth:`to_bytes` for ``n_features`` columns."""
        return _HEADER.size + 8 * (n_features + n_features * n_features) + _TRAILER.size

    @classmethod
    def from_bytes(cls, data: bytes) -> Moments:
        """Parse :meth:`to_bytes` output; refuse anything truncated, garbled or unknown."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MomentsFormatError(f"expected bytes, got {type(data).__name__}")
        raw = bytes(data)
        if len(raw) < _HEADER.size + _TRAILER.size:
            raise MomentsFormatError(
                f"moments message is truncated: {len(raw)} bytes is shorter than the header"
            )
        magic, version, d, n = _HEADER.unpack_from(raw)
        if magic != MAGIC:
            raise MomentsFormatError(f"moments message has bad magic {magic!r}, expected {MAGIC!r}")
        if version != FORMAT_VERSION:
            raise MomentsFormatError(
                f"moments message has format version {version}, this reader knows {FORMAT_VERSION}"
            )
        if not 1 <= d <= MAX_FEATURES:
            raise MomentsFormatError(f"moments message declares {d} features (1..{MAX_FEATURES})")
        expected = cls.wire_size(d)
        if len(raw) != expected:
            raise MomentsFormatError(
                f"moments message is {len(raw)} bytes but {d} features need {expected}: "
                "truncated or padded"
            )
        body, (crc,) = raw[: -_TRAILER.size], _TRAILER.unpack_from(raw, len(raw) - _TRAILER.size)
        if zlib.crc32(body) != crc:
            raise MomentsFormatError("moments message fails its CRC-32 checksum: garbled in transit")
        values = np.frombuffer(body, dtype="<f8", offset=_HEADER.size).astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise MomentsFormatError("moments message holds NaN or infinite values")
        return cls._trusted(int(n), values[:d], values[d:].reshape(d, d))


def _from_bytes(data: bytes) -> Moments:
    return Moments.from_bytes(data)


def merge_all(parts: Iterable[Moments], n_features: int | None = None) -> Moments:
    """Fold ``parts`` left to right with :meth:`Moments.merge` (deterministic order, deterministic bits)."""
    result: Moments | None = None if n_features is None else Moments.empty(n_features)
    for part in parts:
        result = part if result is None else result.merge(part)
    if result is None:
        raise ValueError("merge_all needs at least one Moments or n_features")
    return result


def chunked_moments(X: NDArray[np.floating], chunk_rows: int = 65_536) -> Moments:
    """Moments of ``X`` computed chunk by chunk and merged in order (bounded temporaries)."""
    data = np.asarray(X)
    if data.ndim != 2:
        raise ValueError(f"X has shape {data.shape}: expected (n_rows, n_features)")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    parts = (
        Moments.from_batch(data[start : start + chunk_rows])
        for start in range(0, data.shape[0], chunk_rows)
    )
    return merge_all(parts, n_features=data.shape[1])
