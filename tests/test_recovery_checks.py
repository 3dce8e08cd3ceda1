"""Self-tests of the detached-box and recovery checks: each fails on a violating case."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from harness.judge import recovery_checks as checks
from harness.judge.checks import HOLDS, UNKNOWN, VIOLATED
from harness.observe.boxes import box_processes
from harness.observe.records import RecordRead

VM = {"pid": 41, "create_time": 1.0, "name": "libkrun VM", "tie": "command line"}


def read(status: str | None, reason: str | None = None, path: str = "recovered.store",
         error: str | None = None) -> RecordRead:
    return RecordRead(path, present=status is not None, status=status, reason=reason,
                      exposes_reason=path.endswith("store"), error=error)


# -- status_matches_reality -------------------------------------------------------------------

@pytest.mark.parametrize("status, alive, started, ready, why", [
    # 0.10.8 after its host died in the guest-connect wait: 'running', guest never answered.
    ("running", [VM], True, False, "never answered"),
    ("stopped", [VM], True, False, "not final"),            # upstream #434
    ("failed", [VM], True, False, "not final"),
    ("running", [], True, True, "final status"),            # running with nothing alive
    ("configured", [], True, False, "final status"),        # died unattended, never settled
    ("running", [], False, False, "configured"),
    ("configured", [VM], True, True, "running"),
])
def test_status_matches_reality_violated(status, alive, started, ready, why):
    v = checks.status_matches_reality(read(status, "r"), alive, started, ready)
    assert v.status == VIOLATED and why in v.summary, v.summary


@pytest.mark.parametrize("status, alive, started, ready", [
    ("running", [VM], True, True), ("stopping", [VM], True, True),
    ("configured", [VM], True, False), ("stopped", [], True, False),
    ("failed", [], True, True), ("configured", [], False, False)])
def test_status_matches_reality_holds(status, alive, started, ready):
    v = checks.status_matches_reality(read(status, "the VM failed to start"), alive, started,
                                      ready)
    assert v.status == HOLDS, v.summary


def test_a_failed_record_without_a_reason_is_violated_where_the_path_shows_reasons():
    assert checks.status_matches_reality(read("failed", ""), [], True, False).status == VIOLATED
    live = read("failed", None, path="recovered.get_info")
    assert checks.status_matches_reality(live, [], True, False).status == HOLDS


def test_status_matches_reality_unknown_or_missing():
    assert checks.status_matches_reality(read(None, error="locked"), [], True, False).status \
        == UNKNOWN
    assert checks.status_matches_reality(read(None), [], True, False).status == VIOLATED


# -- box_processes_gone, one_shim_per_box, home_lock_holds, op_succeeded ----------------------

def test_box_processes_gone():
    v = checks.box_processes_gone([VM], "stop", 5.0, 5.0)
    assert v.status == VIOLATED and "libkrun VM[41]" in v.summary
    assert checks.box_processes_gone([], "stop", 0.1, 5.0).status == HOLDS


def shim(pid: int, since: float, gone: float | None, box: str | None = "B1") -> dict:
    return {"pid": pid, "box": box, "first_seen": since, "gone_at": gone}


def test_one_shim_per_box_violated_by_a_second_shim_beside_a_live_one():
    v = checks.one_shim_per_box([shim(1, 0.0, None), shim(2, 5.0, 9.0)], end_t=20.0)
    assert v.status == VIOLATED and v.evidence["overlaps"][0]["pids"] == [1, 2]
    # A long-lived first shim is caught even past a short one in between.
    v = checks.one_shim_per_box([shim(1, 0.0, 30.0), shim(2, 1.0, 2.0), shim(3, 10.0, 12.0)],
                                end_t=40.0)
    assert [o["pids"] for o in v.evidence["overlaps"]] == [[1, 2], [1, 3]]


def test_one_shim_per_box_holds_for_shims_one_after_another_or_of_other_boxes():
    shims = [shim(1, 0.0, 5.0), shim(2, 5.5, None), shim(3, 1.0, None, box="B2"),
             shim(4, 1.0, None, box=None)]
    assert checks.one_shim_per_box(shims, end_t=9.0).status == HOLDS


def test_one_shim_per_box_cannot_judge_shims_tied_to_no_box():
    v = checks.one_shim_per_box([shim(1, 0.0, None, box=None)], end_t=3.0)
    assert v.status == UNKNOWN


def test_home_lock_holds():
    msg = "Another BoxliteRuntime is already using directory: /h"
    assert checks.home_lock_holds(msg, True).status == HOLDS
    assert checks.home_lock_holds(None, True).status == VIOLATED
    assert checks.home_lock_holds(msg, False).status == VIOLATED
    assert checks.home_lock_holds("exited with 1", True).status == VIOLATED


def test_op_succeeded():
    assert checks.op_succeeded("stop", None).status == HOLDS
    v = checks.op_succeeded("stop", {"type": "EngineError", "message": "no"})
    assert v.status == VIOLATED and v.check == "op_succeeded[stop]"


def test_remove_refuses_or_ends():
    refused = {"type": "BoxliteError", "message": "cannot remove box with live pid"}
    assert checks.remove_refuses_or_ends(refused, [VM], True).status == HOLDS
    assert checks.remove_refuses_or_ends(None, [], True).status == HOLDS
    v = checks.remove_refuses_or_ends(None, [VM], True)
    assert v.status == VIOLATED and "no record" in v.summary
    assert checks.remove_refuses_or_ends({"message": " "}, [VM], True).status == VIOLATED
    assert checks.remove_refuses_or_ends(refused, [VM], False).status == VIOLATED


VIOLATING = {
    "remove_refuses_or_ends": lambda: checks.remove_refuses_or_ends(None, [VM], True),
    "status_matches_reality": lambda: checks.status_matches_reality(
        read("running"), [VM], True, False),
    "box_processes_gone": lambda: checks.box_processes_gone([VM], "remove_force", 5.0, 5.0),
    "one_shim_per_box": lambda: checks.one_shim_per_box([shim(1, 0, None), shim(2, 1, None)],
                                                        2.0),
    "home_lock_holds": lambda: checks.home_lock_holds(None, True),
    "op_succeeded": lambda: checks.op_succeeded("stop", {"message": "refused"}),
}


@pytest.mark.parametrize("name", sorted(VIOLATING))
def test_violating_case(name):
    assert VIOLATING[name]().status == VIOLATED


# -- box_processes: what ties a process to a box -----------------------------------------------

def test_box_processes_finds_a_box_s_processes_by_command_line_and_cwd(tmp_path):
    home = tmp_path / "home"
    folder = home / "boxes" / "BOXID1"
    folder.mkdir(parents=True)
    by_arg = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)",
                               f"--bind={folder}/disks"])
    by_cwd = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                              cwd=folder)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", str(home)])
    try:
        deadline = time.monotonic() + 10
        found: list = []
        while time.monotonic() < deadline:
            found = box_processes(home, "BOXID1", os.getpid())
            if len(found) >= 2:
                break
            time.sleep(0.05)
        ties = {p["pid"]: p["tie"] for p in found}
        assert ties == {by_arg.pid: "command line", by_cwd.pid: "cwd"}
        assert box_processes(home, "OTHER0", os.getpid()) == []
    finally:
        for p in (by_arg, by_cwd, other):
            p.kill()
            p.wait()
    assert not psutil.pid_exists(by_arg.pid) or psutil.Process(by_arg.pid).status() == "zombie"
