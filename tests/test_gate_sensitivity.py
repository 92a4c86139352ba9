"""Every gated metric can fail: break what it checks, run the real notebook, watch the gate fail.

A criterion in ``notebooks/pipeline.toml`` is a check only if some broken world makes it
fail. For each gated metric, a test marked ``@pytest.mark.breaks(component, metric)`` breaks
the thing the metric measures (a detector that flags nobody, a kernel that is off by 1 %, an
order-dependent CRDT join, ...) and shows the criterion fail. Tests here run the component's
real notebook with one sabotage cell inserted (monkeypatching the library inside the kernel)
and evaluate the real criteria of ``pipeline.toml`` on what it recorded; domain test files
carry their own markers. :func:`test_every_gated_metric_has_a_breaking_test` keeps the list
complete: a new criterion without a breaking test fails it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tcpkit.release.gates import load_pipeline
from tcpkit.release.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
TESTS = ROOT / "tests"
PIPELINE = load_pipeline(NOTEBOOKS / "pipeline.toml")

pytestmark = pytest.mark.slow


def gated_metrics() -> set[tuple[str, str]]:
    return {
        (name, criterion.metric)
        for name, spec in PIPELINE.components.items()
        for gate in spec.gates.values()
        for criterion in gate.criteria
    }


# Gated metrics whose breaking test is still being written (this list may only shrink).
NOT_YET_COVERED: set[tuple[str, str]] = set()


def _breaks_marks() -> set[tuple[str, str]]:
    """Every ``breaks(component, metric)`` mark on a test function or module under tests/."""
    import importlib
    import inspect

    found: set[tuple[str, str]] = set()
    for path in sorted(TESTS.glob("test_*.py")):
        module = importlib.import_module(path.stem)
        owners = [module, *(f for _, f in inspect.getmembers(module, inspect.isfunction))]
        for owner in owners:
            marks = getattr(owner, "pytestmark", [])
            for mark in marks if isinstance(marks, list) else [marks]:
                if mark.name == "breaks":
                    found.add((str(mark.args[0]), str(mark.args[1])))
    return found


def test_every_gated_metric_has_a_breaking_test() -> None:
    covered = _breaks_marks()
    missing = sorted(gated_metrics() - covered - NOT_YET_COVERED)
    assert not missing, f"gated metrics with no test that makes them fail: {missing}"


def failing(component: str, gate: str, metrics: Mapping[str, Any]) -> set[str]:
    """The metrics of ``component``'s ``gate`` criteria that fail on ``metrics``."""
    spec = PIPELINE.components[component].gate(gate)
    return {r.metric for c in spec.criteria for r in c.evaluate(metrics) if not r.ok}


def run_sabotaged(name: str, after: str, sabotage: str, parameters: Mapping[str, Any], tmp: Path) -> dict[str, Any]:
    """Execute ``notebooks/<name>.ipynb`` with ``sabotage`` inserted after the first cell containing ``after``."""
    import papermill

    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and after in c.source)
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell("# sabotage (test only)\n" + sabotage))
    source, out = tmp / f"{name}-sabotaged.ipynb", tmp / f"{name}-out.ipynb"
    nbformat.write(nb, source)
    # a run that stops at a failing cell records what it reached, like a gate run
    with contextlib.suppress(papermill.PapermillExecutionError):
        papermill.execute_notebook(
            str(source), str(out), parameters=dict(parameters), kernel_name="python3",
            cwd=str(NOTEBOOKS), progress_bar=False, log_output=False,
        )
    return dict(read_metrics(out))


def override_flags(module: str, cls: str, flags: str, *, drop_explanations: bool = False) -> str:
    """Sabotage source: ``module.cls.detect`` returns its result with ``flags`` (an expression in ``r``)."""
    extra = ", explanations=()" if drop_explanations else ""
    return f"""
import dataclasses, numpy as np
from tcpkit.detect import {module} as _m_{cls}
_real_{cls} = _m_{cls}.{cls}.detect
def _patched_{cls}(self, *a, **k):
    r = _real_{cls}(self, *a, **k)
    return dataclasses.replace(r, flags={flags}{extra})
_m_{cls}.{cls}.detect = _patched_{cls}
"""


FLAG_NOBODY = override_flags("composite", "NetworkDetector", "np.zeros_like(r.flags)", drop_explanations=True)
FLAG_EVERYONE = override_flags("composite", "NetworkDetector", "np.ones_like(r.flags)")


STATISTICS_QUICK = {"n_agents": 200, "seeds": 1, "limit_agents": 90, "strengths": [1.0]}


@pytest.mark.breaks("statistics", "recall_*")
@pytest.mark.breaks("statistics", "label_trim_recall_10")
@pytest.mark.breaks("statistics", "limit_*")
def test_statistics_recall_fails_when_the_detector_flags_nobody(tmp_path: Path) -> None:
    metrics = run_sabotaged("statistics", "#| export", FLAG_NOBODY, STATISTICS_QUICK, tmp_path)
    assert {f"recall_{a}" for a in ("mimicry", "poisoning", "gradual_drift")} <= failing("statistics", "TESTING", metrics)
    staging = failing("statistics", "STAGING", metrics)
    assert metrics["label_trim_recall_10"] == 0.0 and "label_trim_recall_10" in staging
    assert {"limit_mimicry", "limit_coordination"} <= staging  # never reached in the sweep: NaN fails


@pytest.mark.breaks("statistics", "fpr")
@pytest.mark.breaks("statistics", "regime_fpr")
@pytest.mark.breaks("statistics", "label_trim_fpr_10")
def test_statistics_fpr_fails_when_the_detector_flags_everyone(tmp_path: Path) -> None:
    metrics = run_sabotaged("statistics", "#| export", FLAG_EVERYONE, STATISTICS_QUICK, tmp_path)
    assert "fpr" in failing("statistics", "DEVELOPMENT", metrics)
    assert {"fpr", "regime_fpr", "label_trim_fpr_10"} <= failing("statistics", "PRODUCTION", metrics)


# The fleet path alarms on every agent of a node whose median moved (what a detector without node
# peers does when a model or prompt update moves a whole node)
NODE_SHIFT_ALARMS = """
import dataclasses, numpy as np
from tcpkit.detect import fleet as _fleet
_real_fleet_detect = _fleet.FleetDetector.detect
def _node_shift_alarms(self, windows, nodes=None):
    r = _real_fleet_detect(self, windows, nodes)
    w = np.asarray(windows, dtype=float); k = self.reference_windows
    change = w[:, k:].mean(axis=1) - w[:, :k].mean(axis=1)
    z = (change - np.median(change, axis=0)) / change.std(axis=0)
    groups = self.groups_
    shift = np.array([np.abs(np.median(z[groups == g], axis=0)).max() for g in range(groups.max() + 1)])
    return dataclasses.replace(r, pvalues=np.where(shift[groups] >= np.median(shift), 1e-9, r.pvalues))
_fleet.FleetDetector.detect = _node_shift_alarms
"""


@pytest.mark.breaks("statistics", "regime_margin_*")
def test_statistics_regime_margin_fails_when_node_shifts_alarm(tmp_path: Path) -> None:
    quick = {**STATISTICS_QUICK, "fdr_fleets": 8, "fdr_agents": 60}
    metrics = run_sabotaged("statistics", "#| export", NODE_SHIFT_ALARMS, quick, tmp_path)
    assert {"regime_margin_null_q01", "regime_margin_mix_q05"} <= failing("statistics", "TESTING", metrics)


# BH switched off where the FDR experiment decides: every agent at p <= q is flagged, so the
# realized FDR over fleets (all-clean null: the chance of any false alarm) leaves q + 2 se behind
NO_BH_IN_FLEET = """
from tcpkit.detect import baseline as _b
_real_decide = _b.decide
_b.decide = lambda p, alpha, fdr: _real_decide(p, alpha, "none")
"""


@pytest.mark.breaks("statistics", "fdr_margin_*")
def test_statistics_fdr_margin_fails_when_the_fleet_path_skips_bh(tmp_path: Path) -> None:
    quick = {**STATISTICS_QUICK, "fdr_fleets": 12, "fdr_agents": 60}
    (tmp_path / "honest").mkdir()
    (tmp_path / "sabotaged").mkdir()
    honest = run_sabotaged("statistics", "#| export", "pass", quick, tmp_path / "honest")
    sabotaged = run_sabotaged("statistics", "#| export", NO_BH_IN_FLEET, quick, tmp_path / "sabotaged")
    assert not {m for m in failing("statistics", "TESTING", honest) if m.startswith(("fdr_margin_null", "regime_"))}
    assert {"fdr_margin_null_q05", "fdr_margin_null_q10"} <= failing("statistics", "TESTING", sabotaged)


@pytest.fixture(scope="module")
def frozen_domains() -> Iterator[Path]:
    """The four domain modules frozen into a throwaway project (as nbval does for integrated)."""
    from tcpkit.release.fixture import freeze_for_checks

    root = Path(tempfile.mkdtemp(prefix="tcpkit-sabotage-"))
    freeze_for_checks(root, NOTEBOOKS, ("statistics", "distributed", "performance", "security"))
    previous = os.environ.get("TCPKIT_ROOT")
    os.environ["TCPKIT_ROOT"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("TCPKIT_ROOT", None)
    else:
        os.environ["TCPKIT_ROOT"] = previous
    shutil.rmtree(root, ignore_errors=True)


INTEGRATED_QUICK = {"n_agents": 600, "n_reference": 3000, "events_agents": 300}

FLEET_NOBODY = override_flags("fleet", "FleetDetector", "np.zeros_like(r.flags)", drop_explanations=True)
FLEET_EVERYONE = override_flags("fleet", "FleetDetector", "np.ones_like(r.flags)")

BREAK_DETECTION_KERNEL_AND_CRDT = FLAG_NOBODY + FLEET_NOBODY + """
from tcpkit.detect import crdt as _crdt
from tcpkit.detect.combine import combine_chan as _chan
_real_join = _crdt.State.join
_calls = [0]
def _order_dependent_join(self, other):
    _calls[0] += 1
    return other if _calls[0] % 7 == 0 else _real_join(self, other)
_crdt.State.join = _order_dependent_join
distributed.combine = lambda ms: _chan(list(ms)[1:])          # silently drops a node
from tcpkit.detect import kernel as _kernel
_real_sq = _kernel.WhiteningKernel.squared_distances
_kernel.WhiteningKernel.squared_distances = lambda self, X, **kw: 1.01 * _real_sq(self, X, **kw)  # 1 % off
"""

BREAK_FPR_AGREEMENT_SPEED_AND_ROBUSTNESS = FLEET_EVERYONE + """
import dataclasses, time, numpy as np
from tcpkit.detect import alerts as _alerts
_real_audited = _alerts._judge_audited
def _audited_everyone(*a, **k):                               # tcpkit detect --audited flags every judged agent
    judged, paths = _real_audited(*a, **k)
    return dataclasses.replace(judged, flags=[True] * len(judged.flags)), paths
_alerts._judge_audited = _audited_everyone
from tcpkit.detect import composite as _c
from tcpkit.detect.combine import combine_chan as _chan
_real_detect = _c.NetworkDetector.detect
_seen = [0]
def _everyone_slowly(self, *a, **k):
    r = _real_detect(self, *a, **k)
    _seen[0] += 1
    time.sleep(0.5)
    flags = np.ones_like(r.flags) if _seen[0] == 1 else r.flags   # only the CRDT path (first call) breaks
    return dataclasses.replace(r, flags=flags)
_c.NetworkDetector.detect = _everyone_slowly
distributed.combine = lambda ms: _chan(list(ms))              # not robust: follows a lying node
"""


@pytest.mark.breaks("integrated", "events_recall")
@pytest.mark.breaks("integrated", "events_audited_recall")
@pytest.mark.breaks("integrated", "recall")
@pytest.mark.breaks("integrated", "recall_attack_*")
@pytest.mark.breaks("integrated", "explained_alarms")
@pytest.mark.breaks("integrated", "crdt_order_independent")
@pytest.mark.breaks("integrated", "combine_rel_error")
@pytest.mark.breaks("integrated", "kernel_rel_error_vs_oracle")
def test_integrated_detection_kernel_and_crdt_metrics_fail_when_broken(frozen_domains: Path, tmp_path: Path) -> None:
    metrics = run_sabotaged("integrated", "load_frozen(name)", BREAK_DETECTION_KERNEL_AND_CRDT, INTEGRATED_QUICK, tmp_path)
    failed = failing("integrated", "PRODUCTION", metrics) | failing("integrated", "DEVELOPMENT", metrics)
    expected = {"recall", "explained_alarms", "crdt_order_independent", "combine_rel_error", "kernel_rel_error_vs_oracle",
                "events_recall", "events_audited_recall"}
    assert expected <= failed, metrics
    assert any(m.startswith("recall_attack_") for m in failed)


@pytest.mark.breaks("integrated", "events_fdp")
@pytest.mark.breaks("integrated", "events_audited_fdp")
@pytest.mark.breaks("integrated", "fpr")
@pytest.mark.breaks("integrated", "central_agreement")
@pytest.mark.breaks("integrated", "agents_per_second")
@pytest.mark.breaks("integrated", "lying_node_shift_robust")
def test_integrated_fpr_agreement_speed_and_lying_metrics_fail_when_broken(frozen_domains: Path, tmp_path: Path) -> None:
    metrics = run_sabotaged(
        "integrated", "load_frozen(name)", BREAK_FPR_AGREEMENT_SPEED_AND_ROBUSTNESS, INTEGRATED_QUICK, tmp_path
    )
    failed = failing("integrated", "PRODUCTION", metrics)
    assert {"fpr", "central_agreement", "agents_per_second", "lying_node_shift_robust", "events_fdp",
            "events_audited_fdp"} <= failed, metrics


PERFORMANCE_QUICK = {"agents": 20_000, "repeats": 2, "stream_agents": 4_000_000, "scaling_max": 10_000}

BREAK_THE_KERNEL = """
import time
from tcpkit.detect import kernel as _kernel
_real_sq = _kernel.WhiteningKernel.squared_distances
_kept = []
def _wrong_slow_and_leaky(self, X, **kw):
    time.sleep(0.02)                      # slow: every timed path pays it
    _kept.append(np.array(X, copy=True))  # leaky: the streamed input stays resident
    return 1.01 * _real_sq(self, X, **kw)  # wrong: 1 % off
_kernel.WhiteningKernel.squared_distances = _wrong_slow_and_leaky
# the stream is measured in a child process: the same leak reaches it through sitecustomize
import os, pathlib, tempfile
_site = pathlib.Path(tempfile.mkdtemp())
(_site / "sitecustomize.py").write_text(
    "import numpy as np\\n"
    "from tcpkit.detect import kernel as _k\\n"
    "_real = _k.WhiteningKernel.squared_distances\\n"
    "_kept = []\\n"
    "def _leak(self, X, **kw):\\n"
    "    _kept.append(np.array(X, copy=True))\\n"
    "    return _real(self, X, **kw)\\n"
    "_k.WhiteningKernel.squared_distances = _leak\\n"
)
os.environ["PYTHONPATH"] = os.pathsep.join([str(_site), os.environ.get("PYTHONPATH", "")])
"""


@pytest.mark.breaks("performance", "max_rel_error")
@pytest.mark.breaks("performance", "max_rel_error_vs_exact")
@pytest.mark.breaks("performance", "p999_rel_error_float32")
@pytest.mark.breaks("performance", "speedup_vs_sklearn")
@pytest.mark.breaks("performance", "speedup_vs_numpy")
@pytest.mark.breaks("performance", "speedup_vs_scipy")
@pytest.mark.breaks("performance", "ratio_to_bandwidth_bound")
@pytest.mark.breaks("performance", "end_to_end_ns_per_agent")
@pytest.mark.breaks("performance", "stream_rss_delta_mb")
def test_performance_metrics_fail_with_a_wrong_slow_leaky_kernel(tmp_path: Path) -> None:
    metrics = run_sabotaged("performance", "#| export", BREAK_THE_KERNEL, PERFORMANCE_QUICK, tmp_path)
    failed = set()
    for gate in ("DEVELOPMENT", "TESTING", "STAGING", "PRODUCTION"):
        failed |= failing("performance", gate, metrics)
    expected = {"max_rel_error", "max_rel_error_vs_exact", "p999_rel_error_float32", "speedup_vs_sklearn",
                "speedup_vs_numpy", "speedup_vs_scipy", "ratio_to_bandwidth_bound", "end_to_end_ns_per_agent",
                "stream_rss_delta_mb"}
    assert expected <= failed, {k: metrics.get(k) for k in expected}
