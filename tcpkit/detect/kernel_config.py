"""Settings of the scoring kernel: precision, rows per chunk, worker threads.

One frozen value, :class:`KernelConfig`, carries the settings from a configuration
(a notebook's ``CONFIG``, a ``pipeline.toml`` table, a frozen model) to every
:class:`tcpkit.detect.kernel.WhiteningKernel` a detector builds. The defaults live
here and only here: the kernel, :class:`tcpkit.detect.baseline.Baseline` and the
network detector resolve an unset setting through this module.

Precision
---------
``dtype="float64"`` (default) scores float64 input in float64 and float32 input in
float32: the kernel never upcasts, because float32 input has already lost the digits
a float64 computation would keep, and the copy would cost more than the scoring.
``dtype="float32"`` scores every input in float32; float64 rows are narrowed chunk by
chunk inside the kernel's loop (no ``n x d`` copy is made). Its error against a
float64 oracle is measured by :func:`tcpkit.detect.kernel.float32_error_vs_oracle`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

DTYPES: tuple[str, ...] = ("float64", "float32")
"""Allowed values of :attr:`KernelConfig.dtype`."""

CHUNK_BUFFER_BYTES = 512 * 1024
"""Target size of one worker's ``d x chunk`` buffer: half of a typical 1 MiB L2 cache."""

MIN_CHUNK_ROWS = 1_024
"""Fewest rows per automatically sized chunk (below it the Python overhead per chunk dominates)."""

MAX_CHUNK_ROWS = 131_072
"""Most rows per automatically sized chunk."""

MIN_ROWS_PER_THREAD = 65_536
"""Below this many rows per extra worker, thread start-up costs more than it saves."""


class KernelConfigError(ValueError):
    """A kernel setting that is unknown or out of range (the message names key and allowed values)."""


def available_cores() -> int:
    """Cores this process may run on (CPU affinity, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def default_chunk_rows(n_features: int, dtype: np.dtype[Any] | type) -> int:
    """Rows per chunk so that one ``n_features x rows`` buffer is about :data:`CHUNK_BUFFER_BYTES`.

    Chunks that fit in L2 beat both smaller chunks (Python overhead per chunk) and
    larger ones (the buffer falls out of L2 and every in-place pass goes to DRAM);
    ``tcpkit bench`` measures the kernel at these sizes.
    """
    itemsize = np.dtype(dtype).itemsize
    rows = CHUNK_BUFFER_BYTES // max(1, n_features * itemsize)
    return int(min(max(rows, MIN_CHUNK_ROWS), MAX_CHUNK_ROWS))


def default_threads(n_rows: int) -> int:
    """Worker threads for ``n_rows``: one per available core, one per 64k rows at most."""
    return int(max(1, min(available_cores(), n_rows // MIN_ROWS_PER_THREAD)))


def _positive_int_or_none(key: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise KernelConfigError(f"kernel setting {key}={value!r}: expected a positive integer or None (automatic)")
    return int(value)


@dataclass(frozen=True)
class KernelConfig:
    """How the whitening kernel scores: precision, rows per chunk and worker threads.

    Attributes
    ----------
    dtype : "float64" (default: float64 input in float64, float32 input in float32)
        or "float32" (every input scored in float32). See the module docstring.
    chunk_rows : rows per chunk; None sizes the chunk so one worker's ``d x chunk``
        buffer stays in L2 (:func:`default_chunk_rows`).
    threads : worker threads; None uses one per available core for large inputs and
        one for small ones (:func:`default_threads`).

    Raises
    ------
    KernelConfigError
        On construction with a value outside the allowed ones (the key is named).
    """

    dtype: str = "float64"
    chunk_rows: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.dtype, str) or self.dtype not in DTYPES:
            raise KernelConfigError(
                f"kernel setting dtype={self.dtype!r}: choose one of {', '.join(DTYPES)}"
            )
        object.__setattr__(self, "chunk_rows", _positive_int_or_none("chunk_rows", self.chunk_rows))
        object.__setattr__(self, "threads", _positive_int_or_none("threads", self.threads))

    @classmethod
    def setting_names(cls) -> tuple[str, ...]:
        """The setting names a mapping may hold."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> KernelConfig:
        """Validate a mapping (e.g. a TOML table) into a config; unset keys keep their defaults.

        Raises
        ------
        KernelConfigError
            Naming the first unknown key (with the allowed keys) or the first bad value
            (with the allowed values).
        """
        if mapping is None:
            return cls()
        if not isinstance(mapping, Mapping):
            raise KernelConfigError(
                f"kernel settings must be a mapping of {', '.join(cls.setting_names())}: got {type(mapping).__name__}"
            )
        unknown = sorted(str(key) for key in mapping if key not in cls.setting_names())
        if unknown:
            raise KernelConfigError(
                f"unknown kernel setting {unknown[0]!r}: allowed keys are {', '.join(cls.setting_names())}"
            )
        return cls(**dict(mapping))

    @classmethod
    def coerce(cls, value: KernelConfig | Mapping[str, Any] | None) -> KernelConfig:
        """``value`` itself when it is a config, else :meth:`from_mapping` of it (None: defaults)."""
        return value if isinstance(value, KernelConfig) else cls.from_mapping(value)

    def to_mapping(self) -> dict[str, Any]:
        """The settings as a plain dict (``from_mapping(c.to_mapping()) == c``)."""
        return asdict(self)

    def scoring_dtype(self, input_dtype: np.dtype[Any] | type) -> np.dtype[Any]:
        """The precision an input of ``input_dtype`` is scored in (float32 input is never upcast)."""
        if self.dtype == "float32" or np.dtype(input_dtype) == np.float32:
            return np.dtype(np.float32)
        return np.dtype(np.float64)

    def rows_per_chunk(self, n_features: int, dtype: np.dtype[Any] | type) -> int:
        """``chunk_rows``, or the automatic size for this ``n_features`` and scoring ``dtype``."""
        return self.chunk_rows if self.chunk_rows is not None else default_chunk_rows(n_features, dtype)

    def workers(self, n_rows: int) -> int:
        """``threads``, or the automatic count for ``n_rows``."""
        return self.threads if self.threads is not None else default_threads(n_rows)
