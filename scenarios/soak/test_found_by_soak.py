"""Runtime bugs the soak found on 0.10.8, each pinned as a short scenario under the soak's own
check ids, so one known-failures entry covers the scenario and the soak alike:

- stop() in the runtime where a box's init failed writes 'configured' over the failed record
  and drops its error_reason (the same stop() through a fresh runtime writes 'stopped');
- remove(force=True) while the box's start is in flight returns at once and removes the record
  and folder, but leaves the box's VM running, owned by no record, until it dies on its own;
- remove(force=True) before that start has spawned the shim: the start carries on and writes
  the box's folder (disks, a copy of the shim) and its socket folder again, after the record
  is gone; nothing owns them until the next runtime starts on the home.
"""

import os
import time

import pytest

from harness.common.wait import poll_until, wait_for
from harness.faults.shim import wait_for_vcpus
from harness.jobs.soak.checks import processes_follow_boxes, status_as_modelled
from harness.jobs.soak.model import AFTER_STOP, FAILED
from harness.jobs.soak.probes import box_processes, socket_dir
from harness.judge import checks
from harness.observe.records import read_host, read_store
from harness.runtime.host import RUNNER, RuntimeOpError
from harness.scenario.steps import START_BOUND_S, create_box, end_judged_vm, start_with_fault

pytestmark = pytest.mark.tier("init")

WATCHDOG_BOUND_S = 10.0
ATTEMPTS = 3


def _reads(host, box, prefix):
    return [*read_host(host, box, prefix), read_store(host.home, box, f"store.{prefix}")]


@pytest.mark.parametrize("where", ["live", "fresh"])
def test_stop_after_init_failure_keeps_the_failed_record(chaos, where):
    """A failed box may be stopped (failed -> stopped) or stay failed; never 'configured'.
    `live`: stopped through the runtime whose start failed; `fresh`: through the next one."""
    host = chaos.host(RUNNER)
    box = create_box(chaos, host, name=f"stop-{where}")
    start = start_with_fault(chaos, host, box, fault="kill")
    chaos.judge(checks.op_failed_cleanly("start", start.error, start.host_alive))
    if where == "fresh":
        host.close()
        host = chaos.restart(host)
    host.call("stop", timeout_s=60, box_id=box)
    # The soak's names: a stop in the runtime that saw the failure is a situation of its own.
    prefix = "stopped_after_live_failure" if where == "live" else "stopped"
    for moment, reading_host in (("live", host), ("after_exit", None)):
        if reading_host is None:
            host.close()
            reading_host = chaos.restart(host)
        reads = _reads(reading_host, box, prefix)
        chaos.note(moment=moment, reads=[r.to_json() for r in reads])
        chaos.judge(*(status_as_modelled(r, AFTER_STOP[FAILED], "stopped",
                                         check_id=f"status_as_modelled[{r.path}]"
                                         if moment == "live" else
                                         f"status_as_modelled[{r.path}.{moment}]")
                      for r in reads))


def test_force_remove_while_starting_ends_the_vm(chaos):
    """After remove(force=True) returns, the box's processes are gone within the watchdog
    bound, as for any box that no longer runs. Once judged, the harness kills the shim it
    recorded, so the start answers without the VM spinning until it fails on its own."""
    host = chaos.host(RUNNER)
    box = create_box(chaos, host, name="force-removed")
    fut = host.send("start", box_id=box)
    # Past this point the box's processes are the VM itself (removed earlier, a shim still
    # loading from the deleted box folder usually dies of it: a race, not this bug).
    tree = wait_for_vcpus(host.home, box, timeout_s=60)
    chaos.witness("box_running_at_remove", box=box, stage="vcpus_running")
    host.call("remove", timeout_s=60, box_id=box, force=True)
    removed = time.monotonic()
    poll_until(lambda: not box_processes(os.getpid()).get(box), WATCHDOG_BOUND_S,
               f"the processes of force-removed box {box} to end")
    procs = box_processes(os.getpid()).get(box, [])
    chaos.judge(processes_follow_boxes(
        [{"label": "force-removed", "id": box, "state": "removed",
          "age_s": round(time.monotonic() - removed, 2), "may_run": False}],
        {box: procs} if procs else {}, WATCHDOG_BOUND_S,
        check_id="processes_follow_boxes[force_removed]"))
    lived_s = round(time.monotonic() - removed, 2) if procs else None
    end_judged_vm(chaos, host.home, box, tree, "processes_follow_boxes[force_removed]")
    try:
        host.result(fut, START_BOUND_S)
        outcome = "ok"
    except RuntimeOpError as exc:
        outcome = exc.message
    chaos.note(start_outcome=outcome, vm_alive_after_remove_s=lived_s)


def test_force_remove_before_the_shim_spawns_leaves_nothing(chaos):
    """remove(force=True) sent inside the window between the start's filesystem stage and its
    shim's spawn: once the start has answered, nothing of the box is left.

    The window is anchored on the runtime's own event, the box folder appearing (the init
    pipeline's filesystem stage; the shim spawns 35-330 ms later here, measured on 0.10.8
    2026-12-06), and the remove is sent at once. An attempt hit the window when the folder was
    there and its `shim.pid` not yet when the remove was sent: the witness
    `force_remove_before_spawn` the known failure needs before its check holding can be
    called fixed. Up to ATTEMPTS tries; the first that leaves something is the verdict."""
    host = chaos.host(RUNNER)
    verdict = None
    for attempt in range(ATTEMPTS):
        box = create_box(chaos, host, name=f"early-{attempt}")
        folder = host.home / "boxes" / box
        fut = host.send("start", box_id=box)
        wait_for(lambda f=folder, s=fut: f.exists() or s.done(), 30,
                 f"box {box}'s folder (the start's filesystem stage) or the start's end",
                 interval_s=0.002)
        began, spawned = folder.exists(), (folder / "shim.pid").exists()
        host.call("remove", timeout_s=60, box_id=box, force=True)
        chaos.note(attempt=attempt, folder_before_remove=began, shim_pid_before_remove=spawned)
        if began and not spawned:
            chaos.witness("force_remove_before_spawn", box=box, attempt=attempt)
        try:
            host.result(fut, START_BOUND_S)
        except RuntimeOpError:
            pass
        poll_until(lambda box=box: not box_processes(os.getpid()).get(box), WATCHDOG_BOUND_S,
                   f"the processes of box {box} to end")
        verdict = checks.box_gone(_reads(host, box, "force_removed"),
                                  folder.exists(), socket_dir(box).exists(),
                                  box_processes(os.getpid()).get(box, []))
        verdict.check = "box_gone[force_removed]"
        if verdict.status != checks.HOLDS:
            break
    chaos.judge(verdict)
