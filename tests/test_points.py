"""Fault points: normalisation, the recorder on a fake home, stability across runs, release
diffs, the trigger that lands a fault at a point, and the coverage mapping."""

from __future__ import annotations

import os
import time
from pathlib import Path

from harness.jobs.points.coverage import coverage, landing_figures, today, write_page
from harness.observe.points import (
    Point,
    PointTrigger,
    Recorder,
    diff_points,
    merge_runs,
    normalise_message,
    normalise_path,
    parse_log_line,
    wal_mark,
)
from harness.scenario.points import fits


def test_messages_lose_what_changes_between_runs():
    assert normalise_message("Recovering 3 boxes from database") == \
        "Recovering # boxes from database"
    assert normalise_message("boxlite-shim subprocess spawned box_id=ntgUcR0yhNLP pid=5836") \
        == "boxlite-shim subprocess spawned"
    assert normalise_message("Creating COW child disk: /tmp/h/boxes/ntgUcR0yhNLP/disks/d.qcow2"
                             " (backing: /tmp/a.ext4)") == \
        "Creating COW child disk: <path> (backing: <path>)"
    assert normalise_message("Box ntgUcR0yhNLP failed to start: timeout after 30s") == \
        "Box <id> failed to start: timeout after #s"
    assert normalise_message("Box JEMxjLQQOrwb failed") == "Box <id> failed"
    assert normalise_message("Initializing minimal guest rootfs") == \
        "Initializing minimal guest rootfs"
    line = ("2026-12-06T20:34:39.130706Z  INFO boxlite::disk::qcow2: Created COW child disk: "
            "/tmp/h/boxes/JEMxjLQQOrwb/disks/disk.qcow2")
    assert parse_log_line(line, ["JEMxjLQQOrwb"])[2] == "Created COW child disk: <path>"
    assert normalise_message("Building image disk for sha256:" + "ab" * 32 + " (first time)") \
        == "Building image disk for <digest> (first time)"


def test_log_lines_parse_and_continuations_do_not():
    ts, module, msg = parse_log_line(
        "2026-12-06T20:34:39.209112Z  INFO boxlite::vmm::controller::shim: boxlite-shim "
        "subprocess spawned box_id=ntgUcR0yhNLP pid=5836")
    assert module == "boxlite::vmm::controller::shim" and msg == "boxlite-shim subprocess spawned"
    assert abs(ts - 1796589279.209112) < 1e-3
    assert parse_log_line("  • shim_alive = false") is None


def test_an_init_tasks_name_stays_in_its_point():
    # Debug level (RUST_LOG=debug, 0.10.8): the task's name is a field; the point keeps it.
    assert normalise_message("Executing task box_id=BG3eZjymycAf task=filesystem_setup") == \
        "Executing task filesystem_setup"
    assert normalise_message("Executing task task=vmm_spawn box_id=BG3eZjymycAf") == \
        "Executing task vmm_spawn"
    assert normalise_message("Built sandbox path access list box_id=BG3eZjymycAf n=4") == \
        "Built sandbox path access list"
    # An info-level line keeps its committed key (the task's name stays a stripped field).
    assert normalise_message("Task failed: engine reported an error: The VM failed to start. "
                             "box_id=nKKpeqpwlks6 task=guest_connect") == \
        "Task failed: engine reported an error: The VM failed to start."


def test_paths_name_boxes_and_temporaries():
    assert normalise_path("boxes/ntgUcR0yhNLP/disks/disk.qcow2", ["ntgUcR0yhNLP"]) == \
        "boxes/<box>/disks/disk.qcow2"
    assert normalise_path("tmp/.tmpLtJyxZ") == "tmp/<tmp>"
    assert normalise_path("images/disk-images/sha256-" + "a" * 64 + "-r536870912.ext4") == \
        "images/disk-images/<digest>-r<size>.ext4"
    # A box the run did not create (a clone's, an import's) and a shared base disk: their
    # random names would make every run's list differ (seen in the first clone discovery).
    assert normalise_path("boxes/7VpZTMvkQnzo/disks/disk.qcow2", ["ntgUcR0yhNLP"]) == \
        "boxes/<new>/disks/disk.qcow2"
    assert normalise_path("boxes/7VpZTMvkQnzo") == "boxes/<new>"
    assert normalise_path("bases/ezqkGl0j.qcow2") == "bases/<base>.qcow2"
    assert normalise_path("boxes/ntgUcR0yhNLP/disks", ["ntgUcR0yhNLP"]) == "boxes/<box>/disks"


def _log(home: Path, msg: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000001Z"
    with open(home / "logs" / "boxlite.log.2026-12-06", "a") as fh:
        fh.write(f"{stamp}  INFO boxlite::test: {msg}\n")


def test_recorder_sees_log_store_files_in_order(tmp_path):
    home = tmp_path
    (home / "logs").mkdir()
    (home / "db").mkdir()
    _log(home, "before the start is no point")
    shm = home / "db" / "boxlite.db-shm"
    shm.write_bytes(bytes(32))
    rec = Recorder(home, lambda: [], lambda: ["ntgUcR0yhNLP"], interval_s=0.002)
    rec.baseline()
    _log(home, "Building image disk box_id=ntgUcR0yhNLP")
    rec.look()
    shm.write_bytes(bytes(8) + (5).to_bytes(4, "little") + bytes(20))
    rec.look()
    (home / "tmp").mkdir()
    (home / "tmp" / ".tmpAbCdEf").write_text("x")
    rec.look()
    (home / "boxes" / "ntgUcR0yhNLP").mkdir(parents=True)
    os.rename(home / "tmp" / ".tmpAbCdEf", home / "boxes" / "ntgUcR0yhNLP" / "disk.qcow2")
    rec.look()
    (home / "boxes" / "ntgUcR0yhNLP" / "disk.qcow2").unlink()
    rec.look()
    keys = [p.key for p in rec.ordered()]
    assert keys == ["log:boxlite::test: Building image disk", "store:commit",
                    "file:create tmp", "file:create tmp/<tmp>", "file:create boxes",
                    "file:create boxes/<box>",
                    "file:rename tmp/<tmp> -> boxes/<box>/disk.qcow2",
                    "file:remove boxes/<box>/disk.qcow2"]
    assert wal_mark(home) == 6


def _pts(*keys: str) -> list[Point]:
    return [Point(k.split(":")[0], k.split(":", 1)[1], 0.0, k) for k in keys]


def test_a_point_out_of_order_or_missing_is_unstable():
    a = _pts("log:a", "file:x", "file:y", "store:commit")
    b = _pts("log:a", "file:y", "file:x", "store:commit", "proc:spawn shim")
    merged = merge_runs([a, b])
    keys = [m["key"] for m in merged]
    assert keys[0] == "log:a" and keys[-2:] == ["store:commit", "proc:spawn shim"]
    unstable = {m["key"]: m.get("unstable") for m in merged}
    assert unstable["log:a"] is None and unstable["store:commit"] is None
    assert sum(1 for k in ("file:x", "file:y") if unstable[k]) == 1
    assert unstable["proc:spawn shim"] == "only in run(s) [2] of 2"
    assert [m["key"] for m in merge_runs([a, a])] == [p.key for p in a]
    assert not any(m.get("unstable") for m in merge_runs([a, a]))


def test_diff_names_new_vanished_and_moved_points():
    old = [{"key": k} for k in ("log:a", "log:b", "log:c")]
    new = [{"key": "log:a"}, {"key": "log:c"}, {"key": "log:b"},
           {"key": "log:d", "unstable": "x"}]
    d = diff_points(old, new)
    assert d["new"] == ["log:d (unstable)"] and d["vanished"] == []
    assert len(d["moved"]) == 1
    assert diff_points(old, old) == {"new": [], "vanished": [], "moved": []}


def test_the_trigger_fires_once_at_its_point_and_counts_the_overshoot():
    fired = []
    trig = PointTrigger("log:b", lambda: fired.append(time.monotonic()))
    now = time.monotonic()
    for key in ("log:a", "log:b", "log:c"):
        trig.on_point(Point("log", key[4:], now - 0.01, key))
    trig.on_point(Point("log", "d", now + 60, "log:d"))
    trig.on_point(Point("file", "create x", now - 1, "file:create x"))     # seen after
    assert len(fired) == 1 and trig.landing.landed
    fig = trig.landing.figures(["log:a", "log:b", "log:c", "log:d"])
    assert fig["overshoot"] == 1 and fig["overshot"] == ["log:c"]
    assert fig["delay_ms"] >= 10


def test_a_fault_that_cannot_be_sent_does_not_land():
    def refuse() -> None:
        raise ProcessLookupError("gone")
    trig = PointTrigger("log:b", refuse)
    trig.on_point(Point("log", "b", time.monotonic(), "log:b"))
    assert not trig.landing.landed and "gone" in (trig.error or "")
    assert trig.landing.figures(["log:b"]) == {"landed": False}


def test_box_faults_fit_only_while_the_shim_runs():
    ref = ["log:a", "proc:spawn shim", "log:b", "proc:exit shim", "log:c"]
    assert fits("host_sigkill", "log:a", ref) and fits("host_sigterm", "log:c", ref)
    assert not fits("freeze", "log:a", ref)
    assert fits("shim_sigkill", "log:b", ref) and fits("freeze", "proc:spawn shim", ref)
    assert not fits("shim_sigkill", "log:c", ref)


def test_coverage_maps_todays_scenarios_and_counts_the_sweep():
    lists = {("start", "plain"): [
        {"key": "log:boxlite::images::image_disk: Building image disk for <digest>"},
        {"key": "file:create boxes/<box>/shim.pid"}, {"key": "proc:spawn shim"},
        {"key": "log:late"}]}
    before = today(lists)[("start", "plain")]
    assert before["host_sigkill"] == {"log:boxlite::images::image_disk: Building image disk "
                                      "for <digest>", "file:create boxes/<box>/shim.pid"}
    assert before["freeze"] == {"proc:spawn shim"}
    results = [{"operation": "start", "variant": "plain", "point": "log:late",
                "kind": "host_sigkill", "outcome": "pass",
                "landing": {"landed": True, "delay_ms": 3.0, "overshoot": 0}},
               {"operation": "start", "variant": "plain", "point": "proc:spawn shim",
                "kind": "freeze", "outcome": "unknown", "landing": {"landed": False}}]
    cov = coverage("0.10.8", lists, results, 12.0)
    row = cov["operations"][0]
    assert row["before"]["points"] == 3 and row["after"]["points"] == 1
    assert row["never_reached"] == ["proc:spawn shim"]
    assert landing_figures(results)["host_sigkill"]["delay_ms_median"] == 3.0


def test_the_failing_disk_fits_everywhere_and_counts_its_failed_calls(tmp_path):
    ref = ["log:a", "proc:spawn shim", "proc:exit shim", "log:c"]
    assert all(fits(k, p, ref) for k in ("io_error", "disk_full") for p in ref)
    results = [{"operation": "stop", "variant": "plain", "point": p, "kind": "io_error",
                "outcome": "pass", "landing": {"landed": True, "delay_ms": d, "overshoot": 0,
                                               "attach_ms": d - 1, "failed_calls": n}}
               for p, d, n in (("log:a", 6.0, 13), ("log:c", 9.0, 0))]
    fig = landing_figures(results)["io_error"]
    assert fig["landed"] == 2 and fig["exercised"] == 1 and fig["delay_ms_max"] == 9.0
    assert "exercised" not in landing_figures(
        [{**results[0], "kind": "host_sigkill",
          "landing": {"landed": True, "delay_ms": 1.0, "overshoot": 0}}])["host_sigkill"]
    cov = coverage("0.10.8", {("stop", "plain"): [{"key": "log:a"}, {"key": "log:c"}]},
                   results, 1.0)
    page = write_page(cov, tmp_path / "coverage.html").read_text()
    assert "13 calls failed" in page and "0 calls failed" in page
