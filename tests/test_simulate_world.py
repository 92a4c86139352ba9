"""Tests of the harder world: benign change, difficulty, separability, events, seed ranges."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from tcpkit.detect import simulate as sim
from tcpkit.detect.seeds import (
    GATE_SEEDS,
    TUNING_SEEDS,
    check_tuning_seed,
    gate_seeds,
    is_gate_seed,
    is_tuning_seed,
)
from tcpkit.detect.separability import separability_table
from tcpkit.detect.sim_events import EVENT_SCHEMA, LABEL_SCHEMA, template_of
from tcpkit.detect.simulate import (
    ATTACKS,
    CALM_WORLD,
    EASY_WORLD,
    FEATURE_NAMES,
    simulate_events,
    simulate_network,
)

EV: dict[str, Any] = {
    "n_agents": 240,
    "n_nodes": 6,
    "compromised_fraction": 0.3,
    "n_windows": 6,
    "baseline_windows": 2,
    "commands_per_window": 30,
    "seed": 21,
}


def col(name: str) -> int:
    return FEATURE_NAMES.index(name)


@pytest.fixture(scope="module")
def events() -> Any:
    return simulate_events(**EV)


# --------------------------------------------------------------------------- seeds


def test_seed_ranges_are_disjoint_and_checked() -> None:
    assert set(TUNING_SEEDS).isdisjoint(range(GATE_SEEDS.start, GATE_SEEDS.start + 10))
    assert TUNING_SEEDS.stop <= GATE_SEEDS.start
    assert is_gate_seed(GATE_SEEDS.start) and not is_gate_seed(0)
    assert is_tuning_seed(0) and not is_tuning_seed(GATE_SEEDS.start)
    assert all(is_gate_seed(s) for s in gate_seeds(5))
    assert check_tuning_seed(EV["seed"]) == EV["seed"]
    with pytest.raises(ValueError, match="held-out gate seed"):
        check_tuning_seed(GATE_SEEDS.start + 3)
    with pytest.raises(ValueError, match="seed"):
        is_gate_seed(-1)
    with pytest.raises(ValueError, match="offset"):
        gate_seeds(2, offset=len(GATE_SEEDS) - 1)


def test_this_file_uses_tuning_seeds() -> None:
    assert is_tuning_seed(EV["seed"])


# --------------------------------------------------------------------------- benign change


def test_regime_changes_are_ground_truth_and_move_their_node() -> None:
    """Regime draws have their own stream: switching their size off changes exactly the
    agents on changed nodes, from the first change on."""
    kw = {"n_agents": 400, "n_nodes": 8, "compromised_fraction": 0.0, "n_windows": 10,
          "baseline_windows": 3, "seed": 5, "node_regime_rate": 0.1}
    on = simulate_network(**kw)
    off = simulate_network(**kw, regime_scale=0.0)
    np.testing.assert_array_equal(on.regime_changes, off.regime_changes)
    assert on.regime_changes.shape == (8, 10) and not on.regime_changes[:, 0].any()
    for w in on.fleet_regime_windows:
        assert on.regime_changes[:, w].all()
    assert on.regime_changes.any()
    for k in range(8):
        rows = on.node == k
        hit = np.flatnonzero(on.regime_changes[k])
        first = hit[0] if hit.size else 10
        np.testing.assert_array_equal(on.windows[rows, :first], off.windows[rows, :first])
        if hit.size:
            assert not np.array_equal(on.windows[rows, first], off.windows[rows, first])
    since = on.regime_change_agents()
    assert since.dtype == np.bool_ and since.shape == (400,)
    np.testing.assert_array_equal(since, on.regime_changes[:, 3:].any(axis=1)[on.node])


def test_honest_agents_change_in_the_default_world_not_in_the_calm_one() -> None:
    kw = {"n_agents": 1000, "compromised_fraction": 0.0, "seed": 8}
    calm = simulate_network(**kw, **CALM_WORLD)
    default = simulate_network(**kw)
    for name in ("bias", "confidence_mean", "latency_mean"):
        j = col(name)
        sd_calm = (calm.features - calm.baseline_features)[:, j].std()
        sd_default = (default.features - default.baseline_features)[:, j].std()
        assert sd_default > 1.3 * sd_calm, (name, sd_calm, sd_default)


def test_noise_has_heavy_tails() -> None:
    kw = {**EV, "compromised_fraction": 0.0, "n_windows": 3, "baseline_windows": 1}
    normal = simulate_events(**kw, noise_df=float("inf")).table
    heavy = simulate_events(**kw, noise_df=4.0).table

    def kurtosis(table: pa.Table) -> float:
        cls = np.asarray(table["risk_class"].to_numpy(zero_copy_only=False))
        resid = np.asarray(table["predicted_risk"])[cls == "NETWORK"] - 0.4
        return float(stats.kurtosis(resid))

    assert kurtosis(heavy) > kurtosis(normal) + 0.5


def test_latent_factor_ties_accuracy_confidence_and_latency() -> None:
    kw = {"n_agents": 1500, "compromised_fraction": 0.0, "n_windows": 3, "baseline_windows": 1,
          "seed": 9}
    tied = simulate_network(**kw, trait_correlation=0.8).baseline_features
    free = simulate_network(**kw, trait_correlation=0.0).baseline_features
    for a, b in (("accuracy", "confidence_mean"), ("accuracy", "latency_mean")):
        r_tied = stats.spearmanr(tied[:, col(a)], tied[:, col(b)]).statistic
        r_free = stats.spearmanr(free[:, col(a)], free[:, col(b)]).statistic
        assert r_tied > 0.2 and abs(r_free) < 0.1, (a, b, r_tied, r_free)


def test_diurnal_latency_follows_the_clock() -> None:
    kw = {**EV, "compromised_fraction": 0.0, "n_windows": 24, "baseline_windows": 2,
          "diurnal_amplitude": 0.5, **{k: v for k, v in CALM_WORLD.items()
                                        if k not in ("diurnal_amplitude",)}}
    table = simulate_events(**kw).table
    t = np.asarray(table["time"].cast(pa.int64())) - int(sim.EPOCH.astype(np.int64))
    hour = (t / 3.6e9) % 24.0
    factor = 1.0 + 0.5 * np.cos(2 * np.pi * (hour - sim.DIURNAL_PEAK_HOUR) / 24.0)
    lat = np.asarray(table["latency_ms"])
    assert np.ptp(factor) > 0.5
    assert stats.spearmanr(factor, lat).statistic > 0.2


def test_workload_mix_shifts_towards_the_node_profile() -> None:
    kw = {"n_agents": 600, "n_nodes": 6, "compromised_fraction": 0.0, "n_windows": 20,
          "commands_per_window": 20, "seed": 13, "workload_shift": 1.0}
    ev = simulate_events(**kw)
    net = ev.network
    tmpl = template_of(ev.table["action"]).reshape(600, 20, 20)
    fam = np.array([t.family for t in sim.CATALOGUE])[tmpl]
    for k in range(6):
        boosted = list(sim.WORKLOAD_PROFILES[net.workload_profile[k]])
        share = net.workload_share[k]
        assert share[0] == 0.0 and share[-1] > 0.4
        rows = net.node == k
        early = np.isin(fam[rows][:, share == 0], boosted).mean()
        late = np.isin(fam[rows][:, share == share.max()], boosted).mean()
        assert late > early + 0.05, (k, early, late)


# --------------------------------------------------------------------------- difficulty


@pytest.fixture(scope="module")
def moderate() -> dict[str, Any]:
    return {"n_agents": 3000, "compromised_fraction": 0.35, "seed": 0}


@pytest.mark.parametrize("seed", [11, 12])
def test_default_world_has_no_attack_beyond_three_sds(seed: int) -> None:
    # 20,000 agents (about 1,000 per attack type): the medians are the world's, not the noise of a
    # few hundred agents; seed 12 is a world where the unscaled shifts reached 3.30 (simulate.py)
    table = separability_table(simulate_network(n_agents=20_000, compromised_fraction=0.35, seed=seed))
    assert [r.attack for r in table.rows] == list(ATTACKS)
    for r in table.rows:
        assert r.change_effect <= 3.0 and r.level_effect <= 3.0, r
    assert table.max_effect <= 3.0
    md = table.to_markdown()
    assert all(a in md for a in ATTACKS) and "clean-agent SDs" in md


def test_easy_world_fails_the_three_sd_bound(moderate: dict[str, Any]) -> None:
    easy = separability_table(simulate_network(**moderate, difficulty="easy"))
    assert easy.max_effect > 3.0
    assert sum(r.max_effect > 3.0 for r in easy.rows) >= 4


def test_hard_is_harder_than_default() -> None:
    kw = {"n_agents": 1400, "compromised_fraction": 0.5, "seed": 1}
    default = separability_table(simulate_network(**kw))
    hard = separability_table(simulate_network(**kw, difficulty="hard"))
    assert hard.max_effect < default.max_effect


def test_separability_needs_clean_agents() -> None:
    net = simulate_network(n_agents=10, compromised_fraction=1.0, n_windows=3, baseline_windows=1)
    with pytest.raises(ValueError, match="clean agents"):
        separability_table(net)


def test_easy_calm_world_keeps_the_honest_agents_stationary() -> None:
    """In EASY_WORLD honest agents have fixed traits: reference and detection agree."""
    net = simulate_network(n_agents=800, compromised_fraction=0.0, seed=2, **EASY_WORLD)
    change = net.features - net.baseline_features
    assert np.all(np.abs(np.median(change, axis=0)) < 0.1 * change.std(axis=0))


# --------------------------------------------------------------------------- events


def test_events_schema_labels_and_order(events: Any) -> None:
    table, labels, net = events.table, events.labels, events.network
    assert table.schema.equals(EVENT_SCHEMA) and labels.schema.equals(LABEL_SCHEMA)
    n, w, cpw = EV["n_agents"], EV["n_windows"], EV["commands_per_window"]
    assert table.num_rows == n * w * cpw and labels.num_rows == n
    agents = np.asarray(table["agent"].to_numpy(zero_copy_only=False))
    assert agents[0] == "agent-000000" and agents[-1] == f"agent-{n - 1:06d}"
    assert np.all(agents[:-1] <= agents[1:])
    t = np.asarray(table["time"].cast(pa.int64())).reshape(n, w * cpw)
    assert np.all(np.diff(t, axis=1) > 0)
    assert table["node"][0].as_py().startswith("node-0")
    assert set(table["outcome"].unique().to_pylist()) <= {"ok", "error", "refused"}
    assert set(table["risk_class"].unique().to_pylist()) == set(sim.RISK_CLASSES)
    lab = labels.to_pydict()
    np.testing.assert_array_equal(lab["compromised"], net.labels)
    for a, start, truth in zip(lab["attack"], lab["attack_start_window"], net.attack, strict=True):
        assert a == truth
        assert start == (None if a is None else (0 if a == "poisoning" else net.attack_start))


def test_events_network_is_simulate_network(events: Any) -> None:
    net = simulate_network(**EV)
    assert events.network.windows.tobytes() == net.windows.tobytes()


def test_same_seed_gives_bit_identical_tables(events: Any) -> None:
    again = simulate_events(**EV)
    assert again.table.equals(events.table) and again.labels.equals(events.labels)
    other = simulate_events(**{**EV, "seed": 22})
    assert not other.table.equals(events.table)


def test_actions_give_back_their_template(events: Any) -> None:
    tmpl = template_of(events.table["action"])
    cls = np.asarray(events.table["risk_class"].to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(np.array(sim.RISK_CLASSES)[sim._T_CLASS[tmpl]], cls)
    assert set(tmpl.tolist()) == set(range(len(sim.CATALOGUE)))
    with pytest.raises(ValueError, match="matches 0"):
        template_of(["echo hello"])


def test_arguments_are_json_objects_of_the_placeholders(events: Any) -> None:
    import json

    actions = events.table["action"].to_pylist()[:500]
    for action, raw in zip(actions, events.table["arguments"].to_pylist()[:500], strict=True):
        args = json.loads(raw)
        assert isinstance(args, dict)
        assert all(isinstance(v, str) and v in action for v in args.values())


TWO_BLOCKS: dict[str, Any] = {"n_agents": sim.CHUNK_AGENTS + 76, "n_nodes": 5, "n_windows": 3,
                              "baseline_windows": 1, "commands_per_window": 10, "seed": 23,
                              "compromised_fraction": 0.3}


@pytest.mark.parametrize("blocks", [1, 2])
def test_window_aggregates_reproduce_the_network(events: Any, blocks: int) -> None:
    """Windows by count over the events give back network.windows: all 12 features."""
    kw = EV if blocks == 1 else TWO_BLOCKS
    if blocks == 2:
        events = simulate_events(**kw)
        agents = np.asarray(events.table["agent"].to_numpy(zero_copy_only=False))
        assert np.all(agents[:-1] <= agents[1:])
        t = np.asarray(events.table["time"].cast(pa.int64())).reshape(kw["n_agents"], -1)
        assert np.all(np.diff(t, axis=1) > 0)
    n, w, cpw = kw["n_agents"], kw["n_windows"], kw["commands_per_window"]
    table, net = events.table, events.network
    tmpl = template_of(table["action"]).reshape(n, w, cpw)
    true = sim._T_LEVEL[tmpl]
    pred = np.asarray(table["predicted_risk"]).reshape(n, w, cpw)
    conf = np.asarray(table["confidence"]).reshape(n, w, cpw)
    lat = np.asarray(table["latency_ms"]).reshape(n, w, cpw)
    resid = pred - true
    got = {
        "accuracy": 1.0 - np.abs(resid).mean(axis=2),
        "bias": resid.mean(axis=2),
        "confidence_mean": conf.mean(axis=2),
        "latency_mean": lat.mean(axis=2),
        "error_rate": (np.abs(resid) > sim.ERROR_TOLERANCE).mean(axis=2),
        "confidence_std": conf.std(axis=2),
        "latency_p95": np.sort(lat, axis=2)[..., int(np.ceil(0.95 * cpw)) - 1],
    }
    cls = sim._T_CLASS[tmpl]
    for name, members in (("bias_safe", [0]), ("bias_network_privesc", [1, 2]),
                          ("bias_high_risk", [3, 4])):
        inside = np.isin(cls, members)
        got[name] = (resid * inside).sum(axis=2) / inside.sum(axis=2)
    within = np.zeros((n, w))
    for c in range(5):
        inside = cls == c
        mean = (pred * inside).sum(axis=2) / inside.sum(axis=2)
        within += (((pred - mean[..., None]) ** 2) * inside).sum(axis=2)
    got["consistency"] = np.sqrt(within / max(cpw - 5, 1))
    cell = sim._T_CELL[tmpl]
    energy = np.zeros((n, w))
    for c in range(sim._N_CELLS):
        inside = cell == c
        under = np.maximum(-(resid * inside).sum(axis=2), 0.0)
        energy += under**2 / np.maximum(inside.sum(axis=2), 1)
    got["family_underrating"] = energy
    assert set(got) == set(FEATURE_NAMES)
    for name, value in got.items():
        np.testing.assert_allclose(value, net.windows[..., col(name)], rtol=1e-5, atol=1e-6,
                                   err_msg=name)


def test_compromised_agents_use_more_new_argument_values() -> None:
    import json

    ev = simulate_events(**{**EV, "difficulty": "easy", "compromised_fraction": 0.5})
    table, net = ev.table, ev.network
    n, w, cpw = EV["n_agents"], EV["n_windows"], EV["commands_per_window"]
    args = np.array(table["arguments"].to_pylist(), dtype=object).reshape(n, w * cpw)
    base = EV["baseline_windows"] * cpw
    novel = np.empty(n)
    for a in range(n):
        seen = {v for raw in args[a, :base] for v in json.loads(raw).values()}
        later = [v for raw in args[a, base:] for v in json.loads(raw).values()]
        novel[a] = np.mean([v not in seen for v in later])
    late = net.labels & (net.attack != "poisoning")
    assert stats.mannwhitneyu(novel[late], novel[~net.labels], alternative="greater").pvalue < 1e-6


def test_simulate_events_rejects_unknown_and_bad_parameters() -> None:
    with pytest.raises(ValueError, match="unknown parameter 'agents'"):
        simulate_events(agents=5)
    with pytest.raises(ValueError, match="difficulty"):
        simulate_events(n_agents=5, n_nodes=1, difficulty="nightmare")


def test_easy_world_is_the_first_version_bit_for_bit() -> None:
    """EASY_WORLD reproduces the first simulator (digest of its output at commit d28941c).

    A failure here after a numpy upgrade means the generator's streams changed, not
    necessarily the model: rerun the first version to confirm before updating the digest.
    """
    import hashlib

    net = simulate_network(n_agents=300, n_nodes=7, compromised_fraction=0.5, n_windows=4,
                           baseline_windows=2, commands_per_window=23, seed=9, **EASY_WORLD)
    digest = hashlib.sha256(net.windows.tobytes()).hexdigest()
    assert digest == "39f0930275fe1b5aaa7a456c778b9ba1a664d2774996c5aef83e4373dda6b161"
