"""The guest hangs during boot: the box's processes are frozen as soon as the shim is spawned.

Never thawed, the runtime must give up at its 30 s guest-connect timeout and keep the record
as `failed` with a reason naming the timeout, on every read path, after the host exits on its
own and after a graceful shutdown. Thawed before the timeout, the box must either run or fail
cleanly: never a record stuck in a transitional status.
"""


import pytest

from harness.common.wait import hold
from harness.faults.shim import freeze_box, wait_for_shim
from harness.judge import checks
from harness.observe.logs import runtime_log, timeout_evidence
from harness.scenario.shutdown import light_box_options
from harness.scenario.steps import (
    ENDINGS,
    create_box,
    judge_failed_record,
    read_fresh,
    read_live,
    start_with_fault,
)

pytestmark = pytest.mark.tier("init")


@pytest.mark.parametrize("ending", ENDINGS)
def test_guest_hang_at_boot_fails_the_box_with_a_timeout(chaos, ending):
    host = chaos.host()
    box = create_box(chaos, host, name="hang")

    start = start_with_fault(chaos, host, box, fault="freeze")
    chaos.judge(checks.op_failed_cleanly("start", start.error, start.host_alive))
    chaos.note(start_elapsed_s=round(start.elapsed_s, 2))

    log = runtime_log(host.home)
    chaos.judge(checks.timeout_evidence(timeout_evidence(log, box), len(log)))
    judge_failed_record(chaos, host, box, "timeout", ending)


def test_guest_hang_thawed_before_timeout_never_sticks(chaos):
    host = chaos.host()
    # Here the thawed VM goes on until it fails on its own: a light one does that sooner.
    box = create_box(chaos, host, name="hang-thaw", **light_box_options())

    fut = host.send("start", box_id=box)
    freeze = chaos.inject(freeze_box(host.home, box, wait_for_shim(host.home, box)))
    hold(10.0, "the guest stays frozen 10 s, well inside the 30 s guest-connect wait")
    chaos.faults.heal(freeze)
    try:
        host.result(fut, 90)
        chaos.note(start="succeeded")
    except Exception as exc:  # noqa: BLE001 - either outcome is allowed; the record decides
        chaos.note(start=f"failed: {exc}")

    live = read_live(host, box)
    chaos.judge(*(checks.record_final(r) for r in live if not _running(r)),
                checks.read_paths_agree(live, "live"))
    host.close()
    after, _ = read_fresh(chaos, host, box, prefix="after_exit")
    chaos.judge(*(checks.record_final(r) for r in after),
                checks.read_paths_agree(after, "after_exit"))


def _running(read) -> bool:
    # A box that booted after the thaw is legitimately running while its host lives.
    return read.status == "running"
