"""The host is told to stop (SIGTERM) or killed (SIGKILL) with N boxes in mixed init states:
initializing (in the guest-connect wait), guest hung (frozen at spawn), and failed.

Graceful flavours (our runner's handler, the SDK's own) must exit and end every box process
within 60 s of the signal, none outliving the host. Without a shutdown (no handler, SIGKILL),
what the host left is recorded as facts, and every box process it left must end within the
shim watchdog's bound. Either way a restarted host must find no record unsettled (a start
cut short leaves its box `configured`, by the runtime's design), every box that had failed
still failed with its cause, and every read path agreeing.
"""

import pytest

from harness.observe.logs import runtime_log
from harness.scenario.shutdown import (
    CASES,
    arrange,
    default_host_offline,
    failed_box_options,
    record_verdicts,
    signal_and_judge,
    start_reached_shim,
)

pytestmark = pytest.mark.tier("init")


@pytest.mark.parametrize("n", [1, 3, 8], ids=lambda n: f"n{n}")
@pytest.mark.parametrize("case", list(CASES))
def test_host_stops_with_boxes_in_every_state(chaos, doctor_boots, case, n):
    case = CASES[case]
    offline = default_host_offline(case.flavour, chaos.env.version)
    if offline:
        chaos.judge(offline)
        return
    host = chaos.host(case.flavour)
    boxes = arrange(host, chaos.faults, n, chaos.box_options(), failed_box_options(doctor_boots))
    log = runtime_log(host.home)
    chaos.judge(*(start_reached_shim(b.id, b.planned, b.error,
                                     [line for line in log.splitlines() if b.id in line])
                  for b in boxes if b.planned))
    signal_and_judge(chaos, host, boxes, case)

    fresh = chaos.restart(host)
    chaos.judge(*record_verdicts(fresh, boxes, case.moment))
