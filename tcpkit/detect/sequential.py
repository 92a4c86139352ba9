"""One-sided CUSUM over each agent's windows, against a frozen in-control reference.

Slow drift hides from a test on the average of many windows and is absorbed by any
baseline that keeps learning. Page's CUSUM accumulates small excesses instead:
``S_t = max(0, S_{t-1} + z_t - k)``, alarm when ``S_t > h``. Here ``z_t`` is the
agent's per-window statistic turned into a normal score through the *empirical*
distribution of the same statistic on a frozen, vetted in-control reference
(``z = Phi^-1(F_ref(x))``), so no Gaussian assumption about the raw statistic is
needed and the reference never learns from the agents being judged.

The threshold ``h`` comes from a target in-control average run length (ARL0) via
Siegmund's approximation for N(0, 1) increments,
``ARL0 = (exp(2 k b) - 2 k b - 1) / (2 k^2)`` with ``b = h + 1.166``
(Siegmund 1985), solved for ``h``. ``k = 0.5`` is tuned to a shift of one standard
deviation in ``z``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special


def siegmund_arl(k: float, h: float) -> float:
    """In-control average run length of a one-sided CUSUM on N(0,1) increments."""
    b = h + 1.166
    if k == 0:
        return float(b**2)
    x = 2 * k * b
    return float((np.expm1(x) - x) / (2 * k**2))


def threshold_for_arl(k: float, target_arl: float) -> float:
    """The ``h`` whose Siegmund in-control ARL equals ``target_arl``."""
    if not target_arl > 1:
        raise ValueError(f"target_arl={target_arl!r}: expected a number above 1")
    upper = 1.0
    while siegmund_arl(k, upper) < target_arl:
        upper *= 2.0
    return float(optimize.brentq(lambda h: siegmund_arl(k, h) - target_arl, 0.0, upper))


@dataclass(frozen=True)
class CusumResult:
    """CUSUM paths and alarms for a set of agents.

    Attributes
    ----------
    statistic : (n_agents, n_windows) CUSUM path ``S_t``.
    alarms : (n_agents,) True where ``S_t`` crossed ``h`` at some window.
    alarm_window : (n_agents,) index of the first window with ``S_t > h``, -1 if none.
    max_statistic : (n_agents,) ``max_t S_t`` (a per-agent score for calibration).
    h : the threshold used.
    """

    statistic: NDArray[np.float64]
    alarms: NDArray[np.bool_]
    alarm_window: NDArray[np.int64]
    max_statistic: NDArray[np.float64]
    h: float

    def time_to_detect(self, start: int = 0) -> NDArray[np.float64]:
        """Windows from ``start`` to the first alarm (NaN where never alarmed)."""
        out = np.where(self.alarms, self.alarm_window - start + 1, np.nan).astype(np.float64)
        return out


class CusumDetector:
    """Page's one-sided CUSUM per agent against a frozen reference.

    Parameters
    ----------
    reference : 1-D array of the per-window statistic observed in control (vetted clean
        windows, e.g. a reference period); frozen at construction.
    k : allowance in normal-score units (half the shift to detect quickly).
    h : decision threshold; None derives it from ``target_arl``.
    target_arl : in-control average run length in windows when ``h`` is None.
    """

    def __init__(
        self,
        reference: ArrayLike,
        k: float = 0.5,
        h: float | None = None,
        target_arl: float = 500.0,
    ) -> None:
        ref = np.asarray(reference, dtype=np.float64).ravel()
        if ref.size < 20:
            raise ValueError(
                f"reference has {ref.size} values: a CUSUM reference needs at least 20 in-control windows"
            )
        if not np.all(np.isfinite(ref)):
            raise ValueError("reference contains NaN or infinite values")
        if not k >= 0:
            raise ValueError(f"k={k!r}: expected a non-negative allowance")
        if h is not None and not h > 0:
            raise ValueError(f"h={h!r}: expected a positive threshold")
        self.reference_ = np.sort(ref)
        self.k = float(k)
        self.target_arl = float(target_arl)
        self.h_ = float(h) if h is not None else threshold_for_arl(self.k, self.target_arl)

    def normal_scores(self, stream: NDArray[np.float64]) -> NDArray[np.float64]:
        """``Phi^-1`` of the mid-rank empirical CDF of the reference (kept inside (0, 1))."""
        n = self.reference_.size
        below = np.searchsorted(self.reference_, stream, side="left")
        upto = np.searchsorted(self.reference_, stream, side="right")
        u = (0.5 + 0.5 * (below + upto)) / (n + 1.0)
        return np.asarray(special.ndtri(u), dtype=np.float64)

    def run(self, stream: ArrayLike) -> CusumResult:
        """Run the CUSUM over ``stream`` of shape (n_agents, n_windows)."""
        x = np.asarray(stream, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] == 0:
            raise ValueError(f"stream has shape {x.shape}: expected (n_agents, n_windows >= 1)")
        bad = ~np.isfinite(x)
        if bad.any():
            rows = np.unique(np.nonzero(bad)[0])[:5].tolist()
            raise ValueError(f"stream contains NaN or infinite values (agents {rows})")
        z = self.normal_scores(x)
        s = np.empty_like(z)
        current = np.zeros(z.shape[0])
        for t in range(z.shape[1]):
            current = np.maximum(0.0, current + z[:, t] - self.k)
            s[:, t] = current
        over = s > self.h_
        alarms = np.asarray(over.any(axis=1), dtype=np.bool_)
        first = np.where(alarms, over.argmax(axis=1), -1).astype(np.int64)
        return CusumResult(s, alarms, first, s.max(axis=1), self.h_)
