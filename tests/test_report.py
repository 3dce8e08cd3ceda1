"""The report of a synthetic run folder: summary.json keeps its fields, report.html is one
offline file with a timeline image per scenario, links the kept artifacts, groups the known
failures seen by table entry with their reasons, lists unknown verdicts, and shows the rip-out
matrix, soak trends and repeat-run flakes when present."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from harness.jobs.repeat.stability import build_stability
from harness.judge.known import KnownFailure
from harness.observe.history import History, read_history
from harness.report import build
from harness.report.timeline import build_timeline, last_run

PASSING = "scenarios/init/test_a.py::test_passes"
FAILING = "scenarios/init/test_b.py::test_fails[exit]"
KILLED = "scenarios/init/test_c.py::test_harness_was_killed"
KNOWN = KnownFailure("stale-get-info", "record_failed[live.get_info]", SpecifierSet("==0.10.8"),
                     "*", "get_info answers from the live handle's cached state", "evidence")


def history_events(box: str) -> list[tuple[float, str, dict]]:
    """A shim-crash scenario on the history's clock: start, kill, failure, restart, reads."""
    return [
        (0.01, "invoke", {"host": "host1", "op": "host_start", "pid": 10}),
        (0.10, "ok", {"host": "host1", "op": "host_start", "pid": 10}),
        (0.10, "invoke", {"host": "host1", "op": "create", "req": 1, "args": {}}),
        (0.11, "ok", {"host": "host1", "op": "create", "req": 1, "result": {"id": box}}),
        (0.11, "invoke", {"host": "host1", "op": "start", "req": 2, "args": {"box_id": box}}),
        (0.20, "observe", {"what": "processes", "count": 3, "kinds": {}, "zombies": []}),
        (0.40, "fault", {"fault": "freeze_box", "box": box, "pids": [1, 2]}),
        (2.40, "heal", {"fault": "freeze_box", "box": box, "pids": [1, 2], "error": None}),
        (2.50, "fault", {"fault": "kill_shim", "box": box, "pid": 2}),
        (3.00, "fail", {"host": "host1", "op": "start", "req": 2,
                        "error": {"type": "EngineError", "message": "failed to start"}}),
        (3.10, "observe", {"what": "processes", "count": 1, "kinds": {},
                           "zombies": [{"pid": 2}]}),
        (3.20, "invoke", {"host": "host1", "op": "exit", "req": 3, "args": {}}),
        (3.30, "observe", {"host": "host1", "what": "host_exit", "returncode": 0}),
        (3.30, "invoke", {"host": "host2", "op": "host_start", "pid": 11}),
        (3.40, "ok", {"host": "host2", "op": "host_start", "pid": 11}),
        (3.40, "invoke", {"host": "host2", "op": "get_info", "req": 1,
                          "args": {"box_id": box}}),
        (3.41, "ok", {"host": "host2", "op": "get_info", "req": 1, "result": None}),
        (3.50, "meta", {"event": "call_done", "wall_s": 3.5}),
    ]


def write_history(path: Path, scenario: str, events) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [{"t": 0.0, "kind": "meta", "event": "open", "scenario": scenario,
              "runtime": "boxlite==0.10.8"}]
    lines += [{"t": t, "kind": kind, **fields} for t, kind, fields in events]
    path.write_text("".join(json.dumps(e) + "\n" for e in lines))


def judgement(check: str, outcome: str, known: str | None = None) -> dict:
    status = {"pass": "holds", "fixed": "holds"}.get(outcome, "violated")
    return {"check": check, "status": status, "evidence": {"why": check},
            "summary": f"{check} {status}", "outcome": outcome, "known_failure": known}


@pytest.fixture
def run(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(build, "load_table", lambda: [KNOWN])
    run = tmp_path / "run-1"
    results = []
    for i, (nodeid, outcome, judgements) in enumerate([
            (PASSING, "passed", [judgement("record_failed[store]", "pass"),
                                 judgement("record_failed[live.get_info]", "known",
                                           KNOWN.id)]),
            (FAILING, "failed", [judgement("no_zombies", "fail")])]):
        workdir = run / "scenarios" / f"scenario{i}"
        write_history(workdir / "history.jsonl", nodeid, history_events(f"box{i}"))
        (workdir / "verdicts.json").write_text(json.dumps({
            "scenario": nodeid, "judgements": judgements, "processes": [],
            "samples": [{"t": 0.1 * k, "count": k % 4, "zombies": int(k > 30), "kinds": {}}
                        for k in range(35)]}))
        (workdir / "hosts").mkdir()
        (workdir / "hosts" / "host1.stderr").write_text("")
        results.append({"nodeid": nodeid, "outcome": outcome, "duration_s": 3.5 + i,
                        "runtime": "boxlite==0.10.8", "runtime_version": "0.10.8",
                        "workdir": str(workdir), "judgements": judgements})
    kept = run / "scenarios" / "scenario1" / "artifacts" / "home1" / "logs" / "boxlite.log"
    kept.parent.mkdir(parents=True)
    kept.write_text("log")
    # A harness killed mid-scenario: a history, no verdicts.json, no result line.
    write_history(run / "scenarios" / "scenario2" / "history.jsonl", KILLED,
                  history_events("box2")[:7])
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    return run


def images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_the_report_names_every_scenario_and_draws_each_timeline(run):
    out = build.build_report(run)
    assert out == run / "report.html"
    html = out.read_text()
    for nodeid in (PASSING, FAILING, KILLED):
        assert nodeid in html
    assert '<img src="data:image/png;base64,' in html
    pngs = images(html)
    assert len(pngs) == 3 and all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    assert "incomplete" in html                       # the killed harness's scenario
    # Offline: nothing is fetched from anywhere.
    assert not re.search(r'(src|href)="(https?:)?//', html)


def test_summary_json_keeps_its_fields(run):
    build.build_report(run)
    summary = json.loads((run / "summary.json").read_text())
    assert {"scenarios", "passed", "failed", "known_failures_seen"} <= summary.keys()
    assert (summary["passed"], summary["failed"]) == (1, 1)
    assert [k["id"] for k in summary["known_failures_seen"]] == [KNOWN.id]
    assert summary["unknown"] == []
    assert summary["incomplete"] == [KILLED]
    row = next(r for r in summary["scenarios"] if r["scenario"] == FAILING)
    assert row["failing"] == ["no_zombies"] and row["wall_s"] == 4.5


def test_artifacts_and_histories_are_linked_relative_to_the_run(run):
    html = build.build_report(run).read_text()
    assert 'href="scenarios/scenario1/artifacts/home1/logs/boxlite.log"' in html
    assert 'href="scenarios/scenario0/history.jsonl"' in html
    assert 'href="scenarios/scenario0/hosts/host1.stderr"' in html


@pytest.mark.parametrize("move", [Path.rename, shutil.copytree])
def test_a_moved_or_copied_run_folder_reports_its_own_scenarios(run, tmp_path, move):
    moved = tmp_path / "archived"
    move(run, moved)
    html = build.build_report(moved).read_text()
    assert len(images(html)) == 3 and html.count(">incomplete<") == 1
    assert 'href="scenarios/scenario1/artifacts/home1/logs/boxlite.log"' in html


def test_known_failures_seen_carry_the_tables_reason(run):
    html = build.build_report(run).read_text()
    assert "stale-get-info" in html
    assert "get_info answers from the live handle&#39;s cached state" in html


def test_a_corrupt_history_costs_only_its_timeline(run):
    history = run / "scenarios" / "scenario0" / "history.jsonl"
    history.write_text(history.read_text()[:-20])          # torn last line
    html = build.build_report(run).read_text()
    assert "line 19 is not valid JSON (truncated" in html
    assert len(images(html)) == 2


SHUTDOWN = KnownFailure(
    "shutdown-skips-starting-box", "box_stopped[*]", SpecifierSet("<=0.10.8"), ("*",),
    "runtime.shutdown() does not stop a box whose start() is still in flight: BoxImpl::stop\n"
    "only stops the VM when the box's running state exists. It cancels a token.", "evidence",
    "https://example.invalid/boxlite/issues/1")


def loose(entry: KnownFailure, seen: str) -> object:
    """The entry as the table gives it once entries can be marked not strict (the report
    reads `strict` and `seen` when present, and defaults them before)."""
    return type("Entry", (), {**vars(entry), "strict": False, "seen": seen})()


def add_results(run: Path, *results: dict) -> None:
    with open(run / "results.jsonl", "a") as fh:
        for r in results:
            fh.write(json.dumps({"runtime": "boxlite==0.10.8", "runtime_version": "0.10.8",
                                 "duration_s": 1.0, "workdir": None, **r}) + "\n")


def test_known_failures_are_grouped_by_table_entry(run, monkeypatch):
    monkeypatch.setattr(build, "load_table", lambda: [KNOWN, loose(SHUTDOWN, "3 of 5 runs")])
    extra = "scenarios/host_death/test_d.py::test_shutdown_mid_start"
    unknown = judgement("record_failed[store]", "fail", SHUTDOWN.id)
    unknown.update(status="unknown", summary="the store could not be read: database is locked")
    add_results(run,
                {"nodeid": extra, "outcome": "failed", "judgements": [
                    judgement("box_stopped[shutdown]", "known", SHUTDOWN.id),
                    judgement("box_stopped[remove]", "fixed", SHUTDOWN.id),
                    {**judgement("box_stopped[exit]", "unseen", SHUTDOWN.id),
                     "status": "holds"},
                    judgement("record_failed[live.get_info]", "known", KNOWN.id),
                    unknown]})
    html = build.build_report(run).read_text()
    summary = json.loads((run / "summary.json").read_text())

    assert summary["known_failures_seen"] == [
        {"id": SHUTDOWN.id, "strict": False,
         "reason": "runtime.shutdown() does not stop a box whose start() is still in flight: "
                   "BoxImpl::stop only stops the VM when the box's running state exists.",
         "matches": [{"scenario": extra, "check": "box_stopped[shutdown]", "outcome": "known"},
                     {"scenario": extra, "check": "box_stopped[remove]", "outcome": "fixed"},
                     {"scenario": extra, "check": "box_stopped[exit]", "outcome": "unseen"}]},
        {"id": KNOWN.id, "strict": True,
         "reason": "get_info answers from the live handle's cached state",
         "matches": [{"scenario": PASSING, "check": "record_failed[live.get_info]",
                      "outcome": "known"},
                     {"scenario": extra, "check": "record_failed[live.get_info]",
                      "outcome": "known"}]}]
    # An unknown verdict is not a known failure seen, whatever entry applied to its check.
    assert summary["unknown"] == [
        {"scenario": extra, "runtime": "boxlite==0.10.8", "check": "record_failed[store]",
         "summary": "the store could not be read: database is locked"}]

    assert f"Known runtime bugs seen: {SHUTDOWN.id}, {KNOWN.id}." in html
    assert "not strict" in html and "seen 3 of 5 runs" in html and "full reason" in html
    assert "1 verdict could not be measured" in html
    assert "the store could not be read: database is locked" in html
    assert "Flakes over the repeat runs" not in html          # no stability.json here


def test_an_entry_gone_from_the_table_is_still_named(run, monkeypatch):
    monkeypatch.setattr(build, "load_table", lambda: [])
    build.build_report(run)
    [seen] = json.loads((run / "summary.json").read_text())["known_failures_seen"]
    assert seen["id"] == KNOWN.id and "no longer in the known-failures table" in seen["reason"]


def test_flakes_come_from_the_folders_stability_json(run, tmp_path):
    def results(outcome: str) -> list[dict]:
        return [{"nodeid": FAILING, "outcome": "passed" if outcome == "pass" else "failed",
                 "judgements": [judgement("no_zombies", outcome)]}]
    runs = []
    for i, outcome in enumerate(["pass", "fail", "pass"], start=1):
        runs.append(tmp_path / f"repeat-{i}")
        runs[-1].mkdir()
        add_results(runs[-1], *results(outcome))
    build_stability(run, runs)
    html = build.build_report(run).read_text()
    assert "Flakes over the repeat runs" in html and 'href="stability.html"' in html
    assert "1 flaky check over the repeat runs" in html
    assert "<b>fail</b> in run 2: no_zombies violated" in html


def test_ripout_and_soak_sections_show_placeholders_then_their_data(run):
    html = build.build_report(run).read_text()
    assert "No rip-out run in this folder" in html and "No soak run in this folder" in html
    (run / "ripout.json").write_text(json.dumps([
        {"fix": "failed-state", "runtime": "boxlite==0.10.7", "side": "fix reverted",
         "verdict": "violated", "evidence": {"record": "gone"}}]))
    (run / "soak.json").write_text(json.dumps({
        "seed": 42, "samples": [{"step": i, "processes": 3 + i % 2, "zombies": 0}
                                for i in range(10)]}))
    html = build.build_report(run).read_text()
    assert "failed-state" in html and "fix reverted" in html
    assert "10 samples." in html and "seed" in html
    assert len(images(html)) == 3 + 2                       # + processes, zombies trends


def test_an_unreadable_ripout_file_is_reported_not_fatal(run):
    (run / "ripout.json").write_text("{")
    html = build.build_report(run).read_text()
    assert "ripout.json could not be read" in html


def test_the_timeline_pairs_operations_and_faults():
    events = [{"t": 0.0, "kind": "meta", "event": "open"}] + [
        {"t": t, "kind": kind, **fields} for t, kind, fields in history_events("b")]
    tl = build_timeline(events)
    ops = {(o.host, o.op): o for o in tl.operations}
    assert (ops["host1", "start"].start, ops["host1", "start"].end) == (0.11, 3.0)
    assert ops["host1", "start"].outcome == "fail"
    assert ops["host1", "exit"].outcome == "pending"        # a host leaves without answering
    assert ops["host1", "host_start"].end == 0.10           # paired without a request id
    freeze, kill = tl.faults
    assert (freeze.start, freeze.end, freeze.instant) == (0.40, 2.40, False)
    assert (kill.start, kill.end, kill.instant) == (2.50, None, True)
    assert tl.hosts == ["host1", "host2"] and tl.host_exits == {"host1": 3.30}
    assert tl.processes == [(0.20, 3, 0), (3.10, 1, 1)] and tl.call_done == 3.50


def test_a_history_written_by_the_harness_draws(tmp_path):
    """The real writer's events (not hand-made ones) go through the same path."""
    h = History(tmp_path / "scenarios" / "s" / "history.jsonl", {"scenario": "real"})
    h.append("invoke", host="host1", op="start", req=1, args={})
    h.append("ok", host="host1", op="start", req=1)
    h.close()
    html = build.build_report(tmp_path).read_text()
    assert "real" in html and len(images(html)) == 1


def test_a_folder_left_by_an_earlier_run_is_not_reported(run):
    stale = history_events("old") + [(3.6, "meta", {"event": "outcome", "outcome": "passed"})]
    write_history(run / "scenarios" / "earlier" / "history.jsonl", "scenarios/old.py::t", stale)
    html = build.build_report(run).read_text()
    assert "scenarios/old.py::t" not in html
    assert json.loads((run / "summary.json").read_text())["incomplete"] == [KILLED]


def test_a_rerun_into_the_same_folder_draws_only_the_last_run(run):
    history = run / "scenarios" / "scenario0" / "history.jsonl"
    with open(history, "a") as fh:         # History opens in append mode
        for e in [{"t": 0.0, "kind": "meta", "event": "open", "scenario": PASSING},
                  {"t": 0.5, "kind": "invoke", "host": "host9", "op": "create", "req": 1}]:
            fh.write(json.dumps(e) + "\n")
    tl = build_timeline(last_run(read_history(history)))
    assert [(o.host, o.op) for o in tl.operations] == [("host9", "create")]
    assert len(images(build.build_report(run).read_text())) == 3


def test_the_run_s_seed_and_machine_facts_head_the_report(run):
    from harness.session.facts import machine_facts
    facts = {"seed": 4242, "exploring": False, "runtime": "boxlite==0.10.8",
             "machine": machine_facts({"spec": "boxlite==0.10.8", "version": "0.10.8",
                                       "wheel_sha256": "0123456789abcdef" * 4})}
    (run / "run.json").write_text(json.dumps(facts))
    html = build.build_report(run).read_text()
    assert "Seed 4242" in html and "wheel sha256 0123456789abcdef" in html
    assert f"{facts['machine']['cores']} cores" in html
    summary = json.loads((run / "summary.json").read_text())
    assert summary["run"]["machine"]["kernel"] == facts["machine"]["kernel"]
    (run / "run.json").write_text("{torn")
    assert "run.json could not be read" in build.build_report(run).read_text()


def test_many_timelines_are_drawn_over_processes_each_in_its_place(monkeypatch):
    """The report's last serial step spread over one process per core: every picture comes
    back in its job's place, and one that cannot be drawn says why without costing others."""
    from harness.report import plots
    events = [{"t": 0.0, "kind": "meta", "event": "open"}] + [
        {"t": t, "kind": kind, **fields} for t, kind, fields in history_events("b")]
    good = build_timeline(events)
    bad = build_timeline(events)
    bad.end = "never"       # timeline_png cannot draw this one
    monkeypatch.setattr(plots.os, "cpu_count", lambda: 2)
    jobs = [(good, None)] * plots.PER_PROCESS + [(bad, None)] + [(good, None)] * 7
    out = plots.draw_timelines(jobs)
    assert len(out) == len(jobs)
    assert all(png and png.startswith("data:image/png") and err is None
               for png, err in out[:plots.PER_PROCESS] + out[plots.PER_PROCESS + 1:])
    assert out[plots.PER_PROCESS][0] is None and "TypeError" in out[plots.PER_PROCESS][1]
    # Drawn in this process, the same pictures.
    assert plots.draw_timelines(jobs[:2]) == out[:2]
