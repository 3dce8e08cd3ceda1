"""SoakWorld: one soak's runtime world as modelled (its home, host and boxes), the rules'
actions on it, the after-step checks that judge it and the samples its trends are read from.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import psutil

from harness.common.errors import HostError
from harness.common.wait import poll_until
from harness.faults.shim import box_tree, freeze_box, kill_shim, shim_of
from harness.jobs.soak.checks import op_as_modelled, processes_follow_boxes, status_as_modelled
from harness.jobs.soak.model import (
    AFTER_INTERRUPT,
    AFTER_STOP,
    CREATED,
    FAILED,
    FAULT_WINDOW_S,
    INTERRUPTED,
    MAX_BOXES,
    MAX_STARTING,
    MIN_HOST_S,
    MIN_HOST_STEPS,
    OP_TIMEOUT_S,
    READ_TIMEOUT_S,
    REMOVED,
    RUNNING,
    SHUTDOWN_BOUND_S,
    STARTING,
    STOPPED,
    TRANSITION_BOUND_S,
    TRANSITIONAL,
    WAIT_S,
    Box,
    Tally,
)
from harness.jobs.soak.probes import box_processes, disk_kib, host_probe, socket_dir, zombie_count
from harness.jobs.soak.trends import trend_verdicts
from harness.judge import checks
from harness.observe.records import RecordRead, read_store, store_integrity
from harness.runtime.host import RUNNER, RuntimeHost, RuntimeOpError
from harness.scenario.context import WATCHDOG_BOUND_S, Chaos
from harness.scenario.steps import START_BOUND_S


class SoakWorld:
    """One soak's runtime world: its home, its current host, its boxes as modelled, the steps
    taken and the samples drawn. Rules act through `do`; `check` judges after every step."""

    def __init__(self, chaos: Chaos, max_boxes: int = MAX_BOXES,
                 max_starting: int = MAX_STARTING, stop_on: Sequence[str] = ()) -> None:
        self.chaos = chaos
        # The caps on boxes and starts and a host's shortest life pace a generated schedule;
        # a replayed one keeps its recorded steps instead.
        self.paced = True
        self.max_boxes = max_boxes
        self.max_starting = max_starting
        self.tally = Tally(chaos, stop_on)
        self.boxes: dict[str, Box] = {}
        self.dropped: dict[str, str] = {}       # removed, judged gone: id -> situation
        self.draining: list[tuple[RuntimeHost, Future]] = []
        self.host: RuntimeHost | None = None
        self.last_host: RuntimeHost | None = None
        self.gen = 0
        self.ended: dict[int, str] = {}         # host generation -> how it ended
        self.host_steps = 0
        self.schedule: list[dict[str, Any]] = []
        self.samples: list[dict[str, Any]] = []
        self.cycles = 0
        self.faults: Counter = Counter()
        self.starts: Counter = Counter()
        self.divergences: list[str] = []
        self.t0 = time.monotonic()
        self._labels = 0
        self._next_label: str | None = None
        self._proc_boxes: dict[tuple[int, float], str] = {}
        self._host_t = time.monotonic()

    # -- lifecycle -------------------------------------------------------------------------
    def begin(self) -> None:
        self.host = self.chaos.host(RUNNER)
        self.last_host = self.host
        self.gen = 1
        self.check()
        self.sample()

    @property
    def home(self) -> Path:
        assert self.last_host is not None
        return self.last_host.home

    def host_up(self) -> bool:
        return self.host is not None and self.host.alive

    def live_boxes(self) -> list[Box]:
        return [b for b in self.boxes.values() if b.state != REMOVED]

    def in_state(self, *states: str) -> list[Box]:
        return sorted((b for b in self.boxes.values() if b.state in states),
                      key=lambda b: int(b.label[1:]))

    # -- rules -----------------------------------------------------------------------------
    def candidates(self, name: str) -> list[Box | None]:
        """The boxes rule `name` may act on now ([None] for an enabled rule without a box,
        [] for a disabled one)."""
        up, paced = self.host_up(), self.paced
        if name == "create":
            return [None] if up and (len(self.live_boxes()) < self.max_boxes or not paced) \
                else []
        if name == "start":
            if not up or paced and len(self.in_state(STARTING)) >= self.max_starting:
                return []
            return [b for b in self.in_state(CREATED, FAILED, STOPPED, INTERRUPTED)
                    if b.handle_gen != self.gen]
        if name in ("freeze_shim", "crash_shim"):
            return [b for b in self.in_state(STARTING) if up and not b.fault_tried
                    and time.monotonic() - b.start_t < FAULT_WINDOW_S
                    and box_tree(self.home, b.id) is not None]
        if name == "stop":
            return [b for b in self.in_state(CREATED, FAILED, INTERRUPTED, RUNNING)
                    if up and b.handle_gen != self.gen]
        if name == "remove":
            return [b for b in self.in_state(CREATED, FAILED, STOPPED, INTERRUPTED) if up]
        if name == "force_remove":
            return [b for b in self.in_state(STARTING, RUNNING) if up]
        if name in ("terminate_host", "kill_host"):
            return [None] if up and (not paced or self.host_steps >= MIN_HOST_STEPS and
                                     time.monotonic() - self._host_t >= MIN_HOST_S) else []
        if name == "restart_host":
            return [None] if not up else []
        if name == "wait":
            return [None]
        raise ValueError(f"unknown rule {name!r}")

    def do(self, name: str, pick: int | None = None) -> None:
        cands = self.candidates(name)
        if not cands:
            # Enabled when chosen, disabled a moment later (a start resolved, a window closed).
            self.chaos.note(soak_rule_lapsed=name)
            return
        box = cands[pick % len(cands)] if pick is not None else cands[0]
        self.tally.step = len(self.schedule) + 1
        label = box.label if box else None
        if name == "create":
            label = self._next_label or f"b{self._labels + 1}"
            self._next_label = None
        step = {"i": self.tally.step, "t": round(time.monotonic() - self.t0, 3), "rule": name,
                "box": label, "state": box.state if box else None, "host": self.gen}
        self.schedule.append(step)
        self.chaos.history.append("note", soak_step=step["i"], rule=name, box=label,
                                  box_state=step["state"], host_gen=self.gen)
        self.host_steps += 1
        act = getattr(self, "_" + name)
        act(box if box is not None else label)

    def _create(self, label: str) -> None:
        assert self.host is not None
        self._labels = max(self._labels, int(label[1:]))
        result, got, error = self._op("create", options=self.chaos.box_options(), name=label)
        self.tally.judge(op_as_modelled("create", ["ok"], got, "-", error), label)
        if got == "ok":
            box = Box(label, result["id"], gen=self.gen)
            self.boxes[label] = box

    def _start(self, box: Box) -> None:
        assert self.host is not None
        try:
            box.start_fut = self.host.send("start", box_id=box.id)
        except HostError as exc:        # the host died since the rule was chosen: check() says
            self.chaos.note(start_not_sent=box.label, why=str(exc))
            return
        box.start_host, box.start_t = self.host, time.monotonic()
        box.fault, box.fault_tried, box.fault_obj, box.overdue = None, False, None, False
        box.enter(STARTING, self.gen)

    def _freeze_shim(self, box: Box) -> None:
        self._fault_shim(box, "freeze")

    def _crash_shim(self, box: Box) -> None:
        self._fault_shim(box, "kill")

    def _fault_shim(self, box: Box, kind: str) -> None:
        box.fault_tried = True
        tree = box_tree(self.home, box.id)
        shim = shim_of(tree, box.id).same() if tree else None
        try:
            alive = shim is not None and shim.status() not in (psutil.STATUS_ZOMBIE,
                                                                psutil.STATUS_DEAD)
        except psutil.Error:
            alive = False
        if not alive:
            self.faults[f"{kind}_missed"] += 1
            self.chaos.note(fault_missed=kind, box=box.label, why="the shim had already exited")
            return
        assert tree is not None
        try:
            box.fault_obj = self.chaos.inject((freeze_box if kind == "freeze" else kill_shim)(
                self.home, box.id, tree))
        except (ProcessLookupError, psutil.Error) as exc:
            self.faults[f"{kind}_missed"] += 1
            self.chaos.note(fault_missed=kind, box=box.label, why=repr(exc))
            return
        box.fault = kind
        self.faults["freeze_shim" if kind == "freeze" else "kill_shim"] += 1

    def _stop(self, box: Box) -> None:
        before = box.state
        _, got, error = self._op("stop", box_id=box.id)
        self.tally.judge(op_as_modelled("stop", ["ok"], got, before, error), box.label)
        box.handle_gen = self.gen       # the host keeps the handle stop() invalidated
        if got == "ok":
            # Stopped in the runtime whose handle saw the box fail: a situation of its own.
            live = before == FAILED and box.failed_gen == self.gen
            box.enter(STOPPED, self.gen, AFTER_STOP[before],
                      via="stopped_after_live_failure" if live else None)

    def _force_remove(self, box: Box) -> None:
        self._remove(box, force=True)

    def _remove(self, box: Box, force: bool = False) -> None:
        before = box.state
        running = box_tree(self.home, box.id) is not None
        _, got, error = self._op("remove", box_id=box.id, force=force)
        if got == "ok" and force and before == STARTING:
            # The witnesses of the force-remove bugs: which side of the shim's spawn it hit.
            self.chaos.witness("box_running_at_remove" if running
                               else "force_remove_before_spawn", box=box.label)
        self.tally.judge(op_as_modelled("force_remove" if force else "remove", ["ok"], got,
                                        before, error), box.label)
        if got != "ok":
            return
        if before == STARTING:
            self._release_start(box, "removed while starting")
        box.enter(REMOVED, self.gen, (None,), via="force_removed" if force else None)

    def _terminate_host(self, _: str | None) -> None:
        self._host_down("sigterm")

    def _kill_host(self, _: str | None) -> None:
        self._host_down("sigkill")

    def _restart_host(self, _: str | None) -> None:
        assert self.last_host is not None
        self.host = self.chaos.restart(self.last_host)
        self.last_host = self.host
        self.gen += 1
        self.host_steps = 0
        self._host_t = time.monotonic()
        try:
            result, error = store_integrity(self.home), None
        except Exception as exc:  # noqa: BLE001 - an unreadable store is 'unknown'
            result, error = None, repr(exc)
        self.tally.judge(checks.store_integrity(result, error), f"host{self.gen}")
        # A host fault's cycle ends when the next host is up and its records are read.
        self.cycles += self.ended.get(self.gen - 1) in ("shutdown", "sigkill")

    def _wait(self, _: str | None) -> None:
        busy = self.in_state(STARTING)
        poll_until(lambda: any(b.start_fut is not None and b.start_fut.done() for b in busy),
                   WAIT_S if busy else 0.5, "a start in flight to resolve", 0.05)

    # -- operations and their outcomes -----------------------------------------------------
    def _op(self, op: str, **args: Any) -> tuple[Any, str, dict[str, Any] | None]:
        assert self.host is not None
        try:
            return self.host.call(op, timeout_s=OP_TIMEOUT_S, **args), "ok", None
        except RuntimeOpError as exc:
            return None, "error", {"type": exc.type, "message": exc.message}
        except HostError as exc:
            return None, "no reply", {"type": "HostError", "message": str(exc)}

    def _release_start(self, box: Box, why: str) -> None:
        """The start no longer decides the box's state: drain its reply, heal its fault."""
        if box.start_fut is not None and box.start_host is not None:
            self.draining.append((box.start_host, box.start_fut))
        box.start_fut = None
        if box.fault_obj is not None:
            self.chaos.faults.heal(box.fault_obj)
        self.cycles += box.fault is not None
        self.starts[f"{why} ({box.fault or 'no fault'})"] += 1

    def _host_down(self, how: str) -> None:
        host = self.host
        assert host is not None
        for box in self.in_state(STARTING):
            self._release_start(box, f"interrupted by {how}")
            box.enter(INTERRUPTED, self.gen, AFTER_INTERRUPT)
        self.faults[f"{how}_host"] += 1
        bound = SHUTDOWN_BOUND_S if how == "sigterm" else WATCHDOG_BOUND_S
        host.signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
        try:
            elapsed: float | None = host.wait_exit(bound).elapsed_s
        except HostError:
            elapsed = None
            host.kill()
            host.wait_exit(WATCHDOG_BOUND_S)
        self.tally.judge(checks.within_bound(f"host_exit_after_{how}", elapsed, bound),
                         host.name)
        self.ended[self.gen] = "shutdown" if how == "sigterm" else how
        self.host = None

    def poll(self) -> None:
        """Resolve the starts that have answered; drain replies nobody waits for."""
        for host, fut in list(self.draining):
            if fut.done():
                self.draining.remove((host, fut))
                try:
                    host.result(fut, 0)
                except (RuntimeOpError, HostError):
                    pass
        for box in self.in_state(STARTING):
            if box.start_fut is not None and box.start_fut.done():
                self._resolve(box)
            elif not box.overdue and time.monotonic() - box.start_t > START_BOUND_S:
                box.overdue = True
                self.tally.judge(checks.within_bound("start", None, START_BOUND_S), box.label)

    def _resolve(self, box: Box) -> None:
        assert box.start_fut is not None and box.start_host is not None
        error = None
        try:
            box.start_host.result(box.start_fut, 0)
            got = "ok"
        except RuntimeOpError as exc:
            got, error = "error", {"type": exc.type, "message": exc.message}
        except HostError as exc:
            got, error = "no reply", {"type": "HostError", "message": str(exc)}
        box.start_fut = None
        elapsed = time.monotonic() - box.start_t
        # Where guests cannot boot, every start fails; a landed fault always fails it.
        expected = ["error"] if box.fault else ["ok", "error"]
        self.tally.judge(op_as_modelled("start", expected, got, f"starting, fault "
                                        f"{box.fault or 'none'}", error), box.label)
        if not box.overdue:
            self.tally.judge(checks.within_bound("start", elapsed, START_BOUND_S), box.label)
        if box.fault_obj is not None:
            self.chaos.faults.heal(box.fault_obj)
        self.cycles += box.fault is not None
        self.starts[f"{got} ({box.fault or 'no fault'})"] += 1
        if got == "ok":
            box.enter(RUNNING, self.gen, ("running",))
        else:
            message = (error or {}).get("message", "")
            cause = {"freeze": "timeout", "kill": "shim_exit"}.get(box.fault or "") or \
                checks.classify_reason(message) or "boot_failure"
            box.enter(FAILED, self.gen, ("failed",), cause)
            box.failed_gen = self.gen
        self.chaos.note(start_resolved=box.label, outcome=got, fault=box.fault,
                        elapsed_s=round(elapsed, 2), cause=box.cause)

    # -- invariants ------------------------------------------------------------------------
    def check(self) -> None:
        self.poll()
        if self.host is not None and not self.host.alive:
            rc = self.host.proc.returncode if self.host.proc else None
            self.tally.judge(op_as_modelled("host", ["running"], f"exited ({rc})"),
                             self.host.name)
            self._lost_host()
        if self.host_up():
            self._check_records()
        self._check_processes()
        ledger = self.chaos.ledger
        self.tally.judge(checks.no_zombies([r.to_json() for r in ledger.zombie_records()],
                                           len(ledger.samples), sampling_errors=ledger.errors),
                         "processes")

    def _lost_host(self) -> None:
        """The host died without being signalled: its starts are interrupted."""
        for box in self.in_state(STARTING):
            self._release_start(box, "interrupted by a host crash")
            box.enter(INTERRUPTED, self.gen, AFTER_INTERRUPT)
        self.ended[self.gen] = "crash"
        self.host = None

    def moment(self, box: Box) -> str:
        """How the scenarios name a failed box's read: `live` in the host where it failed,
        `after_shutdown` after that host's graceful shutdown, else `after_restart`."""
        if box.failed_gen == self.gen:
            return "live"
        return "after_shutdown" if self.ended.get(box.failed_gen) == "shutdown" \
            else "after_restart"

    def _reads(self, box: Box, prefix: str, store_label: str,
               infos: list[dict[str, Any]] | None, infos_error: str | None) -> list[RecordRead]:
        assert self.host is not None
        try:
            info = self.host.call("get_info", timeout_s=READ_TIMEOUT_S, box_id=box.id)
            got = RecordRead(f"{prefix}.get_info", info is not None, info and info["status"],
                             raw=info)
        except (RuntimeOpError, HostError) as exc:
            got = RecordRead(f"{prefix}.get_info", error=str(exc))
        if infos is None:
            listed = RecordRead(f"{prefix}.list_info", error=infos_error)
        else:
            match = next((i for i in infos if i["id"] == box.id), None)
            listed = RecordRead(f"{prefix}.list_info", match is not None,
                                match and match["status"], raw=match)
        return [got, listed, read_store(self.home, box.id, store_label)]

    def _check_records(self) -> None:
        assert self.host is not None
        try:
            infos, infos_error = self.host.call("list_info", timeout_s=READ_TIMEOUT_S), None
        except (RuntimeOpError, HostError) as exc:
            infos, infos_error = None, str(exc)
        for box in sorted(self.boxes.values(), key=lambda b: int(b.label[1:])):
            if box.state == STARTING:
                continue
            if box.state == FAILED:
                moment = self.moment(box)
                reads = self._reads(box, moment, "store" if moment == "live"
                                    else f"store.{moment}", infos, infos_error)
                for r in reads:
                    v = checks.record_failed(r, box.cause or "boot_failure",
                                             check_id=f"record_failed[{r.path}]")
                    v.evidence["box"] = box.label
                    self.tally.judge(v, box.label)
            else:
                moment = box.situation
                reads = self._reads(box, moment, f"store.{moment}", infos, infos_error)
                transitional = TRANSITIONAL if box.state == INTERRUPTED else ()
                for r in reads:
                    v = status_as_modelled(r, box.expect, box.state, box.age(), transitional,
                                           TRANSITION_BOUND_S)
                    v.evidence["box"] = box.label
                    self.tally.judge(v, box.label)
            agree = checks.read_paths_agree(reads, moment)
            agree.evidence["box"] = box.label
            self.tally.judge(agree, box.label)
            if box.state == REMOVED and box.age() >= WATCHDOG_BOUND_S:
                self._judge_gone(box, reads)

    def _judge_gone(self, box: Box, reads: list[RecordRead]) -> None:
        procs = box_processes(os.getpid(), self._proc_boxes).get(box.id, [])
        v = checks.box_gone(reads, (self.home / "boxes" / box.id).exists(),
                            socket_dir(box.id).exists(), procs)
        v.check = f"box_gone[{box.situation}]"
        v.evidence["box"] = box.label
        self.tally.judge(v, box.label)
        del self.boxes[box.label]
        self.dropped[box.id] = box.situation

    def _check_processes(self) -> None:
        """processes_follow_boxes per situation (starting, failed, force_removed ...); the
        processes of a box judged gone count under the situation it left in, those of a box
        never modelled under `unknown`."""
        procs = box_processes(os.getpid(), self._proc_boxes)
        # A runtime process that names no box may live briefly: before each spawn the runtime
        # probes bwrap (`bwrap --unshare-user --ro-bind / / -- true`). One that lasts past the
        # bound is a stray.
        lasting = [p for p in procs.pop("?", [])
                   if time.time() - p["create_time"] >= WATCHDOG_BOUND_S]
        if lasting:
            procs["?"] = lasting
        held = {b.id: b.situation for b in self.boxes.values()}
        where = {**self.dropped, **held}
        groups: dict[str, list[dict[str, Any]]] = {}
        for b in self.boxes.values():
            groups.setdefault(b.situation, []).append(
                {"label": b.label, "id": b.id, "state": b.state, "age_s": round(b.age(), 2),
                 "may_run": b.may_run})
        for box_id in procs:
            groups.setdefault(where.get(box_id, "unknown"), [])
        for situation, entries in sorted(groups.items()):
            mine = {k: v for k, v in procs.items() if where.get(k, "unknown") == situation}
            self.tally.judge(processes_follow_boxes(
                entries, mine, WATCHDOG_BOUND_S,
                check_id=f"processes_follow_boxes[{situation}]"), "processes")

    # -- samples ---------------------------------------------------------------------------
    def sample(self) -> dict[str, Any]:
        """One sample of the world: the host's probes, the home's disk use, zombies,
        leftovers; appended to `samples` and returned."""
        s: dict[str, Any] = {"t": round(time.monotonic() - self.t0, 2),
                             "step": len(self.schedule), "cycles": self.cycles}
        if self.host_up():
            assert self.host is not None
            try:
                s.update(host_gen=self.gen, **host_probe(self.host.pid))
            except psutil.Error:
                pass
        home_kib = disk_kib(self.home, skip=("logs",))
        held = sum(disk_kib(self.home / "boxes" / b.id) for b in self.live_boxes())
        s.update(home_mib=round(home_kib / 1024, 2), home_unheld_mib=round(
                     (home_kib - held) / 1024, 2),
                 log_kib=disk_kib(self.home / "logs"), zombies=zombie_count(os.getpid()),
                 leftover_dirs=len(self.leftover_dirs()),
                 box_procs=sum(len(v) for v in box_processes(
                     os.getpid(), self._proc_boxes).values()),
                 boxes=len(self.live_boxes()), starting=len(self.in_state(STARTING)))
        self.samples.append(s)
        return s

    def leftover_dirs(self) -> list[str]:
        """Box folders no modelled record owns, and socket folders of boxes judged gone."""
        held = {b.id for b in self.boxes.values() if b.state != REMOVED}
        boxes_dir = self.home / "boxes"
        dirs = [d.name for d in boxes_dir.iterdir() if d.is_dir() and d.name not in held] \
            if boxes_dir.is_dir() else []
        return dirs + [f"socket:{i}" for i in sorted(self.dropped) if socket_dir(i).exists()]

    def finish(self, trends: bool = True) -> None:
        """Let the starts in flight resolve so their records are judged, then judge trends."""
        def resolved() -> bool:
            self.poll()
            return not self.in_state(STARTING)
        poll_until(resolved, START_BOUND_S, "the soak's last starts to resolve", 0.2)
        self.check()
        self.sample()
        for v in trend_verdicts(self.samples) if trends else ():
            self.tally.judge(v, "run")
        self.tally.settle()
