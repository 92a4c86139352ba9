"""The threat-directed test: directions from a labelled library world, exact p-values, real power."""

from __future__ import annotations

import numpy as np
import pytest

from tcpkit.detect.audited import audited_fleet
from tcpkit.detect.baseline import BaselineError
from tcpkit.detect.composite import NetworkDetector
from tcpkit.detect.config import ConfigError, DetectorConfig, build_detector, shipped_config
from tcpkit.detect.simulate import ATTACKS
from tcpkit.detect.threats import ThreatDirections, ThreatError, fisher_directions

WITHOUT = shipped_config().replace(threat_library=None)


@pytest.fixture(scope="module")
def fleet():  # type: ignore[no-untyped-def]
    return audited_fleet(500, 6000, 0.2, 506, strength=1.0)


@pytest.fixture(scope="module")
def fitted(fleet) -> NetworkDetector:  # type: ignore[no-untyped-def]
    return build_detector(shipped_config()).fit(fleet.reference_network.windows)


def test_the_directed_test_finds_what_the_omnibus_tests_miss(fleet, fitted) -> None:  # type: ignore[no-untyped-def]
    net = fleet.monitored_network
    with_threats = fitted.detect(net.windows)
    without = build_detector(WITHOUT).fit(fleet.reference_network.windows).detect(net.windows)
    assert "directed" in fitted.components_ and "p_directed" in with_threats.components
    attacked = np.asarray(net.labels, dtype=bool)
    gain = with_threats.flags[attacked].mean() - without.flags[attacked].mean()
    assert gain >= 0.1, f"recall {without.flags[attacked].mean():.2f} -> {with_threats.flags[attacked].mean():.2f}"
    assert with_threats.flags[~attacked].mean() <= 0.01


def test_directed_pvalues_stay_uniform_on_clean_agents(fitted) -> None:  # type: ignore[no-untyped-def]
    clean = audited_fleet(2000, 6000, 0.0, 507, strength=1.0)
    p = fitted.detect(clean.monitored_network.windows).components["p_directed"]
    # conformal: P(p <= a) = floor(a (n + 1)) / (n + 1) for exchangeable clean agents (one fit:
    # the agents are not independent, so the band is wide)
    for a in (0.05, 0.2, 0.5):
        assert abs(float(np.mean(p <= a)) - a) < 0.05 + a / 4


def test_a_frozen_model_scores_the_same_and_refuses_tampered_directions(fleet, fitted) -> None:  # type: ignore[no-untyped-def]
    arrays = fitted.to_arrays()
    again = NetworkDetector.from_arrays(arrays)
    w = fleet.monitored_network.windows
    np.testing.assert_array_equal(again.detect(w).pvalues, fitted.detect(w).pvalues)
    bad = dict(arrays, threat_scale=-np.asarray(arrays["threat_scale"]))
    with pytest.raises(BaselineError, match="threat directions"):
        NetworkDetector.from_arrays(bad)
    narrow = dict(arrays, threat_directions=np.asarray(arrays["threat_directions"])[:, :-1])
    with pytest.raises(BaselineError, match="columns"):
        NetworkDetector.from_arrays(narrow)
    missing = {k: v for k, v in arrays.items() if k != "threat_directions"}
    with pytest.raises(BaselineError, match="threat_directions"):
        NetworkDetector.from_arrays(missing)


@pytest.mark.parametrize("seed", [-1, 1_000_000, True, "60001", 1.5])
def test_the_library_must_be_a_tuning_seed(seed: object) -> None:
    with pytest.raises(ConfigError, match="threat_library"):
        DetectorConfig(threat_library=seed)  # type: ignore[arg-type]


def test_other_features_are_one_clear_error(fleet) -> None:  # type: ignore[no-untyped-def]
    windows = np.asarray(fleet.reference_network.windows)[:, :, :6]
    config = DetectorConfig(features=tuple(f"f{i}" for i in range(6)), threat_library=60_001)
    with pytest.raises(BaselineError, match="simulator's features"):
        build_detector(config).fit(windows)


def test_fisher_directions_point_at_the_shift_and_reject_bad_libraries() -> None:
    rng = np.random.default_rng(5)
    rows = rng.normal(size=(400, 3))
    labels = np.array([""] * 300 + ["up"] * 100)
    rows[300:, 1] += 2.0
    (v,) = fisher_directions(rows, labels, ("up",))
    assert abs(v[1]) > 0.95 and v[1] > 0
    with pytest.raises(ThreatError, match="at least 10"):
        fisher_directions(rows, labels, ("up", "absent"))
    with pytest.raises(ThreatError, match="NaN"):
        fisher_directions(np.where(rows > 3, np.nan, rows), labels, ("up",))
    with pytest.raises(ThreatError, match="shape"):
        ThreatDirections(ATTACKS, np.zeros((2, 3)), np.zeros(2), np.ones(2))
