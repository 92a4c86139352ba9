"""Label-trim: the audit ranking finds compromised reference agents, only confirmed ones leave."""

from __future__ import annotations

import numpy as np
import pytest

from tcpkit.detect.audited import audited_fleet
from tcpkit.detect.baseline import BaselineError
from tcpkit.detect.config import build_detector, shipped_config
from tcpkit.detect.label_trim import audit_ranking, next_audit_batch, run_audit, trim_confirmed

SHIPPED = shipped_config()


def _windows(rng: np.random.Generator, n: int, n_windows: int = 10, d: int = 4) -> np.ndarray:
    return rng.standard_normal((n, n_windows, d))


def test_agents_that_changed_rank_first() -> None:
    rng = np.random.default_rng(0)
    w = _windows(rng, 400)
    w[:20, 5:, 0] += 5.0  # 20 agents moved one feature by 5 window SDs after the reference period
    ranking = audit_ranking(w, 5)
    assert set(ranking.candidates(0.05).tolist()) == set(range(20))
    assert np.all(np.diff(ranking.scores[ranking.order]) <= 0)


def test_audit_of_a_simulated_contaminated_reference_catches_most_compromised_agents() -> None:
    fleet = audited_fleet(100, 2000, 0.2, 5, reference_contamination=0.1)
    bad = np.asarray(fleet.reference_labels, dtype=bool)
    candidates = audit_ranking(fleet.reference_windows, SHIPPED.reference_windows).candidates(0.3)
    caught = bad[candidates].sum() / bad.sum()
    assert caught >= 0.8  # a random 30 % audit would catch 0.3 of them
    assert bad[candidates].mean() > 2 * bad.mean()


def test_the_batch_audit_catches_more_than_the_ranking_for_the_same_budget() -> None:
    fleet = audited_fleet(100, 2000, 0.2, 5, reference_contamination=0.1)
    bad = np.asarray(fleet.reference_labels, dtype=bool)
    ranking = audit_ranking(fleet.reference_windows, SHIPPED.reference_windows)
    asked: list[int] = []

    def auditor(rows: np.ndarray) -> np.ndarray:
        asked.extend(rows.tolist())
        return bad[rows]

    audit = run_audit(ranking, 0.15, auditor)
    assert audit.audited.size == 300 and len(set(asked)) == 300  # the budget, each agent once
    assert audit.audited.tolist() == asked and audit.confirmed.tolist() == bad[audit.audited].tolist()
    assert audit.confirmed.sum() > bad[ranking.candidates(0.15)].sum()
    kept = audit.kept_rows(bad.size)
    assert not bad[kept][np.isin(kept, audit.audited)].any()  # no confirmed agent is kept
    assert (~bad).sum() == (~bad[kept]).sum()  # and no clean agent leaves


def test_the_first_batches_follow_the_ranking_until_both_verdicts_are_seen() -> None:
    rng = np.random.default_rng(3)
    ranking = audit_ranking(_windows(rng, 200), 5)
    first = next_audit_batch(ranking, [], [], 10)
    assert first.tolist() == ranking.order[:10].tolist()
    second = next_audit_batch(ranking, first, np.zeros(10, dtype=bool), 10)
    assert second.tolist() == ranking.order[10:20].tolist()
    mixed = np.r_[np.ones(5, dtype=bool), np.zeros(5, dtype=bool)]
    third = next_audit_batch(ranking, first, mixed, 500)
    assert sorted(third.tolist()) == sorted(ranking.order[10:].tolist())  # every row left, none twice


def test_an_auditor_answering_the_wrong_shape_is_refused() -> None:
    ranking = audit_ranking(_windows(np.random.default_rng(4), 100), 5)
    with pytest.raises(BaselineError, match="auditor returned"):
        run_audit(ranking, 0.1, lambda rows: np.ones(rows.size + 1, dtype=bool))


def test_only_confirmed_rows_leave() -> None:
    kept = trim_confirmed(10, np.array([7, 2, 5]), np.array([True, False, True]))
    assert kept.tolist() == [0, 1, 2, 3, 4, 6, 8, 9]
    assert trim_confirmed(4, np.array([], dtype=int), np.array([], dtype=bool)).tolist() == [0, 1, 2, 3]


def test_label_trim_brings_back_recall_lost_to_a_contaminated_reference() -> None:
    # strength 1.3: a fleet of 300 where a clean reference finds the attacks (at the default strength 1
    # BH at 0.01 flags nothing here, trimmed or not), so the test isolates what contamination costs
    fleet = audited_fleet(300, 4000, 0.2, 8, reference_contamination=0.1, strength=1.3)
    ref, bad = fleet.reference_windows, np.asarray(fleet.reference_labels, dtype=bool)
    labels = np.asarray(fleet.labels, dtype=bool)

    def recall_and_fpr(rows: np.ndarray) -> tuple[float, float]:
        flags = np.asarray(build_detector(SHIPPED).fit(ref[rows]).detect(fleet.monitored_windows).flags, dtype=bool)
        return float(flags[labels].mean()), float(flags[~labels].mean())

    candidates = audit_ranking(ref, SHIPPED.reference_windows).candidates(0.3)
    trimmed = recall_and_fpr(trim_confirmed(ref.shape[0], candidates, bad[candidates]))
    untrimmed = recall_and_fpr(np.arange(ref.shape[0]))
    assert trimmed[0] >= untrimmed[0] + 0.2
    assert trimmed[1] <= 0.02


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: audit_ranking(np.full((50, 10, 3), np.nan), 5), "NaN"),
        (lambda: audit_ranking(np.zeros((50, 10)), 5), "shape"),
        (lambda: audit_ranking(np.random.default_rng(0).standard_normal((50, 10, 3)), 10), "reference_windows=10"),
        (lambda: audit_ranking(np.random.default_rng(0).standard_normal((5, 10, 3)), 5), "needs at least"),
        (lambda: audit_ranking(np.random.default_rng(0).standard_normal((50, 10, 3)), 5).candidates(0.0), "budget"),
        (lambda: audit_ranking(np.random.default_rng(0).standard_normal((50, 10, 3)), 5).candidates(1.5), "budget"),
        (lambda: trim_confirmed(5, np.array([1, 1]), np.array([True, False])), "twice"),
        (lambda: trim_confirmed(5, np.array([1, 9]), np.array([True, False])), "outside"),
        (lambda: trim_confirmed(5, np.array([1, 2]), np.array([1, 0])), "boolean"),
        (lambda: trim_confirmed(5, np.array([1, 2]), np.array([True])), "boolean"),
        (lambda: trim_confirmed(2, np.array([0, 1]), np.array([True, True])), "nothing is left"),
        (lambda: next_audit_batch(audit_ranking(np.random.default_rng(0).standard_normal((50, 10, 3)), 5), [], [], 0),
         "size"),
    ],
)
def test_bad_input_is_refused_with_its_reason(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BaselineError, match=message):
        call()


def test_far_out_agents_stay_ordered_by_distance_where_the_chi_square_tail_underflows() -> None:
    from scipy import stats

    from tcpkit.detect.label_trim import _chi2_logsf

    x = np.array([10.0, 500.0, 1e4, 1e5, 1e6])
    got = _chi2_logsf(x, 12)
    assert np.isfinite(got).all() and np.all(np.diff(got) < 0)
    assert got[:2] == pytest.approx(stats.chi2.logsf(x[:2], 12))
    # the series against scipy where both are finite (x = 1,000): within a hundredth of a nat
    assert _chi2_logsf(np.array([1000.0]), 12)[0] == pytest.approx(stats.chi2.logsf(1000.0, 12), abs=0.01)


def test_nothing_left_to_audit_is_an_empty_batch() -> None:
    rng = np.random.default_rng(4)
    ranking = audit_ranking(rng.standard_normal((30, 6, 3)), 3)
    everyone = np.arange(30, dtype=np.intp)
    assert next_audit_batch(ranking, everyone, everyone % 2 == 0, 5).size == 0


def test_collinear_features_are_left_out_of_the_robust_fit_not_shrunk_over() -> None:
    import warnings

    from tcpkit.detect.covariance import SingularDataWarning

    rng = np.random.default_rng(8)
    w = rng.standard_normal((400, 8, 4))
    w[:20, 4:] += 2.0  # a few agents that changed
    shares = np.concatenate([w, 1.0 - w.sum(axis=2, keepdims=True)], axis=2)  # a column the others determine
    with warnings.catch_warnings():
        warnings.simplefilter("error", SingularDataWarning)
        with_sum = audit_ranking(shares, 4)
    # the level block drops the determined column (its change, studentised per feature, is not determined)
    assert set(range(20)) <= set(with_sum.order[:25].tolist())
