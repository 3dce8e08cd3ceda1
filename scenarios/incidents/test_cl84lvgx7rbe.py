"""Incident CL84LvGx7RBE (upstream, a dev runner): the guest-connect timeout fired, the box's
record vanished, and its disks stayed on the host, orphaned. It motivated the Failed-state fix:
a box whose init fails is kept as a `failed` record, with its reason, instead of being dropped.

Pinned reproduction: the box's processes are frozen as soon as its shim is spawned, so the guest
never connects and the 30 s guest-connect timeout fires. Then the record must exist as `failed`,
naming the timeout, through the live host, the store and a fresh host on the home; and the box's
disks must be on the host exactly while its record exists.
"""

import pytest

from harness.judge import checks
from harness.observe.boxes import box_disks
from harness.observe.records import read_store
from harness.runtime.host import RUNNER
from harness.scenario.steps import create_box, judge_failed_record, start_with_fault

pytestmark = pytest.mark.tier("init")

INCIDENT = "CL84LvGx7RBE"


def test_guest_connect_timeout_keeps_a_failed_record_with_its_disks(chaos):
    # 1. A box on a host embedded like the runner's (graceful SIGTERM handler).
    host = chaos.host(RUNNER)
    box = create_box(chaos, host, name=f"incident-{INCIDENT}")
    chaos.note(incident=INCIDENT, box=box)

    # 2. The guest hangs at boot: frozen from the shim's spawn, it never connects, and start
    #    gives up at the guest-connect timeout.
    start = start_with_fault(chaos, host, box, fault="freeze")
    chaos.judge(checks.op_failed_cleanly("start", start.error, start.host_alive))
    chaos.note(start_elapsed_s=round(start.elapsed_s, 2), error=start.error)

    # 3. Where the incident lost the record and kept the disks: both must still be there.
    chaos.judge(checks.disks_follow_record(read_store(host.home, box),
                                           box_disks(host.home, box)))

    # 4. The record is `failed` and names the timeout: live (get_info, list_info, store),
    #    then through a fresh host once the runner's host has gone.
    fresh = judge_failed_record(chaos, host, box, "timeout")

    # 5. After the restart, the disks are still exactly where the record is.
    chaos.judge(checks.disks_follow_record(read_store(fresh.home, box, "store.after_exit"),
                                           box_disks(fresh.home, box)))
