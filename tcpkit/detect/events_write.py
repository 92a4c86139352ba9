"""Writers of the canonical event table: JSON Lines, CSV, Parquet and OTLP/JSON, each optionally gzip.

The inverse of :func:`tcpkit.detect.events.read_events`: reading back what
:func:`write_events` wrote gives the same table, column for column, in every
format (the tests check all four). Writes are atomic: the data goes to a
temporary file in the target's folder, is flushed to disk, and replaces the
target in one ``os.replace``; a crash leaves the old file or none, never half
a file.

Per format:

* JSON Lines: one object per event; ``time`` as ISO-8601 UTC with
  microseconds (``2026-01-01T10:00:00.000000Z``); ``arguments`` as a JSON
  object; null values left out.
* CSV: a header and one row per event; ``time`` as in JSON Lines;
  ``arguments`` as the JSON text of the object; null as an empty cell.
* Parquet: the table's own columns (``time`` a UTC timestamp, ``arguments``
  JSON text; Parquet has no JSON object type).
* OTLP/JSON: one ``ExportTraceServiceRequest`` document per line (as the
  collector's file exporter writes), one ``resourceSpans`` per node and batch,
  one ``execute_tool`` span per event with the GenAI attributes of the mapping
  in :mod:`tcpkit.detect.events` and the ``tcpkit.*`` extension attributes for
  the columns the conventions lack. Span ids are the event's row number; trace
  ids the agent's. Every span has a status, so a table without ``outcome``
  reads back with outcome ``ok`` everywhere (the one column OTLP cannot leave out).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from tcpkit.detect import files
from tcpkit.detect.events import SCHEMA, EventError, format_of, json_text, validate_events

__all__ = ["LABEL_COLUMNS", "write_event_batches", "write_events", "write_labels", "write_text_atomic"]

BATCH_ROWS = 65_536
ROW_GROUP_ROWS = 1_000_000  # rows per Parquet row group (a streaming reader holds about one)
STREAMED_FORMATS = ("jsonl", "csv", "parquet")


def write_events(
    table: pa.Table,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    compresslevel: int = 6,
) -> Path:
    """Write an event table to ``path`` in the format of its suffix (or ``format``), atomically.

    Parameters
    ----------
    table : an event table (validated here: a table that breaks the schema is
        not written).
    path : target file; a trailing ``.gz`` gzips the output.
    format : ``jsonl``, ``csv``, ``parquet`` or ``otlp``; default: by suffix.
    compresslevel : gzip level (1 fastest .. 9 smallest).

    Returns
    -------
    Path of the written file.

    Raises
    ------
    EventError
        For a table that breaks the schema, an unknown format, or a missing folder.
    """
    target = Path(path)
    fmt, gz = format_of(target, format)
    table = validate_events(table, source="the table to write")
    _check_folder(target)

    def write(raw: IO[bytes]) -> None:
        if gz:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=compresslevel, mtime=0) as z:
                _WRITERS[fmt](table, cast(IO[bytes], z))
        else:
            _WRITERS[fmt](table, raw)

    return files.write_atomic(target, write)


def write_event_batches(
    batches: Iterable[pa.RecordBatch | pa.Table],
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    compresslevel: int = 6,
) -> tuple[Path, int]:
    """Write events that arrive in batches (each sorted, in increasing agent order), atomically.

    The file is what :func:`write_events` writes for the concatenated batches, but only
    one batch is held at a time (JSON Lines, CSV, Parquet; OTLP concatenates first, since
    its span ids number the whole file). Each batch is validated; a batch whose first
    agent sorts before the previous batch's last one is refused, so the file stays sorted
    by agent (what :func:`tcpkit.detect.parquet_stream.parquet_pieces` needs). Returns the
    path and the number of events written.

    Raises
    ------
    EventError
        For a batch that breaks the schema or the agent order (nothing is written).
    """
    target = Path(path)
    fmt, gz = format_of(target, format)
    _check_folder(target)
    if fmt not in STREAMED_FORMATS:
        tables = [b if isinstance(b, pa.Table) else pa.Table.from_batches([b]) for b in batches]
        table = pa.concat_tables(tables)
        return write_events(table, target, format=fmt, compresslevel=compresslevel), table.num_rows
    rows = 0

    def checked() -> Iterator[pa.Table]:
        nonlocal rows
        last: str | None = None
        columns: list[str] | None = None
        for number, batch in enumerate(batches, start=1):
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            if table.num_rows == 0:
                continue
            where = f"batch {number} of the events to write"
            table = validate_events(table, source=where)
            if columns is None:
                columns = table.column_names
            extra = [c for c in table.column_names if c not in columns]
            if extra:
                raise EventError(f"{where} has the column {extra[0]!r} that the first batch lacks")
            for name in columns:  # an optional column without a value in this batch: nulls
                if name not in table.column_names:
                    table = table.append_column(SCHEMA.field(name), pa.nulls(table.num_rows, SCHEMA.field(name).type))
            table = table.select(columns)
            first = table.column("agent")[0].as_py()
            if last is not None and first < last:
                raise EventError(
                    f"{where} starts with agent {first!r}, before the previous batch's last agent "
                    f"{last!r}: batches must come in agent order"
                )
            last = table.column("agent")[-1].as_py()
            rows += table.num_rows
            yield table

    def write(raw: IO[bytes]) -> None:
        if gz:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=compresslevel, mtime=0) as z:
                _STREAM_WRITERS[fmt](checked(), cast(IO[bytes], z))
        else:
            _STREAM_WRITERS[fmt](checked(), raw)

    return files.write_atomic(target, write), rows


def _stream_jsonl(tables: Iterator[pa.Table], out: IO[bytes]) -> None:
    for table in tables:
        _write_jsonl(table, out)


def _stream_csv(tables: Iterator[pa.Table], out: IO[bytes]) -> None:
    sink = pa.PythonFile(out, mode="w")
    writer: pcsv.CSVWriter | None = None
    schema: pa.Schema | None = None
    try:
        for table in tables:
            table = table.set_column(table.column_names.index("time"), "time", _iso(table.column("time")))
            if writer is None:
                schema = table.schema
                writer = pcsv.CSVWriter(sink, schema)
            for batch in _batches(table):
                writer.write_table(batch.cast(schema) if batch.schema != schema else batch)
    finally:
        if writer is not None:
            writer.close()


def _stream_parquet(tables: Iterator[pa.Table], out: IO[bytes]) -> None:
    sink = pa.PythonFile(out, mode="w")
    writer: pq.ParquetWriter | None = None
    held: list[pa.Table] = []
    held_rows = 0
    try:
        for table in tables:
            if writer is None:
                writer = pq.ParquetWriter(sink, table.schema)
            held.append(table.cast(writer.schema) if table.schema != writer.schema else table)
            held_rows += table.num_rows
            if held_rows >= ROW_GROUP_ROWS:
                joined = pa.concat_tables(held)
                full = (held_rows // ROW_GROUP_ROWS) * ROW_GROUP_ROWS
                writer.write_table(joined.slice(0, full), row_group_size=ROW_GROUP_ROWS)
                held, held_rows = [joined.slice(full)], held_rows - full
        if writer is not None and held_rows:
            writer.write_table(pa.concat_tables(held), row_group_size=ROW_GROUP_ROWS)
    finally:
        if writer is not None:
            writer.close()


_STREAM_WRITERS = {"jsonl": _stream_jsonl, "csv": _stream_csv, "parquet": _stream_parquet}


def _check_folder(target: Path) -> None:
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise EventError(f"{target}: folder {str(folder)!r} does not exist")


def _batches(table: pa.Table) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, BATCH_ROWS):
        yield table.slice(start, BATCH_ROWS)


def _iso(times: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(times, pa.ChunkedArray):
        times = times.combine_chunks()
    return pc.binary_join_element_wise(pc.strftime(times, format="%Y-%m-%dT%H:%M:%S"), "Z", "")


def _write_jsonl(table: pa.Table, out: IO[bytes]) -> None:
    for batch in _batches(table):
        pieces: list[pa.Array] = []
        for name in batch.column_names:
            col = batch.column(name).combine_chunks()
            value = col if name == "arguments" else json_text(col)  # arguments: already JSON text
            prefix = ", " + json.dumps(name) + ": "
            pieces.append(pc.fill_null(pc.binary_join_element_wise(prefix, value, ""), ""))
        body = pc.replace_substring_regex(pc.binary_join_element_wise(*pieces, ""), "^, ", "")
        lines = pc.binary_join_element_wise("{", body, "}\n", "")
        out.write(_concat(lines))


def _concat(strings: pa.Array) -> bytes:
    """The bytes of all strings of an array, end to end."""
    offsets = strings.buffers()[1]
    data = strings.buffers()[2]
    if data is None:
        return b""
    o = np.frombuffer(offsets, dtype=np.int32)[strings.offset : strings.offset + len(strings) + 1]
    return data.to_pybytes()[int(o[0]) : int(o[-1])]


def _write_csv(table: pa.Table, out: IO[bytes]) -> None:
    table = table.set_column(table.column_names.index("time"), "time", _iso(table.column("time")))
    sink = pa.PythonFile(out, mode="w")
    with pcsv.CSVWriter(sink, table.schema) as writer:
        for batch in _batches(table):
            writer.write_table(batch)


def _write_parquet(table: pa.Table, out: IO[bytes]) -> None:
    pq.write_table(table, pa.PythonFile(out, mode="w"), row_group_size=ROW_GROUP_ROWS)


OTLP_SPANS_PER_DOCUMENT = 4096


def _hex16(rows: np.ndarray) -> pa.Array:
    """16 lower-case hex digits of each non-negative integer (an OTLP span id), vectorised."""
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    digits = (rows.astype(np.uint64)[:, None] >> shifts) & np.uint64(15)
    chars = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[digits.astype(np.intp)]
    return pa.array(np.ascontiguousarray(chars).view("S16").ravel()).cast(pa.string())


def _join(pieces: list[pa.Array]) -> pa.Array:
    return pc.binary_join_element_wise(*pieces, "")


def _attribute(key: str, kind: str, value: pa.Array) -> pa.Array:
    """``,{"key":...,"value":{kind: value}}`` per element (null where the value is null)."""
    head = ',{"key":' + json.dumps(key) + ',"value":{"' + kind + '":'
    text = pc.binary_join_element_wise(head, json_text(value), "}}", "")
    return pc.fill_null(text, "")


def _write_otlp(table: pa.Table, out: IO[bytes]) -> None:
    n = table.num_rows
    if n == 0:
        return
    cols = {c: table.column(c).combine_chunks() for c in table.column_names}
    agent = cols["agent"]
    encoded = pc.dictionary_encode(agent)
    trace = pa.array([_hex_id(a, 16) for a in encoded.dictionary.to_pylist()]).take(encoded.indices)
    start = pc.multiply(cols["time"].cast(pa.int64()), 1000)
    if "latency_ms" in cols:
        dur = pc.fill_null(pc.round(pc.multiply(cols["latency_ms"], 1e6)), 0.0).cast(pa.int64())
    else:
        dur = pa.array(np.zeros(n, dtype=np.int64))
    end = pc.add(start, dur)
    attrs = [
        pa.array(['{"key":"gen_ai.operation.name","value":{"stringValue":"execute_tool"}}'] * n),
        _attribute("gen_ai.agent.id", "stringValue", agent),
        _attribute("gen_ai.tool.name", "stringValue", cols["action"]),
    ]
    for name, key, kind in (
        ("risk_class", "tcpkit.risk_class", "stringValue"),
        ("predicted_risk", "tcpkit.predicted_risk", "doubleValue"),
        ("confidence", "tcpkit.confidence", "doubleValue"),
        ("latency_ms", "tcpkit.latency_ms", "doubleValue"),
        ("outcome", "tcpkit.outcome", "stringValue"),
        ("arguments", "gen_ai.tool.call.arguments", "stringValue"),
    ):
        if name in cols:
            attrs.append(_attribute(key, kind, cols[name]))
    error = (
        pc.fill_null(pc.equal(cols["outcome"], "error"), False)
        if "outcome" in cols
        else pa.array(np.zeros(n, dtype=bool))
    )
    attrs.append(pc.if_else(error, ',{"key":"error.type","value":{"stringValue":"tool_error"}}', ""))
    name = pc.binary_join_element_wise('"name":', json_text(pc.binary_join_element_wise("execute_tool ", cols["action"], "")), "")
    span = _join(
        [
            pa.array(['{"traceId":"'] * n),
            trace,
            pa.array(['","spanId":"'] * n),
            _hex16(np.arange(n)),
            pa.array(['",'] * n),
            name,
            pa.array([',"kind":1,"startTimeUnixNano":"'] * n),
            start.cast(pa.string()),
            pa.array(['","endTimeUnixNano":"'] * n),
            end.cast(pa.string()),
            pa.array(['","attributes":['] * n),
            _join(attrs),
            pa.array(["],"] * n),
            pc.if_else(error, '"status":{"code":2}}', '"status":{}}'),
        ]
    )
    node = cols["node"] if "node" in cols else pa.nulls(n, pa.string())
    for lo in range(0, n, OTLP_SPANS_PER_DOCUMENT):
        spans = span.slice(lo, OTLP_SPANS_PER_DOCUMENT)
        nodes = node.slice(lo, OTLP_SPANS_PER_DOCUMENT)
        groups = pc.dictionary_encode(nodes, null_encoding="encode")
        codes = np.asarray(groups.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        resource_spans = []
        for g, host in enumerate(groups.dictionary.to_pylist()):  # one entry per node in the document
            members = spans.take(pa.array(np.flatnonzero(codes == g)))
            attrs_text = (
                '{"key":"host.name","value":{"stringValue":' + json.dumps(host, ensure_ascii=False) + "}}"
                if host is not None
                else ""
            )
            body = _concat(pc.binary_join_element_wise(members, ",", "")).decode("utf-8")[:-1]
            resource_spans.append(
                '{"resource":{"attributes":[' + attrs_text + ']},"scopeSpans":[{"scope":{"name":"tcpkit"},'
                '"spans":[' + body + "]}]}"
            )
        out.write(('{"resourceSpans":[' + ",".join(resource_spans) + "]}\n").encode("utf-8"))


def _hex_id(text: str, nbytes: int) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[: 2 * nbytes]


_WRITERS = {
    "jsonl": _write_jsonl,
    "csv": _write_csv,
    "parquet": _write_parquet,
    "otlp": _write_otlp,
}


LABEL_COLUMNS: tuple[str, ...] = ("agent", "compromised", "attack", "attack_start_window")


def write_labels(labels: pa.Table | dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the simulator's ground truth as CSV (``agent,compromised,attack,attack_start_window``), atomically.

    ``labels`` is a table or a mapping of equal-length arrays with those columns
    (others are ignored). Raises :class:`EventError` when a column is missing.
    """
    table = labels if isinstance(labels, pa.Table) else pa.table(dict(labels))
    missing = [c for c in LABEL_COLUMNS if c not in table.column_names]
    if missing:
        raise EventError(f"labels lack column {missing[0]!r} (need {', '.join(LABEL_COLUMNS)})")
    table = table.select(list(LABEL_COLUMNS))
    target = Path(path)
    _check_folder(target)
    return files.write_atomic(target, lambda raw: pcsv.write_csv(table, pa.PythonFile(raw, mode="w")))


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`tcpkit.detect.files.write_text_atomic`)."""
    return files.write_text_atomic(path, text)
