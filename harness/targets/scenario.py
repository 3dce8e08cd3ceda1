"""One conformance scenario's world: a target, its history, the process ledger, the faults,
and the verdicts (judged through the known-failures table, keyed on the target's version).

`conclude()` ends it: heals every fault, closes the target (its daemon stopped, what it left
killed and unmounted), judges faults healed, zombies under the daemon and the clean-up, and
writes verdicts.json beside the history and a row to the run's conformance.jsonl.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.common.procs import watch_ends
from harness.common.wait import poll_until
from harness.faults.base import Fault, FaultSet
from harness.faults.shim import Proc
from harness.judge import checks
from harness.judge.known import Judgement, KnownFailure, facts_from_event, judge
from harness.observe.history import History
from harness.observe.processes import ProcessLedger, ProcRecord, Sample
from harness.scenario.context import raise_if_failing
from harness.scenario.shutdown import runtime_gone_within
from harness.targets import pattern
from harness.targets.base import STOP_BOUND_S, Cleanup, Target, cmdline, describe

CONFORMANCE_ROWS = "conformance.jsonl"
# A process that ends within this long of its daemon's exit ended with it (the poll interval
# and the kernel's reaping); one that runs on longer was left running.
DAEMON_EXIT_GRACE_S = 1.0


@dataclass
class TargetScenario:
    node_id: str
    workdir: Path
    known: list[KnownFailure]
    report_dir: Path | None = None
    target: Target | None = None
    judgements: list[Judgement] = field(default_factory=list)
    concluded: bool = False
    teardown: dict[str, Any] = field(default_factory=dict)
    witnessed: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.history = History(self.workdir / "history.jsonl", {"scenario": self.node_id})
        self.history.watch(self._facts)
        self.ledger = ProcessLedger(on_sample=self._on_sample)
        self.faults = FaultSet(self.history)
        self._last_count = -1
        self._windows = itertools.count(1)
        self.ledger.start()

    def open(self, make: Callable[[TargetScenario], Target]) -> Target:
        self.target = make(self)
        self.ledger.own_children.update(self.target.own_pids())
        self.history.append("meta", event="target", runtime=self.target.label,
                            **self.target.describe())
        return self.target

    def _on_sample(self, s: Sample) -> None:
        if s.count != self._last_count or s.zombies:
            self._last_count = s.count
            self.history.append("observe", what="processes", count=s.count, kinds=s.by_name,
                                zombies=s.zombies)
        if self.target is None:
            return
        own = self.ledger.own_children
        own.update(self.target.own_pids())
        me = self.ledger.root_pid
        for z in s.zombies:
            # A process the target re-parents to init by design (a containerd shim): the
            # harness is that init here, and reaps it as init would.
            if z["ppid"] == me and z["pid"] not in own and self.target.adopts(z["name"]):
                try:
                    os.waitpid(z["pid"], os.WNOHANG)
                except ChildProcessError:
                    pass

    # -- arranging ------------------------------------------------------------------------
    def inject(self, fault: Fault) -> Fault:
        return self.faults.inject(fault)

    def note(self, **fields: Any) -> None:
        self.history.append("note", **fields)

    def _facts(self, event: dict[str, Any]) -> None:
        for fact in facts_from_event(event):
            self.witnessed.setdefault(fact, {"t": event.get("t")})

    def witness(self, name: str, **evidence: Any) -> None:
        """Record that a path of the target ran (a known failure's witness); see
        harness.scenario.context.Chaos.witness."""
        self.history.append("witness", name=name, **evidence)
        self.witnessed[name] = evidence

    @contextlib.contextmanager
    def window(self, seconds: float, what: str) -> Iterator[None]:
        """A stretch of time given to the runtime (to reap, to clean up), logged as an
        `observe_window` operation: bench-gate counts it as the runtime's wait, not as
        harness overhead."""
        req = f"window{next(self._windows)}"
        self.history.append("invoke", host="harness", op="observe_window", req=req,
                            args={"seconds": seconds, "waiting_for": what})
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.history.append("ok", host="harness", op="observe_window", req=req,
                                elapsed_s=round(time.monotonic() - t0, 3))

    def observe_for(self, seconds: float, what: str) -> None:
        """Keep the ledger sampling for `seconds` (waiting for `what` to show, if it will)."""
        def sample() -> bool:
            self.ledger.sample()
            return False            # a window: it runs its full length, sampling

        with self.window(seconds, what):
            poll_until(sample, seconds, what, self.ledger.interval_s)

    # -- judging --------------------------------------------------------------------------
    def judge(self, *verdicts: checks.Verdict) -> None:
        assert self.target is not None
        version = self.target.known_version
        for v in verdicts:
            j = judge(v, version or "0", self.node_id, self.known if version else [],
                      self.witnessed)
            self.judgements.append(j)
            self.history.append("verdict", **j.to_json())

    def zombies_under_daemon(self) -> list[dict[str, Any]]:
        """Every zombie whose parent, when it became one, was a daemon-side process of the
        target (dockerd, containerd, a shim; the BoxLite host, shim, bwrap)."""
        assert self.target is not None
        recs = list(self.ledger.records.values())
        out = []
        for z in self.ledger.zombie_records():
            ppid = _ppid_at(z, z.zombie_since or 0.0)
            parents = [r for r in recs if r.pid == ppid and r.create_time <= z.create_time]
            parent = max(parents, key=lambda r: r.create_time) if parents else None
            kind = parent and self.target.family_kind(parent.name, parent.cmd)
            if kind:
                out.append({**z.to_json(), "parent": f"{parent.name}[{ppid}]",
                            "parent_kind": kind})
        return out

    def conclude(self) -> list[Judgement]:
        """End the scenario and judge what it left; raise ScenarioFailed on a failing verdict."""
        if self.concluded:
            return self.judgements
        self.concluded = True
        self.faults.heal_all()
        cleanup = self._close_target()
        self.ledger.stop()
        self.judge(
            checks.faults_healed([{**f.describe(), "injected": f.injected, "healed": f.healed,
                                   "heal_error": f.heal_error} for f in self.faults.faults]),
            checks.no_zombies(self.zombies_under_daemon(), len(self.ledger.samples),
                              sampling_errors=self.ledger.errors))
        if cleanup is not None:
            self.judge(pattern.target_cleaned_up(cleanup.processes_left, cleanup.mounts_left,
                                                 cleanup.observed))
        self.teardown["killed"] = self.ledger.kill_leftovers()
        self.write_summary()
        raise_if_failing(self.judgements)
        return self.judgements

    def _close_target(self) -> Cleanup | None:
        if self.target is None or "cleanup" in self.teardown:
            return None
        # Everything of the target the ledger saw is checked for leftovers, not only what
        # the target's own scans caught.
        self.target.family_seen.update(
            Proc(r.pid, r.create_time, r.name) for r in list(self.ledger.records.values())
            if self.target.family_kind(r.name, r.cmd))
        try:
            cleanup = self.target.close()
        except Exception as exc:  # noqa: BLE001 - a teardown that broke is reported, not hidden
            self.teardown["cleanup"] = {"error": repr(exc)}
            return Cleanup(len(self.target.family_seen), processes_left=describe(
                p for p in self.target.family_seen if p.same() is not None),
                notes={"error": repr(exc)})
        self.teardown["cleanup"] = cleanup.to_json()
        self.history.append("observe", what="cleanup", **cleanup.to_json())
        return cleanup

    def safety_teardown(self) -> None:
        """Whatever happened, leave nothing running: heal, close the target, kill leftovers."""
        self.faults.heal_all()
        if not self.concluded:
            self._close_target()
            self.ledger.stop()
            self.teardown["killed"] = self.ledger.kill_leftovers()
            self.write_summary()
        self.history.close()

    def write_summary(self) -> None:
        target = self.target.describe() if self.target else None
        judgements = [j.to_json() for j in self.judgements]
        (self.workdir / "verdicts.json").write_text(json.dumps({
            "scenario": self.node_id, "target": target, "judgements": judgements,
            "processes": [r.to_json() for r in self.ledger.records.values()],
            "samples": [{"t": s.t, "count": s.count, "zombies": len(s.zombies),
                         "kinds": s.by_name} for s in self.ledger.samples],
            "teardown": self.teardown}, indent=1, default=str))
        if self.report_dir is not None and target is not None:
            append_row(self.report_dir, {"nodeid": self.node_id, **target,
                                         "workdir": str(self.workdir),
                                         "judgements": judgements})

    def keep_artifacts(self) -> Path:
        """The target's daemon logs and state already live in the scenario's folder."""
        return self.workdir

    @property
    def ready(self) -> bool:
        """A world whose target could not be set up (skipped) has nothing to conclude."""
        return self.target is not None

    def result(self, outcome: str, duration_s: float) -> dict[str, Any]:
        """This scenario's line in the run's results.jsonl (the HTML report reads it)."""
        return {"nodeid": self.node_id, "outcome": outcome, "duration_s": round(duration_s, 3),
                "runtime": self.target.label if self.target else "?",
                "runtime_version": self.target.version if self.target else "?",
                "workdir": str(self.workdir),
                "judgements": [j.to_json() for j in self.judgements]}


def append_row(report_dir: Path, row: dict[str, Any]) -> None:
    """One line per scenario (or skip) in the run's conformance.jsonl; one write each, so
    parallel workers never tear a line."""
    report_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(report_dir / CONFORMANCE_ROWS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (json.dumps(row, default=str) + "\n").encode())
    finally:
        os.close(fd)


def _ppid_at(rec: ProcRecord, t: float) -> int:
    before = [ppid for when, ppid in rec.ppids if when <= t + 1e-6]
    return before[-1] if before else rec.ppid


# -- steps --------------------------------------------------------------------------------

@dataclass
class StopRun:
    """What a signal to the daemon did; times in seconds from the signal (monotonic)."""

    signal: str
    exit_s: float | None                    # None: still running at the bound (then killed)
    procs: list[dict[str, Any]]             # every family process alive at the signal

    def facts(self) -> dict[str, Any]:
        return {"signal": self.signal, "exit_s": self.exit_s, "processes": self.procs}

    def verdicts(self, bound_s: float = STOP_BOUND_S,
                 grace_s: float = DAEMON_EXIT_GRACE_S) -> list[checks.Verdict]:
        """The daemon exits within `bound_s`; every process it had ends within `bound_s` of
        the signal, and none runs on more than `grace_s` past the daemon's own exit."""
        sig = self.signal.lower()
        after_exit = [{**p, "ended_s": None if p["ended_s"] is None or self.exit_s is None
                       else round(p["ended_s"] - self.exit_s, 3)} for p in self.procs]
        return [checks.within_bound(f"daemon_exit_after_{sig}", self.exit_s, bound_s),
                runtime_gone_within(self.procs, bound_s, sig),
                runtime_gone_within(after_exit, grace_s, "daemon_exit")]


def stop_daemon(target: Target, sig: int = signal.SIGTERM,
                bound_s: float = STOP_BOUND_S) -> StopRun:
    """Signal the daemon, time its exit and the end of every process of its family."""
    at_signal = target.family()
    kinds = {p: target.family_kind(p.name, cmdline(p)) or "instance" for p in at_signal}
    t0 = time.monotonic()
    target.signal_daemon(sig)
    exit_s = target.wait_daemon_exit(bound_s)
    if exit_s is None:
        target.signal_daemon(signal.SIGKILL)
        target.wait_daemon_exit(30.0)
    # Long enough to see what outlives the daemon, and whether it ends within the bound.
    ends = watch_ends(at_signal, t0, max(0.0, bound_s + 1.0 - (time.monotonic() - t0)))
    procs = [{"pid": p.pid, "name": p.name, "kind": kinds[p], "ended_s": ends[p]}
             for p in at_signal]
    return StopRun(signal.Signals(sig).name, None if exit_s is None else round(exit_s, 3),
                   procs)
