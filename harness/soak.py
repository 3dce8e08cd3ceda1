"""Soak runs: one runtime home through a long stateful fault schedule, the model's invariants
checked after every step, trend verdicts judged by slope over the run, a failure shrunk.

The schedule is a hypothesis `RuleBasedStateMachine` (`SoakMachine`, in `harness.soak_machine`)
whose rules are create, start, freeze shim, crash shim, terminate host, kill host, restart host,
stop, remove, force remove (of a box whose start is in flight) and wait.
`SoakWorld` is the model: what each box should be, and after every step the checks that every
read path agrees on each record and says what the model expects (known runtime bugs judged
through the known-failures table under the scenarios' check ids), that no zombie lasts, that a
box has processes only while its start is in flight or it runs (none past the watchdog bound
otherwise), and that no record stays in a transitional status past its bound. Starts are slow
(17-30 s where guests cannot boot), so they run in the background while other rules proceed.

Why a manual driver and not hypothesis' runner: `run_state_machine_as_test` suits many short
examples and a soak is one long one. Its first example is always the simplest (the first enabled
rule, over and over), so `max_examples=1` runs a degenerate schedule; later examples switch whole
rules off (swarm testing); one example holds at most 8 KiB of choices (~1,500 steps); and a
failing example found elsewhere cannot be handed to its shrinker without its private database
format. So `drive()` chooses among the machine's enabled rules itself (weighted, from
`random.Random(seed)`) and calls them through the machine, recording each step as (rule, box
label, the box's state). A failure is shrunk by delta debugging over the recorded steps, each
candidate replayed on a fresh home until the same check fails again, and written out as a
history for `boxlite-chaos repro` and a schedule for `boxlite-chaos soak --replay`. The machine
still runs under hypothesis' own runner for short explorations:
`run_state_machine_as_test(lambda: SoakMachine(world))`.

Seeds: a seed fixes the driver's choices, not the schedule. Which rules are enabled at a step
depends on the runtime's timing (has a start resolved, has a shim spawned), so a seed gives the
same schedule only while the runtime answers at the same moments; on a loaded or different
machine it diverges after the first timing-dependent step. A recorded schedule (schedule.json)
replays its steps in order whatever the timing: each step waits for its box to be eligible again
(its start resolved, its shim spawned) or is skipped and reported. Its history replays through
`boxlite-chaos repro` with the recorded gaps instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import psutil

from harness import checks
from harness.checks import HOLDS, UNKNOWN, VIOLATED, Verdict, check
from harness.context import WATCHDOG_BOUND_S, Chaos, ScenarioFailed
from harness.errors import HarnessError, HostError, SetupError
from harness.faults.base import Fault
from harness.faults.shim import box_tree, freeze_box, kill_shim, shim_of
from harness.known import FAIL, FAILING, FIXED, KNOWN, Judgement, judge
from harness.observe.processes import classify
from harness.observe.records import RecordRead, read_store, store_integrity
from harness.runtime.host import RUNNER, RuntimeHost, RuntimeOpError
from harness.runtime.spec import DEFAULT_SPEC
from harness.steps import START_BOUND_S
from harness.wait import Deadline

if TYPE_CHECKING:
    from harness.soak_machine import SoakMachine

NODE_ID = "soak"
REPORTS = Path(__file__).resolve().parent.parent / "reports"

MAX_BOXES = 4               # records alive at once: bounds the home while boxes churn
MAX_STARTING = 2            # starts in flight at once (each is a VM on a shared machine)
# A fault lands well inside the window in which a VM here has not yet failed on its own
# (KVM_EXIT_INTERNAL_ERROR 15-20 s after start), so its outcome is the fault's.
FAULT_WINDOW_S = 8.0
WAIT_S = 3.0                # the wait rule: until a start resolves, at most this long
# A host lives this long before it may be signalled, so each host's trend segment is long
# enough to judge and slow leaks have time to show.
MIN_HOST_STEPS = 20
MIN_HOST_S = 150.0
SHUTDOWN_BOUND_S = 60.0     # upstream's stop timeout around its runner's 25 s shutdown
TRANSITION_BOUND_S = WATCHDOG_BOUND_S   # a transitional status after a host died
OP_TIMEOUT_S = 60.0
READ_TIMEOUT_S = 30.0
SHIM_SYNC_S = 10.0          # replay: how long a fault step waits for its box's shim
WARMUP_STEPS = 10           # first samples of each trend segment: the runtime warming up

# Box states in the model.
CREATED, STARTING, RUNNING, FAILED, STOPPED, INTERRUPTED, REMOVED = (
    "created", "starting", "running", "failed", "stopped", "interrupted", "removed")
# What a record may read after stop(), by the state the box was stopped from. A box that
# never ran may stay configured; a failed one is stopped or stays failed; never configured
# (the store's state machine has no failed -> configured).
AFTER_STOP = {CREATED: ("configured", "stopped"), INTERRUPTED: ("configured", "stopped", "failed"),
              FAILED: ("stopped", "failed"), RUNNING: ("stopped",)}
# A start in flight when its host died: any settled status, after a transition bound.
AFTER_INTERRUPT = ("configured", "failed", "stopped")
TRANSITIONAL = ("running", "stopping", "unknown")
OWN_FAILURE_CAUSES = ("boot_failure", "timeout", "shim_exit")

# Trend metrics: the sample key that segments them (a host's metrics restart with it) and the
# largest slope per step that is not growth. A 4-minute pilot on 0.10.8 (13 hosts, ~7 steps per
# fault cycle) measured 0.046 fds, 0.009 threads and 0.011 MiB per step within host lives:
# these bounds sit well above that noise and below one descriptor (or thread, or 350 KiB)
# leaked per fault cycle. Disk is judged as what no held record owns (a started box's folder
# alone is ~48 MiB: the copied shim and libkrunfw), so the mix of boxes is not read as growth.
TRENDS: dict[str, tuple[str | None, float]] = {
    "host_rss_mib": ("host_gen", 0.05),
    "host_fds": ("host_gen", 0.1),
    "host_threads": ("host_gen", 0.05),
    # A runtime clears unowned box folders when it starts: what leaks, leaks within a host's
    # life (a daemon's), so the home is judged per host too.
    "home_unheld_mib": ("host_gen", 0.1),
    "leftover_dirs": ("host_gen", 0.01),
    "zombies": (None, 0.01),
}

_BOX_IN_CMD = re.compile(r"/boxes/([A-Za-z0-9_-]+)/")


# -- checks the soak adds ---------------------------------------------------------------------

@check("status_as_modelled")
def status_as_modelled(read: RecordRead, expected: Sequence[str | None], state: str,
                       age_s: float = 0.0, transitional: Sequence[str] = (),
                       bound_s: float = 0.0, *, check_id: str | None = None) -> Verdict:
    """The record on one read path has a status the model allows for the box's state (None:
    no record); a transitional status is allowed only until `bound_s` after the state began."""
    cid = check_id or f"status_as_modelled[{read.path}]"
    got = read.status if read.present else None
    ev = {"read": read.to_json(), "state": state, "expected": list(expected),
          "age_s": round(age_s, 3), "transitional": list(transitional), "bound_s": bound_s}
    shown = [e if e is not None else "absent" for e in expected]
    if read.error:
        return Verdict(cid, UNKNOWN, ev, f"{read.path} could not be read: {read.error}")
    if got in expected:
        return Verdict(cid, HOLDS, ev, f"{read.path}: {got or 'absent'} ({state})")
    if got in transitional and age_s < bound_s:
        return Verdict(cid, HOLDS, ev, f"{read.path}: {got} for {age_s:.1f}s, within the "
                       f"{bound_s:.0f}s bound ({state})")
    past = f", past the {bound_s:.0f}s bound" if got in transitional else ""
    return Verdict(cid, VIOLATED, ev, f"{read.path} says {got or 'absent'!r} for a {state} box"
                   f"{past}; the model allows {shown}")


@check("op_as_modelled")
def op_as_modelled(op: str, expected: Sequence[str], got: str, state: str = "",
                   error: Mapping[str, Any] | None = None) -> Verdict:
    """An operation ended in one of the outcomes the model allows (ok, error, running ...);
    an error must carry a message."""
    cid = f"op_as_modelled[{op}]"
    ev = {"op": op, "state": state, "expected": list(expected), "got": got,
          "error": dict(error) if error else None}
    if got not in expected:
        detail = f": {error.get('type')}: {str(error.get('message', ''))[:160]}" if error else ""
        return Verdict(cid, VIOLATED, ev, f"{op} on a {state or '-'} box ended {got!r}, the "
                       f"model allows {list(expected)}{detail}")
    if got == "error" and not str((error or {}).get("message", "")).strip():
        return Verdict(cid, VIOLATED, ev, f"{op} failed with an empty message")
    return Verdict(cid, HOLDS, ev, f"{op} ended {got}")


@check("processes_follow_boxes")
def processes_follow_boxes(boxes: Sequence[Mapping[str, Any]],
                           procs: Mapping[str, Sequence[Mapping[str, Any]]],
                           bound_s: float = WATCHDOG_BOUND_S, *,
                           check_id: str | None = None) -> Verdict:
    """A box has runtime processes only while its start is in flight or it runs (`may_run`);
    any other box's are gone within `bound_s` of its state beginning, and no process belongs
    to a box the model does not hold (`procs` is keyed by box id, "?" when none is named)."""
    by_id = {b["id"]: b for b in boxes}
    lingering, settling, strays = [], [], []
    for box_id, ps in procs.items():
        b = by_id.get(box_id)
        if b is None:
            strays.append({"box": box_id, "processes": list(ps)})
        elif not b["may_run"]:
            entry = {**b, "processes": list(ps)}
            (settling if b["age_s"] < bound_s else lingering).append(entry)
    cid = check_id or "processes_follow_boxes"
    may_run = [b["label"] for b in boxes if b["may_run"]]
    ev = {"boxes": len(boxes), "may_run": may_run, "bound_s": bound_s,
          "processes": {k: len(v) for k, v in procs.items()}, "lingering": lingering,
          "settling": settling, "strays": strays}
    if lingering or strays:
        parts = [f"{b['label']} ({b['state']} for {b['age_s']:.1f}s) keeps "
                 f"{len(b['processes'])} process(es)" for b in lingering]
        parts += [f"{len(s['processes'])} process(es) of box {s['box']}, which the model "
                  "does not hold" for s in strays]
        return Verdict(cid, VIOLATED, ev, "; ".join(parts))
    total = sum(len(v) for v in procs.values())
    return Verdict(cid, HOLDS, ev,
                   f"{total} process(es); {len(may_run)} box(es) may run, none lingering")


# -- probes ------------------------------------------------------------------------------------

def box_processes(root_pid: int, seen: dict[tuple[int, float], str] | None = None
                  ) -> dict[str, list[dict[str, Any]]]:
    """The runtime's live processes (bwrap, shim, VM) under `root_pid`, by the box id their
    command line names ("?" when it names none). A process that is exiting has an empty
    command line: it keeps the box `seen` remembered for it (pid and start time), and is left
    out if it was never seen whole."""
    out: dict[str, list[dict[str, Any]]] = {}
    for p in psutil.Process(root_pid).children(recursive=True):
        try:
            with p.oneshot():
                if p.status() == psutil.STATUS_ZOMBIE:
                    continue
                name, argv, key = p.name(), p.cmdline(), (p.pid, p.create_time())
        except psutil.Error:
            continue
        kind = classify(name, " ".join(argv[:1]))
        if kind not in ("shim", "vm", "bwrap"):
            continue
        m = _BOX_IN_CMD.search(" ".join(argv))
        box = m.group(1) if m else (seen or {}).get(key)
        if box is None and not argv:
            continue
        if m and seen is not None:
            seen[key] = m.group(1)
        entry = {"pid": p.pid, "name": name, "kind": kind}
        if box is None:
            entry.update(cmd=" ".join(argv)[:300], create_time=key[1])
        out.setdefault(box or "?", []).append(entry)
    return out


def zombie_count(root_pid: int) -> int:
    n = 0
    for p in psutil.Process(root_pid).children(recursive=True):
        try:
            n += p.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            pass
    return n


def disk_kib(path: Path, skip: Sequence[str] = ()) -> int:
    """Blocks allocated under `path` (sparse disks count what they use), skipping top-level
    names in `skip`; files that vanish while walking are not counted."""
    total = 0
    stack = [path]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            if d == path and e.name in skip:
                continue
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(Path(e.path))
                else:
                    total += e.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
    return total // 1024


def host_probe(pid: int) -> dict[str, float]:
    """The host process's resident memory (MiB), descriptors and threads."""
    p = psutil.Process(pid)
    with p.oneshot():
        return {"host_rss_mib": round(p.memory_info().rss / 2**20, 2),
                "host_fds": p.num_fds(), "host_threads": p.num_threads()}


def socket_dir(box_id: str) -> Path:
    return Path(f"/tmp/bl-{os.getuid()}/{box_id}")


# -- trends -------------------------------------------------------------------------------------

def within_segments(samples: Sequence[Mapping[str, Any]], metric: str, segment: str | None,
                    warmup: int = WARMUP_STEPS) -> tuple[list[tuple[float, float]], int]:
    """The metric against the step, centred within each segment (a host's life, or the whole
    run), after each segment's first `warmup` samples. Regressing the pooled points gives the
    within-segment slope: a leak that restarts with every host is still a slope, while the drop
    at a restart is not read as shrinkage. Returns the points and how many segments gave some."""
    groups: dict[Any, list[tuple[float, float]]] = {}
    for s in samples:
        value = s.get(metric)
        key = s.get(segment) if segment else 0
        if value is None or key is None or "step" not in s:
            continue
        groups.setdefault(key, []).append((float(s["step"]), float(value)))
    pooled: list[tuple[float, float]] = []
    used = 0
    for pts in groups.values():
        pts = pts[warmup:]
        if len(pts) < 2:
            continue
        used += 1
        mx, my = statistics.fmean(x for x, _ in pts), statistics.fmean(y for _, y in pts)
        pooled += [(x - mx, y - my) for x, y in pts]
    return pooled, used


def trend_verdicts(samples: Sequence[Mapping[str, Any]],
                   trends: Mapping[str, tuple[str | None, float]] = TRENDS,
                   warmup: int = WARMUP_STEPS) -> list[Verdict]:
    """checks.no_growth for every trend metric, by the within-segment slope per step."""
    out = []
    for metric, (segment, max_slope) in trends.items():
        pts, used = within_segments(samples, metric, segment, warmup)
        v = checks.no_growth(metric, pts, max_slope)
        v.evidence.update(segments=used, segmented_by=segment or "the whole run",
                          warmup_samples=warmup, unit="per step, centred within each segment")
        out.append(v)
    return out


# -- the model -----------------------------------------------------------------------------------

class Reproduced(Exception):  # noqa: N818 - a signal to stop a replay, not an error
    """A replay saw the failing check it was looking for."""


@dataclass
class Box:
    label: str
    id: str
    state: str = CREATED
    since: float = field(default_factory=time.monotonic)
    gen: int = 0                            # host generation in which the state began
    expect: tuple[str | None, ...] = ("configured",)
    cause: str | None = None                # failed: what the record's reason must name
    failed_gen: int = 0
    fault: str | None = None                # the fault that landed on the current start
    fault_tried: bool = False
    fault_obj: Fault | None = None
    start_fut: Future | None = None
    start_host: RuntimeHost | None = None
    start_t: float = 0.0
    overdue: bool = False
    handle_gen: int | None = None           # the host whose handle stop() invalidated
    via: str | None = None                  # how the state was reached, where that matters

    @property
    def situation(self) -> str:
        """The state, or how it was reached where the runtime treats that differently; it
        names the box's reads and process checks, so a known failure can key on it."""
        return self.via or self.state

    def enter(self, state: str, gen: int, expect: Sequence[str | None] = (),
              cause: str | None = None, via: str | None = None) -> None:
        self.state, self.since, self.gen = state, time.monotonic(), gen
        self.expect, self.cause, self.via = tuple(expect), cause, via

    def age(self) -> float:
        return time.monotonic() - self.since

    @property
    def may_run(self) -> bool:
        return self.state in (STARTING, RUNNING)


@dataclass(frozen=True)
class RuleSpec:
    name: str
    weight: float
    takes_box: bool


# Filled by `harness.soak_machine` as it defines the machine's rules.
RULES: dict[str, RuleSpec] = {}


class Tally:
    """Judges verdicts through the known-failures table and keeps them readable: counts per
    check and outcome, the first judgement of each, and a history event only when a check's
    outcome (or, failing, its summary) changes for its subject.

    A known failure is strict over the run, not per step: a race-dependent bug does not hit at
    every step, so a check under a known failure is `fixed` (and fails the soak) only if it
    held at every step and the bug never showed; once it showed, its holds are moments the race
    did not hit."""

    def __init__(self, chaos: Chaos, stop_on: Sequence[str] = ()) -> None:
        self.chaos = chaos
        self.stop_on = set(stop_on)
        self.counts: dict[str, Counter] = {}
        self.firsts: dict[tuple[str, str], dict[str, Any]] = {}
        self.last: dict[tuple[str, str], tuple[str, str]] = {}
        self.held_known: dict[str, Judgement] = {}
        self.step = 0

    def judge(self, v: Verdict, subject: str) -> Judgement:
        j = judge(v, self.chaos.env.version, self.chaos.node_id, self.chaos.known)
        self.counts.setdefault(v.check, Counter())[j.outcome] += 1
        seen = (j.outcome, v.summary if j.outcome in (FAIL, KNOWN) else "")
        if self.last.get((v.check, subject)) != seen:
            self.last[(v.check, subject)] = seen
            self.chaos.history.append("verdict", **j.to_json(), subject=subject, step=self.step)
        if (v.check, j.outcome) not in self.firsts:
            self.firsts[(v.check, j.outcome)] = {**j.to_json(), "subject": subject,
                                                 "step": self.step}
            if j.outcome == FIXED:
                self.held_known[v.check] = j
            else:
                self.chaos.judgements.append(j)
        if j.outcome == FAIL and v.check in self.stop_on:
            raise Reproduced(v.check)
        return j

    def fixed(self, check_id: str) -> bool:
        c = self.counts.get(check_id, Counter())
        return c[FIXED] > 0 and c[KNOWN] == 0

    def settle(self) -> None:
        """At the end of the run: a check under a known failure that never showed it is fixed."""
        for check_id, j in self.held_known.items():
            if self.fixed(check_id):
                self.chaos.judgements.append(j)

    def failing(self) -> list[dict[str, Any]]:
        """The first failing judgement of each check (fixed ones as of now), by step."""
        return sorted((f for (c, outcome), f in self.firsts.items()
                       if outcome == FAIL or outcome == FIXED and self.fixed(c)),
                      key=lambda f: f["step"])

    def violations(self) -> int:
        return sum(n[FAIL] + (n[FIXED] if n[KNOWN] == 0 else 0) for n in self.counts.values())

    def outcome_counts(self) -> Counter:
        return sum(self.counts.values(), Counter())


class SoakWorld:
    """One soak's runtime world: its home, its current host, its boxes as modelled, the steps
    taken and the samples drawn. Rules act through `do`; `check` judges after every step."""

    def __init__(self, chaos: Chaos, max_boxes: int = MAX_BOXES,
                 max_starting: int = MAX_STARTING, stop_on: Sequence[str] = ()) -> None:
        self.chaos = chaos
        # The caps on boxes and starts and a host's shortest life pace a generated schedule;
        # a replayed one keeps its recorded steps instead.
        self.paced = True
        self.max_boxes = max_boxes
        self.max_starting = max_starting
        self.tally = Tally(chaos, stop_on)
        self.boxes: dict[str, Box] = {}
        self.dropped: dict[str, str] = {}       # removed, judged gone: id -> situation
        self.draining: list[tuple[RuntimeHost, Future]] = []
        self.host: RuntimeHost | None = None
        self.last_host: RuntimeHost | None = None
        self.gen = 0
        self.ended: dict[int, str] = {}         # host generation -> how it ended
        self.host_steps = 0
        self.schedule: list[dict[str, Any]] = []
        self.samples: list[dict[str, Any]] = []
        self.cycles = 0
        self.faults: Counter = Counter()
        self.starts: Counter = Counter()
        self.divergences: list[str] = []
        self.t0 = time.monotonic()
        self._labels = 0
        self._next_label: str | None = None
        self._proc_boxes: dict[tuple[int, float], str] = {}
        self._host_t = time.monotonic()

    # -- lifecycle -------------------------------------------------------------------------
    def begin(self) -> None:
        self.host = self.chaos.host(RUNNER)
        self.last_host = self.host
        self.gen = 1
        self.check()
        self.sample()

    @property
    def home(self) -> Path:
        assert self.last_host is not None
        return self.last_host.home

    def host_up(self) -> bool:
        return self.host is not None and self.host.alive

    def live_boxes(self) -> list[Box]:
        return [b for b in self.boxes.values() if b.state != REMOVED]

    def in_state(self, *states: str) -> list[Box]:
        return sorted((b for b in self.boxes.values() if b.state in states),
                      key=lambda b: int(b.label[1:]))

    # -- rules -----------------------------------------------------------------------------
    def candidates(self, name: str) -> list[Box | None]:
        """The boxes rule `name` may act on now ([None] for an enabled rule without a box,
        [] for a disabled one)."""
        up, paced = self.host_up(), self.paced
        if name == "create":
            return [None] if up and (len(self.live_boxes()) < self.max_boxes or not paced) \
                else []
        if name == "start":
            if not up or paced and len(self.in_state(STARTING)) >= self.max_starting:
                return []
            return [b for b in self.in_state(CREATED, FAILED, STOPPED, INTERRUPTED)
                    if b.handle_gen != self.gen]
        if name in ("freeze_shim", "crash_shim"):
            return [b for b in self.in_state(STARTING) if up and not b.fault_tried
                    and time.monotonic() - b.start_t < FAULT_WINDOW_S
                    and box_tree(self.home, b.id) is not None]
        if name == "stop":
            return [b for b in self.in_state(CREATED, FAILED, INTERRUPTED, RUNNING)
                    if up and b.handle_gen != self.gen]
        if name == "remove":
            return [b for b in self.in_state(CREATED, FAILED, STOPPED, INTERRUPTED) if up]
        if name == "force_remove":
            return [b for b in self.in_state(STARTING, RUNNING) if up]
        if name in ("terminate_host", "kill_host"):
            return [None] if up and (not paced or self.host_steps >= MIN_HOST_STEPS and
                                     time.monotonic() - self._host_t >= MIN_HOST_S) else []
        if name == "restart_host":
            return [None] if not up else []
        if name == "wait":
            return [None]
        raise ValueError(f"unknown rule {name!r}")

    def do(self, name: str, pick: int | None = None) -> None:
        cands = self.candidates(name)
        if not cands:
            # Enabled when chosen, disabled a moment later (a start resolved, a window closed).
            self.chaos.note(soak_rule_lapsed=name)
            return
        box = cands[pick % len(cands)] if pick is not None else cands[0]
        self.tally.step = len(self.schedule) + 1
        label = box.label if box else None
        if name == "create":
            label = self._next_label or f"b{self._labels + 1}"
            self._next_label = None
        step = {"i": self.tally.step, "t": round(time.monotonic() - self.t0, 3), "rule": name,
                "box": label, "state": box.state if box else None, "host": self.gen}
        self.schedule.append(step)
        self.chaos.history.append("note", soak_step=step["i"], rule=name, box=label,
                                  box_state=step["state"], host_gen=self.gen)
        self.host_steps += 1
        act = getattr(self, "_" + name)
        act(box if box is not None else label)

    def _create(self, label: str) -> None:
        assert self.host is not None
        self._labels = max(self._labels, int(label[1:]))
        result, got, error = self._op("create", options=self.chaos.box_options(), name=label)
        self.tally.judge(op_as_modelled("create", ["ok"], got, "-", error), label)
        if got == "ok":
            box = Box(label, result["id"], gen=self.gen)
            self.boxes[label] = box

    def _start(self, box: Box) -> None:
        assert self.host is not None
        try:
            box.start_fut = self.host.send("start", box_id=box.id)
        except HostError as exc:        # the host died since the rule was chosen: check() says
            self.chaos.note(start_not_sent=box.label, why=str(exc))
            return
        box.start_host, box.start_t = self.host, time.monotonic()
        box.fault, box.fault_tried, box.fault_obj, box.overdue = None, False, None, False
        box.enter(STARTING, self.gen)

    def _freeze_shim(self, box: Box) -> None:
        self._fault_shim(box, "freeze")

    def _crash_shim(self, box: Box) -> None:
        self._fault_shim(box, "kill")

    def _fault_shim(self, box: Box, kind: str) -> None:
        box.fault_tried = True
        tree = box_tree(self.home, box.id)
        shim = shim_of(tree, box.id).same() if tree else None
        try:
            alive = shim is not None and shim.status() not in (psutil.STATUS_ZOMBIE,
                                                                psutil.STATUS_DEAD)
        except psutil.Error:
            alive = False
        if not alive:
            self.faults[f"{kind}_missed"] += 1
            self.chaos.note(fault_missed=kind, box=box.label, why="the shim had already exited")
            return
        assert tree is not None
        try:
            box.fault_obj = self.chaos.inject((freeze_box if kind == "freeze" else kill_shim)(
                self.home, box.id, tree))
        except (ProcessLookupError, psutil.Error) as exc:
            self.faults[f"{kind}_missed"] += 1
            self.chaos.note(fault_missed=kind, box=box.label, why=repr(exc))
            return
        box.fault = kind
        self.faults["freeze_shim" if kind == "freeze" else "kill_shim"] += 1

    def _stop(self, box: Box) -> None:
        before = box.state
        _, got, error = self._op("stop", box_id=box.id)
        self.tally.judge(op_as_modelled("stop", ["ok"], got, before, error), box.label)
        box.handle_gen = self.gen       # the host keeps the handle stop() invalidated
        if got == "ok":
            # Stopped in the runtime whose handle saw the box fail: a situation of its own.
            live = before == FAILED and box.failed_gen == self.gen
            box.enter(STOPPED, self.gen, AFTER_STOP[before],
                      via="stopped_after_live_failure" if live else None)

    def _force_remove(self, box: Box) -> None:
        self._remove(box, force=True)

    def _remove(self, box: Box, force: bool = False) -> None:
        before = box.state
        _, got, error = self._op("remove", box_id=box.id, force=force)
        self.tally.judge(op_as_modelled("force_remove" if force else "remove", ["ok"], got,
                                        before, error), box.label)
        if got != "ok":
            return
        if before == STARTING:
            self._release_start(box, "removed while starting")
        box.enter(REMOVED, self.gen, (None,), via="force_removed" if force else None)

    def _terminate_host(self, _: str | None) -> None:
        self._host_down("sigterm")

    def _kill_host(self, _: str | None) -> None:
        self._host_down("sigkill")

    def _restart_host(self, _: str | None) -> None:
        assert self.last_host is not None
        self.host = self.chaos.restart(self.last_host)
        self.last_host = self.host
        self.gen += 1
        self.host_steps = 0
        self._host_t = time.monotonic()
        try:
            result, error = store_integrity(self.home), None
        except Exception as exc:  # noqa: BLE001 - an unreadable store is 'unknown'
            result, error = None, repr(exc)
        self.tally.judge(checks.store_integrity(result, error), f"host{self.gen}")
        # A host fault's cycle ends when the next host is up and its records are read.
        self.cycles += self.ended.get(self.gen - 1) in ("shutdown", "sigkill")

    def _wait(self, _: str | None) -> None:
        busy = self.in_state(STARTING)
        deadline = Deadline(WAIT_S if busy else 0.5, "a start to resolve")
        while not deadline.expired():
            if any(b.start_fut is not None and b.start_fut.done() for b in busy):
                break
            time.sleep(0.05)

    # -- operations and their outcomes -----------------------------------------------------
    def _op(self, op: str, **args: Any) -> tuple[Any, str, dict[str, Any] | None]:
        assert self.host is not None
        try:
            return self.host.call(op, timeout_s=OP_TIMEOUT_S, **args), "ok", None
        except RuntimeOpError as exc:
            return None, "error", {"type": exc.type, "message": exc.message}
        except HostError as exc:
            return None, "no reply", {"type": "HostError", "message": str(exc)}

    def _release_start(self, box: Box, why: str) -> None:
        """The start no longer decides the box's state: drain its reply, heal its fault."""
        if box.start_fut is not None and box.start_host is not None:
            self.draining.append((box.start_host, box.start_fut))
        box.start_fut = None
        if box.fault_obj is not None:
            self.chaos.faults.heal(box.fault_obj)
        self.cycles += box.fault is not None
        self.starts[f"{why} ({box.fault or 'no fault'})"] += 1

    def _host_down(self, how: str) -> None:
        host = self.host
        assert host is not None
        for box in self.in_state(STARTING):
            self._release_start(box, f"interrupted by {how}")
            box.enter(INTERRUPTED, self.gen, AFTER_INTERRUPT)
        self.faults[f"{how}_host"] += 1
        bound = SHUTDOWN_BOUND_S if how == "sigterm" else WATCHDOG_BOUND_S
        host.signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
        try:
            elapsed: float | None = host.wait_exit(bound).elapsed_s
        except HostError:
            elapsed = None
            host.kill()
            host.wait_exit(WATCHDOG_BOUND_S)
        self.tally.judge(checks.within_bound(f"host_exit_after_{how}", elapsed, bound),
                         host.name)
        self.ended[self.gen] = "shutdown" if how == "sigterm" else how
        self.host = None

    def poll(self) -> None:
        """Resolve the starts that have answered; drain replies nobody waits for."""
        for host, fut in list(self.draining):
            if fut.done():
                self.draining.remove((host, fut))
                try:
                    host.result(fut, 0)
                except (RuntimeOpError, HostError):
                    pass
        for box in self.in_state(STARTING):
            if box.start_fut is not None and box.start_fut.done():
                self._resolve(box)
            elif not box.overdue and time.monotonic() - box.start_t > START_BOUND_S:
                box.overdue = True
                self.tally.judge(checks.within_bound("start", None, START_BOUND_S), box.label)

    def _resolve(self, box: Box) -> None:
        assert box.start_fut is not None and box.start_host is not None
        error = None
        try:
            box.start_host.result(box.start_fut, 0)
            got = "ok"
        except RuntimeOpError as exc:
            got, error = "error", {"type": exc.type, "message": exc.message}
        except HostError as exc:
            got, error = "no reply", {"type": "HostError", "message": str(exc)}
        box.start_fut = None
        elapsed = time.monotonic() - box.start_t
        # Where guests cannot boot, every start fails; a landed fault always fails it.
        expected = ["error"] if box.fault else ["ok", "error"]
        self.tally.judge(op_as_modelled("start", expected, got, f"starting, fault "
                                        f"{box.fault or 'none'}", error), box.label)
        if not box.overdue:
            self.tally.judge(checks.within_bound("start", elapsed, START_BOUND_S), box.label)
        if box.fault_obj is not None:
            self.chaos.faults.heal(box.fault_obj)
        self.cycles += box.fault is not None
        self.starts[f"{got} ({box.fault or 'no fault'})"] += 1
        if got == "ok":
            box.enter(RUNNING, self.gen, ("running",))
        else:
            message = (error or {}).get("message", "")
            cause = {"freeze": "timeout", "kill": "shim_exit"}.get(box.fault or "") or \
                checks.classify_reason(message) or "boot_failure"
            box.enter(FAILED, self.gen, ("failed",), cause)
            box.failed_gen = self.gen
        self.chaos.note(start_resolved=box.label, outcome=got, fault=box.fault,
                        elapsed_s=round(elapsed, 2), cause=box.cause)

    # -- invariants ------------------------------------------------------------------------
    def check(self) -> None:
        self.poll()
        if self.host is not None and not self.host.alive:
            rc = self.host.proc.returncode if self.host.proc else None
            self.tally.judge(op_as_modelled("host", ["running"], f"exited ({rc})"),
                             self.host.name)
            self._lost_host()
        if self.host_up():
            self._check_records()
        self._check_processes()
        ledger = self.chaos.ledger
        self.tally.judge(checks.no_zombies([r.to_json() for r in ledger.zombie_records()],
                                           len(ledger.samples), sampling_errors=ledger.errors),
                         "processes")

    def _lost_host(self) -> None:
        """The host died without being signalled: its starts are interrupted."""
        for box in self.in_state(STARTING):
            self._release_start(box, "interrupted by a host crash")
            box.enter(INTERRUPTED, self.gen, AFTER_INTERRUPT)
        self.ended[self.gen] = "crash"
        self.host = None

    def moment(self, box: Box) -> str:
        """How the scenarios name a failed box's read: `live` in the host where it failed,
        `after_shutdown` after that host's graceful shutdown, else `after_restart`."""
        if box.failed_gen == self.gen:
            return "live"
        return "after_shutdown" if self.ended.get(box.failed_gen) == "shutdown" \
            else "after_restart"

    def _reads(self, box: Box, prefix: str, store_label: str,
               infos: list[dict[str, Any]] | None, infos_error: str | None) -> list[RecordRead]:
        assert self.host is not None
        try:
            info = self.host.call("get_info", timeout_s=READ_TIMEOUT_S, box_id=box.id)
            got = RecordRead(f"{prefix}.get_info", info is not None, info and info["status"],
                             raw=info)
        except (RuntimeOpError, HostError) as exc:
            got = RecordRead(f"{prefix}.get_info", error=str(exc))
        if infos is None:
            listed = RecordRead(f"{prefix}.list_info", error=infos_error)
        else:
            match = next((i for i in infos if i["id"] == box.id), None)
            listed = RecordRead(f"{prefix}.list_info", match is not None,
                                match and match["status"], raw=match)
        return [got, listed, read_store(self.home, box.id, store_label)]

    def _check_records(self) -> None:
        assert self.host is not None
        try:
            infos, infos_error = self.host.call("list_info", timeout_s=READ_TIMEOUT_S), None
        except (RuntimeOpError, HostError) as exc:
            infos, infos_error = None, str(exc)
        for box in sorted(self.boxes.values(), key=lambda b: int(b.label[1:])):
            if box.state == STARTING:
                continue
            if box.state == FAILED:
                moment = self.moment(box)
                reads = self._reads(box, moment, "store" if moment == "live"
                                    else f"store.{moment}", infos, infos_error)
                for r in reads:
                    v = checks.record_failed(r, box.cause or "boot_failure",
                                             check_id=f"record_failed[{r.path}]")
                    v.evidence["box"] = box.label
                    self.tally.judge(v, box.label)
            else:
                moment = box.situation
                reads = self._reads(box, moment, f"store.{moment}", infos, infos_error)
                transitional = TRANSITIONAL if box.state == INTERRUPTED else ()
                for r in reads:
                    v = status_as_modelled(r, box.expect, box.state, box.age(), transitional,
                                           TRANSITION_BOUND_S)
                    v.evidence["box"] = box.label
                    self.tally.judge(v, box.label)
            agree = checks.read_paths_agree(reads, moment)
            agree.evidence["box"] = box.label
            self.tally.judge(agree, box.label)
            if box.state == REMOVED and box.age() >= WATCHDOG_BOUND_S:
                self._judge_gone(box, reads)

    def _judge_gone(self, box: Box, reads: list[RecordRead]) -> None:
        procs = box_processes(os.getpid(), self._proc_boxes).get(box.id, [])
        v = checks.box_gone(reads, (self.home / "boxes" / box.id).exists(),
                            socket_dir(box.id).exists(), procs)
        v.check = f"box_gone[{box.situation}]"
        v.evidence["box"] = box.label
        self.tally.judge(v, box.label)
        del self.boxes[box.label]
        self.dropped[box.id] = box.situation

    def _check_processes(self) -> None:
        """processes_follow_boxes per situation (starting, failed, force_removed ...); the
        processes of a box judged gone count under the situation it left in, those of a box
        never modelled under `unknown`."""
        procs = box_processes(os.getpid(), self._proc_boxes)
        # A runtime process that names no box may live briefly: before each spawn the runtime
        # probes bwrap (`bwrap --unshare-user --ro-bind / / -- true`). One that lasts past the
        # bound is a stray.
        lasting = [p for p in procs.pop("?", [])
                   if time.time() - p["create_time"] >= WATCHDOG_BOUND_S]
        if lasting:
            procs["?"] = lasting
        held = {b.id: b.situation for b in self.boxes.values()}
        where = {**self.dropped, **held}
        groups: dict[str, list[dict[str, Any]]] = {}
        for b in self.boxes.values():
            groups.setdefault(b.situation, []).append(
                {"label": b.label, "id": b.id, "state": b.state, "age_s": round(b.age(), 2),
                 "may_run": b.may_run})
        for box_id in procs:
            groups.setdefault(where.get(box_id, "unknown"), [])
        for situation, entries in sorted(groups.items()):
            mine = {k: v for k, v in procs.items() if where.get(k, "unknown") == situation}
            self.tally.judge(processes_follow_boxes(
                entries, mine, WATCHDOG_BOUND_S,
                check_id=f"processes_follow_boxes[{situation}]"), "processes")

    # -- samples ---------------------------------------------------------------------------
    def sample(self) -> dict[str, Any]:
        s: dict[str, Any] = {"t": round(time.monotonic() - self.t0, 2),
                             "step": len(self.schedule), "cycles": self.cycles}
        if self.host_up():
            assert self.host is not None
            try:
                s.update(host_gen=self.gen, **host_probe(self.host.pid))
            except psutil.Error:
                pass
        home_kib = disk_kib(self.home, skip=("logs",))
        held = sum(disk_kib(self.home / "boxes" / b.id) for b in self.live_boxes())
        s.update(home_mib=round(home_kib / 1024, 2), home_unheld_mib=round(
                     (home_kib - held) / 1024, 2),
                 log_kib=disk_kib(self.home / "logs"), zombies=zombie_count(os.getpid()),
                 leftover_dirs=len(self.leftover_dirs()),
                 box_procs=sum(len(v) for v in box_processes(
                     os.getpid(), self._proc_boxes).values()),
                 boxes=len(self.live_boxes()), starting=len(self.in_state(STARTING)))
        self.samples.append(s)
        return s

    def leftover_dirs(self) -> list[str]:
        """Box folders no modelled record owns, and socket folders of boxes judged gone."""
        held = {b.id for b in self.boxes.values() if b.state != REMOVED}
        boxes_dir = self.home / "boxes"
        dirs = [d.name for d in boxes_dir.iterdir() if d.is_dir() and d.name not in held] \
            if boxes_dir.is_dir() else []
        return dirs + [f"socket:{i}" for i in sorted(self.dropped) if socket_dir(i).exists()]

    def finish(self, trends: bool = True) -> None:
        """Let the starts in flight resolve so their records are judged, then judge trends."""
        deadline = Deadline(START_BOUND_S, "the soak's last starts to resolve")
        while self.in_state(STARTING) and not deadline.expired():
            self.poll()
            time.sleep(0.2)
        self.check()
        self.sample()
        for v in trend_verdicts(self.samples) if trends else ():
            self.tally.judge(v, "run")
        self.tally.settle()

    # -- replaying a recorded step -----------------------------------------------------------
    def replay_step(self, machine: SoakMachine, step: Mapping[str, Any]) -> bool:
        """Take a recorded step: wait until its box is eligible again (its start resolved, its
        shim spawned) while anything is in flight, then call the rule; False if skipped."""
        self.paced = False
        name, label = step["rule"], step.get("box")
        spec = RULES[name]
        deadline = Deadline(SHIM_SYNC_S if name in ("freeze_shim", "crash_shim")
                            else START_BOUND_S, f"step {step.get('i')} ({name} {label})")
        while True:
            self.poll()
            cands = self.candidates(name)
            box = self.boxes.get(label) if spec.takes_box else None
            if (box in cands) if spec.takes_box else bool(cands):
                break
            if deadline.expired() or not (self.in_state(STARTING) or name in (
                    "freeze_shim", "crash_shim")):
                why = f"step {step.get('i')}: {name} {label or ''} is not enabled here; skipped"
                self.divergences.append(why)
                self.chaos.note(replay="diverged", detail=why)
                return False
            time.sleep(0.1)
        if name == "create":
            self._next_label = label
        fn = getattr(machine, name)
        fn(pick=cands.index(box)) if spec.takes_box else fn()
        return True


# -- the state machine: harness.soak_machine ----------------------------------------------------

def __getattr__(name: str) -> Any:
    """`soak.SoakMachine` (and its rule helpers) import hypothesis on first use, not when the
    command line imports this module."""
    if name in ("SoakMachine", "soak_rule", "PICK"):
        from harness import soak_machine
        return getattr(soak_machine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- budget and progress -------------------------------------------------------------------------

@dataclass(frozen=True)
class Budget:
    duration_s: float | None = None
    cycles: int | None = None

    def spent(self, elapsed_s: float, cycles: int) -> bool:
        return (self.duration_s is not None and elapsed_s >= self.duration_s) or \
            (self.cycles is not None and cycles >= self.cycles)

    def left(self, elapsed_s: float, cycles: int) -> str:
        if self.duration_s is not None:
            return f"{_clock(max(0.0, self.duration_s - elapsed_s))} left"
        return f"{max(0, (self.cycles or 0) - cycles)} cycles left"


def _clock(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def progress_line(world: SoakWorld, budget: Budget | None) -> str:
    elapsed = time.monotonic() - world.t0
    states = Counter(b.state for b in world.boxes.values() if b.state != REMOVED)
    counts = world.tally.outcome_counts()
    failing = {f["check"] for f in world.tally.failing()}
    faults = " ".join(f"{k} {v}" for k, v in sorted(world.faults.items()) if v)
    boxes = " ".join(f"{k} {v}" for k, v in sorted(states.items()))
    violations = world.tally.violations()
    left = budget.left(elapsed, world.cycles) if budget else "replay"
    return (f"soak {_clock(elapsed)} ({left}) | step "
            f"{len(world.schedule)} cycles {world.cycles} | boxes {boxes or 'none'} | faults "
            f"{faults or 'none'} | violations {violations} in {len(failing)} check(s), "
            f"known {counts.get(KNOWN, 0)}")


class Progress:
    """One status line: redrawn in place on a terminal (rich when installed, else a carriage
    return), a plain line every `every_s` seconds otherwise (logs, nohup)."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None,
                 every_s: float = 30.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_s = every_s if not self.tty else 0.5
        self._last = float("-inf")
        self._width = 0
        self._live = None
        if self.tty:
            try:
                from rich.console import Console
                from rich.live import Live
                self._live = Live(console=Console(file=self.stream), transient=False)
                self._live.start()
            except ImportError:
                self._live = None

    def update(self, line: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        if self._live is not None:
            self._live.update(line)
        elif self.tty:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
            self.stream.flush()
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
        elif self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()


# -- driving -------------------------------------------------------------------------------------

def drive(machine: SoakMachine, budget: Budget, rng: random.Random,
          progress: Progress | None = None) -> None:
    """Run the machine until the budget is spent: each step picks an enabled rule by weight,
    a box among its candidates, calls the rule through the machine, then checks and samples."""
    world = machine.world
    while not budget.spent(time.monotonic() - world.t0, world.cycles):
        world.poll()
        enabled = [spec for spec in RULES.values() if world.candidates(spec.name)]
        spec = rng.choices(enabled, weights=[s.weight for s in enabled])[0]
        fn = getattr(machine, spec.name)
        fn(pick=rng.randrange(2**16)) if spec.takes_box else fn()
        machine.model_holds()
        world.sample()
        if progress:
            progress.update(progress_line(world, budget))


def replay_schedule(machine: SoakMachine, steps: Sequence[Mapping[str, Any]],
                    progress: Progress | None = None) -> None:
    """Take recorded steps in order on this machine's world, checking after each."""
    world = machine.world
    for step in steps:
        if world.replay_step(machine, step):
            machine.model_holds()
            world.sample()
        if progress:
            progress.update(progress_line(world, None))


@dataclass
class RunResult:
    world: SoakWorld
    chaos: Chaos
    wall_s: float
    cpu_s: float
    failed: bool
    interrupted: bool
    reproduced: str | None = None


def run_world(chaos: Chaos, body: Callable[[SoakMachine], None], *,
              max_boxes: int = MAX_BOXES, max_starting: int = MAX_STARTING,
              stop_on: Sequence[str] = (), trends: bool = True) -> RunResult:
    """One run on `chaos`: begin, `body`, finish (with trend verdicts if `trends`), conclude.
    Whatever happens, the run's faults are healed and its processes ended."""
    from harness.soak_machine import SoakMachine
    world = SoakWorld(chaos, max_boxes, max_starting, stop_on)
    machine = SoakMachine(world)
    t0, cpu0 = time.monotonic(), time.process_time()
    interrupted, reproduced, failed = False, None, False
    try:
        try:
            world.begin()
            body(machine)
            world.finish(trends)
        except Reproduced as exc:
            reproduced = str(exc)
        except KeyboardInterrupt:
            interrupted = True
            chaos.note(soak="interrupted by the user")
        wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
        chaos.history.append("meta", event="call_done", wall_s=round(wall, 3))
        try:
            chaos.conclude()
        except ScenarioFailed:
            failed = True
        if failed or reproduced:
            chaos.keep_artifacts()      # the homes go at teardown; keep the runtime's evidence
    finally:
        chaos.safety_teardown()
    failed = failed or any(j.outcome in FAILING for j in chaos.judgements)
    return RunResult(world, chaos, wall, cpu, failed, interrupted, reproduced)


# -- shrinking -------------------------------------------------------------------------------------

def ddmin(steps: list[Any], fails: Callable[[list[Any]], bool], deadline: Deadline) -> list[Any]:
    """Delta debugging: drop chunks of `steps` while `fails` still says the result fails,
    halving the chunks when none can go, until single steps cannot or the deadline passes."""
    n = 2
    while len(steps) >= 2 and not deadline.expired():
        size = math.ceil(len(steps) / n)
        for i in range(0, len(steps), size):
            candidate = steps[:i] + steps[i + size:]
            if deadline.expired():
                return steps
            if candidate and fails(candidate):
                steps, n = candidate, max(n - 1, 2)
                break
        else:
            if size == 1:
                break
            n = min(len(steps), n * 2)
    return steps


@dataclass
class Shrunk:
    checks: list[str]
    subject: str
    steps: list[dict[str, Any]]
    folder: Path | None
    attempts: int
    reproduced: bool
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"checks": self.checks, "subject": self.subject, "steps": len(self.steps),
                "attempts": self.attempts, "reproduced": self.reproduced, "note": self.note,
                "history": str(self.folder / "history.jsonl") if self.folder else None,
                "schedule": str(self.folder / "schedule.json") if self.folder else None}


NOT_SHRINKABLE = ("no_growth", "no_zombies", "nothing_left_running", "faults_healed")


def shrink_failure(failure: Mapping[str, Any], schedule: list[dict[str, Any]],
                   make_chaos: Callable[[Path], Chaos], folder: Path, budget_s: float,
                   say: Callable[[str], None] = print) -> Shrunk:
    """Shrink the schedule up to a failure's first step to a short one that fails one of its
    checks (`failure["checks"]`: those that first failed at that step, on that subject) from a
    fresh home; keep the last failing replay's folder (history, verdicts, hosts)."""
    check_ids, subject = list(failure["checks"]), str(failure.get("subject"))
    check_id = " | ".join(check_ids)
    deadline = Deadline(budget_s, f"shrinking {check_id}")
    attempts = 0
    kept: Path | None = None

    def fails(steps: list[dict[str, Any]]) -> bool:
        nonlocal attempts, kept
        attempts += 1
        workdir = folder / f"attempt-{attempts}"
        result = run_world(make_chaos(workdir),
                           lambda machine: replay_schedule(machine, steps),
                           stop_on=check_ids, trends=False)
        ok = result.reproduced is not None
        say(f"  shrink {check_id}: attempt {attempts}, {len(steps)} steps: "
            + ("fails again" if ok else "passes"))
        if ok:
            (workdir / "schedule.json").write_text(json.dumps(
                {"checks": check_ids, "steps": steps}, indent=1))
            if kept is not None:
                shutil.rmtree(kept, ignore_errors=True)
            kept = workdir
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        return ok

    prefix = [s for s in schedule if s["i"] <= failure["step"]]
    if not fails(prefix):
        return Shrunk(check_ids, subject, prefix, None, attempts, False,
                      "did not fail again from a fresh home: it depends on timing or on "
                      "state the prefix does not rebuild; the soak's own history is the repro")
    steps = prefix
    # One cheap cut first: the failing box's own steps and the host's.
    sliced = [s for s in steps if s["box"] in (None, subject)]
    if len(sliced) < len(steps) and not deadline.expired() and fails(sliced):
        steps = sliced
    steps = ddmin(steps, fails, deadline)
    return Shrunk(check_ids, subject, steps, kept, attempts, True,
                  "" if not deadline.expired() else "the shrink budget ran out first")


# -- the soak --------------------------------------------------------------------------------------

@dataclass
class SoakResult:
    report: Path
    seed: int
    run: RunResult
    shrunk: list[Shrunk]
    bench: dict[str, Any]

    @property
    def failed(self) -> bool:
        return self.run.failed


def shrink_targets(failing: Sequence[Mapping[str, Any]], most: int = 3) -> list[dict[str, Any]]:
    """The failures worth shrinking: failing (not fixed) checks judged step by step, those
    that first failed at the same step on the same subject as one target, earliest first."""
    groups: dict[tuple[int, str], dict[str, Any]] = {}
    for f in failing:
        if f["outcome"] != FAIL or f["check"].startswith(NOT_SHRINKABLE):
            continue
        key = (f["step"], str(f["subject"]))
        groups.setdefault(key, {"step": f["step"], "subject": f["subject"], "checks": []})
        groups[key]["checks"].append(f["check"])
    return [groups[k] for k in sorted(groups)][:most]


def _new_chaos(workdir: Path, env: Any, image: Any, known: Any) -> Chaos:
    return Chaos(NODE_ID, workdir, env, image, known)


def bench_figures(run: RunResult) -> dict[str, Any]:
    hours = run.wall_s / 3600
    cores = os.cpu_count() or 1
    return {"cycles": run.world.cycles, "steps": len(run.world.schedule),
            "wall_s": round(run.wall_s, 1), "cycles_per_hour": round(run.world.cycles / hours, 1)
            if hours else None, "harness_cpu_s": round(run.cpu_s, 1),
            "harness_cpu_pct_of_one_core": round(100 * run.cpu_s / run.wall_s, 2)
            if run.wall_s else None,
            "harness_cpu_pct_of_machine": round(100 * run.cpu_s / run.wall_s / cores, 2)
            if run.wall_s else None, "cores": cores,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def summary_text(res: SoakResult) -> str:
    w, b = res.run.world, res.bench
    lines = [f"seed {res.seed}; {b['steps']} steps, {b['cycles']} fault cycles in "
             f"{b['wall_s']:.0f} s ({b['cycles_per_hour']} per hour); harness CPU "
             f"{b['harness_cpu_pct_of_one_core']}% of one core",
             "faults: " + (", ".join(f"{k} {v}" for k, v in sorted(w.faults.items())) or "none"),
             "starts: " + (", ".join(f"{k} {v}" for k, v in sorted(w.starts.items())) or "none")]
    for f in w.tally.failing():
        lines.append(f"{f['outcome'].upper()} {f['check']} (first at step {f['step']}, "
                     f"{f['subject']}): {f['summary']}")
    for j in teardown_failures(res.run):
        lines.append(f"{j.outcome.upper()} {j.verdict.check} (at the end): {j.verdict.summary}")
    for s in res.shrunk:
        lines.append(f"shrunk {' | '.join(s.checks)}: {len(s.steps)} steps" + (
            f" -> {s.folder}" if s.folder else f" (not reproduced: {s.note})"))
    return "\n".join(lines)


def teardown_failures(run: RunResult) -> list[Judgement]:
    """Failing verdicts of the run's end (faults healed, zombies, processes left running)."""
    stepwise = set(run.world.tally.counts)
    return [j for j in run.chaos.judgements if j.outcome in FAILING
            and j.verdict.check not in stepwise]


def write_outputs(res: SoakResult) -> Path:
    """soak.json (samples, verdicts, trends), schedule.json, results.jsonl and report.html."""
    from harness.report.build import build_report
    w, run = res.run.world, res.run
    (res.report / "schedule.json").write_text(json.dumps(
        {"seed": res.seed, "runtime": run.chaos.env.spec.text, "steps": w.schedule}, indent=1))
    trends = {v["check"]: {"status": v["status"], "slope": v["evidence"].get("slope"),
                           "max_slope": v["evidence"].get("max_slope"),
                           "points": v["evidence"].get("points"),
                           "segments": v["evidence"].get("segments"), "outcome": v["outcome"]}
              for (c, _), v in w.tally.firsts.items() if c.startswith("no_growth[")}
    (res.report / "soak.json").write_text(json.dumps({
        "summary": summary_text(res), "seed": res.seed, "runtime": run.chaos.env.spec.text,
        "runtime_version": run.chaos.env.version, "bench": res.bench,
        "faults": dict(w.faults), "starts": dict(w.starts), "trends": trends,
        "verdicts": {c: dict(n) for c, n in sorted(w.tally.counts.items())},
        "failing": [{k: f[k] for k in ("check", "outcome", "subject", "step", "summary")}
                    for f in w.tally.failing()] + [
            {"check": j.verdict.check, "outcome": j.outcome, "subject": "teardown",
             "step": None, "summary": j.verdict.summary} for j in teardown_failures(run)],
        "repro": [s.to_json() for s in res.shrunk], "divergences": w.divergences[:50],
        "samples": w.samples}, indent=1, default=str))
    with open(res.report / "results.jsonl", "w") as fh:
        fh.write(json.dumps({
            "nodeid": NODE_ID, "outcome": "failed" if run.failed else "passed",
            "duration_s": round(run.wall_s, 3), "runtime": run.chaos.env.spec.text,
            "runtime_version": run.chaos.env.version, "workdir": str(run.chaos.workdir),
            "judgements": [j.to_json() for j in run.chaos.judgements]}, default=str) + "\n")
    return build_report(res.report)


def run_soak(budget: Budget, runtime: str = DEFAULT_SPEC, report: Path | None = None,
             seed: int | None = None, *, max_boxes: int = MAX_BOXES,
             max_starting: int = MAX_STARTING, shrink_s: float = 600.0,
             replay: Path | None = None, progress: Progress | None = None,
             say: Callable[[str], None] = print) -> SoakResult:
    """Run a soak (or replay a recorded schedule) and write its report folder; shrink each
    distinct failing check within `shrink_s` seconds in all."""
    from harness.doctor import check_kvm
    from harness.image import busybox_image
    from harness.known import load_table
    from harness.observe.processes import become_subreaper
    from harness.runtime.spec import ensure_runtime

    ok, why = check_kvm()
    if not ok:
        raise SetupError(f"the soak cannot run: {why}")
    steps = None
    if replay is not None:
        try:
            steps = json.loads(Path(replay).read_text())["steps"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SetupError(f"schedule {replay}: cannot be read as a soak schedule: "
                             f"{exc!r}") from exc
    become_subreaper()
    env, image, known = ensure_runtime(runtime), busybox_image(), load_table()
    seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
    report = (report or REPORTS / datetime.now(UTC).strftime("soak-%Y%m%dT%H%M%SZ")).resolve()
    report.mkdir(parents=True, exist_ok=True)
    say(f"boxlite-chaos soak: runtime {env.spec.text}, seed {seed}, "
        + (f"replaying {len(steps)} steps" if steps is not None else
           f"budget {budget.duration_s or 0:.0f} s" if budget.duration_s
           else f"budget {budget.cycles} cycles") + f", report {report}")
    chaos = _new_chaos(report / "scenarios" / NODE_ID, env, image, known)
    chaos.history.append("meta", event="soak", seed=seed, budget=vars(budget),
                         max_boxes=max_boxes, max_starting=max_starting,
                         replay=str(replay) if replay else None)
    rng = random.Random(seed)
    body = (lambda m: replay_schedule(m, steps, progress)) if steps is not None \
        else (lambda m: drive(m, budget, rng, progress))
    try:
        run = run_world(chaos, body, max_boxes=max_boxes, max_starting=max_starting,
                        trends=steps is None)
    finally:
        if progress:
            progress.close()
    res = SoakResult(report, seed, run, [], bench_figures(run))
    deadline = Deadline(shrink_s, "shrinking the soak's failures")
    targets = shrink_targets(run.world.tally.failing())
    for n, failure in enumerate(targets, start=1):
        if run.interrupted or deadline.expired():
            break
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", failure["checks"][0]).strip("_")
        say(f"shrinking {' | '.join(failure['checks'])} (first at step {failure['step']})")
        res.shrunk.append(shrink_failure(
            failure, run.world.schedule,
            lambda wd: _new_chaos(wd, env, image, known), report / "repro" / f"{n}-{slug}",
            deadline.remaining() / (len(targets) - n + 1), say))
    path = write_outputs(res)
    say(summary_text(res))
    for s in res.shrunk:
        if s.folder:
            say(f"replay: boxlite-chaos repro {s.folder / 'history.jsonl'}  |  "
                f"boxlite-chaos soak --replay {s.folder / 'schedule.json'}")
    say(f"report: {path}")
    return res


# -- command line -------------------------------------------------------------------------------

def parse_duration(text: str) -> float:
    """'90', '90s', '30m', '1.5h' -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90s, 30m, 2h)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--duration", type=parse_duration, help="run this long (90s, 30m, 2h)")
    how.add_argument("--cycles", type=int, help="run until this many fault cycles completed")
    how.add_argument("--replay", metavar="SCHEDULE",
                     help="take a recorded schedule.json's steps instead of generating")
    p.add_argument("--runtime", default=DEFAULT_SPEC,
                   help=f"runtime spec under test (default {DEFAULT_SPEC})")
    p.add_argument("--report", help="report folder (default reports/soak-<time>)")
    p.add_argument("--seed", type=int, help="seed of the driver's choices (default: random)")
    p.add_argument("--bench", action="store_true",
                   help="print fault cycles per hour and the harness's CPU share")
    p.add_argument("--max-boxes", type=int, default=MAX_BOXES)
    p.add_argument("--max-starting", type=int, default=MAX_STARTING)
    p.add_argument("--shrink-s", type=float, default=600.0,
                   help="seconds for shrinking failures, in all (0: do not shrink)")


def cmd_soak(args: argparse.Namespace) -> int:
    if args.cycles is not None and args.cycles < 1:
        raise SetupError("--cycles must be at least 1")
    res = run_soak(Budget(args.duration, args.cycles), args.runtime,
                   Path(args.report) if args.report else None, args.seed,
                   max_boxes=args.max_boxes, max_starting=args.max_starting,
                   shrink_s=args.shrink_s, replay=Path(args.replay) if args.replay else None,
                   progress=Progress())
    if args.bench:
        b = res.bench
        print(f"soak bench: {b['cycles']} fault cycles in {b['wall_s']:.0f} s = "
              f"{b['cycles_per_hour']} cycles/hour on {b['cores']} cores (load average "
              f"{b['load_average'][0]}); harness CPU {b['harness_cpu_s']} s = "
              f"{b['harness_cpu_pct_of_one_core']}% of one core, "
              f"{b['harness_cpu_pct_of_machine']}% of the machine")
    return 1 if res.failed else 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `boxlite-chaos soak --duration D | --cycles N | --replay SCHEDULE [...]`."""
    p = subparsers.add_parser("soak", help="a long stateful fault schedule with trend verdicts")
    add_arguments(p)
    p.set_defaults(fn=cmd_soak)
    return p


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.soak", description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return cmd_soak(args)
    except HarnessError as exc:
        print(f"boxlite-chaos: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
