"""The release matrix from synthetic gate folders: cells, ranges (first/last violated, fix
release, a gap), each known-failures entry against what was measured, a runtime that could
not be judged, the files written, run_column with a fake gate process, and the bisect's
search over releases (with skipped probes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from harness.common.errors import SpecError
from harness.common.paths import PROJECT
from harness.jobs.matrix import releases
from harness.jobs.matrix.grid import (
    ABSENT,
    BAD,
    KNOWN,
    NOT_RUN,
    SKIPPED,
    SYMBOL,
    VIOLATIONS,
    Column,
    against_table,
    build_grid,
    cell_of,
    entry_measure,
    render_grid,
    row_ranges,
    rows_from_summary,
)
from harness.jobs.matrix.run import (
    bisect_releases,
    check_verdict,
    run_column,
    scenarios_judging,
    why_not_judged,
    write_matrix,
)
from harness.judge.checks import HOLDS, UNKNOWN, VIOLATED
from harness.judge.known import KnownFailure

A = "scenarios/init/test_shim_crash.py::test_shim_crash[at_spawn]"
B = "scenarios/init/test_guest_hang.py::test_guest_hang[exit]"
STORE = "record_failed[store]"


def j(check: str, status: str, outcome: str | None = None) -> dict:
    outcome = outcome or {"holds": "pass", "violated": "fail", "unknown": "fail"}[status]
    return {"check": check, "status": status, "outcome": outcome, "summary": "",
            "evidence": {}, "known_failure": None}


def res(nodeid: str, *judgements: dict, outcome: str = "passed") -> dict:
    return {"nodeid": nodeid, "outcome": outcome, "judgements": list(judgements)}


def col(version: str, *results: dict, unknown: str = "", rc: int = 0) -> Column:
    return Column(f"boxlite=={version}", version, {r["nodeid"]: r for r in results},
                  unknown=unknown, exit_code=rc, wall_s=1.0)


def entry(check: str, versions: str, scenarios: tuple[str, ...] = ("*",)) -> KnownFailure:
    return KnownFailure("e1", check, SpecifierSet(versions), scenarios, "why", "seen")


def test_cell_of_reads_status_and_table_outcome():
    assert cell_of(None, STORE) == NOT_RUN
    assert cell_of(res(A), STORE) == ABSENT
    assert cell_of(res(A, outcome="skipped"), STORE) == SKIPPED
    assert cell_of(res(A, j(STORE, "holds")), STORE) == HOLDS
    assert cell_of(res(A, j(STORE, "violated")), STORE) == VIOLATED
    assert cell_of(res(A, j(STORE, "violated", "known")), STORE) == KNOWN
    assert cell_of(res(A, j(STORE, "holds", "fixed")), STORE) == "fixed"
    # Judged twice in one scenario: the worst judgement stands.
    assert cell_of(res(A, j(STORE, "holds"), j(STORE, "unknown")), STORE) == UNKNOWN


def test_a_violation_unlike_its_symptom_is_its_own_cell_and_stays_so():
    """`E`: violated, covered by an entry, not its symptom. Red in the gate, a violation for
    the ranges, and kept when the matrix is judged again (no evidence to judge it anew)."""
    cell = cell_of(res(A, j(STORE, "violated", "unexpected")), STORE)
    assert cell == "unexpected" and SYMBOL[cell] == "E" and cell in BAD and cell in VIOLATIONS
    assert cell_of(res(A, j(STORE, "violated", "unexpected"), j(STORE, "violated", "known")),
                   STORE) == "unexpected"
    table = [entry(STORE, "==0.10.8")]
    assert against_table(cell, STORE, "0.10.8", A, table) == "unexpected"
    assert against_table(cell, STORE, "0.10.9", A, table) == VIOLATED
    assert rows_from_summary({"runtimes": ["0.10.8"], "rows": [[A, STORE, "E"]]})[0][
        "cells"] == {"0.10.8": "unexpected"}


def test_row_ranges_first_last_fix_and_came_in():
    ran = ["0.9.4", "0.9.5", "0.10.0", "0.10.8"]
    r = row_ranges({"0.9.4": HOLDS, "0.9.5": VIOLATED, "0.10.0": KNOWN, "0.10.8": HOLDS}, ran)
    assert r == {"first_violated": "0.9.5", "last_violated": "0.10.0", "fixed_in": "0.10.8",
                 "came_in": "0.9.5", "contiguous": True}
    gap = row_ranges({"0.9.4": VIOLATED, "0.9.5": HOLDS, "0.10.0": VIOLATED,
                      "0.10.8": UNKNOWN}, ran)
    assert gap["contiguous"] is False and gap["fixed_in"] is None and gap["came_in"] is None
    assert row_ranges({v: HOLDS for v in ran}, ran)["first_violated"] is None


def test_span_specifier_and_its_gap():
    ran = list(releases.RELEASES)
    assert releases.span_specifier(["0.10.8"], ran) == "==0.10.8"
    assert releases.span_specifier(["0.9.5", "0.9.7", "0.10.0"], ran) == ">=0.9.5,<=0.10.0"
    assert releases.span_specifier([], ran) is None
    with pytest.raises(ValueError, match="0.9.7 held between 0.9.5 and 0.10.0"):
        releases.span_specifier(["0.9.5", "0.10.0"], ran)
    assert releases.spans(["0.9.0", "0.9.5", "0.9.7", "0.10.8"], ran) == \
        ["==0.9.0", ">=0.9.5,<=0.9.7", "==0.10.8"]
    assert releases.spans([], ran) == []


def test_order_specs_sorts_releases_and_keeps_wheels_last(tmp_path):
    wheel = tmp_path / "boxlite-0.10.8-cp311-cp311-linux_x86_64.whl"
    wheel.write_bytes(b"x")
    out = releases.order_specs(["boxlite==0.10.8", f"wheel:{wheel}", "boxlite==0.9.5",
                                "boxlite==0.10.8"])
    assert out == ["boxlite==0.9.5", "boxlite==0.10.8", f"wheel:{wheel}"]
    with pytest.raises(SpecError):
        releases.order_specs(["boxlite"])


def test_grid_measures_entries_and_names_untabled_violations():
    cols = [col("0.9.5", res(A, j(STORE, "violated")), res(B, j("no_zombies", "holds"))),
            col("0.9.7", res(A, j(STORE, "violated")), res(B, j("no_zombies", "holds"))),
            col("0.10.8", res(A, j(STORE, "violated", "known")),
                res(B, j("no_zombies", "holds")))]
    data = build_grid(cols, [entry("record_failed[*]", "==0.10.8")])
    rows = {(r["scenario"], r["check"]): r for r in data["rows"]}
    assert rows[(B, "no_zombies")]["steady"] is True
    store = rows[(A, STORE)]
    assert store["steady"] is False and store["first_violated"] == "0.9.5"
    e = data["entries"][0]
    assert e["measured"] == [">=0.9.5,<=0.10.8"] and e["agrees"] is False
    assert e["violated_unclaimed"] == ["0.9.5", "0.9.7"] and e["claims_but_held"] == []
    assert data["untabled"] == [{"scenario": A, "check": STORE, "on": ["0.9.5", "0.9.7"]}]
    # Read against the table given: 0.9.5 and 0.9.7 are red for the untabled violation.
    assert data["summary"]["green"] == 1 and data["summary"]["untabled_rows"] == 1
    assert data["runtimes"][0]["red_scenarios"] == [A]
    # A scenario that failed without a verdict (an error) is red whatever the table says.
    broken = build_grid([col("0.10.8", res(B, outcome="failed"))], [])
    assert broken["runtimes"][0]["green"] is False
    text = render_grid(data)
    assert "table e1: versions '==0.10.8', measured >=0.9.5,<=0.10.8" in text
    assert "V V K" in text


def test_cells_are_read_against_the_table_given():
    cols = [col("0.9.7", res(A, j(STORE, "holds"))),
            col("0.10.8", res(A, j(STORE, "violated")))]
    strict = build_grid(cols, [entry(STORE, ">=0.9.7")])["rows"][0]["cells"]
    assert strict == {"0.9.7": "fixed", "0.10.8": KNOWN}
    race = KnownFailure("r", STORE, SpecifierSet(">=0.9.7"), ("*",), "why", "seen",
                        strict=False, seen="1 of 2")
    assert build_grid(cols, [race])["rows"][0]["cells"]["0.9.7"] == "unseen"
    assert build_grid(cols, [])["rows"][0]["cells"] == {"0.9.7": HOLDS, "0.10.8": VIOLATED}


def test_a_reference_scenario_is_read_against_its_own_version():
    """The Docker scenarios inside a BoxLite gate carry Docker's version: a Docker entry
    applies to them in every column, a runtime entry does not."""
    docker = {**res(B, j("pattern_no_leaked_helpers", "violated")),
              "runtime_version": "20.10.24+dfsg1"}
    cols = [col("0.9.7", docker), col("0.10.8", docker)]
    tabled = [entry("pattern_no_leaked_helpers", "==20.10.24+dfsg1")]
    row = build_grid(cols, tabled)["rows"][0]
    assert set(row["cells"].values()) == {KNOWN} and row["judged_as"] == "20.10.24+dfsg1"
    runtime_only = [entry("pattern_no_leaked_helpers", ">=0.9.7,<1")]
    assert set(build_grid(cols, runtime_only)["rows"][0]["cells"].values()) == {VIOLATED}


def test_entry_that_claims_a_release_that_held_disagrees():
    cols = [col("0.9.7", res(A, j(STORE, "holds", "fixed"))),
            col("0.10.8", res(A, j(STORE, "violated", "known")))]
    e = build_grid(cols, [entry(STORE, ">=0.9.7")])["entries"][0]
    assert e["claims_but_held"] == ["0.9.7"] and not e["agrees"]
    agree = build_grid(cols, [entry(STORE, "==0.10.8")])["entries"][0]
    assert agree["agrees"] and agree["measured"] == ["==0.10.8"]


def test_a_runtime_that_could_not_be_judged_is_unknown_never_green():
    cols = [col("0.9.0", unknown="runtime spec 'boxlite==0.9.0': pip could not install it",
                rc=2),
            col("0.10.8", res(A, j(STORE, "holds")))]
    data = build_grid(cols, [])
    assert data["rows"][0]["cells"] == {"0.9.0": UNKNOWN, "0.10.8": HOLDS}
    assert data["rows"][0]["steady"] is False
    assert [r["green"] for r in data["runtimes"]] == [False, True]
    assert "0.9.0 UNKNOWN (runtime spec" in render_grid(data)


def test_write_matrix_files(tmp_path):
    cols = [col("0.9.5", res(A, j(STORE, "violated"))), col("0.10.8", res(A, j(STORE, "holds")))]
    data = build_grid(cols, [])
    data.update(seed=1, hostile_examples=None, wall_s=2.0)
    write_matrix(tmp_path, data, "m1")
    summary = json.loads((tmp_path / "matrix-summary.json").read_text())
    assert summary["rows"] == [[A, STORE, "V·"]]
    again = rows_from_summary(summary)
    assert again == [{"scenario": A, "check": STORE, "judged_as": None,
                      "cells": {"0.9.5": VIOLATED, "0.10.8": HOLDS}}]
    assert entry_measure(entry("record_*", "==0.9.5"), again, summary["runtimes"])["agrees"]
    with pytest.raises(ValueError, match="does not fit 2 runtimes"):
        rows_from_summary({**summary, "rows": [[A, STORE, "V"]]})
    assert summary["runtimes"] == ["0.9.5", "0.10.8"]
    html = (tmp_path / "matrix.html").read_text()
    assert "release matrix m1" in html and "record_failed[store]" in html
    assert json.loads((tmp_path / "matrix.json").read_text())["summary"]["rows"] == 1


def test_run_column_reads_results_and_reasons(tmp_path):
    def green(argv, stderr, env):
        assert argv[argv.index("--runtime") + 1] == "boxlite==0.10.8"
        assert env["BOXLITE_CHAOS_HOSTILE_EXAMPLES"] == "5"
        assert env["BOXLITE_CHAOS_HOSTILE_BUDGET_S"] == "30.0"
        report = Path(argv[argv.index("--report") + 1])
        (report / "results.jsonl").write_text(json.dumps(res(A, j(STORE, "holds"))) + "\n")
        return 0

    c = run_column("boxlite==0.10.8", tmp_path / "a", 7, "2", hostile_examples=5,
                   hostile_budget_s=30.0, call=green)
    assert c.unknown == "" and c.exit_code == 0 and A in c.results

    def refused(argv, stderr, env):
        stderr.write(b"boxlite-chaos: error: runtime boxlite==0.9.0 could not be installed\n")
        return 2

    c = run_column("boxlite==0.9.0", tmp_path / "b", 7, "2", call=refused)
    assert c.unknown == "runtime boxlite==0.9.0 could not be installed"
    # Exit 1 (red) but no results: could not measure, not a verdict.
    c = run_column("boxlite==0.9.1", tmp_path / "c", 7, "2", call=lambda *a, **k: 1)
    assert "results could not be read" in c.unknown
    (tmp_path / "d.err").write_text("Traceback...\nKeyError: x\n")
    assert why_not_judged(tmp_path / "d.err", 3) == \
        "the gate exited 3 without a verdict: KeyError: x"


def test_check_verdict_and_scenarios_judging():
    results = {A: res(A, j(STORE, "violated", "known"), j("no_zombies", "holds")),
               B: res(B, j(STORE, "holds"))}
    assert check_verdict(results, "record_failed[*]") == VIOLATED
    assert check_verdict(results, "no_zombies") == HOLDS
    assert check_verdict(results, "nothing_here") == ABSENT
    assert check_verdict({B: res(B, j(STORE, "unknown"))}, STORE) == UNKNOWN
    assert scenarios_judging(results, "record_failed[*]") == ["guest_hang", "shim_crash"]


def test_bisect_finds_the_first_changed_release_in_few_probes():
    rels = list(releases.RELEASES)
    truth = {v: (HOLDS if rels.index(v) < rels.index("0.9.5") else VIOLATED) for v in rels}
    asked = []

    def verdict(v):
        asked.append(v)
        return truth[v]

    out = bisect_releases(verdict, rels)
    assert out["first_changed"] == "0.9.5" and out["last_same"] == "0.9.4" and out["exact"]
    assert len(asked) <= 6 and len(set(asked)) == len(asked)


def test_bisect_skips_unknown_probes_and_reports_agreeing_ends():
    rels = ["0.9.4", "0.9.5", "0.9.7", "0.10.0"]
    truth = {"0.9.4": HOLDS, "0.9.5": UNKNOWN, "0.9.7": VIOLATED, "0.10.0": VIOLATED}
    out = bisect_releases(truth.__getitem__, rels)
    assert out["first_changed"] == "0.9.7" and out["last_same"] == "0.9.4"
    assert out["exact"] is False and out["skipped"] == ["0.9.5"]
    same = bisect_releases(lambda v: HOLDS, rels)
    assert same["first_changed"] is None and same["oldest"] == same["newest"] == HOLDS


@pytest.mark.parametrize(("name", "value"), [("BOXLITE_CHAOS_HOSTILE_BUDGET_S", "0"),
                                             ("BOXLITE_CHAOS_HOSTILE_BUDGET_S", "soon"),
                                             ("BOXLITE_CHAOS_HOSTILE_BUDGET_S", "500"),
                                             ("BOXLITE_CHAOS_HOSTILE_EXAMPLES", "-1")])
def test_bad_hostile_settings_stop_the_run_with_their_name(name, value):
    """A malformed nightly setting is refused at collection, naming the variable (exit 4,
    pytest's usage error), rather than silently running the gate's defaults."""
    env = {**os.environ, name: value}
    p = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                        "-p", "no:cacheprovider", "-o", "testpaths=scenarios",
                        str(PROJECT / "scenarios" / "inputs" / "test_hostile_options.py")],
                       capture_output=True, text=True, env=env, cwd=PROJECT, timeout=120)
    assert p.returncode != 0
    assert name in p.stdout + p.stderr


def test_rejudge_reads_the_folders_back_against_todays_table(tmp_path, monkeypatch):
    """--rejudge: a finished matrix judged again after a table edit, running nothing; a
    column that was unknown stays unknown with its reason; a folder that is not a matrix is
    a clear error."""
    from harness.common.errors import SetupError
    from harness.jobs.matrix import run

    cols = [col("0.9.5", res(A, j(STORE, "violated"))),
            col("0.10.8", res(A, j(STORE, "holds"))),
            col("0.9.0", unknown="no wheel offline", rc=2)]
    for c in cols[:2]:
        (tmp_path / c.version).mkdir()
        (tmp_path / c.version / "results.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in c.results.values()))
    data = build_grid(cols, [])
    data.update(seed=3, hostile_examples=5, hostile_budget_s=30.0, wall_s=9.0)
    write_matrix(tmp_path, data, "m")
    monkeypatch.setattr(run, "load_table", lambda: [entry(STORE, "==0.9.5")])
    again = run.rebuild_matrix(tmp_path)
    assert again["entries"][0]["agrees"] and again["seed"] == 3
    assert again["runtimes"][2]["unknown"] == "no wheel offline"
    assert [r["cells"] for r in again["rows"]] == [
        {"0.9.5": KNOWN, "0.10.8": HOLDS, "0.9.0": UNKNOWN}]
    with pytest.raises(SetupError, match="no readable matrix.json"):
        run.rebuild_matrix(tmp_path / "0.9.5")


def test_a_matrix_judged_again_reads_each_violation_against_todays_symptoms():
    """rejudge_violations: a violation recorded `known` whose evidence does not show the
    symptom today is `unexpected`; one recorded `fail` that an entry's symptom now explains
    is `known`; holding verdicts are kept as they were."""
    from harness.jobs.matrix.grid import rejudge_violations
    from harness.judge.known import Symptom
    table = [KnownFailure("e1", STORE, SpecifierSet("==0.10.8"), ("*",), "why", "seen",
                          symptom=Symptom.parse({"read.status": "configured"}))]
    shows = {**j(STORE, "violated", "fail"), "evidence": {"read": {"status": "configured"}}}
    other = {**j(STORE, "violated", "known"), "evidence": {"read": {"status": "stopped"}}}
    held = j(STORE, "holds", "fixed")
    for judgement, outcome in ((shows, "known"), (other, "unexpected"), (held, "fixed")):
        again = rejudge_violations(res(A, judgement), "0.10.8", "python", table)
        assert again["judgements"][0]["outcome"] == outcome
    assert cell_of(rejudge_violations(res(A, other), "0.10.8", "python", table),
                   STORE) == "unexpected"
