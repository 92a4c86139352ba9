"""Follow a growing JSON Lines event log, close windows as event time passes, alert once per agent.

``tcpkit monitor EVENTS --state DIR`` runs :class:`Monitor`: each step reads the complete
lines appended to the log since the last step (a half-written last line waits for its
newline), keeps them in ``DIR/events.jsonl``, and when event time has passed the end of one
or more windows (an event at or after a window's end closes it), judges the fleet on every
closed window with the shipped detector (:func:`tcpkit.detect.alerts.judge_fleet`, the same
path as ``tcpkit detect``). An agent flagged for the first time is an alert; each agent is
alerted at most once.

Crash safety
------------
The state is ``DIR/state.json`` (written to a temporary file, flushed to disk and renamed
into place) plus the append-only ``DIR/events.jsonl``. The state records how many bytes of
the log and of ``events.jsonl`` were consumed, the closed windows, and every alert raised,
with a sequence number. Order of a step: append the new lines to ``events.jsonl``, judge,
then commit the state (one rename). A process killed before the rename leaves the previous
state; on start, ``events.jsonl`` is cut back to the length that state recorded and the
lines are read again from the recorded log offset, so no line is lost or counted twice and
the alerts of the interrupted step are raised again by the same judgement. Alerts are
printed after the commit that records them, and the state marks them printed in a second
commit; a restart prints the recorded alerts not yet marked. The alert log in the state is
exactly once; standard output is exactly once except when a kill lands between a print and
the commit that marks it, which repeats that alert (the sequence number shows it).

What an alert means
-------------------
Each judgement is a Benjamini-Hochberg decision over the fleet at that time; repeating it
as windows close is a sequence of looks, so the false discovery rate over the whole run is
not bounded by ``alpha`` (each single judgement is, under the detector's assumption).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from tcpkit.detect.alerts import AlertReport, judge_table
from tcpkit.detect.config import DetectorConfig
from tcpkit.detect.features import parse_duration
from tcpkit.detect.files import write_text_atomic

STATE_FILE = "state.json"
EVENTS_FILE = "events.jsonl"
STATE_FORMAT = "tcpkit.monitor/1"


class MonitorError(ValueError):
    """The monitor cannot go on: a bad state directory, option or event line."""


@dataclass(frozen=True)
class MonitorState:
    """What survives a restart (``DIR/state.json``)."""

    source_offset: int = 0  # bytes of the followed log consumed (complete lines only)
    events_bytes: int = 0  # length of DIR/events.jsonl that this state accounts for
    origin_us: int | None = None  # start of window 0 (the first event's time, floored)
    closed_windows: int = 0
    alerts: tuple[Mapping[str, Any], ...] = ()
    printed: int = 0
    settings: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": STATE_FORMAT,
                "source_offset": self.source_offset,
                "events_bytes": self.events_bytes,
                "origin_us": self.origin_us,
                "closed_windows": self.closed_windows,
                "alerts": list(self.alerts),
                "printed": self.printed,
                "settings": dict(self.settings),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str, where: Path) -> MonitorState:
        try:
            doc = json.loads(text)
            if doc.get("format") != STATE_FORMAT:
                raise MonitorError(f"{where} is not a tcpkit monitor state ({STATE_FORMAT})")
            return cls(
                source_offset=int(doc["source_offset"]),
                events_bytes=int(doc["events_bytes"]),
                origin_us=None if doc["origin_us"] is None else int(doc["origin_us"]),
                closed_windows=int(doc["closed_windows"]),
                alerts=tuple(doc["alerts"]),
                printed=int(doc["printed"]),
                settings=dict(doc["settings"]),
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, MonitorError):
                raise
            raise MonitorError(f"{where} is damaged ({exc}): move it away to start over") from None


class Monitor:
    """The state machine behind ``tcpkit monitor`` (one :meth:`step` per poll)."""

    def __init__(
        self,
        state_dir: Path,
        config: DetectorConfig,
        *,
        window: str = "1h",
        reference_windows: int = 8,
        detector_info: Mapping[str, Any] | None = None,
        risk_map: Any = None,
        emit: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        self.dir = Path(state_dir)
        self.config = config
        self.window_us = parse_duration(window)
        self.window = window
        self.reference_windows = int(reference_windows)
        self.detector_info = dict(detector_info or {})
        self.risk_map = risk_map
        self.emit = emit or (lambda alert: print(json.dumps(alert, sort_keys=True), flush=True))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state = self._load()
        settings = {"window": window, "reference_windows": self.reference_windows}
        if self.state.settings and dict(self.state.settings) != settings:
            raise MonitorError(
                f"{self.dir} was started with {dict(self.state.settings)}: use the same options or a new --state"
            )
        self.state = replace(self.state, settings=settings)
        self._recover()

    # -- persistence -----------------------------------------------------------------------

    def _load(self) -> MonitorState:
        path = self.dir / STATE_FILE
        if not path.exists():
            return MonitorState()
        return MonitorState.from_json(path.read_text(encoding="utf-8"), path)

    def _recover(self) -> None:
        """Cut ``events.jsonl`` back to what the state accounts for; print unprinted alerts."""
        events = self.dir / EVENTS_FILE
        size = events.stat().st_size if events.exists() else 0
        if size < self.state.events_bytes:
            raise MonitorError(f"{events} is shorter than its state records: the state directory was damaged")
        if size > self.state.events_bytes:
            with open(events, "r+b") as f:
                f.truncate(self.state.events_bytes)
                os.fsync(f.fileno())
        self._print_pending()

    def _commit(self, state: MonitorState) -> None:
        write_text_atomic(self.dir / STATE_FILE, state.to_json())
        self.state = state

    def _print_pending(self) -> None:
        pending = self.state.alerts[self.state.printed :]
        if not pending:
            return
        for alert in pending:
            self.emit(alert)
        self._commit(replace(self.state, printed=len(self.state.alerts)))

    # -- one poll --------------------------------------------------------------------------

    def step(self, source: IO[bytes]) -> int:
        """Consume the complete lines now in the seekable ``source``; returns the number of new alerts."""
        source.seek(self.state.source_offset)
        chunk = source.read()
        end = chunk.rfind(b"\n")
        if end < 0:
            return 0
        return self.feed(chunk[: end + 1])

    def feed(self, lines: bytes) -> int:
        """Consume complete lines (ending in a newline), e.g. read from standard input."""
        if not lines:
            return 0
        if not lines.endswith(b"\n"):
            raise MonitorError("feed() takes complete lines: the last one has no newline")
        with open(self.dir / EVENTS_FILE, "ab") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())
        state = replace(
            self.state,
            source_offset=self.state.source_offset + len(lines),
            events_bytes=self.state.events_bytes + len(lines),
        )
        state, new = self._judge(state)
        self._commit(state)
        self._print_pending()
        return new

    def _judge(self, state: MonitorState) -> tuple[MonitorState, int]:
        from tcpkit.detect.events import read_events

        table = read_events(self.dir / EVENTS_FILE, format="jsonl")
        times = table.column("time").cast("int64").to_numpy()
        origin = state.origin_us
        if origin is None:
            origin = int(times.min()) // self.window_us * self.window_us
        closed = int((int(times.max()) - origin) // self.window_us)  # windows wholly before the latest event
        state = replace(state, origin_us=origin)
        new: list[dict[str, Any]] = []
        alerted = {a["agent"] for a in state.alerts}
        # judge once per newly closed window, so the alerts depend on the events alone, not on
        # how the log was cut into polls (or where a restart fell)
        for upto in range(max(state.closed_windows, self.reference_windows) + 1, closed + 1):
            report = self._report(table, origin, upto)
            for a in report.agents:
                if a.flagged and a.agent not in alerted:
                    alerted.add(a.agent)
                    new.append({"seq": len(state.alerts) + len(new) + 1, "closed_windows": upto, **a.as_dict()})
        closed = max(closed, state.closed_windows)
        return replace(state, closed_windows=closed, alerts=state.alerts + tuple(new)), len(new)

    def _report(self, table: Any, origin: int, closed: int) -> AlertReport:
        import pyarrow as pa
        import pyarrow.compute as pc

        end = pa.scalar(origin + closed * self.window_us, pa.timestamp("us", tz="UTC"))
        upto = table.filter(pc.less(table.column("time"), end))
        return judge_table(
            upto,
            self.config,
            window=self.window,
            reference_windows=self.reference_windows,
            risk_map=self.risk_map,
            detector_info=self.detector_info,
        )

