"""The detectors a user would pick instead of tcpkit's, judged at the same FDR on the same fleets.

Why
---
A recall figure means little without the alternatives beside it. A user with agent
telemetry and no tcpkit would reach for PyOD (IsolationForest, ECOD, MCD) or a textbook
chi-square test. Each of them is given what tcpkit's detector is given, and is calibrated
the way it is, so that the comparison is at one false-discovery rate and not between
arbitrary score thresholds:

* the same information: per agent, the change (detection-period mean minus own
  reference mean) and the level (mean of all windows) of every feature, side by side;
* the same vetted reference fleet: the same fitting agents (:meth:`NetworkDetector.split`)
  fit the peer, the other reference agents calibrate it;
* the same decision: conformal p-values of the peer's outlier score against the
  calibration agents, then Benjamini-Hochberg at the detector's level.

``naive_chi2`` is the classical covariance of the fitting agents with chi-square p-values
(no calibration: what the Gaussian assumption promises). Every peer's p-values are valid
under the same exchangeability assumption as tcpkit's (a clean monitored agent and the
calibration agents are exchangeable), except ``naive_chi2``, whose p-values assume
Gaussian rows.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tcpkit.detect.baseline import decide
from tcpkit.detect.pvalues import chi2_sf, conformal_pvalues

__all__ = ["PEERS", "PeerResult", "agent_rows", "judge_with_peer"]

Scorer = Callable[[NDArray[np.float64], NDArray[np.float64]], NDArray[np.float64]]


def agent_rows(windows: NDArray[np.float64], reference_windows: int) -> NDArray[np.float64]:
    """Per agent ``[change, level]`` of every feature, (n_agents, 2 d): what each peer sees."""
    w = np.asarray(windows, dtype=np.float64)
    ref = w[:, :reference_windows].mean(axis=1)
    change = w[:, reference_windows:].mean(axis=1) - ref
    return np.hstack([change, w.mean(axis=1)])


def _standardised(fit: NDArray[np.float64], x: NDArray[np.float64]) -> NDArray[np.float64]:
    centre, scale = fit.mean(axis=0), fit.std(axis=0)
    return (x - centre) / np.where(scale > 0, scale, 1.0)


def _pyod(name: str) -> Scorer:
    def score(fit: NDArray[np.float64], x: NDArray[np.float64]) -> NDArray[np.float64]:
        if name == "iforest":
            from pyod.models.iforest import IForest

            model = IForest(random_state=0)
        elif name == "ecod":
            from pyod.models.ecod import ECOD

            model = ECOD()
        else:
            from pyod.models.mcd import MCD

            model = MCD(random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(_standardised(fit, fit))
            return np.asarray(model.decision_function(_standardised(fit, x)), dtype=np.float64)

    return score


PEERS: dict[str, Scorer] = {
    "pyod_iforest": _pyod("iforest"),
    "pyod_ecod": _pyod("ecod"),
    "pyod_mcd": _pyod("mcd"),
}


@dataclass(frozen=True)
class PeerResult:
    """One peer's decisions on one monitored fleet: flags, p-values and the test behind them."""

    name: str
    flags: NDArray[np.bool_]
    pvalues: NDArray[np.float64]
    test: str


def judge_with_peer(
    name: str,
    reference: NDArray[np.float64],
    monitored: NDArray[np.float64],
    fit_rows: NDArray[np.intp],
    cal_rows: NDArray[np.intp],
    reference_windows: int,
    alpha: float,
) -> PeerResult:
    """Fit peer ``name`` (a key of :data:`PEERS`, or ``"naive_chi2"``) and judge ``monitored`` at BH ``alpha``.

    ``reference`` and ``monitored`` are (n, n_windows, d) windows; ``fit_rows`` and
    ``cal_rows`` split the reference (use the tcpkit detector's own split).
    """
    ref_rows = agent_rows(reference, reference_windows)
    rows = agent_rows(monitored, reference_windows)
    fit = ref_rows[fit_rows]
    if name == "naive_chi2":
        centre = fit.mean(axis=0)
        precision = np.linalg.pinv(np.cov(fit, rowvar=False))
        diff = rows - centre
        p = chi2_sf(np.einsum("ij,jk,ik->i", diff, precision, diff), rows.shape[1])
        test = "chi-square (Gaussian rows assumed)"
    elif name in PEERS:
        scorer = PEERS[name]
        calibration = np.sort(scorer(fit, ref_rows[cal_rows]))
        p = conformal_pvalues(scorer(fit, rows), calibration, check_sorted=False)
        test = f"conformal against {cal_rows.size} calibration agents"
    else:
        raise ValueError(f"unknown peer {name!r}: choose naive_chi2 or one of {', '.join(PEERS)}")
    flags, _ = decide(np.asarray(p, dtype=np.float64), alpha, "bh")
    return PeerResult(name=name, flags=flags, pvalues=np.asarray(p, dtype=np.float64), test=test)
