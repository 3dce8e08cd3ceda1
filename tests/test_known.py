"""The known-failures table: how a verdict becomes an outcome on an affected version."""

from __future__ import annotations

import pytest
from packaging.specifiers import SpecifierSet

from harness.common.errors import SetupError
from harness.jobs.matrix.releases import RELEASES
from harness.judge.checks import HOLDS, UNKNOWN, VIOLATED, Verdict
from harness.judge.known import (
    DEFAULT_TABLE,
    FAIL,
    FAILING,
    FIXED,
    KNOWN,
    PASS,
    UNSEEN,
    KnownFailure,
    judge,
    load_table,
)

SCENARIO = "scenarios/init/test_guest_hang.py::test_guest_hang_at_boot_fails_the_box_with_a_timeout"


def kf(check: str = "record_failed*", versions: str = "==0.10.8",
       scenarios: str | tuple[str, ...] = "*", id: str = "bug-1") -> KnownFailure:
    scen = (scenarios,) if isinstance(scenarios, str) else scenarios
    return KnownFailure(id, check, SpecifierSet(versions), scen, "why", "seen")


def v(status: str, check: str = "record_failed_live") -> Verdict:
    return Verdict(check, status, {}, "summary")


def test_violated_and_known_is_known():
    j = judge(v(VIOLATED), "0.10.8", SCENARIO, [kf()])
    assert j.outcome == KNOWN and j.outcome not in FAILING
    assert j.known is not None and j.to_json()["known_failure"] == "bug-1"
    assert j.to_json()["status"] == VIOLATED


def test_holds_and_known_is_fixed_and_fails():
    j = judge(v(HOLDS), "0.10.8", SCENARIO, [kf()])
    assert j.outcome == FIXED and FIXED in FAILING


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


@pytest.mark.parametrize("check_id", ["record_failed[live.get_info]", "read_paths_agree[live]",
                                      "record_failed[after_shutdown.get_info]"])
def test_the_real_table_applies_to_the_checks_it_names(check_id):
    # Check ids carry brackets: the table's patterns must match them literally.
    j = judge(v(VIOLATED, check_id), "0.10.8", SCENARIO + "[exit]", load_table())
    assert j.outcome == KNOWN, j.to_json()


def test_a_scenario_scoped_entry_applies_only_to_its_scenario():
    table = load_table()
    check_id = "record_failed[store]"
    crash = "scenarios/init/test_shim_crash.py::test_shim_crash[at_spawn]"
    assert judge(v(VIOLATED, check_id), "0.10.8", crash, table).outcome == KNOWN
    assert judge(v(VIOLATED, check_id), "0.10.8", SCENARIO, table).outcome == FAIL


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
    from harness.judge import checks
    table = load_table()
    node = ("scenarios/shutdown/test_sigterm_shutdown.py::"
            "test_host_stops_with_boxes_in_every_state[sdk_default-n1]")
    lost = judge(checks.runtime_shutdown_ran("", 0), "0.10.8", node, table)
    assert lost.outcome == KNOWN and lost.known.id == "shutdown-log-lost-at-exit"
    missing = judge(checks.runtime_shutdown_ran("INFO something else\n", 0), "0.10.8", node,
                    table)
    assert missing.outcome == FAIL
    killed = judge(checks.runtime_shutdown_ran("", -15), "0.10.8", node, table)
    assert killed.outcome == FAIL
