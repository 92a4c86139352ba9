"""Mechanics of the adversaries in tcpkit.detect.attacks, against stub and real detectors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from tcpkit.detect.attacks import (
    ATTACKS,
    DEFAULT_BUDGETS,
    REFERENCE_BUDGETS,
    AttackConfig,
    AttackError,
    EvasionCurve,
    NaiveDetector,
    coordination_windows,
    drift_windows,
    evaluate_attacks,
    make_world,
    mimicry_windows,
    poisoned_windows,
    probe,
    robust_sd,
    shift_distance,
    whitebox_signs,
)
from tcpkit.detect.baseline import DetectionResult
from tcpkit.detect.config import DetectorConfig, build_detector
from tcpkit.detect.simulate import EASY_WORLD, FEATURE_NAMES

TINY = AttackConfig(n_reference=200, n_monitored=40, attacked_fraction=0.25, n_windows=10)


def _result(flags: np.ndarray) -> DetectionResult:
    p = np.where(flags, 0.0, 1.0)
    return DetectionResult(flags, p, p, p, (), 0.01, "bh", "stub")


class Never:
    """A detector that never flags: every attacker evades."""

    def fit(self, reference: np.ndarray) -> Never:
        return self

    def detect(self, windows: np.ndarray) -> DetectionResult:
        return _result(np.zeros(windows.shape[0], dtype=bool))


class Always(Never):
    """A detector that flags everyone: no attacker evades, every clean agent is a false alarm."""

    def detect(self, windows: np.ndarray) -> DetectionResult:
        return _result(np.ones(windows.shape[0], dtype=bool))


class Threshold(Never):
    """Flags an agent whose largest change exceeds ``t`` clean SDs on any feature."""

    def __init__(self, world, t: float, config: AttackConfig) -> None:
        self.world, self.t, self.config = world, t, config

    def detect(self, windows: np.ndarray) -> DetectionResult:
        r = self.config.reference_windows
        clean = self.world.monitored if np.array_equal(
            windows[self.world.clean], self.world.monitored[self.world.clean]
        ) else self.world.replay
        moved = (windows - clean)[:, r:].mean(axis=1) / self.world.change_sd
        return _result(np.abs(moved).max(axis=1) > self.t)


@pytest.fixture(scope="module")
def world():
    return make_world(3, TINY)


# -- units and the white-box direction ----------------------------------------------------


def test_units_are_the_clean_agents_robust_spread(world) -> None:
    r = TINY.reference_windows
    change = world.reference[:, r:].mean(axis=1) - world.reference[:, :r].mean(axis=1)
    np.testing.assert_allclose(world.change_sd, robust_sd(change))
    mad = np.median(np.abs(change - np.median(change, axis=0)), axis=0)
    np.testing.assert_allclose(world.change_sd, 1.4826 * mad)
    assert world.reference.shape == (200, 10, len(FEATURE_NAMES))
    assert world.attacked.size == 10 and world.poisoned.size == 20


def test_robust_sd_refuses_a_feature_without_spread() -> None:
    x = np.random.default_rng(0).standard_normal((50, 3))
    x[:, 1] = 2.0
    with pytest.raises(AttackError, match=r"features \[1\]"):
        robust_sd(x)


def test_whitebox_signs_minimise_the_norm_with_the_goal_negative() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 4))
    stat = rng.standard_normal((500, 4)) @ a
    sd = robust_sd(stat)
    signs = whitebox_signs(stat, sd, goal=2)
    assert signs[2] == -1
    precision = np.linalg.pinv(np.cov(stat / sd, rowvar=False))
    norms = {s: np.array(s) @ precision @ np.array(s)
             for s in itertools.product((-1.0, 1.0), repeat=4) if s[2] == -1}
    assert math.isclose(signs @ precision @ signs, min(norms.values()))


def test_whitebox_signs_follow_a_strong_correlation() -> None:
    z = np.random.default_rng(2).standard_normal((2000, 1))
    stat = np.hstack([z, z + 0.1 * np.random.default_rng(3).standard_normal((2000, 1))])
    assert whitebox_signs(stat, robust_sd(stat), goal=0).tolist() == [-1.0, -1.0]
    anti = stat * np.array([1.0, -1.0])
    assert whitebox_signs(anti, robust_sd(anti), goal=0).tolist() == [-1.0, 1.0]


# -- what each attack plays ----------------------------------------------------------------


def test_mimicry_moves_every_feature_by_the_budget_after_the_reference_period(world) -> None:
    w = mimicry_windows(world, 2.0, TINY)
    r = TINY.reference_windows
    diff = w - world.monitored
    np.testing.assert_array_equal(diff[world.clean], 0.0)
    np.testing.assert_array_equal(diff[world.attacked, :r], 0.0)
    np.testing.assert_allclose(np.abs(diff[world.attacked, r:]) / world.change_sd, 2.0)
    np.testing.assert_array_equal(np.sign(diff[world.attacked, r:]), np.broadcast_to(
        world.change_signs, diff[world.attacked, r:].shape))


def test_drift_grows_per_window_to_the_budget(world) -> None:
    w = drift_windows(world, 6.0, TINY)
    r, n_after = TINY.reference_windows, TINY.n_windows - TINY.reference_windows
    steps = (w - world.monitored)[world.attacked[0], r:] / world.change_unit
    np.testing.assert_allclose(steps, np.repeat((6.0 * np.arange(1, n_after + 1) / n_after)[:, None],
                                                len(FEATURE_NAMES), axis=1))


def test_poisoning_is_present_from_window_zero_in_both_fleets(world) -> None:
    reference, monitored = poisoned_windows(world, 3.0)
    np.testing.assert_allclose((reference - world.reference)[world.poisoned] / world.level_unit, 3.0)
    untouched = np.setdiff1d(np.arange(reference.shape[0]), world.poisoned)
    np.testing.assert_array_equal(reference[untouched], world.reference[untouched])
    np.testing.assert_allclose((monitored - world.monitored)[world.attacked] / world.level_unit, 3.0)
    r = TINY.reference_windows
    change = monitored[:, r:].mean(1) - monitored[:, :r].mean(1)
    before = world.monitored[:, r:].mean(1) - world.monitored[:, :r].mean(1)
    np.testing.assert_allclose(change, before, atol=1e-9 * np.abs(before).max())


def test_coordination_groups_share_direction_and_shock(world) -> None:
    r = TINY.reference_windows
    for k in (1, 2, 5):
        w = coordination_windows(world, k, TINY)
        offsets = ((w - world.monitored)[world.attacked, r:] / world.change_unit)[:, :, 0]
        groups = np.arange(world.attacked.size) // k
        for g in np.unique(groups):
            members = offsets[groups == g]
            np.testing.assert_allclose(members, np.broadcast_to(members[0], members.shape))
        # the shock averages out: the mean move is the collective shift split k ways
        assert abs(offsets.mean() - TINY.coordination_total / k) < 4 * TINY.coordination_shock


def test_probing_bisects_to_the_boundary_of_the_decision(world) -> None:
    det = Threshold(world, 2.3, TINY)
    known = probe(det, world, 12, TINY)
    assert known.shape == (13, world.attacked.size)
    assert np.all(np.diff(known, axis=0) >= 0)  # what is known to pass only grows
    assert np.all(known[-1] <= 2.3) and np.all(2.3 - known[-1] <= TINY.probe_max / 2**12)
    np.testing.assert_array_equal(probe(Always(), world, 6, TINY)[-1], 0.0)


# -- the sweep ---------------------------------------------------------------------------


def test_a_detector_that_never_flags_is_evaded_everywhere() -> None:
    res = evaluate_attacks({"never": Never}, [0], config=TINY)
    for attack in ATTACKS:
        c = res.curves[attack, "never"]
        assert all(r == 1.0 for r in c.rates)  # a prober's first query already passes
        assert REFERENCE_BUDGETS[attack] in c.budgets
    assert res.false_alarms["never"].rate == 0.0


def test_a_detector_that_flags_everyone_is_never_evaded() -> None:
    res = evaluate_attacks({"always": Always}, [0, 1], config=TINY, attacks=["mimicry", "probing"])
    assert all(r == 0.0 for c in res.curves.values() for r in c.rates)
    fa = res.false_alarms["always"]
    runs = len(res.curves["mimicry", "always"].budgets) + len(res.curves["probing", "always"].budgets)
    assert runs == len(DEFAULT_BUDGETS["mimicry"]) + len(DEFAULT_BUDGETS["probing"])
    assert fa.rate == 1.0 and fa.clean == 2 * runs * 30  # 2 seeds, 30 clean agents per run


def test_the_threshold_detector_is_evaded_below_its_threshold_only() -> None:
    world = make_world(0, TINY)
    res = evaluate_attacks({"t": lambda: Threshold(world, 2.5, TINY)}, [0], config=TINY,
                           attacks=["mimicry"], budgets={"mimicry": [1.0, 2.0, 3.0, 4.0]})
    c = res.curves["mimicry", "t"]
    assert c.at(2.0)[0] == 1.0 and c.at(3.0)[0] == 0.0
    assert 2.0 <= c.half_budget <= 3.0


def test_same_seeds_same_curves() -> None:
    a = evaluate_attacks({"naive": NaiveDetector}, [4], config=TINY, attacks=["mimicry"])
    b = evaluate_attacks({"naive": NaiveDetector}, [4], config=TINY, attacks=["mimicry"])
    assert a.curves == b.curves


def test_half_budget_of_falling_and_rising_curves() -> None:
    def curve(attack: str, budgets: tuple[float, ...], rates: tuple[float, ...]) -> EvasionCurve:
        n = len(budgets)
        return EvasionCurve(attack, "x", budgets, (0,) * n, (1,) * n, rates, rates, rates,
                            tuple((r,) for r in rates), (0,), budgets[-1])

    assert curve("mimicry", (0, 1, 2), (1.0, 0.7, 0.1)).half_budget == pytest.approx(4 / 3)
    assert curve("mimicry", (0, 1), (1.0, 0.9)).half_budget == math.inf
    assert curve("coordination", (1, 2, 4), (0.0, 0.6, 1.0)).half_budget == 2.0
    assert curve("probing", (1, 2), (0.0, 0.5)).half_budget == math.inf


# -- the shipped detector and the naive one ---------------------------------------------------


def test_shipped_and_naive_detectors_catch_a_gross_mimic_and_spare_clean_agents() -> None:
    # the stationary world (no benign change) this check was written for
    cfg = AttackConfig(n_reference=1500, n_monitored=100, attacked_fraction=0.3, world=EASY_WORLD)
    shipped = DetectorConfig(features=tuple(FEATURE_NAMES))
    res = evaluate_attacks(
        {"shipped": lambda: build_detector(shipped), "naive": NaiveDetector}, [5], config=cfg,
        attacks=["mimicry"], budgets={"mimicry": [0.0, 30.0]},
    )
    for det in ("shipped", "naive"):
        c = res.curves["mimicry", det]
        assert c.at(0.0)[0] == 1.0  # nobody moved: nobody caught
        assert c.at(30.0)[0] <= 0.1
    assert res.false_alarms["shipped"].rate <= 0.05


def test_naive_detector_is_a_chi_square_test_of_the_change() -> None:
    world = make_world(1, TINY)
    det = NaiveDetector(alpha=0.05, fdr="none", reference_windows=TINY.reference_windows)
    res = det.fit(world.reference).detect(world.monitored)
    assert res.pvalue_method == "chi-square" and res.flags.shape == (40,)
    moved = det.detect(mimicry_windows(world, 50.0, TINY))
    assert moved.flags[world.attacked].all()
    with pytest.raises(AttackError, match="not fitted"):
        NaiveDetector().detect(world.monitored)


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"attacked_fraction": 0.0}, "attacked_fraction"),
        ({"attacked_fraction": 0.001}, "gives no attacker"),
        ({"poison_fraction": 0.5}, "poison_fraction"),
        ({"probe_goal": 20.0}, "probe_goal"),
        ({"reference_windows": 20}, "reference_windows"),
        ({"n_reference": 10}, "n_reference"),
        ({"world": {"seed": 3}}, "may not set"),
        ({"coordination_shock": -1.0}, "coordination_shock"),
        ({"n_monitored": True}, "n_monitored"),
    ],
)
def test_bad_config_raises_one_clear_error(kwargs: dict, match: str) -> None:
    with pytest.raises(AttackError, match=match):
        AttackConfig(**kwargs)


def test_from_mapping_names_the_unknown_key() -> None:
    with pytest.raises(AttackError, match="'moat'"):
        AttackConfig.from_mapping({"moat": 3})
    assert AttackConfig.from_mapping({"n_monitored": 50}).n_monitored == 50


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"attacks": ["phishing"]}, "unknown attack"),
        ({"budgets": {"phishing": [1]}}, "unknown attack"),
        ({"budgets": {"probing": [1.5]}}, "whole number"),
        ({"budgets": {"mimicry": [-1.0]}}, "mimicry budget"),
        ({"seeds": []}, "seeds is empty"),
        ({"seeds": [-1]}, "seed"),
    ],
)
def test_bad_sweeps_raise_one_clear_error(kwargs: dict, match: str) -> None:
    seeds = kwargs.pop("seeds", [0])
    with pytest.raises(AttackError, match=match):
        evaluate_attacks({"never": Never}, seeds, config=TINY, **kwargs)


def test_a_detector_with_wrong_flags_or_no_fit_result_is_refused() -> None:
    class Short(Never):
        def detect(self, windows: np.ndarray) -> DetectionResult:
            return _result(np.zeros(3, dtype=bool))

    class NoSelf(Never):
        def fit(self, reference: np.ndarray):  # type: ignore[override]
            return None

    with pytest.raises(AttackError, match="flags of shape"):
        evaluate_attacks({"short": Short}, [0], config=TINY, attacks=["mimicry"])
    with pytest.raises(AttackError, match="must return the fitted detector"):
        evaluate_attacks({"noself": NoSelf}, [0], config=TINY, attacks=["mimicry"])


def test_shift_distance_is_the_mahalanobis_length_of_the_unit_shift() -> None:
    stat = np.random.default_rng(6).standard_normal((20000, 4))
    sd = robust_sd(stat)
    assert shift_distance(stat, sd, np.ones(4)) == pytest.approx(2.0, rel=0.03)


def test_poisoning_refits_a_fresh_detector_per_budget_and_the_clean_fit_only_when_needed() -> None:
    made: list[Never] = []

    def factory() -> Never:
        made.append(Never())
        return made[-1]

    evaluate_attacks({"n": factory}, [0], config=TINY, attacks=["poisoning"],
                     budgets={"poisoning": [1.0, 3.0]})
    assert len(made) == 2  # one per poisoned budget, no clean fit
    made.clear()
    evaluate_attacks({"n": factory}, [0], config=TINY, attacks=["poisoning", "mimicry"],
                     budgets={"poisoning": [0.0, 3.0], "mimicry": [3.0]})
    assert len(made) == 2  # the clean fit (budget 0 and mimicry) and the poisoned one


def test_seed_interval_resamples_worlds_not_agents() -> None:
    rates = (0.0, 1.0, 0.0, 1.0)
    c = EvasionCurve("mimicry", "x", (3.0,), (20,), (40,), (0.5,), (0.35,), (0.65,),
                     (rates,), (0, 1, 2, 3), 3.0)
    low, high = c.seed_interval(3.0)
    assert low <= 0.25 and high >= 0.75  # far wider than the Wilson interval over agents
    one = EvasionCurve("mimicry", "x", (3.0,), (5,), (10,), (0.5,), (0.2,), (0.8,), ((0.5,),), (0,), 3.0)
    assert all(math.isnan(x) for x in one.seed_interval(3.0))
    with pytest.raises(AttackError, match="not swept"):
        c.seed_interval(1.0)


def test_seeds_spread_over_worker_processes_give_the_same_evaluation() -> None:
    import functools

    detectors = {"naive": NaiveDetector, "shipped": functools.partial(build_detector, DetectorConfig(alpha=0.1))}
    attacks = ["mimicry", "poisoning", "probing"]
    serial = evaluate_attacks(detectors, [4, 5, 6], config=TINY, attacks=attacks)
    spread = evaluate_attacks(detectors, [4, 5, 6], config=TINY, attacks=attacks, workers=2)
    assert spread.curves == serial.curves and spread.false_alarms == serial.false_alarms
    assert spread.probe_shift == serial.probe_shift
    with pytest.raises(AttackError, match="needs detector factories a worker process can import"):
        evaluate_attacks({"l": lambda: NaiveDetector()}, [4, 5], config=TINY, attacks=["mimicry"], workers=2)
    with pytest.raises(AttackError, match="workers=0"):
        evaluate_attacks(detectors, [4], config=TINY, workers=0)


def test_the_unattacked_fleet_is_judged_once_for_every_budget_zero() -> None:
    calls: list[int] = []

    class Counting(Never):
        def detect(self, windows: np.ndarray) -> DetectionResult:
            calls.append(windows.shape[0])
            return super().detect(windows)

    evaluate_attacks({"c": Counting}, [0], config=TINY, attacks=["mimicry", "drift", "poisoning"],
                     budgets={"mimicry": [0.0, 3.0], "drift": [0.0, 6.0], "poisoning": [0.0, 3.0]})
    assert len(calls) == 4  # one unattacked call shared by the three zero budgets, one per attacked budget


def test_curve_seeds_judge_the_off_gate_budgets_on_fewer_seeds_and_leave_the_gated_numbers_alone() -> None:
    import functools

    detectors = {"naive": NaiveDetector, "shipped": functools.partial(build_detector, DetectorConfig(alpha=0.1))}
    attacks = ["mimicry", "poisoning", "drift", "probing", "coordination"]
    full = evaluate_attacks(detectors, [4, 5, 6], config=TINY, attacks=attacks)
    short = evaluate_attacks(detectors, [4, 5, 6], config=TINY, attacks=attacks, curve_seeds=1)
    for key, c in full.curves.items():
        s = short.curves[key]
        ref = c.budgets.index(c.reference_budget)
        # the gated budget: every seed, the same counts and the same per-seed rates
        assert (s.evaded[ref], s.trials[ref], s.per_seed[ref]) == (c.evaded[ref], c.trials[ref], c.per_seed[ref])
        assert s.seed_interval(s.reference_budget) == c.seed_interval(c.reference_budget)
        for i, b in enumerate(c.budgets):
            if i == ref:
                continue
            # an off-gate budget: the first seed only, as judged in the full run
            assert s.trials[i] == c.trials[i] // 3 and s.per_seed[i][0] == c.per_seed[i][0]
            assert all(math.isnan(x) for x in s.per_seed[i][1:])
            assert all(math.isnan(x) for x in s.seed_interval(b))
        assert "off-gate budgets on 1" in s.summary() and " - " in s.summary()
    gated = {k: v for k, v in full.metrics().items() if not k.startswith(("half_", "false_alarm", "clean_"))}
    assert {k: short.metrics()[k] for k in gated} == gated
    assert short.false_alarms["naive"].clean < full.false_alarms["naive"].clean  # fewer fleets judged


@pytest.mark.parametrize("curve_seeds", [0, -1, 1.5, True, "2"])
def test_a_bad_curve_seeds_is_one_clear_error(curve_seeds: object) -> None:
    with pytest.raises(AttackError, match="curve_seeds="):
        evaluate_attacks({"never": Never}, [0], config=TINY, curve_seeds=curve_seeds)  # type: ignore[arg-type]
