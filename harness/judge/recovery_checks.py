"""Checks of detached boxes and recovery: a status that matches the processes, a shim per box,
the home lock, and what remove and the other ops answer once a box outlived its host."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.judge.verdict import HOLDS, UNKNOWN, VIOLATED, Verdict, check
from harness.observe.records import FINAL, RecordRead

ACTIVE_TRANSITIONAL = ("configured", "unknown", "starting", "stopping")


@check("status_matches_reality")
def status_matches_reality(read: RecordRead, alive: Sequence[dict[str, Any]], started: bool,
                           guest_ready: bool, *, check_id: str | None = None) -> Verdict:
    """What a read path says of a box agrees with what is true of it.

    `alive`: the box's live processes (harness.observe.boxes.box_processes); `started`: a
    start of the box was sent; `guest_ready`: a start ever succeeded (its guest answered).
    - processes live, guest ready: `running` (or `stopping`);
    - processes live, guest never ready: not `running` (no guest ever answered: upstream
      #434's sibling) and not final (`stopped`/`failed` while its VM runs: #434);
    - no process, started: a final status, and `failed` with a reason where the path shows
      one (a box that died unattended must not stay `configured` or `running`);
    - no process, never started: `configured`.
    A path that could not be read is unknown; a missing record is violated."""
    cid = check_id or f"status_matches_reality[{read.path}]"
    ev = {"read": read.to_json(), "alive": list(alive), "started": started,
          "guest_ready": guest_ready}
    if read.error:
        return Verdict(cid, UNKNOWN, ev, f"{read.path} could not be read: {read.error}")
    if not read.present:
        return Verdict(cid, VIOLATED, ev, f"{read.path} has no record of the box")
    st = read.status
    procs = ", ".join(f"{p['name']}[{p['pid']}]" for p in alive)
    if alive and guest_ready:
        ok, want = st in ("running", "stopping"), "running"
    elif alive:
        ok, want = st in ACTIVE_TRANSITIONAL, "not running (its guest never answered) and " \
            "not final (its VM runs)"
    elif started:
        ok, want = st in FINAL, "a final status (nothing of it runs)"
        if ok and st == "failed" and read.exposes_reason and not (read.reason or "").strip():
            return Verdict(cid, VIOLATED, ev, f"{read.path}: failed with no reason")
    else:
        ok, want = st == "configured", "configured (never started)"
    reality = (f"{procs} alive" if alive else "no process") + \
        (", guest was ready" if guest_ready else ", guest never ready" if started else "")
    if not ok:
        return Verdict(cid, VIOLATED, ev, f"{read.path} says {st!r} where {reality}: "
                       f"expected {want}")
    return Verdict(cid, HOLDS, ev, f"{read.path}: {st!r} ({reality})")


@check("box_processes_gone")
def box_processes_gone(left: Sequence[dict[str, Any]], op: str, waited_s: float,
                       bound_s: float, *, check_id: str | None = None) -> Verdict:
    """After `op` (stop, remove) returned success, no process of the box is left (outer and
    inner bwrap, shim, 'libkrun VM'), found by what ties it to the box, within `bound_s`
    (the kernel's teardown of what was killed, not the VM dying on its own)."""
    cid = check_id or f"box_processes_gone[{op}]"
    ev = {"left": list(left), "op": op, "waited_s": round(waited_s, 3), "bound_s": bound_s}
    if left:
        return Verdict(cid, VIOLATED, ev, f"{op} returned, and {waited_s:.1f}s later "
                       f"{len(left)} process(es) of the box still run: " + ", ".join(
                           f"{p['name']}[{p['pid']}] ({p['tie']})" for p in left))
    return Verdict(cid, HOLDS, ev, f"nothing of the box runs {waited_s:.1f}s after {op}")


@check("one_shim_per_box")
def one_shim_per_box(shims: Sequence[dict[str, Any]], end_t: float) -> Verdict:
    """At no moment do two shims serve one box (upstream #565: a recovery that took a live
    shim for dead started a second). `shims`: ledger records of shim/VM processes with their
    `box`, `first_seen` and `gone_at` (None: alive at `end_t`)."""
    by_box: dict[str, list[dict[str, Any]]] = {}
    for s in shims:
        if s.get("box"):
            by_box.setdefault(s["box"], []).append(s)
    overlaps = []
    for box, recs in by_box.items():
        spans = sorted((r["first_seen"], r["gone_at"] if r["gone_at"] is not None else end_t,
                        r["pid"]) for r in recs)
        latest = None                   # the span reaching furthest so far
        for b0, b1, bpid in spans:
            if latest is not None and latest[2] != bpid and b0 < latest[1]:
                overlaps.append({"box": box, "pids": [latest[2], bpid], "from": b0,
                                 "to": min(latest[1], b1)})
            if latest is None or b1 > latest[1]:
                latest = (b0, b1, bpid)
    unattributed = [s["pid"] for s in shims if not s.get("box")]
    ev = {"boxes": len(by_box), "shims": len(shims), "overlaps": overlaps,
          "unattributed": unattributed}
    if shims and not by_box:
        return Verdict("one_shim_per_box", UNKNOWN, ev,
                       f"none of {len(shims)} shim(s) could be tied to a box")
    if overlaps:
        o = overlaps[0]
        return Verdict("one_shim_per_box", VIOLATED, ev,
                       f"box {o['box']} had two shims at once (pids {o['pids']}, "
                       f"{o['from']:.1f}-{o['to']:.1f}s)")
    return Verdict("one_shim_per_box", HOLDS, ev,
                   f"{len(shims)} shim(s) over {len(by_box)} box(es), never two at once")


@check("home_lock_holds")
def home_lock_holds(second_error: str | None, first_answers: bool) -> Verdict:
    """A second runtime on a home that a live one holds is refused, saying why, and the first
    keeps working (the runtime's home lock: one BoxliteRuntime per home)."""
    ev = {"second_error": second_error, "first_answers": first_answers}
    if second_error is None:
        return Verdict("home_lock_holds", VIOLATED, ev,
                       "a second runtime opened a home a live runtime holds")
    if not first_answers:
        return Verdict("home_lock_holds", VIOLATED, ev,
                       "the first runtime stopped answering after the second was refused")
    if "lock" not in second_error.lower() and "another" not in second_error.lower():
        return Verdict("home_lock_holds", VIOLATED, ev,
                       f"the second runtime was refused without saying why: {second_error}")
    return Verdict("home_lock_holds", HOLDS, ev, f"second refused: {second_error[:160]}")


@check("op_succeeded")
def op_succeeded(op: str, error: dict[str, Any] | None) -> Verdict:
    """The operation a caller is entitled to (stop, a force-remove, get of an existing box)
    answered success; a runtime error instead is violated, with its message."""
    cid = f"op_succeeded[{op}]"
    if error is not None:
        return Verdict(cid, VIOLATED, {"error": error},
                       f"{op} failed: {error.get('type', '')}: {error.get('message', '')[:160]}")
    return Verdict(cid, HOLDS, {"error": None}, f"{op} succeeded")


@check("remove_refuses_or_ends")
def remove_refuses_or_ends(error: dict[str, Any] | None, left: Sequence[dict[str, Any]],
                           host_alive: bool) -> Verdict:
    """remove() without force on a box whose VM runs either refuses, saying why, or removes
    the box whole: it never deletes the record while the box's processes run on (a box no
    record can find any more). `left`: the box's processes after the answer."""
    ev = {"error": error, "left": list(left), "host_alive": host_alive}
    cid = "remove_refuses_or_ends"
    if not host_alive:
        return Verdict(cid, VIOLATED, ev, "the host died during remove")
    if error is not None:
        if not (error.get("message") or "").strip():
            return Verdict(cid, VIOLATED, ev, "remove refused with no message")
        return Verdict(cid, HOLDS, ev, f"remove refused: {error['message'][:160]}")
    if left:
        return Verdict(cid, VIOLATED, ev, "remove succeeded and left the box's processes "
                       "running with no record: " + ", ".join(
                           f"{p['name']}[{p['pid']}]" for p in left))
    return Verdict(cid, HOLDS, ev, "remove succeeded and nothing of the box runs")
