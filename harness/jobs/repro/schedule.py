"""A recorded history read as a replayable schedule: the hosts, lifecycle operations, faults
and reads the recorded harness did, in order, with what the scenario judged its records by.

What a schedule keeps: the order of hosts (a host started after another one went away is a
restart on the home it left), of lifecycle operations and their arguments, the time of each
step since the history opened, and each fault's offset from its box's `start`. A history
whose writer was killed mid-scenario yields the steps it recorded, marked incomplete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.observe.history import read_history
from harness.report.timeline import last_run, operations
from harness.runtime.host import Flavour

# Operations that change what the runtime holds, replayed as recorded. Reads are replayed as
# the moments the scenario looked: there the replay reads every path and judges the records.
LIFECYCLE = ("create", "start", "stop", "remove", "exec", "shutdown", "exit")
READS = ("get_info", "list_info")
BOX_FAULTS = ("freeze_box", "kill_shim")


@dataclass
class Step:
    """One thing the recorded harness did or waited for, at `t` seconds since the history
    opened. action: host_start | send | await | fault | heal | host_exit | read."""

    t: float
    action: str
    host: str
    op: str = ""                    # send/await: the operation; fault/heal: the fault's name
    req: int | None = None
    args: dict[str, Any] = field(default_factory=dict)
    box: str | None = None          # the recorded box id the step is about
    home: str | None = None         # host_start: a label ("home1") shared by restarts
    flavour: str | None = None      # host_start: Flavour.label as recorded
    after_start_s: float | None = None   # box fault: offset from the box's start invoke
    signal: str | None = None       # signal_host fault: the signal's name
    recorded: str | None = None     # await: ok | fail, as recorded
    error: Any = None               # await: the recorded error

    def describe(self) -> str:
        where = f"{self.t:8.3f}s {self.host:>6}"
        if self.action == "host_start":
            return f"{where} host_start on {self.home} ({self.flavour})"
        if self.action == "send":
            shown = {k: v for k, v in self.args.items() if k != "options"}
            if "options" in self.args:
                shown["options"] = {k: v for k, v in self.args["options"].items()
                                    if k != "rootfs_path"}
            return f"{where} send {self.op} {json.dumps(shown, default=str)}"
        if self.action == "await":
            msg = error_message(self.error) if self.recorded == "fail" else ""
            return f"{where} await {self.op}: recorded {self.recorded}" + (
                f" ({msg})" if msg else "")
        if self.action == "fault" and self.signal:
            return f"{where} fault signal_host {self.signal}"
        if self.action == "fault":
            return f"{where} fault {self.op} on box {self.box}, {self.after_start_s:.2f}s " \
                   "after its start"
        if self.action == "heal":
            return f"{where} heal {self.op} on box {self.box}"
        if self.action == "read":
            return f"{where} read the record of " + (f"box {self.box}" if self.box
                                                     else "every box")
        return f"{where} {self.action}"


@dataclass
class Schedule:
    scenario: str
    runtime: str
    steps: list[Step]
    complete: bool                  # the recorded harness reached the end of its steps
    record_check: str | None        # "record_failed" | "record_final" | None (none judged)
    expected_cause: str | None      # record_failed's cause, as the scenario judged it
    judged_start: bool              # the scenario judged op_failed_cleanly[start]

    def describe(self) -> str:
        head = [f"scenario {self.scenario} (recorded on {self.runtime}); "
                + ("complete" if self.complete else "incomplete: replaying what was recorded")]
        return "\n".join(head + [s.describe() for s in self.steps])


def error_message(error: Any) -> str:
    """A recorded error's message: runtime errors are dicts; the harness's own (a timeout, a
    host that exited with the operation pending) are strings."""
    return str(error.get("message", "") if isinstance(error, dict) else error or "")


def parse_flavour(label: str | None) -> Flavour:
    """Flavour.label back to a Flavour; fields the label leaves out keep their defaults."""
    if not label:
        return Flavour()
    runtime, *rest = label.split(",")
    fields = dict(part.split("=", 1) for part in rest if "=" in part)
    return Flavour(runtime=runtime, **{k: v for k, v in fields.items()
                                       if k in ("sigterm", "reaper")})


def extract_schedule(events: list[dict[str, Any]]) -> Schedule:
    """The replayable schedule of a history: steps up to the end of the scenario's call
    (teardown is the replay's own), or up to the last event of a history cut short."""
    meta = events[0] if events else {}
    done = next((i for i, e in enumerate(events) if e["kind"] == "meta"
                 and e.get("event") == "call_done"), None)
    scene = events[:done]
    ops = {(o.host, o.req): o for o in operations(scene) if o.req is not None}

    steps: list[Step] = []
    live_hosts: dict[str, str] = {}          # recorded host -> home label, while running
    vacated: list[str] = []                  # homes whose host went away, latest last
    homes = 0
    box_start: dict[str, float] = {}

    def gone(host: str) -> None:
        home = live_hosts.pop(host, None)
        if home is not None and home not in live_hosts.values():
            vacated.append(home)
    for e in scene:
        kind, host = e["kind"], e.get("host", "")
        op = e.get("op")
        if kind == "invoke" and op in READS:
            # Consecutive reads through one host are one look at the records.
            if not (steps and steps[-1].action == "read" and steps[-1].host == host):
                steps.append(Step(e["t"], "read", host, box=(e.get("args") or {}).get("box_id")))
            continue
        if kind == "invoke" and op == "host_start":
            if e.get("home"):
                home = str(e["home"])
            elif vacated:
                home = vacated.pop()        # the home a host just left: a restart
            else:
                homes += 1
                home = f"home{homes}"
            if home in vacated:
                vacated.remove(home)
            live_hosts[host] = home
            steps.append(Step(e["t"], "host_start", host, home=home, flavour=e.get("flavour")))
        elif kind == "invoke" and op in LIFECYCLE:
            args = e.get("args") or {}
            steps.append(Step(e["t"], "send", host, op, e.get("req"), args,
                              box=args.get("box_id")))
            if op == "start":
                box_start[args.get("box_id")] = e["t"]
            if op == "exit":
                gone(host)
        elif kind in ("ok", "fail") and op in LIFECYCLE:
            rec = ops.get((host, e.get("req")))
            box = (e.get("result") or {}).get("id") if op == "create" and kind == "ok" \
                else (rec.args.get("box_id") if rec else None)
            steps.append(Step(e["t"], "await", host, op, e.get("req"), box=box, recorded=kind,
                              error=e.get("error")))
        elif kind == "fault" and e.get("fault") in BOX_FAULTS:
            box = e.get("box")
            start = box_start.get(box)
            steps.append(Step(e["t"], "fault", host, e["fault"], box=box,
                              after_start_s=round(e["t"] - start, 4) if start is not None
                              else 0.0))
        elif kind == "fault" and e.get("fault") == "signal_host":
            steps.append(Step(e["t"], "fault", host, "signal_host", signal=e.get("signal")))
            if e.get("signal") == "SIGKILL":
                gone(host)
        elif kind == "heal" and e.get("fault") in BOX_FAULTS:
            steps.append(Step(e["t"], "heal", host, e["fault"], box=e.get("box")))
        elif kind == "observe" and e.get("what") == "host_exit":
            gone(host)
            steps.append(Step(e["t"], "host_exit", host))

    verdicts = [e for e in scene if e["kind"] == "verdict"]
    families = {v.get("check", "").split("[")[0] for v in verdicts}
    causes = [v.get("evidence", {}).get("expected_cause") for v in verdicts
              if v.get("check", "").startswith("record_failed[")]
    record_check = next((c for c in ("record_failed", "record_final") if c in families), None)
    return Schedule(meta.get("scenario", "?"), meta.get("runtime", "?"), steps,
                    complete=done is not None, record_check=record_check,
                    expected_cause=next(filter(None, causes), None),
                    judged_start="op_failed_cleanly" in families)


def load_schedule(history_path: Path) -> Schedule:
    """Read a history (a corrupt or truncated line is a HistoryError naming it) and extract
    its schedule."""
    return extract_schedule(last_run(read_history(Path(history_path))))
