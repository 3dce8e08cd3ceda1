"""The gate benchmark's split of a scenario's wall time into runtime time and overhead."""

import json

import pytest

from harness.bench_gate import WINDOW_OPS, op_intervals, scenario_figures, union_length
from harness.cli import build_parser


def test_union_of_overlapping_operations_counts_once():
    assert union_length([(0, 2), (1, 3), (5, 6)]) == 4
    assert union_length([]) == 0


def test_op_intervals_pairs_invokes_with_replies_per_host_and_request():
    events = [
        {"t": 0.0, "kind": "invoke", "host": "h1", "op": "host_start"},
        {"t": 0.1, "kind": "ok", "host": "h1", "op": "host_start"},
        {"t": 0.2, "kind": "invoke", "host": "h1", "op": "start", "req": 2},
        {"t": 0.3, "kind": "invoke", "host": "h1", "op": "get_info", "req": 3},
        {"t": 0.4, "kind": "ok", "host": "h1", "op": "get_info", "req": 3},
        {"t": 30.2, "kind": "fail", "host": "h1", "op": "start", "req": 2},
        {"t": 31.0, "kind": "fault", "host": "h1", "fault": "signal_host"},
        {"t": 31.5, "kind": "observe", "host": "h1", "what": "host_exit"},
        {"t": 32.0, "kind": "note", "x": 1},
    ]
    iv = op_intervals(events)
    assert (0.2, 30.2) in iv and (0.0, 0.1) in iv and (31.0, 31.5) in iv
    assert round(union_length(iv), 3) == round(0.1 + 30.0 + 0.5, 3)


def test_docker_operations_and_observation_windows_are_not_overhead(tmp_path):
    from harness.history import History
    work = tmp_path / "s"
    h = History(work / "history.jsonl", {"scenario": "s"})
    events = [("invoke", {"host": "dockerd", "op": "dockerd_start", "req": 1}),
              ("ok", {"host": "dockerd", "op": "dockerd_start", "req": 1}),
              ("invoke", {"host": "harness", "op": "observe_window", "req": "window"}),
              ("ok", {"host": "harness", "op": "observe_window", "req": "window"})]
    for kind, fields in events:
        h.append(kind, **fields)
    h.close()
    (tmp_path / "results.jsonl").write_text(json.dumps(
        {"nodeid": "s", "outcome": "passed", "duration_s": 1.0, "workdir": str(work)}) + "\n")
    evs = [{"t": 0.0, "kind": "invoke", "host": "dockerd", "op": "dockerd_start", "req": 1},
           {"t": 2.0, "kind": "ok", "host": "dockerd", "op": "dockerd_start", "req": 1},
           {"t": 3.0, "kind": "invoke", "host": "harness", "op": "observe_window", "req": "w"},
           {"t": 9.0, "kind": "ok", "host": "harness", "op": "observe_window", "req": "w"}]
    assert op_intervals(evs) == [(0.0, 2.0)]
    assert op_intervals(evs, WINDOW_OPS) == [(3.0, 9.0)]
    [row] = scenario_figures(tmp_path)
    assert row["overhead_s"] == max(0.0, row["wall_s"] - row["runtime_s"] - row["windows_s"])


def test_an_operation_cut_short_by_its_host_exiting_ends_there():
    events = [
        {"t": 1.0, "kind": "invoke", "host": "h1", "op": "start", "req": 4},
        {"t": 3.0, "kind": "fault", "host": "h1", "fault": "signal_host"},
        {"t": 3.5, "kind": "observe", "host": "h1", "what": "host_exit"},
        {"t": 4.0, "kind": "invoke", "host": "h2", "op": "start", "req": 1},
    ]
    assert sorted(op_intervals(events)) == [(1.0, 3.5), (3.0, 3.5)]


@pytest.mark.parametrize("workers, why", [
    ("0", "0 workers cannot run the gate"), ("-3", "-3 workers cannot run the gate"),
    ("many", "'many' is not a number of workers")])
def test_bench_gate_refuses_a_worker_count_below_one(workers, why, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["bench-gate", "-n", workers])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument -n/--workers" in err and why in err, err


@pytest.mark.parametrize("argv, workers", [([], "8"), (["-n", "1"], "1"), (["-n", "03"], "3"),
                                           (["--workers", "auto"], "auto")])
def test_bench_gate_takes_positive_worker_counts(argv, workers):
    assert build_parser().parse_args(["bench-gate", *argv]).workers == workers
