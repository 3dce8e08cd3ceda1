"""Replay a recorded history against a chosen runtime: its hosts, lifecycle operations and
faults at their recorded offsets, judged with the checks the scenario used; `boxlite-chaos repro`.

What a replay keeps: the order of hosts (a host started after another one went away is a
restart on the home it left), of lifecycle operations and their arguments (box ids mapped to the new
boxes, the image replaced by this machine's), the gaps between the steps the harness started,
and each fault's offset from its box's `start` — never before the box's shim exists. What it
cannot keep: pids, box ids, and where inside the runtime a fault lands; a replay that diverges
(an operation answering differently than recorded) says so, and the checks still judge it.
A history whose writer was killed mid-scenario replays as far as it was recorded; operations
still unanswered at its end are waited for before the records are judged. The schedule comes
from harness.jobs.repro.schedule.

Our own replayer rather than a record/replay tool (rr, HTTP cassettes): what is replayed is the
harness's history of runtime operations and faults, against another runtime build.
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.common.errors import HostError
from harness.common.paths import PROJECT
from harness.common.wait import WaitTimeout, hold
from harness.faults.base import Fault
from harness.faults.shim import box_tree, freeze_box, kill_shim, wait_for_shim
from harness.jobs.repro.schedule import (
    Schedule,
    Step,
    error_message,
    load_schedule,
    parse_flavour,
)
from harness.judge import checks
from harness.judge.known import Judgement, load_table
from harness.observe.processes import become_subreaper
from harness.observe.records import RecordRead, read_host, read_store
from harness.runtime.host import RuntimeHost, RuntimeOpError
from harness.runtime.image import busybox_image
from harness.runtime.spec import DEFAULT_SPEC, ensure_runtime
from harness.scenario.context import Chaos, ScenarioFailed
from harness.scenario.steps import START_BOUND_S, read_live

SHIM_SPAWN_TIMEOUT_S = 60.0
REPLY_TIMEOUT_S = 120.0
HOST_EXIT_TIMEOUT_S = 60.0
REPORTS = PROJECT / "reports"


# -- replaying -------------------------------------------------------------------------------

class Replayer:
    """Drives one schedule through a Chaos context; its verdicts are the replay's result."""

    def __init__(self, schedule: Schedule, chaos: Chaos, say: Callable[[str], None] = print
                 ) -> None:
        self.s = schedule
        self.chaos = chaos
        self.say = say
        self.hosts: dict[str, RuntimeHost] = {}   # recorded host -> replay host
        self.homes: dict[str, Path] = {}          # home label -> replay home
        self.boxes: dict[str, str] = {}           # recorded box -> replay box
        self.box_host: dict[str, str] = {}        # recorded box -> recorded host that drives it
        self.started: dict[str, float] = {}       # recorded box -> replay start time
        self.pending: dict[tuple[str, int | None], Future] = {}
        self.injected: dict[str, Fault] = {}
        self.shutdown_homes: set[Path] = set()
        self.judged: set[str] = set()             # recorded boxes whose records were judged
        self.divergences: list[str] = []
        self._anchor = (0.0, time.monotonic())

    def diverge(self, what: str) -> None:
        self.divergences.append(what)
        self.chaos.note(replay="diverged", detail=what)
        self.say(f"  diverged: {what}")

    def _pace(self, t: float) -> None:
        """Keep the recorded gap since the previous step."""
        rec, real = self._anchor
        wait = real + (t - rec) - time.monotonic()
        if wait > 0:
            hold(wait, "the recorded gap since the previous step")

    def run(self) -> None:
        for step in self.s.steps:
            self.say(step.describe())
            if step.action in ("host_start", "send", "heal") or step.signal:
                self._pace(step.t)
            getattr(self, f"_{step.action}")(step)
            self._anchor = (step.t, time.monotonic())
        for (host, _), fut in list(self.pending.items()):
            self._await_future(self.hosts[host], fut, None)

    def _host_start(self, step: Step) -> None:
        home = self.homes.get(step.home or "")
        if home is None:
            home = self.homes[step.home or "home"] = self.chaos.factory.new_home()
        prior = [h for h in self.hosts.values() if h.home == home and h.alive]
        for h in prior:         # recorded as gone; one runtime per home
            self.diverge(f"{h.name} still running where the recording had it gone; closing it")
            h.close()
        self.hosts[step.host] = self.chaos.host(parse_flavour(step.flavour), home)

    def _send(self, step: Step) -> None:
        host = self.hosts.get(step.host)
        if host is None:
            return self.diverge(f"{step.op}: {step.host} was never started here")
        args = dict(step.args)
        if "box_id" in args:
            if args["box_id"] not in self.boxes:
                return self.diverge(f"{step.op}: box {args['box_id']} was never created here")
            args["box_id"] = self.boxes[args["box_id"]]
            if step.op == "start":
                self.box_host[step.box] = step.host
                self.started[step.box] = time.monotonic()
        if step.op == "create":
            args["options"] = self.chaos.box_options(**{
                k: v for k, v in (args.get("options") or {}).items() if k != "rootfs_path"})
        if step.op == "shutdown":
            self.shutdown_homes.add(host.home)
        try:
            fut = host.send(step.op, **args)
        except HostError as exc:
            return self.diverge(f"{step.op} could not be sent to {step.host}: {exc}")
        if step.op != "exit":           # a host leaves without answering `exit`
            self.pending[(step.host, step.req)] = fut
        return None

    def _await(self, step: Step) -> None:
        fut = self.pending.pop((step.host, step.req), None)
        if fut is not None:
            self._await_future(self.hosts[step.host], fut, step)

    def _await_future(self, host: RuntimeHost, fut: Future, step: Step | None) -> None:
        op = getattr(fut, "op", "?")
        error = None
        try:
            result = host.result(fut, START_BOUND_S if op == "start" else REPLY_TIMEOUT_S)
            outcome = "ok"
        except RuntimeOpError as exc:
            result, outcome, error = None, "fail", {"type": exc.type, "message": exc.message}
        except HostError as exc:
            result, outcome, error = None, "no reply", {"message": str(exc)}
        self.say(f"  replayed: {op} {outcome}" + (f" ({error['message']})" if error else ""))
        if step is None:
            return
        if op == "create" and outcome == "ok" and step.box:
            self.boxes[step.box] = result["id"]
            self.box_host.setdefault(step.box, step.host)
        if outcome != step.recorded:
            self.diverge(f"{op} {outcome} where the recording had {step.recorded}")
        if op == "start" and self.s.judged_start:
            self.chaos.judge(checks.op_failed_cleanly("start", error, host.alive))

    def _fault(self, step: Step) -> None:
        if step.signal:
            host = self.hosts.get(step.host)
            if host is None or not host.alive:
                return self.diverge(f"{step.host} already gone; {step.signal} not sent")
            host.signal(signal.Signals[step.signal])
            return None
        box, host = self.boxes.get(step.box or ""), self.hosts.get(
            self.box_host.get(step.box or "", ""))
        if box is None or host is None:
            return self.diverge(f"{step.op}: box {step.box} was never started here")
        try:
            tree = wait_for_shim(host.home, box, SHIM_SPAWN_TIMEOUT_S)
        except WaitTimeout as exc:
            return self.diverge(f"{step.op} not injected: {exc}")
        wait = self.started[step.box] + (step.after_start_s or 0.0) - time.monotonic()
        if wait > 0:
            hold(wait, "the recorded gap since the previous step")
            tree = box_tree(host.home, box) or tree
        make = freeze_box if step.op == "freeze_box" else kill_shim
        try:
            self.injected[step.box] = self.chaos.inject(make(host.home, box, tree))
        except ProcessLookupError as exc:
            self.diverge(f"{step.op} not injected: {exc}")
        return None

    def _heal(self, step: Step) -> None:
        fault = self.injected.get(step.box or "")
        if fault is not None:
            self.chaos.faults.heal(fault)

    def _host_exit(self, step: Step) -> None:
        host = self.hosts.get(step.host)
        if host is None:
            return
        try:
            host.wait_exit(HOST_EXIT_TIMEOUT_S)
        except HostError as exc:
            self.diverge(str(exc))

    def _read(self, step: Step) -> None:
        host = self.hosts.get(step.host)
        if host is None or not host.alive:
            return self.diverge(f"{step.host} is not running; the records were not read")
        rec_boxes = [step.box] if step.box else [
            b for b in self.boxes if self.hosts[self.box_host[b]].home == host.home]
        for rec_box in rec_boxes:
            self.judge_record(host, rec_box)
        return None

    # -- judging ---------------------------------------------------------------------------
    def moment(self, host: RuntimeHost) -> str:
        """How steps.py names a read: `live` through the home's first host, else after how
        the earlier host ended."""
        first = next(h for h in self.chaos.factory.hosts if h.home == host.home)
        if host is first:
            return "live"
        return "after_shutdown" if host.home in self.shutdown_homes else "after_exit"

    def judge_record(self, host: RuntimeHost, rec_box: str) -> None:
        """Read the box through `host` and the store beside it; judge as the scenario did."""
        box = self.boxes.get(rec_box)
        if box is None:
            return self.diverge(f"box {rec_box} was never created here; its record is not read")
        moment = self.moment(host)
        reads = read_live(host, box) if moment == "live" else [
            *read_host(host, box, moment), read_store(host.home, box, f"store.{moment}")]
        expect = self.expectation(rec_box)
        if expect is checks.record_final and moment == "live":
            # A box that booted is legitimately running while its host lives.
            reads = [r for r in reads if r.status != "running"]
        self.chaos.judge(*map(expect, reads), checks.read_paths_agree(reads, moment))
        self.judged.add(rec_box)
        return None

    def expectation(self, rec_box: str) -> Callable[[RecordRead], checks.Verdict]:
        """The record check the scenario used; for a history without record verdicts (its
        writer died first), record_failed naming the cause its start failed with, if it
        failed, else record_final."""
        cause = self.s.expected_cause
        if self.s.record_check is None:
            fails = [s for s in self.s.steps if s.action == "await" and s.op == "start"
                     and s.box == rec_box and s.recorded == "fail"]
            cause = checks.classify_reason(error_message(fails[-1].error)) if fails else None
        elif self.s.record_check == "record_final":
            cause = None
        if cause is None:
            return checks.record_final
        return lambda read: checks.record_failed(read, cause)

    def judge_unread(self) -> None:
        """Boxes the recording never looked at (its writer died first): judge them live if
        their host still runs, then through a fresh host on the home."""
        by_home: dict[Path, list[str]] = {}
        for rec_box in self.boxes:
            if rec_box not in self.judged:
                by_home.setdefault(self.hosts[self.box_host[rec_box]].home, []).append(rec_box)
        for home, rec_boxes in by_home.items():
            last = [h for h in self.chaos.factory.hosts if h.home == home][-1]
            if last.alive:
                for rec_box in rec_boxes:
                    self.judge_record(last, rec_box)
                last.close()
            fresh = self.chaos.restart(last)
            for rec_box in rec_boxes:
                self.judge_record(fresh, rec_box)


def _print_verdicts(judgements: list[Judgement], say: Callable[[str], None]) -> None:
    say("verdicts:")
    for j in judgements:
        v = j.verdict
        say(f"  {j.outcome.upper():6} {v.status:9} {v.check}: {v.summary}"
            + (f" [known: {j.known.id}]" if j.known else ""))


def replay(history_path: Path, runtime_spec: str = DEFAULT_SPEC, report: Path | None = None,
           say: Callable[[str], None] = print) -> int:
    """Replay `history_path` against `runtime_spec`; 0 when no verdict fails, 1 otherwise.

    The replay is itself a scenario run: its history, verdicts and report.html go to `report`
    (default reports/repro-<time>), so a replay can be replayed in turn.
    """
    # matplotlib loads only when a replay reports, not for every CLI start.
    from harness.report.build import build_report

    schedule = load_schedule(history_path)
    say(schedule.describe())
    become_subreaper()
    env = ensure_runtime(runtime_spec)
    report = report or REPORTS / datetime.now(UTC).strftime("repro-%Y%m%dT%H%M%SZ")
    node_id = f"repro:{schedule.scenario}"
    chaos = Chaos(node_id, report.resolve() / "scenarios" / "repro", env, busybox_image(),
                  load_table())
    chaos.history.append("meta", event="replay_of", history=str(Path(history_path).resolve()),
                         recorded_runtime=schedule.runtime, complete=schedule.complete)
    say(f"replaying against {env.spec.text} ({env.version}) into {report}")
    t0 = time.monotonic()
    failed = False
    replayer = Replayer(schedule, chaos, say)
    try:
        replayer.run()
        replayer.judge_unread()
        chaos.history.append("meta", event="call_done", wall_s=round(time.monotonic() - t0, 3))
        try:
            chaos.conclude()
        except ScenarioFailed:
            failed = True
    finally:
        chaos.safety_teardown()
    _print_verdicts(chaos.judgements, say)
    if replayer.divergences:
        say(f"{len(replayer.divergences)} divergence(s) from the recording (see above)")
    with open(report / "results.jsonl", "a") as fh:
        fh.write(json.dumps({
            "nodeid": node_id, "outcome": "failed" if failed else "passed",
            "duration_s": round(time.monotonic() - t0, 3), "runtime": env.spec.text,
            "runtime_version": env.version, "workdir": str(chaos.workdir),
            "judgements": [j.to_json() for j in chaos.judgements]}, default=str) + "\n")
    say(f"report: {build_report(report)}")
    return 1 if failed else 0


def cmd_repro(args: argparse.Namespace) -> int:
    if args.dry_run:
        print(load_schedule(Path(args.history)).describe())
        return 0
    return replay(Path(args.history), args.runtime,
                  Path(args.report).resolve() if args.report else None)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `boxlite-chaos repro HISTORY [--runtime SPEC] [--report DIR] [--dry-run]`."""
    p = subparsers.add_parser("repro", help="replay a recorded history against a runtime")
    p.add_argument("history", metavar="HISTORY", help="a scenario's history.jsonl")
    p.add_argument("--runtime", default=DEFAULT_SPEC,
                   help=f"runtime spec to replay against (default {DEFAULT_SPEC})")
    p.add_argument("--report", help="folder for the replay's run (default reports/repro-<time>)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the extracted schedule and replay nothing")
    p.set_defaults(fn=cmd_repro)
    return p
