"""The rip-out machinery: the table loads, each side is judged from a run's results, and an
entry passes only with the fixed side green and the reverted side red on the named check.
Also the self-test of runtime_shutdown_ran, the check the runner entry guards."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.common.errors import SetupError
from harness.jobs.ripout.entries import Entry, Side, entry_passes, judge_side, load_entries
from harness.judge import checks
from harness.judge.checks import HOLDS, UNKNOWN, VIOLATED, Verdict

ENTRY = Entry("e", "a fix", "", "scenarios/x.py::t", "record_failed[store]",
              Side("boxlite==0.10.8"), Side("boxlite==0.9.4"))


def results(tmp_path: Path, outcome: str, judgements: list[dict]) -> Path:
    p = tmp_path / "results.jsonl"
    p.write_text(json.dumps({"nodeid": "t", "outcome": outcome, "judgements": judgements}) + "\n")
    return p


def j(check: str, status: str, outcome: str = "pass") -> dict:
    return {"check": check, "status": status, "outcome": outcome, "summary": f"{check} {status}"}


def test_the_real_table_loads_with_four_entries():
    ids = {e.id for e in load_entries()}
    assert {"failed-state-record", "timeout-evidence-block", "runner-sigterm-shutdown",
            "no-global-reaper"} <= ids


def test_a_reverted_wheel_replaces_the_prefix_release_only(tmp_path):
    wheel = tmp_path / "boxlite-0.10.8-cp311-cp311-linux_x86_64.whl"
    wheel.write_bytes(b"x")
    entries = {e.id: e for e in load_entries(reverted_runtime=f"wheel:{wheel}")}
    assert entries["failed-state-record"].reverted.runtime == f"wheel:{wheel}"
    assert entries["no-global-reaper"].reverted.overrides == ("reaper=global",)
    assert entries["no-global-reaper"].reverted.runtime == entries["no-global-reaper"].fixed.runtime


def test_a_malformed_table_is_a_setup_error(tmp_path):
    bad = tmp_path / "t.toml"
    bad.write_text('[[entry]]\nid = "x"\n')
    with pytest.raises(SetupError, match="entry 1"):
        load_entries(bad)


def test_fixed_side_green_only_when_scenario_passes_and_check_holds(tmp_path):
    r = judge_side(ENTRY, "fixed", "f", results(tmp_path, "passed",
                                                [j("record_failed[store]", "holds")]), 0, 1.0)
    assert r.outcome == "green"
    r = judge_side(ENTRY, "fixed", "f", results(tmp_path, "failed",
                                                [j("record_failed[store]", "holds"),
                                                 j("other", "violated", "fail")]), 1, 1.0)
    assert r.outcome == "not-green" and "other" in r.reason


def test_reverted_side_red_only_with_the_named_check_violated(tmp_path):
    r = judge_side(ENTRY, "reverted", "r", results(tmp_path, "failed",
                                                   [j("record_failed[store]", "violated", "fail")]),
                   1, 1.0)
    assert r.outcome == "red"
    # A different failing check does not count as red.
    r = judge_side(ENTRY, "reverted", "r", results(tmp_path, "failed",
                                                   [j("record_failed[store]", "holds"),
                                                    j("other", "violated", "fail")]), 1, 1.0)
    assert r.outcome == "not-red"
    # Unknown is not red either.
    r = judge_side(ENTRY, "reverted", "r", results(tmp_path, "failed",
                                                   [j("record_failed[store]", "unknown", "fail")]),
                   1, 1.0)
    assert r.outcome == "not-red"


def test_a_setup_error_is_neither_green_nor_red(tmp_path):
    r = judge_side(ENTRY, "reverted", "r", tmp_path / "missing.jsonl", 4, 1.0)
    assert r.outcome == "not-red" and "setup error" in r.reason


def test_entry_passes_needs_both_sides():
    rows = [{"entry": "e", "side": "fixed", "verdict": "green"},
            {"entry": "e", "side": "reverted", "verdict": "red"}]
    assert entry_passes(rows, "e")
    rows[1]["verdict"] = "not-red"
    assert not entry_passes(rows, "e")


def test_runtime_shutdown_ran():
    ok = "... INFO boxlite::runtime::rt_impl: Initiating runtime shutdown\n"
    assert checks.runtime_shutdown_ran(ok, 0).status == HOLDS
    assert checks.runtime_shutdown_ran("nothing here", -15).status == VIOLATED
    assert checks.runtime_shutdown_ran(ok, -15).status == VIOLATED
    assert checks.runtime_shutdown_ran(None, 0).status == UNKNOWN
    # Lines after the signal, none of them a shutdown: a runtime that did not shut down.
    other = checks.runtime_shutdown_ran("... INFO boxlite::runtime: something else\n", 0)
    assert (other.check, other.status) == ("runtime_shutdown_ran", VIOLATED)
    # Nothing at all after the signal and exit 0: the lines were lost at exit, under its own
    # id (a non-strict known failure names it); with another exit it is the check itself,
    # as on the rip-out side (sigterm=none: killed by the signal, nothing logged).
    lost = checks.runtime_shutdown_ran("", 0, ["shim.pid of initializing1 deleted"])
    assert (lost.check, lost.status) == ("runtime_shutdown_ran[log_lost]", VIOLATED)
    # Nothing logged and nothing in the home shows a shutdown: one that never ran, plainly red;
    # the home not read: unknown.
    never = checks.runtime_shutdown_ran("", 0, [])
    assert (never.check, never.status) == ("runtime_shutdown_ran", VIOLATED)
    assert checks.runtime_shutdown_ran("", 0).status == UNKNOWN
    killed = checks.runtime_shutdown_ran("", -15)
    assert (killed.check, killed.status) == ("runtime_shutdown_ran", VIOLATED)


VIOLATING: dict[str, Callable[[], Verdict]] = {
    "runtime_shutdown_ran": lambda: checks.runtime_shutdown_ran("", -15),
}
