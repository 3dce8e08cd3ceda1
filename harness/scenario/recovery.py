"""Steps for detached boxes and recovery: a box that outlives the host that made it, and what a
fresh runtime on the same home makes of it (upstream #118, #434, #565, #613, #1239).

A detached box's bwrap runs without --die-with-parent (upstream PR 851, in 0.9.7), so when its
host dies the box's processes are adopted by the harness (a child subreaper) and run on until
the VM fails by itself (17-45 s on a nested-PVM machine), long enough to recover them alive.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from harness.common.errors import ArrangementError
from harness.common.wait import poll_until, wait_for
from harness.faults.shim import box_tree, kill_shim, wait_for_vcpus
from harness.judge import checks, recovery_checks
from harness.observe.boxes import box_processes, socket_dir
from harness.observe.records import RecordRead, read_host, read_store
from harness.runtime.host import RUNNER, RuntimeHost, RuntimeOpError
from harness.scenario.context import Chaos
from harness.scenario.steps import create_box

# Where in the init pipeline the host dies: after create() wrote the record (no start), as
# soon as the shim is spawned, or during the guest-connect wait (once the VM runs its vCPUs).
PHASES = ("record_written", "shim_spawned", "connect_wait")
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM}
# After stop()/remove(force) returned, how long the kernel may take to tear down what the
# runtime killed: milliseconds measured (the outer bwrap's pid namespace dies with it). A
# process the runtime did not kill runs until the VM fails on its own, 17 s after its spawn
# at the earliest here: every judgement of a live box happens well before that (the
# scenarios finish with a live box within about 6 s of its spawn on an idle machine, and
# load slows the emulated guest, hence its death, along with the harness).
KILLED_GONE_BOUND_S = 2.0
# After its shim is killed, how long a box's bwraps take to follow: milliseconds measured.
DIES_AFTER_CRASH_BOUND_S = 10.0
# The runner flavour: SIGTERM runs a graceful runtime.shutdown() like upstream's runner;
# SIGKILL gives it no chance.
FLAVOUR = RUNNER


@dataclass
class Orphan:
    """A detached box whose host died at `phase`."""

    box_id: str
    home: Path
    dead_host: RuntimeHost
    started: bool
    # Every (pid, start time) ever found tied to the box: still its own after its folder goes.
    seen: dict[tuple[int, float], str] = field(default_factory=dict)

    def processes(self) -> list[dict[str, Any]]:
        """The box's live processes now (harness.observe.boxes.box_processes), remembered."""
        found = box_processes(self.home, self.box_id, known=self.seen)
        for p in found:
            self.seen[(p["pid"], p["create_time"])] = p["name"]
        return found


def orphan_detached_box(chaos: Chaos, phase: str, sig: str) -> Orphan:
    """Create a detached box (and start it, unless `phase` is record_written), then kill its
    host with `sig` at `phase`. Raises ArrangementError when the start ends before its shim
    is seen (nothing would be left to recover)."""
    host = chaos.host(FLAVOUR)
    box = create_box(chaos, host, name="detached", detach=True)
    started = phase != "record_written"
    if started:
        fut = host.send("start", box_id=box)
        wait_for(lambda: box_tree(host.home, box) or fut.done(), 60,
                 f"the shim of detached box {box} to spawn, or its start to end")
        if box_tree(host.home, box) is None:
            raise ArrangementError(f"box {box}: its start ended before its shim was seen")
        if phase == "connect_wait":
            wait_for_vcpus(host.home, box, 30.0)
    orphan = Orphan(box, host.home, host, started)
    chaos.note(detached_box=box, phase=phase, signal=sig, processes=orphan.processes())
    host.signal(SIGNALS[sig])
    host.wait_exit(60.0)
    # The witnesses of the recovery bugs: the host died with the start in flight, and the
    # box's VM outlived it (what a fresh runtime then has to recover).
    if started:
        chaos.witness("host_died_mid_start", box=box, phase=phase, signal=sig)
    left = orphan.processes()
    if left:
        chaos.witness("detached_vm_outlived_host", box=box,
                      processes=[f"{p['name']}[{p['pid']}]" for p in left])
    return orphan


def crash_and_wait_until_gone(chaos: Chaos, orphan: Orphan) -> float:
    """The orphaned box dies with nobody watching: its shim ('libkrun VM') is SIGKILLed, as a
    VM crash or the OOM killer would end it, and the bwraps above it follow. Returns the
    seconds until nothing of the box ran. Waiting for the VM to fail on its own is not used:
    it took 18-45 s on 0.10.8 and over 120 s on 0.9.7 here, a moment load decides.
    Raises ArrangementError when the box's processes are already gone or do not end."""
    tree = box_tree(orphan.home, orphan.box_id)
    if not tree:
        raise ArrangementError(f"detached box {orphan.box_id} has no shim left to crash")
    chaos.inject(kill_shim(orphan.home, orphan.box_id, tree))
    t0 = time.monotonic()
    if not poll_until(lambda: not orphan.processes(), DIES_AFTER_CRASH_BOUND_S,
                      f"detached box {orphan.box_id}'s processes to end after its crash", 0.05):
        raise ArrangementError(f"detached box {orphan.box_id} still ran "
                               f"{DIES_AFTER_CRASH_BOUND_S:.0f}s after its shim was killed")
    waited = time.monotonic() - t0
    chaos.note(detached_box_gone_after_s=round(waited, 2))
    return waited


def read_against_reality(chaos: Chaos, host: RuntimeHost, orphan: Orphan, moment: str,
                         guest_ready: bool = False) -> list[RecordRead]:
    """Read the box through the host (get_info, list_info) and the store, and judge each read
    against the box's processes measured around it. If the box's processes came or went
    during the reads, read again (up to 3 times); still moving, the check is unknown."""
    for _ in range(3):
        before = orphan.processes()
        reads = [*read_host(host, orphan.box_id, moment),
                 read_store(orphan.home, orphan.box_id, f"{moment}.store")]
        after = orphan.processes()
        if bool(before) == bool(after):
            break
    else:
        for r in reads:
            r.error = r.error or "the box's processes came or went during every read"
    chaos.judge(*(recovery_checks.status_matches_reality(r, after, orphan.started, guest_ready)
                  for r in reads), checks.read_paths_agree(reads, moment))
    return reads


def op_then_processes(chaos: Chaos, host: RuntimeHost, orphan: Orphan, op: str,
                      then: Any = None, **args: Any) -> dict[str, Any] | None:
    """Send `op` for the box; if it returned success, judge that nothing of the box runs
    within KILLED_GONE_BOUND_S, call `then()` (more judging while what the runtime left
    still runs; also called after a refusal), and end what it left. Returns the runtime's
    error, or None."""
    try:
        host.call(op, timeout_s=60, box_id=orphan.box_id, **args)
    except RuntimeOpError as exc:
        chaos.note(op=op, args=args, refused=exc.message)
        if then is not None:
            then()
        return {"type": exc.type, "message": exc.message}
    label = op + ("_force" if args.get("force") else "")
    t0 = time.monotonic()
    left: list[dict[str, Any]] = []

    def none_left() -> bool:
        left[:] = orphan.processes()
        return not left
    poll_until(none_left, KILLED_GONE_BOUND_S, f"the box's processes to end after {op}", 0.1)
    chaos.judge(recovery_checks.box_processes_gone(left, label, time.monotonic() - t0,
                                          KILLED_GONE_BOUND_S))
    if then is not None:
        then()
    if left:
        end_judged_leftovers(chaos, orphan, left, label)
    return None


def end_judged_leftovers(chaos: Chaos, orphan: Orphan, left: list[dict[str, Any]],
                         after: str) -> None:
    """Kill what the runtime left running after `after`, now that it has been judged (by pid
    and start time), so the leak is judged once, where it happened: left alone, the VM would
    end on its own at a moment load decides, and every later verdict would race it."""
    for p in left:
        try:
            proc = psutil.Process(p["pid"])
            if proc.create_time() == p["create_time"]:
                proc.kill()
        except psutil.Error:
            continue
    gone = poll_until(lambda: not orphan.processes(), 10.0,
                      "the box's judged leftovers to end", 0.05)
    chaos.note(ended_judged_leftovers=[f"{p['name']}[{p['pid']}]" for p in left],
               after=after, gone=gone)


def judge_removed(chaos: Chaos, host: RuntimeHost, orphan: Orphan, moment: str) -> None:
    """After a remove: no record on any path, no box folder, no socket folder, no process."""
    reads = [*read_host(host, orphan.box_id, moment),
             read_store(orphan.home, orphan.box_id, f"{moment}.store")]
    chaos.judge(checks.box_gone(reads, (orphan.home / "boxes" / orphan.box_id).exists(),
                                socket_dir(orphan.box_id).exists(), orphan.processes()))


def judge_one_shim_per_box(chaos: Chaos, *orphans: Orphan) -> None:
    """From the ledger: never two shims of one box at once. A shim whose command line names
    no box (0.9.x runs the shared binary) is attributed by the ties the orphans saw."""
    chaos.ledger.sample()
    ties = {key: o.box_id for o in orphans for key in o.seen}
    shims = []
    for r in chaos.ledger.kinds("shim", "vm"):
        rec = r.to_json()
        rec["box"] = rec.get("box") or ties.get(r.key)
        shims.append(rec)
    chaos.judge(recovery_checks.one_shim_per_box(shims, chaos.ledger.samples[-1].t))
