"""The reference screen: a planted cluster is removed before calibration, honest agents stay."""

from __future__ import annotations

import numpy as np
import pytest

from tcpkit.detect import screen
from tcpkit.detect.attacks import AttackConfig, make_world, poisoned_windows
from tcpkit.detect.audited import audited_fleet
from tcpkit.detect.baseline import BaselineError
from tcpkit.detect.composite import NetworkDetector
from tcpkit.detect.config import ConfigError, DetectorConfig, build_detector
from tcpkit.detect.screen import fit_screen, screen_cutoff
from tcpkit.detect.simulate import FEATURE_NAMES


def _honest(rng: np.random.Generator, n: int, d: int = 12) -> np.ndarray:
    return rng.standard_t(5, size=(n, d))


def _planted(rng: np.random.Generator, n: int, d: int = 12, size: float = 4.0) -> np.ndarray:
    """Rows shifted by ``size`` SDs on every coordinate, signs alternating: one shared direction."""
    signs = np.where(np.arange(d) % 2 == 0, 1.0, -1.0)
    return _honest(rng, n, d) + size * signs


def test_a_planted_cluster_is_removed_and_honest_rows_stay() -> None:
    rng = np.random.default_rng(0)
    rows = np.vstack([_honest(rng, 900), _planted(rng, 100)])
    rule, kept = fit_screen(rows)
    assert kept[900:].mean() <= 0.05  # about 10 robust SDs out along their direction: nearly all removed
    assert kept[:900].mean() >= 0.99
    # the rule is fixed: new rows of each kind get the same treatment
    assert rule.passes(_planted(rng, 200)).mean() <= 0.05
    assert rule.passes(_honest(rng, 2000)).mean() >= 0.99


def test_an_honest_reference_loses_almost_nothing() -> None:
    rng = np.random.default_rng(1)
    removed = [int((~fit_screen(_honest(rng, 1000))[1]).sum()) for _ in range(5)]
    assert sum(removed) <= 10, removed  # at most 1 in 500 honest rows, under heavy (t5) tails


def test_two_clusters_in_different_directions_are_peeled_one_per_round() -> None:
    rng = np.random.default_rng(2)
    other = _honest(rng, 50) + 6.0 * np.where(np.arange(12) < 6, 1.0, 0.0)
    rows = np.vstack([_honest(rng, 850), _planted(rng, 100), other])
    rule, kept = fit_screen(rows)
    assert rule.directions.shape[0] >= 2
    assert kept[850:].mean() <= 0.05
    assert kept[:850].mean() >= 0.99


def test_a_small_honest_cluster_is_left_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tuning seed 15 of the statistics world: a node's honest agents stand out together, but few."""
    fleet = audited_fleet(500, 10000, 0.2, 15)
    config = DetectorConfig(features=tuple(FEATURE_NAMES), reference_screen=True)
    assert build_detector(config).fit(fleet.reference_windows).screen_removed_rows_.size == 0
    monkeypatch.setattr(screen, "SCREEN_MIN_CLUSTER_SHARE", 0.005)
    assert build_detector(config).fit(fleet.reference_windows).screen_removed_rows_.size > 0


def test_the_cutoff_grows_with_the_fleet_and_bad_rows_are_refused() -> None:
    assert screen_cutoff(10_000) > screen_cutoff(1_000) > screen_cutoff(100)
    with pytest.raises(ValueError, match="finite"):
        fit_screen(np.full((50, 3), np.nan))


def _poisoned_world(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # 4000 reference agents: 1500 calibrate, fine enough for BH at 0.01 to reach 30 of 300 agents
    cfg = AttackConfig(reference_windows=DetectorConfig().reference_windows)
    world = make_world(seed, cfg)
    reference, monitored = poisoned_windows(world, 3.0)
    attacked = np.zeros(monitored.shape[0], dtype=bool)
    attacked[world.attacked] = True
    return reference, monitored, attacked


def test_the_screen_is_what_catches_agents_that_poisoned_their_reference() -> None:
    """The shipped settings with and without the screen on one poisoned world (10 %, 3 level SDs)."""
    reference, monitored, attacked = _poisoned_world()
    shipped = DetectorConfig(features=tuple(FEATURE_NAMES), adaptive=True, reference_screen=True)
    caught = {}
    for screened in (False, True):
        det = build_detector(shipped.replace(reference_screen=screened)).fit(reference)
        flags = np.asarray(det.detect(monitored).flags, dtype=bool)
        caught[screened] = float(flags[attacked].mean())
        assert flags[~attacked].mean() <= 0.02
    assert caught[False] <= 0.1 and caught[True] >= 0.9, caught
    removed = dict((part, r) for part, r, _ in det.screened_.removed)
    assert removed["calibration"] > 0 and det.screened_.removed_share < 0.2


def test_the_screen_travels_with_the_frozen_model() -> None:
    reference, _, _ = _poisoned_world(1)
    det = build_detector(DetectorConfig(features=tuple(FEATURE_NAMES), reference_screen=True)).fit(reference)
    arrays = det.to_arrays()
    back = NetworkDetector.from_arrays(arrays)
    assert back.screened_ == det.screened_
    old = {k: v for k, v in arrays.items() if k != "screened"}  # a model frozen before the screen existed
    assert NetworkDetector.from_arrays(old).screened_.removed == ()
    with pytest.raises(BaselineError, match="screened has shape"):
        NetworkDetector.from_arrays({**arrays, "screened": np.zeros((2, 5), dtype=np.int64)})
    with pytest.raises(ConfigError, match="reference_screen"):
        DetectorConfig(reference_screen="yes")  # type: ignore[arg-type]
