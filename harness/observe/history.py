"""The append-only history of a scenario: one JSON object per line, flushed per event.

A harness killed with SIGKILL still leaves every event it wrote readable; a torn last line is
reported by `read_history` with its line number instead of being silently dropped.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.common.errors import HistoryError

KINDS = ("meta", "invoke", "ok", "fail", "fault", "heal", "observe", "verdict", "note",
         "witness")


class History:
    """Writes events with a monotonic offset (`t`, seconds since the history opened)."""

    def __init__(self, path: Path, meta: dict[str, Any] | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # One os.write per event on an O_APPEND descriptor: a SIGKILL cannot tear a line.
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._lock = threading.Lock()
        self._watchers: list[Callable[[dict[str, Any]], None]] = []
        self.t0 = time.monotonic()
        self.append("meta", event="open", wall=datetime.now(UTC).isoformat(),
                    **(meta or {}))

    def watch(self, fn: Callable[[dict[str, Any]], None]) -> None:
        """Call `fn` with every event appended from now on (after it is written)."""
        self._watchers.append(fn)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        if kind not in KINDS:
            raise ValueError(f"unknown history kind {kind!r}")
        event = {"t": round(self.now(), 4), "kind": kind, **fields}
        line = json.dumps(event, default=str, sort_keys=False)
        data = (line + "\n").encode("utf-8")
        with self._lock:
            if self._fd is None:
                return event
            # No fsync: surviving SIGKILL of the harness needs only the page cache.
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
        for fn in self._watchers:
            fn(event)
        return event

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def read_history(path: Path) -> list[dict[str, Any]]:
    """Parse a history file; a corrupt or truncated line raises HistoryError naming it."""
    if not path.is_file():
        raise HistoryError(f"history {path}: no such file")
    events = []
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise HistoryError(f"history {path}: line {n} is not UTF-8 "
                                   f"(byte {exc.start + 1})") from exc
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError as exc:
                torn = "" if line.endswith("\n") else " (truncated: no newline at end)"
                raise HistoryError(f"history {path}: line {n} is not valid JSON{torn}: "
                                   f"{exc.msg} at column {exc.colno}") from exc
            if not isinstance(event, dict) or "kind" not in event or "t" not in event:
                raise HistoryError(f"history {path}: line {n} is not a history event "
                                   "(needs 't' and 'kind')")
            events.append(event)
    if not events or events[0].get("kind") != "meta":
        raise HistoryError(f"history {path}: line 1 must be the 'meta' event")
    return events
