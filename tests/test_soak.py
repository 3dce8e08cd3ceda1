"""The soak's own pieces without a micro-VM: its checks (each with a violating case, collected
by tests/test_checks.py's meta-test), trend verdicts by within-host slope — a deliberately
leaking host process makes them fail —, delta debugging, the progress line, the command line,
and that a soak's history is a schedule `boxlite-chaos repro` understands."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.common.wait import Deadline
from harness.jobs.repro.schedule import extract_schedule
from harness.jobs.soak import checks as soak_checks
from harness.jobs.soak import cli, driver, machine, model, probes, shrink, trends
from harness.judge.checks import HOLDS, UNKNOWN, VIOLATED, Verdict
from harness.observe.records import RecordRead


def read(path: str = "stopped.get_info", status: str | None = "stopped",
         error: str | None = None) -> RecordRead:
    return RecordRead(path, status is not None and error is None, status, error=error)


def box(label: str = "b1", state: str = "failed", age_s: float = 20.0,
        may_run: bool = False, box_id: str = "ID1") -> dict:
    return {"label": label, "id": box_id, "state": state, "age_s": age_s, "may_run": may_run}


PROC = {"pid": 1234, "name": "libkrun VM", "kind": "vm"}


# -- status_as_modelled ---------------------------------------------------------------------------

def test_status_as_modelled_holds_for_an_allowed_status_and_for_absence():
    held = soak_checks.status_as_modelled(read(), ("configured", "stopped"), "stopped")
    assert held.status == HOLDS
    gone = soak_checks.status_as_modelled(read("removed.list_info", None), (None,), "removed")
    assert gone.status == HOLDS and gone.check == "status_as_modelled[removed.list_info]"


def test_status_as_modelled_flags_a_failed_record_overwritten_by_stop():
    v = soak_checks.status_as_modelled(read("store.stopped", "configured"), ("stopped", "failed"),
                                "stopped")
    assert v.status == VIOLATED
    assert "'configured'" in v.summary and "stopped" in v.summary


def test_a_transitional_status_is_allowed_only_within_its_bound():
    r = read("interrupted.get_info", "stopping")
    within = soak_checks.status_as_modelled(r, model.AFTER_INTERRUPT, "interrupted", 3.0,
                                     model.TRANSITIONAL, 10.0)
    past = soak_checks.status_as_modelled(r, model.AFTER_INTERRUPT, "interrupted", 12.0,
                                   model.TRANSITIONAL, 10.0)
    assert within.status == HOLDS
    assert past.status == VIOLATED and "past the 10s bound" in past.summary


def test_status_as_modelled_is_unknown_when_the_path_cannot_be_read():
    v = soak_checks.status_as_modelled(read(error="no reply"), ("stopped",), "stopped")
    assert v.status == UNKNOWN


# -- op_as_modelled -------------------------------------------------------------------------------

def test_op_as_modelled_holds_for_an_allowed_outcome():
    assert soak_checks.op_as_modelled("create", ["ok"], "ok").status == HOLDS
    v = soak_checks.op_as_modelled("start", ["error"], "error", "starting",
                            {"type": "EngineError", "message": "The VM failed to start."})
    assert v.status == HOLDS and v.check == "op_as_modelled[start]"


def test_op_as_modelled_flags_an_outcome_the_model_does_not_allow_or_an_empty_message():
    assert soak_checks.op_as_modelled("stop", ["ok"], "no reply", "failed").status == VIOLATED
    assert soak_checks.op_as_modelled("start", ["error"], "ok", "starting").status == VIOLATED
    empty = soak_checks.op_as_modelled("start", ["error"], "error", "starting", {"message": " "})
    assert empty.status == VIOLATED and "empty message" in empty.summary


# -- processes_follow_boxes -----------------------------------------------------------------------

def test_processes_follow_boxes_allows_a_start_in_flight_and_a_box_settling():
    v = soak_checks.processes_follow_boxes(
        [box("b1", "starting", 2.0, True, "ID1"), box("b2", "failed", 1.0, False, "ID2")],
        {"ID1": [PROC, PROC], "ID2": [PROC]}, 10.0)
    assert v.status == HOLDS, v.summary
    assert v.evidence["settling"][0]["label"] == "b2"


def test_processes_follow_boxes_flags_a_lingering_box_and_a_stray():
    lingering = soak_checks.processes_follow_boxes([box("b1", "failed", 12.0)], {"ID1": [PROC]},
                                                   10.0)
    assert lingering.status == VIOLATED and "b1 (failed for 12.0s)" in lingering.summary
    stray = soak_checks.processes_follow_boxes([], {"?": [PROC]}, 10.0)
    assert stray.status == VIOLATED and "does not hold" in stray.summary


# -- trends: a leaking host fails them ------------------------------------------------------------

LEAKER = """
import sys
held = []
for line in sys.stdin:                     # one descriptor more per line: a leaking host
    held.append(open("/dev/null"))
    print("ok", flush=True)
"""


@pytest.fixture
def leaking_host():
    proc = subprocess.Popen([sys.executable, "-c", LEAKER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    yield proc
    proc.kill()
    proc.wait()


def steps_of(proc: subprocess.Popen, host_gen: int, first_step: int, n: int) -> list[dict]:
    """Sample the host as the soak does after each of `n` steps; each step leaks one fd."""
    out = []
    for i in range(n):
        proc.stdin.write("step\n")
        proc.stdin.flush()
        proc.stdout.readline()
        out.append({"step": first_step + i, "t": float(first_step + i), "host_gen": host_gen,
                    **probes.host_probe(proc.pid)})
    return out


def by_metric(verdicts: list[Verdict]) -> dict[str, Verdict]:
    return {v.check: v for v in verdicts}


def test_a_leaking_host_fails_the_fd_trend_verdict(leaking_host):
    samples = steps_of(leaking_host, 1, 1, 30)
    v = by_metric(trends.trend_verdicts(samples))["no_growth[host_fds]"]
    assert v.status == VIOLATED, v.summary
    assert v.evidence["slope"] == pytest.approx(1.0, abs=0.05)


def test_a_leak_that_restarts_with_each_host_still_fails_while_a_steady_host_holds(
        leaking_host):
    # Two host lives of the same leaker (a fresh process each time): the sawtooth's drop at
    # the restart must not hide the growth within each life.
    first = steps_of(leaking_host, 1, 1, 25)
    second_proc = subprocess.Popen([sys.executable, "-c", LEAKER], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
    try:
        second = steps_of(second_proc, 2, 26, 25)
    finally:
        second_proc.kill()
        second_proc.wait()
    assert first[-1]["host_fds"] > second[0]["host_fds"]          # the restart's drop
    v = by_metric(trends.trend_verdicts(first + second))["no_growth[host_fds]"]
    assert v.status == VIOLATED and v.evidence["segments"] == 2, v.summary

    steady = [{**s, "host_fds": 20 + (s["step"] % 3)} for s in first + second]
    assert by_metric(trends.trend_verdicts(steady))["no_growth[host_fds]"].status == HOLDS


def test_warm_up_samples_do_not_count_as_growth():
    # A host that opens 30 descriptors over its first steps and then holds steady.
    samples = [{"step": i, "host_gen": 1, "host_fds": min(11 + 3 * i, 41)} for i in range(40)]
    assert by_metric(trends.trend_verdicts(samples))["no_growth[host_fds]"].status == HOLDS
    no_warmup = trends.trend_verdicts(samples, warmup=0)
    assert by_metric(no_warmup)["no_growth[host_fds]"].status == VIOLATED


def test_a_trend_without_enough_samples_is_unknown():
    v = by_metric(trends.trend_verdicts([{"step": i, "zombies": 0} for i in range(8)]))
    assert v["no_growth[zombies]"].status == UNKNOWN
    assert v["no_growth[host_fds]"].status == UNKNOWN          # never sampled at all


# -- judging over a run -------------------------------------------------------------------------

class StubChaos:
    """What Tally reads of a Chaos: the runtime's version, the table, history and judgements."""

    def __init__(self) -> None:
        from packaging.specifiers import SpecifierSet

        from harness.judge.known import KnownFailure
        self.env = SimpleNamespace(version="0.10.8")
        self.node_id = "soak"
        self.known = [KnownFailure("race", "box_gone[force_removed]", SpecifierSet("==0.10.8"),
                                   ("soak",), "a race", "seen")]
        self.events: list[dict] = []
        self.history = SimpleNamespace(append=lambda kind, **f: self.events.append(f))
        self.judgements: list = []
        self.witnessed: dict = {}


def gone(status: str) -> Verdict:
    return Verdict("box_gone[force_removed]", status, {}, status)


def test_a_known_race_that_showed_once_is_not_fixed_where_it_missed():
    chaos = StubChaos()
    tally = model.Tally(chaos)
    for status in (HOLDS, VIOLATED, HOLDS, HOLDS):
        tally.judge(gone(status), "b1")
    tally.settle()
    assert [j.outcome for j in chaos.judgements] == ["known"]
    assert tally.violations() == 0 and tally.failing() == []


def test_a_known_failure_that_never_showed_in_the_run_is_fixed():
    chaos = StubChaos()
    tally = model.Tally(chaos)
    for _ in range(3):
        tally.judge(gone(HOLDS), "b1")
    assert chaos.judgements == []                  # not before the run is over
    tally.settle()
    assert [j.outcome for j in chaos.judgements] == ["fixed"]
    assert tally.violations() == 3 and tally.failing()[0]["outcome"] == "fixed"


def test_a_failure_is_judged_at_once_written_once_per_change_and_stops_a_replay():
    chaos = StubChaos()
    tally = model.Tally(chaos)
    v = soak_checks.op_as_modelled("stop", ["ok"], "no reply", "failed")
    tally.judge(v, "b1")
    tally.judge(v, "b1")
    assert [j.outcome for j in chaos.judgements] == ["fail"] and len(chaos.events) == 1
    with pytest.raises(model.Reproduced):
        model.Tally(StubChaos(), stop_on=["op_as_modelled[stop]"]).judge(v, "b1")


# -- shrinking ------------------------------------------------------------------------------------

def test_ddmin_finds_the_steps_a_failure_needs():
    steps = list(range(40))
    calls = []

    def fails(candidate):
        calls.append(len(candidate))
        return {3, 17, 18}.issubset(candidate)

    assert shrink.ddmin(steps, fails, Deadline(60, "shrinking")) == [3, 17, 18]
    assert len(calls) < 80


def test_failures_first_seen_together_shrink_as_one_target_and_trends_do_not_shrink():
    def f(check, step, subject="b2", outcome="fail"):
        return {"check": check, "outcome": outcome, "step": step, "subject": subject}
    failing = [f("record_failed[store]", 10), f("status_as_modelled[stopped.get_info]", 11),
               f("status_as_modelled[stopped.list_info]", 11), f("no_growth[host_fds]", 500, "run"),
               f("status_as_modelled[created.get_info]", 12, outcome="fixed")]
    assert [t["checks"] for t in shrink.shrink_targets(failing)] == [
        ["record_failed[store]"],
        ["status_as_modelled[stopped.get_info]", "status_as_modelled[stopped.list_info]"]]


def test_ddmin_stops_at_its_deadline_with_what_it_has():
    steps = list(range(10))
    assert shrink.ddmin(steps, lambda c: True, Deadline(0, "no time")) == steps


# -- progress, budget, command line ---------------------------------------------------------------

def test_the_progress_line_is_redrawn_on_a_terminal_and_printed_whole_elsewhere():
    world = SimpleNamespace(t0=0.0, boxes={}, faults={"kill_shim": 2}, cycles=3,
                            schedule=[{}] * 7, tally=model.Tally(SimpleNamespace()))
    line = driver.progress_line(world, driver.Budget(cycles=5))
    assert "step 7 cycles 3" in line and "faults kill_shim 2" in line and "2 cycles left" in line
    tty, log = io.StringIO(), io.StringIO()
    on_tty = driver.Progress(tty, tty=True)         # rich redraws the line in place
    on_tty.update("soak 0:01 | step 1", force=True)
    on_tty.update(line, force=True)
    on_tty.close()
    assert "step 7 cycles 3" in tty.getvalue() and "\x1b[" in tty.getvalue()
    plain = driver.Progress(log, tty=False, every_s=3600)
    plain.update(line)
    plain.update("soak 0:02 | step 8")          # within every_s: not printed
    assert log.getvalue() == line + "\n"


def test_budget_by_time_or_by_cycles():
    assert driver.Budget(duration_s=60).spent(61, 0)
    assert not driver.Budget(duration_s=60).spent(10, 999)
    assert driver.Budget(cycles=5).spent(1, 5) and driver.Budget(cycles=5).left(0, 2) == \
        "3 cycles left"
    assert driver.Budget(duration_s=3700).left(0, 0) == "1:01:40 left"


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("30m", 1800),
                                           ("1.5h", 5400)])
def test_durations_parse(text, seconds):
    assert cli.parse_duration(text) == seconds


def test_the_soak_subcommand_needs_exactly_one_budget():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd")
    cli.add_parser(sub)
    args = parser.parse_args(["soak", "--cycles", "3", "--seed", "7", "--bench"])
    assert (args.cycles, args.seed, args.bench, args.fn) == (3, 7, True, cli.cmd_soak)
    for bad in (["soak"], ["soak", "--cycles", "3", "--duration", "1m"],
                ["soak", "--duration", "soon"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_every_rule_of_the_machine_is_one_the_driver_weighs():
    machine_rules = {r.function.__name__ for r in machine.SoakMachine.setup_state().rules}
    assert machine_rules == set(model.RULES) == {
        "create", "start", "freeze_shim", "crash_shim", "terminate_host", "kill_host",
        "restart_host", "stop", "remove", "force_remove", "wait"}


# -- a soak's history is a schedule repro replays -------------------------------------------------

def test_a_soak_history_extracts_as_a_replayable_schedule():
    box_id = "AbC123"
    events = [
        {"t": 0.0, "kind": "meta", "event": "open", "scenario": "soak",
         "runtime": "boxlite==0.10.8"},
        {"t": 0.1, "kind": "invoke", "host": "host1", "op": "host_start", "pid": 5,
         "flavour": "options,sigterm=graceful", "home": "/r/home1"},
        {"t": 0.2, "kind": "ok", "host": "host1", "op": "host_start", "pid": 5},
        {"t": 0.3, "kind": "note", "soak_step": 1, "rule": "create", "box": "b1"},
        {"t": 0.3, "kind": "invoke", "host": "host1", "op": "create", "req": 1,
         "args": {"options": {"rootfs_path": "/x", "auto_remove": False}, "name": "b1"}},
        {"t": 0.4, "kind": "ok", "host": "host1", "op": "create", "req": 1,
         "result": {"id": box_id}},
        {"t": 0.5, "kind": "invoke", "host": "host1", "op": "start", "req": 2,
         "args": {"box_id": box_id}},
        {"t": 1.0, "kind": "fault", "fault": "kill_shim", "box": box_id, "pid": 77},
        {"t": 1.6, "kind": "fail", "host": "host1", "op": "start", "req": 2,
         "error": {"type": "EngineError", "message": "The VM failed to start."}},
        {"t": 1.7, "kind": "fault", "host": "host1", "fault": "signal_host",
         "signal": "SIGKILL", "pid": 5},
        {"t": 1.8, "kind": "observe", "host": "host1", "what": "host_exit", "returncode": -9},
        {"t": 1.9, "kind": "invoke", "host": "host2", "op": "host_start", "pid": 6,
         "flavour": "options,sigterm=graceful", "home": "/r/home1"},
        {"t": 2.0, "kind": "invoke", "host": "host2", "op": "list_info", "req": 1, "args": {}},
        {"t": 2.1, "kind": "verdict", "check": "record_failed[after_restart.list_info]",
         "status": "holds", "evidence": {"expected_cause": "shim_exit"}, "outcome": "pass"},
        {"t": 2.2, "kind": "meta", "event": "call_done"},
    ]
    s = extract_schedule(events)
    actions = [(st.action, st.op) for st in s.steps]
    assert ("fault", "kill_shim") in actions and ("fault", "signal_host") in actions
    homes = {st.home for st in s.steps if st.action == "host_start"}
    assert homes == {"/r/home1"}                       # the restart is on the same home
    assert s.record_check == "record_failed" and s.expected_cause == "shim_exit"


# -- every soak check's violating case (tests/test_checks.py collects VIOLATING from here) --------

VIOLATING: dict[str, Callable[[], Verdict]] = {
    "status_as_modelled": lambda: soak_checks.status_as_modelled(
        read("store.stopped", "configured"), ("stopped", "failed"), "stopped"),
    "op_as_modelled": lambda: soak_checks.op_as_modelled("stop", ["ok"], "no reply", "failed"),
    "processes_follow_boxes": lambda: soak_checks.processes_follow_boxes([box(age_s=30.0)],
                                                                  {"ID1": [PROC]}),
}


@pytest.mark.parametrize("name", sorted(VIOLATING))
def test_violating_case(name):
    v = VIOLATING[name]()
    assert v.status == VIOLATED, v
    assert v.check.split("[")[0] == name


# -- probes ---------------------------------------------------------------------------------------

def test_disk_usage_skips_what_it_is_told_and_counts_allocated_blocks(tmp_path: Path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "big.log").write_bytes(b"x" * 200_000)
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "store").write_bytes(b"y" * 100_000)
    with open(tmp_path / "sparse.img", "wb") as fh:          # 1 GiB apparent, nothing written
        fh.truncate(2**30)
    whole = probes.disk_kib(tmp_path)
    without_logs = probes.disk_kib(tmp_path, skip=("logs",))
    assert whole - without_logs >= 190
    assert 90 <= without_logs < 1024


def test_box_processes_and_zombies_see_only_what_is_below_the_root():
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert probes.box_processes(child.pid) == {}          # sleep has no runtime children
        assert probes.zombie_count(child.pid) == 0
    finally:
        child.kill()
        child.wait()


def test_a_soak_too_short_to_fit_a_slope_is_unknown_not_violated():
    # 16 samples: 6 past the warm-up, the host opening one descriptor once among them. Its
    # slope (0.26 per step) is above the 0.1 bound, yet one change is no trend.
    samples = [{"step": i, "host_gen": 1, "host_fds": 20 + (i >= 13)} for i in range(16)]
    pts, _ = trends.within_segments(samples, "host_fds", "host_gen")
    assert trends.checks.no_growth("host_fds", pts, 0.1).status == VIOLATED   # slope alone
    v = by_metric(trends.trend_verdicts(samples))["no_growth[host_fds]"]
    assert v.status == UNKNOWN, v.summary
    assert "too short to fit a slope" in v.summary and "single change of 1" in v.summary
    assert v.evidence["one_change_slope"] > 0.1 and v.evidence["points"] == 6
    # Short host lives pool no better: three of 13 samples each, one change in one of them.
    lives = [{"step": 13 * g + i, "host_gen": g, "host_fds": 20 + (g == 1 and i > 11)}
             for g in range(3) for i in range(13)]
    assert by_metric(trends.trend_verdicts(lives))["no_growth[host_fds]"].status == UNKNOWN


def test_a_soak_long_enough_judges_its_slope_both_ways():
    # 60 samples: one change of one descriptor is within the bound, a steady leak is not.
    once = [{"step": i, "host_gen": 1, "host_fds": 20 + (i >= 35), "zombies": 0}
            for i in range(60)]
    assert trends.one_step_slope(trends.centred_segments(once, "host_fds", "host_gen")) <= 0.1
    assert by_metric(trends.trend_verdicts(once))["no_growth[host_fds]"].status == HOLDS
    leak = [{"step": i, "host_gen": 1, "host_fds": 20 + i // 5} for i in range(60)]
    v = by_metric(trends.trend_verdicts(leak))["no_growth[host_fds]"]
    assert v.status == VIOLATED and v.evidence["slope"] == pytest.approx(0.2, abs=0.02)
    # Zombies and leftover folders (bound 0.01 per step) need far longer runs than 60 steps.
    v = by_metric(trends.trend_verdicts(once))["no_growth[zombies]"]
    assert v.status == UNKNOWN and "too short to fit a slope" in v.summary
