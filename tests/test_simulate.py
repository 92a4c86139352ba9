"""Tests of tcpkit.detect.simulate: reproducibility, shapes, compromise effects, validation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from tcpkit.detect.seeds import TUNING_SEEDS, is_tuning_seed
from tcpkit.detect.simulate import (
    _T_CLASS,
    ATTACKS,
    CATALOGUE,
    EASY_WORLD,
    FEATURE_NAMES,
    RISK_CLASSES,
    RISK_LEVELS,
    SimulatedNetwork,
    _draw_templates,
    simulate_network,
)

SMALL: dict[str, Any] = {"n_agents": 210, "n_windows": 6, "baseline_windows": 2, "seed": 3}
# Half of the agents compromised: 100 per attack type against 700 honest agents.
STAT: dict[str, Any] = {
    "n_agents": 1400,
    "compromised_fraction": 0.5,
    "n_windows": 8,
    "baseline_windows": 3,
    "seed": 11,
}


# The first version's stationary world with gross compromises: where effects are tested
# for their existence and direction (the default world hides them on purpose).
EASY: dict[str, Any] = {**STAT, **EASY_WORLD}


@pytest.fixture(scope="module")
def attacked() -> SimulatedNetwork:
    return simulate_network(**EASY)


@pytest.fixture(scope="module")
def clean() -> SimulatedNetwork:
    return simulate_network(**{**EASY, "compromised_fraction": 0.0})


@pytest.fixture(scope="module")
def attacked_default() -> SimulatedNetwork:
    return simulate_network(**STAT)


@pytest.fixture(scope="module")
def clean_default() -> SimulatedNetwork:
    return simulate_network(**{**STAT, "compromised_fraction": 0.0})


def test_tests_use_tuning_seeds_only() -> None:
    assert is_tuning_seed(SMALL["seed"]) and is_tuning_seed(STAT["seed"])


def col(name: str) -> int:
    return FEATURE_NAMES.index(name)


# --------------------------------------------------------------------------- reproducibility


def test_same_seed_is_bit_identical() -> None:
    a = simulate_network(**SMALL)
    b = simulate_network(**SMALL)
    for field in ("windows", "features", "baseline_features", "labels", "node"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype
        assert x.tobytes() == y.tobytes(), field
    assert list(a.attack) == list(b.attack)
    assert a.params == b.params and a.attack_start == b.attack_start


def test_different_seeds_differ() -> None:
    a = simulate_network(**SMALL)
    b = simulate_network(**{**SMALL, "seed": 4})
    assert not np.array_equal(a.windows, b.windows)
    assert not np.array_equal(a.labels, b.labels)


def test_first_windows_do_not_depend_on_n_windows() -> None:
    a = simulate_network(**SMALL)
    b = simulate_network(**{**SMALL, "n_windows": 9})
    np.testing.assert_array_equal(a.windows, b.windows[:, : a.windows.shape[1]])


# --------------------------------------------------------------------------- shapes and content


def test_shapes_dtypes_and_ground_truth() -> None:
    net = simulate_network(**SMALL, n_nodes=7, compromised_fraction=0.2)
    n, w, d = 210, 6, len(FEATURE_NAMES)
    assert d >= 8 and net.feature_names == FEATURE_NAMES
    assert net.windows.shape == (n, w, d) and net.windows.dtype == np.float64
    assert net.features.shape == (n, d) and net.features.dtype == np.float64
    assert net.baseline_features.shape == (n, d) and net.baseline_features.dtype == np.float64
    assert np.all(np.isfinite(net.windows))
    np.testing.assert_allclose(net.features, net.windows[:, 2:].mean(axis=1))
    np.testing.assert_allclose(net.baseline_features, net.windows[:, :2].mean(axis=1))
    assert net.labels.dtype == np.bool_ and net.labels.sum() == round(0.2 * n)
    assert net.attack.dtype == object
    assert all((a is None) != lab for a, lab in zip(net.attack, net.labels, strict=True))
    assert np.issubdtype(net.node.dtype, np.integer)
    assert set(net.node.tolist()) == set(range(7))
    assert np.bincount(net.node).max() - np.bincount(net.node).min() <= 1
    # round robin: every type present, counts within one of each other
    counts = [int(np.sum(net.attack == a)) for a in ATTACKS]
    assert min(counts) >= 1 and max(counts) - min(counts) <= 1
    assert net.attack_start == 2 and net.seed == 3
    assert net.params["attack_start"] == 2 and net.params["attacks"] == ATTACKS
    assert set(net.params) >= {
        "difficulty",
        "noise_df",
        "n_agents",
        "n_nodes",
        "compromised_fraction",
        "attacks",
        "strength",
        "commands_per_window",
        "n_windows",
        "baseline_windows",
        "seed",
    }
    with pytest.raises(ValueError):
        net.features[0, 0] = 1.0  # read-only value
    # bounded features
    acc = net.windows[..., col("accuracy")]
    err = net.windows[..., col("error_rate")]
    assert np.all((acc >= 0) & (acc <= 1)) and np.all((err >= 0) & (err <= 1))
    assert np.all(net.windows[..., col("latency_p95")] >= 0)


def test_catalogue_has_all_classes_and_every_window_sees_them() -> None:
    assert len(CATALOGUE) >= 15
    assert {t.risk_class for t in CATALOGUE} == set(RISK_CLASSES)
    assert RISK_LEVELS == {
        "SAFE": 0.1,
        "NETWORK": 0.4,
        "PRIVESC": 0.7,
        "DESTRUCTIVE": 0.9,
        "CRITICAL": 0.95,
    }
    assert "rm" in {t.family for t in CATALOGUE}
    tmpl = _draw_templates(np.random.default_rng(0), 300, 5)
    cls = _T_CLASS[tmpl]
    assert all(set(row.tolist()) == set(range(5)) for row in cls)
    # the weighted slots also reach every class
    tmpl = _draw_templates(np.random.default_rng(0), 300, 50)
    assert set(_T_CLASS[tmpl[:, 5:]].ravel().tolist()) == set(range(5))


def test_subset_of_attacks_and_repeats_weight_the_mix() -> None:
    net = simulate_network(
        n_agents=300,
        compromised_fraction=0.3,
        attacks=("mimicry", "mimicry", "poisoning"),
        n_windows=4,
        baseline_windows=2,
    )
    assert int(np.sum(net.attack == "mimicry")) == 60
    assert int(np.sum(net.attack == "poisoning")) == 30
    single = simulate_network(**SMALL, compromised_fraction=0.1, attacks="fp_inflation")
    assert set(single.attack[single.labels]) == {"fp_inflation"}


# --------------------------------------------------------------------------- compromise effects

# (attack, feature, direction): the feature each compromise must move, one-sided.
EFFECTS = [
    ("gradual_drift", "bias", "less"),
    ("fp_inflation", "bias_safe", "greater"),
    ("fn_suppression", "bias_high_risk", "less"),
    ("semantic_hijack", "accuracy", "less"),
    ("semantic_hijack", "family_underrating", "greater"),
    ("mimicry", "family_underrating", "greater"),
    ("coordination", "bias_safe", "greater"),
    ("coordination", "bias_high_risk", "less"),
    ("mimicry", "bias_high_risk", "less"),
    ("poisoning", "bias_high_risk", "less"),
]


@pytest.mark.parametrize(("attack", "feature", "direction"), EFFECTS)
def test_compromise_moves_its_feature(
    attacked: SimulatedNetwork, attack: str, feature: str, direction: str
) -> None:
    bad = attacked.features[attacked.attack == attack, col(feature)]
    honest = attacked.features[~attacked.labels, col(feature)]
    assert bad.size >= 90
    p = stats.mannwhitneyu(bad, honest, alternative=direction).pvalue
    assert p < 1e-3, (attack, feature, p)


@pytest.mark.parametrize("attack", [a for a in ATTACKS if a != "poisoning"])
def test_compromise_waits_for_attack_start(
    attacked_default: SimulatedNetwork, clean_default: SimulatedNetwork, attack: str
) -> None:
    attacked, clean = attacked_default, clean_default
    rows = attacked.attack == attack
    start = attacked.attack_start
    np.testing.assert_array_equal(attacked.windows[rows, :start], clean.windows[rows, :start])
    assert not np.array_equal(attacked.windows[rows, start:], clean.windows[rows, start:])


def test_poisoning_is_already_in_the_baseline(attacked: SimulatedNetwork) -> None:
    bad = attacked.baseline_features[attacked.attack == "poisoning", col("bias_high_risk")]
    honest = attacked.baseline_features[~attacked.labels, col("bias_high_risk")]
    assert stats.mannwhitneyu(bad, honest, alternative="less").pvalue < 1e-3
    # and it does not change between baseline and detection windows
    rows = attacked.attack == "poisoning"
    diff = (
        attacked.features[rows, col("bias_high_risk")]
        - attacked.baseline_features[rows, col("bias_high_risk")]
    )
    assert stats.ttest_1samp(diff, 0.0).pvalue > 1e-3


def test_gradual_drift_grows_with_the_clock(attacked: SimulatedNetwork) -> None:
    rows = attacked.attack == "gradual_drift"
    early = attacked.windows[rows, attacked.attack_start, col("bias")]
    late = attacked.windows[rows, -1, col("bias")]
    assert stats.wilcoxon(late - early, alternative="less").pvalue < 1e-3


def test_coordinated_groups_move_together(attacked: SimulatedNetwork) -> None:
    """Members of one group share a target and per-window shocks: closer than across groups."""
    from tcpkit.detect.simulate import COORDINATION_GROUP_SIZE

    members = np.flatnonzero(attacked.attack == "coordination")  # groups in index order
    x = attacked.windows[members, attacked.attack_start :, col("bias_safe")]
    groups = np.arange(members.size) // COORDINATION_GROUP_SIZE
    same = groups[:, None] == groups[None, :]
    dist = np.abs(x[:, None, :] - x[None, :, :]).mean(axis=2)
    off_diag = ~np.eye(members.size, dtype=bool)
    within, across = dist[same & off_diag], dist[~same]
    assert stats.mannwhitneyu(within, across, alternative="less").pvalue < 1e-3


def test_mimicry_keeps_accuracy_and_bias_normal(
    attacked: SimulatedNetwork, clean: SimulatedNetwork
) -> None:
    """Paired with the same agents' honest run: mean shift below a quarter of the honest spread."""
    rows = attacked.attack == "mimicry"
    for name in ("accuracy", "bias"):
        shift = attacked.features[rows, col(name)] - clean.features[rows, col(name)]
        spread = clean.features[:, col(name)].std()
        assert abs(shift.mean()) < 0.25 * spread, (name, shift.mean(), spread)
    # ... while its target class is clearly corrupted (relative to the same agents)
    shift = (
        attacked.features[rows, col("bias_high_risk")] - clean.features[rows, col("bias_high_risk")]
    )
    assert shift.mean() < -2.0 * clean.features[:, col("bias_high_risk")].std()


def test_honest_agents_unaffected_by_attacks(
    attacked: SimulatedNetwork,
    clean: SimulatedNetwork,
    attacked_default: SimulatedNetwork,
    clean_default: SimulatedNetwork,
) -> None:
    # same seed: an honest agent's behaviour does not depend on who else is compromised
    for bad, good in ((attacked, clean), (attacked_default, clean_default)):
        honest = ~bad.labels
        np.testing.assert_array_equal(bad.windows[honest], good.windows[honest])
    # and in the stationary world the honest population is distributed like a clean
    # network drawn with another seed (in the default world each seed has its own
    # regime changes, so populations of two seeds differ on purpose)
    honest = ~attacked.labels
    other = simulate_network(**{**EASY, "compromised_fraction": 0.0, "seed": 12})
    for j, name in enumerate(FEATURE_NAMES):
        p = stats.ks_2samp(attacked.features[honest, j], other.features[:, j]).pvalue
        assert p > 1e-3, (name, p)


def test_confidence_and_latency_untouched_at_easy(
    attacked: SimulatedNetwork, clean: SimulatedNetwork
) -> None:
    cols = [col(n) for n in ("confidence_mean", "confidence_std", "latency_mean", "latency_p95")]
    np.testing.assert_array_equal(attacked.windows[..., cols], clean.windows[..., cols])


@pytest.mark.parametrize("attack", ATTACKS)
def test_compromised_agents_answer_faster_and_more_confidently(
    attacked_default: SimulatedNetwork, clean_default: SimulatedNetwork, attack: str
) -> None:
    """By default a compromised agent stops deliberating; the mimic hides that too."""
    rows = attacked_default.attack == attack
    conf = attacked_default.features[rows, col("confidence_mean")] - clean_default.features[
        rows, col("confidence_mean")
    ]
    lat = attacked_default.features[rows, col("latency_mean")] / clean_default.features[
        rows, col("latency_mean")
    ]
    if attack == "mimicry":
        np.testing.assert_array_equal(conf, 0.0)
        np.testing.assert_array_equal(lat, 1.0)
    else:
        # faster: a few per cent on the mean (drift ramps up; most of the effect is the steadier pace)
        assert np.median(conf) > 0.005 and np.median(lat) < 0.98, (np.median(conf), np.median(lat))


@pytest.mark.parametrize("attack", ATTACKS)
def test_every_compromise_moves_at_least_two_features(
    attacked_default: SimulatedNetwork, clean_default: SimulatedNetwork, attack: str
) -> None:
    """Paired with the same agents' honest run, at the default difficulty."""
    rows = attacked_default.attack == attack
    moved = 0
    for j in range(len(FEATURE_NAMES)):
        diff = attacked_default.features[rows, j] - clean_default.features[rows, j]
        if np.any(diff != 0) and stats.wilcoxon(diff).pvalue < 1e-6:
            moved += 1
    assert moved >= 2, (attack, moved)


@pytest.mark.parametrize("world", ["easy", "default"])
def test_strength_scales_the_shifts(world: str) -> None:
    kw = {**(EASY if world == "easy" else STAT), "n_agents": 700}
    zero = simulate_network(**kw, strength=0.0)
    base = simulate_network(**{**kw, "compromised_fraction": 0.0})
    np.testing.assert_array_equal(zero.windows, base.windows)
    half = simulate_network(**kw, strength=0.5)
    full = simulate_network(**kw, strength=1.0)
    rows = full.attack == "fn_suppression"
    j = col("bias_high_risk")
    d_half = (half.features[rows, j] - base.features[rows, j]).mean()
    d_full = (full.features[rows, j] - base.features[rows, j]).mean()
    assert d_full < d_half < 0
    assert d_half == pytest.approx(d_full / 2, rel=0.15 if world == "easy" else 0.3)


def test_explicit_attack_start() -> None:
    net = simulate_network(**SMALL, compromised_fraction=0.5, attack_start=4)
    ref = simulate_network(**SMALL, compromised_fraction=0.0)
    rows = net.labels & (net.attack != "poisoning")
    np.testing.assert_array_equal(net.windows[rows, :4], ref.windows[rows, :4])
    assert net.attack_start == 4 and net.params["attack_start"] == 4


# --------------------------------------------------------------------------- validation

BAD = [
    ({"n_agents": 0}, "n_agents"),
    ({"n_agents": -5}, "n_agents"),
    ({"n_agents": 2.5}, "n_agents"),
    ({"n_agents": True}, "n_agents"),
    ({"n_nodes": 0}, "n_nodes"),
    ({"n_agents": 5, "n_nodes": 6}, "n_nodes"),
    ({"compromised_fraction": -0.1}, "compromised_fraction"),
    ({"compromised_fraction": 1.5}, "compromised_fraction"),
    ({"compromised_fraction": float("nan")}, "compromised_fraction"),
    ({"attacks": ("mimicry", "teleport")}, "attacks"),
    ({"attacks": ()}, "attacks"),
    ({"attacks": 3}, "attacks"),
    ({"strength": -1.0}, "strength"),
    ({"strength": float("inf")}, "strength"),
    ({"commands_per_window": 0}, "commands_per_window"),
    ({"commands_per_window": 4}, "commands_per_window"),
    ({"n_windows": 1}, "n_windows"),
    ({"baseline_windows": 0}, "baseline_windows"),
    ({"n_windows": 5, "baseline_windows": 5}, "baseline_windows"),
    ({"attack_start": -1}, "attack_start"),
    ({"n_windows": 5, "baseline_windows": 2, "attack_start": 5}, "attack_start"),
    ({"seed": -1}, "seed"),
    ({"seed": "x"}, "seed"),
    ({"difficulty": "brutal"}, "difficulty"),
    ({"difficulty": 1}, "difficulty"),
    ({"fleet_regime_every": -1}, "fleet_regime_every"),
    ({"node_regime_rate": 1.5}, "node_regime_rate"),
    ({"regime_scale": -0.1}, "regime_scale"),
    ({"benign_drift": float("nan")}, "benign_drift"),
    ({"noise_df": 2.0}, "noise_df"),
    ({"noise_df": "t"}, "noise_df"),
    ({"trait_correlation": 1.0}, "trait_correlation"),
    ({"trait_correlation": -0.2}, "trait_correlation"),
    ({"diurnal_amplitude": 0.95}, "diurnal_amplitude"),
    ({"workload_shift": 1.2}, "workload_shift"),
]


@pytest.mark.parametrize(("kwargs", "name"), BAD, ids=[f"{n}-{i}" for i, (_, n) in enumerate(BAD)])
def test_bad_parameter_is_named(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name) as info:
        simulate_network(**{"n_agents": 20, "n_windows": 4, "baseline_windows": 2, **kwargs})
    message = str(info.value)
    assert any(word in message for word in ("[", "(", ">=", "allowed", "one of")), message


def test_empty_attacks_fine_without_compromise() -> None:
    net = simulate_network(
        n_agents=10, compromised_fraction=0.0, attacks=(), n_windows=3, baseline_windows=1
    )
    assert not net.labels.any()


@settings(max_examples=15, deadline=None)
@given(
    n_agents=st.integers(1, 40),
    fraction=st.floats(0.0, 1.0),
    cpw=st.integers(5, 12),
    n_windows=st.integers(2, 5),
    strength=st.floats(0.0, 3.0),
    seed=st.integers(TUNING_SEEDS.start, TUNING_SEEDS.stop - 1),
)
def test_any_valid_parameters_give_finite_consistent_output(
    n_agents: int, fraction: float, cpw: int, n_windows: int, strength: float, seed: int
) -> None:
    net = simulate_network(
        n_agents=n_agents,
        n_nodes=1,
        compromised_fraction=fraction,
        strength=strength,
        commands_per_window=cpw,
        n_windows=n_windows,
        baseline_windows=1,
        seed=seed,
    )
    assert net.windows.shape == (n_agents, n_windows, len(FEATURE_NAMES))
    assert np.all(np.isfinite(net.windows))
    assert int(net.labels.sum()) == round(fraction * n_agents)
    acc = net.windows[..., FEATURE_NAMES.index("accuracy")]
    assert np.all((acc >= 0.0) & (acc <= 1.0))


def test_network_pickles_for_workers() -> None:
    import pickle

    net = simulate_network(**SMALL, compromised_fraction=0.2)
    back = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(back.windows, net.windows)
    assert list(back.attack) == list(net.attack) and back.params == net.params


def test_family_underrating_matches_its_definition() -> None:
    """The vectorised feature equals a per-command loop over the same draws."""
    from tcpkit.detect import simulate as sim

    rng_args = dict(
        lo=0, hi=7, cpw=23,
        class_offset=np.full((7, 5), -0.04), class_noise=np.full((7, 5), 0.06),
        conf_level=np.full(7, 0.85), conf_spread=np.full(7, 0.15), lat_scale=np.full(7, 120.0),
    )
    out = sim._window_features(np.random.default_rng(5), per_command=[], **rng_args)
    # replay the same draws to recover templates and predictions
    rng = np.random.default_rng(5)
    tmpl = sim._draw_templates(rng, 7, 23)
    z = rng.standard_normal((7, 23), dtype=np.float32)
    true = sim._T_LEVEL[tmpl]
    pred = np.clip(true - 0.04 + 0.06 * sim._T_DIFFICULTY[tmpl] * z, 0.0, 1.0)
    fam, cls = sim._T_FAMILY[tmpl], sim._T_CLASS[tmpl]
    for a in range(7):
        energy = 0.0
        for f, c in set(zip(fam[a].tolist(), cls[a].tolist(), strict=True)):
            cell = (fam[a] == f) & (cls[a] == c)
            energy += max(-(pred[a] - true[a])[cell].sum(), 0.0) ** 2 / cell.sum()
        assert energy > 0.0
        assert out[a, col("family_underrating")] == pytest.approx(energy, rel=1e-9, abs=1e-12)


def test_family_underrating_is_one_sided() -> None:
    """Risk rated too high on every command gives no under-rating energy."""
    from tcpkit.detect import simulate as sim

    out = sim._window_features(
        np.random.default_rng(1), lo=0, hi=5, cpw=20,
        class_offset=np.full((5, 5), 0.5), class_noise=np.zeros((5, 5)),
        conf_level=np.full(5, 0.85), conf_spread=np.full(5, 0.15), lat_scale=np.full(5, 120.0),
        per_command=[],
    )
    np.testing.assert_array_equal(out[:, col("family_underrating")], 0.0)
