"""Deadlines for every wait: monotonic, and they say what they were waiting for."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """A wait ran past its deadline; the message names what was awaited."""


class Deadline:
    def __init__(self, seconds: float, what: str) -> None:
        self.what = what
        self.seconds = seconds
        self.start = time.monotonic()
        self.end = self.start + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def elapsed(self) -> float:
        return time.monotonic() - self.start


def wait_for(probe: Callable[[], T | None], timeout_s: float, what: str,
             interval_s: float = 0.02) -> T:
    """Poll `probe` until it returns something truthy; raise WaitTimeout naming `what`."""
    deadline = Deadline(timeout_s, what)
    while True:
        value = probe()
        if value:
            return value
        if deadline.expired():
            raise WaitTimeout(f"gave up after {timeout_s:.1f}s waiting for {what}")
        time.sleep(min(interval_s, deadline.remaining()) or interval_s)


def poll_until(probe: Callable[[], object], timeout_s: float, what: str,
               interval_s: float = 0.2) -> bool:
    """Poll until `probe` is truthy; False when the deadline passes (for checks that judge
    the timeout themselves instead of raising). `what` names the awaited condition."""
    try:
        wait_for(probe, timeout_s, what, interval_s)
        return True
    except WaitTimeout:
        return False


def hold(seconds: float, why: str) -> None:
    """A deliberate pause that is part of a fault's timing (not a wait for a condition):
    bounded by definition, and it says why."""
    deadline = Deadline(seconds, why)
    while not deadline.expired():
        time.sleep(min(0.05, deadline.remaining()))
