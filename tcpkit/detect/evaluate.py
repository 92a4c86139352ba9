"""Detection quality with confidence intervals: proportions, AUROC, time-to-detect, effect sizes, power.

Every number comes with its uncertainty, because a recall of 1.0 on 8 agents and
on 800 agents are different claims:

* proportions (precision, recall, false-positive rate) with Wilson score intervals
  (``statsmodels.stats.proportion.proportion_confint(method="wilson")``), which keep
  their coverage near 0 and 1 where the normal interval fails;
* F1 with a percentile bootstrap interval over agents;
* AUROC (Mann-Whitney) with a ``scipy.stats.bootstrap`` interval;
* Cohen's d and Hedges' g with the large-sample normal interval of Hedges & Olkin;
* the number of commands per window needed to see a given shift
  (``statsmodels.stats.power.NormalIndPower``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a confidence interval (and the counts behind a proportion)."""

    value: float
    low: float
    high: float
    successes: int | None = None
    trials: int | None = None
    confidence: float = 0.95

    def __str__(self) -> str:
        counts = f" ({self.successes}/{self.trials})" if self.trials is not None else ""
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]{counts}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "successes": self.successes,
            "trials": self.trials,
        }


def _bool(name: str, values: ArrayLike) -> NDArray[np.bool_]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} has shape {arr.shape}: expected a 1-D array")
    if arr.dtype != np.bool_:
        if not np.all(np.isin(arr, (0, 1))):
            raise ValueError(f"{name} must be boolean (or 0/1)")
        arr = arr.astype(bool)
    return arr


def wilson(successes: int, trials: int, confidence: float = 0.95) -> Estimate:
    """Proportion with its Wilson score interval; NaN (not evaluated) when ``trials`` is 0."""
    from statsmodels.stats.proportion import proportion_confint

    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"successes={successes}, trials={trials}: expected 0 <= successes <= trials")
    if trials == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, 0, confidence)
    low, high = proportion_confint(successes, trials, alpha=1 - confidence, method="wilson")
    return Estimate(successes / trials, float(low), float(high), int(successes), int(trials), confidence)


@dataclass(frozen=True)
class DetectionMetrics:
    """Precision, recall, FPR and F1 of one set of decisions, each with a 95 % interval."""

    precision: Estimate
    recall: Estimate
    fpr: Estimate
    f1: Estimate
    n_positive: int
    n_negative: int

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {k: getattr(self, k).as_dict() for k in ("precision", "recall", "fpr", "f1")}


def _f1(tp: float, fp: float, fn: float) -> float:
    denom = 2 * tp + fp + fn
    return float(2 * tp / denom) if denom else float("nan")


def detection_metrics(
    labels: ArrayLike, flags: ArrayLike, *, confidence: float = 0.95, n_boot: int = 1000, seed: int = 0
) -> DetectionMetrics:
    """Precision, recall, FPR (Wilson intervals) and F1 (bootstrap interval over agents)."""
    y = _bool("labels", labels)
    f = _bool("flags", flags)
    if y.shape != f.shape:
        raise ValueError(f"labels has {y.size} agents but flags has {f.size}")
    tp = int((y & f).sum())
    fp = int((~y & f).sum())
    fn = int((y & ~f).sum())
    tn = int((~y & ~f).sum())
    f1_value = _f1(tp, fp, fn)
    if y.size and np.isfinite(f1_value):
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, y.size, size=(n_boot, y.size))
        yb, fb = y[idx], f[idx]
        tpb = (yb & fb).sum(1)
        denom = 2 * tpb + (~yb & fb).sum(1) + (yb & ~fb).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            f1b = np.where(denom > 0, 2 * tpb / np.maximum(denom, 1), np.nan)
        lo, hi = np.nanquantile(f1b, [(1 - confidence) / 2, (1 + confidence) / 2])
        f1 = Estimate(f1_value, float(lo), float(hi), confidence=confidence)
    else:
        f1 = Estimate(float("nan"), float("nan"), float("nan"), confidence=confidence)
    return DetectionMetrics(
        precision=wilson(tp, tp + fp, confidence),
        recall=wilson(tp, tp + fn, confidence),
        fpr=wilson(fp, fp + tn, confidence),
        f1=f1,
        n_positive=tp + fn,
        n_negative=fp + tn,
    )


def recall_by_type(
    attack: ArrayLike, flags: ArrayLike, *, types: Sequence[str] | None = None, confidence: float = 0.95
) -> dict[str, Estimate]:
    """Recall per compromise type (agents whose ``attack`` equals the type), Wilson intervals."""
    a = np.asarray(attack, dtype=object)
    f = _bool("flags", flags)
    if a.shape != f.shape:
        raise ValueError(f"attack has {a.size} agents but flags has {f.size}")
    names = list(types) if types is not None else sorted({x for x in a if x is not None})
    out = {}
    for name in names:
        m = a == name
        out[name] = wilson(int(f[m].sum()), int(m.sum()), confidence)
    return out


def _auc(y: NDArray[np.bool_], s: NDArray[np.float64]) -> float:
    n1, n0 = int(y.sum()), int((~y).sum())
    ranks = stats.rankdata(s)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auroc(
    labels: ArrayLike, scores: ArrayLike, *, confidence: float = 0.95, n_resamples: int = 999, seed: int = 0
) -> Estimate:
    """Area under the ROC curve (Mann-Whitney, ties count one half) with a bootstrap interval.

    Resamples positives and negatives separately (stratified) with ``scipy.stats.bootstrap``
    (percentile method), so every resample has both classes.
    """
    y = _bool("labels", labels)
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != y.shape:
        raise ValueError(f"labels has {y.size} agents but scores has {s.size}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contains NaN or infinite values")
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        raise ValueError("AUROC needs at least one positive and one negative agent")
    value = _auc(y, s)
    if pos.size < 2 or neg.size < 2:
        return Estimate(value, float("nan"), float("nan"), confidence=confidence)

    def statistic(p: NDArray[np.float64], n: NDArray[np.float64], axis: int = -1) -> NDArray[np.float64]:
        # U statistic per resample: P(pos > neg) + 0.5 P(pos == neg)
        gt = (p[..., :, None] > n[..., None, :]).mean(axis=(-1, -2))
        eq = (p[..., :, None] == n[..., None, :]).mean(axis=(-1, -2))
        return np.asarray(gt + 0.5 * eq)

    if pos.size * neg.size > 2_000_000:  # keep memory bounded: subsample for the interval
        rng = np.random.default_rng(seed)
        pos = rng.choice(pos, size=min(pos.size, 1000), replace=False)
        neg = rng.choice(neg, size=min(neg.size, 2000), replace=False)
    res = stats.bootstrap(
        (pos, neg),
        statistic,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        batch=max(1, 20_000_000 // (pos.size * neg.size)),
        random_state=np.random.default_rng(seed),
    )
    return Estimate(value, float(res.confidence_interval.low), float(res.confidence_interval.high), confidence=confidence)


def roc_curve(labels: ArrayLike, scores: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """False- and true-positive rates at every threshold (for plots)."""
    from sklearn.metrics import roc_curve as sk_roc

    fpr, tpr, _ = sk_roc(_bool("labels", labels), np.asarray(scores, dtype=np.float64))
    return np.asarray(fpr), np.asarray(tpr)


def time_to_detect(
    alarm_window: ArrayLike, labels: ArrayLike, *, attack_start: int = 0
) -> dict[str, float]:
    """Windows from the attack start to the first alarm, over compromised agents.

    ``alarm_window`` counts from ``attack_start`` (window 0 = the first attacked
    window, -1 = never). Returns the median and mean over detected agents, the share
    detected, and the count.
    """
    w = np.asarray(alarm_window, dtype=np.int64)
    y = _bool("labels", labels)
    if w.shape != y.shape:
        raise ValueError(f"alarm_window has {w.size} agents but labels has {y.size}")
    hit = w[y]
    detected = hit[hit >= 0] - attack_start + 1
    return {
        "median": float(np.median(detected)) if detected.size else float("nan"),
        "mean": float(detected.mean()) if detected.size else float("nan"),
        "detected_share": float(detected.size / hit.size) if hit.size else float("nan"),
        "n": int(hit.size),
    }


@dataclass(frozen=True)
class EffectSize:
    """Cohen's d and Hedges' g (small-sample corrected) with a normal-theory interval for g."""

    cohens_d: float
    hedges_g: float
    low: float
    high: float
    n1: int
    n2: int


def effect_size(x: ArrayLike, y: ArrayLike, *, confidence: float = 0.95) -> EffectSize:
    """Standardised mean difference ``(mean(x) - mean(y)) / pooled SD`` with Hedges' g and CI.

    The interval uses the large-sample variance of g,
    ``(n1 + n2) / (n1 n2) + g^2 / (2 (n1 + n2))`` (Hedges & Olkin 1985).
    """
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.size < 2 or b.size < 2:
        raise ValueError(f"effect size needs at least 2 values per group (got {a.size} and {b.size})")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("x or y contains NaN or infinite values")
    n1, n2 = a.size, b.size
    pooled = np.sqrt(((n1 - 1) * a.var(ddof=1) + (n2 - 1) * b.var(ddof=1)) / (n1 + n2 - 2))
    if not pooled > 0:
        raise ValueError("both groups are constant: the effect size is undefined")
    d = float((a.mean() - b.mean()) / pooled)
    j = 1 - 3 / (4 * (n1 + n2) - 9)
    g = d * j
    se = np.sqrt((n1 + n2) / (n1 * n2) + g**2 / (2 * (n1 + n2)))
    zq = stats.norm.ppf((1 + confidence) / 2)
    return EffectSize(d, g, float(g - zq * se), float(g + zq * se), n1, n2)


def commands_needed(
    shift: float, noise_sd: float, *, alpha: float = 0.01, power: float = 0.95, alternative: str = "two-sided"
) -> int:
    """Commands per window for a per-command mean ``shift`` to be detected with ``power``.

    One agent's window mean is compared with its reference mean from an equally long
    window (two independent means, ``NormalIndPower``); the effect size is
    ``shift / noise_sd`` per command. Returns the smallest integer number of commands.
    """
    from statsmodels.stats.power import NormalIndPower

    if not noise_sd > 0 or not np.isfinite(shift) or shift == 0:
        raise ValueError(f"shift={shift!r}, noise_sd={noise_sd!r}: expected a non-zero shift and positive noise")
    n = NormalIndPower().solve_power(
        effect_size=abs(shift) / noise_sd, alpha=alpha, power=power, ratio=1.0, alternative=alternative
    )
    return int(np.ceil(float(n)))
