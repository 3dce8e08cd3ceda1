"""Stops and full disks, in the small (harness.session.interrupt, harness.scenario.context,
harness.session.stopping):
which signal stops in order and which at once, what an unfinished scenario's verdict is, and
a disk that fills under the history or the results. The same stops against real gate runs
are in test_interrupt_runs.py."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from harness.common.procs import Proc, alive
from harness.common.wait import wait_for
from harness.observe.history import read_history
from harness.report.build import summarize
from harness.scenario.context import DiskFull, GuardedHistory, keep_whole_lines, require_space
from harness.session import interrupt, stopping
from harness.session.stopping import append_result, unfinished_judgement


@contextlib.contextmanager
def installed(on_first: Callable[[str], None],
              on_again: Callable[[str], None]) -> Iterator[interrupt.Handlers]:
    """Our own handlers in place of the plugin's: the plugin's helper thread waits on its own
    event, which these never set. The stop is forgotten after."""
    saved = dataclasses.replace(interrupt.STOP)
    interrupt.reset()
    h = interrupt.install(on_first, on_again)
    try:
        yield h
    finally:
        interrupt.restore(h)
        interrupt.reset()
        vars(interrupt.STOP).update(vars(saved))
    assert not h.outer or not h.outer.wake.is_set()


@pytest.fixture
def handlers():
    """The calls of our own handlers, for one test."""
    calls: list[str] = []
    with installed(lambda n: calls.append(f"first {n}"), lambda n: calls.append(f"again {n}")):
        yield calls


def test_first_signal_asks_for_an_orderly_stop(handlers):
    interrupt._handle(signal.SIGTERM, None)
    assert handlers == ["first SIGTERM"]
    assert interrupt.STOP.requested and interrupt.STOP.signal == "SIGTERM"
    assert interrupt._active is not None and interrupt._active.wake.is_set()


def test_the_helper_wakes_only_after_the_first_callback():
    """A job's first callback looks for the runs it started, and its helper then stops them:
    woken first, the helper could end a run before the look, and the job would unwind as if
    it had started none (seen under load: "job unwound" without the run's own exit)."""
    woken: list[bool] = []
    with installed(lambda _n: woken.append(interrupt._active.wake.is_set()), lambda _n: None):
        interrupt._handle(signal.SIGTERM, None)
        assert woken == [False] and interrupt._active.wake.is_set()

    def refuse(_n: str) -> None:
        raise KeyboardInterrupt
    with installed(refuse, lambda _n: None) as h, pytest.raises(KeyboardInterrupt):
        interrupt._handle(signal.SIGTERM, None)
    assert h.wake.is_set()          # a callback that raises still wakes the helper


def test_the_same_stop_delivered_twice_at_once_is_one(handlers):
    """A ^C reaches every process of the group, and the controller forwards it too."""
    interrupt._handle(signal.SIGINT, None)
    interrupt._handle(signal.SIGTERM, None)
    assert handlers == ["first SIGINT"]


def test_a_second_signal_later_stops_at_once(handlers):
    interrupt._handle(signal.SIGTERM, None)
    interrupt.STOP.t -= interrupt.DUPLICATE_S + 0.1          # as if it came a while ago
    interrupt._handle(signal.SIGTERM, None)
    interrupt._handle(signal.SIGTERM, None)
    assert handlers == ["first SIGTERM", "again SIGTERM"]
    assert interrupt.STOP.at_once


def test_a_real_signal_reaches_the_handler(handlers):
    os.kill(os.getpid(), signal.SIGTERM)
    assert handlers == ["first SIGTERM"]


def test_interrupted_is_not_swallowed_by_except_exception():
    with pytest.raises(interrupt.Interrupted):
        try:
            raise interrupt.Interrupted("interrupted by SIGTERM")
        except Exception:  # noqa: BLE001 - the point: a step's broad except lets it through
            pytest.fail("a step's `except Exception` caught the interruption")


def test_second_signal_kills_what_the_process_started():
    """stop_at_once in a child process: its own child is SIGKILLed, it exits 131."""
    code = ("import subprocess, sys, psutil\n"
            "from harness.session import interrupt\n"
            "kid = subprocess.Popen(['sleep', '60'], stdout=subprocess.DEVNULL,\n"
            "                       stderr=subprocess.DEVNULL)\n"
            "print(kid.pid, psutil.Process(kid.pid).create_time(), flush=True)\n"
            "interrupt.stop_at_once()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[1])
    printed = proc.stdout.split()
    assert len(printed) == 2, proc.stderr
    kid = Proc(int(printed[0]), float(printed[1]), "sleep")
    try:
        assert proc.returncode == interrupt.EXIT_AT_ONCE, proc.stderr
        assert "stopped at once" in proc.stderr
        # SIGKILL is sent before the exit, but a loaded machine may not have run the kid's
        # death yet (seen: state R just after); one not killed sleeps on for a minute.
        wait_for(lambda: not alive(kid), 30,
                 f"the kid (pid {kid.pid}), SIGKILLed by stop_at_once, to end")
    finally:
        interrupt.send([kid], signal.SIGKILL)           # one that outlived the stop
        _reap_adopted(kid)


def _reap_adopted(proc: Proc) -> None:
    """This test process is a subreaper: an orphan it adopted, once ended, is its to reap."""
    p = proc.same()
    with contextlib.suppress(psutil.Error, ChildProcessError):
        if p is not None and p.ppid() == os.getpid() and p.status() == psutil.STATUS_ZOMBIE:
            os.waitpid(proc.pid, os.WNOHANG)


JOB = """
import subprocess, sys, time
from harness.session import interrupt
RUN = [sys.executable, "-c", "import signal, sys, time; "
       "signal.signal(signal.SIGTERM, lambda *a: sys.exit(130)); "
       "print('run up', flush=True); time.sleep(60)", "pytest"]
try:
    with interrupt.job():
        for i in (1, 2):
            rc = subprocess.run(RUN).returncode
            print(f"run {i} exit {rc}", flush=True)
except KeyboardInterrupt:
    print("job unwound", flush=True)
"""


def test_a_job_forwards_the_stop_to_its_run_and_starts_no_other(tmp_path):
    """A job (gate --repeat, ripout, conformance) that started a run of ours: the run gets
    the signal and stops in order; the job then unwinds instead of starting the next one."""
    job = subprocess.Popen([sys.executable, "-c", JOB], stdout=subprocess.PIPE, text=True,
                           cwd=Path(__file__).resolve().parents[1])
    try:
        assert job.stdout.readline().strip() == "run up"
        job.send_signal(signal.SIGTERM)
        out, _ = job.communicate(timeout=interrupt.STOP_BOUND_S)
    finally:
        job.kill()
        job.wait()
    assert out.splitlines() == ["run 1 exit 130", "job unwound"], out


def test_an_unfinished_scenario_is_unknown_in_the_summary():
    line = {"nodeid": "scenarios/init/test_x.py::test_y", "outcome": "unknown",
            "duration_s": None, "runtime": "boxlite==0.10.8", "judgements": [
                unfinished_judgement("interrupted by SIGTERM before it started")]}
    summary = summarize([line])
    assert summary["passed"] == 0 and summary["failed"] == 0
    assert summary["unknown"] == [{"scenario": line["nodeid"], "runtime": "boxlite==0.10.8",
                                   "check": "scenario_finished",
                                   "summary": "interrupted by SIGTERM before it started"}]


class _History:
    def __init__(self) -> None:
        self.events: list[dict] = []

    def append(self, kind: str, **fields) -> None:
        self.events.append({"kind": kind, **fields})


def _call(exc: BaseException | None) -> pytest.CallInfo:
    def body() -> None:
        if exc is not None:
            raise exc
    return pytest.CallInfo.from_call(body, when="call")


def _line() -> dict:
    return {"nodeid": "scenarios/x.py::t", "outcome": "failed", "judgements": []}


def test_a_failure_after_the_stop_is_the_stops_not_the_runtimes(handlers):
    """The exception raised into a scenario can surface as another (hypothesis reports a
    FlakyFailure): still unknown, interrupted, saying what it surfaced as."""
    with stopping.scenario_steps():
        interrupt._handle(signal.SIGTERM, None)
    history = _History()
    line = stopping.result_line(_line(), _call(ValueError("Inconsistent results")), 3.2,
                                history)
    assert line["outcome"] == "unknown"
    (j,) = line["judgements"]
    assert j["status"] == "unknown" and j["check"] == "scenario_finished"
    assert j["summary"].startswith("interrupted by SIGTERM (it surfaced as ValueError: "
                                   "Inconsistent results) 3.2 s into the scenario")
    assert history.events[0]["event"] == "interrupted"


def test_without_a_stop_a_failure_stays_a_failure(handlers):
    with stopping.scenario_steps():
        pass
    line = stopping.result_line(_line(), _call(ValueError("a real one")), 1.0, _History())
    assert line == _line()


def test_a_stop_before_the_steps_interrupts_them_as_they_begin(handlers):
    interrupt._handle(signal.SIGTERM, None)
    with pytest.raises(interrupt.Interrupted):
        with stopping.scenario_steps():
            pytest.fail("the steps ran after the stop")


# -- full disks -----------------------------------------------------------------------------

def test_a_refused_write_leaves_the_history_readable(tmp_path, monkeypatch):
    path = tmp_path / "history.jsonl"
    h = GuardedHistory(path, {"scenario": "s"})
    h.append("note", step=1)
    real_write = os.write

    def half_then_full(fd, data):
        if fd == h._fd and len(data) > 8:
            real_write(fd, data[: len(data) // 2])          # the disk took half of it
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)
    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(DiskFull) as exc:
        h.append("note", step=2, payload="x" * 200)
    monkeypatch.undo()
    assert str(path) in str(exc.value) and "No space left" in str(exc.value)
    events = read_history(path)
    assert [e.get("step") for e in events] == [None, 1]
    h.append("note", step=3)                                # room again: it goes on
    assert [e.get("step") for e in read_history(path)][-1] == 3
    h.close()


def test_keep_whole_lines_cuts_a_torn_tail(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n{"c": ')
    keep_whole_lines(path)
    assert path.read_bytes() == b'{"a": 1}\n{"b": 2}\n'
    path.write_bytes(b'{"c": ')
    keep_whole_lines(path)
    assert path.read_bytes() == b""


def test_too_little_room_for_homes_names_the_folder(tmp_path):
    with pytest.raises(DiskFull) as exc:
        require_space(tmp_path, 10**9, "a scenario's runtime homes")
    assert str(tmp_path) in str(exc.value) and "MiB free" in str(exc.value)


def test_a_results_line_the_disk_refuses_is_said_with_its_path(tmp_path, capsys):
    report = tmp_path / "not-a-folder"
    report.write_text("a file where the report folder should be")
    assert append_result(report, {"nodeid": "scenarios/x.py::t"}) is False
    err = capsys.readouterr().err
    assert str(report / "results.jsonl") in err and "scenarios/x.py::t" in err


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 64 KiB tmpfs of our own under tmp_path, unmounted after."""
    point = tmp_path / "small"
    point.mkdir()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tmpfs", str(point).encode(), b"tmpfs", 0, b"size=64k") != 0:
        pytest.skip(f"cannot mount a tmpfs here: {os.strerror(ctypes.get_errno())}")
    try:
        yield point
    finally:
        if libc.umount2(str(point).encode(), 0) != 0:
            libc.umount2(str(point).encode(), 2)            # MNT_DETACH


def test_a_real_full_disk_under_the_report(small_tmpfs, capsys):
    """The history fills the tmpfs: a clear error naming it, and what was written reads."""
    path = small_tmpfs / "scenarios" / "s" / "history.jsonl"
    h = GuardedHistory(path, {"scenario": "s"})
    written = 0
    with pytest.raises(DiskFull) as exc:
        for i in range(10_000):
            h.append("note", i=i, pad="p" * 500)
            written = i + 1
    h.close()
    assert str(path) in str(exc.value)
    events = read_history(path)
    assert len(events) == written + 1 and events[-1]["i"] == written - 1
    # The results line of a full report folder: said, not a crash.
    assert append_result(small_tmpfs, {"nodeid": "n", "pad": "q" * 70_000}) is False
    assert str(small_tmpfs / "results.jsonl") in capsys.readouterr().err
    with pytest.raises(DiskFull) as exc:
        require_space(small_tmpfs, 1, "homes")
    assert str(small_tmpfs) in str(exc.value)


def test_results_lines_are_whole_json(tmp_path):
    for i in range(3):
        assert append_result(tmp_path, {"nodeid": f"n{i}", "outcome": "passed"})
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["nodeid"] for x in lines] == ["n0", "n1", "n2"]


def test_a_dead_workers_exit_is_read_once_it_has_ended(monkeypatch):
    """The controller hears of a worker's death when its channel closes, a moment before the
    process is a zombie: the exit it reports is read after the process has ended (CI of
    9105632 reported a SIGKILLed worker as 'it died')."""
    class Ending:                     # a worker's Popen, ended only on the fourth look
        looks = 0

        def poll(self):
            self.looks += 1
            return -signal.SIGKILL if self.looks >= 4 else None

    monkeypatch.setitem(stopping._run.popens, "gw9", Ending())
    assert stopping._worker_exit("gw9") == "it was killed by SIGKILL"

    class Hung:                       # never ends: the wait is bounded, and says so
        def poll(self):
            return None

    monkeypatch.setattr(stopping, "WORKER_EXIT_S", 0.2)
    monkeypatch.setitem(stopping._run.popens, "gw9", Hung())
    assert stopping._worker_exit("gw9") == "it died"
    monkeypatch.setitem(stopping._run.popens, "gw9", type("Exited", (), {"poll": lambda s: 3})())
    assert stopping._worker_exit("gw9") == "it exited with status 3"
