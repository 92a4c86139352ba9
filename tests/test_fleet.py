"""FleetDetector: validity without a vetted reference, power, trimming, benign change, round trip, bad input."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

from tcpkit.detect.baseline import BaselineError, bh_reject
from tcpkit.detect.fleet import (
    DEFAULTS,
    FleetDetector,
    _conformal,
    naive_detect,
    permutation_pvalues,
    simes_band,
)
from tcpkit.detect.simulate import EASY_WORLD, simulate_network

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _run(net, **kwargs):
    det = FleetDetector(feature_names=net.feature_names, **kwargs).fit(net.windows, net.node)
    return det, det.detect(net.windows, net.node)


def _fdp(flags, labels):
    return float((flags & ~labels).sum() / max(int(flags.sum()), 1))


# -- validity under the all-clean null ------------------------------------------------------


@pytest.mark.parametrize("world", [EASY_WORLD, {}], ids=["calm", "default"])
def test_all_clean_null_fdr_and_fpr_within_nominal(world):
    """Realized FDR over 25 clean fleets stays within q plus two Monte Carlo standard errors."""
    alpha = 0.1
    fdp, fp, neg = [], 0, 0
    for seed in range(100, 125):
        net = simulate_network(n_agents=150, compromised_fraction=0.0, seed=seed, **world)
        _, res = _run(net, alpha=alpha)
        fdp.append(_fdp(res.flags, net.labels))
        fp += int(res.flags.sum())
        neg += net.n_agents
    fdp_arr = np.array(fdp)
    se = max(fdp_arr.std(ddof=1) / np.sqrt(fdp_arr.size), np.sqrt(alpha * (1 - alpha) / fdp_arr.size))
    assert fdp_arr.mean() <= alpha + 2 * se
    assert fp / neg <= alpha / 10  # under the null the FDR is P(any flag); per-agent FPR is far lower


def test_the_null_check_can_fail_on_the_naive_baseline():
    """The same check rejects the naive chi-square detector (heavy-tailed, heterogeneous agents)."""
    fdp = []
    for seed in range(100, 110):
        net = simulate_network(n_agents=150, compromised_fraction=0.0, seed=seed, **EASY_WORLD)
        fdp.append(_fdp(naive_detect(net.windows, 5, alpha=0.1).flags, net.labels))
    assert np.mean(fdp) > 0.1 + 2 * np.sqrt(0.1 * 0.9 / len(fdp))


# -- power ---------------------------------------------------------------------------------


def test_recall_against_injected_compromise():
    net = simulate_network(
        n_agents=400, compromised_fraction=0.1, attacks=("fp_inflation", "fn_suppression"), seed=7, **EASY_WORLD
    )
    _, res = _run(net)
    recall = (res.flags & net.labels).sum() / net.labels.sum()
    assert recall >= 0.9
    assert _fdp(res.flags, net.labels) <= 0.1
    assert len(res.explanations) == res.n_flagged
    first = res.components["first_alarm_window"]
    assert np.all((first >= 0) == res.flags)


def test_trimming_keeps_a_contaminated_reference_from_masking():
    """20 % poisoning, present from the first window, is found by the level test after trimming."""
    net = simulate_network(n_agents=500, compromised_fraction=0.2, attacks=("poisoning",), seed=8, **EASY_WORLD)
    _, res = _run(net)
    recall = (res.flags & net.labels).sum() / net.labels.sum()
    assert recall >= 0.9
    assert _fdp(res.flags, net.labels) <= 0.1
    assert res.components["trimmed"][net.labels].mean() >= 0.9
    # Without trimming the same statistic is masked: the poisoned agents calibrate each other.
    untrimmed = _conformal(res.scores, np.ones(net.n_agents, dtype=bool), "marginal", 0.1)
    flags, _ = bh_reject(untrimmed, 0.05)
    assert flags.sum() <= 0.1 * net.labels.sum()


# -- benign change -------------------------------------------------------------------------


def test_node_wide_regime_change_does_not_alarm():
    net = simulate_network(n_agents=400, compromised_fraction=0.0, seed=9, **EASY_WORLD)
    windows = np.array(net.windows)
    on_node = net.node == 0
    spread = windows[:, :5].mean(axis=1).std(axis=0)
    windows[on_node, 10:] += 6.0 * spread  # every agent of node 0 moves by 6 agent SDs at window 10
    det = FleetDetector().fit(windows, net.node)
    res = det.detect(windows, net.node)
    assert res.flags[on_node].mean() <= 0.05
    assert not res.components["self_tested"][on_node].any()  # the jump of node 0's median is seen
    assert res.components["self_tested"][~on_node].all()
    # the check can fail: the same detector told nothing about nodes (fleet-wide centring) alarms
    blind = FleetDetector().fit(windows).detect(windows)
    assert blind.flags[on_node].mean() >= 0.5


def test_simulated_regime_changes_do_not_alarm():
    flagged = hit = 0
    for seed in range(200, 206):
        net = simulate_network(
            n_agents=300, compromised_fraction=0.0, seed=seed, node_regime_rate=0.1, regime_scale=2.0
        )
        _, res = _run(net)
        agents = net.regime_change_agents()
        flagged += int(res.flags[agents].sum())
        hit += int(agents.sum())
    assert hit > 0
    assert flagged / hit <= 2 * DEFAULTS.alpha


# -- small fleets --------------------------------------------------------------------------


def test_small_fleet_can_reject_below_the_population_floor():
    net = simulate_network(
        n_agents=240, compromised_fraction=0.05, attacks=("fp_inflation", "fn_suppression"), seed=10, **EASY_WORLD
    )
    _, res = _run(net)
    assert res.n_flagged >= 6
    assert np.all(res.pvalues[res.flags] < 1.0 / (net.n_agents + 1))
    assert set(res.components["test"][res.flags]) == {"self"}
    assert set(np.unique(res.components["test"])) <= {"self", "population"}
    # population test alone: its floor 1/(n+1) is above the BH threshold of a handful of rejections
    _, pop_only = _run(net, self_test=False)
    assert pop_only.n_flagged == 0


def test_permutation_pvalues_are_valid_and_powerful():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2000, 12, 3))
    p = permutation_pvalues(x, 4, 199, 0)
    assert abs((p <= 0.1).mean() - 0.1) < 0.025
    x[:50, 4:] += 2.5
    shifted = permutation_pvalues(x[:50], 4, 199, 0)
    assert (shifted <= 0.01).mean() >= 0.9


# -- calibration-conditional p-values ------------------------------------------------------


def test_simes_band_covers_uniform_order_statistics():
    n, delta = 200, 0.1
    band = simes_band(n, delta)
    assert np.all(np.diff(band) >= 0) and band[-1] < 1
    u = np.sort(np.random.default_rng(12).random((4000, n)), axis=1)
    miss = np.mean(np.any(u < band, axis=1))
    assert miss <= delta + 0.02


def test_conditional_calibration_is_more_conservative():
    net = simulate_network(n_agents=300, compromised_fraction=0.1, seed=13, **EASY_WORLD)
    _, marginal = _run(net)
    _, conditional = _run(net, calibration="conditional")
    assert np.all(conditional.components["p_population"] >= marginal.components["p_population"] - 1e-12)
    assert conditional.pvalue_method == "fleet-conditional"


# -- protocol ------------------------------------------------------------------------------


def test_round_trip_through_npz_gives_identical_results():
    net = simulate_network(n_agents=200, compromised_fraction=0.1, seed=14, **EASY_WORLD)
    det, res = _run(net, calibration="conditional", n_permutations=999)
    buf = io.BytesIO()
    np.savez(buf, **det.to_arrays())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as loaded:
        again = FleetDetector.from_arrays(loaded).detect(net.windows, net.node)
    np.testing.assert_array_equal(res.flags, again.flags)
    np.testing.assert_array_equal(res.pvalues, again.pvalues)
    np.testing.assert_array_equal(res.qvalues, again.qvalues)
    for key, value in res.components.items():
        np.testing.assert_array_equal(value, again.components[key])
    assert [e.index for e in res.explanations] == [e.index for e in again.explanations]
    for value in det.to_arrays().values():
        assert value.dtype.kind in "biufU"


def _small():
    return simulate_network(n_agents=60, compromised_fraction=0.0, seed=15, n_nodes=3, **EASY_WORLD)


def test_bad_input_errors_name_the_problem():
    net = _small()
    w = np.array(net.windows)
    det = FleetDetector()
    with pytest.raises(BaselineError, match="NaN"):
        bad = w.copy()
        bad[3, 2, 1] = np.nan
        det.fit(bad)
    with pytest.raises(BaselineError, match="expected \\(n_agents, n_windows, n_features\\)"):
        det.fit(w[:, 0])
    with pytest.raises(BaselineError, match="at least 20"):
        det.fit(w[:10])
    with pytest.raises(BaselineError, match="reference_windows=5"):
        det.fit(w[:, :3])
    with pytest.raises(BaselineError, match="not fitted"):
        det.detect(w)
    det.fit(w, net.node)
    with pytest.raises(BaselineError, match="at least one after"):
        det.detect(w[:, :5], net.node)
    with pytest.raises(BaselineError, match="unknown at fit"):
        det.detect(w, np.where(net.node == 0, 99, net.node))
    with pytest.raises(BaselineError, match="node must stay"):
        det.detect(w, (net.node + 1) % 3)
    with pytest.raises(BaselineError, match="60 agents"):
        det.detect(w[:50], net.node[:50])
    with pytest.raises(BaselineError, match="features"):
        det.detect(w[:, :, :5], net.node)
    moved = w.copy()
    moved[4, 0] += 1.0
    with pytest.raises(BaselineError, match="agents \\[4\\]"):
        det.detect(moved, net.node)
    with pytest.raises(BaselineError, match="one label per agent"):
        FleetDetector().fit(w, net.node[:5])
    for kwargs, word in [
        ({"alpha": 0}, "alpha"), ({"fdr": "by"}, "fdr"), ({"method": "x"}, "method"),
        ({"calibration": "x"}, "calibration"), ({"reference_windows": 1}, "reference_windows"),
        ({"trim_quantile": 1.0}, "trim_quantile"), ({"self_test": 1}, "self_test"),
        ({"population_weight": 1.0}, "population_weight"), ({"benign_ratio": 0}, "benign_ratio"),
    ]:
        with pytest.raises(BaselineError, match=word):
            FleetDetector(**kwargs)
    with pytest.raises(BaselineError, match="lack the key"):
        FleetDetector.from_arrays({"version": np.array(1)})


def test_defaults_live_in_one_place():
    det = FleetDetector()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = det.get_params()
    for name, value in vars(DEFAULTS).items():
        assert params[name] == value
