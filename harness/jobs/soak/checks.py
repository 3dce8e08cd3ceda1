"""The checks the soak adds: a record's status, an operation's outcome and a box's processes
as the model allows them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.judge.checks import HOLDS, UNKNOWN, VIOLATED, Verdict, check
from harness.observe.records import RecordRead
from harness.scenario.context import WATCHDOG_BOUND_S


@check("status_as_modelled")
def status_as_modelled(read: RecordRead, expected: Sequence[str | None], state: str,
                       age_s: float = 0.0, transitional: Sequence[str] = (),
                       bound_s: float = 0.0, *, check_id: str | None = None) -> Verdict:
    """The record on one read path has a status the model allows for the box's state (None:
    no record); a transitional status is allowed only until `bound_s` after the state began."""
    cid = check_id or f"status_as_modelled[{read.path}]"
    got = read.status if read.present else None
    ev = {"read": read.to_json(), "state": state, "expected": list(expected),
          "age_s": round(age_s, 3), "transitional": list(transitional), "bound_s": bound_s}
    shown = [e if e is not None else "absent" for e in expected]
    if read.error:
        return Verdict(cid, UNKNOWN, ev, f"{read.path} could not be read: {read.error}")
    if got in expected:
        return Verdict(cid, HOLDS, ev, f"{read.path}: {got or 'absent'} ({state})")
    if got in transitional and age_s < bound_s:
        return Verdict(cid, HOLDS, ev, f"{read.path}: {got} for {age_s:.1f}s, within the "
                       f"{bound_s:.0f}s bound ({state})")
    past = f", past the {bound_s:.0f}s bound" if got in transitional else ""
    return Verdict(cid, VIOLATED, ev, f"{read.path} says {got or 'absent'!r} for a {state} box"
                   f"{past}; the model allows {shown}")


@check("op_as_modelled")
def op_as_modelled(op: str, expected: Sequence[str], got: str, state: str = "",
                   error: Mapping[str, Any] | None = None) -> Verdict:
    """An operation ended in one of the outcomes the model allows (ok, error, running ...);
    an error must carry a message."""
    cid = f"op_as_modelled[{op}]"
    ev = {"op": op, "state": state, "expected": list(expected), "got": got,
          "error": dict(error) if error else None}
    if got not in expected:
        detail = f": {error.get('type')}: {str(error.get('message', ''))[:160]}" if error else ""
        return Verdict(cid, VIOLATED, ev, f"{op} on a {state or '-'} box ended {got!r}, the "
                       f"model allows {list(expected)}{detail}")
    if got == "error" and not str((error or {}).get("message", "")).strip():
        return Verdict(cid, VIOLATED, ev, f"{op} failed with an empty message")
    return Verdict(cid, HOLDS, ev, f"{op} ended {got}")


@check("processes_follow_boxes")
def processes_follow_boxes(boxes: Sequence[Mapping[str, Any]],
                           procs: Mapping[str, Sequence[Mapping[str, Any]]],
                           bound_s: float = WATCHDOG_BOUND_S, *,
                           check_id: str | None = None) -> Verdict:
    """A box has runtime processes only while its start is in flight or it runs (`may_run`);
    any other box's are gone within `bound_s` of its state beginning, and no process belongs
    to a box the model does not hold (`procs` is keyed by box id, "?" when none is named)."""
    by_id = {b["id"]: b for b in boxes}
    lingering, settling, strays = [], [], []
    for box_id, ps in procs.items():
        b = by_id.get(box_id)
        if b is None:
            strays.append({"box": box_id, "processes": list(ps)})
        elif not b["may_run"]:
            entry = {**b, "processes": list(ps)}
            (settling if b["age_s"] < bound_s else lingering).append(entry)
    cid = check_id or "processes_follow_boxes"
    may_run = [b["label"] for b in boxes if b["may_run"]]
    ev = {"boxes": len(boxes), "may_run": may_run, "bound_s": bound_s,
          "processes": {k: len(v) for k, v in procs.items()}, "lingering": lingering,
          "settling": settling, "strays": strays}
    if lingering or strays:
        parts = [f"{b['label']} ({b['state']} for {b['age_s']:.1f}s) keeps "
                 f"{len(b['processes'])} process(es)" for b in lingering]
        parts += [f"{len(s['processes'])} process(es) of box {s['box']}, which the model "
                  "does not hold" for s in strays]
        return Verdict(cid, VIOLATED, ev, "; ".join(parts))
    total = sum(len(v) for v in procs.values())
    return Verdict(cid, HOLDS, ev,
                   f"{total} process(es); {len(may_run)} box(es) may run, none lingering")
