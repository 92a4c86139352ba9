"""Follow a growing JSON Lines event log, close windows as event time passes, alert once per agent.

``tcpkit monitor EVENTS --state DIR`` runs :class:`Monitor`: each step reads the complete
lines appended to the log since the last step (a half-written last line waits for its
newline), keeps them in ``DIR/events.jsonl``, and when event time has passed the end of one
or more windows (an event at or after a window's end closes it), judges the fleet on every
closed window with the shipped detector (:func:`tcpkit.detect.alerts.judge_table`, the same
path as ``tcpkit detect``). An agent flagged for the first time is an alert; each agent is
alerted at most once.

Alerts: identity and order
--------------------------
Every alert has a sequence number ``seq`` (1, 2, ... in the order raised) and a stable
``id``: a digest of the detector (module and model digests), the monitor's settings (window,
reference windows), the agent and the number of closed windows at which it fired
(:func:`alert_id`). The same events judged by the same detector give the same alerts with
the same ids and sequence numbers, however the log was cut into polls and wherever restarts
fell.

Crash safety: the committed state is the source of truth
---------------------------------------------------------
The state directory holds three files:

* ``events.jsonl`` (append-only): every event line consumed;
* ``alerts.jsonl`` (append-only): every alert raised, one JSON object per line, in ``seq``
  order;
* ``state.json`` (rewritten by a rename): how many bytes of the followed log, of
  ``events.jsonl`` and of ``alerts.jsonl`` it accounts for, the closed windows, the number of
  alerts, and ``emitted``: the ``seq`` of the last alert printed to standard output.

A step appends the new lines to ``events.jsonl`` and flushes them to disk, judges, appends
the new alerts to ``alerts.jsonl`` and flushes them, then commits ``state.json`` (one
rename: the commit point). A process killed before the rename leaves the previous state; on
start, ``events.jsonl`` and ``alerts.jsonl`` are cut back to the lengths that state records
and the step is redone from the recorded log offset, so no line is lost or counted twice and
the interrupted step raises the same alerts again (same ids and ``seq``). The alert log is
therefore exactly once: each alert is committed once, atomically with the state that
accounts for it.

Printing is at least once, and the window is one alert wide. After each commit, the alerts
with ``seq`` above ``emitted`` are printed one at a time, in order; after each print (flushed
to the output) ``emitted`` is raised to its ``seq`` and committed (a rename). A restart prints
the alerts above the committed ``emitted`` and never an alert at or below it. The only
repetition possible is the alert being printed when the process dies: killed after its line
reached standard output and before the rename that marks it, that one alert (same ``id``
and ``seq``) is printed again on restart. So each kill repeats at most one alert and loses
none. A kill in the middle of writing a line can leave a partial line on standard output;
the full line follows on restart.

How a consumer deduplicates: by ``id`` (or, equivalently within one state directory, by
``seq``: keep the largest ``seq`` seen and drop any line whose ``seq`` is not larger), and
skip a line that is not complete JSON. ``DIR/alerts.jsonl`` is the authoritative record: a
consumer that missed output can read it (its lines up to the committed ``alerts_bytes`` of
``state.json``).

With ``--audited FILE`` (``audited=``) the shipped network detector is fitted on the listed
agents, audited clean, and judges the others, as ``tcpkit detect --audited`` does; a listed
agent joins the reference once it has events in the log (a name the log never shows is
never used), and the list's digest is part of the settings a state directory keeps, so a
restart with another list is refused.

What an alert means
-------------------
Each judgement is a Benjamini-Hochberg decision over the fleet at that time; repeating it
as windows close is a sequence of looks, so the false discovery rate over the whole run is
not bounded by ``alpha`` (each single judgement is, under the detector's assumption).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from tcpkit.detect.alerts import AlertReport, judge_table
from tcpkit.detect.config import DetectorConfig
from tcpkit.detect.features import parse_duration
from tcpkit.detect.files import write_text_atomic

__all__ = ["ALERTS_FILE", "EVENTS_FILE", "STATE_FILE", "Monitor", "MonitorError", "MonitorState", "alert_id"]

STATE_FILE = "state.json"
EVENTS_FILE = "events.jsonl"
ALERTS_FILE = "alerts.jsonl"
STATE_FORMAT = "tcpkit.monitor/2"
_OLD_FORMAT = "tcpkit.monitor/1"  # alerts kept inside state.json, a "printed" count


class MonitorError(ValueError):
    """The monitor cannot go on: a bad state directory, option or event line."""


def alert_id(detector: Mapping[str, Any], settings: Mapping[str, Any], agent: str, closed_windows: int) -> str:
    """The stable id of the alert on ``agent`` raised when ``closed_windows`` windows had closed.

    A digest (24 hex digits of SHA-256) of the detector's module and model digests, the
    monitor's settings, the agent and the window: equal for the same alert of a rerun,
    distinct across agents, windows, detectors and settings.
    """
    material = json.dumps(
        {
            "format": "tcpkit.alert/1",
            "module": detector.get("module_sha256"),
            "model": detector.get("model_sha256"),
            "settings": dict(settings),
            "agent": agent,
            "closed_windows": int(closed_windows),
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:24]


@dataclass(frozen=True)
class MonitorState:
    """What survives a restart (``DIR/state.json``)."""

    source_offset: int = 0  # bytes of the followed log consumed (complete lines only)
    events_bytes: int = 0  # length of DIR/events.jsonl that this state accounts for
    alerts_bytes: int = 0  # length of DIR/alerts.jsonl that this state accounts for
    alerts: int = 0  # alerts raised (the last seq)
    emitted: int = 0  # seq of the last alert printed and marked
    origin_us: int | None = None  # start of window 0 (the first event's time, floored)
    closed_windows: int = 0
    settings: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": STATE_FORMAT,
                "source_offset": self.source_offset,
                "events_bytes": self.events_bytes,
                "alerts_bytes": self.alerts_bytes,
                "alerts": self.alerts,
                "emitted": self.emitted,
                "origin_us": self.origin_us,
                "closed_windows": self.closed_windows,
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
                alerts_bytes=int(doc["alerts_bytes"]),
                alerts=int(doc["alerts"]),
                emitted=int(doc["emitted"]),
                origin_us=None if doc["origin_us"] is None else int(doc["origin_us"]),
                closed_windows=int(doc["closed_windows"]),
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
        audited: Sequence[str] | None = None,
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
        self.audited = None if audited is None else tuple(dict.fromkeys(str(a) for a in audited))
        settings: dict[str, Any] = {"window": window, "reference_windows": self.reference_windows}
        if self.audited is not None:  # another audited list judges differently: a state is kept per list
            settings["audited_sha256"] = hashlib.sha256("\n".join(sorted(self.audited)).encode()).hexdigest()
        self.state = self._load(settings)
        if self.state.settings and dict(self.state.settings) != settings:
            raise MonitorError(
                f"{self.dir} was started with {dict(self.state.settings)}: use the same options or a new --state"
            )
        self.state = replace(self.state, settings=settings)
        self._recover()

    # -- persistence -----------------------------------------------------------------------

    def _load(self, settings: Mapping[str, Any]) -> MonitorState:
        path = self.dir / STATE_FILE
        if not path.exists():
            return MonitorState()
        text = path.read_text(encoding="utf-8")
        try:
            old = json.loads(text).get("format") == _OLD_FORMAT
        except (json.JSONDecodeError, AttributeError):
            old = False
        return self._migrate(text, path, settings) if old else MonitorState.from_json(text, path)

    def _migrate(self, text: str, path: Path, settings: Mapping[str, Any]) -> MonitorState:
        """A ``tcpkit.monitor/1`` state (alerts inside it) as a /2 state with an alert log."""
        try:
            doc = json.loads(text)
            alerts = [dict(a) for a in doc["alerts"]]
            kept = dict(doc["settings"]) or dict(settings)
            for a in alerts:
                a.setdefault("id", alert_id(self.detector_info, kept, str(a["agent"]), int(a["closed_windows"])))
            lines = "".join(json.dumps(a, sort_keys=True) + "\n" for a in alerts).encode("utf-8")
            state = MonitorState(
                source_offset=int(doc["source_offset"]),
                events_bytes=int(doc["events_bytes"]),
                alerts_bytes=len(lines),
                alerts=len(alerts),
                emitted=int(doc["printed"]),
                origin_us=None if doc["origin_us"] is None else int(doc["origin_us"]),
                closed_windows=int(doc["closed_windows"]),
                settings=kept,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MonitorError(f"{path} is damaged ({exc}): move it away to start over") from None
        write_text_atomic(self.dir / ALERTS_FILE, lines.decode("utf-8"))
        write_text_atomic(path, state.to_json())
        return state

    def _recover(self) -> None:
        """Cut the append-only files back to what the state accounts for; print unprinted alerts."""
        for name, length in ((EVENTS_FILE, self.state.events_bytes), (ALERTS_FILE, self.state.alerts_bytes)):
            path = self.dir / name
            size = path.stat().st_size if path.exists() else 0
            if size < length:
                raise MonitorError(f"{path} is shorter than its state records: the state directory was damaged")
            if size > length:
                with open(path, "r+b") as f:
                    f.truncate(length)
                    os.fsync(f.fileno())
        self._alerted = {str(a["agent"]) for a in self.alerts()}
        self._emit_pending()

    def _commit(self, state: MonitorState) -> None:
        write_text_atomic(self.dir / STATE_FILE, state.to_json())
        self.state = state

    def alerts(self) -> list[dict[str, Any]]:
        """The committed alert log (``DIR/alerts.jsonl`` up to the committed length), in ``seq`` order."""
        path = self.dir / ALERTS_FILE
        if not path.exists() or self.state.alerts_bytes == 0:
            return []
        with open(path, "rb") as f:
            data = f.read(self.state.alerts_bytes)
        return [json.loads(line) for line in data.splitlines() if line.strip()]

    def _emit_pending(self) -> None:
        """Print the committed alerts above ``emitted``, marking each one (a commit) after its print."""
        if self.state.emitted >= self.state.alerts:
            return
        for alert in self.alerts():
            if int(alert["seq"]) <= self.state.emitted:
                continue
            self.emit(alert)
            self._commit(replace(self.state, emitted=int(alert["seq"])))

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
        _append(self.dir / EVENTS_FILE, lines)
        state = replace(
            self.state,
            source_offset=self.state.source_offset + len(lines),
            events_bytes=self.state.events_bytes + len(lines),
        )
        state, new = self._judge(state)
        if new:
            log = "".join(json.dumps(a, sort_keys=True) + "\n" for a in new).encode("utf-8")
            _append(self.dir / ALERTS_FILE, log)
            state = replace(state, alerts_bytes=state.alerts_bytes + len(log), alerts=state.alerts + len(new))
        self._commit(state)  # the commit point of the step: events, alerts and state together
        self._alerted.update(str(a["agent"]) for a in new)
        self._emit_pending()
        return len(new)

    def _judge(self, state: MonitorState) -> tuple[MonitorState, list[dict[str, Any]]]:
        from tcpkit.detect.events import read_events

        table = read_events(self.dir / EVENTS_FILE, format="jsonl")
        times = table.column("time").cast("int64").to_numpy()
        origin = state.origin_us
        if origin is None:
            origin = int(times.min()) // self.window_us * self.window_us
        closed = int((int(times.max()) - origin) // self.window_us)  # windows wholly before the latest event
        state = replace(state, origin_us=origin)
        new: list[dict[str, Any]] = []
        alerted = set(self._alerted)
        # judge once per newly closed window, so the alerts depend on the events alone, not on
        # how the log was cut into polls (or where a restart fell)
        for upto in range(max(state.closed_windows, self.reference_windows) + 1, closed + 1):
            report = self._report(table, origin, upto)
            for a in report.agents:
                if a.flagged and a.agent not in alerted:
                    alerted.add(a.agent)
                    new.append({
                        "id": alert_id(self.detector_info, state.settings, a.agent, upto),
                        "seq": state.alerts + len(new) + 1,
                        "closed_windows": upto,
                        **a.as_dict(),
                    })
        closed = max(closed, state.closed_windows)
        return replace(state, closed_windows=closed), new

    def _report(self, table: Any, origin: int, closed: int) -> AlertReport:
        import pyarrow as pa
        import pyarrow.compute as pc

        end = pa.scalar(origin + closed * self.window_us, pa.timestamp("us", tz="UTC"))
        upto = table.filter(pc.less(table.column("time"), end))
        audited = None
        if self.audited is not None:  # an audited agent joins the reference once it has events
            present = set(pc.unique(upto.column("agent")).to_pylist())
            audited = [a for a in self.audited if a in present]
        return judge_table(
            upto,
            self.config,
            window=self.window,
            reference_windows=self.reference_windows,
            risk_map=self.risk_map,
            audited=audited,
            detector_info=self.detector_info,
            plotted=0,  # no plots: the CUSUM pass is not needed
        )


def _append(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` and flush it to disk (the state commit that follows accounts for it)."""
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
