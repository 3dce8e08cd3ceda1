"""A failed box can be started again and removed.

The retry goes through the pipeline again (a new shim is spawned) and leaves an intact record;
after remove nothing of the box remains: no record on any path, no directory, no socket
folder, no process. Both are transitions the runtime's state machine allows from `failed`
(PR 520's can_start / can_remove): a runtime that refuses one is judged for it
(transition_allowed, in its own words), not stopped as an arrangement error.
"""

import os
from pathlib import Path

import pytest

from harness.judge import checks
from harness.observe.records import store_integrity
from harness.scenario.steps import create_box, read_fresh, read_live, start_with_fault

pytestmark = pytest.mark.tier("init")


def socket_dir(box_id: str) -> Path:
    return Path(f"/tmp/bl-{os.getuid()}/{box_id}")


def test_failed_box_retries_and_removes_cleanly(chaos):
    host = chaos.host()
    box = create_box(chaos, host, name="retry")

    first = start_with_fault(chaos, host, box, fault="kill")
    chaos.judge(checks.op_failed_cleanly("start", first.error, first.host_alive))
    shims_before = {r.pid for r in chaos.ledger.kinds("shim")}

    second = start_with_fault(chaos, host, box, fault="kill", if_spawned=True)
    chaos.ledger.sample()
    respawned = {r.pid for r in chaos.ledger.kinds("shim")} - shims_before
    chaos.note(retry_spawned_shims=sorted(respawned))
    chaos.judge(checks.transition_allowed("start", "failed", second.error,
                                          ran=bool(second.shim_pids), host_alive=second.host_alive))
    if second.shim_pids:
        chaos.judge(checks.op_failed_cleanly("start#2", second.error, second.host_alive))
    chaos.judge(checks.store_integrity(store_integrity(host.home)))
    live = read_live(host, box)
    chaos.judge(*(checks.record_failed(r, "shim_exit", check_id=f"record_failed[retry.{r.path}]")
                  for r in live))

    _, refused = host.try_call("remove", timeout_s=60, box_id=box, force=False)
    error = {"type": refused.type, "message": refused.message} if refused else None
    chaos.judge(checks.transition_allowed("remove", "failed", error, ran=refused is None,
                                          host_alive=host.alive))
    chaos.ledger.sample()
    procs = [r.to_json() for r in chaos.ledger.leftovers(("shim", "vm", "bwrap"))]
    gone_live = read_live(host, box)
    chaos.judge(checks.box_gone(gone_live, (host.home / "boxes" / box).exists(),
                                socket_dir(box).exists(), procs))
    host.close()
    after, _ = read_fresh(chaos, host, box, prefix="after_remove")
    chaos.judge(checks.box_gone(after, (host.home / "boxes" / box).exists(),
                                socket_dir(box).exists(), []))
