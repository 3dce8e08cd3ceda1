"""Real gate runs, really interrupted: SIGTERM (a CI cancel), SIGKILL of the controller, of one
worker, of the gate and all its workers. Each starts a short gate subset (-n 2) and judges the
exit status and time, the report, and what was left: processes by pid and start time, this
run's marked folders (its homes, in a /tmp of its own: $BOXLITE_CHAOS_TMP), and what
`boxlite-chaos sweep` does with them.

About 20-40 s each on 2 cores; they need /dev/kvm like the init tier (they skip without it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness.common.wait import hold
from harness.faults.shim import Proc
from harness.leftovers import markers, sweep
from harness.session import interrupt
from harness.session.doctor import check_kvm

PROJECT = Path(__file__).resolve().parents[1]
START_S = 180.0             # the runtime's venv is cached; workers start and collect

pytestmark = pytest.mark.skipif(not check_kvm()[0], reason=f"gate runs: {check_kvm()[1]}")


class Gate:
    """`boxlite-chaos gate` in its own session, and what it started."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.report = tmp / "report"
        # Its homes in a /tmp of its own: another run's sweep at start (other tests start
        # runs) never sees what this one leaves for its own checks.
        self.tmp = tmp / "t"
        self.tmp.mkdir()
        self.env = env = {k: v for k, v in os.environ.items()
                          if not k.startswith(("PYTEST_", markers.OWNER_ENV, markers.RUN_ENV))
                          and k != "BOXLITE_CHAOS_REPORT"}
        env[markers.TMP_ENV] = str(self.tmp)
        self.log = tmp / "gate.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "gate", "--report", str(self.report),
             "-n", "2", *args], cwd=PROJECT, env=env, stdout=open(self.log, "wb"),
            stderr=subprocess.STDOUT, start_new_session=True)
        owner = markers.Owner.of(self.proc.pid)
        assert owner is not None
        self.owner = owner
        self.seen: set[Proc] = set()

    def homes(self) -> dict[Path, dict]:
        """This run's marked folders (a scenario in flight has one)."""
        return {p: d for p, d in markers.marked_folders([self.tmp], index=Path("/nonexistent"))
                if d.get("run", {}).get("pid") == self.owner.pid}

    def descendants(self) -> list[Proc]:
        procs = interrupt.descendants(self.proc.pid)
        self.seen.update(procs)
        return procs

    def wait_in_flight(self, n: int, scenario: str = "") -> dict[Path, dict]:
        """Until `n` scenarios (matching `scenario`) run with a host each."""
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            homes = {p: d for p, d in self.homes().items()
                     if scenario in d["note"].get("scenario", "")}
            if len(homes) >= n and self.hosts_in(homes) >= n:
                hold(1.0, "the hosts to start their boxes")
                self.descendants()
                return homes
            time.sleep(0.2)
        pytest.fail(f"no {n} scenario(s) in flight within {START_S:.0f}s:\n{self.output()}")

    def hosts_in(self, homes: dict[Path, dict]) -> int:
        """How many of these homes have a runtime host running on them."""
        n = 0
        for p in self.descendants():
            try:
                cmd = " ".join(psutil.Process(p.pid).cmdline())
            except psutil.Error:
                continue
            n += "host_main.py" in cmd and any(f"{h}/" in cmd for h in homes)
        return n

    def workers(self) -> list[Proc]:
        """Its xdist workers (its children but the ones a scenario started)."""
        return [p for p in map(interrupt.as_proc, psutil.Process(self.proc.pid).children())
                if p is not None and "exec(eval" in " ".join(psutil.Process(p.pid).cmdline())]

    def wait(self, timeout_s: float) -> tuple[int, float]:
        t0 = time.monotonic()
        rc = self.proc.wait(timeout=timeout_s)
        return rc, time.monotonic() - t0

    def left_running(self, within_s: float) -> list[Proc]:
        return interrupt.wait_ended(self.seen, time.monotonic() + within_s)

    def results(self) -> dict[str, dict]:
        path = self.report / "results.jsonl"
        return {r["nodeid"]: r for r in map(json.loads, path.read_text().splitlines())}

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def kill_everything(self) -> None:
        interrupt.send([*self.seen, *interrupt.descendants(self.proc.pid)], signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def gate(tmp_path):
    runs: list[Gate] = []

    def start(*args: str) -> Gate:
        runs.append(Gate(tmp_path, *args))
        return runs[-1]
    yield start
    for g in runs:
        g.kill_everything()
        sweep.sweep(own_run=g.owner, under=[g.tmp])


def unknown_summaries(results: dict[str, dict]) -> dict[str, str]:
    return {nid: j["summary"] for nid, r in results.items() for j in r["judgements"]
            if j["check"] == "scenario_finished"}


def test_sigterm_stops_the_gate_in_order_and_reports(gate):
    g = gate("--scenario", "guest_hang")
    g.wait_in_flight(2)
    os.kill(g.proc.pid, signal.SIGTERM)
    rc, took = g.wait(interrupt.STOP_BOUND_S + 10)
    assert rc == interrupt.EXIT_INTERRUPTED, g.output()
    assert took <= interrupt.STOP_BOUND_S, f"the stop took {took:.1f}s"
    assert not g.left_running(2.0), "processes the gate started outlived it"
    assert not g.homes(), "the run left marked folders under /tmp"
    for name in ("report.html", "summary.json", "junit.xml"):
        assert (g.report / name).is_file(), name
    results = g.results()
    assert len(results) == 3                        # every scenario has its line
    why = unknown_summaries(results)
    in_flight = [s for s in why.values() if "into the scenario" in s]
    assert len(in_flight) == 2 and all(s.startswith("interrupted by SIGTERM") for s in why.values())
    assert all(r["outcome"] == "unknown" for r in results.values())
    summary = json.loads((g.report / "summary.json").read_text())
    assert {u["check"] for u in summary["unknown"]} == {"scenario_finished"}
    assert "interrupted by SIGTERM" in g.output()


def test_a_second_signal_stops_at_once(gate):
    g = gate("--scenario", "guest_hang")
    g.wait_in_flight(2)
    os.kill(g.proc.pid, signal.SIGTERM)
    hold(interrupt.DUPLICATE_S + 0.05, "a second signal is not the same one delivered twice")
    os.kill(g.proc.pid, signal.SIGTERM)
    rc, took = g.wait(10)
    assert rc == interrupt.EXIT_AT_ONCE, g.output()
    assert took <= 2.0
    assert not g.left_running(10.0), "a process outlived a stop at once"


def test_killed_controller_its_workers_stop_by_themselves(gate):
    g = gate("--scenario", "guest_hang")
    g.wait_in_flight(2)
    os.kill(g.proc.pid, signal.SIGKILL)
    g.wait(5)
    t0 = time.monotonic()
    assert not g.left_running(interrupt.STOP_BOUND_S), "workers outlived their controller"
    took = time.monotonic() - t0
    assert took < interrupt.STOP_BOUND_S
    assert not g.homes(), "the workers left their homes"
    why = unknown_summaries(g.results())
    assert len(why) == 2 and all("is gone" in s for s in why.values()), why


def test_a_dead_worker_costs_only_its_scenario(gate):
    g = gate("--scenario", "guest_hang", "--scenario", "host_death",
             "-k", "thawed or (marked_point and image_disk_build)")
    homes = g.wait_in_flight(1, scenario="thawed")
    victim = next(iter(homes.values()))["owner"]
    worker = Proc(victim["pid"], victim["create_time"], "worker")
    assert interrupt.send([worker], signal.SIGKILL)
    rc, _took = g.wait(START_S)
    assert rc == 1, g.output()                      # an unknown verdict fails the gate
    results = g.results()
    assert len(results) == 3, results.keys()
    why = unknown_summaries(results)
    assert len(why) == 1
    (nodeid, summary), = why.items()
    assert "thawed" in nodeid and f"(pid {worker.pid}) ended while running it" in summary
    assert "killed by SIGKILL" in summary
    assert all(r["outcome"] in ("passed", "failed") for n, r in results.items() if n != nodeid)
    assert (g.report / "report.html").is_file()
    assert not g.left_running(2.0) and not g.homes()


def test_sigkill_of_gate_and_workers_leaves_what_the_sweep_removes(gate):
    g = gate("--scenario", "guest_hang")
    homes = g.wait_in_flight(2)
    workers = g.workers()
    assert workers
    interrupt.send([Proc(g.proc.pid, g.owner.create_time, "gate"), *workers], signal.SIGKILL)
    g.wait(5)
    # Hosts lose their stdin and leave; their boxes' VMs die with their bwrap.
    assert not g.left_running(10.0)
    assert set(homes) <= set(g.homes()), "the homes of the killed run should still be here"
    env, cli = g.env, [sys.executable, "-m", "harness.cli", "sweep"]
    dry = subprocess.run([*cli, "--dry-run"], capture_output=True, text=True, cwd=PROJECT,
                         env=env, timeout=60)
    assert all(f"would remove {p} (homes" in dry.stdout for p in homes), dry.stdout
    assert all(p.is_dir() for p in homes)
    done = subprocess.run(cli, capture_output=True, text=True, cwd=PROJECT, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    for p in homes:
        assert f"removed {p} (homes, " in done.stdout and not p.exists()
    assert "MiB" in done.stdout
    workdirs = [Path(d["note"]["workdir"]) for d in homes.values()]
    assert all((w / "artifacts").is_dir() for w in workdirs), "artifacts not copied first"
