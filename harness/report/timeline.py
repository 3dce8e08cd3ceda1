"""A scenario's history read back as a timeline: operations as spans per host, faults as spans
from injection to heal, host exits, process counts and verdicts, all on the history's clock.

Pure functions over the events `read_history` returns; the report draws them and `repro`
replays them. A history whose writer was killed keeps its unanswered operations and unhealed
faults as open spans (`end is None`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Faults that act once: their heal (if any) undoes nothing, so they are drawn as a moment.
INSTANT_FAULTS = ("kill_shim", "signal_host")


@dataclass
class Operation:
    """One operation sent to a host: `invoke` until its `ok`/`fail` (or until the end)."""

    host: str
    op: str
    req: int | None
    args: dict[str, Any]
    start: float
    end: float | None = None
    outcome: str = "pending"            # ok | fail | pending
    result: Any = None
    error: Any = None


@dataclass
class FaultSpan:
    name: str
    target: dict[str, Any]
    start: float
    end: float | None = None            # the heal; None when never healed
    heal_error: str | None = None

    @property
    def instant(self) -> bool:
        return self.name in INSTANT_FAULTS


@dataclass
class Timeline:
    meta: dict[str, Any]
    operations: list[Operation] = field(default_factory=list)
    faults: list[FaultSpan] = field(default_factory=list)
    host_exits: dict[str, float] = field(default_factory=dict)
    processes: list[tuple[float, int, int]] = field(default_factory=list)   # t, count, zombies
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)
    call_done: float | None = None      # end of the scenario's steps; teardown follows
    end: float = 0.0                    # the last event's time

    @property
    def hosts(self) -> list[str]:
        seen: dict[str, None] = {}
        for o in self.operations:
            seen.setdefault(o.host, None)
        return list(seen)

    @property
    def complete(self) -> bool:
        """Whether the writer lived to record the scenario's outcome."""
        return any(m.get("event") == "outcome" for m in self.meta.get("events", []))


def _fault_key(event: dict[str, Any]) -> str:
    # A heal repeats the fault's describe() fields, plus its error.
    return json.dumps({k: v for k, v in event.items() if k not in ("t", "kind", "error")},
                      sort_keys=True, default=str)


def _op_key(event: dict[str, Any]) -> tuple[str, Any]:
    # host_start is noted without a request id; everything else is keyed by it.
    req = event.get("req")
    return (event.get("host", "?"), req if req is not None else f"op:{event.get('op')}")


def operations(events: list[dict[str, Any]]) -> list[Operation]:
    """Pair each `invoke` with its `ok` or `fail`, in invoke order."""
    out: list[Operation] = []
    open_ops: dict[tuple[str, Any], Operation] = {}
    for e in events:
        kind = e["kind"]
        if kind == "invoke":
            op = Operation(e.get("host", "?"), e.get("op", "?"), e.get("req"),
                           e.get("args") or {}, e["t"])
            open_ops[_op_key(e)] = op
            out.append(op)
        elif kind in ("ok", "fail"):
            op = open_ops.pop(_op_key(e), None)
            if op is not None:
                op.end, op.outcome = e["t"], kind
                op.result, op.error = e.get("result"), e.get("error")
    return out


def fault_spans(events: list[dict[str, Any]]) -> list[FaultSpan]:
    """Pair each `fault` with the `heal` that repeats its description."""
    out: list[FaultSpan] = []
    open_faults: dict[str, FaultSpan] = {}
    for e in events:
        if e["kind"] == "fault":
            span = FaultSpan(e.get("fault", "?"), {k: v for k, v in e.items()
                                                   if k not in ("t", "kind", "fault")}, e["t"])
            open_faults[_fault_key(e)] = span
            out.append(span)
        elif e["kind"] == "heal":
            span = open_faults.pop(_fault_key(e), None)
            if span is not None:
                span.end, span.heal_error = e["t"], e.get("error")
    return out


def last_run(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events since the last `open`: a scenario rerun into the same folder appends a new
    run to the same history, on a clock that starts again at 0."""
    opens = [i for i, e in enumerate(events) if e["kind"] == "meta" and e.get("event") == "open"]
    return events[opens[-1]:] if opens else events


def build_timeline(events: list[dict[str, Any]]) -> Timeline:
    metas = [e for e in events if e["kind"] == "meta"]
    tl = Timeline({**(metas[0] if metas else {}), "events": metas},
                  operations(events), fault_spans(events))
    for e in events:
        kind, what = e["kind"], e.get("what")
        if kind == "observe" and what == "processes":
            tl.processes.append((e["t"], int(e.get("count", 0)), len(e.get("zombies") or [])))
        elif kind == "observe" and what == "host_exit":
            tl.host_exits[e.get("host", "?")] = e["t"]
        elif kind == "verdict":
            tl.verdicts.append(e)
        elif kind == "note":
            tl.notes.append(e)
        elif kind == "meta" and e.get("event") == "call_done":
            tl.call_done = e["t"]
    tl.end = max((e["t"] for e in events), default=0.0)
    return tl
