"""The event schema and its readers: every format, gzip, OTLP mapping, and every bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcpkit.detect.bench_ingest import synthetic_events
from tcpkit.detect.events import (
    SCHEMA,
    EventError,
    format_of,
    read_events,
    validate_events,
)
from tcpkit.detect.events_write import write_events

SUFFIXES = (".jsonl", ".csv", ".parquet", ".json", ".jsonl.gz", ".csv.gz", ".parquet.gz", ".json.gz")


@pytest.fixture(scope="module")
def table() -> pa.Table:
    t = synthetic_events(1200, events_per_agent=300, seed=5)
    # a string that needs every kind of JSON escape, in the arguments and in an action
    args = t.column("arguments").to_pylist()
    args[3] = json.dumps({"msg": 'a "quote" \\ back\nslash\ttab \u00e9', "n": 3, "x": 1.5, "ok": True})
    actions = t.column("action").to_pylist()
    actions[7] = 'echo "hi"\tthere'
    t = t.set_column(t.column_names.index("arguments"), "arguments", pa.array(args))
    t = t.set_column(t.column_names.index("action"), "action", pa.array(actions))
    return validate_events(t)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_every_format_round_trips_to_the_same_table(table: pa.Table, tmp_path: Path, suffix: str) -> None:
    path = write_events(table, tmp_path / f"events{suffix}")
    back = read_events(path)
    assert back.schema == table.schema
    assert back.equals(table)
    if suffix.endswith(".gz"):
        assert path.read_bytes()[:2] == b"\x1f\x8b"


def test_format_override_and_gzip_sniffing(table: pa.Table, tmp_path: Path) -> None:
    path = write_events(table, tmp_path / "events.log", format="csv")
    assert read_events(path, format="csv").equals(table)
    with pytest.raises(EventError, match="cannot tell the format"):
        read_events(path)
    raw = write_events(table, tmp_path / "plain.jsonl.gz")
    renamed = raw.rename(tmp_path / "plain.jsonl")  # gzip without the suffix: sniffed
    assert read_events(renamed).equals(table)


def test_format_of() -> None:
    assert format_of("a/b.JSONL.gz") == ("jsonl", True)
    assert format_of("x.ndjson") == ("jsonl", False)
    assert format_of("x.pq") == ("parquet", False)
    assert format_of("trace.json") == ("otlp", False)
    assert format_of("x.txt", "parquet") == ("parquet", False)
    with pytest.raises(EventError, match="unknown format 'xml'"):
        format_of("x.csv", "xml")


def test_several_files_concatenate_sorted(table: pa.Table, tmp_path: Path) -> None:
    half = table.num_rows // 2
    a = write_events(table.slice(half), tmp_path / "a.parquet")
    b = write_events(table.slice(0, half), tmp_path / "b.csv")
    assert read_events([a, b]).equals(table)


def test_written_files_are_atomic_and_bad_tables_are_not_written(tmp_path: Path) -> None:
    bad = pa.table({"agent": ["a"], "time": [1.0], "action": ["ls"], "confidence": [2.0]})
    with pytest.raises(EventError, match="confidence"):
        write_events(bad, tmp_path / "x.parquet")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- what each format accepts


def test_jsonl_times_classes_objects_and_blank_lines(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "e.jsonl",
        '{"agent": "b", "time": "2026-01-01T10:00:00Z", "action": "ls", "risk_class": "safe",'
        ' "arguments": {"file": "x", "n": 2}}\n'
        "\n"
        '{"agent": "a", "time": "2026-01-01 12:00:00.5+02:00", "action": "cat y", "outcome": "Error",'
        ' "arguments": "{\\"to\\": \\"bob\\"}"}\n',
    )
    t = read_events(path)
    assert t.column("agent").to_pylist() == ["a", "b"]  # sorted by agent
    times = t.column("time").cast(pa.int64()).to_pylist()
    assert times == [1_767_261_600_500_000, 1_767_261_600_000_000]
    assert t.column("risk_class").to_pylist() == [None, "SAFE"]
    assert t.column("outcome").to_pylist() == ["error", None]
    assert t.column("arguments").to_pylist() == ['{"to": "bob"}', '{"file": "x", "n": 2}']


def test_epoch_seconds_in_every_text_format(tmp_path: Path) -> None:
    csv = _write(tmp_path / "e.csv", "agent,time,action\na,1767225600,ls\na,1767225600.25,ls\n")
    jl = _write(
        tmp_path / "e.jsonl",
        '{"agent": "a", "time": 1767225600, "action": "ls"}\n'
        '{"agent": "a", "time": 1767225600.25, "action": "ls"}\n',
    )
    for path in (csv, jl):
        t = read_events(path)
        assert t.column("time").cast(pa.int64()).to_pylist() == [1_767_225_600_000_000, 1_767_225_600_250_000]


def test_csv_nulls_are_only_empty_cells(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "e.csv",
        "agent,time,action,node,latency_ms\nNA,2026-01-01T00:00:00Z,null,,3\nb,2026-01-01T00:00:01Z,ls,n1,\n",
    )
    t = read_events(path)
    assert t.column("agent").to_pylist() == ["NA", "b"]
    assert t.column("action").to_pylist() == ["null", "ls"]
    assert t.column("node").to_pylist() == [None, "n1"]
    assert t.column("latency_ms").to_pylist() == [3.0, None]


def test_optional_columns_absent_stay_absent(tmp_path: Path) -> None:
    path = _write(tmp_path / "e.csv", "agent,time,action,extra\na,2026-01-01T00:00:00Z,ls,zzz\n")
    assert read_events(path).column_names == ["agent", "time", "action"]


def _otlp_doc() -> dict:
    def kv(key: str, **value: object) -> dict:
        return {"key": key, "value": value}

    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [kv("host.name", stringValue="node-7")]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "spanId": "01",
                                "startTimeUnixNano": "1767225600000000000",
                                "endTimeUnixNano": "1767225600250000000",
                                "attributes": [
                                    kv("gen_ai.operation.name", stringValue="execute_tool"),
                                    kv("gen_ai.agent.id", stringValue="agent-1"),
                                    kv("gen_ai.agent.name", stringValue="ignored"),
                                    kv("gen_ai.tool.name", stringValue="send_money"),
                                    kv("gen_ai.tool.call.arguments", stringValue='{"to":"bob","amount":5}'),
                                ],
                                "status": {"code": 2},
                            },
                            {
                                "spanId": "02",
                                "startTimeUnixNano": 1767225601000000000,
                                "endTimeUnixNano": 1767225601001000000,
                                "attributes": [
                                    kv("gen_ai.operation.name", stringValue="execute_tool"),
                                    kv("gen_ai.agent.name", stringValue="planner"),
                                    kv("gen_ai.tool.name", stringValue="read_file"),
                                    kv("error.type", stringValue="timeout"),
                                ],
                            },
                            {
                                "spanId": "03",
                                "startTimeUnixNano": "1767225602000000000",
                                "endTimeUnixNano": "1767225603000000000",
                                "attributes": [
                                    kv("gen_ai.operation.name", stringValue="execute_tool"),
                                    kv("gen_ai.agent.id", stringValue="agent-1"),
                                    kv("gen_ai.tool.name", stringValue="read_file"),
                                ],
                                "status": {"code": 1},
                            },
                            {
                                "spanId": "04",
                                "startTimeUnixNano": "1767225602000000000",
                                "endTimeUnixNano": "1767225603000000000",
                                "attributes": [kv("gen_ai.operation.name", stringValue="chat")],
                            },
                        ]
                    }
                ],
            }
        ]
    }


def test_otlp_genai_mapping(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(_otlp_doc(), indent=2))
    t = read_events(path)
    assert t.num_rows == 3  # the chat span is not a tool call
    rows = t.to_pylist()
    assert [r["agent"] for r in rows] == ["agent-1", "agent-1", "planner"]  # id, else name
    assert [r["action"] for r in rows] == ["send_money", "read_file", "read_file"]
    assert [r["node"] for r in rows] == ["node-7"] * 3
    assert [r["latency_ms"] for r in rows] == [250.0, 1000.0, 1.0]
    assert [r["outcome"] for r in rows] == ["error", "ok", "error"]  # status 2; ok; error.type
    assert rows[0]["arguments"] == '{"amount": 5, "to": "bob"}'  # keys sorted
    assert rows[2]["arguments"] is None
    assert t.column("time").cast(pa.int64()).to_pylist()[0] == 1_767_225_600_000_000


# --------------------------------------------------------------------------- bad input


def _error(path: Path, **kw: object) -> str:
    with pytest.raises(EventError) as info:
        read_events(path, **kw)
    message = str(info.value)
    assert str(path) in message
    return message


def test_missing_required_column(tmp_path: Path) -> None:
    msg = _error(_write(tmp_path / "e.csv", "agent,time\na,2026-01-01T00:00:00Z\n"))
    assert "missing required column 'action'" in msg


def test_unknown_risk_class_names_line_and_column(tmp_path: Path) -> None:
    lines = [
        json.dumps({"agent": "a", "time": f"2026-01-01T00:00:0{i}Z", "action": "ls", "risk_class": c})
        for i, c in enumerate(["SAFE", "NETWORK", "HARMLESS"])
    ]
    msg = _error(_write(tmp_path / "e.jsonl", "\n\n".join(lines) + "\n"))
    assert "line 5" in msg and "column 'risk_class'" in msg and "'HARMLESS'" in msg and "CRITICAL" in msg


def test_unknown_outcome(tmp_path: Path) -> None:
    msg = _error(_write(tmp_path / "e.csv", "agent,time,action,outcome\na,0,ls,ok\na,1,ls,crashed\n"))
    assert "row 2" in msg and "column 'outcome'" in msg and "refused" in msg


@pytest.mark.parametrize(
    ("value", "problem"),
    [("yesterday", "unparseable time"), ("2026-01-01T00:00:00", "unparseable time"),
     ("2026-13-01T00:00:00Z", "not a valid date")],
)
def test_unparseable_time(tmp_path: Path, value: str, problem: str) -> None:
    path = _write(tmp_path / "e.csv", f"agent,time,action\na,2026-01-01T00:00:00Z,ls\nb,{value},ls\n")
    msg = _error(path)
    assert "row 2" in msg and "column 'time'" in msg and problem in msg


def test_naive_parquet_timestamps_are_refused(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"agent": ["a"], "time": pa.array([0], pa.timestamp("us")), "action": ["x"]}), path)
    assert "without a time zone" in _error(path)


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [("predicted_risk", "nan", "NaN"), ("confidence", "1.5", "out of range"),
     ("latency_ms", "-1", "out of range"), ("latency_ms", "inf", "out of range"),
     ("predicted_risk", "high", "not a number")],
)
def test_bad_numbers(tmp_path: Path, column: str, value: str, problem: str) -> None:
    path = _write(tmp_path / "e.csv", f"agent,time,action,{column}\na,0,ls,0.5\na,1,ls,{value}\n")
    msg = _error(path)
    assert "row 2" in msg and f"column {column!r}" in msg and problem in msg


def test_nan_in_parquet_is_an_error(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "e.parquet"
    t = pa.table({"agent": ["a", "b"], "time": [1.0, 2.0], "action": ["x", "y"], "confidence": [0.5, np.nan]})
    pq.write_table(t, path)
    msg = _error(path)
    assert "row 2" in msg and "NaN" in msg


@pytest.mark.parametrize("text", ["", "  \n\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    assert "empty file" in _error(_write(tmp_path / "e.jsonl", text))


def test_header_only_csv_is_empty(tmp_path: Path) -> None:
    assert "empty file" in _error(_write(tmp_path / "e.csv", "agent,time,action\n"))


def test_truncated_gzip(table: pa.Table, tmp_path: Path) -> None:
    path = write_events(table, tmp_path / "e.jsonl.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "truncated gzip" in _error(path)


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "e.csv.gz"
    path.write_bytes(gzip.compress(b"agent,time,action\n")[:10] + b"garbage" * 10)
    assert "gzip" in _error(path)


def test_otlp_without_tool_spans(tmp_path: Path) -> None:
    doc = _otlp_doc()
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"] = spans[3:]
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(doc))
    assert "no execute_tool spans" in _error(path)


def test_out_of_order_only_when_order_matters(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "e.jsonl",
        '{"agent": "a", "time": 10, "action": "ls"}\n'
        '{"agent": "b", "time": 5, "action": "ls"}\n'
        '{"agent": "a", "time": 9, "action": "ls"}\n',
    )
    assert read_events(path).column("time").cast(pa.int64()).to_pylist() == [9_000_000, 10_000_000, 5_000_000]
    msg = _error(path, ordered=True)
    assert "line 3" in msg and "column 'time'" in msg and "out of order" in msg and "'a'" in msg


def test_arguments_must_be_objects(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "e.csv",
        'agent,time,action,arguments\na,0,ls,"{""f"": 1}"\na,1,ls,"[1, 2]"\n',
    )
    msg = _error(path)
    assert "row 2" in msg and "column 'arguments'" in msg and "JSON object" in msg


def test_invalid_json_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "e.jsonl",
        '{"agent": "a", "time": 0, "action": "ls"}\n{"agent": "a", "time": 1, "action": \n',
    )
    assert "line 2" in _error(path)


def test_agent_of_wrong_type_names_line_and_column(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "e.jsonl",
        '{"agent": "a", "time": 0, "action": "ls"}\n{"agent": {"id": 1}, "time": 1, "action": "ls"}\n',
    )
    msg = _error(path)
    assert "line 2" in msg and "'agent'" in msg


def test_missing_agent_value(tmp_path: Path) -> None:
    msg = _error(_write(tmp_path / "e.csv", "agent,time,action\na,0,ls\n,1,ls\n"))
    assert "row 2" in msg and "column 'agent'" in msg


def test_arguments_whose_value_types_vary_are_read(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "e.jsonl",
        '{"agent": "a", "time": 0, "action": "x", "arguments": {"v": 1}}\n'
        '{"agent": "a", "time": 1, "action": "x", "arguments": {"v": "one"}}\n',
    )
    assert read_events(path).column("arguments").to_pylist() == ['{"v": 1}', '{"v": "one"}']


# --------------------------------------------------------------------------- properties

_agents = st.sampled_from(["a", "b", "agent-3", "é"])
_row = st.fixed_dictionaries(
    {
        "agent": _agents,
        "time": st.integers(0, 4_000_000_000_000_000),
        "action": st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12).filter(
            lambda s: s.strip() != ""
        ),
        "risk_class": st.sampled_from(["SAFE", "NETWORK", "PRIVESC", "DESTRUCTIVE", "CRITICAL"]),
        "predicted_risk": st.floats(0, 1),
        "latency_ms": st.floats(0, 1e6),
        "arguments": st.dictionaries(
            st.sampled_from(["to", "file", "url"]), st.text(max_size=6), max_size=3
        ).map(lambda d: json.dumps(d)),
    }
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_row, min_size=1, max_size=20))
def test_round_trip_property(rows: list[dict], tmp_path_factory: pytest.TempPathFactory) -> None:
    raw = pa.Table.from_pylist(rows)
    i = raw.column_names.index("time")
    raw = raw.set_column(i, "time", raw.column("time").cast(pa.timestamp("us", tz="UTC")))
    table = validate_events(raw)
    folder = tmp_path_factory.mktemp("rt")
    for suffix in (".jsonl", ".csv.gz", ".parquet", ".json"):
        back = read_events(write_events(table, folder / f"e{suffix}"))
        if suffix == ".json" and "outcome" not in table.column_names:
            # every span has a status: OTLP always gives an outcome (ok unless an error)
            assert set(back.column("outcome").to_pylist()) == {"ok"}
            back = back.drop_columns(["outcome"])
        assert back.equals(table), suffix
    assert table.schema.names == [n for n in SCHEMA.names if n in table.column_names]


def test_otlp_columnar_reader_agrees_with_the_python_walk(table: pa.Table, tmp_path: Path) -> None:
    from tcpkit.detect.events import _otlp_columnar, _read_otlp_walk

    doc = _otlp_doc()
    for span in doc["resourceSpans"][0]["scopeSpans"][0]["spans"]:  # all nanos as strings
        span["startTimeUnixNano"] = str(span["startTimeUnixNano"])
        span["endTimeUnixNano"] = str(span["endTimeUnixNano"])
    pretty = tmp_path / "trace.json"
    pretty.write_text(json.dumps(doc, indent=2))
    lines = write_events(table, tmp_path / "lines.json")
    for path in (pretty, lines):
        data = path.read_bytes()
        columnar = _otlp_columnar(data)
        assert columnar is not None  # the vectorised path handles both layouts
        walked, _ = _read_otlp_walk(path, data)
        assert validate_events(columnar[0]).equals(validate_events(walked))
