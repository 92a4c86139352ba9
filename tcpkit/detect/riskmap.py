"""Risk maps: the risk class of an action, for event logs that do not carry one.

A risk map is a TOML file with two tables::

    [tools]                       # exact action names
    send_money = "CRITICAL"
    "git status" = "SAFE"

    [patterns]                    # regular expressions, first match in file order wins
    '^rm\\s+-rf' = "DESTRUCTIVE"
    '^(curl|wget)\\s' = "NETWORK"

An action that equals a ``[tools]`` key gets its class; otherwise the first
``[patterns]`` key (in the order of the file) whose regular expression is found
in the action gives the class (a search, not a full match: anchor with ``^``
and ``$``). Patterns use RE2 syntax, the engine of :mod:`pyarrow.compute`,
which runs the match over the distinct actions in C++ (no lookaround or
backreferences; a pattern RE2 rejects is reported as a bad pattern). Classes
are those of :data:`tcpkit.detect.simulate.RISK_CLASSES`.

An action that neither table covers stays without a class: it is counted,
per action, in :attr:`Mapped.unmapped`, and the event stays in the table
(never dropped). A class the log itself gives (its ``risk_class`` column) wins
over the map, which fills only the missing ones.

tcpkit ships a default map (``tcpkit/detect/data/default_risk_map.toml``,
loaded by :func:`default_risk_map`) covering common shell commands and every
command template of the simulator's catalogue with its true class.

Families. ``family_underrating`` needs the command *family* of each action.
:func:`catalogue_families` recognises the simulator's catalogue templates in
the action text (a template's literal text with its ``{placeholders}``
matching any non-empty text); for actions outside the catalogue, the family is
the map rule that classified the action (see
:mod:`tcpkit.detect.features`).
"""

from __future__ import annotations

import functools
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from tcpkit.detect.simulate import CATALOGUE, RISK_CLASSES

__all__ = [
    "DEFAULT_RISK_MAP",
    "FAMILIES",
    "Mapped",
    "RiskMap",
    "RiskMapError",
    "apply_risk_map",
    "catalogue_families",
    "default_risk_map",
    "load_risk_map",
]

DEFAULT_RISK_MAP = "default_risk_map.toml"
FAMILIES: tuple[str, ...] = tuple(sorted({t.family for t in CATALOGUE}))


class RiskMapError(ValueError):
    """A risk map that cannot be used: names the file and the key."""


@dataclass(frozen=True)
class RiskMap:
    """A validated risk map.

    Attributes
    ----------
    tools : tuple of (name, class)
        Exact action names, in file order.
    patterns : tuple of (regex, class)
        In file order (the order matches are tried in).
    source : str
        Where it came from (a file name, or ``"<mapping>"``).
    """

    tools: tuple[tuple[str, str], ...]
    patterns: tuple[tuple[str, str], ...]
    source: str = "<mapping>"

    @property
    def rules(self) -> tuple[str, ...]:
        """Every rule as text, tools first then patterns: the index space of :meth:`classify`."""
        return tuple(f"tool:{k}" for k, _ in self.tools) + tuple(
            f"pattern:{k}" for k, _ in self.patterns
        )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], source: str = "<mapping>") -> RiskMap:
        """Validate a parsed map: ``{"tools": {...}, "patterns": {...}}``.

        Raises
        ------
        RiskMapError
            Naming ``source`` and the key: an unknown table, a value that is not a
            known class, a pattern that does not compile (RE2).
        """
        unknown = sorted(set(mapping) - {"tools", "patterns"})
        if unknown:
            raise RiskMapError(
                f"{source}: unknown table [{unknown[0]}]: a risk map has [tools] and [patterns]"
            )
        tables: dict[str, tuple[tuple[str, str], ...]] = {}
        for table in ("tools", "patterns"):
            entries = mapping.get(table, {})
            if not isinstance(entries, Mapping):
                raise RiskMapError(f"{source}: [{table}] must be a table of key = \"CLASS\"")
            checked: list[tuple[str, str]] = []
            for key, value in entries.items():
                if not isinstance(value, str) or value.upper() not in RISK_CLASSES:
                    raise RiskMapError(
                        f"{source}: [{table}] key {key!r}: unknown risk class {value!r}: "
                        f"allowed {', '.join(RISK_CLASSES)}"
                    )
                if table == "patterns":
                    _check_pattern(key, source)
                checked.append((str(key), value.upper()))
            tables[table] = tuple(checked)
        return cls(tools=tables["tools"], patterns=tables["patterns"], source=source)

    def classify(self, actions: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, NDArray[np.int64]]:
        """Class of every action (null where no rule matches) and the index of its rule (-1: none).

        The rules run once per distinct action, vectorised over them.
        """
        if isinstance(actions, pa.ChunkedArray):
            actions = actions.combine_chunks()
        encoded = pc.dictionary_encode(actions.cast(pa.string()))
        distinct = encoded.dictionary
        rule = np.full(len(distinct), -1, dtype=np.int64)
        classes = [c for _, c in self.tools] + [c for _, c in self.patterns]
        if self.tools:
            hit = pc.index_in(distinct, value_set=pa.array([k for k, _ in self.tools]))
            found = np.asarray(pc.fill_null(hit, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
            rule = np.where(found >= 0, found, rule)
        offset = len(self.tools)
        for j, (pattern, _) in enumerate(self.patterns):
            open_ = rule < 0
            if not open_.any():
                break
            matched = pc.match_substring_regex(distinct, pattern).to_numpy(zero_copy_only=False)
            rule = np.where(open_ & np.asarray(matched, dtype=bool), offset + j, rule)
        names = np.array(classes + [None], dtype=object)
        distinct_class = pa.array(names[rule], type=pa.string())
        idx = encoded.indices
        return distinct_class.take(idx), rule[np.asarray(idx.to_numpy(zero_copy_only=False))]


def _check_pattern(pattern: str, source: str) -> None:
    try:
        pc.match_substring_regex(pa.array([""]), pattern)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise RiskMapError(f"{source}: [patterns] key {pattern!r}: bad pattern: {exc}") from None


def load_risk_map(path: str | os.PathLike[str] | None = None) -> RiskMap:
    """Read and validate a risk map TOML file (``None``: the default map shipped with tcpkit).

    Raises
    ------
    RiskMapError
        A missing or unreadable file, invalid TOML, or a bad key (see :meth:`RiskMap.from_mapping`).
    """
    if path is None:
        return default_risk_map()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RiskMapError(f"{p}: cannot read the risk map: {exc.strerror or exc}") from None
    return _parse(text, str(p))


@functools.lru_cache(maxsize=1)
def default_risk_map() -> RiskMap:
    """The risk map shipped as package data (``tcpkit/detect/data/default_risk_map.toml``)."""
    ref = resources.files("tcpkit.detect").joinpath("data", DEFAULT_RISK_MAP)
    return _parse(ref.read_text(encoding="utf-8"), f"tcpkit default risk map ({DEFAULT_RISK_MAP})")


def _parse(text: str, source: str) -> RiskMap:
    try:
        mapping = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RiskMapError(f"{source}: not valid TOML: {exc}") from None
    return RiskMap.from_mapping(mapping, source)


@dataclass(frozen=True)
class Mapped:
    """An event table with its risk classes filled from a map.

    Attributes
    ----------
    table : pyarrow.Table
        The input with a ``risk_class`` column: the log's own class where it had
        one, else the map's, else null.
    unmapped : dict action -> count
        Events left without a class, per action (most frequent first).
    rule : (n_events,) int64
        Index into ``risk_map.rules`` of the rule that matched each event's action, -1 none.
    risk_map : RiskMap
    """

    table: pa.Table
    unmapped: dict[str, int]
    rule: NDArray[np.int64]
    risk_map: RiskMap


def apply_risk_map(table: pa.Table, risk_map: RiskMap | None = None) -> Mapped:
    """Fill the missing risk classes of an event table from ``risk_map`` (default: the shipped map)."""
    rm = risk_map if risk_map is not None else default_risk_map()
    classes, rule = rm.classify(table.column("action"))
    if "risk_class" in table.column_names:
        own = table.column("risk_class").combine_chunks()
        filled = pc.coalesce(own, classes)
        table = table.set_column(table.column_names.index("risk_class"), "risk_class", filled)
    else:
        filled = classes
        table = table.append_column(pa.field("risk_class", pa.string()), filled)
    missing = pc.is_null(filled)
    unmapped: dict[str, int] = {}
    if pc.any(missing).as_py():
        counts = pc.value_counts(pc.filter(table.column("action"), missing))
        pairs = sorted(
            zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True),
            key=lambda kv: (-kv[1], kv[0]),
        )
        unmapped = {str(k): int(v) for k, v in pairs}
    return Mapped(table=table, unmapped=unmapped, rule=rule, risk_map=rm)


# --------------------------------------------------------------------------- catalogue families

_META = set("\\.^$|?*+()[]{}")


def _template_regex(command: str) -> str:
    """Full-match RE2 pattern for a catalogue template: literal text, ``{x}`` -> ``.+``."""
    parts = re.split(r"(\{[a-z_]+\})", command)
    body = "".join(
        ".+" if p.startswith("{") and p.endswith("}") else "".join("\\" + c if c in _META else c for c in p)
        for p in parts
    )
    return f"^{body}$"


def _template_order() -> list[int]:
    """Templates without placeholders first, then by literal length, longest first."""

    def key(i: int) -> tuple[int, int]:
        command = CATALOGUE[i].command
        literal = len(re.sub(r"\{[a-z_]+\}", "", command))
        return (int(bool(re.search(r"\{[a-z_]+\}", command))), -literal)

    return sorted(range(len(CATALOGUE)), key=key)


_ORDER = _template_order()
_REGEX = [_template_regex(t.command) for t in CATALOGUE]


def _literal_ends(command: str) -> tuple[str, str]:
    """The literal text before the first and after the last placeholder (the whole text without any)."""
    parts = re.split(r"\{[a-z_]+\}", command)
    return parts[0], parts[-1] if len(parts) > 1 else ""


_ENDS = [_literal_ends(t.command) for t in CATALOGUE]


def catalogue_families(actions: pa.Array | pa.ChunkedArray) -> NDArray[np.int64]:
    """Index into :data:`FAMILIES` of the catalogue family of each action, -1 for no template.

    An action belongs to a template when it equals the template's command with its
    placeholders filled by any non-empty text (or left as written); templates
    without placeholders are tried first, then the longer literal texts. Each
    template's regular expression runs only over the distinct actions that start and
    end with its literal text (a test that cannot change the result, and is far cheaper).
    """
    if isinstance(actions, pa.ChunkedArray):
        actions = actions.combine_chunks()
    encoded = pc.dictionary_encode(actions.cast(pa.string()))
    distinct = encoded.dictionary
    family = np.full(len(distinct), -1, dtype=np.int64)
    for i in _ORDER:
        open_ = family < 0
        if not open_.any():
            break
        head, tail = _ENDS[i]
        candidate = open_ & np.asarray(pc.starts_with(distinct, head).to_numpy(zero_copy_only=False), dtype=bool)
        if tail and candidate.any():
            candidate &= np.asarray(pc.ends_with(distinct, tail).to_numpy(zero_copy_only=False), dtype=bool)
        rows = np.flatnonzero(candidate)
        if not rows.size:
            continue
        matched = pc.match_substring_regex(distinct.take(pa.array(rows)), _REGEX[i]).to_numpy(zero_copy_only=False)
        family[rows[np.asarray(matched, dtype=bool)]] = FAMILIES.index(CATALOGUE[i].family)
    return family[np.asarray(encoded.indices.to_numpy(zero_copy_only=False))]
