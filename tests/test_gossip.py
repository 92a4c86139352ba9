"""The gossip simulator: fault mixes converge bit-identically and match pooled statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tcpkit.detect.combine import combine_chan, combine_robust, make_combine
from tcpkit.detect.gossip import Partition, simulate_gossip
from tcpkit.detect.moments import Moments

HARSH = dict(loss=0.3, duplicate=0.2, reorder=0.2, delay=0.2, crashes=0.1)


@pytest.mark.parametrize("engine, n", [("replica", 24), ("matrix", 300)])
def test_harsh_faults_converge_bit_identically_to_pooled(engine: str, n: int) -> None:
    result = simulate_gossip(n, seed=3, engine=engine, **HARSH)  # type: ignore[arg-type]
    assert result.converged
    assert result.bit_identical
    assert result.max_rel_error <= 1e-9
    assert result.messages["lost"] > 0 and result.messages["duplicated"] > 0
    assert result.coverage[-1] == 1.0


@pytest.mark.parametrize("seed, exchange", [(0, "delta"), (5, "delta"), (0, "full")])
def test_matrix_engine_reproduces_the_real_replicas(seed: int, exchange: str) -> None:
    kwargs = dict(HARSH, partitions=[Partition(2, 6)], seed=seed, exchange=exchange)
    real = simulate_gossip(20, engine="replica", **kwargs)  # type: ignore[arg-type]
    fast = simulate_gossip(20, engine="matrix", **kwargs)  # type: ignore[arg-type]
    assert real.coverage == fast.coverage
    assert (real.rounds, real.converged) == (fast.rounds, fast.converged)
    assert real.bytes_per_node == fast.bytes_per_node  # matrix bytes == real serialised sizes
    assert real.max_bytes_per_node == fast.max_bytes_per_node
    assert real.messages == fast.messages
    assert real.baseline == fast.baseline
    assert real.converged and real.bit_identical and real.max_rel_error <= 1e-9


def test_delta_exchange_sends_fewer_bytes_than_full_state() -> None:
    for kwargs in ({}, HARSH):
        full = simulate_gossip(200, seed=4, exchange="full", **kwargs)  # type: ignore[arg-type]
        delta = simulate_gossip(200, seed=4, **kwargs)  # type: ignore[arg-type]
        assert delta.exchange == "delta" and full.exchange == "full"
        assert full.converged and delta.converged and delta.bit_identical
        assert delta.max_rel_error <= 1e-9
        assert delta.bytes_per_node < full.bytes_per_node / 2.5
        assert delta.messages["sent"] > full.messages["sent"]  # three messages per contact


def test_delta_mode_repairs_a_lost_delta_in_later_rounds() -> None:
    """With 60 % loss most three-message exchanges break; later rounds still converge."""
    result = simulate_gossip(24, loss=0.6, seed=7, engine="replica")
    assert result.converged and result.bit_identical and result.max_rel_error <= 1e-9
    assert result.messages["lost"] > 0.5 * result.messages["sent"]


def test_same_seed_same_result_and_seeds_differ() -> None:
    a = simulate_gossip(100, seed=1, **HARSH)  # type: ignore[arg-type]
    b = simulate_gossip(100, seed=1, **HARSH)  # type: ignore[arg-type]
    c = simulate_gossip(100, seed=2, **HARSH)  # type: ignore[arg-type]
    assert a == b
    assert a.coverage != c.coverage


def test_partition_blocks_then_heals() -> None:
    result = simulate_gossip(200, partitions=[Partition(0, 15)], seed=2)
    during = result.coverage[:15]
    assert max(during) < 0.6  # two random halves: at most about half the keys
    assert result.converged and 15 < result.rounds <= 25
    assert result.max_rel_error <= 1e-9


def test_without_persisted_incarnation_restarted_nodes_can_lose() -> None:
    ok = simulate_gossip(30, crashes=0.2, seed=0)
    broken = simulate_gossip(30, crashes=0.2, seed=0, persist_incarnation=False)
    assert ok.max_rel_error <= 1e-9
    assert broken.converged  # replicas still agree ...
    assert broken.max_rel_error > 1e-6  # ... on stale moments of the restarted nodes


def test_rounds_grow_logarithmically() -> None:
    rounds = {n: simulate_gossip(n, seed=0).rounds for n in (16, 128, 1024)}
    for n, r in rounds.items():
        assert r <= 2 * math.log2(n) + 4
    assert rounds[16] < rounds[1024]


def test_lying_nodes_poison_naive_but_not_robust_combine() -> None:
    naive = simulate_gossip(150, lying=0.2, seed=1, combine="chan")
    robust = simulate_gossip(150, lying=0.2, seed=1, combine="robust")
    assert naive.converged and robust.converged
    assert naive.max_rel_error > 1.0
    assert robust.max_rel_error < 0.05
    assert robust.bit_identical


def test_unreachable_partition_does_not_converge_within_limit() -> None:
    result = simulate_gossip(50, partitions=[Partition(0, 100)], seed=0, max_rounds=20, engine="matrix")
    assert not result.converged and result.rounds == 20
    assert result.max_rel_error > 1e-3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_nodes=1), "n_nodes"),
        (dict(n_nodes=10, loss=1.0), "loss"),
        (dict(n_nodes=10, fanout=10), "fanout"),
        (dict(n_nodes=10, lying=float("nan")), "lying"),
        (dict(n_nodes=10, engine="gpu"), "engine"),
        (dict(n_nodes=10, exchange="push"), "exchange"),
        (dict(n_nodes=10, combine="mean"), "combine"),
        (dict(n_nodes=10, partitions=[(0, 3)]), "Partition"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=message):
        simulate_gossip(**kwargs)


def test_partition_validation() -> None:
    with pytest.raises(ValueError, match="start < stop"):
        Partition(5, 5)
    with pytest.raises(ValueError, match="groups"):
        Partition(0, 3, groups=1)


def test_robust_combine_equals_chan_on_honest_nodes_and_resists_liars() -> None:
    rng = np.random.default_rng(0)
    honest = [Moments.from_batch(rng.normal(size=(30, 3))) for _ in range(20)]
    exact = combine_chan(honest)
    robust = combine_robust(honest)
    np.testing.assert_allclose(robust.covariance(), exact.covariance(), rtol=0.2)
    liar = Moments(10**6, np.full(3, 1e3), np.eye(3) * 1e9)
    poisoned = combine_chan([*honest, liar])
    defended = combine_robust([*honest, liar])
    assert np.max(np.abs(poisoned.mean)) > 100
    assert np.max(np.abs(defended.mean)) < 1
    with pytest.raises(ValueError, match="unknown combine"):
        make_combine({"method": "median"})
    with pytest.raises(ValueError, match="options"):
        make_combine({"method": "robust", "trim": 0.1})


def test_lying_node_experiment_naive_collapses_robust_holds() -> None:
    from tcpkit.detect.byzantine import lying_node_experiment
    from tcpkit.detect.simulate import EASY_WORLD

    # the stationary world with gross compromises this experiment was designed on
    rows = lying_node_experiment(
        (0.0, 0.2), n_agents=800, n_nodes=20, lies=("mask",), seed=0, world=EASY_WORLD
    )
    table = {(r.lying_fraction, r.combine, r.pvalues): r for r in rows}
    assert len(rows) == 2 * 2 * 2
    clean = table[(0.0, "naive", "conformal")]
    assert clean.recall > 0.5
    assert table[(0.2, "naive", "conformal")].recall < 0.5 * clean.recall
    assert table[(0.2, "robust", "conformal")].recall >= clean.recall - 0.1
    assert all(r.fpr < 0.05 for r in rows if r.combine == "robust")
    with pytest.raises(ValueError, match="fractions"):
        lying_node_experiment((0.6,))


def test_segment_moments_equal_per_segment_from_batch() -> None:
    from tcpkit.detect.gossip import segment_moments

    rng = np.random.default_rng(3)
    lengths = np.array([1, 5, 2, 40, 3])
    rows = 1e6 + rng.normal(size=(int(lengths.sum()), 4))
    parts = segment_moments(rows, lengths)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    for part, a, b in zip(parts, bounds[:-1], bounds[1:], strict=True):
        ref = Moments.from_batch(rows[a:b])
        assert part.n == ref.n
        np.testing.assert_allclose(part.mean, ref.mean, rtol=1e-15)
        np.testing.assert_allclose(part.m2, ref.m2, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="segment lengths"):
        segment_moments(rows, np.array([1, 2]))


def test_robust_combine_keeps_honest_nodes_when_there_are_few() -> None:
    """With 4 honest nodes the MAD of 4 summaries is noisy; sampling error bounds the screen."""
    from tcpkit.detect.combine import screen_mask

    dropped = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        parts = [Moments.from_batch(rng.normal(size=(500, 6))) for _ in range(4)]
        dropped += int((~screen_mask(parts, 5.0)).sum())
    assert dropped == 0
    rng = np.random.default_rng(1)
    parts = [Moments.from_batch(rng.normal(size=(500, 6))) for _ in range(4)]
    liar = Moments.from_batch(rng.normal(size=(500, 6)) + 3.0)
    assert not screen_mask([*parts, liar], 5.0)[-1]
