"""Faults on a running guest. These need a host where a micro-VM boots; elsewhere they skip
with the reason `boxlite-chaos doctor` found.

1. SIGTERM to the runtime host (runner flavour) during guest writes: every acknowledged
   record is on the disk after a restart and a new boot of the same box.
2. Guest hang while running: an exec with a timeout gives up, stop completes within its
   bound, the record ends final.
3. Shim crash while running: the record ends failed or stopped, and the box starts again.
4. Graceful shutdown with running boxes: the host exits within 60 s, nothing left behind.
"""

import time

import pytest

from harness.common.wait import wait_for
from harness.faults.shim import box_tree, freeze_box, kill_shim, wait_for_shim
from harness.judge import checks
from harness.observe.records import store_rows
from harness.runtime.host import RUNNER, RuntimeOpError
from harness.scenario.shutdown import SHUTDOWN_BOUND_S
from harness.scenario.steps import create_box, read_live

pytestmark = pytest.mark.tier("booted")

KEEPALIVE = ["sleep", "100000"]
WRITER = ("i=0; while [ $i -lt 100000 ]; do i=$((i+1)); echo \"rec $i\" >> /data/log; "
          "sync; echo \"ack $i\"; done")
STOP_BOUND_S = 30.0


def running_box(chaos, host, name):
    box = create_box(chaos, host, name=name, cmd=KEEPALIVE)
    host.call("start", timeout_s=120, box_id=box)
    return box


def acks(host, stream):
    text = "".join(e["chunk"] for e in list(host.events)
                   if e.get("event") == "exec_out" and e.get("stream") == stream)
    return [int(line.split()[1]) for line in text.splitlines()
            if line.startswith("ack ") and line.split()[1].isdigit()]


def test_sigterm_during_guest_writes_keeps_every_acknowledged_record(chaos):
    host = chaos.host(RUNNER)
    box = running_box(chaos, host, "writer")
    host.send("exec", box_id=box, cmd="sh", args=["-c", WRITER], stream_as="writer")
    wait_for(lambda: len(acks(host, "writer")) >= 50, 60, "the guest to acknowledge 50 records")
    host.terminate()
    exit_info = host.wait_exit(SHUTDOWN_BOUND_S + 10)
    acked = acks(host, "writer")
    chaos.note(acked=len(acked), host_exit=exit_info.returncode)
    chaos.judge(checks.within_bound("host exit after SIGTERM", exit_info.elapsed_s,
                                    SHUTDOWN_BOUND_S))

    fresh = chaos.restart(host)
    rows = store_rows(fresh.home)
    chaos.judge(checks.records_settled(rows))
    fresh.call("start", timeout_s=120, box_id=box)
    out = fresh.call("exec", timeout_s=60, box_id=box, cmd="cat", args=["/data/log"])
    chaos.judge(checks.acked_records_durable(acked, out["stdout"].splitlines()))


def test_guest_hang_while_running(chaos):
    host = chaos.host()
    box = running_box(chaos, host, "hung")
    chaos.inject(freeze_box(host.home, box, box_tree(host.home, box) or []))
    _, err = host.try_call("exec", timeout_s=60, box_id=box, cmd="echo", args=["x"],
                           exec_timeout_s=5)
    chaos.judge(checks.op_failed_cleanly("exec", err and {"type": err.type,
                                                          "message": err.message}, host.alive))
    t0 = time.monotonic()
    try:
        host.call("stop", timeout_s=STOP_BOUND_S * 2, box_id=box)
        stopped = time.monotonic() - t0
    except RuntimeOpError:
        stopped = time.monotonic() - t0
    chaos.judge(checks.within_bound("stop of a hung box", stopped, STOP_BOUND_S))
    live = read_live(host, box)
    chaos.judge(*(checks.record_final(r) for r in live), checks.read_paths_agree(live, "live"))


def test_shim_crash_while_running(chaos):
    host = chaos.host()
    box = running_box(chaos, host, "crashed")
    chaos.inject(kill_shim(host.home, box, wait_for_shim(host.home, box)))
    wait_for(lambda: not host.call("get_info", box_id=box)["running"], 30,
             f"box {box} to be seen as not running after its shim died")
    live = read_live(host, box)
    chaos.judge(*(checks.record_final(r) for r in live), checks.read_paths_agree(live, "live"))
    _, err = host.try_call("start", timeout_s=120, box_id=box)
    chaos.judge(checks.within_bound("restart after a shim crash", None if err else 0.0, 120))


def test_graceful_shutdown_with_running_boxes(chaos):
    host = chaos.host(RUNNER)
    boxes = [running_box(chaos, host, f"run{i}") for i in range(3)]
    host.terminate()
    exit_info = host.wait_exit(SHUTDOWN_BOUND_S + 10)
    chaos.judge(checks.within_bound("host exit after SIGTERM", exit_info.elapsed_s,
                                    SHUTDOWN_BOUND_S))
    fresh = chaos.restart(host)
    for box in boxes:
        chaos.judge(*(checks.record_final(r) for r in read_live(fresh, box)))
