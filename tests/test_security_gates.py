"""Every gated security metric fails its criterion when the thing it checks is broken.

The evaluation runs through the security notebook's own export cells (the module that
PRODUCTION freezes), with the detector under attack replaced by a broken one, and the
recorded metrics are checked against the criteria of ``notebooks/pipeline.toml``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tcpkit.detect.attacks as attacks
from tcpkit.detect.attacks import REFERENCE_BUDGETS, AttackConfig, make_world
from tcpkit.detect.baseline import DetectionResult
from tcpkit.detect.composite import NetworkDetector
from tcpkit.detect.config import DetectorConfig
from tcpkit.detect.simulate import FEATURE_NAMES
from tcpkit.release import integrity_eval
from tcpkit.release.gates import GATES, Criterion, load_pipeline
from tcpkit.release.promote import build_module

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "security.ipynb"
SECURITY = load_pipeline(ROOT / "notebooks" / "pipeline.toml").components["security"]
TINY = AttackConfig(n_reference=200, n_monitored=50, attacked_fraction=0.1, n_windows=10)
SEEDS = (0, 1)
ONLY_GATED = {a: [b] for a, b in REFERENCE_BUDGETS.items()}

EVASION = [f"evasion_{a}_shipped" for a in attacks.ATTACKS]
GUARDS = ["budget_mimicry", "budget_poisoning", "budget_drift", "budget_probing",
          "budget_coordination", "probe_goal", "attacked_fraction", "poison_fraction",
          "coordination_total"]
TESTED = {*EVASION, *GUARDS, "false_alarm_rate_shipped", "tamper_detected_rate"}
pytestmark = [pytest.mark.breaks("security", metric) for metric in sorted(TESTED)]


def _criteria(metric: str) -> Iterator[Criterion]:
    for gate in GATES:
        for c in SECURITY.gates[gate].criteria:
            if c.metric == metric:
                yield c


def _holds(metric: str, metrics: dict[str, Any]) -> list[bool]:
    found = [r.ok for c in _criteria(metric) for r in c.evaluate(metrics)]
    assert found, f"no gate has a criterion on {metric}"
    return found


def _result(flags: np.ndarray) -> DetectionResult:
    p = np.where(flags, 0.0, 1.0)
    return DetectionResult(flags, p, p, p, (), 0.01, "bh", "stub")


class Never:
    """A detector that never flags anyone."""

    def fit(self, reference: np.ndarray) -> Never:
        return self

    def detect(self, windows: np.ndarray) -> DetectionResult:
        return _result(np.zeros(windows.shape[0], dtype=bool))


class Always(Never):
    """A detector that flags everyone."""

    def detect(self, windows: np.ndarray) -> DetectionResult:
        return _result(np.ones(windows.shape[0], dtype=bool))


class Oracle(Never):
    """Flags exactly the agents whose windows differ from the clean fleets (knows the truth)."""

    def __init__(self) -> None:
        self.fleets = [f for s in SEEDS for f in (make_world(s, TINY).monitored, make_world(s, TINY).replay)]

    def detect(self, windows: np.ndarray) -> DetectionResult:
        same = max((np.all(windows == clean, axis=(1, 2)) for clean in self.fleets
                    if clean.shape == windows.shape), key=lambda rows: int(rows.sum()))
        assert same.any(), "the oracle does not know these windows"
        return _result(~same)


@pytest.fixture(scope="module")
def exported() -> dict[str, Any]:
    """The security notebook's export cells, executed as the frozen module would be."""
    namespace: dict[str, Any] = {"__name__": "security_export"}
    exec(compile(build_module(NOTEBOOK).decode("utf-8"), str(NOTEBOOK), "exec"), namespace)
    return namespace


def _metrics(exported: dict[str, Any], detector: type[Never] | Any, monkeypatch: pytest.MonkeyPatch,
             config: AttackConfig = TINY) -> dict[str, Any]:
    monkeypatch.setitem(exported, "shipped_detector", lambda config=None: detector())
    result = exported["evaluate"](SEEDS, attack_config=config, budgets=ONLY_GATED)
    return result.metrics()


def test_every_gated_security_metric_has_a_breaking_test_here() -> None:
    gated = {c.metric for gate in GATES for c in SECURITY.gates[gate].criteria}
    assert gated == TESTED


def test_the_export_ships_the_factory_product_and_no_defence(exported: dict[str, Any]) -> None:
    """The attacked detector is the statistics component's shipped one, built by the factory."""
    statistics_notebook = ROOT / "notebooks" / "statistics.ipynb"
    statistics: dict[str, Any] = {"__name__": "statistics_export"}
    exec(compile(build_module(statistics_notebook).decode("utf-8"), str(statistics_notebook), "exec"), statistics)
    assert exported["DETECTOR_CONFIG"] == statistics["CONFIG"]
    assert exported["DETECTOR_CONFIG"] != DetectorConfig(features=tuple(FEATURE_NAMES))  # the adaptive test is on
    det = exported["shipped_detector"]()
    assert isinstance(det, NetworkDetector) and det.config == exported["DETECTOR_CONFIG"]
    for importable in (False, True):  # one process, or workers that import tcpkit: the same detectors
        made = {name: f() for name, f in exported["_factories"](exported["DETECTOR_CONFIG"], importable).items()}
        assert made["shipped"].config == det.config and type(made["naive"]).__name__ == "NaiveDetector"
    for name in ("DEFENCES", "defended_config", "with_defences"):
        assert name not in exported


def test_evasion_criteria_fail_against_a_detector_that_never_flags(
    exported: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = _metrics(exported, Never, monkeypatch)
    truthful = _metrics(exported, Oracle, monkeypatch)
    for metric in EVASION:
        assert broken[metric] == 1.0
        assert not any(_holds(metric, broken)), metric
        assert all(_holds(metric, truthful)), metric
    assert all(_holds("false_alarm_rate_shipped", broken))


def test_false_alarm_criterion_fails_against_a_detector_that_flags_everyone(
    exported: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = _metrics(exported, Always, monkeypatch)
    assert broken["false_alarm_rate_shipped"] == 1.0
    assert not any(_holds("false_alarm_rate_shipped", broken))
    assert all(_holds("false_alarm_rate_shipped", _metrics(exported, Oracle, monkeypatch)))


def test_guard_criteria_fail_when_the_attacks_are_eased(
    exported: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    honest = _metrics(exported, Oracle, monkeypatch)
    for metric in GUARDS:
        assert all(_holds(metric, honest)), metric
    eased_budgets = {"mimicry": 1.0, "poisoning": 1.0, "drift": 2.0, "probing": 4.0, "coordination": 2.0}
    monkeypatch.setattr(attacks, "REFERENCE_BUDGETS", eased_budgets)
    monkeypatch.setitem(exported, "GATED_BUDGETS", eased_budgets)
    eased = AttackConfig(n_reference=200, n_monitored=50, attacked_fraction=0.5, n_windows=10,
                         poison_fraction=0.0, probe_goal=6.0, coordination_total=30.0)
    monkeypatch.setitem(exported, "shipped_detector", lambda config=None: Oracle())
    metrics = exported["evaluate"](SEEDS, attack_config=eased,
                                   budgets={a: [b] for a, b in eased_budgets.items()}).metrics()
    for metric in GUARDS:
        assert not any(_holds(metric, metrics)), metric


def _signed_module() -> tuple[bytes, dict[str, Any], Any]:
    from tcpkit.release.signing import (
        HybridSigner,
        TrustList,
        make_statement,
        sha256_hex,
        sign_statement,
    )

    module = b"DETECTOR = 'shipped'\n" * 20
    signer = HybridSigner.generate("gate-test")
    statement = make_statement(
        "production/security.py", sha256_hex(module), gate="DEVELOPMENT",
        policy_uri="test", policy_digest=sha256_hex(b"test"), inputs={}, passed=True,
        verifier_id="test",
    )
    return module, sign_statement(statement, [signer]), TrustList.of([signer.public_record()])


def test_tamper_criterion_fails_when_verification_accepts_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module, envelope, trust = _signed_module()
    real = integrity_eval.tamper_trials(module, envelope, trust, 60, seed=0)
    assert all(_holds("tamper_detected_rate", {"tamper_detected_rate": real.detected_rate}))
    monkeypatch.setattr(integrity_eval, "verify_artifact", lambda *args, **kwargs: None)
    lax = integrity_eval.tamper_trials(module, envelope, trust, 60, seed=0)
    assert lax.detected_rate == 0.0
    assert not any(_holds("tamper_detected_rate", {"tamper_detected_rate": lax.detected_rate}))
