"""A heal judges a tracee once it has settled (harness.faults.syscall.left_after_detach): a
thread that strace left in a group stop reads 'R' until it has run once to stop again, and a
look in that moment would miss the stop. Fake /proc reads; the real strace is in
tests/test_points_io_error.py."""

from __future__ import annotations

import time

import pytest

from harness.faults import syscall


def fake_proc(monkeypatch, states: list[str]) -> list[str]:
    """One process (pid 7, one thread) whose State reads each of `states` in turn, then the
    last one for good; returns the states read so far."""
    seen: list[str] = []

    def status(pid: int, tid: int) -> dict[str, str]:
        state = states[min(len(seen), len(states) - 1)]
        seen.append(state)
        return {"State": state, "TracerPid": "0"}

    monkeypatch.setattr(syscall, "threads", lambda pid: [pid])
    monkeypatch.setattr(syscall, "task_status", status)
    return seen


def test_a_stop_rearmed_by_the_detach_is_seen_once_the_thread_has_run(monkeypatch):
    fake_proc(monkeypatch, ["R (running)"] * 3 + ["T (stopped)"])
    bad = syscall.left_after_detach([7], tracer=99, settle_s=5)
    assert [b["State"] for b in bad] == ["T (stopped)"]


def test_without_the_settle_the_same_thread_passes(monkeypatch):
    # The look the heal made before: at the first read the thread is still running.
    fake_proc(monkeypatch, ["R (running)"] * 3 + ["T (stopped)"])
    assert syscall.left_traced([7]) == []


@pytest.mark.parametrize("state", ["S (sleeping)", "D (disk sleep)"])
def test_a_sleeping_thread_is_judged_at_once(monkeypatch, state):
    seen = fake_proc(monkeypatch, [state])
    t0 = time.monotonic()
    assert syscall.left_after_detach([7], tracer=99, settle_s=5) == []
    assert time.monotonic() - t0 < 2.5 and len(seen) <= 4


def test_a_busy_thread_is_judged_running_after_the_settle(monkeypatch):
    fake_proc(monkeypatch, ["R (running)"])
    t0 = time.monotonic()
    assert syscall.left_after_detach([7], tracer=99, settle_s=0.2) == []
    assert time.monotonic() - t0 >= 0.2
