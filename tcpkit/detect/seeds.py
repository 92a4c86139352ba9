"""Two disjoint seed ranges: one for tuning, one held out for the gates.

Why
---
A figure measured on the seeds that were used while a detector or a simulator
was tuned says how well the tuning fitted those worlds, not how well it works.
Every seed therefore belongs to one of two ranges:

:data:`TUNING_SEEDS`
    Development: notebook defaults, tests, docstrings, examples, exploratory
    runs and every experiment whose result fed back into a design decision.
:data:`GATE_SEEDS`
    Held out: only the gate parameters in ``notebooks/pipeline.toml`` use them.
    Nothing else (no test, no notebook default, no docstring) may name a gate
    seed, so the gates measure worlds that nobody looked at while tuning.

The ranges are the ones ``notebooks/pipeline.toml`` states (gates at seeds
>= 1,000,000, everything else below); a simulation's companion seeds (for
example a reference fleet at ``seed + 10_000``) stay inside the range of their
base seed as long as the base is not within that offset of the range's end.
:func:`is_gate_seed` and :func:`check_tuning_seed` let code and tests assert
which side a seed is on.
"""

from __future__ import annotations

from numbers import Integral

__all__ = [
    "GATE_SEEDS",
    "TUNING_SEEDS",
    "check_tuning_seed",
    "gate_seeds",
    "is_gate_seed",
    "is_tuning_seed",
    "tuning_seeds",
]

TUNING_SEEDS: range = range(0, 1_000_000)
"""Seeds for development, tests, notebook defaults and docstrings."""

GATE_SEEDS: range = range(1_000_000, 2_000_000)
"""Held-out seeds: only the gate parameters of ``notebooks/pipeline.toml`` use them."""


def _as_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, Integral) or int(seed) < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def is_gate_seed(seed: int) -> bool:
    """True when ``seed`` lies in the held-out :data:`GATE_SEEDS` range."""
    return _as_seed(seed) in GATE_SEEDS


def is_tuning_seed(seed: int) -> bool:
    """True when ``seed`` lies in the :data:`TUNING_SEEDS` range."""
    return _as_seed(seed) in TUNING_SEEDS


def check_tuning_seed(seed: int, *, what: str = "seed") -> int:
    """Return ``seed`` if it is a tuning seed; raise ValueError naming ``what`` otherwise."""
    s = _as_seed(seed)
    if s not in TUNING_SEEDS:
        kind = "a held-out gate seed" if s in GATE_SEEDS else "outside both ranges"
        raise ValueError(
            f"{what} must be a tuning seed in [{TUNING_SEEDS.start}, {TUNING_SEEDS.stop}), "
            f"got {s} ({kind})"
        )
    return s


def _take(seeds: range, n: int, offset: int, name: str) -> tuple[int, ...]:
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    if isinstance(offset, bool) or not isinstance(offset, Integral) or offset < 0:
        raise ValueError(f"offset must be an integer >= 0, got {offset!r}")
    if offset + n > len(seeds):
        raise ValueError(
            f"offset + n must be at most {len(seeds)} (the size of {name}), got {offset + n}"
        )
    return tuple(seeds[offset : offset + n])


def tuning_seeds(n: int, offset: int = 0) -> tuple[int, ...]:
    """``n`` consecutive tuning seeds starting at ``TUNING_SEEDS[offset]``."""
    return _take(TUNING_SEEDS, n, offset, "TUNING_SEEDS")


def gate_seeds(n: int, offset: int = 0) -> tuple[int, ...]:
    """``n`` consecutive held-out gate seeds starting at ``GATE_SEEDS[offset]``.

    For the gate parameters only; see the module docstring.
    """
    return _take(GATE_SEEDS, n, offset, "GATE_SEEDS")
