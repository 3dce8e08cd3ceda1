"""Scenario steps a person would narrate: start a box with a fault at the shim's spawn, read
the record through every path, restart the host. Scenarios compose these; checks judge them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.common.errors import ArrangementError
from harness.common.wait import hold, wait_for
from harness.faults.shim import Proc, box_tree, freeze_box, kill_shim
from harness.judge import checks
from harness.observe.boxes import home_marks, shutdown_signs
from harness.observe.logs import SHUTDOWN_LOGGED, runtime_log, vm_started_at
from harness.observe.records import RecordRead, read_host, read_store
from harness.runtime.host import RuntimeHost, RuntimeOpError
from harness.scenario.context import Chaos

# The runtime's guest-connect timeout (GUEST_READY_TIMEOUT, no override in released wheels)
# plus the time a VM takes to fail here; a start that takes longer than this is stuck.
START_BOUND_S = 90.0


# The runtime's guest-connect wait (GUEST_READY_TIMEOUT in released wheels).
GUEST_READY_TIMEOUT_S = 30.0


@dataclass
class StartOutcome:
    box_id: str
    error: dict[str, Any] | None        # the runtime's error, or None if start succeeded
    elapsed_s: float
    host_alive: bool
    t_start: float = 0.0                # monotonic
    shim_pids: tuple[int, ...] = ()


def create_box(chaos: Chaos, host: RuntimeHost, name: str | None = None, **options: Any) -> str:
    return host.call("create", timeout_s=120, options=chaos.box_options(**options),
                     name=name)["id"]


def start_with_fault(chaos: Chaos, host: RuntimeHost, box_id: str, fault: str | None = None,
                     delay_s: float = 0.0, if_spawned: bool = False) -> StartOutcome:
    """Start the box; as soon as its shim is spawned (plus `delay_s`), inject `fault`.

    fault: None, "freeze" (SIGSTOP the box's process tree: the guest hangs) or "kill"
    (SIGKILL the shim). With `if_spawned`, a start that fails before any shim exists is
    accepted (no fault injected) instead of being a harness timeout.
    """
    t0 = time.monotonic()
    fut = host.send("start", box_id=box_id)
    tree = None
    if fault and if_spawned:
        wait_for(lambda: box_tree(host.home, box_id) or fut.done(), 60,
                 f"the shim of box {box_id} to be spawned, or its start to end")
        tree = box_tree(host.home, box_id)
        fault = fault if tree else None
    if fault and tree is None:
        # The shim, or the start's end: a start that fails before a shim is seen (its bwrap
        # died at exec, say) cannot take the fault, and waiting 60 s for it would hide why.
        wait_for(lambda: box_tree(host.home, box_id) or fut.done(), 60,
                 f"the shim of box {box_id} to be spawned, or its start to end")
        tree = box_tree(host.home, box_id)
        if not tree:
            try:
                host.result(fut, 0)
                ended = "succeeded"
            except RuntimeOpError as exc:
                ended = f"failed: {exc.message}"
            raise ArrangementError(f"box {box_id}: its start {ended} before its shim was "
                                   f"seen, so the {fault!r} fault could not be injected")
    if fault:
        if delay_s:
            hold(delay_s, f"the {fault} fault lands {delay_s:.2f}s after the shim spawned")
            tree = box_tree(host.home, box_id) or tree
        chaos.inject((freeze_box if fault == "freeze" else kill_shim)(host.home, box_id, tree))
    try:
        host.result(fut, START_BOUND_S)
        error = None
    except RuntimeOpError as exc:
        error = {"type": exc.type, "message": exc.message}
    return StartOutcome(box_id, error, time.monotonic() - t0, host.alive, t0,
                        tuple(p.pid for p in tree or ()))


def end_judged_vm(chaos: Chaos, home: Path, box_id: str, tree: list[Proc] | None,
                  judged: str) -> bool:
    """Kill the box's shim (the pid and start time recorded in `tree`) once the scenario has
    judged what it needed of the box (`judged` says what): left alone, a VM here spins a core
    until it fails on its own (~17 s on nested PVM), which no verdict waits for. Scenarios
    whose subject is the VM failing on its own never call this. Recorded as a kill_shim
    fault, so a replay does the same. Returns whether the shim was still there to kill."""
    if not tree:
        return False
    try:
        chaos.inject(kill_shim(home, box_id, tree))
    except ProcessLookupError:
        return False
    chaos.note(ended_judged_vm=box_id, judged=judged)
    return True


def observed_failure(chaos: Chaos, start: StartOutcome, home: Path | None = None) -> str:
    """What the harness saw end the start, independently of the runtime's words: the box's
    shim ended before the guest-connect wait ran out (the VM failed on its own: a boot
    failure), or the wait ran out first (a timeout). Under heavy load a guest that would
    fail on its own can be slower than the wait; this decides which cause is the truth.

    The wait's start is read from the runtime's own log (`home`): load delays the runtime's
    init stages, which moves its 30 s timer later than the harness's start() call. Without
    that log line the harness's call time stands in (and the note says so). The 0.5 s margin
    is the ledger's sampling (0.1 s) plus the runtime's liveness poll."""
    chaos.ledger.sample()
    folder = f"/boxes/{start.box_id}/"
    ends = [chaos.ledger.t0 + r.gone_at for r in chaos.ledger.kinds("shim")
            if r.gone_at is not None and folder in r.cmd]
    ends += [chaos.ledger.t0 + r.gone_at for r in chaos.ledger.kinds("vm", "shim")
             if r.gone_at is not None and r.pid in start.shim_pids]
    wait_from, clock = start.t_start, "harness: start() sent"
    started = vm_started_at(runtime_log(home), start.box_id) if home else None
    if started is not None:
        # The log's wall-clock timestamp, on the harness's monotonic clock.
        wait_from, clock = started - (time.time() - time.monotonic()), "runtime log"
    died_after = round(min(ends) - wait_from, 3) if ends else None
    chaos.note(observed_failure_clock=clock, shim_died_after_wait_began_s=died_after)
    if died_after is not None and died_after < GUEST_READY_TIMEOUT_S - 0.5:
        return "boot_failure"
    return "timeout"


def read_live(host: RuntimeHost, box_id: str) -> list[RecordRead]:
    """Through the live host (get_info, list_info) and the store beside it."""
    return [*read_host(host, box_id, "live"), read_store(host.home, box_id)]


def read_fresh(chaos: Chaos, old: RuntimeHost, box_id: str,
               prefix: str = "fresh") -> tuple[list[RecordRead], RuntimeHost]:
    """Start a fresh host on the same home (the old one must be gone) and read through it."""
    fresh = chaos.restart(old)
    return [*read_host(fresh, box_id, prefix), read_store(fresh.home, box_id,
                                                          f"store.{prefix}")], fresh


ENDINGS = ("exit", "shutdown")


def judge_failed_record(chaos: Chaos, host: RuntimeHost, box_id: str, cause: str,
                        ending: str = "exit") -> RuntimeHost:
    """The record check after an init failure, on every read path and at every moment:
    live (get_info, list_info, store), then after the live host ends — on its own (`exit`)
    or through a graceful runtime shutdown (`shutdown`) — through a fresh host on the home.
    Returns the fresh host."""
    live = read_live(host, box_id)
    chaos.judge(*(checks.record_failed(r, cause) for r in live),
                checks.read_paths_agree(live, "live"))
    if ending == "shutdown":
        log_before, marks = len(runtime_log(host.home)), home_marks(host.home, {"box": box_id})
        host.call("shutdown", timeout_s=60)
        # shutdown() answering is not enough to say it ran (a no-op would answer too): its
        # log line, or what it changed in the home, is the witness.
        logged = SHUTDOWN_LOGGED in runtime_log(host.home)[log_before:]
        signs = shutdown_signs(marks, home_marks(host.home, {"box": box_id}))
        if logged or signs:
            chaos.witness("shutdown_ran", via="shutdown() answered", logged=logged, signs=signs)
    host.close()
    after, fresh = read_fresh(chaos, host, box_id, prefix=f"after_{ending}")
    chaos.judge(*(checks.record_failed(r, cause) for r in after),
                checks.read_paths_agree(after, f"after_{ending}"))
    return fresh
