"""A Node service on the SDK's default runtime with its own SIGTERM handler, wired at startup.

`JsBoxlite.withDefaultConfig()` installs a native SIGTERM handler that shuts the runtime down
and exits 0. Unlike Python's `Boxlite.default()`, which installs its handler when it is made,
the Node SDK installs it some time after the runtime's first use (measured on 0.10.0 and
0.10.3: absent after the constructor, present after the first call). A service that wires
SIGTERM to its own graceful `shutdown()` at startup, as runners do, therefore has both
handlers on the signal: both shut the runtime down at once, and the process can die of
SIGSEGV instead of exiting 0 (4 of 12 tries on 0.10.0, 6 of 12 on native 0.10.3, with no box;
the host's own flavours avoid the race by waiting for the SDK's handler first).

Each round starts such a host on a fresh home, makes the runtime's first use (list_info),
sends SIGTERM, and judges the runtime's shutdown through its log and the exit status. The
first round that fails is the one judged; every round's exit is recorded.
"""

import pytest

from harness.judge import checks
from harness.observe.logs import runtime_log
from harness.runtime.host import Flavour

# A race: rounds enough that a 1-in-3 crash shows in nearly every run (0.67^6 ~ 9% miss).
ROUNDS = 6
EXIT_BOUND_S = 60.0
EARLY_RUNNER = Flavour(runtime="default", sigterm="graceful-early")


def test_a_js_sigterm_handler_wired_before_the_first_use(chaos):
    if chaos.env.sdk != "node":
        pytest.skip("the Node SDK's order of SIGTERM handlers; Python's Boxlite.default() "
                    "installs its handler when it is made")
    rounds = []
    for i in range(ROUNDS):
        host = chaos.host(EARLY_RUNNER, home=chaos.factory.new_home())
        host.call("list_info", timeout_s=30)            # the runtime's first use
        log_before = len(runtime_log(host.home))
        host.terminate()
        code = host.wait_exit(EXIT_BOUND_S).returncode
        rounds.append({"round": i, "exit_code": code,
                       "events": [e["event"] for e in host.events],
                       "log_after_signal": runtime_log(host.home)[log_before:]})
    chaos.note(rounds=[{k: v for k, v in r.items() if k != "log_after_signal"}
                       for r in rounds])
    judged = next((r for r in rounds if r["exit_code"] != 0), rounds[-1])
    chaos.judge(checks.runtime_shutdown_ran(judged["log_after_signal"], judged["exit_code"]))
