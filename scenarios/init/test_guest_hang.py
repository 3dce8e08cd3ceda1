"""The guest hangs during boot: the shim is frozen as soon as it is spawned and never thawed.

The runtime must give up at its 30 s guest-connect timeout and keep the box's record as
`failed`, with a reason that names the timeout, on every read path.
"""

import pytest

from harness import checks
from harness.observe.logs import runtime_log, timeout_evidence
from harness.steps import create_box, read_fresh, read_live, start_with_fault

pytestmark = pytest.mark.tier("init")


def test_guest_hang_at_boot_fails_the_box_with_a_timeout(chaos):
    host = chaos.host()
    box = create_box(chaos, host, name="hang")

    start = start_with_fault(chaos, host, box, fault="freeze")
    chaos.judge(checks.op_failed_cleanly("start", start.error, start.host_alive))
    chaos.note(start_elapsed_s=round(start.elapsed_s, 2))

    live = read_live(host, box)
    chaos.judge(*(checks.record_failed(r, "timeout") for r in live),
                checks.read_paths_agree(live, "live"))

    log = runtime_log(host.home)
    chaos.judge(checks.timeout_evidence(timeout_evidence(log, box), len(log)))

    host.close()
    fresh, _ = read_fresh(chaos, host, box)
    chaos.judge(*(checks.record_failed(r, "timeout") for r in fresh),
                checks.read_paths_agree(fresh, "fresh"))
