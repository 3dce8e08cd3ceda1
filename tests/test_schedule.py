"""The longest-first ordering against xdist's own worksteal scheduler, and the durations cache."""

import json

import pytest
from xdist.scheduler.worksteal import WorkStealingScheduling

from harness.session import schedule


class FakeNode:
    """Just enough of a WorkerController for the scheduler: it records what it is sent."""

    def __init__(self, name):
        self.gateway = type("GW", (), {"id": name})()
        self.sent = []
        self.shutting_down = False

    def send_runtest_some(self, indices):
        self.sent += indices

    def send_runtest_all(self):  # pragma: no cover - not used by worksteal
        raise AssertionError

    def shutdown(self):
        self.shutdown_called = True

    def __repr__(self):
        return self.gateway.id


def first_runs(collection, workers):
    """What xdist's worksteal scheduler sends each worker first, for `collection`."""
    values = {"tx": [f"{workers}*popen"], "numprocesses": workers}
    config = type("C", (), {"getvalue": lambda self, k: values.get(k)})()
    sched = WorkStealingScheduling(config)
    nodes = [FakeNode(f"gw{i}") for i in range(workers)]
    for n in nodes:
        sched.add_node(n)
        sched.add_node_collection(n, collection)
    sched.schedule()
    return [[collection[i] for i in n.sent] for n in nodes]


@pytest.mark.parametrize("n,workers", [(57, 8), (654, 4), (9, 4), (3, 8), (16, 16)])
def test_run_sizes_are_what_worksteal_sends(n, workers):
    ids = [f"t{i}" for i in range(n)]
    runs = first_runs(ids, workers)
    assert [len(r) for r in runs] == schedule.run_sizes(n, workers)


def test_every_worker_starts_on_one_of_the_longest():
    table = {f"scenarios/s{i}": float(i) for i in range(40)}      # s39 longest
    ids = [f"tests/u{i}" for i in range(100)] + list(table)
    ordered = schedule.longest_first(ids, ids, table, 8)
    assert sorted(ordered) == sorted(ids)
    runs = first_runs(ordered, 8)
    heads = sorted(r[0] for r in runs)
    assert heads == sorted(f"scenarios/s{i}" for i in range(32, 40))
    for r in runs:                      # within a run: the timed ones longest first
        timed = [table[x] for x in r if x in table]
        assert timed == sorted(timed, reverse=True)


def test_loads_are_balanced_and_untimed_tests_stay_together():
    table = {"scenarios/a": 100.0, "scenarios/b": 60.0, "scenarios/c": 50.0,
             "scenarios/d": 10.0}
    ids = ["tests/m1::x", "tests/m1::y", "tests/m1::z", *table]
    ordered = schedule.longest_first(ids, ids, table, 2)
    runs = first_runs(ordered, 2)
    loads = sorted(sum(table.get(x, 0) for x in r) for r in runs)
    assert loads == [110.0, 110.0]      # a d | b c: greedy by least load, not round-robin
    untimed = [x for r in runs for x in r if x.startswith("tests/")]
    assert untimed == ["tests/m1::x", "tests/m1::y", "tests/m1::z"]


def test_an_unknown_scenario_counts_as_long_and_anything_else_as_zero():
    assert schedule.estimate("scenarios/new.py::t", {}) == schedule.UNKNOWN_SCENARIO_S
    assert schedule.estimate("tests/test_x.py::t", {}) == 0.0
    assert schedule.estimate("tests/test_x.py::t", {"tests/test_x.py::t": 4.0}) == 4.0


def test_one_worker_or_one_item_keeps_collection_order():
    ids = ["scenarios/a", "scenarios/b"]
    assert schedule.longest_first(ids, ids, {"scenarios/b": 9.0}, 1) == ids
    assert schedule.longest_first(ids[:1], ids[:1], {}, 4) == ids[:1]


def test_record_blends_and_skips_short_new_tests(tmp_path):
    path = tmp_path / "durations.json"
    schedule.record({"scenarios/a": 10.0, "tests/quick": 0.01}, path)
    assert json.loads(path.read_text()) == {"scenarios/a": 10.0}
    schedule.record({"scenarios/a": 20.0}, path)
    assert json.loads(path.read_text()) == {"scenarios/a": 15.0}


def test_a_corrupt_cache_is_only_a_missing_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("BOXLITE_CHAOS_CACHE", str(tmp_path))
    (tmp_path / "durations.json").write_text("{not json")
    assert schedule.load_estimates() == schedule._read(schedule.SEED)
    schedule.record({"scenarios/a": 3.0})
    assert schedule._read(tmp_path / "durations.json") == {"scenarios/a": 3.0}


def test_the_seed_names_only_collected_scenarios():
    seed = schedule._read(schedule.SEED)
    assert seed, "fixtures/durations.json is missing or empty"
    for nodeid in seed:
        path = schedule.PROJECT / nodeid.split("::")[0]
        assert path.is_file(), f"{nodeid}: no such scenario file"


LOGGING_TEST = '''
import os, time
def _log(name):
    with open(os.environ["ORDER_LOG"], "a") as fh:
        fh.write(f"{os.environ['PYTEST_XDIST_WORKER']} {name}\\n")
'''


def test_a_real_worksteal_run_starts_every_worker_on_a_long_one(tmp_path):
    """End to end through pytest-xdist: the estimates reach the workers, and each worker's
    first test is one of the two longest (in collection order they were the last two)."""
    import subprocess
    import sys
    scen = tmp_path / "scenarios"
    scen.mkdir()
    body = LOGGING_TEST + "".join(
        f"def test_{n}():\n    _log('{n}')\n" for n in ("a", "b", "c", "d", "e", "long1", "long2"))
    (scen / "test_order.py").write_text(body)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "durations.json").write_text(json.dumps(
        {"scenarios/test_order.py::test_long1": 90.0, "scenarios/test_order.py::test_long2": 80.0,
         **{f"scenarios/test_order.py::test_{n}": 1.0 for n in "abcde"}}))
    log = tmp_path / "order.log"
    env = {**__import__("os").environ, "BOXLITE_CHAOS_CACHE": str(cache), "ORDER_LOG": str(log)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist",
                           "worksteal", "-p", "no:cacheprovider", "--chaos-report",
                           str(tmp_path / "report"), "scenarios"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first: dict[str, str] = {}
    for line in log.read_text().splitlines():
        worker, name = line.split()
        first.setdefault(worker, name)
    assert sorted(first.values()) == ["long1", "long2"], log.read_text()


def test_every_worker_orders_from_one_table_even_when_the_cache_changes(monkeypatch):
    """The controller reads the estimates once per run: a run beside it that records its
    durations between two workers' start must not give them different orders (xdist stops
    a run whose workers collected differently)."""
    from types import SimpleNamespace

    import pytest

    from harness import plugin
    tables = iter([{"a": 1.0}, {"a": 99.0}])
    monkeypatch.setattr(plugin.schedule, "load_estimates", lambda: next(tables))
    config = SimpleNamespace(stash=pytest.Stash(), getoption=lambda name, default=None: {
        "dist": "worksteal", "--chaos-order": "longest-first"}.get(name, default))
    nodes = [SimpleNamespace(config=config, workerinput={}) for _ in range(2)]
    for node in nodes:
        plugin.pytest_configure_node(node)
    assert nodes[0].workerinput[plugin.ESTIMATES] == nodes[1].workerinput[plugin.ESTIMATES] \
        == {"a": 1.0}
