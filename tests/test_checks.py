"""Self-tests of every check in harness/checks.py: a holding case, a violating case, and the
`unknown` case where the check has one. The meta-test at the bottom fails when a check is
registered without a violating case here."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import pkgutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

import harness
from harness.faults.base import Fault, FaultSet
from harness.judge import checks
from harness.judge.checks import CHECKS, HOLDS, UNKNOWN, VIOLATED, Verdict, classify_reason
from harness.observe.history import History, read_history
from harness.observe.logs import EVIDENCE_FIELDS
from harness.observe.logs import timeout_evidence as parse_evidence
from harness.observe.processes import ProcRecord
from harness.observe.records import RecordRead, read_store, store_integrity, store_rows

# Programs run by another interpreter: the host inside a runtime's virtualenv (it imports
# boxlite), the FUSE layer by the system python (Debian's pyfuse3). Not part of the registry.
NOT_IMPORTABLE_HERE = {"harness.runtime.host_main", "harness.faults.fuse_layer"}


def import_every_harness_module() -> None:
    """A check registers itself when its module is imported; import them all, so a check
    added anywhere in the harness is in CHECKS (and must have a violating case below)."""
    for mod in pkgutil.walk_packages(harness.__path__, "harness."):
        if mod.name not in NOT_IMPORTABLE_HERE:
            importlib.import_module(mod.name)


import_every_harness_module()

# Reasons as the runtime words them (the timeout one is from the known-failures evidence).
TIMEOUT_REASON = ("engine reported an error: The VM failed to start: timed out after 30s "
                  "waiting for it to become ready.")
BOOT_REASON = "engine reported an error: The VM failed to start: boot image is unusable"
SHIM_REASON = "engine reported an error: shim exited with code 137 (SIGKILL)"


def store(status: str | None = "failed", reason: str | None = TIMEOUT_REASON,
          present: bool = True, error: str | None = None, path: str = "store") -> RecordRead:
    """A read through the store: the only path that exposes the error reason. As in
    harness.observe.records, a read that failed has no record."""
    present = present and error is None
    return RecordRead(path, present, status if present else None, reason, True, error)


def live(status: str | None = "failed", present: bool = True, error: str | None = None,
         path: str = "live.get_info") -> RecordRead:
    present = present and error is None
    return RecordRead(path, present, status if present else None, error=error)


# -- record_failed --------------------------------------------------------------------------

@pytest.mark.parametrize("cause, reason", [
    ("timeout", TIMEOUT_REASON),
    ("boot_failure", BOOT_REASON),
    ("shim_exit", SHIM_REASON),
    ("shim_exit", "box process was killed by signal 9"),
])
def test_record_failed_holds_when_failed_with_the_expected_cause(cause, reason):
    v = checks.record_failed(store(reason=reason), cause)
    assert v.status == HOLDS, v.summary
    assert v.check == "record_failed[store]"
    assert v.evidence["reason_names"] == cause


def test_record_failed_holds_on_a_path_without_reasons():
    v = checks.record_failed(live("failed"), "timeout")
    assert v.status == HOLDS, v.summary
    assert v.check == "record_failed[live.get_info]"


def test_record_failed_violated_when_the_record_is_missing():
    v = checks.record_failed(store(present=False), "timeout")
    assert v.status == VIOLATED
    assert "no record" in v.summary


@pytest.mark.parametrize("status", ["configured", "stopped", "running", "stopping", None])
def test_record_failed_violated_on_another_status(status):
    v = checks.record_failed(store(status=status), "timeout")
    assert v.status == VIOLATED
    assert repr(status) in v.summary


def test_record_failed_violated_on_another_status_without_reasons():
    v = checks.record_failed(live("configured"), "timeout")
    assert v.status == VIOLATED


@pytest.mark.parametrize("reason", ["", "   \n", None])
def test_record_failed_violated_on_an_empty_reason(reason):
    v = checks.record_failed(store(reason=reason), "timeout")
    assert v.status == VIOLATED
    assert "empty reason" in v.summary


# 0.9.7's words for a guest that died during boot (the VM process exited 1), as the store
# holds them (Node and Python 0.9.7, 2026-12-06).
OWN_EXIT_BOOT = ("engine reported an error: Box cj10kEIT4fKB failed to start\n\nExit code: 1\n\n"
                 "Console output: empty (no kernel or guest messages captured)\n\nShim stderr:\n"
                 "[shim] T+0ms: main() entered\n[2026-12-07T00:55:40Z ERROR krun_vmm::linux::"
                 "vstate] Received KVM_EXIT_INTERNAL_ERROR signal")


def test_record_failed_takes_a_boot_failure_worded_as_the_vms_own_exit():
    v = checks.record_failed(store(reason=OWN_EXIT_BOOT), "boot_failure")
    assert v.status == HOLDS, v.summary
    assert v.evidence["reason_names"] == "shim_exit"


@pytest.mark.parametrize("reason", [
    OWN_EXIT_BOOT.replace("Exit code: 1", "Exit code: 137"),          # a signal's exit
    OWN_EXIT_BOOT.replace("Exit code: 1", "Exit code: 1 (killed)"),
    "shim exited with code 1",                                      # no failed start said
    "box process was killed by signal 9",
])
def test_record_failed_refuses_other_exits_for_a_boot_failure(reason):
    v = checks.record_failed(store(reason=reason), "boot_failure")
    assert v.status == VIOLATED, v.summary


def test_record_failed_violated_when_the_reason_names_the_wrong_cause():
    # A boot failure where a timeout was expected.
    v = checks.record_failed(store(reason=BOOT_REASON), "timeout")
    assert v.status == VIOLATED
    assert v.evidence["reason_names"] == "boot_failure"
    assert "expected 'timeout'" in v.summary
    # ...and the other way round: a timeout is not a boot failure.
    v = checks.record_failed(store(reason=TIMEOUT_REASON), "boot_failure")
    assert v.status == VIOLATED
    assert v.evidence["reason_names"] == "timeout"


def test_record_failed_violated_when_the_reason_names_no_cause():
    v = checks.record_failed(store(reason="something went wrong"), "timeout")
    assert v.status == VIOLATED
    assert v.evidence["reason_names"] is None


def test_record_failed_unknown_when_the_path_could_not_be_read():
    v = checks.record_failed(store(error="OperationalError: database is locked"), "timeout")
    assert v.status == UNKNOWN
    assert "could not be read" in v.summary


def test_record_failed_unknown_on_an_unknown_expected_cause():
    v = checks.record_failed(store(), "cosmic_ray")
    assert v.status == UNKNOWN


def test_record_failed_check_id_override():
    v = checks.record_failed(store(present=False), "timeout", check_id="record_failed[x]")
    assert v.check == "record_failed[x]"
    assert v.status == VIOLATED


def test_classify_reason_prefers_timeout_over_boot_failure():
    # A timeout reason also says "failed to start"; it must classify as a timeout.
    assert classify_reason(TIMEOUT_REASON) == "timeout"
    assert classify_reason(BOOT_REASON) == "boot_failure"
    assert classify_reason(SHIM_REASON) == "shim_exit"
    assert classify_reason("") is None
    assert classify_reason(None) is None


# -- read_paths_agree -----------------------------------------------------------------------

def test_read_paths_agree_holds():
    v = checks.read_paths_agree([live("failed"), live("failed", path="live.list_info"),
                                 store("failed")], "live")
    assert v.status == HOLDS, v.summary
    assert v.check == "read_paths_agree[live]"


def test_read_paths_agree_holds_when_all_paths_show_no_record():
    v = checks.read_paths_agree([live(present=False), store(present=False)], "after")
    assert v.status == HOLDS


def test_read_paths_agree_violated_on_different_statuses():
    v = checks.read_paths_agree([live("configured"), live("failed", path="live.list_info"),
                                 store("failed")], "live")
    assert v.status == VIOLATED
    assert "live.get_info='configured'" in v.summary
    assert v.evidence["values"]["store"] == "failed"


def test_read_paths_agree_violated_on_presence():
    v = checks.read_paths_agree([live(present=False), store("failed")], "live")
    assert v.status == VIOLATED


def test_read_paths_agree_violated_even_when_a_path_is_unreadable():
    v = checks.read_paths_agree([live("configured"), store("failed"),
                                 live(error="host died", path="live.list_info")], "live")
    assert v.status == VIOLATED
    assert v.evidence["unreadable"] == {"live.list_info": "host died"}


def test_read_paths_agree_unknown_with_fewer_than_two_readable_paths():
    v = checks.read_paths_agree([live("failed"), store(error="no store")], "live")
    assert v.status == UNKNOWN
    assert checks.read_paths_agree([], "live").status == UNKNOWN


def test_read_paths_agree_unknown_when_agreeing_paths_leave_one_unread():
    v = checks.read_paths_agree([live("failed"), store("failed"),
                                 live(error="timeout", path="live.list_info")], "live")
    assert v.status == UNKNOWN


# -- timeout_evidence (fed through the real log parser) -------------------------------------

BOX = "01JD7Q3ZBOXID"


def runtime_log_text(box: str = BOX, fields: dict[str, str] | None = None) -> str:
    fields = {"shim_alive": "true", "console_bytes": "0", "ready_socket_exists": "false",
              "likely_cause": "guest did not connect (hung kernel?)"} if fields is None else fields
    lines = [
        "2026-11-26T10:00:00.000Z INFO boxlite::litebox: starting box " + box,
        f"2026-11-26T10:00:30.000Z ERROR boxlite::init: box {box} timed out after 30s "
        "waiting for the guest to connect",
        "  Evidence:",
        *(f"    • {k} = {v}" for k, v in fields.items()),
        "2026-11-26T10:00:30.100Z INFO boxlite::runtime: box marked failed",
        "    • likely_cause = not part of the block",
    ]
    return "\n".join(lines) + "\n"


def test_evidence_parser_reads_every_field_and_stops_at_the_next_entry():
    ev = parse_evidence(runtime_log_text(), BOX)
    assert ev == {"shim_alive": "true", "console_bytes": "0", "ready_socket_exists": "false",
                  "likely_cause": "guest did not connect (hung kernel?)"}
    assert parse_evidence(runtime_log_text(), "another-box") is None
    assert parse_evidence("", BOX) is None


def test_timeout_evidence_holds():
    log = runtime_log_text()
    v = checks.timeout_evidence(parse_evidence(log, BOX), len(log))
    assert v.status == HOLDS, v.summary
    for f in EVIDENCE_FIELDS:
        assert f in v.summary


def test_timeout_evidence_violated_without_a_block():
    log = "2026-11-26T10:00:00Z INFO boxlite: nothing to see\n"
    v = checks.timeout_evidence(parse_evidence(log, BOX), len(log))
    assert v.status == VIOLATED
    assert "no timeout evidence" in v.summary


def test_timeout_evidence_violated_on_a_missing_field():
    log = runtime_log_text(fields={"shim_alive": "true", "console_bytes": "0",
                                   "likely_cause": "hung"})
    v = checks.timeout_evidence(parse_evidence(log, BOX), len(log))
    assert v.status == VIOLATED
    assert "ready_socket_exists" in v.summary


def test_timeout_evidence_violated_on_an_empty_field():
    log = runtime_log_text(fields={"shim_alive": "true", "console_bytes": "0",
                                   "ready_socket_exists": "false", "likely_cause": ""})
    v = checks.timeout_evidence(parse_evidence(log, BOX), len(log))
    assert v.status == VIOLATED
    assert "likely_cause" in v.summary


def test_timeout_evidence_unknown_on_an_empty_log():
    v = checks.timeout_evidence(parse_evidence("", BOX), 0)
    assert v.status == UNKNOWN


# -- no_zombies (records made by the ledger's own ProcRecord) -------------------------------

GRACE = checks.ZOMBIE_GRACE_S     # the default grace of no_zombies
LASTING = GRACE + 1.5             # how long a leaked zombie stays in these cases


def zombie(pid: int, since: float, last: float, name: str = "boxlite-shim") -> dict:
    rec = ProcRecord(pid, 1000.0 + pid, name, 4242, "", first_seen=since, last_seen=last)
    rec.zombie_since = since
    return rec.to_json()


def test_no_zombies_holds_when_zombies_are_reaped_within_the_grace():
    v = checks.no_zombies([zombie(11, 2.0, 2.1), zombie(12, 3.0, 3.0)], samples=40)
    assert v.status == HOLDS, v.summary
    assert "2 reaped" in v.summary


def test_no_zombies_grace_is_a_parameter():
    zs = [zombie(12, 1.0, 2.5)]
    assert checks.no_zombies(zs, samples=40, grace_s=1.0).status == VIOLATED
    assert checks.no_zombies(zs, samples=40, grace_s=2.0).status == HOLDS


def test_no_zombies_holds_with_no_zombie_at_all():
    assert checks.no_zombies([], samples=5).status == HOLDS


def test_no_zombies_violated_by_a_lasting_zombie():
    v = checks.no_zombies([zombie(11, 2.0, 2.1), zombie(12, 1.0, 1.0 + LASTING)], samples=40)
    assert v.status == VIOLATED
    assert "boxlite-shim[12] under 4242" in v.summary
    assert [z["pid"] for z in v.evidence["lasting"]] == [12]


def test_no_zombies_violated_even_when_some_samples_failed():
    v = checks.no_zombies([zombie(12, 1.0, 1.0 + LASTING)], samples=40,
                          sampling_errors=["reading pid 99 failed: AccessDenied"])
    assert v.status == VIOLATED


# With reaping points (harness.observe.reaping), the bound is the runtime's own answers.

def box_zombie(pid: int, since: float, last: float, box: str | None = "BOX1",
               ppid: int = 4242) -> dict:
    z = zombie(pid, since, last)
    return {**z, "box": box, "zombie_ppid": ppid}


ANSWER = {"t": 10.0, "ppid": 4242, "box": "BOX1", "settle_s": 5.0, "why": "host1 answered start"}
END = {"t": 30.0, "ppid": 4242, "box": None, "settle_s": 0.0, "why": "the scenario ended"}


def test_no_zombies_holds_for_a_zombie_reaped_late_but_before_its_box_was_answered():
    # The flake this rule removes: a zombie that lived 8 s on a loaded machine, reaped by the
    # runtime before it answered the box's start.
    v = checks.no_zombies([box_zombie(11, 1.5, 9.5)], samples=100, reaping_points=[ANSWER, END])
    assert v.status == HOLDS, v.summary


def test_no_zombies_violated_by_a_zombie_that_outlives_its_box_s_answer():
    v = checks.no_zombies([box_zombie(11, 9.0, 16.0)], samples=100, reaping_points=[ANSWER, END])
    assert v.status == VIOLATED
    assert "host1 answered start" in v.summary and v.evidence["lasting"][0]["pid"] == 11


def test_no_zombies_violated_by_a_zombie_held_at_the_end_of_the_scenario():
    # Another box's zombie, or one born after the answer: only the end catches it.
    for z in (box_zombie(12, 20.0, 30.0, box="BOX2"), box_zombie(13, 11.0, 30.2)):
        v = checks.no_zombies([z], samples=100, reaping_points=[ANSWER, END])
        assert v.status == VIOLATED and "the scenario ended" in v.summary


def test_no_zombies_points_of_another_parent_or_box_do_not_apply():
    zs = [box_zombie(14, 9.0, 20.0, box="BOX2"), box_zombie(15, 9.0, 20.0, ppid=999)]
    assert checks.no_zombies(zs, samples=100, reaping_points=[ANSWER]).status == HOLDS


def test_no_zombies_unknown_without_samples():
    assert checks.no_zombies([], samples=0).status == UNKNOWN


def test_no_zombies_unknown_when_sampling_failed():
    v = checks.no_zombies([], samples=10, sampling_errors=["listing descendants failed"])
    assert v.status == UNKNOWN
    assert "sampling failed" in v.summary


# -- nothing_left_running -------------------------------------------------------------------

def proc(pid: int, name: str = "boxlite-shim") -> dict:
    return ProcRecord(pid, 1000.0 + pid, name, 1, name, 0.0, 1.0).to_json()


def test_nothing_left_running_holds():
    v = checks.nothing_left_running([], observed=3)
    assert v.status == HOLDS
    assert "all 3" in v.summary


def test_nothing_left_running_violated():
    v = checks.nothing_left_running([proc(77), proc(78, "libkrun VM")], observed=3)
    assert v.status == VIOLATED
    assert "boxlite-shim[77]" in v.summary and "libkrun VM[78]" in v.summary


def test_nothing_left_running_unknown_when_nothing_was_observed():
    assert checks.nothing_left_running([], observed=0).status == UNKNOWN


# -- faults_healed (through the real FaultSet) ----------------------------------------------

class FakeFault(Fault):
    def __init__(self, name: str, heal_raises: bool = False, log: list | None = None) -> None:
        super().__init__(name, {"pid": 1})
        self.heal_raises = heal_raises
        self.log = log if log is not None else []

    def _inject(self) -> None:
        self.log.append(("inject", self.name))

    def _heal(self) -> None:
        self.log.append(("heal", self.name))
        if self.heal_raises:
            raise OSError("cannot thaw")


class FailingInject(FakeFault):
    def _inject(self) -> None:
        raise PermissionError("no")


def fault_facts(fs: FaultSet) -> list[dict]:
    # As Chaos.conclude builds them.
    return [{**f.describe(), "injected": f.injected, "healed": f.healed,
             "heal_error": f.heal_error} for f in fs.faults]


def test_faults_healed_holds_and_heal_all_runs_newest_first(tmp_path):
    log: list = []
    h = History(tmp_path / "h.jsonl")
    fs = FaultSet(h)
    fs.inject(FakeFault("freeze", log=log))
    fs.inject(FakeFault("kill", log=log))
    fs.heal_all()
    fs.heal_all()                                   # healing twice is a no-op
    h.close()
    assert log == [("inject", "freeze"), ("inject", "kill"), ("heal", "kill"), ("heal", "freeze")]
    v = checks.faults_healed(fault_facts(fs))
    assert v.status == HOLDS, v.summary
    kinds = [e["kind"] for e in read_history(tmp_path / "h.jsonl")]
    assert kinds == ["meta", "fault", "fault", "heal", "heal"]


def test_faults_healed_violated_when_not_healed():
    fs = FaultSet()
    fs.inject(FakeFault("freeze"))
    v = checks.faults_healed(fault_facts(fs))
    assert v.status == VIOLATED
    assert "1 fault(s) not healed" in v.summary


def test_faults_healed_violated_when_heal_raised():
    fs = FaultSet()
    fs.inject(FakeFault("freeze", heal_raises=True))
    fs.heal_all()
    assert fs.faults[0].heal_error and "cannot thaw" in fs.faults[0].heal_error
    assert checks.faults_healed(fault_facts(fs)).status == VIOLATED


def test_faults_healed_ignores_a_fault_that_was_never_injected():
    fs = FaultSet()
    with pytest.raises(PermissionError):
        fs.inject(FailingInject("kill"))
    assert checks.faults_healed(fault_facts(fs)).status == HOLDS


# -- op_failed_cleanly ----------------------------------------------------------------------

def test_op_failed_cleanly_holds():
    v = checks.op_failed_cleanly("start", {"type": "BoxliteError", "message": TIMEOUT_REASON},
                                 host_alive=True)
    assert v.status == HOLDS
    assert v.check == "op_failed_cleanly[start]"


def test_op_failed_cleanly_violated_when_the_host_died():
    v = checks.op_failed_cleanly("start", {"type": "X", "message": "m"}, host_alive=False)
    assert v.status == VIOLATED
    assert "host died" in v.summary


def test_op_failed_cleanly_violated_when_the_op_succeeded():
    v = checks.op_failed_cleanly("start", None, host_alive=True)
    assert v.status == VIOLATED
    assert "succeeded" in v.summary


@pytest.mark.parametrize("message", ["", "  ", None])
def test_op_failed_cleanly_violated_on_an_empty_message(message):
    v = checks.op_failed_cleanly("start", {"type": "X", "message": message}, host_alive=True)
    assert v.status == VIOLATED


# -- record_final ---------------------------------------------------------------------------

@pytest.mark.parametrize("read", [store("failed"), live("stopped"), store(present=False)])
def test_record_final_holds(read):
    assert checks.record_final(read).status == HOLDS


@pytest.mark.parametrize("status", ["configured", "stopping", "unknown", "running"])
def test_record_final_violated_on_a_transitional_status(status):
    v = checks.record_final(live(status))
    assert v.status == VIOLATED
    assert "stuck" in v.summary


def test_record_final_unknown_when_unreadable():
    assert checks.record_final(store(error="locked")).status == UNKNOWN


# -- the store, read through harness.observe.records ----------------------------------------

def make_store(home: Path, boxes: dict[str, tuple[str, str | None]],
               configs: tuple[str, ...] | None = None) -> Path:
    """A store shaped like the runtime's: box_state(id, status, json) and box_config(id)."""
    db = home / "db" / "boxlite.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db)
    con.executescript("CREATE TABLE box_config (id TEXT PRIMARY KEY, json TEXT);"
                      "CREATE TABLE box_state (id TEXT PRIMARY KEY, status TEXT, json TEXT);"
                      "CREATE INDEX box_state_status ON box_state(status);")
    for box, (status, reason) in boxes.items():
        con.execute("INSERT INTO box_state VALUES (?, ?, ?)",
                    (box, status, json.dumps({"status": status, "error_reason": reason})))
    for box in (boxes if configs is None else configs):
        con.execute("INSERT INTO box_config VALUES (?, '{}')", (box,))
    con.commit()
    con.close()
    return db


def corrupt_an_index(db: Path) -> None:
    """Point the store's index at another table's index: SQLite's integrity_check objects."""
    con = sqlite3.connect(db)
    con.executescript("CREATE TABLE other (x TEXT); CREATE INDEX other_x ON other(x);"
                      "INSERT INTO other VALUES ('zzz');")
    roots = dict(con.execute("SELECT name, rootpage FROM sqlite_master WHERE type = 'index' "
                             "AND name IN ('box_state_status', 'other_x')").fetchall())
    con.execute("PRAGMA writable_schema=ON")
    con.execute("UPDATE sqlite_master SET rootpage = ? WHERE name = 'box_state_status'",
                (roots["other_x"],))
    con.execute("UPDATE sqlite_master SET rootpage = ? WHERE name = 'other_x'",
                (roots["box_state_status"],))
    con.commit()
    con.close()


def test_record_checks_through_a_real_store(tmp_path):
    make_store(tmp_path, {"b1": ("failed", TIMEOUT_REASON), "b2": ("configured", None)})
    read = read_store(tmp_path, "b1")
    assert (read.present, read.status, read.reason) == (True, "failed", TIMEOUT_REASON)
    assert checks.record_failed(read, "timeout").status == HOLDS
    assert checks.record_failed(read, "shim_exit").status == VIOLATED
    assert checks.record_failed(read_store(tmp_path, "b2"), "timeout").status == VIOLATED
    assert checks.record_final(read_store(tmp_path, "b2")).status == VIOLATED
    missing = read_store(tmp_path, "nope")
    assert checks.record_failed(missing, "timeout").status == VIOLATED
    assert checks.record_final(missing).status == HOLDS


def test_record_checks_without_a_store_are_unknown(tmp_path):
    read = read_store(tmp_path, "b1")
    assert read.error and "no store" in read.error
    assert checks.record_failed(read, "timeout").status == UNKNOWN
    assert checks.record_final(read).status == UNKNOWN


# -- store_integrity ------------------------------------------------------------------------

def test_store_integrity_holds(tmp_path):
    make_store(tmp_path, {"b1": ("failed", TIMEOUT_REASON)})
    v = checks.store_integrity(store_integrity(tmp_path))
    assert v.status == HOLDS, v.summary


def test_store_integrity_violated_by_a_corrupt_index(tmp_path):
    db = make_store(tmp_path, {"b1": ("failed", TIMEOUT_REASON), "b2": ("stopped", None)})
    corrupt_an_index(db)
    result = store_integrity(tmp_path)
    v = checks.store_integrity(result)
    assert v.status == VIOLATED, v.summary
    assert "index" in v.summary


def test_store_integrity_unknown_when_the_store_cannot_be_read(tmp_path):
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "boxlite.db").write_bytes(b"this is not a database" * 100)
    try:
        result, error = store_integrity(tmp_path), None
    except sqlite3.DatabaseError as exc:        # as the scenario does
        result, error = None, repr(exc)
    v = checks.store_integrity(result, error)
    assert v.status == UNKNOWN
    assert checks.store_integrity(None).status == UNKNOWN


# -- records_settled ------------------------------------------------------------------------

def test_records_settled_holds(tmp_path):
    make_store(tmp_path, {"b1": ("failed", TIMEOUT_REASON), "b2": ("configured", None),
                          "b3": ("stopped", None), "b4": ("running", None)})
    v = checks.records_settled(store_rows(tmp_path), live_box_ids=["b4"])
    assert v.status == HOLDS, v.summary


@pytest.mark.parametrize("status", ["stopping", "unknown", "running"])
def test_records_settled_violated_by_a_transitional_record(tmp_path, status):
    make_store(tmp_path, {"b1": ("failed", TIMEOUT_REASON), "b2": (status, None)})
    v = checks.records_settled(store_rows(tmp_path))
    assert v.status == VIOLATED
    assert f"b2={status}" in v.summary


# -- home_consistent ------------------------------------------------------------------------

def test_home_consistent_holds(tmp_path):
    make_store(tmp_path, {"b1": ("failed", TIMEOUT_REASON), "b2": ("configured", None)})
    # A configured box never started need not have a directory yet.
    v = checks.home_consistent(["b1"], store_rows(tmp_path))
    assert v.status == HOLDS, v.summary


def test_home_consistent_violated_by_a_directory_without_record(tmp_path):
    make_store(tmp_path, {"b1": ("failed", TIMEOUT_REASON)})
    v = checks.home_consistent(["b1", "ghost"], store_rows(tmp_path))
    assert v.status == VIOLATED
    assert v.evidence["dirs_without_record"] == ["ghost"]


def test_home_consistent_violated_by_a_started_record_without_directory(tmp_path):
    make_store(tmp_path, {"b1": ("failed", TIMEOUT_REASON)})
    v = checks.home_consistent([], store_rows(tmp_path))
    assert v.status == VIOLATED
    assert v.evidence["records_without_dir"] == ["b1"]


# -- image_cache_usable ---------------------------------------------------------------------

def test_image_cache_usable_holds():
    assert checks.image_cache_usable("shim_spawned", "shim_spawned").status == HOLDS


def test_image_cache_usable_violated():
    v = checks.image_cache_usable(None, "shim_spawned", "create: ImageError: layer missing")
    assert v.status == VIOLATED
    assert "layer missing" in v.summary


# -- box_gone -------------------------------------------------------------------------------

def gone_reads() -> list[RecordRead]:
    return [live(present=False), live(present=False, path="live.list_info"),
            store(present=False)]


def test_box_gone_holds():
    v = checks.box_gone(gone_reads(), box_dir_exists=False, socket_dir_exists=False,
                        processes=[])
    assert v.status == HOLDS, v.summary


@pytest.mark.parametrize("what", ["record", "box dir", "socket dir", "process"])
def test_box_gone_violated_by_anything_left(what):
    reads = gone_reads()
    if what == "record":
        reads[2] = store("failed")
    v = checks.box_gone(reads, box_dir_exists=what == "box dir",
                        socket_dir_exists=what == "socket dir",
                        processes=[proc(99)] if what == "process" else [])
    assert v.status == VIOLATED
    assert ("store" if what == "record" else "pid 99" if what == "process" else what) \
        in v.summary


def test_box_gone_unknown_when_a_path_is_unreadable():
    reads = [*gone_reads()[:2], store(error="locked")]
    v = checks.box_gone(reads, box_dir_exists=False, socket_dir_exists=False, processes=[])
    assert v.status == UNKNOWN


# -- acked_records_durable ------------------------------------------------------------------

def test_acked_records_durable_holds_with_unacked_extras():
    found = ["rec 1", "rec 2", "rec 3", "rec 4", ""]      # rec 4 written, never acknowledged
    v = checks.acked_records_durable([1, 2, 3], found)
    assert v.status == HOLDS, v.summary
    assert v.evidence["indeterminate"] == [4]


def test_acked_records_durable_violated_by_a_missing_record():
    v = checks.acked_records_durable([1, 2, 3], ["rec 1", "rec 3"])
    assert v.status == VIOLATED
    assert v.evidence["missing"] == [2]


def test_acked_records_durable_violated_by_a_corrupt_line():
    v = checks.acked_records_durable([1, 2], ["rec 1", "rec 2", "re\x00\x00c 3"])
    assert v.status == VIOLATED
    assert "1 corrupt" in v.summary


def test_acked_records_durable_unknown_when_nothing_was_acknowledged():
    assert checks.acked_records_durable([], ["rec 1"]).status == UNKNOWN


# -- within_bound ---------------------------------------------------------------------------

def test_within_bound_holds():
    v = checks.within_bound("host_exit", 8.2, 10.0)
    assert (v.check, v.status) == ("within_bound[host_exit]", HOLDS)
    assert checks.within_bound("host_exit", 10.0, 10.0).status == HOLDS


def test_within_bound_violated_when_too_slow():
    v = checks.within_bound("host_exit", 12.5, 10.0)
    assert v.status == VIOLATED
    assert "12.5s > 10s" in v.summary


def test_within_bound_violated_when_it_never_completed():
    v = checks.within_bound("host_exit", None, 10.0)
    assert v.status == VIOLATED
    assert "never completed" in v.summary


# -- no_growth ------------------------------------------------------------------------------

def test_no_growth_holds_on_a_flat_noisy_series():
    series = [(i, 100 + (3 if i % 2 else -3)) for i in range(20)]
    v = checks.no_growth("fds", series, max_slope=0.5)
    assert (v.check, v.status) == ("no_growth[fds]", HOLDS)


def test_no_growth_violated_by_a_steady_leak():
    series = [(i, 100 + 2 * i) for i in range(10)]
    v = checks.no_growth("fds", series, max_slope=0.5)
    assert v.status == VIOLATED
    assert abs(v.evidence["slope"] - 2.0) < 1e-9


def test_no_growth_judges_the_trend_not_the_endpoints():
    # Ends higher than it starts, but only by one outlier: no trend.
    series = [(i, 100) for i in range(19)] + [(19, 140)]
    assert checks.no_growth("rss", series, max_slope=3.0).status == HOLDS


@pytest.mark.parametrize("series", [[(0, 1), (1, 2)], [(3, 1)] * 10, []])
def test_no_growth_unknown_with_too_few_points(series):
    assert checks.no_growth("fds", series, max_slope=0.5).status == UNKNOWN


# -- ledger_settled -------------------------------------------------------------------------

def unreadable(why: str):
    return pytest.importorskip("harness.observe.ledger").Unreadable(why)


RULES = {"fds": lambda b, a: a <= b, "threads": lambda b, a: a <= b + 1}


def test_ledger_settled_holds():
    v = checks.ledger_settled({"fds": 10, "threads": 4}, {"fds": 10, "threads": 5}, RULES)
    assert v.status == HOLDS, v.summary


def test_ledger_settled_violated_by_growth():
    v = checks.ledger_settled({"fds": 10, "threads": 4}, {"fds": 14, "threads": 4}, RULES)
    assert v.status == VIOLATED
    assert v.evidence["grown"] == {"fds": {"before": 10, "after": 14}}


def test_ledger_settled_violated_even_when_another_probe_is_unreadable():
    v = checks.ledger_settled({"fds": 10, "threads": 4},
                              {"fds": 14, "threads": unreadable("EACCES")}, RULES)
    assert v.status == VIOLATED


def test_ledger_settled_unknown_when_a_probe_could_not_be_read():
    v = checks.ledger_settled({"fds": 10, "threads": unreadable("EACCES")},
                              {"fds": 10, "threads": 4}, RULES)
    assert v.status == UNKNOWN
    assert "threads" in v.evidence["unreadable"]


# -- owner_wait -----------------------------------------------------------------------------

def test_owner_wait_holds():
    assert checks.owner_wait(3, 3, None).status == HOLDS


@pytest.mark.parametrize("got, error", [(0, None), (None, "ECHILD: No child processes")])
def test_owner_wait_violated_when_the_exit_code_was_stolen(got, error):
    v = checks.owner_wait(3, got, error)
    assert v.status == VIOLATED
    assert "expected 3" in v.summary


# -- checks registered outside harness/checks.py, looked up by name ------------------------

# These follow harness/shutdown.py as it is being written; they may move to its own self-test
# file (whose VIOLATING dict the meta-test also reads).
def box_proc(pid: int, ended_s: float | None = None, orphan: bool = False) -> dict:
    rec = ProcRecord(pid, 1000.0 + pid, "boxlite-shim", 1, "boxlite-shim", 0.0, 1.0)
    rec.adopted = orphan
    return {**rec.to_json(), "ended_s": ended_s, "box": "b1", "orphan": orphan}


def registered(name: str) -> Callable[..., Verdict]:
    if name not in CHECKS:
        pytest.skip(f"no check {name!r} registered in this tree")
    return CHECKS[name]


def test_runtime_gone_within_holds():
    v = registered("runtime_gone_within")([box_proc(1, 2.5), box_proc(2, 8.0)], 10.0, "sigterm")
    assert (v.check, v.status) == ("runtime_gone_within[sigterm]", HOLDS)


@pytest.mark.parametrize("ended_s", [None, 12.0])
def test_runtime_gone_within_violated_by_a_late_or_running_process(ended_s):
    v = registered("runtime_gone_within")([box_proc(1, 2.5), box_proc(2, ended_s)], 10.0,
                                          "sigterm")
    assert v.status == VIOLATED
    assert "boxlite-shim[2]" in v.summary


def test_runtime_gone_within_unknown_without_processes():
    assert registered("runtime_gone_within")([], 10.0, "sigterm").status == UNKNOWN


def test_no_orphans_holds():
    assert registered("no_orphans")([box_proc(1), box_proc(2)]).status == HOLDS


def test_no_orphans_violated_by_an_orphan():
    v = registered("no_orphans")([box_proc(1), box_proc(2, 3.0, orphan=True)])
    assert v.status == VIOLATED
    assert "boxlite-shim[2]" in v.summary


def test_no_orphans_unknown_without_processes():
    assert registered("no_orphans")([]).status == UNKNOWN


# -- crashing checks ------------------------------------------------------------------------

def test_a_crashing_check_says_unknown():
    v = checks.record_failed(None, "timeout")               # type: ignore[arg-type]
    assert v.status == UNKNOWN
    assert v.check == "record_failed"
    assert "AttributeError" in v.evidence["error"]
    v = checks.record_failed(None, "timeout", check_id="record_failed[mine]")  # type: ignore
    assert (v.check, v.status) == ("record_failed[mine]", UNKNOWN)
    # A ledger record that lacks its fields.
    v = checks.no_zombies([{"pid": 1}], samples=3)
    assert v.status == UNKNOWN and "KeyError" in v.summary


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_garbage_input_never_holds(name):
    fn = CHECKS[name]
    params = [p for p in inspect.signature(fn).parameters.values()
              if p.default is inspect.Parameter.empty
              and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    v = fn(*(object() for _ in params))
    assert isinstance(v, Verdict)
    assert v.status in (UNKNOWN, VIOLATED), (name, v)


# -- every check has a violating self-test ---------------------------------------------------

VIOLATING: dict[str, Callable[[], Verdict]] = {
    "record_failed": lambda: checks.record_failed(store(status="configured"), "timeout"),
    "read_paths_agree": lambda: checks.read_paths_agree([live("configured"), store()], "live"),
    "timeout_evidence": lambda: checks.timeout_evidence(None, 100),
    "no_zombies": lambda: checks.no_zombies([zombie(5, 0.0, LASTING)], samples=30),
    "nothing_left_running": lambda: checks.nothing_left_running([proc(5)], observed=1),
    "faults_healed": lambda: checks.faults_healed([{"fault": "f", "injected": True,
                                                    "healed": False, "heal_error": None}]),
    "op_failed_cleanly": lambda: checks.op_failed_cleanly("start", None, host_alive=True),
    "transition_allowed": lambda: checks.transition_allowed(
        "start", "failed", {"type": "EngineError", "message": "cannot start a failed box"},
        ran=False),
    "record_final": lambda: checks.record_final(live("configured")),
    "store_integrity": lambda: checks.store_integrity("row 1 missing from index box_state_status"),
    "records_settled": lambda: checks.records_settled([{"id": "b", "status": "stopping"}]),
    "home_consistent": lambda: checks.home_consistent(["ghost"], []),
    "image_cache_usable": lambda: checks.image_cache_usable(None, "shim_spawned", "boom"),
    "box_gone": lambda: checks.box_gone([store("failed")], False, False, []),
    "acked_records_durable": lambda: checks.acked_records_durable([1, 2], ["rec 1"]),
    "within_bound": lambda: checks.within_bound("stop", 31.0, 30.0),
    "runtime_gone_within": lambda: registered("runtime_gone_within")([box_proc(1, None)], 10.0,
                                                                     "sigterm"),
    "no_orphans": lambda: registered("no_orphans")([box_proc(1, orphan=True)]),
    "no_growth": lambda: checks.no_growth("fds", [(i, 2 * i) for i in range(6)], 0.5),
    "ledger_settled": lambda: checks.ledger_settled({"fds": 1}, {"fds": 9},
                                                    {"fds": RULES["fds"]}),
    "owner_wait": lambda: checks.owner_wait(3, 0, None),
    # Holding and unknown cases: tests/test_disks_check.py.
    "disks_follow_record": lambda: registered("disks_follow_record")(store(present=False),
                                                                     ["disk.qcow2"]),
}


def violating_cases_in_every_test_file() -> dict[str, Callable[[], Verdict]]:
    """This file's VIOLATING, plus a VIOLATING dict of any other tests/test_*.py."""
    cases = dict(VIOLATING)
    here = Path(__file__).resolve()
    for path in sorted(here.parent.glob("test_*.py")):
        if path == here or "VIOLATING" not in path.read_text():
            continue
        spec = importlib.util.spec_from_file_location(f"_selftest_{path.stem}", path)
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        cases.update(getattr(mod, "VIOLATING", {}))
    return cases


@pytest.mark.parametrize("name", sorted(VIOLATING))
def test_violating_case(name):
    v = VIOLATING[name]()
    assert v.status == VIOLATED, v
    assert v.check.split("[")[0] == name


def test_every_registered_check_has_a_violating_self_test():
    missing = set(CHECKS) - set(violating_cases_in_every_test_file())
    assert not missing, f"checks without a violating self-test: {sorted(missing)}"
    for name, fn in CHECKS.items():
        assert fn.check_name == name


def test_the_meta_test_catches_a_check_without_a_self_test():
    @checks.check("selftest_probe_without_cases")
    def probe() -> Verdict:
        return Verdict("selftest_probe_without_cases", HOLDS)

    try:
        assert "selftest_probe_without_cases" in set(CHECKS) - set(
            violating_cases_in_every_test_file())
    finally:
        del CHECKS["selftest_probe_without_cases"]


def test_a_refused_transition_is_named_in_the_runtime_words():
    refused = {"type": "EngineError", "message": "box is in state Failed; cannot start"}
    v = checks.transition_allowed("start", "failed", refused, ran=False)
    assert (v.check, v.status) == ("transition_allowed[start.failed]", VIOLATED)
    assert "cannot start" in v.summary
    # The path ran and then failed (its shim was killed again): the transition was taken.
    crashed = {"type": "EngineError", "message": "The VM failed to start."}
    assert checks.transition_allowed("start", "failed", crashed, ran=True).status == HOLDS
    assert checks.transition_allowed("remove", "failed", None, ran=True).status == HOLDS
    assert checks.transition_allowed("remove", "failed", None, ran=False).status == UNKNOWN
    assert checks.transition_allowed("remove", "failed", None, True,
                                     host_alive=False).status == VIOLATED
