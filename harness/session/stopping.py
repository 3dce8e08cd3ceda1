"""The pytest side of a run's end: orderly stops, dead workers, and what a run leaves.

SIGTERM/SIGINT/SIGHUP (harness.session.interrupt): on a worker or a serial run, the scenario
in flight gets `Interrupted` raised in its steps (its teardown heals its faults and stops its
hosts; its verdict is unknown) and nothing new starts. A controller forwards the signal to its
workers (pid and start time), stops scheduling, SIGKILLs a worker still running after WORKER_STOP_S,
then writes results for every unfinished scenario and the report within the stop bound. A
worker whose controller is gone stops on its own. A worker that dies costs its scenario only
(`unknown`, saying which worker) and what it left is swept at once (harness.leftovers.sweep).
The run's peak /tmp footprint is sampled and printed.

Registered by harness.plugin (`pytest_plugins`); the plugin calls `scenario_steps()` around a
scenario's steps and conclusion, `result_line()` for its results line, and `write_report()`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.common.errors import HarnessError
from harness.common.procs import Proc, alive
from harness.common.wait import poll_until
from harness.judge.known import load_table
from harness.leftovers import markers, sweep
from harness.leftovers.footprint import FootprintSampler
from harness.scenario.context import keep_whole_lines
from harness.session import interrupt
from harness.session.runfolder import report_key, slug

INTERRUPTED_CHECK = "scenario_finished"
FOOTPRINT = "footprint.json"
# What a stopping run keeps of its bound after the report, to end pytest and exit.
REPORT_MARGIN_S = 2.0
# How long a worker whose channel closed may take to become a zombie (seconds): the kernel's
# exit path, a few milliseconds; bounded generously for a loaded machine.
WORKER_EXIT_S = 5.0


class _RunState:
    """This process's part of the run (one pytest session per process)."""

    def __init__(self) -> None:
        self.config: pytest.Config | None = None
        self.session: pytest.Session | None = None
        self.in_call = False            # a scenario's steps (or its conclusion) are running
        self.call_t0 = float("inf")     # when they began (monotonic)
        self.in_loop = False
        self.workers: dict[str, Proc] = {}          # xdist gateway id -> worker process
        self.popens: dict[str, Any] = {}            # ... and execnet's Popen of it
        self.killed_workers: set[str] = set()       # SIGKILLed past the stop bound
        self.collected: list[str] = []
        self.finished: set[str] = set()
        self.footprint: FootprintSampler | None = None
        self.handlers: interrupt.Handlers | None = None
        self.session_over = False       # a worker past its session: nothing left to stop


_run = _RunState()


def _is_worker() -> bool:
    return bool(os.environ.get("PYTEST_XDIST_WORKER"))


def _dsession(config: pytest.Config) -> Any:
    return config.pluginmanager.getplugin("dsession")


def _report(config: pytest.Config) -> Path:
    return config.stash[report_key]


def pytest_configure(config: pytest.Config) -> None:
    if not _is_worker():
        markers.claim_run()
        if config.getoption("--chaos-report"):     # a run (gate, ./go test), not a quick pytest
            sweep.sweep_at_start()
            _run.footprint = FootprintSampler(markers.run_owner()).start()
    else:
        # What this worker starts carries its identity (see harness.leftovers.markers), and it stops
        # with its controller.
        os.environ[markers.OWNER_ENV] = markers.me().token
        interrupt.watch_parent()
    _run.config = config
    interrupt.delegated = True
    _run.handlers = interrupt.install(_first_signal, _again_signal)
    interrupt.on_wake(_run.handlers, lambda: _stop_helper(config))


def pytest_unconfigure(config: pytest.Config) -> None:
    if _run.config is config and _run.handlers is not None:
        interrupt.restore(_run.handlers)
        interrupt.delegated = False


def _first_signal(_name: str) -> None:
    """In the signal handler (main thread): stop scheduling, end the scenario in flight."""
    why = f"interrupted by {interrupt.STOP.describe()}"
    if _run.session is not None:
        _run.session.shouldstop = why
    if _run.in_call:
        raise interrupt.Interrupted(why)
    if not _is_worker() and not _run.in_loop:
        raise KeyboardInterrupt         # before any scenario: pytest ends the session itself


def _again_signal(_name: str) -> None:
    """A second signal: stop at once. A worker past its session has nothing left to stop
    (execnet SIGINTs a worker whose controller said exit while it was still finishing)."""
    if _run.session_over:
        os._exit(interrupt.EXIT_INTERRUPTED)
    interrupt.stop_at_once()


def _stop_helper(config: pytest.Config) -> None:
    """The rest of the orderly stop, on a helper thread; past the bound, stop at once."""
    stop = interrupt.STOP
    assert stop.t is not None
    if _is_worker():
        interactor = next((p for p in config.pluginmanager.get_plugins()
                           if type(p).__name__ == "WorkerInteractor"), None)
        if interactor is not None:
            # Wakes a worker waiting for work; its runs loop then ends.
            interactor.handle_command(("shutdown", {}))
    elif _dsession(config) is not None:
        ds = _dsession(config)
        workers = dict(_run.workers)
        interrupt.send(workers.values(), signal.SIGTERM)
        with contextlib.suppress(ImportError):
            # The report's imports (matplotlib) load while the workers end their scenarios.
            import harness.report.build  # noqa: F401
        ds._max_worker_restart = 0          # a worker that dies now is not replaced
        ds.worker_bxc_wake = lambda **_kw: None

        def workers_ended() -> bool:
            if not ds.shouldstop:           # (re)set: a loop starting now clears it
                ds.shouldstop = f"interrupted by {stop.describe()}"
            ds.queue.put(("bxc_wake", {}))      # the controller's loop checks shouldstop
            return not any(map(alive, workers.values()))
        poll_until(workers_ended, max(0.0, stop.t + interrupt.WORKER_STOP_S - time.monotonic()),
                   "the workers to end their scenarios", 0.2)
        late = {gw: p for gw, p in workers.items() if alive(p)}
        _run.killed_workers.update(late)
        interrupt.send(late.values(), signal.SIGKILL)
    interrupt.enforce_bound()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_newgateway(gateway: Any) -> None:
    """On the controller: each worker by pid and start time (a signal is forwarded to it and
    its folders swept by that identity, never by name)."""
    popen = getattr(getattr(gateway, "_io", None), "popen", None)
    proc = interrupt.as_proc(psutil.Process(popen.pid)) if popen is not None else None
    if proc is not None:
        _run.workers[gateway.id] = proc
        _run.popens[gateway.id] = popen


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    if not _run.collected:
        _run.collected = list(ids)


def pytest_collection_finish(session: pytest.Session) -> None:
    if not _run.collected:
        _run.collected = [i.nodeid for i in session.items]


def pytest_sessionstart(session: pytest.Session) -> None:
    _run.session = session


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session):
    _run.in_loop = True
    if interrupt.STOP.requested:
        session.shouldstop = f"interrupted by {interrupt.STOP.describe()}"
    try:
        return (yield)
    finally:
        _run.in_loop = False


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    """Once the run is stopping, no scenario starts."""
    return True if interrupt.STOP.requested else None


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """On the controller, a worker that died: what it left goes now (its hosts, their boxes,
    its homes, after copying a scenario's artifacts), by its identity and marker."""
    proc = _run.workers.get(getattr(node.gateway, "id", ""))
    if error is None or proc is None:
        return
    rep = sweep.sweep(own_run=markers.run_owner(),
                      only_owner=markers.Owner(proc.pid, proc.create_time))
    _reap_adopted()
    if rep.swept:
        print(f"\nboxlite-chaos: worker {node.gateway.id} (pid {proc.pid}) died; "
              f"{rep.headline()}", flush=True)


def _reap_adopted() -> list[int]:
    """The controller is a subreaper: what a dead worker left (its hosts, their boxes)
    ends up its child. Reap those zombies; never a worker (execnet waits on those)."""
    workers = {p.pid for p in _run.workers.values()}
    reaped = []
    try:
        kids = psutil.Process().children()
    except psutil.Error:
        return reaped
    for p in kids:
        try:
            if p.pid in workers or p.status() != psutil.STATUS_ZOMBIE:
                continue
            os.waitpid(p.pid, os.WNOHANG)
            reaped.append(p.pid)
        except (psutil.Error, ChildProcessError):
            continue
    return reaped


def _worker_exit(gw: str) -> str:
    if gw in _run.killed_workers:
        return (f"SIGKILLed by the controller: it was still running "
                f"{interrupt.WORKER_STOP_S:.0f} s after {interrupt.STOP.describe()}")
    popen = _run.popens.get(gw)
    rc = None
    if popen is not None:
        # The worker's channel closes when the kernel closes its files, a moment before the
        # process becomes a zombie: a poll at once can still find it alive (seen in CI, a
        # SIGKILLed worker reported as "it died"). Its exit is imminent; wait for it, bounded.
        poll_until(lambda: popen.poll() is not None, WORKER_EXIT_S,
                   f"worker {gw}'s exit status after its channel closed", interval_s=0.02)
        rc = popen.poll()
    if rc is not None and rc < 0:
        return f"it was killed by {signal.Signals(-rc).name}"
    return f"it exited with status {rc}" if rc is not None else "it died"


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem: str, report: Any, sched: Any) -> None:
    """On the controller: the scenario a worker was running when it died gets its line in
    results.jsonl, `unknown`, saying which worker and how it ended."""
    node = getattr(report, "node", None)
    gw = getattr(getattr(node, "gateway", None), "id", "?")
    proc = _run.workers.get(gw)
    assert _run.config is not None
    _run.finished.add(crashitem)
    if crashitem in _result_nodeids(_run.config):
        return      # it wrote its own (an interrupted scenario whose teardown did not end)
    who = f"worker {gw}" + (f" (pid {proc.pid})" if proc else "")
    _write_unfinished(_run.config, crashitem,
                      f"{who} ended while running it ({_worker_exit(gw)}); "
                      "its checks were not judged")


def unfinished_judgement(summary: str, **evidence: Any) -> dict[str, Any]:
    """The verdict of a scenario that did not finish: unknown (it fails the gate)."""
    return {"check": INTERRUPTED_CHECK, "status": "unknown", "evidence": evidence,
            "summary": summary, "outcome": "fail", "known_failure": None}


def _write_unfinished(config: pytest.Config, nodeid: str, summary: str) -> None:
    report = _report(config)
    workdir = report / "scenarios" / slug(nodeid)
    started = (workdir / "history.jsonl").is_file()
    meta = _history_meta(workdir / "history.jsonl") if started else {}
    append_result(report, {
        "nodeid": nodeid, "outcome": "unknown", "duration_s": None,
        "runtime": meta.get("runtime") or config.getoption("--runtime"),
        "runtime_version": meta.get("runtime_version"),
        "workdir": str(workdir) if started else None,
        "judgements": [unfinished_judgement(summary, started=started)]})


def _history_meta(path: Path) -> dict[str, Any]:
    try:
        with open(path) as fh:
            first = json.loads(fh.readline())
        return first if isinstance(first, dict) else {}
    except (OSError, ValueError):
        return {}


def append_result(report: Path, line: dict[str, Any]) -> bool:
    """One line of results.jsonl in one write (workers append concurrently); a full disk is
    said, naming the file, and does not end the run."""
    path = report / "results.jsonl"
    data = (json.dumps(line, default=str) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            if os.write(fd, data) != len(data):     # the disk took part of it
                keep_whole_lines(path)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        finally:
            os.close(fd)
        return True
    except OSError as exc:
        print(f"\nboxlite-chaos: error: could not write {path}: {exc.strerror or exc}; "
              f"{line.get('nodeid')} has no result line", file=sys.stderr, flush=True)
        return False


def _result_nodeids(config: pytest.Config) -> set[str]:
    have = set()
    with contextlib.suppress(OSError):
        for line in (_report(config) / "results.jsonl").read_text().splitlines():
            with contextlib.suppress(ValueError, AttributeError):
                have.add(json.loads(line).get("nodeid"))
    return have


def _is_scenario(nodeid: str) -> bool:
    return nodeid.split("::", 1)[0].split("/", 1)[0] == "scenarios"


def _write_unfinished_lines(config: pytest.Config) -> int:
    """After a stop: every scenario collected that has no result, `unknown`."""
    have = _result_nodeids(config)
    n = 0
    for nodeid in _run.collected:
        if nodeid in have or nodeid in _run.finished or not _is_scenario(nodeid):
            continue
        started = (_report(config) / "scenarios" / slug(nodeid) / "history.jsonl")
        _write_unfinished(config, nodeid, (
            f"interrupted by {interrupt.STOP.describe()} "
            + ("while it ran; it left no result" if started.is_file()
               else "before it started")))
        n += 1
    return n


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not _is_worker() and report.when == "teardown":
        _run.finished.add(report.nodeid)


@contextlib.contextmanager
def scenario_steps() -> Iterator[None]:
    """Around a scenario's steps and its conclusion: a stop interrupts them there."""
    _run.in_call, _run.call_t0 = True, time.monotonic()
    try:
        if interrupt.STOP.requested:
            raise interrupt.Interrupted(f"interrupted by {interrupt.STOP.describe()}")
        yield
    except interrupt.Interrupted as exc:
        # Without the steps' frames: where they were is in the history, and formatting a
        # deep traceback (hypothesis's) took seconds of the stop bound.
        raise interrupt.Interrupted(str(exc)) from None
    finally:
        _run.in_call = False


def result_line(line: dict[str, Any], call: pytest.CallInfo, duration_s: float,
                history: Any) -> dict[str, Any]:
    """A scenario's results line; an interrupted one is `unknown`, saying when and why.

    Interrupted is a scenario that ended in `Interrupted`, and also one that failed any other
    way after the stop came while it ran: the exception raised into its steps can surface as
    something else (a hypothesis test reports a FlakyFailure; one raised inside an import's
    compile, a SystemError), and that failure is the stop's, not the runtime's."""
    exc = call.excinfo.value if call.excinfo is not None else None
    stop = interrupt.STOP
    if not (isinstance(exc, interrupt.Interrupted)
            or (exc is not None and stop.t is not None and stop.t >= _run.call_t0)):
        return line
    why = f"interrupted by {stop.describe()}"
    if not isinstance(exc, interrupt.Interrupted):
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        why += f" (it surfaced as {type(exc).__name__}: {first})"
    with contextlib.suppress(HarnessError):         # a full disk: said by the caller
        history.append("meta", event="interrupted", why=why, after_s=round(duration_s, 3))
    line["outcome"] = "unknown"
    when = ("as its steps began" if duration_s < 0.05
            else f"{duration_s:.1f} s into the scenario")
    line["judgements"].append(unfinished_judgement(
        f"{why} {when}; its checks were not judged", signal=stop.signal, reason=stop.reason,
        exception=type(exc).__name__))
    return line


def before_report(session: pytest.Session) -> None:
    """On the controller at the session's end, before its report: the stop's results, what
    dead workers left, the footprint."""
    config = session.config
    if interrupt.STOP.requested:
        _write_unfinished_lines(config)
        session.exitstatus = interrupt.EXIT_INTERRUPTED
    if _run.workers:
        # The workers have ended: whatever one of them left (it died, or was killed past the
        # stop bound) is swept now, by this run's markers.
        rep = sweep.sweep(own_run=markers.run_owner())
        _reap_adopted()
        if rep.swept:
            print(f"\nboxlite-chaos: {rep.headline()} (left by this run's workers)")
    if _run.footprint is not None:
        fp = _run.footprint.stop()
        with contextlib.suppress(OSError):
            (_report(config) / FOOTPRINT).write_text(json.dumps(fp))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    if interrupt.STOP.requested:
        _skip_idle_hypothesis(session.config)
    if _is_worker():
        _run.session_over = True


def write_report(path: Path) -> None:
    """The run's report; a stopping run's within the stop bound."""
    if interrupt.STOP.requested:
        _report_within_bound(path)
    else:
        _build_report(path)


def _build_report(path: Path) -> None:
    from harness.report.build import build_report
    try:
        build_report(path)
    except OSError as exc:
        print(f"boxlite-chaos: error: the report could not be written under {path}: "
              f"{exc.strerror or exc}; rebuild it with `boxlite-chaos report {path}`",
              file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - a broken report must not hide the verdicts
        print(f"boxlite-chaos: report could not be built: {exc!r}")


def _report_within_bound(path: Path) -> None:
    """A stopping run: summary.json first (no drawing: quick), then report.html with what is
    left of the stop bound (its timelines take about 0.5 s a scenario on 2 busy cores); past
    that, the run exits without it and says how to build it."""
    from harness.report.build import known_seen, known_summary, load_results, summarize
    try:
        results = load_results(path)
        summary = summarize(results)
        with contextlib.suppress(HarnessError):
            summary["known_failures_seen"] = known_summary(known_seen(results, load_table()))
        (path / "summary.json").write_text(json.dumps(summary, indent=1))
        interrupt.STOP.results_written = True
    except (OSError, HarnessError) as exc:
        print(f"boxlite-chaos: error: summary.json not written under {path}: {exc}",
              file=sys.stderr)
    assert interrupt.STOP.t is not None
    left = interrupt.STOP.t + interrupt.STOP_BOUND_S - REPORT_MARGIN_S - time.monotonic()
    builder = threading.Thread(target=_build_report, args=(path,), name="report", daemon=True)
    if left > 1.0:
        builder.start()
        builder.join(left)
    if builder.is_alive():
        interrupt.exit_without_finalizing(interrupt.EXIT_INTERRUPTED)
    if left <= 1.0 or builder.is_alive():
        print(f"boxlite-chaos: report.html was not finished within the "
              f"{interrupt.STOP_BOUND_S:.0f} s stop bound; build it with "
              f"`boxlite-chaos report {path}`", file=sys.stderr, flush=True)


def _skip_idle_hypothesis(config: pytest.Config) -> None:
    """A stopping process that never ran a hypothesis test skips hypothesis's end-of-session
    summary: it would import hypothesis only to say nothing (4-5 s with assertion rewriting
    on 2 busy cores, most of the stop bound)."""
    if "hypothesis" in sys.modules:
        return
    for _name, plugin in config.pluginmanager.list_name_plugin():
        if getattr(plugin, "__name__", "") == "_hypothesis_pytestplugin":
            config.pluginmanager.unregister(plugin)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _is_worker():
        return
    if _run.footprint is not None and _run.footprint.samples:
        terminalreporter.write_line(f"boxlite-chaos: {_run.footprint.line()}")
    if interrupt.STOP.requested:
        terminalreporter.write_line(
            f"boxlite-chaos: interrupted by {interrupt.STOP.describe()}; unfinished "
            f"scenarios are unknown in the report ({interrupt.STOP.elapsed():.1f} s after "
            "the signal)")
