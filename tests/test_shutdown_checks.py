"""Self-tests of the shutdown checks and measurements in harness/shutdown.py: each check
holding, violated and unknown; how a run's measurements become verdicts; orphan detection from
the ledger's own records; the benchmark's percentiles and its CLI."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Callable

import pytest

from harness.jobs.bench.shutdown import add_parser, percentile, render_table, summarize
from harness.judge.checks import HOLDS, UNKNOWN, VIOLATED, Verdict
from harness.judge.known import KNOWN, PASS, judge, load_table
from harness.observe.processes import ProcessLedger, ProcRecord
from harness.scenario.context import WATCHDOG_BOUND_S
from harness.scenario.shutdown import (
    CASES,
    SHUTDOWN_BOUND_S,
    STATES,
    BoxUnderTest,
    ShutdownRun,
    ended_at,
    no_orphans,
    plan,
    ran_orphaned,
    runtime_gone_within,
    start_reached_shim,
)

ROOT = 4242


def proc(pid: int = 10, ended_s: float | None = 0.5, *, kind: str = "shim",
         adopted: bool = False, adopted_zombie: bool = False, frozen: bool = False) -> dict:
    """A box process as signal_host reports it (`adopted`: adopted while still running)."""
    return {"pid": pid, "name": {"shim": "boxlite-shim", "vm": "libkrun VM"}.get(kind, kind),
            "kind": kind, "box": "hung2", "frozen": frozen, "adopted": adopted,
            "adopted_zombie": adopted_zombie, "ended_s": ended_s}


# -- runtime_gone_within --------------------------------------------------------------------

def test_runtime_gone_within_holds_when_every_process_ended_in_time():
    v = runtime_gone_within([proc(1, 0.1), proc(2, 59.9, kind="bwrap")], 60.0, "sigterm")
    assert v.status == HOLDS, v.summary
    assert v.check == "runtime_gone_within[sigterm]"
    assert v.evidence["last_ended_s"] == 59.9


def test_runtime_gone_within_violated_when_a_process_ended_late():
    v = runtime_gone_within([proc(1, 0.1), proc(2, 61.0)], 60.0, "sigterm")
    assert v.status == VIOLATED
    assert "boxlite-shim[2] at 61.0s" in v.summary
    assert [p["pid"] for p in v.evidence["late"]] == [2]


def test_runtime_gone_within_violated_when_a_process_still_runs():
    v = runtime_gone_within([proc(1, 0.1), proc(3, None, kind="vm")], WATCHDOG_BOUND_S,
                            "host_exit")
    assert v.status == VIOLATED
    assert "1 still running" in v.summary
    assert [p["pid"] for p in v.evidence["still_running"]] == [3]


def test_runtime_gone_within_is_unknown_with_nothing_to_time():
    assert runtime_gone_within([], 60.0, "sigterm").status == UNKNOWN


# -- no_orphans -----------------------------------------------------------------------------

def test_no_orphans_holds_when_none_ran_orphaned():
    # Adopted only as a zombie its dead parent never reaped: it had ended, not an orphan.
    v = no_orphans([proc(1), proc(2, adopted_zombie=True)])
    assert v.status == HOLDS, v.summary
    assert [p["pid"] for p in v.evidence["adopted_zombies"]] == [2]


def test_no_orphans_violated_by_a_process_that_ran_orphaned():
    v = no_orphans([proc(1), proc(2, 0.093, kind="bwrap", adopted=True)])
    assert v.status == VIOLATED
    assert "bwrap[2] of hung2, ended at 0.093s" in v.summary


def test_no_orphans_is_unknown_without_processes():
    assert no_orphans([]).status == UNKNOWN


# -- ran_orphaned: from the ledger's own records ---------------------------------------------

def record(ppids: list[tuple[float, int]], statuses: list[tuple[float, str]]) -> ProcRecord:
    return ProcRecord(10, 1.0, "bwrap", ppids[-1][1], "bwrap", 0.0, 9.0,
                      statuses=statuses, ppids=ppids, adopted=ppids[-1][1] == ROOT)


def test_a_process_running_when_adopted_ran_orphaned():
    r = record([(0.1, 77), (2.0, ROOT)], [(0.1, "sleeping"), (2.1, "zombie")])
    assert ran_orphaned(r, ROOT)


def test_a_zombie_adopted_from_its_dead_parent_counts_too():
    # The host exited without reaping it: adopted by the harness all the same.
    r = record([(0.1, 77), (2.0, ROOT)], [(0.1, "sleeping"), (1.5, "zombie")])
    assert ran_orphaned(r, ROOT)


def test_a_process_never_adopted_did_not_run_orphaned():
    assert not ran_orphaned(record([(0.1, 77)], [(0.1, "running")]), ROOT)


# -- ended_at: when the ledger saw a process end -----------------------------------------------

class Ledger(ProcessLedger):
    """A ledger whose processes are alive as the test says (no real processes)."""

    def __init__(self, running: set[int]) -> None:
        super().__init__(root_pid=ROOT, interval_s=0.1, clock=lambda: 100.0)
        self.running = running

    def alive(self, rec: ProcRecord) -> bool:
        return rec.pid in self.running


def seen(pid: int, last_seen: float, zombie_since: float | None = None,
         gone_at: float | None = None) -> ProcRecord:
    return ProcRecord(pid, 1.0, "bwrap", 77, "bwrap", 0.0, last_seen,
                      zombie_since=zombie_since, gone_at=gone_at)


def test_ended_at_is_the_first_sighting_as_a_zombie_or_gone():
    ledger = Ledger(running=set())
    assert ledger.t0 == 100.0
    assert ended_at(ledger, seen(1, 2.0, zombie_since=2.0, gone_at=2.5)) == 102.0
    assert ended_at(ledger, seen(2, 2.0, gone_at=2.1)) == 102.1


def test_ended_at_is_none_while_the_process_runs_whatever_gone_at_says():
    assert ended_at(Ledger(running={1}), seen(1, 3.0, gone_at=2.0)) is None


def test_ended_at_distrusts_a_gone_at_older_than_the_last_sighting():
    # gone_at set by a sample that could not list; seen again at 3.0, gone later.
    assert ended_at(Ledger(running=set()), seen(1, 3.0, gone_at=2.0)) == pytest.approx(103.1)


# -- a run's measurements become verdicts ----------------------------------------------------

def run(case: str, procs: list[dict], exit_s: float | None = 0.04,
        thaw_s: float | None = None) -> ShutdownRun:
    boxes = [BoxUnderTest(f"{s}{i + 1}", s, id=f"id{i}") for i, s in enumerate(plan(3))]
    return ShutdownRun(CASES[case], boxes, exit_s, 0 if exit_s is not None else None, thaw_s,
                       procs, [], [], {}, [])


def statuses(verdicts: list[Verdict]) -> dict[str, str]:
    return {v.check: v.status for v in verdicts}


def test_a_graceful_run_is_judged_on_exit_processes_and_orphans():
    got = statuses(run("runner", [proc(1, 0.03), proc(2, 0.09)]).verdicts())
    assert got == {"within_bound[host_exit_after_sigterm]": HOLDS,
                   "runtime_gone_within[sigterm]": HOLDS, "no_orphans": HOLDS}


def test_a_graceful_host_that_never_exits_is_a_violation():
    got = statuses(run("sdk_default", [proc(1, 61.0)], exit_s=None).verdicts())
    assert got["within_bound[host_exit_after_sigterm]"] == VIOLATED
    assert got["runtime_gone_within[sigterm]"] == VIOLATED


def test_a_graceful_run_with_a_process_that_outlived_the_host_is_a_violation():
    got = statuses(run("runner", [proc(1, 0.093, adopted=True)]).verdicts())
    assert got["no_orphans"] == VIOLATED


@pytest.mark.parametrize("case", ["bare", "sigkill"])
def test_an_ungraceful_run_counts_from_the_exit_and_for_frozen_boxes_from_the_thaw(case):
    # Host gone at 0.01s, frozen box thawed at 0.5s: 0.5 + 9.9 is within the bound from the
    # thaw, though not from the exit; orphans are facts here, not judged.
    procs = [proc(1, 9.0, adopted=True), proc(2, 0.5 + 9.9, frozen=True, adopted=True)]
    vs = run(case, procs, exit_s=0.01, thaw_s=0.5).verdicts()
    assert statuses(vs) == {"runtime_gone_within[host_exit]": HOLDS}
    assert [p["since"] for p in vs[0].evidence["processes"]] == ["host_exit", "thaw"]


def test_an_ungraceful_run_with_a_shim_outliving_the_watchdog_is_a_violation():
    procs = [proc(1, 0.01 + WATCHDOG_BOUND_S + 0.5), proc(2, None, frozen=True)]
    v = run("bare", procs, exit_s=0.01, thaw_s=0.5).verdicts()[0]
    assert v.status == VIOLATED
    assert len(v.evidence["late"]) == 1 and len(v.evidence["still_running"]) == 1


def test_last_gone_is_unmeasured_while_a_process_runs():
    assert run("runner", [proc(1, 0.2), proc(2, 0.4)]).last_gone_s == 0.4
    assert run("runner", [proc(1, 0.2), proc(2, None)]).last_gone_s is None
    assert run("runner", []).last_gone_s is None


def test_facts_name_what_the_signal_left():
    r = run("bare", [proc(1, 3.0, adopted=True), proc(2, 0.0)])
    r.store_at_exit = [{"id": "id0", "status": "running"}, {"id": "id1", "status": "configured"},
                       {"id": "id2", "status": "failed"}]
    facts = r.facts()
    assert facts["states"] == {"initializing1": "initializing", "hung2": "hung",
                               "failed3": "failed"}
    assert [p["pid"] for p in facts["orphans"]] == [1]
    assert facts["unsettled_at_exit"] == ["initializing1"]
    assert facts["records_at_exit"]["hung2"] == "configured"
    assert facts["processes_at_signal"] == {"shim": 2}


# -- cases and the known-failures table ------------------------------------------------------

def test_cases_say_which_signal_runs_a_shutdown():
    assert {n: c.graceful for n, c in CASES.items()} == {
        "runner": True, "sdk_default": True, "bare": False, "sigkill": False}
    assert CASES["sigkill"].sig == signal.SIGKILL
    assert {n: c.moment for n, c in CASES.items()} == {
        "runner": "after_shutdown", "sdk_default": "after_shutdown", "bare": "after_sigterm",
        "sigkill": "after_sigkill"}


def test_the_known_shutdown_bug_applies_to_graceful_record_reads_only():
    table = load_table()
    scenario = "scenarios/shutdown/test_sigterm_shutdown.py::test_x[runner-n3]"
    # As 0.10.8 shows it: the store rewritten 'configured', its reason gone.
    bug = Verdict("record_failed[store.after_shutdown.failed3]", VIOLATED,
                  {"read": {"present": True, "status": "configured", "reason": None}})
    assert judge(bug, "0.10.8", scenario, table).outcome == KNOWN
    kept = Verdict("record_failed[store.after_sigkill.failed3]", HOLDS)
    assert judge(kept, "0.10.8", scenario, table).outcome == PASS


def test_plan_is_round_robin():
    assert plan(1) == ["initializing"]
    assert plan(8) == [*STATES, *STATES, "initializing", "hung"]


# -- benchmark table and CLI -----------------------------------------------------------------

def test_percentile_is_nearest_rank():
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([4.0, 1.0, 2.0, 3.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 21)], 95) == 19.0
    assert percentile([1.0, 9.0], 100) == 9.0


def test_summarize_groups_by_case_and_n_and_counts_what_was_not_measured():
    runs = [{"case": "runner", "n": 1, "exit_s": 0.1, "last_gone_s": 0.2},
            {"case": "runner", "n": 1, "exit_s": 0.3, "last_gone_s": None},
            {"case": "bare", "n": 3, "error": "ArrangementError: x"}]
    rows = summarize(runs)
    assert [(r["case"], r["n"], r["runs"], r["errors"]) for r in rows] == [
        ("runner", 1, 2, 0), ("bare", 3, 1, 1)]
    assert rows[0]["exit_s_p50"] == 0.1 and rows[0]["exit_s_max"] == 0.3
    assert rows[0]["last_gone_s_unmeasured"] == 1 and rows[0]["last_gone_s_max"] == 0.2
    assert rows[1]["exit_s_p50"] is None
    text = render_table(rows)
    assert "runner" in text and "0.100/0.300/0.300" in text and "-/-/-" in text


def test_bench_shutdown_parser_takes_lists_either_way():
    p = argparse.ArgumentParser()
    add_parser(p.add_subparsers(dest="cmd"))
    a = p.parse_args(["bench-shutdown", "--repeats", "2", "--n", "1", "3", "--flavour",
                      "runner,bare"])
    assert a.repeats == 2 and a.n == [[1], [3]] and a.flavour == [["runner", "bare"]]
    assert callable(a.fn)
    d = p.parse_args(["bench-shutdown"])
    assert d.n is None and d.flavour is None and d.repeats == 3


# -- every shutdown check's violating case (tests/test_checks.py collects VIOLATING from here
# for its meta-test, and judges garbage input for every registered check) ------------------

VIOLATING: dict[str, Callable[[], Verdict]] = {
    "runtime_gone_within": lambda: runtime_gone_within([proc(1, SHUTDOWN_BOUND_S + 1)],
                                                       SHUTDOWN_BOUND_S, "sigterm"),
    "no_orphans": lambda: no_orphans([proc(1, adopted=True)]),
    "start_reached_shim": lambda: start_reached_shim(
        "B1", "initializing", {"message": "The VM failed to start."}, []),
}


@pytest.mark.parametrize("name", sorted(VIOLATING))
def test_violating_case(name):
    v = VIOLATING[name]()
    assert v.status == VIOLATED, v
    assert v.check.split("[")[0] == name


def test_a_default_runtime_host_is_not_started_where_it_would_pull_from_docker_io():
    """Boxlite.default() takes no loopback registry: before 0.10 its boxes would pull the guest
    base image from docker.io, so the scenario records `unknown` (which fails the gate) and
    starts nothing; 0.10 and the options flavours run."""
    from harness.runtime.host import RUNNER, SDK_DEFAULT
    from harness.scenario.shutdown import default_host_offline
    v = default_host_offline(SDK_DEFAULT, "0.9.7")
    assert v is not None and v.status == "unknown" and "docker.io" in v.summary
    assert default_host_offline(SDK_DEFAULT, "0.10.0") is None
    assert default_host_offline(RUNNER, "0.9.0") is None


def test_a_start_ended_before_its_shim_is_named():
    v = start_reached_shim("B1", "initializing", {"type": "EngineError",
                           "message": "engine reported an error: The VM failed to start."},
                           ["bwrap: execvp /h/boxes/B1/bin/boxlite-shim: Text file busy"])
    assert (v.check, v.status) == ("start_reached_shim[initializing]", VIOLATED)
    assert "Text file busy" in v.evidence["log"][0]
    assert start_reached_shim("B1", "hung", None, []).status == UNKNOWN
