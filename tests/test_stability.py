"""Stability over repeat runs, from synthetic run folders: outcome counts per scenario and
check, flakes with both sides' evidence, a check absent in one run, a check unknown in one run,
a non-strict known failure's race, the gate per run, the files written, and the errors for a
missing or torn results.jsonl."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.common.errors import SetupError
from harness.jobs.repeat.stability import build_stability, render_stability_table

A = "scenarios/init/test_a.py::test_shim_crash"
B = "scenarios/init/test_b.py::test_guest_hang[exit]"
STORE = "record_failed[store]"
ZOMBIES = "no_zombies"
LIVE = "record_failed[live.get_info]"


def judgement(check: str, outcome: str, status: str | None = None, summary: str = "",
              known: str | None = None) -> dict:
    status = status or {"pass": "holds", "fixed": "holds"}.get(outcome, "violated")
    return {"check": check, "status": status, "evidence": {}, "outcome": outcome,
            "summary": summary or f"{check} {status}", "known_failure": known}


def result(nodeid: str, judgements: list[dict], outcome: str | None = None) -> dict:
    if outcome is None:
        outcome = "failed" if any(j["outcome"] in ("fail", "fixed") for j in judgements) \
            else "passed"
    return {"nodeid": nodeid, "outcome": outcome, "duration_s": 1.0,
            "runtime": "boxlite==0.10.8", "runtime_version": "0.10.8",
            "workdir": f"/tmp/{nodeid}", "judgements": judgements}


def write_runs(folder: Path, *runs: list[dict]) -> list[Path]:
    paths = []
    for i, results in enumerate(runs, start=1):
        run = folder / f"run-{i}"
        run.mkdir(parents=True)
        (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
        paths.append(run)
    return paths


def stable_run() -> list[dict]:
    return [result(A, [judgement(STORE, "pass"), judgement(LIVE, "known", known="stale")]),
            result(B, [judgement(STORE, "pass"), judgement(ZOMBIES, "pass")])]


def row(data: dict, scenario: str, check: str) -> dict:
    [r] = [c for c in data["checks"] if (c["scenario"], c["check"]) == (scenario, check)]
    return r


def test_a_stable_gate_has_no_flakes_and_says_so(tmp_path):
    runs = write_runs(tmp_path, *[stable_run() for _ in range(3)])
    data = build_stability(tmp_path, runs)
    assert data["summary"] == {"runs": 3, "green_runs": 3, "scenarios": 2, "checks_judged": 4,
                               "flakes": 0, "races": 0, "flaky_scenarios": 0}
    assert [(g["gate"], g["green"]) for g in data["runs"]] == [("green", True)] * 3
    assert data["flakes"] == []
    live = row(data, A, LIVE)
    assert live["outcomes"] == {"pass": 0, "fail": 0, "known": 3, "fixed": 0, "unseen": 0,
                                  "unexpected": 0}
    assert live["statuses"] == {"holds": 0, "violated": 3, "unknown": 0}
    assert (live["absent"], live["flake"], live["identical_pass"]) == (0, False, False)
    assert row(data, B, ZOMBIES)["identical_pass"]
    [scen_a, scen_b] = data["scenarios"]
    assert scen_a["scenario"] == A and scen_a["outcomes"]["passed"] == 3 and not scen_a["flake"]

    text = render_stability_table(data)
    assert "no flakes" in text and "FLAKE" not in text
    # A check known in every run is counted, not listed (the HTML page lists it); verbose
    # lists it as one line.
    assert not [line for line in text.splitlines() if "::" in line]
    assert "1 check known (a tabled runtime bug) in every run" in text
    verbose = render_stability_table(data, verbose=True)
    check_lines = [line for line in verbose.splitlines() if "::" in line]
    assert len(check_lines) == 1 and LIVE in check_lines[0] and "K K K" in check_lines[0]
    assert text.splitlines()[-1].startswith("3 runs, 3 green; 2 scenarios, 4 checks judged")


def test_a_flaky_check_carries_the_evidence_of_both_sides(tmp_path):
    flaky = [result(A, [judgement(STORE, "pass"), judgement(LIVE, "known", known="stale")]),
             result(B, [judgement(STORE, "pass"),
                        judgement(ZOMBIES, "fail", summary="zombie pid 4242 outlived 2 s")])]
    runs = write_runs(tmp_path, stable_run(), flaky, stable_run(), flaky)
    data = build_stability(tmp_path, runs)

    assert [g["gate"] for g in data["runs"]] == ["green", "red", "green", "red"]
    assert data["runs"][1]["red_because"] == [f"{B} failed"]
    assert data["summary"]["flakes"] == 1 and data["summary"]["green_runs"] == 2
    [flake] = data["flakes"]
    assert (flake["scenario"], flake["check"]) == (B, ZOMBIES)
    assert data["checks"][0] == flake                      # flakes come first
    assert flake["outcomes"] == {"pass": 2, "fail": 2, "known": 0, "fixed": 0, "unseen": 0,
                                  "unexpected": 0}
    assert flake["per_run"] == ["pass", "fail", "pass", "fail"]
    sides = {s["outcome"]: s for s in flake["sides"]}
    assert sides["pass"]["runs"] == [1, 3] and sides["pass"]["summary"] == "no_zombies holds"
    assert sides["fail"]["runs"] == [2, 4]
    assert sides["fail"]["summary"] == "zombie pid 4242 outlived 2 s"
    scen_b = next(s for s in data["scenarios"] if s["scenario"] == B)
    assert scen_b["outcomes"] == {"passed": 2, "failed": 2, "skipped": 0} and scen_b["flake"]

    text = render_stability_table(data)
    [line] = [line for line in text.splitlines() if ZOMBIES in line]
    assert line.startswith("FLAKE") and "P F P F" in line and "pass 2, fail 2" in line
    assert "gate per run: 1 green, 2 red, 3 green, 4 red" in text
    assert "no flakes" not in text and "1 flake" in text.splitlines()[-1]

    # Both files: the JSON is the returned dict; the HTML highlights the flake, offline.
    assert json.loads((tmp_path / "stability.json").read_text()) == data
    html = (tmp_path / "stability.html").read_text()
    assert 'class="flake"' in html and "zombie pid 4242 outlived 2 s" in html
    assert html.index(ZOMBIES) < html.index(LIVE)
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<script" not in html


def test_a_check_absent_in_one_run_is_a_flake_and_a_scenario_not_run_is_not(tmp_path):
    without_store = [result(A, [judgement(LIVE, "known", known="stale")]),
                     result(B, [judgement(STORE, "pass"), judgement(ZOMBIES, "pass")])]
    without_b = [stable_run()[0]]                          # B did not run at all
    runs = write_runs(tmp_path, stable_run(), without_store, without_b)
    data = build_stability(tmp_path, runs)

    store_a = row(data, A, STORE)
    assert store_a["flake"] and store_a["absent"] == 1 and store_a["not_run"] == 0
    assert store_a["per_run"] == ["pass", "absent", "pass"]
    sides = {s["outcome"]: s for s in store_a["sides"]}
    assert sides["absent"]["runs"] == [2]
    assert sides["absent"]["summary"] == "the scenario ran (passed) without judging this check"
    assert sides["pass"]["runs"] == [1, 3]

    zombies_b = row(data, B, ZOMBIES)                      # absent only where B did not run
    assert (zombies_b["absent"], zombies_b["not_run"], zombies_b["flake"]) == (1, 1, False)
    assert zombies_b["per_run"] == ["pass", "pass", "not run"]
    scen_b = next(s for s in data["scenarios"] if s["scenario"] == B)
    assert scen_b["not_run"] == 1 and scen_b["flake"]      # the scenario itself changed
    assert data["summary"]["flakes"] == 1 and data["summary"]["flaky_scenarios"] == 1

    text = render_stability_table(data)
    [line] = [line for line in text.splitlines() if line.endswith(f"{A}  {STORE}")]
    assert line.startswith("FLAKE") and "P - P" in line
    assert any(line.startswith("FLAKE") and line.endswith("(scenario outcome)")
               and B in line and "P P ." in line for line in text.splitlines())


def test_a_check_unknown_in_one_run(tmp_path):
    unknown = [result(A, [judgement(STORE, "fail", "unknown",
                                    summary="the store could not be read: locked"),
                          judgement(LIVE, "known", known="stale")]),
               stable_run()[1]]
    runs = write_runs(tmp_path, stable_run(), stable_run(), unknown)
    data = build_stability(tmp_path, runs)

    store_a = row(data, A, STORE)
    assert store_a["statuses"] == {"holds": 2, "violated": 0, "unknown": 1}
    assert store_a["outcomes"] == {"pass": 2, "fail": 1, "known": 0, "fixed": 0, "unseen": 0,
                                  "unexpected": 0}
    assert store_a["per_run"] == ["pass", "pass", "unknown"] and store_a["flake"]
    fail = next(s for s in store_a["sides"] if s["outcome"] == "fail")
    assert fail["runs"] == [3] and fail["statuses"] == {"unknown": 1}
    assert fail["summary"] == "the store could not be read: locked"
    assert data["runs"][2]["gate"] == "red"

    text = render_stability_table(data)
    [line] = [line for line in text.splitlines() if line.endswith(f"{A}  {STORE}")]
    assert "P P U" in line and "unknown 1" in line and "pass 2" in line


def test_known_in_some_runs_and_unseen_in_others_is_a_race_not_a_flake(tmp_path):
    """What a non-strict known-failures entry is for: the bug shows on some runs only."""
    unseen = [result(A, [judgement(STORE, "pass"), judgement(LIVE, "unseen", "holds",
                                                             known="stale")]),
              stable_run()[1]]
    data = build_stability(tmp_path, write_runs(tmp_path, stable_run(), unseen, stable_run()))
    live = row(data, A, LIVE)
    assert live["flake"] and live["race"] and live["per_run"] == ["known", "unseen", "known"]
    assert data["flakes"] == [] and data["races"] == [live]
    assert (data["summary"]["flakes"], data["summary"]["races"]) == (0, 1)
    assert data["summary"]["green_runs"] == 3
    text = render_stability_table(data)
    [line] = [line for line in text.splitlines() if line.endswith(f"{A}  {LIVE}")]
    assert line.startswith("race") and "K N K" in line
    assert "no flakes" in text.splitlines()[-1] and "apart from 1 race" in text.splitlines()[-1]


def test_a_check_judged_twice_in_one_scenario_counts_once_by_its_worst(tmp_path):
    twice = [result(A, [judgement(STORE, "pass"), judgement(STORE, "fail"),
                        judgement(LIVE, "known", known="stale")]), stable_run()[1]]
    data = build_stability(tmp_path, write_runs(tmp_path, twice, stable_run()))
    store_a = row(data, A, STORE)
    assert store_a["per_run"] == ["fail", "pass"]
    assert sum(store_a["outcomes"].values()) == 2


def test_a_setup_error_in_junit_makes_the_run_red(tmp_path):
    runs = write_runs(tmp_path, stable_run(), stable_run())
    (runs[1] / "junit.xml").write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest" errors="1" failures="0" '
        'tests="3"/></testsuites>')
    data = build_stability(tmp_path, runs)
    assert [g["gate"] for g in data["runs"]] == ["green", "red"]
    assert "junit.xml counts 1 errors and failures" in data["runs"][1]["red_because"][0]


def test_a_run_folder_without_results_is_named(tmp_path):
    runs = write_runs(tmp_path, stable_run())
    missing = tmp_path / "run-2"
    missing.mkdir()
    with pytest.raises(SetupError, match="no results.jsonl") as exc:
        build_stability(tmp_path, [*runs, missing])
    assert str(missing) in str(exc.value)
    assert not (tmp_path / "stability.json").exists()


@pytest.mark.parametrize("tail", ['{"nodeid": "b", "outc', '["not", "a", "result"]'])
def test_a_torn_or_corrupt_line_is_named_by_file_and_line(tmp_path, tail):
    [run] = write_runs(tmp_path, stable_run())
    path = run / "results.jsonl"
    path.write_text(path.read_text() + tail + "\n")
    with pytest.raises(SetupError) as exc:
        build_stability(tmp_path, [run])
    assert str(path) in str(exc.value) and "line 3" in str(exc.value)


def test_no_runs_is_an_error(tmp_path):
    with pytest.raises(SetupError, match="no runs"):
        build_stability(tmp_path, [])


def test_runs_of_different_or_edited_harness_code_are_flagged(tmp_path):
    import json as _json

    from harness.jobs.repeat.stability import build_stability, render_stability_table
    runs = []
    for i, commit in enumerate(["abc123", "abc123-dirty"], start=1):
        run = tmp_path / f"run-{i}"
        run.mkdir()
        (run / "results.jsonl").write_text(_json.dumps({
            "nodeid": "s::t", "outcome": "passed", "judgements": []}) + "\n")
        (run / "run.json").write_text(_json.dumps({"seed": 7, "machine": {
            "harness_commit": commit}}))
        runs.append(run)
    data = build_stability(tmp_path, runs)
    assert data["same_code"] is False and data["runs"][1]["harness_commit"] == "abc123-dirty"
    assert "WARNING" in render_stability_table(data)
    (runs[1] / "run.json").write_text(_json.dumps({"seed": 7, "machine": {
        "harness_commit": "abc123"}}))
    assert build_stability(tmp_path, runs)["same_code"] is True
