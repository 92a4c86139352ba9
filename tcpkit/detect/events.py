"""The event schema of tcpkit, and its readers: JSON Lines, CSV, Parquet and OTLP/JSON traces.

An *event* is one action of one agent: a shell command it ran or a tool it
called. Every reader here returns the same **canonical event table**, a
:class:`pyarrow.Table` with one row per event, sorted by ``(agent, time)``
(stable: events of one agent at the same instant keep their file order).

The schema
----------
==============  ===========================  ==========================================
column          type in the table            values
==============  ===========================  ==========================================
agent           string                       required; non-empty
time            timestamp[us, tz=UTC]        required; in the file ISO-8601 *with* a zone
                                             (``2026-01-01T10:00:00Z``,
                                             ``2026-01-01 12:00:00.5+02:00``) or epoch
                                             seconds (integer or decimal); years 1970-2261
action          string                       required; non-empty: the command line or the
                                             tool name
node            string                       optional; the host the agent runs on
risk_class      string                       optional; one of SAFE NETWORK PRIVESC
                                             DESTRUCTIVE CRITICAL (any letter case in the
                                             file; upper case in the table); null = not
                                             known (a risk map may fill it, see
                                             :mod:`tcpkit.detect.riskmap`)
predicted_risk  float64                      optional; the agent's own rating, in [0, 1]
confidence      float64                      optional; in [0, 1]
latency_ms      float64                      optional; finite, >= 0
outcome         string                       optional; one of ok error refused (any case
                                             in the file; lower case in the table)
arguments       string                       optional; the call's arguments as the text
                                             of a JSON object, in the canonical form
                                             written by :func:`json_text` (keys sorted,
                                             ``", "`` and ``": "`` separators, null
                                             fields left out)
==============  ===========================  ==========================================

Only the columns a file has appear in the table (an optional column is absent,
not null-filled, when the file lacks it, and an optional column without a
single value counts as absent); other columns in the file are ignored. In an optional column a null (an empty CSV cell, a JSON ``null``)
means "not recorded": features that need it skip that event. Numbers may be
written as numbers or as decimal text; NaN and infinities are errors.

How each format maps to the schema
----------------------------------
**JSON Lines** (``.jsonl``, ``.ndjson``): one JSON object per line, keys named
as the columns; ``arguments`` is a JSON object (a JSON string holding an object
is accepted too). Blank lines are skipped.

**CSV** (``.csv``): a header row with the column names, then one event per
row; ``arguments`` is a cell holding the JSON text of an object (quoted as
CSV quotes it). Only an empty cell is null: ``NA`` or ``null`` are text, and
``nan`` in a number column is an error (NaN), never a silent null.

**Parquet** (``.parquet``, ``.pq``): columns named as above; ``time`` a
timestamp with a zone (UTC-adjusted), or numbers (epoch seconds) or strings as
in the other formats; ``arguments`` a string column of JSON text or a struct
column.

**OTLP/JSON** (``.json``, ``.otlp``; or ``format="otlp"``): an OpenTelemetry
trace export (one ``ExportTraceServiceRequest`` document, or one per line as
the collector's file exporter writes them), following the GenAI semantic
conventions. Every span whose attribute ``gen_ai.operation.name`` is
``execute_tool`` is one event; other spans are ignored:

==============  ==========================================================
agent           span attribute ``gen_ai.agent.id``, else ``gen_ai.agent.name``
time            ``startTimeUnixNano``
action          span attribute ``gen_ai.tool.name``
node            resource attribute ``host.name``
latency_ms      ``(endTimeUnixNano - startTimeUnixNano) / 1e6``
outcome         ``error`` when the span status code is 2 (ERROR) or the span has
                an ``error.type`` attribute, else ``ok``
arguments       span attribute ``gen_ai.tool.call.arguments`` (a JSON string)
==============  ==========================================================

The GenAI conventions have no attribute for an action's risk, the agent's own
rating or a refusal, so tcpkit reads (and :mod:`tcpkit.detect.events_write`
writes) these extension attributes when present: ``tcpkit.risk_class``,
``tcpkit.predicted_risk``, ``tcpkit.confidence``, ``tcpkit.outcome`` (wins
over the status) and ``tcpkit.latency_ms`` (the exact value; wins over end
minus start, which is rounded to whole nanoseconds).

Compression and format
----------------------
A trailing ``.gz`` means gzip (``events.jsonl.gz``, ``events.parquet.gz``);
the format comes from the suffix before it. ``format=`` (``jsonl``, ``csv``,
``parquet``, ``otlp``) overrides the suffix; gzip is still taken from ``.gz``
or, without it, from the file's first two bytes.

Bad input
---------
Every problem raises one :class:`EventError` (a :class:`ValueError`) naming
the file, the line (JSON Lines; the data row for CSV and Parquet; the span for
OTLP) and the column: an empty file, a missing required column, an unknown risk
class or outcome, an unparseable time or a time without a zone, a NaN or
out-of-range number, arguments that are not a JSON object, a truncated or
corrupt gzip stream, an OTLP file without ``execute_tool`` spans. All checks
run in one place, :func:`encode_events`, which every reader calls through
:func:`validate_events` (and the streaming and Dask paths of
:mod:`tcpkit.detect.features` call directly). Text checks run once per distinct
value (a hash of the column, or a Parquet column's own dictionary); an error
still names the first row holding the bad value. :func:`encode_events` keeps the
text columns dictionary-encoded and the distinct arguments parsed
(:class:`EncodedEvents`), which is what the features consume;
:func:`validate_events` decodes that into the canonical table.

**Order.** Readers sort by ``(agent, time)``, so for a whole file the order of
its lines does not matter, and it is not checked. It matters where events are
consumed as they arrive (``tcpkit monitor`` following a growing log): a window
that has been closed cannot take an earlier event. ``ordered=True`` asks for
that check: an event earlier than the previous event of the same agent in file
order is an error naming its line.

Engine
------
Reading and validation use pyarrow: its CSV, JSON and Parquet readers and
:mod:`pyarrow.compute` kernels run in C++ on columnar buffers, with no Python
object per event; :mod:`tcpkit.detect.features` then aggregates with numpy
(``bincount`` over window keys) on those buffers. How it was chosen: pandas,
pyarrow, polars and DuckDB were timed on the same read of a few million events
from Parquet plus a per-(agent, hour) aggregation (means and a 95th
percentile), and ``tcpkit bench --ingest`` keeps the comparison that matters
here (read + all features, tcpkit against a plain pandas ``groupby``). pandas
was the slowest by far. polars and DuckDB were faster than pyarrow's own
``group_by`` and than numpy on that simple aggregate, but the features are not
simple aggregates (leave-one-out novelty against a reference period, (family,
class) cells, exact nearest-rank percentiles, pooled within-class deviations),
pyarrow is already required (pandas and ``dask.dataframe`` read Parquet through
it), and it meets the ingest target without a second query engine: so
pyarrow + numpy, and DuckDB is the candidate should aggregation ever dominate.
The OTLP reader walks the parsed JSON document in Python: OTLP/JSON nests
attributes as key/value lists of typed unions, with 64-bit integers written as
strings by some exporters and as numbers by others, which a column-type-inferring
reader cannot hold; the walk only picks fields, and its output goes through the
same validation.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq
from numpy.typing import NDArray

from tcpkit.detect.simulate import RISK_CLASSES

__all__ = [
    "COLUMNS",
    "FORMATS",
    "OPTIONAL",
    "OUTCOMES",
    "REQUIRED",
    "SCHEMA",
    "ArgumentObjects",
    "EncodedEvents",
    "EventError",
    "encode_events",
    "format_of",
    "read_agent_list",
    "read_verdicts",
    "json_text",
    "parse_objects",
    "read_events",
    "validate_events",
]

REQUIRED: tuple[str, ...] = ("agent", "time", "action")
OPTIONAL: tuple[str, ...] = (
    "node",
    "risk_class",
    "predicted_risk",
    "confidence",
    "latency_ms",
    "outcome",
    "arguments",
)
COLUMNS: tuple[str, ...] = REQUIRED + OPTIONAL
OUTCOMES: tuple[str, ...] = ("ok", "error", "refused")
FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet", "otlp")
TIME_TYPE = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [
        ("agent", pa.string()),
        ("time", TIME_TYPE),
        ("action", pa.string()),
        ("node", pa.string()),
        ("risk_class", pa.string()),
        ("predicted_risk", pa.float64()),
        ("confidence", pa.float64()),
        ("latency_ms", pa.float64()),
        ("outcome", pa.string()),
        ("arguments", pa.string()),
    ]
)
_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "otlp",
    ".otlp": "otlp",
}
_RANGES: dict[str, tuple[float, float]] = {
    "predicted_risk": (0.0, 1.0),
    "confidence": (0.0, 1.0),
    "latency_ms": (0.0, float("inf")),
}
# Epoch seconds accepted: 1970-01-01 up to the end of 2261 (inside timestamp[ns] too).
_EPOCH_MAX = 9_214_646_400.0
_NUMBER = r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$"
_ISO_WITH_ZONE = (
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?\s*(Z|z|[+-]\d{2}(:?\d{2})?)$"
)

Where = Callable[[int], str]


class EventError(ValueError):
    """An event file (or table) that does not follow the schema: one message naming where."""


def _list_rows(path: str | os.PathLike[str], what: str) -> tuple[Path, list[tuple[int, list[str]]]]:
    """The CSV rows of a small list file, each with its line number (blank and ``#`` lines skipped)."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EventError(f"{source}: cannot read the {what}: {exc}") from None
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1)]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    if not lines:
        raise EventError(f"{source}: the {what} is empty")
    parsed = csv.reader(line for _, line in lines)  # one row per kept line
    return source, [(n, [c.strip() for c in cells]) for (n, _), cells in zip(lines, parsed, strict=True)]


def read_agent_list(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Agent names from a text file: one per line, or a CSV whose header has an ``agent`` column.

    Fields are read as CSV (quoted names are unquoted, as in the labels file ``tcpkit
    simulate --labels`` writes). Blank lines and lines starting with ``#`` are skipped; a name listed twice, an empty
    file or an unreadable one is an :class:`EventError` naming the file and the line.
    (``tcpkit simulate --audited`` and ``tcpkit vet --trimmed`` write such a file; ``tcpkit
    detect --audited`` reads it.)
    """
    source, rows = _list_rows(path, "agent list")
    column = 0
    first_line, header = rows[0]
    if len(header) > 1 or header == ["agent"]:
        if "agent" not in header:
            raise EventError(f"{source}, line {first_line}: a CSV agent list needs an 'agent' column, got {header}")
        column = header.index("agent")
        rows = rows[1:]
    names: dict[str, int] = {}
    for n, cells in rows:
        name = cells[column] if column < len(cells) else ""
        if not name:
            raise EventError(f"{source}, line {n}: no agent name")
        if name in names:
            raise EventError(f"{source}, line {n}: agent {name!r} is listed twice (first on line {names[name]})")
        names[name] = n
    if not names:
        raise EventError(f"{source}: the agent list names no agent")
    return tuple(names)


VERDICTS: dict[str, bool] = {"compromised": True, "clean": False}


def read_verdicts(paths: Sequence[str | os.PathLike[str]]) -> dict[str, bool]:
    """An audit's verdicts: CSV files whose header has ``agent`` and ``verdict`` columns.

    ``verdict`` is ``compromised`` or ``clean`` (other columns, such as the ``position`` and
    ``outlyingness`` that ``tcpkit vet --out`` writes, are ignored). Returns ``{agent: True
    when compromised}`` over all files. A missing column, an empty or unknown verdict, or an agent
    judged twice (in one file or across files) is an :class:`EventError` naming the file and line.
    """
    out: dict[str, bool] = {}
    where: dict[str, str] = {}
    for path in paths:
        source, rows = _list_rows(path, "verdict file")
        first_line, header = rows[0]
        missing = [c for c in ("agent", "verdict") if c not in header]
        if missing:
            raise EventError(
                f"{source}, line {first_line}: a verdict file needs the columns agent and verdict, "
                f"got {header} (missing {', '.join(missing)})"
            )
        a_col, v_col = header.index("agent"), header.index("verdict")
        for n, cells in rows[1:]:
            name = cells[a_col] if a_col < len(cells) else ""
            verdict = cells[v_col].lower() if v_col < len(cells) else ""
            if not name:
                raise EventError(f"{source}, line {n}: no agent name")
            if verdict not in VERDICTS:
                shown = repr(verdict) if verdict else "no verdict"
                raise EventError(
                    f"{source}, line {n}: agent {name!r} has {shown}: write {' or '.join(VERDICTS)}"
                )
            if name in out:
                raise EventError(f"{source}, line {n}: agent {name!r} is judged twice (first in {where[name]})")
            out[name] = VERDICTS[verdict]
            where[name] = f"{source}, line {n}"
    return out


# --------------------------------------------------------------------------- format and bytes


def format_of(path: str | os.PathLike[str], format: str | None = None) -> tuple[str, bool]:
    """The format (one of :data:`FORMATS`) and whether the file is gzip-compressed.

    Parameters
    ----------
    path : file name; a trailing ``.gz`` means gzip.
    format : explicit format, overriding the suffix.

    Raises
    ------
    EventError
        When ``format`` is not a known format, or the suffix names none and no
        ``format`` is given.
    """
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if gz:
        suffixes = suffixes[:-1]
    if format is not None:
        if format not in FORMATS:
            raise EventError(f"{p}: unknown format {format!r}: use one of {', '.join(FORMATS)}")
        return format, gz
    if suffixes and suffixes[-1] in _SUFFIXES:
        return _SUFFIXES[suffixes[-1]], gz
    known = ", ".join(sorted(_SUFFIXES))
    raise EventError(
        f"{p}: cannot tell the format from the suffix (known: {known}, each optionally + .gz): "
        f"give format= (one of {', '.join(FORMATS)})"
    )


def _read_bytes(path: Path, gz: bool) -> bytes:
    """The file's bytes, gunzipped when ``gz`` or when it starts with the gzip magic."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EventError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if gz or data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except EOFError:
            raise EventError(
                f"{path}: truncated gzip: the compressed stream ends before its end marker"
            ) from None
        except (OSError, zlib.error) as exc:
            raise EventError(f"{path}: corrupt gzip stream: {exc}") from None
    if not data.strip():
        raise EventError(f"{path}: empty file: no events")
    return data


# --------------------------------------------------------------------------- public entry


def read_events(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    format: str | None = None,
    ordered: bool = False,
) -> pa.Table:
    """Read one or more event files into the canonical event table.

    Parameters
    ----------
    paths : one path or a sequence of paths (their events are concatenated).
    format : ``jsonl``, ``csv``, ``parquet`` or ``otlp``; default: by suffix.
    ordered : require each agent's events in time order in file order
        (see "Order" in the module docstring).

    Returns
    -------
    pyarrow.Table
        The canonical table (:data:`SCHEMA`, only the columns present), sorted
        by ``(agent, time)``.

    Raises
    ------
    EventError
        One message naming the file, line or row, and column of the first problem.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    tables = [_read_one(Path(p), format, ordered) for p in paths]
    if not tables:
        raise EventError("no event files given")
    if len(tables) == 1:
        return tables[0]
    names = [n for n in SCHEMA.names if all(n in t.column_names for t in tables)]
    dropped = sorted({n for t in tables for n in t.column_names} - set(names))
    if dropped:
        raise EventError(
            f"the event files do not share the optional columns {dropped}: give files with "
            "the same columns (or drop those columns)"
        )
    table = pa.concat_tables([t.select(names) for t in tables])
    return table.take(pc.sort_indices(table, [("agent", "ascending"), ("time", "ascending")]))


def _read_one(path: Path, format: str | None, ordered: bool) -> pa.Table:
    fmt, gz = format_of(path, format)
    data = _read_bytes(path, gz)
    raw, where = _READERS[fmt](path, data)
    return validate_events(raw, source=str(path), where=where, ordered=ordered)


# --------------------------------------------------------------------------- readers


_JSON_TEXT = ("agent", "action", "node", "risk_class", "outcome")


def _json_options(time_type: pa.DataType) -> pjson.ParseOptions:
    """Text columns stay text (pyarrow would otherwise turn ISO times into naive timestamps)."""
    fields = [(c, pa.string()) for c in _JSON_TEXT] + [("time", time_type)]
    return pjson.ParseOptions(explicit_schema=pa.schema(fields))


def _read_jsonl(path: Path, data: bytes) -> tuple[pa.Table, Where]:
    table: pa.Table | None = None
    for time_type in (pa.string(), pa.float64()):  # ISO text, else epoch seconds
        options = _json_options(time_type)
        try:
            table = pjson.read_json(pa.BufferReader(data), parse_options=options)
            break
        except pa.ArrowInvalid as exc:
            if "Column(/time)" in str(exc) and time_type == pa.string():
                continue
            line, column = _locate_jsonl(data, options)
            if column == "arguments":
                # arguments whose values change type between lines: parse line by line
                table = _jsonl_slow(path, data)
                break
            col = f", column {column!r}" if column else ""
            raise EventError(
                f"{path}, line {line}{col}: not valid JSON Lines: {_short(exc)}"
            ) from None
    assert table is not None
    present = [c for c in table.column_names if c in COLUMNS]
    table = table.select(present)
    if "arguments" in table.column_names and not _is_text(table.column("arguments").type):
        table = table.set_column(
            table.column_names.index("arguments"),
            "arguments",
            json_text(table.column("arguments").combine_chunks()),
        )
    lines = _jsonl_line_numbers(data) if table.num_rows else None

    def where(i: int) -> str:
        return f"line {int(lines[i]) if lines is not None else i + 1}"

    return table, where


def _jsonl_line_numbers(data: bytes) -> np.ndarray:
    """1-based line number of each non-blank line (pyarrow skips blank lines)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], ends + 1))
    stops = np.concatenate((ends, [buf.size]))
    blank_chars = np.isin(buf, (9, 10, 13, 32))
    nonblank = np.concatenate(([0], np.cumsum(~blank_chars)))
    has = nonblank[stops] - nonblank[starts] > 0
    return np.flatnonzero(has) + 1


def _locate_jsonl(data: bytes, options: pjson.ParseOptions) -> tuple[int, str | None]:
    """First line whose prefix fails to parse (binary search), and the column pyarrow named."""
    lines = data.split(b"\n")
    lo, hi = 1, len(lines)  # the prefix of hi lines fails; find the smallest failing prefix
    column: str | None = None
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            pjson.read_json(pa.BufferReader(b"\n".join(lines[:mid])), parse_options=options)
        except pa.ArrowInvalid:
            hi = mid
        else:
            lo = mid + 1
    try:
        pjson.read_json(pa.BufferReader(b"\n".join(lines[:hi])), parse_options=options)
    except pa.ArrowInvalid as exc:
        m = re.search(r"Column\(/([^)/]*)", str(exc))
        column = m.group(1) if m else None
    return hi, column


def _jsonl_slow(path: Path, data: bytes) -> pa.Table:
    """JSON Lines read line by line (only for arguments whose value types vary)."""
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise EventError(f"{path}, line {number}: not valid JSON: {exc}") from None
        if not isinstance(row, dict):
            raise EventError(f"{path}, line {number}: expected a JSON object per line")
        args = row.get("arguments")
        if args is not None and not isinstance(args, str):
            row["arguments"] = _dumps(args)
        rows.append(row)
    keys = list(dict.fromkeys(k for row in rows for k in row if k in COLUMNS))
    arrays = {}
    for k in keys:
        values = [row.get(k) for row in rows]
        try:
            arrays[k] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: let validation judge the text
            arrays[k] = pa.array([None if v is None else str(v) for v in values], pa.string())
    return pa.table(arrays)


_CSV_TEXT = {c: pa.string() for c in ("agent", "time", "action", "node", "risk_class", "outcome", "arguments")}


def _read_csv(path: Path, data: bytes) -> tuple[pa.Table, Where]:
    convert = pcsv.ConvertOptions(
        column_types=_CSV_TEXT,
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )
    try:
        table = pcsv.read_csv(pa.BufferReader(data), convert_options=convert)
    except pa.ArrowInvalid as exc:
        raise EventError(f"{path}: not valid CSV: {_short(exc)}") from None
    return table, lambda i: f"row {i + 1}"


def _read_parquet(path: Path, data: bytes) -> tuple[pa.Table, Where]:
    try:
        pf = pq.ParquetFile(pa.BufferReader(data))
        names = [n for n in pf.schema_arrow.names if n in COLUMNS]
        table = pf.read(columns=names)
    except (pa.ArrowInvalid, OSError) as exc:
        raise EventError(f"{path}: not a readable Parquet file: {_short(exc)}") from None
    return table, lambda i: f"row {i + 1}"


def _read_otlp(path: Path, data: bytes) -> tuple[pa.Table, Where]:
    """OTLP/JSON with pyarrow's JSON reader; the Python walk when pyarrow cannot type it."""
    try:
        columnar = _otlp_columnar(data)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, KeyError):
        columnar = None
    if columnar is None:
        return _read_otlp_walk(path, data)
    table, n_spans, selected, span_ids = columnar
    if table.num_rows == 0:
        raise EventError(
            f"{path}: no execute_tool spans: none of its {n_spans} spans has "
            "gen_ai.operation.name = execute_tool"
        )

    def where(i: int) -> str:
        return f"span {int(selected[i]) + 1} (spanId {span_ids[i].as_py() if span_ids is not None else '?'})"

    return table, where


def _otlp_columnar(data: bytes) -> tuple[pa.Table, int, NDArray[np.int64], pa.Array | None] | None:
    """Flatten resourceSpans -> scopeSpans -> spans and pivot the attributes, vectorised.

    Returns (table, number of spans, index of each kept span, their spanIds), or
    None when the document has another shape (then the Python walk reads it).
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.concatenate(([-1], np.flatnonzero(buf == 10), [buf.size]))
    longest = int(np.diff(ends).max())
    try:  # one document per line; a block must hold the longest line
        options = pjson.ReadOptions(block_size=min(max(longest + 1, 1 << 20), 2**31 - 1))
        docs = pjson.read_json(pa.BufferReader(data), read_options=options)
    except pa.ArrowInvalid:
        one_line = data.replace(b"\r", b" ").replace(b"\n", b" ")  # a pretty-printed document
        options = pjson.ReadOptions(block_size=min(len(one_line) + 1, 2**31 - 1))
        docs = pjson.read_json(pa.BufferReader(one_line), read_options=options)
    if "resourceSpans" not in docs.column_names:
        return None
    rs = pc.list_flatten(docs.column("resourceSpans").combine_chunks())
    if not pa.types.is_struct(rs.type) or rs.type.get_field_index("scopeSpans") < 0:
        return None
    scope_lists = pc.struct_field(rs, "scopeSpans")
    ss = pc.list_flatten(scope_lists)
    ss_rs = np.asarray(pc.list_parent_indices(scope_lists).to_numpy(zero_copy_only=False), np.int64)
    span_lists = pc.struct_field(ss, "spans")
    spans = pc.list_flatten(span_lists)
    span_ss = np.asarray(pc.list_parent_indices(span_lists).to_numpy(zero_copy_only=False), np.int64)
    n_spans = len(spans)
    span_rs = ss_rs[span_ss]

    def field(struct: pa.Array, name: str) -> pa.Array | None:
        return pc.struct_field(struct, name) if struct.type.get_field_index(name) >= 0 else None

    def pivot(lists: pa.Array | None, n: int) -> Callable[[str, str], pa.Array]:
        """attribute(name, kind) -> one value per owner (null where absent)."""
        if lists is None:
            return lambda name, kind: pa.nulls(n, pa.string() if kind == "text" else pa.float64())
        flat = pc.list_flatten(lists)
        owner = np.asarray(pc.list_parent_indices(lists).to_numpy(zero_copy_only=False), np.int64)
        keys = pc.struct_field(flat, "key")
        values = pc.struct_field(flat, "value")

        def get(name: str, kind: str) -> pa.Array:
            hit = np.asarray(pc.fill_null(pc.equal(keys, name), False).to_numpy(zero_copy_only=False), bool)
            pos = np.full(n, -1, dtype=np.int64)
            pos[owner[hit][::-1]] = np.flatnonzero(hit)[::-1]  # the first occurrence wins
            take = pa.array(pos, mask=pos < 0)
            if kind == "text":
                v = field(values, "stringValue")
                return pa.nulls(n, pa.string()) if v is None else v.cast(pa.string()).take(take)
            parts = [field(values, k) for k in ("doubleValue", "intValue")]
            nums = [p.cast(pa.float64()) for p in parts if p is not None]
            if not nums:
                return pa.nulls(n, pa.float64())
            return (pc.coalesce(*nums) if len(nums) > 1 else nums[0]).take(take)

        return get

    resource = field(rs, "resource")
    host = pivot(field(resource, "attributes") if resource is not None else None, len(rs))
    node = host("host.name", "text").take(pa.array(span_rs)) if n_spans else pa.nulls(0, pa.string())
    attr = pivot(field(spans, "attributes"), n_spans)
    op = attr("gen_ai.operation.name", "text")
    keep = np.flatnonzero(np.asarray(pc.fill_null(pc.equal(op, "execute_tool"), False).to_numpy(zero_copy_only=False), bool))
    idx = pa.array(keep)

    def nanos(name: str) -> pa.Array:
        col = field(spans, name)
        return pa.nulls(len(keep), pa.int64()) if col is None else col.cast(pa.int64()).take(idx)

    start, end = nanos("startTimeUnixNano"), nanos("endTimeUnixNano")
    status = field(spans, "status")
    code = field(status, "code") if status is not None else None
    failed = np.zeros(len(keep), dtype=bool)
    if code is not None:
        text = code.cast(pa.string()).take(idx)
        failed |= np.asarray(pc.fill_null(pc.is_in(text, value_set=pa.array(["2", "STATUS_CODE_ERROR", "ERROR"])), False).to_numpy(zero_copy_only=False), bool)
    failed |= np.asarray(pc.is_valid(attr("error.type", "text").take(idx)).to_numpy(zero_copy_only=False), bool)
    own_outcome = attr("tcpkit.outcome", "text").take(idx)
    outcome = pc.coalesce(own_outcome, pa.array(np.where(failed, "error", "ok")))
    latency = pc.coalesce(
        attr("tcpkit.latency_ms", "number").take(idx),
        pc.divide(pc.subtract(end, start).cast(pa.float64()), 1e6),
    )
    agent = pc.coalesce(attr("gen_ai.agent.id", "text"), attr("gen_ai.agent.name", "text")).take(idx)
    columns: dict[str, pa.Array] = {
        "agent": agent,
        "time": pc.divide(start, 1000).cast(pa.timestamp("us", tz="UTC")),
        "action": attr("gen_ai.tool.name", "text").take(idx),
        "node": node.take(idx),
        "risk_class": attr("tcpkit.risk_class", "text").take(idx),
        "predicted_risk": attr("tcpkit.predicted_risk", "number").take(idx),
        "confidence": attr("tcpkit.confidence", "number").take(idx),
        "latency_ms": latency,
        "outcome": outcome,
        "arguments": attr("gen_ai.tool.call.arguments", "text").take(idx),
    }
    table = pa.table({k: v for k, v in columns.items() if k in REQUIRED or v.null_count < len(v)})
    span_id = field(spans, "spanId")
    return table, n_spans, keep, None if span_id is None else span_id.cast(pa.string()).take(idx)


def _read_otlp_walk(path: Path, data: bytes) -> tuple[pa.Table, Where]:
    documents: list[Any] = []
    try:
        documents = [json.loads(data)]
    except ValueError:
        for number, line in enumerate(data.split(b"\n"), start=1):
            if line.strip():
                try:
                    documents.append(json.loads(line))
                except ValueError as exc:
                    raise EventError(f"{path}, line {number}: not valid OTLP/JSON: {exc}") from None
    cols: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    spans_seen: list[str] = []
    n_spans = 0
    for doc in documents:
        resource_spans = doc.get("resourceSpans", []) if isinstance(doc, dict) else []
        for rs in resource_spans:
            host = _attrs(rs.get("resource", {}).get("attributes", [])).get("host.name")
            for ss in rs.get("scopeSpans", rs.get("instrumentationLibrarySpans", [])):
                for span in ss.get("spans", []):
                    n_spans += 1
                    a = _attrs(span.get("attributes", []))
                    if a.get("gen_ai.operation.name") != "execute_tool":
                        continue
                    spans_seen.append(f"span {n_spans} (spanId {span.get('spanId', '?')})")
                    start, end = span.get("startTimeUnixNano"), span.get("endTimeUnixNano")
                    status = span.get("status", {}) or {}
                    failed = _status_code(status.get("code")) == 2 or "error.type" in a
                    latency = a.get("tcpkit.latency_ms")
                    if latency is None and start is not None and end is not None:
                        latency = (int(end) - int(start)) / 1e6
                    cols["agent"].append(a.get("gen_ai.agent.id", a.get("gen_ai.agent.name")))
                    cols["time"].append(int(start) // 1000 if start is not None else None)
                    cols["action"].append(a.get("gen_ai.tool.name"))
                    cols["node"].append(host)
                    cols["risk_class"].append(a.get("tcpkit.risk_class"))
                    cols["predicted_risk"].append(a.get("tcpkit.predicted_risk"))
                    cols["confidence"].append(a.get("tcpkit.confidence"))
                    cols["latency_ms"].append(latency)
                    cols["outcome"].append(a.get("tcpkit.outcome", "error" if failed else "ok"))
                    cols["arguments"].append(a.get("gen_ai.tool.call.arguments"))
    if not spans_seen:
        raise EventError(
            f"{path}: no execute_tool spans: none of its {n_spans} spans has "
            "gen_ai.operation.name = execute_tool"
        )
    arrays: dict[str, pa.Array] = {}
    for name, values in cols.items():
        if name in ("agent", "time", "action") or any(v is not None for v in values):
            typ = pa.timestamp("us", tz="UTC") if name == "time" else None
            try:
                arrays[name] = pa.array(values, type=typ)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                arrays[name] = pa.array([None if v is None else str(v) for v in values])
    return pa.table(arrays), lambda i: spans_seen[i]


def _status_code(code: Any) -> int | None:
    if code in ("STATUS_CODE_ERROR", "ERROR"):
        return 2
    try:
        return int(code)
    except (TypeError, ValueError):
        return None


def _attrs(items: Iterable[Any]) -> dict[str, Any]:
    """OTLP key/value attribute list -> dict of plain values."""
    out: dict[str, Any] = {}
    for item in items:
        if isinstance(item, dict) and "key" in item:
            out[item["key"]] = _any_value(item.get("value", {}))
    return out


def _any_value(v: Any) -> Any:
    if not isinstance(v, dict):
        return v
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [_any_value(x) for x in v["arrayValue"].get("values", [])]
    if "kvlistValue" in v:
        return _attrs(v["kvlistValue"].get("values", []))
    return None


_READERS: dict[str, Callable[[Path, bytes], tuple[pa.Table, Where]]] = {
    "jsonl": _read_jsonl,
    "csv": _read_csv,
    "parquet": _read_parquet,
    "otlp": _read_otlp,
}


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True, eq=False)
class ArgumentObjects:
    """The distinct argument texts of an :class:`EncodedEvents` table, parsed once.

    Entry ``j`` describes entry ``j`` of the ``arguments`` column's dictionary (a distinct
    input text); the canonical text of each (:meth:`canonical`) is made only when a
    consumer decodes the table, since the features need the parsed objects alone.

    Attributes
    ----------
    fields : pyarrow.Table or None
        One row per entry and one column per key (pyarrow's JSON reader); None when
        the values of a key change type between objects, which pyarrow cannot hold.
    objects : tuple of (dict or None), or None
        Each entry as a plain dict (null fields left out; None for an entry without
        arguments); given only when ``fields`` is None.
    present : (n_entries,) bool
        Entries that hold arguments (False: null, empty or blank text; and every entry
        when no object has a key at all).
    """

    fields: pa.Table | None
    objects: tuple[dict[str, Any] | None, ...] | None
    present: NDArray[np.bool_]

    def canonical(self) -> pa.Array:
        """The canonical text (:func:`json_text`) of every entry, null where it has no arguments."""
        if self.fields is None:
            assert self.objects is not None
            return pa.array([None if o is None else _dumps(o) for o in self.objects], type=pa.string())
        if self.fields.num_columns == 0:
            return pa.nulls(len(self.present), pa.string())
        struct = pa.StructArray.from_arrays(
            [c.combine_chunks() for c in self.fields.columns], names=self.fields.column_names
        )
        return pc.if_else(pa.array(self.present), json_text(struct), pa.scalar(None, pa.string()))


@dataclass(frozen=True, eq=False)
class EncodedEvents:
    """A validated event table whose text columns stay dictionary-encoded.

    The same rows, row order and values as :func:`validate_events`, but ``agent``,
    ``action``, ``node``, ``risk_class``, ``outcome`` and ``arguments`` are
    ``dictionary<int32, string>`` columns: each value used once in the dictionary (the
    ``agent`` dictionary sorted, so codes follow the row order), a null row a null index.
    The ``arguments`` dictionary holds the distinct input texts (a row without arguments is
    null) and ``arguments`` the parsed objects behind them. Why: validation, risk classes,
    families and novelty then work once per distinct value instead of once per event,
    and a Parquet reader can hand over its dictionaries without decoding them.
    :mod:`tcpkit.detect.features` consumes this form; :meth:`canonical` decodes it.
    """

    table: pa.Table
    arguments: ArgumentObjects | None = None

    @property
    def num_rows(self) -> int:
        """Number of events."""
        return int(self.table.num_rows)

    def canonical(self) -> pa.Table:
        """The canonical event table (text columns decoded to strings, arguments to canonical text)."""
        cols: dict[str, pa.Array | pa.ChunkedArray] = {}
        for name, col in zip(self.table.column_names, self.table.columns, strict=True):
            if name == "arguments" and self.arguments is not None:
                codes = _codes(col)
                text = self.arguments.canonical()
                cols[name] = text.take(pa.array(codes, mask=codes < 0))
            elif pa.types.is_dictionary(col.type):
                cols[name] = col.cast(pa.string())
            else:
                cols[name] = col
        return pa.table(cols, schema=pa.schema([SCHEMA.field(n) for n in cols]))


def validate_events(
    raw: pa.Table,
    *,
    source: str = "<table>",
    where: Where | None = None,
    ordered: bool = False,
) -> pa.Table:
    """Check a raw table against the schema and return the canonical, sorted table.

    The one validation point: every reader ends here, and so may a table built in
    memory (the simulator's, a test's). It is :func:`encode_events` decoded.

    Parameters
    ----------
    raw : a table with (some of) the columns of :data:`SCHEMA`, in any types the
        formats produce (strings, dictionary-encoded strings, numbers, timestamps,
        structs for arguments).
    source : what to call it in errors (the file name).
    where : row index -> "line 12" / "row 12" / "span 3 (...)"; default "row i+1".
    ordered : require each agent's events in time order in row order.

    Raises
    ------
    EventError
        The first problem, naming ``source``, the line or row, and the column.
    """
    return encode_events(raw, source=source, where=where, ordered=ordered).canonical()


def encode_events(
    raw: pa.Table,
    *,
    source: str = "<table>",
    where: Where | None = None,
    ordered: bool = False,
) -> EncodedEvents:
    """Check a raw table against the schema; return it sorted, its text columns encoded.

    Parameters and errors as :func:`validate_events` (which decodes this result). Text
    checks (non-empty, known class or outcome, arguments that are JSON objects) run once
    per distinct value; an error still names the first row holding the bad value.
    """
    loc: Where = where if where is not None else (lambda i: f"row {i + 1}")
    if raw.num_rows == 0:
        raise EventError(f"{source}: empty file: no events")
    missing = [c for c in REQUIRED if c not in raw.column_names]
    if missing:
        raise EventError(
            f"{source}: missing required column {missing[0]!r} "
            f"(required: {', '.join(REQUIRED)}; found: {', '.join(raw.column_names) or 'none'})"
        )

    def fail(i: int, column: str, problem: str) -> EventError:
        return EventError(f"{source}, {loc(i)}, column {column!r}: {problem}")

    out: dict[str, pa.Array] = {}
    arguments: ArgumentObjects | None = None
    for name in SCHEMA.names:
        if name not in raw.column_names:
            continue
        col = raw.column(name).combine_chunks()
        if name in OPTIONAL and col.null_count == len(col):
            continue  # an optional column with no value at all is absent
        if name in ("agent", "action", "node"):
            out[name] = _text_column(col, name, fail, required=name != "node", sort=name == "agent")
        elif name == "time":
            out[name] = _time_column(col, fail)
        elif name in ("risk_class", "outcome"):
            allowed = RISK_CLASSES if name == "risk_class" else OUTCOMES
            out[name] = _choice_column(col, name, allowed, fail)
        elif name in _RANGES:
            out[name] = _number_column(col, name, fail)
        else:
            out[name], arguments = _arguments_column(col, fail)
        if name in OPTIONAL and out[name].null_count == len(out[name]):
            del out[name]  # e.g. arguments that are all empty objects
            arguments = None if name == "arguments" else arguments
    table = pa.table(out)
    agent = _codes(out["agent"])
    t = np.asarray(out["time"].cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    if ordered:
        _check_order(agent, t, out["agent"], fail)
    same = agent[1:] == agent[:-1]
    if not (np.all(agent[1:] >= agent[:-1]) and np.all(t[1:][same] >= t[:-1][same])):
        table = table.take(pa.array(np.lexsort((t, agent))))  # stable: ties keep file order
    return EncodedEvents(table, arguments)


Fail = Callable[[int, str, str], EventError]


def _codes(col: pa.Array | pa.ChunkedArray) -> NDArray[np.int64]:
    """The dictionary index of every row of a dictionary array, -1 for a null row."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    indices = col.indices
    if indices.null_count:
        indices = pc.fill_null(indices, -1)
    return np.asarray(indices.to_numpy(zero_copy_only=False), dtype=np.int64)


def _dictionary_array(codes: NDArray[np.int64], values: pa.Array) -> pa.DictionaryArray:
    """A dictionary array from row codes (-1: null) and its distinct values."""
    null = codes < 0
    indices = pa.array(codes.astype(np.int32), mask=null if null.any() else None)
    return pa.DictionaryArray.from_arrays(indices, values)


def _encode(col: pa.Array) -> tuple[NDArray[np.int64], pa.Array]:
    """(code of every row, -1 for null; the distinct values), each value used and once.

    A plain column is hashed once; a dictionary column keeps its codes, and its
    dictionary (which may hold unused, null or repeated values, e.g. in a slice of a
    Parquet row group) is reduced to the values the rows use, each once.
    """
    if not pa.types.is_dictionary(col.type):
        encoded = pc.dictionary_encode(col)
        return _codes(encoded), encoded.dictionary
    codes = _codes(col)
    values = col.dictionary
    n = len(values)
    used = np.zeros(n, dtype=bool)
    used[codes[codes >= 0]] = True
    if values.null_count:
        used &= np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    keep = np.flatnonzero(used)
    unique = pc.dictionary_encode(values.take(pa.array(keep)))
    remap = np.full(n + 1, -1, dtype=np.int64)  # the last entry maps code -1 to -1
    remap[keep] = _codes(unique)
    return remap[codes], unique.dictionary


def _first_row(codes: NDArray[np.int64], bad: NDArray[np.bool_], *, null_bad: bool = False) -> int:
    """The first row whose value is bad (``bad`` by code; a null row is bad when ``null_bad``)."""
    return int(np.flatnonzero(np.append(bad, null_bad)[codes])[0])


def _first(mask: pa.Array | np.ndarray) -> int:
    """Index of the first true element."""
    arr = mask.to_numpy(zero_copy_only=False) if isinstance(mask, pa.Array) else mask
    return int(np.flatnonzero(arr)[0])


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _values_type(col: pa.Array) -> pa.DataType:
    return col.type.value_type if pa.types.is_dictionary(col.type) else col.type


def _first_cast_failure(col: pa.Array, target: pa.DataType) -> int:
    """Index of the first element that does not cast (binary search over halves)."""
    lo, hi = 0, len(col)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            col.slice(lo, mid - lo).cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            hi = mid
        else:
            lo = mid
    return lo


def _text_column(col: pa.Array, name: str, fail: Fail, *, required: bool, sort: bool = False) -> pa.Array:
    t = _values_type(col)
    if not _is_text(t):
        if pa.types.is_null(t) and not required:
            return pa.nulls(len(col), pa.string())
        if not (pa.types.is_integer(t) or pa.types.is_null(t)):
            raise fail(0, name, f"expected text, the column holds {col.type}")
    codes, values = _encode(col)
    if not _is_text(values.type):
        values = values.cast(pa.string())
    values = values.cast(pa.string())
    if required:
        empty = np.asarray(pc.equal(pc.utf8_trim_whitespace(values), "").to_numpy(zero_copy_only=False), bool)
        if (codes < 0).any() or empty.any():
            raise fail(_first_row(codes, empty, null_bad=True), name, "missing or empty (required)")
    if sort and len(values) > 1:
        order = np.asarray(pc.sort_indices(values).to_numpy(zero_copy_only=False), dtype=np.int64)
        rank = np.empty(order.size + 1, dtype=np.int64)
        rank[order] = np.arange(order.size)
        rank[-1] = -1
        codes, values = rank[codes], values.take(pa.array(order))
    return _dictionary_array(codes, values)


def _time_column(col: pa.Array, fail: Fail) -> pa.Array:
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if pc.any(pc.is_null(col)).as_py():
        raise fail(_first(pc.is_null(col)), "time", "missing (required)")
    t = col.type
    if pa.types.is_timestamp(t):
        if t.tz is None:
            raise fail(0, "time", "timestamp without a time zone: store UTC-adjusted times")
        return col.cast(TIME_TYPE)
    if _is_text(t):
        numeric = pc.match_substring_regex(col, _NUMBER)
        if pc.all(numeric).as_py():
            return _epoch_seconds(col.cast(pa.float64()), fail)
        iso = pc.match_substring_regex(col, _ISO_WITH_ZONE)
        if not pc.all(iso).as_py():
            i = _first(pc.invert(iso))
            raise fail(
                i,
                "time",
                f"unparseable time {col[i].as_py()!r}: expected ISO-8601 with a zone "
                "(2026-01-01T10:00:00Z, ...+02:00) or epoch seconds",
            )
        normal = pc.replace_substring_regex(col, r"\s*[zZ]$", "Z")
        normal = pc.replace_substring_regex(normal, r"\s+([+-]\d)", r"\1")
        try:
            return normal.cast(TIME_TYPE)
        except pa.ArrowInvalid:
            i = _first_cast_failure(normal, TIME_TYPE)
            raise fail(i, "time", f"unparseable time {col[i].as_py()!r}: not a valid date or time") from None
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return _epoch_seconds(col.cast(pa.float64()), fail)
    raise fail(0, "time", f"expected ISO-8601 text or epoch seconds, the column holds {t}")


def _epoch_seconds(seconds: pa.Array, fail: Fail) -> pa.Array:
    x = seconds.to_numpy(zero_copy_only=False)
    bad = ~np.isfinite(x) | (x < 0) | (x > _EPOCH_MAX)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise fail(i, "time", f"epoch seconds {float(x[i])!r} out of range (1970 to 2261)")
    us = np.rint(x * 1e6).astype(np.int64)
    return pa.array(us, type=pa.int64()).cast(TIME_TYPE)


def _choice_column(col: pa.Array, name: str, allowed: tuple[str, ...], fail: Fail) -> pa.Array:
    t = _values_type(col)
    if pa.types.is_null(t):
        return pa.nulls(len(col), pa.string())
    if not _is_text(t):
        raise fail(0, name, f"expected text, the column holds {col.type}")
    codes, values = _encode(col)
    values = values.cast(pa.string())
    norm = pc.utf8_upper(values) if name == "risk_class" else pc.utf8_lower(values)
    norm = pc.utf8_trim_whitespace(norm)
    ok = np.asarray(pc.is_in(norm, value_set=pa.array(allowed)).to_numpy(zero_copy_only=False), bool)
    if not ok.all():
        i = _first_row(codes, ~ok)
        kind = "risk class" if name == "risk_class" else "outcome"
        value = values[int(codes[i])].as_py()
        raise fail(i, name, f"unknown {kind} {value!r}: allowed {', '.join(allowed)}")
    unique = pc.dictionary_encode(norm)  # "safe" and "SAFE" are one class
    remap = np.append(_codes(unique), -1)
    return _dictionary_array(remap[codes], unique.dictionary)


def _number_column(col: pa.Array, name: str, fail: Fail) -> pa.Array:
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if pa.types.is_null(col.type):
        return pa.nulls(len(col), pa.float64())
    if _is_text(col.type):
        number = pc.fill_null(pc.match_substring_regex(col, _NUMBER), True)
        if not pc.all(number).as_py():
            i = _first(pc.invert(number))
            raise fail(i, name, f"not a number: {col[i].as_py()!r}")
    elif not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        raise fail(0, name, f"expected numbers, the column holds {col.type}")
    x = col.cast(pa.float64())
    values = x.to_numpy(zero_copy_only=False)  # nulls become NaN here: test validity apart
    valid = ~np.asarray(x.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    nan = valid & np.isnan(values)
    if nan.any():
        raise fail(_first(nan), name, "NaN is not a number: leave the value empty (null) instead")
    low, high = _RANGES[name]
    with np.errstate(invalid="ignore"):
        out = valid & ~((values >= low) & (values <= high) & np.isfinite(values))
    if out.any():
        i = _first(out)
        allowed = f"[{low}, {high}]" if np.isfinite(high) else f">= {low} and finite"
        raise fail(i, name, f"{float(values[i])!r} is out of range: allowed {allowed}")
    return x


def _arguments_column(col: pa.Array, fail: Fail) -> tuple[pa.Array, ArgumentObjects | None]:
    t = _values_type(col)
    if pa.types.is_null(t):
        return pa.nulls(len(col), pa.string()), None
    if pa.types.is_dictionary(col.type) and not _is_text(t):
        col = col.cast(t)
    if not _is_text(t):
        if not (pa.types.is_struct(t) or pa.types.is_map(t)):
            raise fail(0, "arguments", f"expected a JSON object, the column holds {col.type}")
        col = json_text(col)
    codes, values = _encode(col)
    try:
        objects = _parse_distinct(values.cast(pa.string()))
    except _NotObject as exc:
        bad = np.zeros(len(values), dtype=bool)
        bad[exc.index] = True
        raise fail(_first_row(codes, bad), "arguments", exc.problem) from None
    has = np.append(objects.present, False)
    return _dictionary_array(np.where(has[codes], codes, -1), values), objects


def _check_order(agent: NDArray[np.int64], t: NDArray[np.int64], names: pa.Array, fail: Fail) -> None:
    """First event earlier than the previous event of its agent, in row order."""
    order = np.argsort(agent, kind="stable")
    a, ts = agent[order], t[order]
    back = (a[1:] == a[:-1]) & (ts[1:] < ts[:-1])
    if back.any():
        rows = order[1:][back]
        i = int(rows.min())
        raise fail(
            i,
            "time",
            f"out of order: earlier than the previous event of agent "
            f"{names[i].as_py()!r} (ordered input required)",
        )


# --------------------------------------------------------------------------- JSON text


class _NotObject(Exception):
    def __init__(self, index: int, problem: str) -> None:
        super().__init__(problem)
        self.index = index
        self.problem = problem


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), sort_keys=True)


def _any_byte(strings: pa.Array, chars: tuple[int, ...]) -> bool:
    """Whether a byte of the (non-null parts of the) strings is one of ``chars`` (code < 32 for 32)."""
    strings = strings.cast(pa.string())
    data = strings.buffers()[2]
    if data is None or len(strings) == 0:
        return False
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int32)[strings.offset : strings.offset + len(strings) + 1]
    body = np.frombuffer(data, dtype=np.uint8)[int(offsets[0]) : int(offsets[-1])]
    return any(bool((body < 32).any() if c == 32 else (body == c).any()) for c in chars)


_NEWLINES = (10, 13)
_JSON_SPECIAL = (32, ord('"'), ord("\\"))  # 32: any control character


def parse_objects(texts: pa.Array) -> tuple[pa.Table | None, NDArray[np.int64], pa.Array]:
    """Parse a string array of JSON objects with pyarrow's JSON reader, once per distinct text.

    Null, empty or blank texts stand for no arguments (null in the result).

    Returns
    -------
    (fields, index, canonical)
        ``fields``: a table with one row per *distinct* text and one column per
        key (None when the values of a key change type between texts, which
        pyarrow cannot hold); ``index``: for every input, its row in ``fields``;
        ``canonical``: every input's object in canonical text (:func:`json_text`),
        null where the input was null or blank.

    Raises
    ------
    _NotObject
        Naming the index (in ``texts``) of the first text that is not a JSON object.
    """
    encoded = pc.dictionary_encode(texts.cast(pa.string()), null_encoding="encode")
    distinct = encoded.dictionary.cast(pa.string())
    index = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    try:
        objects = _parse_distinct(distinct)
    except _NotObject as exc:
        raise _NotObject(int(np.flatnonzero(index == exc.index)[0]), exc.problem) from None
    return objects.fields, index, objects.canonical().take(pa.array(index))


def _parse_distinct(distinct: pa.Array) -> ArgumentObjects:
    """The objects of distinct JSON texts (null, empty or blank: no arguments).

    pyarrow's JSON reader parses them all at once; when it cannot (a key's values change
    type), Python's :mod:`json` does, one text at a time. Raises :class:`_NotObject`
    naming the index of the first text that is not a JSON object.
    """
    blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(distinct), ""), True)
    present = ~np.asarray(blank.to_numpy(zero_copy_only=False), dtype=bool)
    text = pc.replace_substring_regex(distinct, r"[\r\n]", " ") if _any_byte(distinct, _NEWLINES) else distinct
    filled = pc.if_else(blank, "{}", text)
    lined = pc.binary_join_element_wise(filled, "\n", "")
    offsets = np.frombuffer(lined.buffers()[1], dtype=np.int32)[
        lined.offset : lined.offset + len(lined) + 1
    ]
    data = lined.buffers()[2]
    body = data[int(offsets[0]) : int(offsets[-1])] if data is not None else pa.py_buffer(b"")
    try:
        fields = pjson.read_json(pa.BufferReader(body))
        if fields.num_rows != len(distinct):
            raise pa.ArrowInvalid("row count changed")
    except pa.ArrowInvalid:
        return ArgumentObjects(None, _objects_slow(distinct, blank), present)
    if fields.num_columns == 0:
        present[:] = False
    return ArgumentObjects(fields, None, present)


def _objects_slow(texts: pa.Array, blank: pa.Array) -> tuple[dict[str, Any] | None, ...]:
    """Each text as a dict without its null fields (None for blank), with Python's :mod:`json`."""
    out: list[dict[str, Any] | None] = []
    for i, (text, empty) in enumerate(zip(texts.to_pylist(), blank.to_pylist(), strict=True)):
        if empty:
            out.append(None)
            continue
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise _NotObject(i, f"not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise _NotObject(i, f"expected a JSON object, got {type(value).__name__}")
        out.append({k: v for k, v in value.items() if v is not None})
    return tuple(out)


def _escape(strings: pa.Array) -> pa.Array:
    """JSON string literals (quoted) for a string array."""
    if not _any_byte(strings, _JSON_SPECIAL):
        return pc.binary_join_element_wise('"', strings, '"', "")
    s = pc.replace_substring(strings, "\\", "\\\\")
    s = pc.replace_substring(s, '"', '\\"')
    for raw, esc in (("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"), ("\b", "\\b"), ("\f", "\\f")):
        s = pc.replace_substring(s, raw, esc)
    if pc.any(pc.match_substring_regex(s, r"[\x00-\x1f]")).as_py():
        return pa.array([None if v is None else _dumps(v) for v in strings.to_pylist()], pa.string())
    return pc.binary_join_element_wise('"', s, '"', "")


def json_text(array: pa.Array) -> pa.Array:
    """The JSON text of every element of an Arrow array, vectorised.

    Structs become objects with their non-null fields sorted by name (``", "``
    and ``": "`` separators), strings JSON string literals, numbers their
    shortest round-trip text, booleans ``true``/``false``, timestamps ISO-8601
    strings in UTC; lists and maps go through Python's :mod:`json`. Null
    elements stay null.
    """
    t = array.type
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(t):
        array = array.cast(t.value_type)
        t = array.type
    if pa.types.is_null(t):
        return pa.nulls(len(array), pa.string())
    if _is_text(t):
        return _escape(array.cast(pa.string()))
    if pa.types.is_boolean(t):
        return pc.if_else(array, "true", "false")
    if pa.types.is_integer(t):
        return array.cast(pa.string())
    if pa.types.is_floating(t):
        x = array.cast(pa.float64())
        finite = pc.is_finite(x)
        return pc.if_else(finite, x.cast(pa.string()), pa.scalar(None, pa.string()))
    if pa.types.is_timestamp(t):
        iso = pc.strftime(array.cast(TIME_TYPE), format="%Y-%m-%dT%H:%M:%S")
        return pc.binary_join_element_wise('"', iso, 'Z"', "")
    if pa.types.is_struct(t):
        pieces: list[pa.Array] = []
        for k in sorted(range(t.num_fields), key=lambda j: t.field(j).name):
            name = t.field(k).name
            value = json_text(array.field(k))
            prefix = ", " + _dumps(name) + ": "
            pieces.append(pc.fill_null(pc.binary_join_element_wise(prefix, value, ""), ""))
        body = pc.binary_join_element_wise(*pieces, "") if pieces else pa.array([""] * len(array))
        body = pc.utf8_slice_codeunits(body, 2)  # every non-empty body starts with ", "
        text = pc.binary_join_element_wise("{", body, "}", "")
        return pc.if_else(pc.is_valid(array), text, pa.scalar(None, pa.string()))
    values = array.to_pylist()
    return pa.array([None if v is None else _dumps(_plain(v)) for v in values], pa.string())


def _plain(value: Any) -> Any:
    """Map arrays arrive as lists of (key, value) pairs: make them dicts."""
    if isinstance(value, list) and value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        return {k: _plain(v) for k, v in value}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    return value


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
