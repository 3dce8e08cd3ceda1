"""A detached box outlives its host; a fresh runtime on the same home recovers it.

Production runs boxes detached (`BoxOptions(detach=True)`): the next runtime that opens the
home recovers them from the store and `boxes/<id>/shim.pid`. Here the host (the runner
flavour: SIGTERM runs a graceful shutdown) dies at an init phase — record written, shim
spawned, or once its VM runs its vCPUs in the guest-connect wait — by SIGKILL or SIGTERM.
Then a fresh runtime on the home reads the box while its processes still live, or after the
box died unattended (its VM killed, as a crash or the OOM killer would), and stops and
force-removes it.

Judged: every read path's status agrees with what is true (`running` only with a live box
whose guest answered; a box that died unattended in a final status with a reason); after
stop() or remove(force=True) returns, nothing of the box runs (found by its folder in command
lines, cwd or open files, not only shim.pid: upstream #1239); after the remove, no record,
folder or socket folder (#118); never two shims of one box at once (#565); no zombie left
(#613, judged by the scenario's end).
"""

import pytest

from harness.judge import recovery_checks
from harness.runtime.host import RuntimeOpError
from harness.scenario.recovery import (
    PHASES,
    crash_and_wait_until_gone,
    judge_one_shim_per_box,
    judge_removed,
    op_then_processes,
    orphan_detached_box,
    read_against_reality,
)

pytestmark = pytest.mark.tier("init")

# SIGKILL and SIGTERM at every phase while the box's processes live; once the box died
# unattended, SIGKILL only (a graceful shutdown that skips a starting box changes nothing
# about a box that died after it).
CASES = ([(p, s, "alive") for p in PHASES for s in ("SIGKILL", "SIGTERM")]
         + [(p, "SIGKILL", "gone") for p in PHASES if p != "record_written"])


@pytest.mark.parametrize("phase, sig, liveness", CASES, ids=["-".join(c) for c in CASES])
def test_fresh_runtime_recovers_a_detached_box(chaos, phase, sig, liveness):
    orphan = orphan_detached_box(chaos, phase, sig)
    if liveness == "gone":
        crash_and_wait_until_gone(chaos, orphan)
    fresh = chaos.restart(orphan.dead_host)
    read_against_reality(chaos, fresh, orphan, "recovered")

    if orphan.started:
        # Read while whatever stop() left still runs (upstream #434: 'stopped' over a live VM).
        op_then_processes(chaos, fresh, orphan, "stop", then=lambda: read_against_reality(
            chaos, fresh, orphan, "after_stop"))
    error = op_then_processes(chaos, fresh, orphan, "remove", force=True)
    chaos.judge(recovery_checks.op_succeeded("remove_force", error))
    judge_removed(chaos, fresh, orphan, "after_remove")
    judge_one_shim_per_box(chaos, orphan)


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_force_remove_of_a_recovered_box_ends_it(chaos, sig):
    """remove(force=True) straight away, from the fresh runtime, on a recovered box whose VM
    runs: the record, folder, socket folder and every process of the box go (#118, #1239)."""
    orphan = orphan_detached_box(chaos, "connect_wait", sig)
    fresh = chaos.restart(orphan.dead_host)
    error = op_then_processes(chaos, fresh, orphan, "remove", force=True)
    chaos.judge(recovery_checks.op_succeeded("remove_force", error))
    judge_removed(chaos, fresh, orphan, "after_remove")
    judge_one_shim_per_box(chaos, orphan)


def test_recovered_box_answers_get_remove_and_start(chaos):
    """The fresh runtime's other operations on a recovered box whose VM still runs: get()
    finds it, remove() without force refuses an active box (or removes it whole), start()
    does not spawn a second shim beside the live one (#565)."""
    orphan = orphan_detached_box(chaos, "connect_wait", "SIGKILL")
    fresh = chaos.restart(orphan.dead_host)
    got, err = fresh.try_call("get_info", timeout_s=30, box_id=orphan.box_id)
    chaos.judge(recovery_checks.op_succeeded("get", None if got else
                                    {"message": f"no box: {err.message if err else got}"}))
    answer: dict = {}
    error = op_then_processes(chaos, fresh, orphan, "remove", then=lambda: answer.update(
        left=orphan.processes()))
    chaos.judge(recovery_checks.remove_refuses_or_ends(error, answer.get("left", []), fresh.alive))
    if error is None:
        judge_removed(chaos, fresh, orphan, "after_remove")
    else:
        try:
            fresh.call("start", timeout_s=90, box_id=orphan.box_id)
            chaos.note(start_of_recovered="ok")
        except RuntimeOpError as exc:
            chaos.note(start_of_recovered=exc.message)
        judge_one_shim_per_box(chaos, orphan)
        op_then_processes(chaos, fresh, orphan, "remove", force=True)
        judge_removed(chaos, fresh, orphan, "after_remove")
    judge_one_shim_per_box(chaos, orphan)
