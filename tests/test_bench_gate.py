"""The gate benchmark's split of a scenario's wall time into runtime time and overhead."""

from harness.bench_gate import op_intervals, union_length


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
