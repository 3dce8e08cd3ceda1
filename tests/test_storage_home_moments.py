"""Self-test of the storage scenarios' home judgement per moment (harness/scenario/storage.py
home_consistent_at): a home judged live (after_stop) and again by a fresh runtime gives two
verdicts with their own ids, so a known failure of the live moment (0.9.4's failed box folder
kept until the next runtime's orphan sweep) is not called fixed by the fresh moment holding."""

from __future__ import annotations

from pathlib import Path

from harness.judge.known import FIXED, KNOWN, PASS, judge, load_table
from harness.judge.verdict import HOLDS, VIOLATED
from harness.scenario.storage import home_consistent_at

SCENARIO = "scenarios/storage/test_disk_full.py::test_full_disk_under_stop_and_remove[stop]"
ENTRY = r"""
[[failure]]
id = "folder-kept-live"
check = "{check}"
symptom = {{ summary = {{ re = "^dirs without record: \\[.+\\]; records without dir: \\[\\]$" }} }}
witness = ["failed:start"]
scenarios = ["*scenarios/storage/*test_full_disk_under_stop_and_remove[stop]"]
versions = "==0.9.4"
reason = "a self-test entry"
evidence = "a self-test entry"
measured = "not in the matrix: a self-test entry, judged by no run"
"""


def table(tmp_path: Path, check: str):
    path = tmp_path / "known.toml"
    path.write_text(ENTRY.format(check=check))
    return load_table(path)


def test_the_verdict_names_its_moment():
    live = home_consistent_at("after_stop", ["RCrfBRnmXnbv"], [])
    fresh = home_consistent_at("fresh", [], [])
    assert (live.check, live.status) == ("home_consistent[after_stop]", VIOLATED)
    assert live.summary == "dirs without record: ['RCrfBRnmXnbv']; records without dir: []"
    assert (fresh.check, fresh.status) == ("home_consistent[fresh]", HOLDS)


def test_a_live_moments_known_failure_is_not_fixed_by_the_fresh_moment(tmp_path):
    kf = table(tmp_path, "home_consistent[after_stop]")
    live = home_consistent_at("after_stop", ["RCrfBRnmXnbv"], [])
    fresh = home_consistent_at("fresh", [], [])
    assert judge(live, "0.9.4", SCENARIO, kf, ["failed:start"]).outcome == KNOWN
    assert judge(fresh, "0.9.4", SCENARIO, kf, ["failed:start"]).outcome == PASS
    # The live moment holding (the runtime fixed) is still called fixed.
    held = home_consistent_at("after_stop", ["RCrfBRnmXnbv"], [{"id": "RCrfBRnmXnbv",
                                                                 "status": "failed"}])
    assert judge(held, "0.9.4", SCENARIO, kf, ["failed:start"]).outcome == FIXED


def test_one_id_for_both_moments_could_not_table_it(tmp_path):
    """What the moment in the id fixes: with one id for both moments the fresh moment's
    holding verdict is judged 'fixed' (a failure) by the live moment's entry."""
    kf = table(tmp_path, "home_consistent")
    fresh = home_consistent_at("fresh", [], [])
    unnamed = type(fresh)("home_consistent", fresh.status, fresh.evidence, fresh.summary)
    assert judge(unnamed, "0.9.4", SCENARIO, kf, ["failed:start"]).outcome == FIXED
