"""Orderly stops under SIGTERM, SIGINT or SIGHUP (a CI cancel, a ^C, a closed terminal), and
the exit statuses that say how a run ended.

The first signal asks for an orderly stop: the scenario in flight ends where it is (its
teardown heals its faults and stops its hosts; its verdict is `unknown`, "interrupted"),
nothing new starts, the report is written with every unfinished scenario `unknown`, and the
run exits EXIT_INTERRUPTED, all within STOP_BOUND_S. A second signal, at least DUPLICATE_S
after the first (one ^C reaches every process of the terminal's group at once, and a
controller forwards it to its workers too), stops at once: every process the run started is
SIGKILLed (by pid and start time) and it exits EXIT_AT_ONCE. So does a stop that runs past
STOP_BOUND_S before every result is written (after that, only report.html is given up, and the
exit is still EXIT_INTERRUPTED). What ran is in the histories and results.jsonl;
`boxlite-chaos report RUN` rebuilds the page and the next run (or `boxlite-chaos sweep`)
removes the homes left behind.

Signal handlers here only set state, send signals and raise: a handler runs in the main
thread between two bytecodes, and taking a lock the main thread may hold would deadlock.
The rest runs on a helper thread woken through `on_wake`.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psutil

from harness.common.procs import Proc, alive
from harness.common.wait import hold, poll_until, wait_for

# 128 + SIGINT, as a shell reports a ^C'd command: interrupted, stopped in order, reported.
EXIT_INTERRUPTED = 130
# Interrupted and stopped at once (a second signal, or the stop bound ran out).
EXIT_AT_ONCE = 131
STOP_BOUND_S = 15.0
# How long a controller waits for its workers to end their scenarios before SIGKILLing them;
# the rest of STOP_BOUND_S is for the report.
WORKER_STOP_S = 10.0
DUPLICATE_S = 1.0
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PARENT_POLL_S = 0.25
# Command lines of the runs a job starts (pytest, gate): they get the signal forwarded.
RUN_MARKS = ("harness.cli", "pytest", "boxlite-chaos")


class Interrupted(BaseException):
    """Raised in a scenario's steps when its run is told to stop. Not an Exception, so no
    `except Exception` in a step swallows it; the scenario's teardown still runs."""


@dataclass
class Stop:
    """This process's stop: which signal asked for it, when (monotonic), and why."""

    signal: str | None = None
    t: float | None = None
    reason: str = ""
    at_once: bool = False
    # Every scenario's result and the summary are written: past the bound, what is left
    # (report.html) is given up, and the stop still counts as orderly.
    results_written: bool = False

    @property
    def requested(self) -> bool:
        return self.t is not None

    def elapsed(self) -> float:
        return 0.0 if self.t is None else time.monotonic() - self.t

    def describe(self) -> str:
        return f"{self.signal}" + (f" ({self.reason})" if self.reason else "")


STOP = Stop()


@dataclass
class Handlers:
    """One installation of the handlers: its callbacks, the event its helper thread waits
    on, and what it replaced (restored by `restore`)."""

    on_first: Callable[[str], None] | None
    on_again: Callable[[str], None]
    wake: threading.Event = field(default_factory=threading.Event)
    previous: dict[int, Any] = field(default_factory=dict)
    outer: Handlers | None = None


_active: Handlers | None = None


def _handle(signum: int, _frame: Any) -> None:
    now, name, h = time.monotonic(), signal.Signals(signum).name, _active
    if h is None:
        return
    if STOP.t is None:
        STOP.signal, STOP.t = name, now
        try:
            if h.on_first is not None:
                h.on_first(name)        # may raise into the main thread
        finally:
            # The helper wakes only once on_first has looked: a job's helper ends the runs
            # whose presence on_first checks, and woken first it could end them before the
            # check, which then unwound a job with a run that had stopped in order.
            h.wake.set()
    elif now - STOP.t >= DUPLICATE_S and not STOP.at_once:
        STOP.at_once = True
        h.on_again(name)


def install(on_first: Callable[[str], None] | None,
            on_again: Callable[[str], None] | None = None) -> Handlers:
    """Handle SIGNALS with these callbacks (run in the main thread, inside the handler);
    a second signal stops at once unless `on_again` says otherwise."""
    global _active
    h = Handlers(on_first, on_again or (lambda _name: stop_at_once()), outer=_active)
    for sig in SIGNALS:
        h.previous[sig] = signal.signal(sig, _handle)
    _active = h
    return h


def restore(h: Handlers) -> None:
    global _active
    for sig, handler in h.previous.items():
        with contextlib.suppress(TypeError, ValueError):
            signal.signal(sig, handler)
    _active = h.outer


def reset() -> None:
    """Forget a stop (tests)."""
    STOP.signal, STOP.t, STOP.reason, STOP.at_once = None, None, "", False
    STOP.results_written = False


# -- processes ------------------------------------------------------------------------------

def as_proc(p: psutil.Process) -> Proc | None:
    try:
        return Proc(p.pid, p.create_time(), p.name())
    except psutil.Error:
        return None


def descendants(pid: int | None = None) -> list[Proc]:
    try:
        kids = psutil.Process(pid or os.getpid()).children(recursive=True)
    except psutil.Error:
        return []
    return [x for x in map(as_proc, kids) if x is not None]


def send(procs: Iterable[Proc], sig: int) -> list[Proc]:
    """Signal each process that is still the one recorded (pid and start time); SIGCONT first
    for SIGKILL, so a frozen one can die. Returns those signalled."""
    done = []
    for proc in procs:
        p = proc.same()
        if p is None:
            continue
        try:
            if sig == signal.SIGKILL:
                p.send_signal(signal.SIGCONT)
            p.send_signal(sig)
            done.append(proc)
        except psutil.Error:
            continue
    return done


def wait_ended(procs: Iterable[Proc], until: float, interval_s: float = 0.05) -> list[Proc]:
    """Wait until each has ended or the monotonic time `until`; returns those still running."""
    procs = list(procs)
    poll_until(lambda: not any(map(alive, procs)), max(0.0, until - time.monotonic()),
               f"{len(procs)} process(es) to end", interval_s)
    return [p for p in procs if alive(p)]


def stop_at_once(code: int = EXIT_AT_ONCE, why: str = "") -> None:
    """SIGKILL every process this one started (and adopted), then leave without cleanup."""
    STOP.at_once = True
    send(descendants(), signal.SIGKILL)
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"boxlite-chaos: stopped at once ({why or STOP.describe()}); "
                         f"exit {code}\n")
        sys.stderr.flush()
    os._exit(code)


def enforce_bound(bound_s: float = STOP_BOUND_S) -> None:
    """On a helper thread: once the stop has taken `bound_s`, stop at once; exit
    EXIT_INTERRUPTED still if the results were all written by then."""
    assert STOP.t is not None
    hold(STOP.t + bound_s - time.monotonic(), "the orderly stop's bound")
    why = f"{STOP.describe()}: the stop passed its {bound_s:.0f} s bound"
    if STOP.results_written:
        stop_at_once(EXIT_INTERRUPTED, why + " with every result written; report.html "
                     "was not finished (`boxlite-chaos report RUN` builds it)")
    stop_at_once(EXIT_AT_ONCE, why)


def exit_without_finalizing(code: int) -> None:
    """At exit, leave with `code` before the interpreter finalizes: a daemon thread still
    in C++ (a report drawing with matplotlib when the bound ran out) would abort it."""
    def leave() -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    atexit.register(leave)


def on_wake(h: Handlers, fn: Callable[[], None]) -> threading.Thread:
    """Run `fn` on a daemon thread once the first signal has come to these handlers (after
    their `on_first` has run)."""
    def loop() -> None:
        h.wake.wait()
        fn()
    t = threading.Thread(target=loop, name="orderly-stop", daemon=True)
    t.start()
    return t


def watch_parent(poll_s: float = PARENT_POLL_S) -> threading.Thread:
    """A worker stops with its controller: once its parent is gone (it is re-parented),
    it signals itself, and its own orderly stop runs."""
    ppid = os.getppid()

    def loop() -> None:
        # No deadline: it watches for as long as the worker lives.
        wait_for(lambda: os.getppid() != ppid, math.inf, "the controller to go", poll_s)
        if not STOP.requested:
            STOP.reason = f"its controller, pid {ppid}, is gone"
            os.kill(os.getpid(), signal.SIGTERM)
    t = threading.Thread(target=loop, name="parent-watch", daemon=True)
    t.start()
    return t


# -- jobs started from the command line -----------------------------------------------------

_in_job = False
# A pytest session in this process handles the stop itself (harness.plugin).
delegated = False


def _run_children() -> list[Proc]:
    """This process's direct children that are runs of ours (pytest, gate)."""
    out = []
    try:
        kids = psutil.Process().children()
    except psutil.Error:
        return out
    for p in kids:
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if any(m in cmd for m in RUN_MARKS) and "host_main.py" not in cmd:
            proc = as_proc(p)
            if proc is not None:
                out.append(proc)
    return out


def _job_first(_name: str) -> None:
    if not _in_job or delegated:
        return
    if not _run_children():
        raise KeyboardInterrupt         # an in-process job unwinds through its own cleanup


def _job_helper() -> None:
    """Forward the stop to the runs this job started and give them their own bound to stop
    in order (and a little more: they enforce it themselves; SIGKILL their trees past it).
    The job then goes on to its end (what it writes of the runs that ended), starting no new
    run (`_no_new_runs`); one that has not ended by then is unwound (KeyboardInterrupt)."""
    kids = [] if delegated else _run_children()
    if not kids:
        return
    send(kids, signal.SIGTERM)
    assert STOP.t is not None
    until = STOP.t + STOP_BOUND_S + 2.0
    for kid in wait_ended(kids, until):
        send([*descendants(kid.pid), kid], signal.SIGKILL)
    poll_until(lambda: not _in_job, max(0.0, until - time.monotonic()),
               "the job to end after its runs stopped", 0.1)
    if _in_job:
        with contextlib.suppress(ValueError, OSError):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)


def _job_unwind(_signum: int, _frame: Any) -> None:
    if _in_job:
        raise KeyboardInterrupt


def _no_new_runs(event: str, args: tuple) -> None:
    """Once a job is stopping, it starts no new run (the next column, side or repeat)."""
    if event != "subprocess.Popen" or not STOP.requested or not _in_job:
        return
    argv = args[1] if len(args) > 1 else ""
    text = " ".join(map(str, argv)) if isinstance(argv, (list, tuple)) else str(argv)
    if any(m in text for m in RUN_MARKS):
        raise KeyboardInterrupt


_audit_added = False


@contextlib.contextmanager
def job() -> Any:
    """Around a command-line job: the stop is forwarded to the runs it started, and it
    starts no new one; an in-process job (soak) unwinds at once (KeyboardInterrupt). A second
    signal stops everything at once."""
    global _in_job, _audit_added
    handlers = install(_job_first)
    usr1 = signal.signal(signal.SIGUSR1, _job_unwind)
    if not _audit_added:
        sys.addaudithook(_no_new_runs)
        _audit_added = True
    on_wake(handlers, _job_helper)
    _in_job = True
    try:
        yield STOP
    finally:
        _in_job = False
        restore(handlers)
        signal.signal(signal.SIGUSR1, usr1)
