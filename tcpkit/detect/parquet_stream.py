"""A Parquet event file sorted by agent, streamed as validated pieces that each hold whole agents.

Why: ``tcpkit detect`` on a fleet of 1e5 agents reads 1e8 events. Read whole, the file is
tens of gigabytes of Python-visible strings; streamed, memory is bounded by a row group.
:func:`parquet_pieces` reads one row group at a time, with the text columns as Parquet's
own dictionaries (no string is decoded per event), cuts it where its last agent starts, and
yields the rows before that cut validated and encoded
(:meth:`Piece.encode`, i.e. :func:`tcpkit.detect.events.encode_events`: each distinct value
is checked once). The last agent's rows wait for the next row group, decoded to plain
strings (one agent's events at most), and go out with that agent's rows from the next group.
Validation is left to the consumer (:meth:`Piece.encode`) so that it can run pieces in
parallel threads (pyarrow and numpy release the GIL for most of the work).

Peak memory: the row group being cut plus one agent's events, and whatever pieces the
consumer keeps in flight; never the file.

The file must be sorted by agent (as :func:`tcpkit.detect.events_write.write_events` writes
it; within an agent any order, the pieces are sorted by time): an agent whose rows are not
contiguous raises :class:`UnsortedError` naming the row. Errors of the event schema name
the file's row, as :func:`tcpkit.detect.events.read_events` does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tcpkit.detect.events import (
    COLUMNS,
    TIME_TYPE,
    EncodedEvents,
    EventError,
    encode_events,
    validate_events,
)

__all__ = ["Piece", "UnsortedError", "open_events", "parquet_pieces", "time_range"]

_TEXT = ("agent", "action", "node", "risk_class", "outcome", "arguments")


class UnsortedError(EventError):
    """A Parquet event file whose agents are not contiguous (the streaming reader needs them so)."""


@dataclass(frozen=True, eq=False)
class Piece:
    """The raw rows of whole agents (not validated yet), and where they start in the file."""

    table: pa.Table
    first_row: int  # 0-based row of the file of the piece's first row
    source: str

    def encode(self) -> EncodedEvents:
        """The rows validated and encoded; an error names the file's row."""
        start = self.first_row
        return encode_events(self.table, source=self.source, where=lambda i: f"row {start + i + 1}")


def open_events(path: str | os.PathLike[str]) -> pq.ParquetFile:
    """The Parquet file, its text columns to be read as dictionaries; EventError when unreadable."""
    source = str(path)
    try:
        schema = pq.read_schema(source)
        text = [
            f.name for f in schema
            if f.name in _TEXT and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))
        ]
        pf = pq.ParquetFile(source, read_dictionary=text)
    except (OSError, pa.ArrowInvalid) as exc:
        raise EventError(f"{source}: not a readable Parquet file: {exc}") from None
    if pf.metadata.num_rows == 0:
        raise EventError(f"{source}: empty file: no events")
    return pf


def _columns(pf: pq.ParquetFile) -> list[str]:
    return [n for n in pf.schema_arrow.names if n in COLUMNS]


def _plain(table: pa.Table) -> pa.Table:
    """The table with dictionary columns decoded (for the few rows that cross a row group)."""
    cols = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in table.columns]
    return pa.table(cols, names=table.column_names)


def _agent_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array] | None:
    """(code of every row, distinct agents) of one row group; None when an agent is missing."""
    col = column.combine_chunks()
    if not pa.types.is_dictionary(col.type):
        col = pc.dictionary_encode(col)
    if col.null_count or col.dictionary.null_count:
        return None
    codes = np.asarray(col.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    unique = pc.dictionary_encode(col.dictionary)  # one code per agent, even if the file repeats a value
    remap = np.asarray(unique.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    return remap[codes], unique.dictionary


def parquet_pieces(path: str | os.PathLike[str], groups: tuple[int, int] | None = None) -> Iterator[Piece]:
    """Pieces of whole agents, in file order, one row group at a time (module docstring).

    ``groups=(lo, hi)`` yields only the agents whose first row lies in row groups
    ``lo .. hi - 1`` (the last of them read on into later row groups until it ends), so
    that disjoint ranges of row groups, read by separate processes, give every agent
    exactly once.

    Raises
    ------
    UnsortedError
        An agent's rows are not contiguous (naming the first row out of order).
    EventError
        A missing agent, naming the file's row (other schema errors: :meth:`Piece.encode`).
    """
    source = str(path)
    pf = open_events(path)
    names = _columns(pf)
    n_groups = pf.num_row_groups
    lo, hi = groups if groups is not None else (0, n_groups)
    row = sum(pf.metadata.row_group(g).num_rows for g in range(lo))

    def piece(table: pa.Table, start: int) -> Piece:
        return Piece(table, start, source)

    skip: str | None = None  # an agent that started before this range: its rows are not ours
    if lo > 0 and "agent" in names:
        before = _agent_codes(pf.read_row_group(lo - 1, columns=["agent"]).column("agent"))
        if before is not None:
            codes, dictionary = before
            skip = dictionary[int(codes[-1])].as_py()
    previous = skip  # the agent of the row before this row group
    pending: pa.Table | None = None  # the last agent's rows so far, decoded
    pending_row = 0
    for g in range(lo, n_groups):
        if g >= hi and pending is None:
            return
        chunk = pf.read_row_group(g, columns=names)
        n = chunk.num_rows
        if n == 0:
            continue
        agents = _agent_codes(chunk.column("agent")) if "agent" in names else None
        if agents is None:  # a missing agent (or column): validation names the row
            if g >= hi:  # the next range's own to report
                break
            rest = _plain(chunk) if pending is None else pa.concat_tables([pending, _plain(chunk)])
            piece(rest, pending_row if pending is not None else row).encode()
            raise EventError(f"{source}: cannot read the agent column")  # not reached: encode raised
        codes, dictionary = agents
        starts = np.concatenate(([0], np.flatnonzero(codes[1:] != codes[:-1]) + 1))
        run_agent = dictionary.take(pa.array(codes[starts])).cast(pa.string())
        first = run_agent[0].as_py()
        lead_end = int(starts[1]) if starts.size > 1 else n
        if g >= hi:  # reading on only to finish the last agent (its order checks are the next range's)
            assert pending is not None
            if first == previous:
                pending = pa.concat_tables([pending, _plain(chunk.slice(0, lead_end))])
                if lead_end == n:
                    row += n
                    continue
            break
        _check_sorted(run_agent, starts, previous, source, row)
        body = 0
        if skip is not None and first == skip:
            body = lead_end
            if body == n:  # the whole row group continues an agent of the range before
                row += n
                continue
        skip = None
        if pending is not None and first == previous:
            pending = pa.concat_tables([pending, _plain(chunk.slice(0, lead_end))])
            body = lead_end
            if body == n:  # the whole row group continues one agent
                row += n
                continue
        if pending is not None:
            yield piece(pending, pending_row)
            pending = None
        last = int(starts[-1])
        if last > body:
            yield piece(chunk.slice(body, last - body), row + body)
        pending = _plain(chunk.slice(max(last, body)))
        pending_row = row + max(last, body)
        previous = run_agent[-1].as_py()
        row += n
    if pending is not None and pending.num_rows:
        yield piece(pending, pending_row)


def _check_sorted(run_agent: pa.Array, starts: np.ndarray, previous: str | None, source: str, row: int) -> None:
    """Raise UnsortedError unless every agent's rows are one run, runs in increasing agent order."""
    back = np.asarray(pc.less(run_agent[1:], run_agent[:-1]).to_numpy(zero_copy_only=False), bool)
    at: int | None = None
    if previous is not None and len(run_agent) and run_agent[0].as_py() < previous:
        at = 0
    elif back.any():
        at = int(starts[int(np.flatnonzero(back)[0]) + 1])
    if at is None:
        return
    raise UnsortedError(
        f"{source}, row {row + at + 1}, column 'agent': the file is not sorted by agent; "
        "read it with features_from_dataset (Dask shuffles by agent)"
    )


def time_range(path: str | os.PathLike[str]) -> tuple[int, int]:
    """First and last event time (microseconds since the epoch), one row group at a time."""
    source = str(path)
    pf = open_events(path)
    if "time" not in pf.schema_arrow.names:
        raise EventError(f"{source}: missing required column 'time'")
    lo, hi = None, None
    for g in range(pf.num_row_groups):
        t = pf.read_row_group(g, columns=["time"]).column("time").combine_chunks()
        if not (pa.types.is_timestamp(t.type) and t.type.tz is not None):
            req = [c for c in ("agent", "time", "action") if c in pf.schema_arrow.names]
            t = validate_events(pf.read_row_group(g, columns=req), source=source).column("time")
        t = t.cast(TIME_TYPE).cast(pa.int64())
        mm = pc.min_max(t)
        if mm["min"].as_py() is None:
            continue
        a, b = int(mm["min"].as_py()), int(mm["max"].as_py())
        lo = a if lo is None else min(lo, a)
        hi = b if hi is None else max(hi, b)
    if lo is None or hi is None:
        raise EventError(f"{source}, column 'time': no event has a time")
    return lo, hi
