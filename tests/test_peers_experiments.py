"""The peers judged at tcpkit's FDR, and the realized-FDR experiment over fleets."""

from __future__ import annotations

import numpy as np
import pytest

from tcpkit.detect.config import DetectorConfig, build_detector
from tcpkit.detect.experiments import FdrPoint, cluster_bootstrap, fdr_curve
from tcpkit.detect.peers import PEERS, agent_rows, judge_with_peer
from tcpkit.detect.simulate import EASY_WORLD, FEATURE_NAMES, simulate_network


@pytest.fixture(scope="module")
def fleets():  # type: ignore[no-untyped-def]
    ref = simulate_network(n_agents=600, compromised_fraction=0.0, seed=21, **EASY_WORLD)
    net = simulate_network(n_agents=200, compromised_fraction=0.2, seed=22, **EASY_WORLD)
    fit_rows, cal_rows = build_detector(DetectorConfig(features=FEATURE_NAMES)).split(ref.n_agents)
    return ref, net, fit_rows, cal_rows


def test_agent_rows_are_change_then_level() -> None:
    w = np.arange(2 * 4 * 3, dtype=np.float64).reshape(2, 4, 3)
    rows = agent_rows(w, 2)
    np.testing.assert_allclose(rows[:, :3], w[:, 2:].mean(axis=1) - w[:, :2].mean(axis=1))
    np.testing.assert_allclose(rows[:, 3:], w.mean(axis=1))


@pytest.mark.parametrize("name", ["naive_chi2", *PEERS])
def test_every_peer_finds_gross_compromises_at_bh(fleets, name: str) -> None:  # type: ignore[no-untyped-def]
    ref, net, fit_rows, cal_rows = fleets
    result = judge_with_peer(name, ref.windows, net.windows, fit_rows, cal_rows, 5, 0.05)
    assert result.pvalues.shape == (net.n_agents,) and np.all((result.pvalues >= 0) & (result.pvalues <= 1))
    if name != "pyod_ecod":  # ECOD scores feature by feature: no guarantee on a multivariate shift
        assert result.flags[net.labels].mean() > 0.3, name
    if name != "naive_chi2":  # conformal: at most a few clean agents flagged at BH 0.05
        assert result.flags[~net.labels].mean() < 0.05


def test_unknown_peer_is_named(fleets) -> None:  # type: ignore[no-untyped-def]
    ref, net, fit_rows, cal_rows = fleets
    with pytest.raises(ValueError, match="unknown peer 'lof'"):
        judge_with_peer("lof", ref.windows, net.windows, fit_rows, cal_rows, 5, 0.05)


def test_fdr_curve_reports_a_margin_and_the_naive_baseline_breaks_it() -> None:
    points = fdr_curve((0.05, 0.1), n_fleets=12, n_agents=60, seed0=5000)
    assert set(points) == {0.05, 0.1}
    for q, pt in points.items():
        assert isinstance(pt, FdrPoint) and pt.n_fleets == 12 and pt.q == q
        assert pt.margin == pytest.approx(q + 2 * pt.se - pt.realized)
        assert 0.0 <= pt.realized <= 1.0
    # chi-square p-values on heavy-tailed agents: clean fleets raise false alarms far beyond q
    assert points[0.05].naive > 2 * 0.05 >= points[0.05].realized


def test_cluster_bootstrap_is_a_ratio_of_sums_over_fleets() -> None:
    est = cluster_bootstrap(np.array([1.0, 0.0, 3.0]), np.array([10.0, 0.0, 10.0]), n_boot=200)
    assert est.value == pytest.approx(0.2) and est.n_fleets == 2
    assert est.low <= est.value <= est.high
