"""Incident XXXXXXXXXXXX (where and when it happened): what the user saw, in one sentence.

What the runtime did wrong, in its own words (box, shim, host, home, record), and the fix it
motivated, with the upstream reference.

Pinned reproduction: the fault and the moment it lands. Then what must hold, on which read paths.
"""

# How to use: copy to scenarios/incidents/test_<incident id, lower case>.py, fill in the
# docstring, keep the numbered steps that apply and delete the rest. The file starts with an
# underscore so pytest never collects the template itself.

import pytest

from harness.judge import checks
from harness.runtime.host import RUNNER
from harness.scenario.steps import create_box, judge_failed_record, start_with_fault

# "init" when the incident happens before the guest connects; "booted" when it needs a
# running guest (skipped, with the reason, where VMs do not boot).
pytestmark = pytest.mark.tier("init")

INCIDENT = "XXXXXXXXXXXX"          # the box id or ticket the incident is known by


def test_what_must_hold_after_the_incident(chaos):
    # 1. The setup the incident ran on: the host's flavour (RUNNER for a CI runner with a
    #    graceful SIGTERM handler, SDK_DEFAULT for an app on the SDK's default runtime, BARE
    #    otherwise) and the box options that matter (chaos.box_options(...) keywords).
    host = chaos.host(RUNNER)
    box = create_box(chaos, host, name=f"incident-{INCIDENT}")
    chaos.note(incident=INCIDENT, box=box)

    # 2. The fault, at the moment the incident's logs place it: "freeze" (the guest hangs) or
    #    "kill" (the shim crashes), delay_s after the shim is spawned. For a host that dies,
    #    use host.terminate() / host.kill() and host.wait_exit(...) instead.
    start = start_with_fault(chaos, host, box, fault="freeze", delay_s=0.0)
    chaos.judge(checks.op_failed_cleanly("start", start.error, start.host_alive))

    # 3. What the incident lost, judged where it was lost, with a check from harness/checks.py
    #    (add one there, with its self-test, if none fits; never judge in the scenario).

    # 4. The record after the host goes, through a fresh host on the home: what a restarted
    #    daemon sees. The cause is the one the failure must name: timeout | shim_exit |
    #    boot_failure. Use ending="shutdown" if the incident's host shut down gracefully.
    judge_failed_record(chaos, host, box, "timeout", ending="exit")

    # 5. If the runtime has a known bug here, keep the check as is and add the bug to
    #    fixtures/known_failures.toml (check, versions, reason, evidence).
