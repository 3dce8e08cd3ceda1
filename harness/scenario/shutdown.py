"""Shutdown of a host with boxes in every init state: arrange, signal, measure, judge.

Shared by scenarios/shutdown and `bench-shutdown`. `arrange` puts N boxes in mixed states
(initializing, guest hung, failed); `signal_host` sends SIGTERM or SIGKILL and measures on a
monotonic clock the host's exit and the end of every box process it had; the checks judge that.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable, Sequence
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from harness.common.errors import ArrangementError, HostError
from harness.common.wait import WaitTimeout, wait_for
from harness.faults.base import FaultSet
from harness.faults.shim import FreezeBox, Proc, box_tree, freeze_box, kill_shim, wait_for_shim
from harness.judge.checks import (
    HOLDS,
    SETTLED,
    UNKNOWN,
    VIOLATED,
    Verdict,
    check,
    classify_reason,
    read_paths_agree,
    record_failed,
    record_final,
    records_settled,
    runtime_shutdown_ran,
    within_bound,
)
from harness.observe.boxes import home_marks, shutdown_signs
from harness.observe.logs import SHUTDOWN_LOGGED, runtime_log
from harness.observe.processes import ProcessLedger, ProcRecord, classify
from harness.observe.records import read_host, read_store, store_rows
from harness.runtime.host import (
    BARE,
    RUNNER,
    SDK_DEFAULT,
    Flavour,
    RuntimeHost,
    RuntimeOpError,
)
from harness.scenario.context import WATCHDOG_BOUND_S
from harness.scenario.steps import START_BOUND_S

# Upstream's production runner: SIGTERM runs a 25 s shutdown under a 60 s stop timeout.
SHUTDOWN_BOUND_S = 60.0
STATES = ("initializing", "hung", "failed")        # round-robin over the N boxes
BOX_KINDS = ("shim", "vm", "bwrap")
SPAWN_TIMEOUT_S = 60.0
# The runtime's last word before its guest-connect wait, and how long the boxes sit in it.
CONNECT_MARKER = "VM subprocess started successfully"
MARKER_TIMEOUT_S = 10.0
IN_WAIT_S = 2.0
# Too little memory for the guest kernel: how a box is made to fail where guests do boot.
STARVED_MEMORY_MIB = 16
# Where every VM dies on its own (nested PVM), the guest's boot work before it dies grows
# with its memory: 8.7, 9.0, 10.4 and 16.5 core-seconds at 64, 128, 256 MiB and the
# runtime's default (one VM each on an idle machine, boxlite 0.10.8, 2026-11-30). A box left
# to fail on its own gets this much; no scenario judges its memory.
LIGHT_MEMORY_MIB = 128


@dataclass(frozen=True)
class Case:
    """A host flavour and the signal that ends it."""

    name: str
    flavour: Flavour
    sig: int = signal.SIGTERM

    @property
    def graceful(self) -> bool:
        """A shutdown runs: SIGTERM reaches a handler (ours or the SDK's)."""
        return self.sig == signal.SIGTERM and self.flavour.sigterm != "none"

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.sig).name

    @property
    def moment(self) -> str:
        """How read paths after the restart are named (the known-failures table keys on it)."""
        return "after_shutdown" if self.graceful else f"after_{self.signal_name.lower()}"


CASES = {c.name: c for c in (
    Case("runner", RUNNER),                  # SIGTERM → shutdown(25) → exit 0
    Case("sdk_default", SDK_DEFAULT),        # Boxlite.default(): the SDK's own handler
    Case("bare", BARE),                      # no handler: SIGTERM kills (ungraceful baseline)
    Case("sigkill", RUNNER, signal.SIGKILL),  # nothing can run
)}


@dataclass
class BoxUnderTest:
    label: str                          # e.g. "hung2"; also the box's name
    state: str                          # planned: initializing | hung | failed (| running)
    id: str = ""
    start: Future | None = None         # the start in flight at the signal
    error: dict[str, Any] | None = None  # the start's runtime error (failed boxes)
    reason: str | None = None           # the store's error_reason before the signal
    tree: list[Proc] = field(default_factory=list)
    freeze: FreezeBox | None = None
    planned: str | None = None          # the planned state of a box whose start failed early


def plan(n: int) -> list[str]:
    return [STATES[i % len(STATES)] for i in range(n)]


def failed_box_options(guests_boot: bool) -> dict[str, Any]:
    """Options for a box whose start is to fail on its own. Here every VM does, and a light
    one (LIGHT_MEMORY_MIB) does it on half the CPU; where guests boot, a starved box fails
    instead."""
    return {"memory_mib": STARVED_MEMORY_MIB if guests_boot else LIGHT_MEMORY_MIB}


def light_box_options() -> dict[str, Any]:
    """Options for a box that boots where guests boot, and here spins until its VM fails on
    its own: light either way (LIGHT_MEMORY_MIB is plenty for the busybox guest), so that
    choosing them asks nothing of doctor's boot probe (a 30 s VM on a cold cache)."""
    return {"memory_mib": LIGHT_MEMORY_MIB}


def arrange(host: RuntimeHost, faults: FaultSet, n: int, options: dict[str, Any],
            failed_options: dict[str, Any] | None = None) -> list[BoxUnderTest]:
    """Create N boxes and bring each to its planned state, ready for the signal.

    failed: started first, its shim SIGKILLed at spawn, and its start failed.
    initializing: start sent, shim spawned, the runtime in its guest-connect wait.
    hung: the same, with the box's process tree frozen at spawn. Where a guest boots, an
    initializing box that finished starting is re-labelled `running` (still a box a
    shutdown must stop). Raises ArrangementError when a box cannot be brought to its state.
    """
    boxes = [BoxUnderTest(f"{s}{i + 1}", s) for i, s in enumerate(plan(n))]
    creates = [host.send("create", name=b.label, options={
        **options, **((failed_options or {}) if b.state == "failed" else {})}) for b in boxes]
    for b, fut in zip(boxes, creates, strict=True):
        b.id = host.result(fut, 120)["id"]

    # Failed boxes fail fast: their shim is SIGKILLed at spawn (a VM failing on its own would
    # spin a core for ~17 s here, and the gate runs many scenarios side by side).
    failing = [(b, host.send("start", box_id=b.id)) for b in boxes if b.state == "failed"]
    for b, _ in failing:
        tree = wait_for_shim(host.home, b.id, timeout_s=SPAWN_TIMEOUT_S)
        faults.inject(kill_shim(host.home, b.id, tree))
    for b, fut in failing:
        try:
            host.result(fut, START_BOUND_S)
        except RuntimeOpError as exc:
            b.error = {"type": exc.type, "message": exc.message}
        else:
            raise ArrangementError(f"box {b.label} started; it was to fail")
        b.reason = read_store(host.home, b.id).reason

    waiting = [b for b in boxes if b.state != "failed"]
    for b in waiting:
        b.start = host.send("start", box_id=b.id)
    for b in list(waiting):
        start = b.start
        wait_for(lambda b=b, start=start: box_tree(host.home, b.id) or start.done(),
                 SPAWN_TIMEOUT_S, f"the shim of box {b.label} to spawn, or its start to end",
                 interval_s=0.01)
        tree = box_tree(host.home, b.id)
        if not tree:
            # The runtime ended the start before any shim ran: the box failed on its own
            # (judged by start_reached_shim in the scenario), and is a failed box from here.
            try:
                host.result(start, 0)
            except RuntimeOpError as exc:
                b.error = {"type": exc.type, "message": exc.message}
            else:
                raise ArrangementError(f"box {b.label} started before its shim was seen")
            b.planned, b.state, b.start = b.state, "failed", None
            b.reason = read_store(host.home, b.id).reason
            waiting.remove(b)
            continue
        b.tree = tree
        if b.state == "hung":
            b.freeze = freeze_box(host.home, b.id, b.tree)
            faults.inject(b.freeze)
    try:
        wait_for(lambda: all(f"{CONNECT_MARKER} box_id={b.id}" in runtime_log(host.home)
                             for b in waiting), MARKER_TIMEOUT_S,
                 "every waiting box to reach the guest-connect wait", interval_s=0.1)
    except WaitTimeout:
        pass        # releases word it differently; the shims are spawned, which suffices
    # Sit in the wait a while, as a daemon's boxes would when it is told to stop; a start
    # that ends meanwhile is judged below.
    futures.wait([b.start for b in waiting if b.start], timeout=IN_WAIT_S,
                 return_when=futures.FIRST_COMPLETED)
    for b in waiting:
        if b.start is not None and b.start.done():
            reply = b.start.result()
            if not reply.get("ok"):
                raise ArrangementError(f"box {b.label} ({b.state}) finished its start before "
                                       f"the signal: {reply.get('error', {}).get('message')}")
            b.state = "running"
    return boxes


@dataclass
class ShutdownRun:
    """What one signal did. Times are seconds from the signal, on a monotonic clock."""

    case: Case
    boxes: list[BoxUnderTest]
    exit_s: float | None                # None: still running at SHUTDOWN_BOUND_S (then killed)
    returncode: int | None
    thaw_s: float | None                # when frozen boxes were thawed (ungraceful cases only)
    procs: list[dict[str, Any]]         # every box process alive at the signal, with ended_s
    left_at_exit: list[dict[str, Any]]  # those still alive just after the host's exit
    store_at_exit: list[dict[str, Any]]
    starts: dict[str, str]              # how each start in flight at the signal ended
    host_events: list[dict[str, Any]]
    # Signs, other than the runtime's own log, that its shutdown ran (shutdown_signs).
    signs: list[str] = field(default_factory=list)

    @property
    def last_gone_s(self) -> float | None:
        """When the last box process ended; None if one never did (or none was measured)."""
        ends = [p["ended_s"] for p in self.procs]
        return None if not ends or None in ends else max(ends)

    def facts(self) -> dict[str, Any]:
        """For the history: what the signal left, recorded as facts, not judged here."""
        by_kind: dict[str, int] = {}
        for p in self.procs:
            by_kind[p["kind"]] = by_kind.get(p["kind"], 0) + 1
        label = {b.id: b.label for b in self.boxes}
        return {
            "case": self.case.name, "signal": self.case.signal_name,
            "flavour": self.case.flavour.label, "n": len(self.boxes),
            "states": {b.label: b.state for b in self.boxes},
            "exit_s": _r(self.exit_s), "returncode": self.returncode,
            "last_gone_s": _r(self.last_gone_s), "thaw_s": _r(self.thaw_s),
            "processes_at_signal": by_kind,
            "orphans": [p for p in self.procs if p["adopted"]],
            "left_at_exit": self.left_at_exit,
            "records_at_exit": {label.get(r["id"], r["id"]): r["status"]
                                for r in self.store_at_exit},
            "unsettled_at_exit": [label.get(r["id"], r["id"]) for r in self.store_at_exit
                                  if r["status"] not in SETTLED],
            "starts_in_flight": self.starts,
            "shutdown_signs": self.signs,
            "host_events": [{k: v for k, v in e.items() if k != "t_mono"}
                            for e in self.host_events if e.get("event") != "ready"],
        }

    def verdicts(self) -> list[Verdict]:
        """Graceful: the host exits and every box process ends within SHUTDOWN_BOUND_S of the
        signal, none outliving the host. Otherwise: every box process the host left ends
        within the shim watchdog's bound of the host's exit (of the thaw, for frozen ones)."""
        if self.case.graceful:
            return [within_bound(f"host_exit_after_{self.case.signal_name.lower()}",
                                 self.exit_s, SHUTDOWN_BOUND_S),
                    runtime_gone_within(self.procs, SHUTDOWN_BOUND_S,
                                        self.case.signal_name.lower()),
                    no_orphans(self.procs)]
        since_exit = []
        for p in self.procs:
            since = (self.thaw_s if p["frozen"] else self.exit_s) or 0.0
            ended = None if p["ended_s"] is None else round(p["ended_s"] - since, 3)
            since_exit.append({**p, "ended_s": ended, "since": "thaw" if p["frozen"] else
                               "host_exit"})
        return [runtime_gone_within(since_exit, WATCHDOG_BOUND_S, "host_exit")]


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def ended_at(ledger: ProcessLedger, rec: ProcRecord) -> float | None:
    """Monotonic time the ledger saw the process end (a zombie has ended); None while it runs.

    A `gone_at` older than the last sighting was set by a sample that could not list (the
    ledger's xfailed bug); the end then lies within one interval after the last sighting."""
    if ledger.alive(rec):
        return None
    if rec.zombie_since is not None:
        return ledger.t0 + rec.zombie_since
    if rec.gone_at is not None and rec.gone_at > rec.last_seen:
        return ledger.t0 + rec.gone_at
    return ledger.t0 + rec.last_seen + ledger.interval_s


def ran_orphaned(rec: ProcRecord, root_pid: int) -> bool:
    """Whether the process was ever adopted by the harness (seen with it as parent), alive or
    as a zombie. Both mean the host exited without ending and reaping it; counting both
    keeps the verdict independent of whether a sample caught the orphan before it died."""
    return any(ppid == root_pid for _, ppid in rec.ppids)


def signal_host(host: RuntimeHost, ledger: ProcessLedger, faults: FaultSet,
                boxes: list[BoxUnderTest], case: Case) -> ShutdownRun:
    """Signal the host and measure until every box process it had has ended (or the bound
    for that has passed). In ungraceful cases the frozen boxes are thawed once the host is
    gone, so their shims' watchdogs can act; a graceful shutdown must cope with them frozen."""
    frozen = {(p.pid, p.create_time) for b in boxes if b.freeze for p in b.freeze.tree}
    owner = {(p.pid, p.create_time): b.label for b in boxes for p in b.tree}
    # Names as the box trees saw them after exec: the ledger keeps the name a process had
    # when first sampled, which for one caught between fork and exec is the host's.
    fresh = {(p.pid, p.create_time): p.name for b in boxes for p in b.tree}

    def kind(r: ProcRecord) -> str:
        return classify(fresh[r.key], "") if r.key in fresh else classify(r.name, r.cmd)

    def name(r: ProcRecord) -> str:
        return fresh.get(r.key, r.name)

    ledger.sample()
    at_signal = [r for r in list(ledger.records.values())
                 if kind(r) in BOX_KINDS and ledger.alive(r)]
    labels = {b.label: b.id for b in boxes if b.id}
    before = home_marks(host.home, labels)

    t_sig = time.monotonic()
    host.signal(case.sig)
    try:
        info = host.wait_exit(SHUTDOWN_BOUND_S)
        exit_s, returncode = info.elapsed_s, info.returncode
    except HostError:
        exit_s, returncode = None, None
        host.kill()
        host.wait_exit(10.0)
    t_exit = time.monotonic()
    signs = shutdown_signs(before, home_marks(host.home, labels))

    ledger.sample()         # the host is gone: what it left is now adopted by the harness
    left_at_exit = [{"pid": r.pid, "name": name(r), "kind": kind(r), "box": owner.get(r.key),
                     "ppid": r.ppid} for r in at_signal if ledger.alive(r)]
    try:
        store_at_exit = store_rows(host.home)
    except Exception as exc:  # noqa: BLE001 - a fact we could not read is recorded as such
        store_at_exit = [{"id": "?", "status": f"unreadable: {exc!r}", "reason": None}]

    thaw_s = None
    if not case.graceful and frozen:
        for b in boxes:
            if b.freeze is not None:
                faults.heal(b.freeze)
        thaw_s = time.monotonic() - t_sig
    release = t_sig + (thaw_s if thaw_s is not None else t_exit - t_sig)
    end = max(t_sig + (SHUTDOWN_BOUND_S if case.graceful else 0.0),
              release + WATCHDOG_BOUND_S) + 1.0
    try:
        wait_for(lambda: ledger.sample() and not any(ledger.alive(r) for r in at_signal),
                 max(0.0, end - time.monotonic()), "the box processes to end", interval_s=0.05)
    except WaitTimeout:
        pass                # the ones still running are judged as such
    ledger.sample()

    procs = []
    for r in at_signal:
        t_end = ended_at(ledger, r)
        orphan = ran_orphaned(r, ledger.root_pid)
        procs.append({"pid": r.pid, "name": name(r), "kind": kind(r),
                      "box": owner.get(r.key), "frozen": r.key in frozen,
                      # adopted while still running: an orphan that ran on. The ledger also
                      # adopts the zombies a dead host never reaped; those had ended.
                      "adopted": orphan, "adopted_zombie": r.adopted and not orphan,
                      "ended_s": None if t_end is None else round(max(0.0, t_end - t_sig), 3)})
    starts = {}
    for b in boxes:
        if b.start is not None:
            starts[b.label] = _start_outcome(b.start)
    return ShutdownRun(case, boxes, exit_s, returncode, thaw_s, procs, left_at_exit,
                       store_at_exit, starts, list(host.events), signs)



def _start_outcome(fut: Future) -> str:
    if not fut.done():
        return "no reply"
    try:
        reply = fut.result()
    except HostError as exc:
        return f"host gone: {exc}"
    if reply.get("ok"):
        return "started"
    return f"{reply['error'].get('type')}: {reply['error'].get('message')}"


def record_verdicts(host: RuntimeHost, boxes: Iterable[BoxUnderTest], moment: str) -> list[Verdict]:
    """The records through a (fresh) host and the store: none left unsettled; a box that had
    failed still failed with the cause it had; one that was running is final; the read paths
    agree. A start still in flight at the signal may leave its box `configured`: the runtime
    keeps a box whose start never completed configured, so the next start runs the whole
    pipeline (BoxImpl::stop)."""
    out = [records_settled(store_rows(host.home))]
    for b in boxes:
        prefix = f"{moment}.{b.label}"
        reads = [*read_host(host, b.id, prefix), read_store(host.home, b.id, f"store.{prefix}")]
        if b.state == "failed":
            cause = classify_reason(b.reason) or f"unclassified reason {b.reason!r}"
            out += [record_failed(r, cause) for r in reads]
        elif b.state == "running":
            out += [record_final(r) for r in reads]
        out.append(read_paths_agree(reads, prefix))
    return out


# -- checks (pure; self-tests in tests/test_shutdown_checks.py) ------------------------------

@check("start_reached_shim")
def start_reached_shim(box: str, planned: str, error: dict[str, Any] | None,
                       log_lines: Sequence[str]) -> Verdict:
    """A start sent to a box with nothing wrong with it gets as far as its shim: the runtime
    did not end it before any shim ran. `planned` is the state the box was to be in; `error`
    the start's answer; `log_lines` the runtime log's lines naming the box after the start."""
    cid = f"start_reached_shim[{planned}]"
    ev = {"box": box, "planned": planned, "error": error, "log": list(log_lines)[-12:]}
    if error is None:
        return Verdict(cid, UNKNOWN, ev, f"box {box}: no shim seen and no error answered")
    return Verdict(cid, VIOLATED, ev, f"box {box} ({planned}): the runtime ended its start "
                   f"before any shim ran: {error.get('message', '')[:200]}")


@check("runtime_gone_within")
def runtime_gone_within(procs: Sequence[dict[str, Any]], bound_s: float,
                        moment: str) -> Verdict:
    """Every box process ended within `bound_s` of `moment`. Each process carries `ended_s`,
    seconds from the moment to its end (None: still running when measuring stopped)."""
    cid = f"runtime_gone_within[{moment}]"
    ps = list(procs)
    running = [p for p in ps if p["ended_s"] is None]
    late = [p for p in ps if p["ended_s"] is not None and p["ended_s"] > bound_s]
    last = max((p["ended_s"] for p in ps if p["ended_s"] is not None), default=None)
    ev = {"bound_s": bound_s, "processes": ps, "still_running": running, "late": late,
          "last_ended_s": last}
    if not ps:
        return Verdict(cid, UNKNOWN, ev, f"no box process was alive at {moment}: nothing to time")
    if running or late:
        return Verdict(cid, VIOLATED, ev, f"{len(running)} still running, {len(late)} ended "
                       f"later than {bound_s:.0f}s after {moment}: " + ", ".join(
                           f"{p['name']}[{p['pid']}]" + (f" at {p['ended_s']:.1f}s"
                                                         if p["ended_s"] is not None else "")
                           for p in running + late))
    return Verdict(cid, HOLDS, ev, f"all {len(ps)} box processes ended within {last:.1f}s "
                   f"of {moment} (bound {bound_s:.0f}s)")


@check("no_orphans")
def no_orphans(procs: Sequence[dict[str, Any]]) -> Verdict:
    """No box process ran on as an orphan: none was adopted by the harness (the subreaper)
    while still running, so the shutdown ended each box's whole process tree. Each process
    carries `adopted` in that sense (see ran_orphaned)."""
    ps = list(procs)
    orphans = [p for p in ps if p["adopted"]]
    ev = {"processes": len(ps), "orphans": orphans,
          "adopted_zombies": [p for p in ps if p.get("adopted_zombie")]}
    if not ps:
        return Verdict("no_orphans", UNKNOWN, ev, "no box process was observed")
    if orphans:
        return Verdict("no_orphans", VIOLATED, ev, f"{len(orphans)} box process(es) ran on as "
                       "orphans: " + ", ".join(
                           f"{p['name']}[{p['pid']}] of {p.get('box')}, ended at "
                           f"{p['ended_s']}s" for p in orphans))
    return Verdict("no_orphans", HOLDS, ev, f"none of {len(ps)} box processes ran orphaned")


def default_host_offline(flavour: Flavour, version: str) -> Verdict | None:
    """An `unknown` verdict when a host on the SDK's default runtime cannot run boxes offline:
    Boxlite.default() takes no registry option, and releases before 0.10 pull the guest base
    image (debian:bookworm-slim) from docker.io at first start (measured: on 0.9.0-0.9.7 its
    boxes never spawned a shim in 60 s). Starting it would also send traffic off loopback, so
    the scenario must not start it. None when the host can run."""
    from harness.runtime.registry import needs_registry
    if flavour.runtime != "default" or not needs_registry(version):
        return None
    return Verdict("runtime_shutdown_ran", UNKNOWN, {"runtime_version": version},
                   f"could not measure: Boxlite.default() on {version} pulls the guest base "
                   "image from docker.io and takes no loopback registry; this machine is "
                   "offline (and the harness sends nothing off loopback), so the host was "
                   "not started")


def signal_and_judge(chaos: Any, host: RuntimeHost, boxes: list[BoxUnderTest],
                     case: Case) -> ShutdownRun:
    """Signal `host` as `case` says (signal_host), record the signal's witness and, for a
    graceful case, the shutdown's (its log line, or what it changed in the home) and judge
    runtime_shutdown_ran; then note the run's facts and judge its verdicts. `chaos` is the
    scenario's world (harness.scenario.context.Chaos). Returns the run."""
    log_before = len(runtime_log(host.home))
    run = signal_host(host, chaos.ledger, chaos.faults, boxes, case)
    chaos.witness(f"signal:{case.signal_name}", exit_s=run.exit_s, returncode=run.returncode)
    if case.graceful:
        log_after = runtime_log(host.home)[log_before:]
        logged = SHUTDOWN_LOGGED in log_after
        if logged or run.signs:
            chaos.witness("shutdown_ran", logged=logged, signs=run.signs)
        chaos.judge(runtime_shutdown_ran(log_after, run.returncode, run.signs))
    chaos.note(**run.facts())
    chaos.judge(*run.verdicts())
    return run
