"""The faults' own mechanics (harness.faults): a heal that meets a process which ended
meanwhile still thaws the rest and is not an error. Real processes, children of this test."""

from __future__ import annotations

import signal
import subprocess

import psutil

from harness.common.wait import wait_for
from harness.faults.base import FaultSet
from harness.faults.shim import Proc, freeze_box


def _status(popen: subprocess.Popen) -> str:
    return psutil.Process(popen.pid).status()


def _proc(popen: subprocess.Popen) -> Proc:
    p = psutil.Process(popen.pid)
    return Proc(p.pid, p.create_time(), p.name())


class _EndsAtTheSignal(Proc):
    """A process that is found, then gone when the thawing signal comes (the race of a host
    killed during the heal), as psutil reports it."""

    def same(self) -> psutil.Process | None:
        p = super().same()
        if p is None:
            return None

        class GoneAtTheThaw:
            def send_signal(self, sig: int) -> None:
                if sig == signal.SIGCONT:
                    raise psutil.NoSuchProcess(p.pid)
                p.send_signal(sig)
        return GoneAtTheThaw()      # type: ignore[return-value]


def test_a_heal_thaws_every_process_still_there_when_one_ends_meanwhile():
    children = [subprocess.Popen(["sleep", "30"]) for _ in range(3)]
    try:
        tree = [_proc(c) for c in children]
        # reversed() heals the last first: it is the one that ends at the signal.
        tree[-1] = _EndsAtTheSignal(tree[-1].pid, tree[-1].create_time, tree[-1].name)
        faults = FaultSet()
        fault = faults.inject(freeze_box("/nonexistent", "box", tree))
        for c in children:
            wait_for(lambda c=c: _status(c) == psutil.STATUS_STOPPED, 5, f"{c.pid} to stop")
        faults.heal(fault)
        assert fault.healed and fault.heal_error is None
        for c in children[:2]:
            wait_for(lambda c=c: _status(c) != psutil.STATUS_STOPPED, 5, f"{c.pid} to go on")
    finally:
        for c in children:
            c.send_signal(signal.SIGCONT)
            c.kill()
            c.wait()
