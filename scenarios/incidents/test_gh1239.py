"""Upstream issue boxlite-ai/boxlite#1239 (open): stop() and remove(force=True) report success
while the box's VM keeps running, wherever the box's cgroup cannot be populated — containers,
CI runners, any caller not under a systemd user manager (like this machine).

What the runtime does wrong: its stop kills the pid in `boxes/<id>/shim.pid` (with the jailer,
the outer bwrap) and relies on `cgroup.kill` for the rest; without a populated cgroup the inner
bwrap and the `libkrun VM` run on, and the record says `stopped`.

Pinned reproduction: an app's host dies (SIGKILL) while a detached box waits for its guest;
the restarted app's runtime recovers the box and the user stops it. Then nothing of the box
may run, and the record must not say `stopped` over a live VM (#434's symptom).
"""

import pytest

from harness.scenario.recovery import (
    judge_one_shim_per_box,
    op_then_processes,
    orphan_detached_box,
    read_against_reality,
)
from harness.session.facts import machine_facts

pytestmark = pytest.mark.tier("init")

INCIDENT = "gh1239"


def test_stop_of_a_recovered_box_ends_its_vm(chaos):
    # 1. The condition the report names: no systemd user manager owns the caller's cgroup.
    facts = machine_facts()
    chaos.note(incident=INCIDENT, cgroup=facts["cgroup"],
               systemd_user_manager=facts["systemd_user_manager"])

    # 2. The app dies while its detached box waits for the guest; the app comes back.
    orphan = orphan_detached_box(chaos, "connect_wait", "SIGKILL")
    fresh = chaos.restart(orphan.dead_host)

    # 3. The user stops the box: judged while whatever stop() left still runs.
    op_then_processes(chaos, fresh, orphan, "stop", then=lambda: read_against_reality(
        chaos, fresh, orphan, "after_stop"))
    judge_one_shim_per_box(chaos, orphan)
