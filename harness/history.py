"""The append-only history of a scenario: one JSON object per line, flushed per event.

A harness killed with SIGKILL still leaves every event it wrote readable; a torn last line is
reported by `read_history` with its line number instead of being silently dropped.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.errors import HistoryError

KINDS = ("meta", "invoke", "ok", "fail", "fault", "heal", "observe", "verdict", "note")


class History:
    """Writes events with a monotonic offset (`t`, seconds since the history opened)."""

    def __init__(self, path: Path, meta: dict[str, Any] | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", buffering=1, encoding="utf-8")
        self._lock = threading.Lock()
        self.t0 = time.monotonic()
        self.append("meta", event="open", wall=datetime.now(UTC).isoformat(),
                    **(meta or {}))

    def now(self) -> float:
        return time.monotonic() - self.t0

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        if kind not in KINDS:
            raise ValueError(f"unknown history kind {kind!r}")
        event = {"t": round(self.now(), 4), "kind": kind, **fields}
        line = json.dumps(event, default=str, sort_keys=False)
        with self._lock:
            if self._fh.closed:
                return event
            self._fh.write(line + "\n")
            # flush, not fsync: surviving SIGKILL of the harness needs only the page cache.
            self._fh.flush()
        return event

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()


def read_history(path: Path) -> list[dict[str, Any]]:
    """Parse a history file; a corrupt or truncated line raises HistoryError naming it."""
    if not path.is_file():
        raise HistoryError(f"history {path}: no such file")
    events = []
    with open(path, encoding="utf-8", errors="strict") as fh:
        for n, line in enumerate(fh, start=1):
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
