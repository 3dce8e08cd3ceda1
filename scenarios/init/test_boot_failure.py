"""The VM fails to start on its own.

On machines like ours (nested PVM) every guest dies with KVM_EXIT_INTERNAL_ERROR some 9 s after
start (its box has light memory: the boot work before the death grows with it); where guests
do boot, a box with too little memory for the guest kernel stands in as the fault. Either way
the record must survive as `failed`, naming what ended the start: a boot failure when the
harness saw the VM die before the 30 s guest-connect wait ran out, a timeout when the wait ran
out first (a heavily loaded host can be that slow).
"""

import pytest

from harness.judge import checks
from harness.scenario.shutdown import failed_box_options
from harness.scenario.steps import (
    ENDINGS,
    create_box,
    judge_failed_record,
    observed_failure,
    start_with_fault,
)

pytestmark = pytest.mark.tier("init")


@pytest.mark.parametrize("ending", ENDINGS)
def test_boot_failure_keeps_a_failed_record(chaos, doctor_boots, ending):
    host = chaos.host()
    box = create_box(chaos, host, name="bootfail", **failed_box_options(doctor_boots))

    start = start_with_fault(chaos, host, box, fault=None)
    chaos.judge(checks.op_failed_cleanly("start", start.error, start.host_alive))
    cause = observed_failure(chaos, start, host.home)
    chaos.note(start_elapsed_s=round(start.elapsed_s, 2), error=start.error, observed=cause)
    judge_failed_record(chaos, host, box, cause, ending)
