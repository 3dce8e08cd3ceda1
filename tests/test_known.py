"""The known-failures table: how a verdict becomes an outcome on an affected version."""

from __future__ import annotations

import pytest
from packaging.specifiers import SpecifierSet

from harness.common.errors import SetupError
from harness.jobs.matrix.releases import RELEASES
from harness.judge import checks
from harness.judge.checks import HOLDS, UNKNOWN, VIOLATED, Verdict
from harness.judge.known import (
    DEFAULT_TABLE,
    FAIL,
    FAILING,
    FIXED,
    KNOWN,
    PASS,
    UNEXPECTED,
    UNSEEN,
    KnownFailure,
    Symptom,
    describe,
    facts_from_event,
    judge,
    load_table,
)
from harness.observe.records import RecordRead

SCENARIO = "scenarios/init/test_guest_hang.py::test_guest_hang_at_boot_fails_the_box_with_a_timeout"


def kf(check: str = "record_failed*", versions: str = "==0.10.8",
       scenarios: str | tuple[str, ...] = "*", id: str = "bug-1",
       symptom: dict | None = None, witness: tuple[str, ...] = ("w",)) -> KnownFailure:
    scen = (scenarios,) if isinstance(scenarios, str) else scenarios
    return KnownFailure(id, check, SpecifierSet(versions), scen, "why", "seen",
                        symptom=Symptom.parse(symptom) if symptom else None, witness=witness)


def v(status: str, check: str = "record_failed_live") -> Verdict:
    return Verdict(check, status, {}, "summary")


def test_violated_and_known_is_known():
    j = judge(v(VIOLATED), "0.10.8", SCENARIO, [kf()])
    assert j.outcome == KNOWN and j.outcome not in FAILING
    assert j.known is not None and j.to_json()["known_failure"] == "bug-1"
    assert j.to_json()["status"] == VIOLATED


def test_holds_and_known_is_fixed_and_fails_only_with_its_witness():
    j = judge(v(HOLDS), "0.10.8", SCENARIO, [kf()], witnessed=["w"])
    assert j.outcome == FIXED and FIXED in FAILING
    # Without the witness nothing shows the bug's path ran: unknown, not fixed.
    j = judge(v(HOLDS), "0.10.8", SCENARIO, [kf()])
    assert (j.outcome, j.verdict.status) == (FAIL, UNKNOWN)
    assert "no witness" in j.verdict.summary and j.verdict.evidence["witness_missing"] == ["w"]
    assert j.verdict.evidence["held"] == "summary"
    # Every witness pattern must be seen; a pattern may use *.
    two = kf(witness=("failed:start", "fault:*"))
    assert judge(v(HOLDS), "0.10.8", SCENARIO, [two], ["failed:start"]).outcome == FAIL
    assert judge(v(HOLDS), "0.10.8", SCENARIO, [two],
                 ["failed:start", "fault:kill_shim"]).outcome == FIXED
    # A check may carry its own witness in its evidence.
    own = Verdict("record_failed_live", HOLDS, {"witnessed": ["w"]}, "summary")
    assert judge(own, "0.10.8", SCENARIO, [kf()]).outcome == FIXED


def test_unknown_fails_known_or_not():
    assert judge(v(UNKNOWN), "0.10.8", SCENARIO, [kf()]).outcome == FAIL
    assert judge(v(UNKNOWN), "0.10.8", SCENARIO, []).outcome == FAIL


def test_not_known():
    assert judge(v(HOLDS), "0.10.8", SCENARIO, []).outcome == PASS
    j = judge(v(VIOLATED), "0.10.8", SCENARIO, [])
    assert j.outcome == FAIL and j.known is None
    assert j.to_json()["known_failure"] is None


def test_a_status_that_is_not_a_verdict_fails():
    assert judge(v("maybe"), "0.10.8", SCENARIO, [kf()]).outcome == FAIL


@pytest.mark.parametrize("versions, version, applies", [
    ("==0.10.8", "0.10.8", True),
    ("==0.10.8", "0.10.9", False),
    (">=0.10.5,<0.11", "0.10.8", True),
    (">=0.10.5,<0.11", "0.11.0", False),
    (">=0.10.5,<0.11", "0.10.4", False),
    ("<0.10.8", "0.10.8", False),
    ("", "9.9.9", True),                    # an empty range is every version
])
def test_version_ranges(versions, version, applies):
    outcome = judge(v(VIOLATED), version, SCENARIO, [kf(versions=versions)]).outcome
    assert outcome == (KNOWN if applies else FAIL)


@pytest.mark.parametrize("check_pattern, scenarios, applies", [
    ("record_failed*", "*", True),
    ("record_failed_live", "*", True),
    ("record_failed_store", "*", False),
    ("record_*_live", "*", True),
    ("record_failed*", "scenarios/init/*", True),
    ("record_failed*", "*guest_hang*", True),
    ("record_failed*", "*shim_crash*", False),
    ("RECORD_FAILED*", "*", False),         # case matters
    ("record_failed*", ("*shim_crash*", "*guest_hang*"), True),   # any of several
    ("record_failed*", ("*shim_crash*", "*retry_remove*"), False),
    ("record_failed_liv?", "*", False),     # only * is a wildcard
])
def test_patterns(check_pattern, scenarios, applies):
    table = [kf(check=check_pattern, scenarios=scenarios)]
    outcome = judge(v(VIOLATED), "0.10.8", SCENARIO, table).outcome
    assert outcome == (KNOWN if applies else FAIL)


def test_the_first_matching_entry_is_named():
    table = [kf(check="other*", id="a"), kf(id="b"), kf(id="c")]
    assert judge(v(VIOLATED), "0.10.8", SCENARIO, table).known.id == "b"


def test_the_real_table_loads():
    table = load_table()
    assert DEFAULT_TABLE.name == "known_failures.toml"
    ids = {k.id for k in table}
    assert "live-get-info-stale-after-init-failure" in ids
    for k in table:
        assert k.reason.strip() and k.evidence.strip()
        # Every entry names a version range that some runtime under test falls in.
        assert any(k.versions.contains(v, prereleases=True)
                   for v in (*RELEASES, "20.10.24+dfsg1")), k.id


def _read(path: str, status: str | None, reason: str | None = None) -> RecordRead:
    return RecordRead(path, present=status is not None, status=status, reason=reason,
                      exposes_reason=path.startswith("store"))


REASON = "engine reported an error: The VM failed to start."


@pytest.mark.parametrize("verdict", [
    checks.record_failed(_read("live.get_info", "configured"), "timeout"),
    checks.read_paths_agree([_read("live.get_info", "configured"),
                             _read("live.list_info", "failed"), _read("store", "failed", REASON)],
                            "live"),
    checks.record_failed(_read("after_shutdown.get_info", "configured"), "timeout"),
], ids=lambda x: x.check)
def test_the_real_table_knows_the_symptoms_it_names(verdict):
    # Check ids carry brackets: the table's patterns must match them literally; the verdicts
    # come from the checks, shaped as 0.10.8 showed them.
    j = judge(verdict, "0.10.8", SCENARIO + "[exit]", load_table())
    assert j.outcome == KNOWN, j.to_json()


@pytest.mark.parametrize("verdict, entry", [
    # The record deleted where the known bug leaves it 'configured'.
    (checks.record_failed(_read("live.get_info", None), "timeout"),
     "live-get-info-stale-after-init-failure"),
    # A status nobody has seen on the live path.
    (checks.record_failed(_read("live.get_info", "stopping"), "timeout"),
     "live-get-info-stale-after-init-failure"),
    # The paths disagreeing the other way round.
    (checks.read_paths_agree([_read("live.get_info", "failed"),
                              _read("live.list_info", "configured"),
                              _read("store", "configured")], "live"),
     "live-read-paths-disagree-after-init-failure"),
    # The shutdown keeping the reason but writing another status.
    (checks.record_failed(_read("store.after_shutdown", "stopped", REASON), "timeout"),
     "graceful-shutdown-overwrites-failed-record"),
], ids=lambda x: getattr(x, "check", x))
def test_a_new_bug_behind_a_known_check_is_unexpected_and_fails(verdict, entry):
    j = judge(verdict, "0.10.8", SCENARIO + "[exit]", load_table())
    assert j.outcome == UNEXPECTED and UNEXPECTED in FAILING, j.to_json()
    assert j.known.id == entry and j.mismatch and j.mismatch[0].startswith(entry)
    line = describe(j)
    assert f"not the known symptom of {entry}" in line and "expected" in line and "saw" in line
    assert j.to_json()["symptom_mismatch"] == j.mismatch


def test_a_scenario_scoped_entry_applies_only_to_its_scenario():
    table = load_table()
    crash = "scenarios/init/test_shim_crash.py::test_shim_crash[at_spawn]"
    verdict = checks.record_failed(_read("store", "failed", REASON), "shim_exit")
    assert judge(verdict, "0.10.8", crash, table).outcome == KNOWN
    assert judge(verdict, "0.10.8", SCENARIO, table).outcome == FAIL
    # A reason that names some other cause is not this bug's symptom.
    other = checks.record_failed(_read("store", "failed", "engine reported an error: boot "
                                                         "image corrupt"), "shim_exit")
    assert judge(other, "0.10.8", crash, table).outcome == UNEXPECTED


@pytest.mark.parametrize("pattern, check_id, applies", [
    ("record_failed[live.get_info]", "record_failed[live.get_info]", True),
    ("record_failed[live.get_info]", "record_failedl", False),       # not a character class
    ("read_paths_agree[live*]", "read_paths_agree[live]", True),
    ("read_paths_agree[live*]", "read_paths_agree[after_exit]", False),
    ("record_failed[*after_shutdown*]", "record_failed[store.after_shutdown]", True),
    ("record_failed[store*]", "record_failed[store.after_exit]", True),
    ("record_failed[store*]", "record_failed[live.get_info]", False),
    ("a.c", "abc", False),                                          # dots are literal
])
def test_brackets_and_dots_match_literally(pattern, check_id, applies):
    outcome = judge(v(VIOLATED, check_id), "0.10.8", SCENARIO, [kf(check=pattern)]).outcome
    assert outcome == (KNOWN if applies else FAIL)


def test_the_real_table_does_not_apply_elsewhere():
    table = load_table()
    assert judge(v(VIOLATED, "record_final[store]"), "0.10.8", SCENARIO, table).outcome == FAIL
    # A release after the measured ones: no entry claims it until a matrix has judged it.
    assert judge(v(VIOLATED, "record_failed[live.get_info]"), "0.11.0", SCENARIO,
                 table).outcome == FAIL


GOOD_ENTRY = '''
[[failure]]
id = "x"
check = "record_failed*"
symptom = { "read.status" = "configured" }
witness = "failed:start"
versions = "==1.0.0"
reason = "r"
evidence = "e"
'''


def test_a_minimal_table_loads(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(GOOD_ENTRY)
    (k,) = load_table(path)
    assert (k.id, k.scenarios, k.upstream) == ("x", ("*",), "")
    assert load_table(tmp_path / "t.toml")[0].applies("record_failed[a]", "1.0.0", "any")
    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing known\n")
    assert load_table(empty) == []


@pytest.mark.parametrize("text, match", [
    ("[[failure]\nid = 1", "known-failures table"),                         # not TOML
    (GOOD_ENTRY.replace('reason = "r"\n', ""), "entry 1 is malformed"),    # missing field
    (GOOD_ENTRY + GOOD_ENTRY.replace('"==1.0.0"', '"banana"'), "entry 2 is malformed"),
    (GOOD_ENTRY.replace('symptom = { "read.status" = "configured" }\n', ""), "symptom"),
    (GOOD_ENTRY.replace('witness = "failed:start"\n', ""), "witness"),
    (GOOD_ENTRY.replace('"read.status" = "configured"', '"read.status" = { re = "(" }'),
     "entry 1 is malformed"),
    (GOOD_ENTRY.replace('"read.status" = "configured"', '"read.status" = { like = "x" }'),
     "entry 1 is malformed"),
    (GOOD_ENTRY.replace('symptom = { "read.status" = "configured" }', "symptom = {}"),
     "entry 1 is malformed"),
])
def test_a_malformed_table_is_a_setup_error(tmp_path, text, match):
    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(SetupError, match=match) as exc:
        load_table(path)
    assert str(path) in str(exc.value)


def test_a_table_entry_may_name_several_scenarios(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(GOOD_ENTRY.replace('reason =', 'scenarios = ["*a*", "*b*"]\nreason ='))
    (k,) = load_table(path)
    assert k.scenarios == ("*a*", "*b*")
    assert k.applies("record_failed[x]", "1.0.0", "test_b[1]")
    assert not k.applies("record_failed[x]", "1.0.0", "test_c[1]")


@pytest.mark.parametrize("bad", ['versions = "==1.0.0"\nscenarios = 5', "versions = 5"])
def test_a_field_of_the_wrong_type_is_a_setup_error(tmp_path, bad):
    path = tmp_path / "t.toml"
    path.write_text(GOOD_ENTRY.replace('versions = "==1.0.0"', bad))
    with pytest.raises(SetupError, match="entry 1 is malformed"):
        load_table(path)


def test_a_missing_table_is_a_setup_error(tmp_path):
    with pytest.raises(SetupError, match="known-failures table"):
        load_table(tmp_path / "absent.toml")


# -- known failures that do not happen on every run -------------------------------------------

def test_a_non_strict_entry_holding_is_unseen_and_passes():
    race = KnownFailure("race", "record_failed*", SpecifierSet("==0.10.8"), ("*",), "why",
                        "ev", strict=False, seen="2 of 5 gate runs")
    held = judge(v(HOLDS), "0.10.8", SCENARIO, [race])
    assert held.outcome == UNSEEN and held.outcome not in FAILING
    assert held.to_json()["known_failure"] == "race"
    assert judge(v(VIOLATED), "0.10.8", SCENARIO, [race]).outcome == KNOWN
    assert judge(v(UNKNOWN), "0.10.8", SCENARIO, [race]).outcome == FAIL


def test_a_non_strict_entry_loads_with_how_often_it_was_seen(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(GOOD_ENTRY + 'strict = false\nseen = "3 of 5 runs"\n')
    (k,) = load_table(path)
    assert (k.strict, k.seen) == (False, "3 of 5 runs")
    path.write_text(GOOD_ENTRY)
    assert load_table(path)[0].strict is True


@pytest.mark.parametrize("extra", ["strict = false\n", 'strict = "no"\nseen = "1 of 2"\n'])
def test_a_non_strict_entry_must_say_how_often_it_was_seen(tmp_path, extra):
    path = tmp_path / "t.toml"
    path.write_text(GOOD_ENTRY + extra)
    with pytest.raises(SetupError, match="entry 1 is malformed"):
        load_table(path)


def test_an_entry_may_name_several_ranges(tmp_path):
    """A bug that went away and came back: any of the ranges applies, and the entry reads
    back as 'A or B'."""
    path = tmp_path / "table.toml"
    path.write_text(GOOD_ENTRY.replace('versions = "==1.0.0"',
                                       'versions = ["==0.9.0", ">=0.10.0,<=0.10.8"]'))
    (entry,) = load_table(path)
    assert "0.9.0" in entry.versions and "0.10.3" in entry.versions
    assert "0.9.5" not in entry.versions
    assert str(entry.versions) == "==0.9.0 or <=0.10.8,>=0.10.0"
    for bad in ("versions = []", 'versions = ["==1.0", 5]'):
        path.write_text(GOOD_ENTRY.replace('versions = "==1.0.0"', bad))
        with pytest.raises(SetupError, match="malformed"):
            load_table(path)


def test_an_entry_can_leave_out_checks_its_pattern_covers(tmp_path):
    """`excluding`: the kinds a broad pattern covers but the bug does not reach (they held)."""
    path = tmp_path / "table.toml"
    path.write_text(GOOD_ENTRY.replace('versions = "==1.0.0"', 'versions = "==1.0.0"\n'
                                       'excluding = ["record_failed[*overflow]"]'))
    (entry,) = load_table(path)
    assert entry.excluding == ("record_failed[*overflow]",)
    assert not entry.applies("record_failed[settled/disk.overflow]", "1.0.0", SCENARIO)
    path.write_text(GOOD_ENTRY.replace('versions = "==1.0.0"',
                                       'versions = "==1.0.0"\nexcluding = "x"'))
    with pytest.raises(SetupError, match="malformed"):
        load_table(path)


def test_a_lost_shutdown_log_is_known_and_a_missing_shutdown_is_not():
    """The shutdown-log race has its own check id: the table names it, and only it, so a
    runtime whose log says something but not its shutdown is still red."""
    table = load_table()
    node = ("scenarios/shutdown/test_sigterm_shutdown.py::"
            "test_host_stops_with_boxes_in_every_state[sdk_default-n1]")
    lost = judge(checks.runtime_shutdown_ran("", 0, ["shim.pid of initializing1 deleted"]),
                 "0.10.8", node, table)
    assert lost.outcome == KNOWN and lost.known.id == "shutdown-log-lost-at-exit"
    missing = judge(checks.runtime_shutdown_ran("INFO something else\n", 0), "0.10.8", node,
                    table)
    assert missing.outcome == FAIL
    killed = judge(checks.runtime_shutdown_ran("", -15), "0.10.8", node, table)
    assert killed.outcome == FAIL


# -- symptoms and witnesses ---------------------------------------------------------------

EV = {"read": {"path": "live.get_info", "status": "configured", "reason": None, "n": 3},
      "values": {"live.get_info": "configured", "live.list_info": "failed"},
      "orphans": [{"kind": "bwrap", "box": "initializing1"}, {"kind": "vm", "box": "hung2"}],
      "empty": []}


@pytest.mark.parametrize("symptom, matches", [
    ({"read.status": "configured"}, True),
    ({"read.status": "failed"}, False),
    ({"read.status": ["configured", "stopped"]}, True),
    ({"read.status": {"re": "^conf"}}, True),
    ({"read.status": {"not": "configured"}}, False),
    ({"read.reason": {"absent": True}}, True),          # null is absent (TOML has no null)
    ({"read.nothing": {"absent": True}}, True),
    ({"read.status": {"absent": True}}, False),
    ({"read.n": {"min": 3, "max": 3}}, True),
    ({"read.n": {"min": 4}}, False),
    ({"read.status": {"min": 1}}, False),              # not a number
    ({"values.live.get_info": "configured"}, True),     # keys that hold dots
    ({"values.live.list_info": "configured"}, False),
    ({"orphans.kind": ["bwrap", "vm"]}, True),          # every element
    ({"orphans.kind": "bwrap"}, False),
    ({"orphans.box": {"re": "^(initializing|hung)\\d+$"}}, True),
    ({"orphans": {"len": 2}}, True),
    ({"empty.kind": "bwrap"}, False),                   # through an empty list: nothing seen
    ({"empty": {"len": 0}}, True),
    ({"summary": {"re": "disagree"}}, True),
    ({"check": "c[x]"}, True),
])
def test_a_symptom_matches_the_evidence_it_describes(symptom, matches):
    verdict = Verdict("c[x]", VIOLATED, EV, "read paths disagree")
    miss = Symptom.parse(symptom).mismatches(verdict)
    assert (not miss) == matches, miss
    if miss:
        assert miss[0].startswith(next(iter(symptom))) and "expected" in miss[0]


def test_the_first_entry_whose_symptom_shows_is_named():
    table = [kf(id="a", symptom={"read.status": "stopped"}),
             kf(id="b", symptom={"read.status": "configured"})]
    j = judge(Verdict("record_failed[x]", VIOLATED, EV, "s"), "0.10.8", SCENARIO, table)
    assert (j.outcome, j.known.id) == (KNOWN, "b")
    j = judge(Verdict("record_failed[x]", VIOLATED, {"read": {"status": "running"}}, "s"),
              "0.10.8", SCENARIO, table)
    assert j.outcome == UNEXPECTED and [m.split(":")[0] for m in j.mismatch] == ["a", "b"]


@pytest.mark.parametrize("event, facts", [
    ({"kind": "invoke", "op": "start"}, ["sent:start"]),
    ({"kind": "ok", "op": "stop"}, ["called:stop", "ok:stop"]),
    ({"kind": "fail", "op": "start", "error": {"type": "EngineError"}}, ["called:start",
                                                                         "failed:start"]),
    ({"kind": "fail", "op": "start", "error": "harness timeout"}, []),   # no answer
    ({"kind": "fault", "fault": "kill_shim"}, ["fault:kill_shim"]),
    ({"kind": "witness", "name": "shutdown_ran"}, ["shutdown_ran"]),
    ({"kind": "note", "x": 1}, []),
])
def test_the_history_says_which_paths_ran(event, facts):
    assert facts_from_event(event) == facts


def test_every_strict_entry_of_the_real_table_names_a_witness_and_all_a_symptom():
    for k in load_table():
        assert k.symptom is not None and k.symptom.matchers, k.id
        assert k.witness or not k.strict, k.id


def test_a_shutdown_that_never_ran_is_not_taken_for_a_lost_log():
    """exit 0 and nothing logged: the lost-log race when the home shows the shutdown ran,
    a plain red when nothing does; the witness of the overwrite bug goes with it."""
    table = load_table()
    node = ("scenarios/shutdown/test_sigterm_shutdown.py::"
            "test_host_stops_with_boxes_in_every_state[sdk_default-n1]")
    ran = judge(checks.runtime_shutdown_ran("", 0, ["store boxlite.db-wal written"]), "0.10.8",
                node, table)
    assert ran.outcome == KNOWN and ran.known.id == "shutdown-log-lost-at-exit"
    never = judge(checks.runtime_shutdown_ran("", 0, []), "0.10.8", node, table)
    assert never.outcome == FAIL and never.known is None
    held = checks.record_failed(_read("store.after_shutdown.failed3", "failed", REASON),
                                "boot_failure")
    assert judge(held, "0.10.8", node, table, ["failed:start"]).verdict.status == UNKNOWN
    assert judge(held, "0.10.8", node, table,
                 ["failed:start", "shutdown_ran"]).outcome == FIXED


def test_an_sdk_bug_covers_only_its_sdk(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(GOOD_ENTRY + 'sdk = "node"\n')
    (k,) = load_table(path)
    bug = Verdict("record_failed[x]", VIOLATED, {"read": {"status": "configured"}}, "s")
    assert judge(bug, "1.0.0", SCENARIO, [k], sdk="node").outcome == KNOWN
    assert judge(bug, "1.0.0", SCENARIO, [k], sdk="python").outcome == FAIL
    path.write_text(GOOD_ENTRY + 'sdk = "c"\n')
    with pytest.raises(SetupError, match="malformed"):
        load_table(path)
    assert load_table()[0].sdk == ""
