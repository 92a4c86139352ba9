"""Criteria parsing and evaluation, and validation of pipeline.toml (file, line, key)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcpkit.release.gates import (
    GATES,
    Criterion,
    PipelineError,
    evaluate,
    gate_index,
    load_pipeline,
)

GOOD = """\
[components.alpha]
notebook = "alpha.ipynb"
owner = "ada"
contributors = ["ada", "grace"]
depends_on = []
{gates}
[components.beta]
notebook = "beta.ipynb"
owner = "grace"
contributors = []
depends_on = ["alpha"]
{gates_beta}
"""


def _gates(component: str, criteria: str = '{ metric = "fpr", op = "<=", threshold = 0.01 }') -> str:
    text = ""
    for i, gate in enumerate(GATES):
        text += (
            f"[components.{component}.gates.{gate}]\n"
            f"parameters = {{ n = {10 * (i + 1)} }}\n"
            f"quick = {{ n = {i + 1} }}\n"
            f"criteria = [ {criteria} ]\n"
        )
    return text


def _write(tmp_path: Path, text: str, notebooks: tuple[str, ...] = ("alpha", "beta")) -> Path:
    for name in notebooks:
        (tmp_path / f"{name}.ipynb").write_text("{}")
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    return path


def _good_text() -> str:
    return GOOD.format(gates=_gates("alpha"), gates_beta=_gates("beta"))


def _error(path: Path) -> PipelineError:
    with pytest.raises(PipelineError) as info:
        load_pipeline(path)
    return info.value


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


# --- criteria -----------------------------------------------------------------------------------


def test_criterion_holds_and_fails_with_value_and_threshold() -> None:
    c = Criterion("fpr", "<=", 0.01)
    [ok] = c.evaluate({"fpr": 0.005})
    assert ok.ok and ok.value == 0.005 and "holds" in ok.reason
    [bad] = c.evaluate({"fpr": 0.02})
    assert not bad.ok and "fails" in bad.reason and "0.01" in bad.reason


def test_missing_metric_is_not_evaluated_and_fails() -> None:
    [result] = Criterion("fpr", "<=", 0.01).evaluate({"recall": 1.0})
    assert not result.ok
    assert result.reason.startswith("not evaluated")
    assert result.value is None


@pytest.mark.parametrize(
    ("value", "words"),
    [("nan", "not a number"), ("high", "not a number"), ([0.1, 0.2], "list"), (None, "not evaluated"),
     (True, "boolean"), (float("inf"), "finite")],
)
def test_non_numeric_values_fail_with_their_reason(value: object, words: str) -> None:
    [result] = Criterion("fpr", "<=", 0.01).evaluate({"fpr": value})
    assert not result.ok
    assert words in result.reason


def test_boolean_threshold_needs_a_boolean_value() -> None:
    c = Criterion("verified", "==", True)
    assert c.evaluate({"verified": True})[0].ok
    assert not c.evaluate({"verified": False})[0].ok
    assert not c.evaluate({"verified": 1})[0].ok


def test_wildcard_covers_every_match_and_needs_one() -> None:
    c = Criterion("recall_*", ">=", 0.95)
    results = c.evaluate({"recall_drift": 0.99, "recall_mimicry": 0.9, "fpr": 0.0})
    assert {r.metric: r.ok for r in results} == {"recall_drift": True, "recall_mimicry": False}
    [none] = c.evaluate({"fpr": 0.0})
    assert not none.ok and "not evaluated" in none.reason


def test_evaluation_passes_only_when_every_criterion_holds() -> None:
    criteria = [Criterion("fpr", "<=", 0.01), Criterion("recall", ">=", 0.9)]
    assert evaluate(criteria, {"fpr": 0.0, "recall": 0.95}).passed
    assert not evaluate(criteria, {"fpr": 0.0}).passed
    assert not evaluate([], {"fpr": 0.0}).passed  # nothing passes unmeasured


@pytest.mark.parametrize(
    ("metric", "op", "threshold"),
    [("fpr", "=<", 0.1), ("fpr", "<=", "0.1"), ("fpr", "<", True), ("fpr", "<=", float("nan")), ("", "<", 1)],
)
def test_bad_criteria_are_refused(metric: str, op: str, threshold: object) -> None:
    with pytest.raises(ValueError):
        Criterion(metric, op, threshold)  # type: ignore[arg-type]


@given(st.floats(allow_nan=False, allow_infinity=False), st.floats(allow_nan=False, allow_infinity=False))
def test_comparators_agree_with_python(value: float, threshold: float) -> None:
    for op, fn in {"<=": float.__le__, "<": float.__lt__, ">=": float.__ge__, ">": float.__gt__,
                   "==": float.__eq__, "!=": float.__ne__}.items():
        [result] = Criterion("m", op, threshold).evaluate({"m": value})
        assert result.ok == fn(value, threshold)


def test_gate_index_names_unknown_gate() -> None:
    assert gate_index("STAGING") == 2
    with pytest.raises(ValueError, match="PROD"):
        gate_index("PROD")


# --- loading ------------------------------------------------------------------------------------


def test_good_definition_loads(tmp_path: Path) -> None:
    pipeline = load_pipeline(_write(tmp_path, _good_text()))
    assert list(pipeline.components) == ["alpha", "beta"]
    assert pipeline.order() == [["alpha"], ["beta"]]
    gate = pipeline.components["alpha"].gates["TESTING"]
    assert gate.parameters_for("full") == {"n": 20}
    assert gate.parameters_for("quick") == {"n": 2}
    assert gate.digest("full") != gate.digest("quick")
    assert len(gate.digest("full")) == 64


def test_repository_pipeline_definition_is_valid() -> None:
    root = Path(__file__).resolve().parents[1]
    pipeline = load_pipeline(root / "notebooks" / "pipeline.toml", require_notebooks=False)
    assert set(pipeline.components) >= {"statistics", "distributed", "performance", "security", "integrated"}
    assert set(pipeline.components["integrated"].depends_on) == {
        "statistics", "distributed", "performance", "security"}


def test_unknown_key_names_file_line_and_key(tmp_path: Path) -> None:
    text = _good_text().replace('owner = "grace"\n', 'owner = "grace"\nowners = "x"\n')
    path = _write(tmp_path, text)
    error = _error(path)
    assert len(error.errors) == 1
    assert f"{path}:{_line_of(text, 'owners =')}:" in error.errors[0]
    assert "components.beta.owners" in error.errors[0]


def test_unknown_gate_and_comparator_are_located(tmp_path: Path) -> None:
    text = _good_text().replace("[components.alpha.gates.STAGING]", "[components.alpha.gates.STAGE]")
    text = text.replace('op = "<=", threshold = 0.01 }', 'op = "=<", threshold = 0.01 }', 1)
    path = _write(tmp_path, text)
    errors = _error(path).errors
    assert any("STAGE" in e and "unknown gate" in e and f":{_line_of(text, 'gates.STAGE]')}:" in e for e in errors)
    assert any("'=<'" in e and f":{_line_of(text, '=<')}:" in e and ".op" in e for e in errors)
    assert any("gate STAGING is missing" in e for e in errors)


def test_missing_notebook_is_an_error(tmp_path: Path) -> None:
    text = _good_text()
    path = _write(tmp_path, text, notebooks=("alpha",))
    [error] = _error(path).errors
    assert "beta.ipynb" in error and "does not exist" in error
    line = _line_of(text, 'notebook = "beta.ipynb"')
    assert f":{line}:" in error
    assert "components.beta.notebook" in error


def test_unknown_dependency_and_bad_values(tmp_path: Path) -> None:
    text = _good_text().replace('depends_on = ["alpha"]', 'depends_on = ["gamma"]')
    text = text.replace("threshold = 0.01", "threshold = nan", 1)
    errors = _error(_write(tmp_path, text)).errors
    assert any("unknown component 'gamma'" in e for e in errors)
    assert any("finite" in e and "threshold" in e for e in errors)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[components.alpha\n")
    assert "not valid TOML" in str(_error(path))
    assert "cannot read" in str(_error(tmp_path / "nope.toml"))


def test_gate_without_criteria_is_refused(tmp_path: Path) -> None:
    text = _good_text().replace('criteria = [ { metric = "fpr", op = "<=", threshold = 0.01 } ]', "criteria = []", 1)
    [error] = _error(_write(tmp_path, text)).errors
    assert "at least one criterion" in error


def test_exclusive_on_a_component_and_overridden_by_a_gate(tmp_path: Path) -> None:
    text = _good_text().replace('depends_on = ["alpha"]\n', 'depends_on = ["alpha"]\nexclusive = true\n')
    text = text.replace("[components.beta.gates.TESTING]\n",
                        "[components.beta.gates.TESTING]\nexclusive = false\n")
    pipeline = load_pipeline(_write(tmp_path, text))
    beta = pipeline.components["beta"].gates
    assert [beta[g].exclusive for g in GATES] == [True, False, True, True]
    assert not any(g.exclusive for g in pipeline.components["alpha"].gates.values())
    plain = load_pipeline(_write(tmp_path, _good_text())).components["beta"].gates
    assert beta["STAGING"].digest("full") != plain["STAGING"].digest("full")  # part of the policy
    assert beta["TESTING"].digest("full") == plain["TESTING"].digest("full")


def test_priority_orders_runs_and_changes_no_gate_digest(tmp_path: Path) -> None:
    text = _good_text().replace('depends_on = ["alpha"]\n', 'depends_on = ["alpha"]\npriority = 3\n')
    pipeline = load_pipeline(_write(tmp_path, text))
    assert pipeline.components["beta"].priority == 3 and pipeline.components["alpha"].priority == 0
    plain = load_pipeline(_write(tmp_path, _good_text())).components["beta"].gates
    assert all(pipeline.components["beta"].gates[g].digest("full") == plain[g].digest("full") for g in GATES)


@pytest.mark.parametrize("value", ['"high"', "1.5", "true", "5000"])
def test_priority_must_be_a_bounded_integer(tmp_path: Path, value: str) -> None:
    text = _good_text().replace('depends_on = ["alpha"]\n', f'depends_on = ["alpha"]\npriority = {value}\n')
    error = _error(_write(tmp_path, text))
    assert any("components.beta.priority" in e and "integer from -1000 to 1000" in e for e in error.errors)


def test_exclusive_must_be_a_boolean(tmp_path: Path) -> None:
    text = _good_text().replace('depends_on = ["alpha"]\n', 'depends_on = ["alpha"]\nexclusive = "yes"\n')
    error = _error(_write(tmp_path, text))
    assert any("components.beta.exclusive" in e and "true or false" in e for e in error.errors)
