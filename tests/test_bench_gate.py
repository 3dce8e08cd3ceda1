"""The gate benchmark's split of a scenario's wall time into runtime time and overhead."""

import json
import os
import sys

import pytest

from harness.cli import build_parser
from harness.jobs.bench.figures import WINDOW_OPS, op_intervals, scenario_figures, union_length


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
    from harness.observe.history import History
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


# -- core-seconds per scenario and per family --------------------------------------------------

def test_a_scenarios_family_is_its_test_function_and_a_hostile_shards_its_family():
    from harness.jobs.bench.figures import HOSTILE_TEST, family_of
    assert family_of(f"{HOSTILE_TEST}[process-working_dir]") == f"{HOSTILE_TEST}[process]"
    assert family_of(f"{HOSTILE_TEST}[names-path_like]") == f"{HOSTILE_TEST}[names]"
    assert family_of("scenarios/init/test_guest_hang.py::test_x[exit]") == \
        "scenarios/init/test_guest_hang.py::test_x"
    assert family_of("scenarios/a.py::test_y") == "scenarios/a.py::test_y"


def _burner(seconds: float):
    """A child that burns `seconds` of CPU, then sleeps until killed."""
    import subprocess
    return subprocess.Popen([sys.executable, "-c", (
        "import time\nt = time.process_time()\n"
        f"while time.process_time() - t < {seconds}: pass\ntime.sleep(60)")])


def _burnt(pid: int, seconds: float) -> None:
    from harness.common.wait import wait_for
    from harness.jobs.bench.cpu import proc_cpu_s
    wait_for(lambda: (proc_cpu_s(pid) or 0) >= seconds, 30, "the child to burn its CPU", 0.05)


def test_the_plugin_writes_one_line_per_test_with_its_tree_cpu(tmp_path, monkeypatch):
    import resource
    from types import SimpleNamespace

    from harness.jobs.bench import cpu as bench_cpu
    item = SimpleNamespace(nodeid="scenarios/a.py::test_y")
    monkeypatch.delenv(bench_cpu.CPU_ENV, raising=False)
    hook = bench_cpu.pytest_runtest_protocol(item, None)
    next(hook)
    with pytest.raises(StopIteration):
        hook.send(None)
    path = tmp_path / bench_cpu.CPU_FILE
    monkeypatch.setenv(bench_cpu.CPU_ENV, str(path))
    reaped = {"s": 0.0}
    real = resource.getrusage

    def fake(who):
        # RUSAGE_CHILDREN grows by 2.5 s during the test: a host reaped with its shims.
        if who == resource.RUSAGE_CHILDREN:
            return SimpleNamespace(ru_utime=reaped["s"], ru_stime=0.0)
        return real(who)
    monkeypatch.setattr(bench_cpu.resource, "getrusage", fake)
    hook = bench_cpu.pytest_runtest_protocol(item, None)
    next(hook)
    child = _burner(0.6)            # a VM spinning during the scenario, still alive at its end
    try:
        _burnt(child.pid, 0.6)
        reaped["s"] = 2.5
        with pytest.raises(StopIteration):
            hook.send(None)
    finally:
        child.kill()
        child.wait()
    [row] = bench_cpu.read_scenario_cpu(tmp_path)
    assert row["nodeid"] == item.nodeid and row["reaped_s"] == 2.5
    assert 0.55 <= row["tree_s"] < 2.0 and row["processes"] >= 1
    assert row["core_s"] == round(row["harness_s"] + row["tree_s"], 3)


def test_tree_cpu_counts_only_what_a_process_spent_during_the_test():
    from harness.jobs.bench.cpu import TreeCpu
    child = _burner(0.4)
    try:
        _burnt(child.pid, 0.4)
        tree = TreeCpu(interval_s=0.05).start()     # there before the test: its past is not
        assert tree.stop() < 0.2
    finally:
        child.kill()
        child.wait()


def test_scenario_cpu_lines_add_up_per_family_and_a_torn_line_is_skipped(tmp_path):
    from harness.jobs.bench.cpu import CPU_FILE, read_scenario_cpu
    from harness.jobs.bench.figures import HOSTILE_TEST, by_family, cpu_table, longest_unit
    lines = [{"nodeid": f"{HOSTILE_TEST}[env-keys]", "wall_s": 20.0, "harness_s": 2.0,
              "tree_s": 10.0, "reaped_s": 1.0},
             {"nodeid": f"{HOSTILE_TEST}[env-values]", "wall_s": 25.0, "harness_s": 1.0,
              "tree_s": 8.0, "reaped_s": 1.0},
             {"nodeid": "scenarios/b.py::test_z[1]", "wall_s": 33.0, "harness_s": 0.5,
              "tree_s": 19.5, "reaped_s": 0.5}]
    (tmp_path / CPU_FILE).write_text("".join(json.dumps(r) + "\n" for r in lines)
                                     + '{"nodeid": "torn')
    rows = read_scenario_cpu(tmp_path)
    assert len(rows) == 3
    fams = {f["family"]: f for f in by_family(rows)}
    env = fams[f"{HOSTILE_TEST}[env]"]
    assert (env["scenarios"], env["core_s"], env["longest_s"]) == (2, 21.0, 25.0)
    assert fams["scenarios/b.py::test_z"]["core_s"] == 20.0
    assert longest_unit(rows)["nodeid"] == "scenarios/b.py::test_z[1]"
    text = "\n".join(cpu_table("parallel", rows, {"gate_cpu_s": 40.0, "machine_busy_s": 60.0}))
    assert "41.0 in all" in text and "3.5 of it the harness's" in text
    assert f"{HOSTILE_TEST}[env]" in text and f"{HOSTILE_TEST}[env-keys]" in text
    assert read_scenario_cpu(tmp_path / "nothing") == []


def test_the_cpu_floor_comes_from_busy_time_on_a_quiet_machine_and_from_scenarios_else():
    from harness.jobs.bench.figures import cpu_lines
    run = {"wall_s": 100.0, "machine_busy_s": 190.0, "harness_cpu_s": 40.0, "gate_cpu_s": 90.0}
    quiet = "\n".join(cpu_lines("parallel", run, 2, 40.0, 0.1, scenario_core_s=120.0))
    assert "the gate's core-seconds: 180.0 (machine busy less the load before" in quiet
    assert "(the CPU floor): 90.0s" in quiet and "wall / floor 1.11" in quiet
    busy = "\n".join(cpu_lines("parallel", run, 2, 40.0, 1.9, scenario_core_s=120.0))
    assert "95% busy before the gate" in busy
    assert "the gate's core-seconds: 120.0 (sum over scenarios, a lower bound" in busy
    assert "(the CPU floor): 60.0s" in busy


def test_a_run_keeps_its_processes_bytecode_in_the_cache(monkeypatch, tmp_path):
    """PYTHONDONTWRITEBYTECODE would make every worker compile the harness from source: a run
    sends compiled modules to the project's cache instead; a prefix the user set is kept."""
    from harness.plugin import keep_bytecode
    monkeypatch.setenv("BOXLITE_CHAOS_CACHE", str(tmp_path))
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.delenv("PYTHONPYCACHEPREFIX", raising=False)
    keep_bytecode()
    assert "PYTHONDONTWRITEBYTECODE" not in os.environ
    assert os.environ["PYTHONPYCACHEPREFIX"] == str(tmp_path / "pycache")

    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setenv("PYTHONPYCACHEPREFIX", "/elsewhere")
    keep_bytecode()
    assert os.environ["PYTHONDONTWRITEBYTECODE"] == "1"
    assert os.environ["PYTHONPYCACHEPREFIX"] == "/elsewhere"


def test_the_makespan_takes_units_longest_first_onto_the_next_free_worker():
    from harness.jobs.bench.figures import makespan
    assert makespan([5, 4, 3, 3, 2, 2, 1], 1) == 20
    # Longest first, each onto the worker free first: 5+3 | 4+3 (collection order, 3+3 | 5+4,
    # would take 9). Not always the best schedule (3 3 2 2 2 on two: 7, where 6 exists), but
    # the one the scheduler runs.
    assert makespan([3, 5, 3, 4], 2) == 8
    assert makespan([3, 3, 2, 2, 2], 2) == 7
    assert makespan([36.9, 1, 1], 24) == 36.9           # no schedule beats its longest unit
    with pytest.raises(ValueError):
        makespan([1.0], 0)


def test_the_schedule_estimate_leaves_the_docker_reference_aside():
    from harness.jobs.bench.figures import schedule_lines
    rows = [{"nodeid": "s/t.py::a[boxlite]", "wall_s": 30.0, "core_s": 15.0},
            {"nodeid": "s/t.py::b", "wall_s": 10.0, "core_s": 5.0},
            {"nodeid": "s/t.py::a[docker]", "wall_s": 90.0, "core_s": 2.0}]
    (line,) = schedule_lines(rows, (1, 2))
    assert "2 units, longest 30.0s, 20.0 core-s" in line
    assert "1 -> 40.0s, 2 -> 30.0s" in line
    assert schedule_lines([rows[2]]) == []


def test_the_bytecode_cache_forgets_folders_that_are_gone(tmp_path):
    """Each CI clone in a new folder adds its compiled modules under the prefix; those of
    clones that are gone go, those of folders still there stay."""
    from harness.plugin import prune_pycache
    prefix = tmp_path / "pycache"
    kept_src = tmp_path / "src" / "pkg"
    kept_src.mkdir(parents=True)
    kept = prefix / kept_src.relative_to("/")       # the prefix mirrors source folders
    gone = prefix / (tmp_path / "clone-gone" / "pkg").relative_to("/")
    for d in (kept, gone):
        d.mkdir(parents=True)
        (d / "m.cpython-311.pyc").write_bytes(b"x")
    removed = prune_pycache(prefix)
    assert removed == [prefix / (tmp_path / "clone-gone").relative_to("/")]
    assert not gone.exists() and (kept / "m.cpython-311.pyc").is_file()
