"""Gate levels and their criteria, loaded from ``notebooks/pipeline.toml``.

The pipeline definition is data: for every component, the notebook it runs,
who owns it, what it depends on, and, for every gate, the notebook parameters
(full profile, with ``quick`` overrides) and the criteria its recorded metrics
must meet. The file is validated once, on load: every unknown key, unknown
gate, unknown comparator, bad value or missing notebook becomes one line of a
:class:`PipelineError` naming the file, the line and the key, so that a typo
never silently turns into a criterion that is not checked.

Evaluation is strict: a criterion whose metric was not recorded fails with
"not evaluated", and a value that is not a number fails with its reason.
Nothing passes by default.

``priority`` (an integer on a component, default 0) orders the runs that are ready at
the same time: the scheduler starts the highest first (ties in file order) and hands a
run to a worker only when one is free. It changes when a run starts, never what it
computes or its run key: give it to the components whose chains hold up the pipeline.

``exclusive = true`` (on a component, or on one of its gates, which then overrides
the component's value) marks a run that measures speed: the scheduler runs it with
nothing else in parallel, whatever ``--jobs`` says, and every run records the
1-minute load average it saw before and after (metrics ``tcpkit.load1_before`` and
``tcpkit.load1_after``, plus ``tcpkit.exclusive``), so a criterion can demand a
quiet machine and the report shows the conditions of the measurement.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import operator
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tcpkit.release.names import COMPONENT_PATTERN, InvalidNameError, check_researcher

GATES: tuple[str, ...] = ("DEVELOPMENT", "TESTING", "STAGING", "PRODUCTION")
"""The gate levels, in the order a component passes them (never skipped)."""

PROFILES: tuple[str, ...] = ("quick", "full")

OPERATORS: Mapping[str, Callable[[Any, Any], bool]] = MappingProxyType(
    {
        "<=": operator.le,
        "<": operator.lt,
        ">=": operator.ge,
        ">": operator.gt,
        "==": operator.eq,
        "!=": operator.ne,
    }
)

DEFAULT_TIMEOUT_S = 600.0
"""Per-cell execution limit (seconds) when a gate does not set ``timeout_s``."""

_COMPONENT_KEYS = frozenset(
    {"notebook", "owner", "contributors", "depends_on", "timeout_s", "exclusive", "priority", "gates"}
)
PRIORITY_RANGE = (-1000, 1000)
_GATE_KEYS = frozenset({"parameters", "quick", "criteria", "timeout_s", "exclusive"})
_CRITERION_KEYS = frozenset({"metric", "op", "threshold"})
_NAME = re.compile(rf"^{COMPONENT_PATTERN}\Z")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_METRIC = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}\*?\Z")

Threshold = float | int | bool


class PipelineError(ValueError):
    """The pipeline definition is invalid; ``errors`` lists one message per problem."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(self.errors))


# --- values -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CriterionResult:
    """The outcome of one criterion on one metric.

    ``metric`` is the concrete metric name (a wildcard criterion yields one
    result per matching metric), ``value`` what was measured (``None`` when
    nothing was), ``reason`` a sentence a person can read in the report.
    """

    metric: str
    op: str
    threshold: Threshold
    value: Any
    ok: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """The JSON form stored with a gate run (keys metric/op/threshold/value/ok/reason)."""
        return {
            "metric": self.metric,
            "op": self.op,
            "threshold": self.threshold,
            "value": self.value,
            "ok": self.ok,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Criterion:
    """``metric op threshold``, e.g. ``fpr <= 0.01``; ``recall_*`` applies to every match."""

    metric: str
    op: str
    threshold: Threshold

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not _METRIC.match(self.metric):
            raise ValueError(f"criterion metric {self.metric!r} is not a metric name (optionally ending in '*')")
        if self.op not in OPERATORS:
            raise ValueError(f"criterion op {self.op!r} is not one of {', '.join(OPERATORS)}")
        _check_threshold(self.threshold, self.op)

    @property
    def is_pattern(self) -> bool:
        """True when the metric name ends in ``*`` and stands for every matching metric."""
        return self.metric.endswith("*")

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {_fmt(self.threshold)}"

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "op": self.op, "threshold": self.threshold}

    def evaluate(self, metrics: Mapping[str, Any]) -> list[CriterionResult]:
        """Check the criterion against recorded ``metrics``; one result per metric it covers."""
        if self.is_pattern:
            names = [name for name in metrics if fnmatch.fnmatchcase(name, self.metric)]
            if not names:
                return [
                    CriterionResult(
                        self.metric, self.op, self.threshold, None, False,
                        f"not evaluated: no metric matching {self.metric!r} was recorded",
                    )
                ]
        else:
            if self.metric not in metrics:
                return [
                    CriterionResult(
                        self.metric, self.op, self.threshold, None, False,
                        f"not evaluated: metric {self.metric!r} was not recorded",
                    )
                ]
            names = [self.metric]
        return [self._check(name, metrics[name]) for name in names]

    def _check(self, name: str, value: Any) -> CriterionResult:
        def fail(reason: str) -> CriterionResult:
            return CriterionResult(name, self.op, self.threshold, value, False, reason)

        if isinstance(self.threshold, bool):
            if not isinstance(value, bool):
                return fail(f"{name} = {value!r} is not a boolean (the threshold is {_fmt(self.threshold)})")
        else:
            if value is None:
                return fail(f"not evaluated: {name} was recorded as None (no measurement)")
            if isinstance(value, bool):
                return fail(f"{name} = {value!r} is a boolean, not a number; compare it with true/false")
            if isinstance(value, str):
                return fail(f"{name} = {value!r} is not a number")
            if isinstance(value, list):
                return fail(f"{name} is a list of {len(value)} values, not a number")
            if not isinstance(value, int | float):
                return fail(f"{name} has type {type(value).__name__}, not a number")
            if isinstance(value, float) and not math.isfinite(value):
                return fail(f"{name} = {value!r} is not a finite number")
        ok = bool(OPERATORS[self.op](value, self.threshold))
        verdict = "holds" if ok else "fails"
        return CriterionResult(
            name, self.op, self.threshold, value, ok,
            f"{name} = {_fmt(value)} {verdict}: required {self.op} {_fmt(self.threshold)}",
        )


@dataclass(frozen=True)
class Evaluation:
    """All criterion results of one gate run; ``passed`` only when every one holds."""

    results: tuple[CriterionResult, ...]

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)

    @property
    def failures(self) -> tuple[CriterionResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    def as_dicts(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self.results]


def evaluate(criteria: Sequence[Criterion], metrics: Mapping[str, Any]) -> Evaluation:
    """Evaluate every criterion against the recorded metrics (no criteria: nothing passes)."""
    results: list[CriterionResult] = []
    for criterion in criteria:
        results.extend(criterion.evaluate(metrics))
    return Evaluation(tuple(results))


@dataclass(frozen=True)
class GateSpec:
    """One gate of one component: parameters per profile, criteria, cell time limit."""

    component: str
    gate: str
    parameters: Mapping[str, Any]
    quick: Mapping[str, Any]
    criteria: tuple[Criterion, ...]
    timeout_s: float = DEFAULT_TIMEOUT_S
    exclusive: bool = False
    """Run alone: nothing else executes in parallel (timing gates)."""

    def parameters_for(self, profile: str) -> dict[str, Any]:
        """The notebook parameters for ``profile``: full parameters, with quick overrides."""
        if profile not in PROFILES:
            raise ValueError(f"profile {profile!r} is not one of {', '.join(PROFILES)}")
        merged = dict(self.parameters)
        if profile == "quick":
            merged.update(self.quick)
        return merged

    def definition(self, profile: str) -> dict[str, Any]:
        """The canonical content of this gate for ``profile`` (what its digest covers)."""
        return {
            "component": self.component,
            "gate": self.gate,
            "profile": profile,
            "parameters": self.parameters_for(profile),
            "criteria": [c.as_dict() for c in self.criteria],
            "timeout_s": self.timeout_s,
            **({"exclusive": True} if self.exclusive else {}),
        }

    def digest(self, profile: str) -> str:
        """sha256 of the canonical JSON of :meth:`definition`: the policy digest in attestations."""
        return sha256_json(self.definition(profile))


@dataclass(frozen=True)
class ComponentSpec:
    """A component: its notebook, people, dependencies and its four gates."""

    name: str
    notebook: Path
    owner: str
    contributors: tuple[str, ...]
    depends_on: tuple[str, ...]
    gates: Mapping[str, GateSpec] = field(default_factory=dict)
    priority: int = 0  # the scheduler's order among runs ready at once (higher first); no result depends on it

    def gate(self, gate: str) -> GateSpec:
        return self.gates[gate]


@dataclass(frozen=True)
class Pipeline:
    """The validated contents of a pipeline definition file."""

    path: Path
    components: Mapping[str, ComponentSpec]

    def order(self) -> list[list[str]]:
        """Components in dependency layers: every component after all it depends on."""
        done: set[str] = set()
        layers: list[list[str]] = []
        remaining = list(self.components)
        while remaining:
            layer = [n for n in remaining if set(self.components[n].depends_on) <= done]
            if not layer:  # validation refuses cycles; this guards against misuse
                raise PipelineError([f"{self.path}: components {remaining} depend on each other"])
            layers.append(layer)
            done.update(layer)
            remaining = [n for n in remaining if n not in done]
        return layers

    def policy_uri(self, component: str, gate: str) -> str:
        return f"file:{self.path.name}#components.{component}.gates.{gate}"


def gate_index(gate: str) -> int:
    """Position of ``gate`` in :data:`GATES`; ValueError naming the gate when unknown."""
    try:
        return GATES.index(gate)
    except ValueError:
        raise ValueError(f"gate {gate!r} is not one of {', '.join(GATES)}") from None


def sha256_json(value: Any) -> str:
    """sha256 hex of the canonical JSON of ``value`` (sorted keys, no spaces, UTF-8)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- loading ------------------------------------------------------------------------------------


def load_pipeline(path: str | Path, *, require_notebooks: bool = True) -> Pipeline:
    """Read and validate a pipeline definition.

    Parameters
    ----------
    path : str or Path
        The TOML file (normally ``notebooks/pipeline.toml``). Notebook paths in
        it are relative to its directory.
    require_notebooks : bool
        Whether a notebook that does not exist is an error (it is for runs).

    Raises
    ------
    PipelineError
        With one message per problem, each naming the file, the line and the key.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PipelineError([f"{path}: cannot read the pipeline definition: {exc.strerror or exc}"]) from None
    text = raw.decode("utf-8", errors="replace")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PipelineError([f"{path}: not valid TOML: {exc}"]) from None
    return _Validator(path, text, require_notebooks).pipeline(data)


def locate(path: Path, table: Sequence[str], key: str) -> str:
    """``"<file>:<line>: <table>.<key>"`` for messages about a definition file's ``key``."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    line = _Validator(Path(path), text, require_notebooks=False).line_of(table, key)
    return f"{path}:{line}: {'.'.join([*table, key])}"


def missing_notebooks(pipeline: Pipeline, names: Sequence[str]) -> dict[str, str]:
    """For components ``names`` whose notebook does not exist: the error naming file, line and key.

    A run reports these as failures of their components while the others go on.
    """
    text = pipeline.path.read_text(encoding="utf-8", errors="replace")
    validator = _Validator(pipeline.path, text, require_notebooks=True)
    missing: dict[str, str] = {}
    for name in names:
        notebook = pipeline.components[name].notebook
        if not notebook.is_file():
            validator.error(["components", name], "notebook",
                            f"notebook {notebook.name!r} does not exist in {pipeline.path.parent}")
            missing[name] = validator.errors[-1]
    return missing


class _Validator:
    """Collects every problem of one definition, each located in the text."""

    def __init__(self, path: Path, text: str, require_notebooks: bool) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.require_notebooks = require_notebooks
        self.errors: list[str] = []

    # locating keys: tomllib keeps no positions, so search the text for the key
    def _header_line(self, table: Sequence[str]) -> int | None:
        parts = [r"\s*" + _key_regex(p) + r"\s*" for p in table]
        pattern = re.compile(r"^\s*\[" + r"\.".join(parts) + r"\]")
        for number, line in enumerate(self.lines, start=1):
            if pattern.match(line):
                return number
        return None

    def line_of(self, table: Sequence[str], key: str | None = None, nth: int = 0) -> int:
        """Best line for ``key`` inside ``table`` (``nth`` occurrence within the table)."""
        start = None
        cut = len(table)
        for cut in range(len(table), 0, -1):  # the table's header, or its nearest declared parent
            start = self._header_line(table[:cut])
            if start is not None:
                break
        if key is None:
            return start or 1
        as_table = self._header_line([*table, key])  # the key may itself be a [table]
        if as_table is not None and nth == 0:
            return as_table
        if start is not None and cut < len(table) and nth == 0:  # ``quick = { key = ... }``
            inline = self._find_inline(table[-1], key, start)
            if inline is not None:
                return inline
        found = self._find(key, start or 1, nth)
        if found is None:
            found = self._find(key, 1, 0)
        return found or start or 1

    def _find_inline(self, table: str, key: str, start: int) -> int | None:
        """The line after ``start`` (in its section) of ``table = { ... key = ... }``."""
        pattern = re.compile(r"(^|[\s{,.])" + _key_regex(table) + r"\s*=\s*\{.*[\s{,]"
                             + _key_regex(key) + r"\s*=")
        for number in range(start, len(self.lines) + 1):
            line = self.lines[number - 1]
            if number > start and line.lstrip().startswith("["):
                break
            if pattern.search(line.split("#", 1)[0]):
                return number
        return None

    def _find(self, key: str, start: int, nth: int = 0) -> int | None:
        pattern = re.compile(r"(^|[\s{,.])" + _key_regex(key) + r"\s*[=.]")
        seen = 0
        for number in range(start, len(self.lines) + 1):
            line = self.lines[number - 1]
            if number > start and line.lstrip().startswith("["):
                break
            if pattern.search(line.split("#", 1)[0]):
                if seen == nth:
                    return number
                seen += 1
        return None

    def error(self, table: Sequence[str], key: str | None, message: str, nth: int = 0) -> None:
        where = ".".join([*table, key] if key else table)
        self.errors.append(f"{self.path}:{self.line_of(table, key, nth)}: {where}: {message}")

    # validation proper
    def pipeline(self, data: Mapping[str, Any]) -> Pipeline:
        for key in data:
            if key != "components":
                self.error([], key, "unknown top-level key (expected only [components.<name>])")
        components_raw = data.get("components")
        components: dict[str, ComponentSpec] = {}
        if not isinstance(components_raw, dict) or not components_raw:
            self.error([], "components", "no components are defined")
        else:
            for name, raw in components_raw.items():
                spec = self.component(name, raw)
                if spec is not None:
                    components[name] = spec
            self.dependencies(components_raw)
        if self.errors:
            raise PipelineError(self.errors)
        return Pipeline(self.path, MappingProxyType(components))

    def component(self, name: str, raw: Any) -> ComponentSpec | None:
        table = ["components", name]
        if not _NAME.match(name):
            self.error(["components"], name, "component names are a lower-case letter then lower-case letters, digits or '-'")
            return None
        if not isinstance(raw, dict):
            self.error(["components"], name, "must be a table")
            return None
        before = len(self.errors)
        for key in raw:
            if key not in _COMPONENT_KEYS:
                self.error(table, key, f"unknown key (expected {', '.join(sorted(_COMPONENT_KEYS))})")
        notebook = raw.get("notebook")
        notebook_path = Path()
        if not isinstance(notebook, str) or not notebook.endswith(".ipynb"):
            self.error(table, "notebook", "must be the file name of a notebook ending in .ipynb")
        else:
            notebook_path = (self.path.parent / notebook).resolve()
            if Path(notebook).is_absolute() or ".." in Path(notebook).parts:
                self.error(table, "notebook", f"{notebook!r} must be a path inside {self.path.parent}")
            elif self.require_notebooks and not notebook_path.is_file():
                self.error(table, "notebook", f"notebook {notebook!r} does not exist in {self.path.parent}")
        owner = raw.get("owner")
        if not isinstance(owner, str) or not owner.strip():
            self.error(table, "owner", "must name the researcher who owns the component")
        else:
            self.researchers(table, "owner", [owner])
        contributors = self.names(table, "contributors", raw.get("contributors", []))
        self.researchers(table, "contributors", contributors)
        depends_on = self.names(table, "depends_on", raw.get("depends_on", []))
        default_timeout = self.timeout(table, raw.get("timeout_s", DEFAULT_TIMEOUT_S))
        default_exclusive = self.flag(table, "exclusive", raw.get("exclusive", False))
        priority = self.priority(table, raw.get("priority", 0))
        gates_raw = raw.get("gates")
        gates: dict[str, GateSpec] = {}
        if not isinstance(gates_raw, dict):
            self.error(table, "gates", f"missing: every component needs the gates {', '.join(GATES)}")
        else:
            for gate, graw in gates_raw.items():
                if gate not in GATES:
                    self.error([*table, "gates"], gate, f"unknown gate (expected one of {', '.join(GATES)})")
                    continue
                spec = self.gate(name, gate, graw, default_timeout, default_exclusive)
                if spec is not None:
                    gates[gate] = spec
            for gate in GATES:
                if gate not in gates_raw:
                    self.error(table, "gates", f"gate {gate} is missing (every gate is required, in order)")
        if len(self.errors) > before:
            return None
        return ComponentSpec(
            name=name,
            notebook=notebook_path,
            owner=str(owner),
            contributors=contributors,
            depends_on=depends_on,
            gates=MappingProxyType({g: gates[g] for g in GATES}),
            priority=priority,
        )

    def names(self, table: Sequence[str], key: str, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            self.error(table, key, "must be a list of names")
            return ()
        if len(set(value)) != len(value):
            self.error(table, key, "lists a name twice")
        return tuple(value)

    def researchers(self, table: Sequence[str], key: str, names: Sequence[str]) -> None:
        for name in names:  # the workspace's rule, checked here so a run fails before any kernel
            try:
                check_researcher(name)
            except InvalidNameError as exc:
                self.error(table, key, str(exc))

    def timeout(self, table: Sequence[str], value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not (0 < value < 86400):
            self.error(table, "timeout_s", "must be a number of seconds between 0 and 86400")
            return DEFAULT_TIMEOUT_S
        return float(value)

    def priority(self, table: Sequence[str], value: Any) -> int:
        low, high = PRIORITY_RANGE
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.error(table, "priority", f"must be an integer from {low} to {high}")
            return 0
        return value

    def flag(self, table: Sequence[str], key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            self.error(table, key, "must be true or false")
            return False
        return value

    def gate(self, component: str, gate: str, raw: Any, default_timeout: float,
             default_exclusive: bool = False) -> GateSpec | None:
        table = ["components", component, "gates", gate]
        if not isinstance(raw, dict):
            self.error(table[:-1], gate, "must be a table")
            return None
        before = len(self.errors)
        for key in raw:
            if key not in _GATE_KEYS:
                self.error(table, key, f"unknown key (expected {', '.join(sorted(_GATE_KEYS))})")
        parameters = self.parameters(table, "parameters", raw.get("parameters", {}))
        quick = self.parameters(table, "quick", raw.get("quick", {}))
        timeout = self.timeout(table, raw["timeout_s"]) if "timeout_s" in raw else default_timeout
        exclusive = self.flag(table, "exclusive", raw["exclusive"]) if "exclusive" in raw else default_exclusive
        criteria_raw = raw.get("criteria")
        criteria: list[Criterion] = []
        if not isinstance(criteria_raw, list) or not criteria_raw:
            self.error(table, "criteria", "must list at least one criterion: nothing passes unmeasured")
        else:
            for i, craw in enumerate(criteria_raw):
                criterion = self.criterion(table, i, craw)
                if criterion is not None:
                    criteria.append(criterion)
        if len(self.errors) > before:
            return None
        return GateSpec(
            component=component,
            gate=gate,
            parameters=MappingProxyType(parameters),
            quick=MappingProxyType(quick),
            criteria=tuple(criteria),
            timeout_s=timeout,
            exclusive=exclusive,
        )

    def parameters(self, table: Sequence[str], key: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.error(table, key, "must be a table of notebook parameters")
            return {}
        for name, item in value.items():
            if not _IDENTIFIER.match(name):
                self.error([*table, key], name, "is not a Python identifier, so not a notebook parameter")
            elif not _json_safe(item):
                self.error([*table, key], name, "value must be a number, string, boolean, list or table")
        return dict(value)

    def criterion(self, table: Sequence[str], index: int, raw: Any) -> Criterion | None:
        where = f"criteria[{index}]"
        if not isinstance(raw, dict):
            self.error(table, "criteria", f"{where} must be a table {{ metric, op, threshold }}")
            return None
        ok = True
        for key in raw:
            if key not in _CRITERION_KEYS:
                self.error(table, key, f"unknown key in {where} (expected metric, op, threshold)")
                ok = False
        for key in ("metric", "op", "threshold"):
            if key not in raw:
                self.error(table, "criteria", f"{where} has no {key!r}")
                ok = False
        if not ok:
            return None
        try:
            return Criterion(raw["metric"], raw["op"], raw["threshold"])
        except ValueError as exc:
            key = "op" if raw["op"] not in OPERATORS else ("metric" if "metric" in str(exc) else "threshold")
            self.error(table, key, f"{where}: {exc}", nth=index)
            return None

    def dependencies(self, components: Mapping[str, Any]) -> None:
        graph: dict[str, list[str]] = {}
        for name, raw in components.items():
            if not isinstance(raw, dict):
                continue
            deps = raw.get("depends_on", [])
            if not isinstance(deps, list):
                continue
            graph[name] = [d for d in deps if isinstance(d, str)]
            for dep in graph[name]:
                if dep == name:
                    self.error(["components", name], "depends_on", "a component cannot depend on itself")
                elif dep not in components:
                    self.error(["components", name], "depends_on", f"unknown component {dep!r}")
        # cycles
        state: dict[str, int] = {}

        def visit(node: str, trail: list[str]) -> None:
            state[node] = 1
            for dep in graph.get(node, []):
                if dep == node or dep not in graph:
                    continue
                if state.get(dep) == 1:
                    cycle = " -> ".join([*trail[trail.index(dep):], dep]) if dep in trail else dep
                    self.error(["components", node], "depends_on", f"dependency cycle {cycle}")
                elif dep not in state:
                    visit(dep, [*trail, dep])
            state[node] = 2

        for node in graph:
            if node not in state:
                visit(node, [node])


def _key_regex(key: str) -> str:
    escaped = re.escape(key)
    return rf"(?:{escaped}|\"{escaped}\"|'{escaped}')"


def _json_safe(value: Any) -> bool:
    if isinstance(value, bool | str | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_json_safe(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_safe(v) for k, v in value.items())
    return False


def _check_threshold(threshold: Any, op: str) -> None:
    if isinstance(threshold, bool):
        if op not in ("==", "!="):
            raise ValueError(f"threshold {threshold!r} is a boolean: use it with '==' or '!=', not {op!r}")
        return
    if not isinstance(threshold, int | float):
        raise ValueError(f"threshold {threshold!r} is not a number or boolean")
    if not math.isfinite(threshold):
        raise ValueError(f"threshold {threshold!r} is not a finite number")


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value)
