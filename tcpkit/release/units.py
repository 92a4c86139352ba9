"""The unit of a recorded metric, read from its name: one rule, owned here.

Notebooks name metrics in ``snake_case`` with the unit in the name (``runtime_s``,
``ns_per_agent``, ``dask_client_peak_mib``, ``sign_ms_ed25519``, ``alie_bias_robust_20``);
reports show that unit beside the value and the threshold. The rule:

1. split the name into tokens at ``_`` and ``.`` (lower case);
2. the unit is that of the *first* token where one of :data:`UNIT_PATTERNS` starts (the
   longest pattern there wins), so a qualifier after the unit (``_robust``, ``_20``, a key
   name) does not hide it, and ``commands_needed_shift_0.05`` is counted in commands, not SDs;
3. no unit when any token is a word that makes the value a pure number
   (:data:`DIMENSIONLESS`): ``time_to_detect_share`` is a share, not windows, and
   ``recall_mean_shift`` (a recall per attack label) is a recall, not SDs.

Metrics without a match (rates, recalls, relative errors, counts of agents) have no unit.
A pattern is added here, never in a report, so every page and table agrees.
"""

from __future__ import annotations

import re

UNIT_PATTERNS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("ns", "per", "agent"), "ns/agent"),
    (("agents", "per", "second"), "agents/s"),
    (("agents", "per", "s"), "agents/s"),
    (("gb", "per", "s"), "GB/s"),
    (("bytes", "per", "node"), "bytes/node"),
    (("seconds",), "s"),
    (("s",), "s"),
    (("ms",), "ms"),
    (("mib",), "MiB"),
    (("mb",), "MB"),
    (("bytes",), "bytes"),
    (("speedup",), "×"),
    (("ratio",), "×"),
    (("bias",), "SD"),  # shifts and effects in the clean (honest) agents' standard deviations
    (("shift",), "SD"),
    (("shifts",), "SD"),
    (("effect",), "SD"),
    (("hedges", "g"), "SD"),
    (("commands", "needed"), "commands"),
    (("time", "to", "detect"), "windows"),
)
"""Token sequences and their unit; a metric's unit comes from the first one its name contains."""

DIMENSIONLESS = frozenset({"share", "fraction", "rate", "fpr", "fdp", "recall", "precision", "auroc",
                           "rel", "identical", "ok"})
"""Tokens that make the value a pure number whatever the other tokens say."""

_SPLIT = re.compile(r"[_.]")


def unit_of(metric: str) -> str | None:
    """The unit of ``metric`` by the rule of this module, or None (see the module docstring)."""
    tokens = [t for t in _SPLIT.split(metric.lower()) if t]
    if not tokens or DIMENSIONLESS.intersection(tokens):
        return None
    for start in range(len(tokens)):
        found = [(len(p), unit) for p, unit in UNIT_PATTERNS if tuple(tokens[start:start + len(p)]) == p]
        if found:
            return max(found)[1]
    return None


def with_unit(text: str, unit: str | None) -> str:
    """``text`` followed by ``unit`` (``×`` written close, as in ``3.2×``); ``text`` alone without one."""
    if not unit or text in ("", "—"):
        return text
    return f"{text}{unit}" if unit == "×" else f"{text} {unit}"
