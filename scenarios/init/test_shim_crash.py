"""The shim crashes during init: SIGKILL right after it is spawned, and again while the
runtime is in its guest-connect wait. The record must survive as `failed`, its reason naming
the shim's exit."""

import pytest

from harness.judge import checks
from harness.scenario.steps import create_box, judge_failed_record, start_with_fault

pytestmark = pytest.mark.tier("init")

MOMENTS = {"at_spawn": 0.0, "during_connect_wait": 5.0}


@pytest.mark.parametrize("moment", MOMENTS)
def test_shim_crash_during_init_keeps_a_failed_record(chaos, moment):
    host = chaos.host()
    box = create_box(chaos, host, name=f"crash-{moment}")

    start = start_with_fault(chaos, host, box, fault="kill", delay_s=MOMENTS[moment])
    chaos.judge(checks.op_failed_cleanly("start", start.error, start.host_alive))
    chaos.note(start_elapsed_s=round(start.elapsed_s, 2), error=start.error)
    judge_failed_record(chaos, host, box, "shim_exit", "exit")
