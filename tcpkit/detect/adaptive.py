"""Adaptive conformal scores: a score learned from the fleet being judged, with the FDR guarantee kept.

Why
---
The shipped detector scores each agent by fixed omnibus distances (change, level,
CUSUM, family), which spread an attack's evidence over every degree of freedom: in the
default world a linear test that knew each attack's direction would find most attacked
agents, while the omnibus distances find few. The directions are in the data being
judged: a fifth of a monitored fleet may be compromised, and its agents stand out
from the vetted reference *together*. AdaDetect (Marandon, Lei, Mary and Roquain 2024,
"Adaptive novelty detection with false discovery rate guarantee", *Annals of
Statistics* 52(1)) learns them without labels and keeps the conformal guarantee:

1. split the vetted reference into a *null training* part and a *calibration* part;
2. train a classifier to tell the null training agents (class 0) from the pooled
   calibration and monitored agents (class 1): where the monitored fleet has agents the
   reference lacks, class 1 is denser, and the classifier's score rises there;
3. score the calibration and the monitored agents with it and take conformal p-values
   of the monitored scores against the calibration scores; Benjamini-Hochberg decides.

The guarantee and its assumption
--------------------------------
The score function is a symmetric function of the pooled calibration + monitored set
(the classifier is trained on that set as a multiset: rows are put in a canonical order
first, so a permutation of the agents changes nothing). Under the assumption that the
clean monitored agents and the calibration agents are i.i.d. draws of one population
(independent of the null training agents), their scores are exchangeable, so each clean
agent's p-value is super-uniform and BH controls the FDR at ``pi0 * q`` (Marandon et al.,
Theorem 3.3). The assumption is stronger in practice than the fixed-score detector's:
an adaptive score *finds* any difference between the monitored fleet and the reference,
benign ones included. A reference drawn from another fleet, with its own regime history,
is not exchangeable with the monitored agents, and the classifier learns that difference
too (the statistics notebook measures how often clean agents then fall below ``alpha``).
Use it with a reference audited inside the monitored fleet (:mod:`tcpkit.detect.audited`).

The classifier
--------------
``model`` picks it: ``"logistic"`` (scikit-learn's L2 logistic regression, one
direction), ``"boosting"`` (``HistGradientBoostingClassifier``, shallow trees, several
directions and one-sided effects) or ``"ensemble"`` (default: the mean of the two
scores' ranks over the pooled set, itself a symmetric function of it). Features are
standardised by the null training agents' mean and SD.

Both classifiers run on one thread. The gate pipeline runs notebooks side by side on a
two-core machine, and scikit-learn's boosting spins OpenMP threads that wait for cores
the other notebooks hold: on a busy machine a two-thread fit is not twice as fast but
many times slower than a one-thread fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from tcpkit.detect.baseline import BaselineError, check_matrix
from tcpkit.detect.config import ADAPTIVE_MODELS
from tcpkit.detect.pvalues import conformal_pvalues

__all__ = ["ADAPTIVE_MODELS", "AdaptiveResult", "adaptive_pvalues", "adaptive_split"]

MIN_NULL_TRAINING = 20


@dataclass(frozen=True)
class AdaptiveResult:
    """Conformal p-values of the monitored agents under the learned score.

    Attributes
    ----------
    pvalues : (m,) conformal p-values of the monitored agents, in the order given;
        multiples of ``1 / (n_calibration + 1)``.
    calibration_scores, test_scores : the learned score of every calibration and
        monitored agent (larger = more unlike the null training agents).
    model : the classifier used (one of :data:`ADAPTIVE_MODELS`).
    """

    pvalues: NDArray[np.float64]
    calibration_scores: NDArray[np.float64]
    test_scores: NDArray[np.float64]
    model: str


def adaptive_split(
    rows: ArrayLike, n_calibration: int, random_state: int = 0
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """(null training rows, calibration rows): ``n_calibration`` of ``rows`` drawn at random, the rest for training."""
    pool = np.asarray(rows, dtype=np.intp)
    if pool.ndim != 1:
        raise BaselineError(f"rows has shape {pool.shape}: expected a 1-D array of row indices")
    if isinstance(n_calibration, bool) or not isinstance(n_calibration, int | np.integer) or n_calibration < 1:
        raise BaselineError(f"n_calibration={n_calibration!r}: expected a positive integer")
    if pool.size - int(n_calibration) < MIN_NULL_TRAINING:
        raise BaselineError(
            f"{pool.size} reference rows leave fewer than {MIN_NULL_TRAINING} null training agents "
            f"beside {n_calibration} calibration agents"
        )
    order = np.random.default_rng(random_state).permutation(pool)
    return np.sort(order[int(n_calibration) :]), np.sort(order[: int(n_calibration)])


def _canonical(X: NDArray[np.float64]) -> NDArray[np.float64]:
    """The rows of ``X`` in lexicographic order: the training set as a multiset."""
    return X[np.lexsort(X.T[::-1])]


def _logistic(X0: NDArray[np.float64], X1: NDArray[np.float64], pooled: NDArray[np.float64]) -> NDArray[np.float64]:
    X = np.vstack([X0, X1])
    y = np.r_[np.zeros(len(X0)), np.ones(len(X1))]
    clf = LogisticRegression(C=1.0, max_iter=3000).fit(X, y)
    return np.asarray(clf.decision_function(pooled), dtype=np.float64)


def _boosting(
    X0: NDArray[np.float64], X1: NDArray[np.float64], pooled: NDArray[np.float64], random_state: int
) -> NDArray[np.float64]:
    X = np.vstack([X0, X1])
    y = np.r_[np.zeros(len(X0)), np.ones(len(X1))]
    clf = HistGradientBoostingClassifier(
        max_iter=150,
        learning_rate=0.05,
        max_leaf_nodes=8,
        min_samples_leaf=40,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=random_state,
    ).fit(X, y)
    return np.asarray(clf.predict_proba(pooled)[:, 1], dtype=np.float64)


def adaptive_pvalues(
    null_training: ArrayLike,
    calibration: ArrayLike,
    test: ArrayLike,
    *,
    model: str = "ensemble",
    random_state: int = 0,
) -> AdaptiveResult:
    """AdaDetect p-values of ``test`` rows (see the module docstring for the guarantee).

    Parameters
    ----------
    null_training : (n0, d) rows of vetted clean agents, used only to train (class 0);
        at least :data:`MIN_NULL_TRAINING`.
    calibration : (n_cal, d) rows of other vetted clean agents (pooled with ``test`` as class 1).
    test : (m, d) rows of the monitored agents.
    model : one of :data:`ADAPTIVE_MODELS`.
    random_state : seed of the boosting model (the result is deterministic given it).
    """
    if model not in ADAPTIVE_MODELS:
        raise BaselineError(f"model={model!r}: choose from {', '.join(ADAPTIVE_MODELS)}")
    X0 = check_matrix(null_training, "null_training")
    Xc = check_matrix(calibration, "calibration", X0.shape[1])
    Xt = check_matrix(test, "test", X0.shape[1])
    if X0.shape[0] < MIN_NULL_TRAINING:
        raise BaselineError(f"null_training has {X0.shape[0]} rows: at least {MIN_NULL_TRAINING} are needed")
    centre = X0.mean(axis=0)
    scale = X0.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z0, zc, zt = ((X - centre) / scale for X in (X0, Xc, Xt))
    pooled = np.vstack([zc, zt])
    train0, train1 = _canonical(z0), _canonical(pooled)
    with threadpool_limits(1):  # one thread: see the module docstring
        if model == "logistic":
            score = _logistic(train0, train1, pooled)
        elif model == "boosting":
            score = _boosting(train0, train1, pooled, random_state)
        else:
            score = rankdata(_logistic(train0, train1, pooled)) + rankdata(
                _boosting(train0, train1, pooled, random_state)
            )
            score = np.asarray(score, dtype=np.float64)
    n_cal = zc.shape[0]
    cal_scores, test_scores = score[:n_cal], score[n_cal:]
    p = conformal_pvalues(test_scores, np.sort(cal_scores), check_sorted=False)
    return AdaptiveResult(np.asarray(p, dtype=np.float64), cal_scores, test_scores, model)
