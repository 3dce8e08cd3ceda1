"""The reaping points no_zombies judges against, read from histories the host writes."""

from harness.observe.processes import box_of
from harness.observe.reaping import REAP_AFTER_ANSWER_S, end_points, reaping_points


def test_points_come_from_answers_of_box_operations():
    events = [
        {"t": 0.0, "kind": "meta"},
        {"t": 0.5, "kind": "invoke", "host": "host1", "op": "host_start", "pid": 100},
        {"t": 1.0, "kind": "invoke", "host": "host1", "op": "create", "req": 1, "args": {}},
        {"t": 1.2, "kind": "ok", "host": "host1", "op": "create", "req": 1},
        {"t": 2.0, "kind": "invoke", "host": "host1", "op": "start", "req": 2,
         "args": {"box_id": "B1"}},
        {"t": 3.0, "kind": "invoke", "host": "host1", "op": "remove", "req": 3,
         "args": {"box_id": "B2"}},
        {"t": 4.0, "kind": "fail", "host": "host1", "op": "remove", "req": 3,
         "error": "harness timeout"},
        {"t": 4.5, "kind": "invoke", "host": "host1", "op": "stop", "req": 4,
         "args": {"box_id": "B3"}},
        {"t": 5.0, "kind": "fail", "host": "host1", "op": "stop", "req": 4,
         "error": "host exited"},
        {"t": 9.0, "kind": "fail", "host": "host1", "op": "start", "req": 2,
         "error": {"message": "The VM failed to start."}},
        # A restarted host on the same name has a new pid.
        {"t": 10.0, "kind": "invoke", "host": "host1", "op": "host_start", "pid": 200},
        {"t": 11.0, "kind": "invoke", "host": "host1", "op": "stop", "req": 1,
         "args": {"box_id": "B1"}},
        {"t": 12.0, "kind": "ok", "host": "host1", "op": "stop", "req": 1},
    ]
    points = reaping_points(events, offset_s=0.25)
    assert [(p["t"], p["ppid"], p["box"]) for p in points] == [(8.75, 100, "B1"),
                                                               (11.75, 200, "B1")]
    assert all(p["settle_s"] == REAP_AFTER_ANSWER_S for p in points)


def test_end_points_cover_every_live_host_and_any_box():
    assert end_points(3.14159, [7, 8]) == [
        {"t": 3.142, "ppid": 7, "box": None, "settle_s": 0.0, "why": "the scenario ended"},
        {"t": 3.142, "ppid": 8, "box": None, "settle_s": 0.0, "why": "the scenario ended"}]


def test_box_of_reads_the_box_folder_from_a_command_line():
    assert box_of("/x/bwrap --bind /tmp/bxc-1/home1/boxes/R2tWVDo0RRSq /r --die") == \
        "R2tWVDo0RRSq"
    assert box_of("/tmp/bxc-1/home1/boxes/ddBNOGBICRSp/bin/boxlite-shim") == "ddBNOGBICRSp"
    assert box_of("python host_main.py --home /tmp/bxc-1/home1") is None
