"""Two runtimes on one home at once: what the home lock promises, judged, not assumed.

One BoxliteRuntime per home (a file lock on the home): while a host holds the home with a
detached box in its guest-connect wait, a second host on the same home must be refused,
saying why, and the first must keep answering. Once the first is SIGKILLed, the lock goes
with it and a fresh runtime opens the home.
"""

import pytest

from harness.common.errors import HostError
from harness.judge import recovery_checks
from harness.runtime.host import RuntimeOpError
from harness.scenario.recovery import FLAVOUR

pytestmark = pytest.mark.tier("init")


def test_a_home_takes_one_runtime_at_a_time(chaos):
    first = chaos.host(FLAVOUR)
    box = first.call("create", timeout_s=60, options=chaos.box_options(detach=True),
                     name="held")["id"]
    second_error = None
    try:
        second = chaos.factory.start(first.home, chaos.effective(FLAVOUR), name="second")
        chaos.ledger.own_children.add(second.pid)
    except HostError as exc:
        second_error = str(exc)
    try:
        answers = any(i["id"] == box for i in first.call("list_info", timeout_s=30))
    except (HostError, RuntimeOpError):
        answers = False
    chaos.judge(recovery_checks.home_lock_holds(second_error, answers))

    # The lock dies with its holder: a fresh runtime opens the home and sees the box.
    first.kill()
    first.wait_exit(30.0)
    fresh = chaos.restart(first)
    got, err = fresh.try_call("get_info", timeout_s=30, box_id=box)
    chaos.judge(recovery_checks.op_succeeded("get_after_holder_died", None if got else
                                    {"message": f"no box: {err.message if err else got}"}))
