"""Operations of the runtime as fault points: arrange a box for an operation, record the points
its fault-free run passes (harness.observe.points), or land a fault at one point and judge
what a fresh runtime finds (the existing checks).

Operations today: create, start, stop, remove, shutdown, recovery, each on a plain and a
detached box. A new operation (issue 30's clone, export, import, snapshot, volumes) is one
more `Operation` in OPERATIONS: an `arrange` that brings a box to where the operation starts,
and an `act` that sends it (a Future) — nothing else changes.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from harness.common.errors import HarnessError, HostError
from harness.common.wait import Deadline, hold, wait_for
from harness.faults.base import Fault
from harness.faults.shim import Proc, box_tree, freeze_box, kill_shim, wait_for_vcpus
from harness.faults.syscall import SyscallError, fail_writes, home_files
from harness.judge import checks
from harness.judge.storage_checks import failed_start_recorded
from harness.judge.verdict import Verdict
from harness.observe.boxes import box_processes
from harness.observe.points import Point, PointTrigger, Recorder
from harness.observe.records import read_host, read_store, store_integrity, store_rows
from harness.runtime.host import RUNNER, RuntimeHost, RuntimeOpError
from harness.scenario.context import Chaos, ScenarioFailed
from harness.scenario.points_api import API_OPERATIONS, send_op
from harness.scenario.steps import START_BOUND_S, create_box

VARIANTS = ("plain", "detached")
# The host runs like upstream's runner: SIGTERM runs a graceful shutdown (25 s), SIGKILL
# gives it no chance.
FLAVOUR = RUNNER
# How long an operation may take before its run is stuck (a start waits out the 30 s
# guest-connect timeout; the rest take about a second here).
OP_BOUND_S = START_BOUND_S
# After the last answer, how long to keep recording what the runtime still does (its
# cleanup after a failed start, a shim's exit): seconds.
TAIL_S = 0.5
# A frozen box stays frozen this long, then is thawed and the operation runs on (a freeze
# longer than the guest-connect wait is the guest-hang scenario's subject, not a point's).
FREEZE_HOLD_S = 2.0
# The disk fails at the point: the host's writes and syncs to its home's files fail (strace,
# harness.faults.syscall) until the host is gone; io_error is EIO, disk_full ENOSPC.
IO_KINDS = {"io_error": "EIO", "disk_full": "ENOSPC"}
FAULT_KINDS = ("host_sigkill", "host_sigterm", "shim_sigkill", "freeze", "io_error")
# Kinds a sweep lands only when asked (`--kind`): disk_full is io_error with another errno.
MORE_KINDS = ("disk_full",)


@dataclass
class Run:
    """One operation's run: its world, the host the operation runs in (a recovery's is the
    new host, set once it exists), the box, and the operation's Future."""

    chaos: Chaos
    variant: str
    host: RuntimeHost | None = None
    box: str | None = None
    fut: Future | None = None
    hosts: list[RuntimeHost] = field(default_factory=list)
    # The box's processes as the arrangement left them (pid + start time): a box fault still
    # finds them once the operation removed shim.pid (stop, remove).
    tree: list[Proc] | None = None

    @property
    def detach(self) -> bool:
        return self.variant == "detached"

    def new_host(self) -> RuntimeHost:
        self.host = self.chaos.host(FLAVOUR)
        self.hosts.append(self.host)
        return self.host

    def pids(self) -> list[int]:
        return [h.pid for h in self.hosts if h.proc is not None]

    def box_ids(self) -> list[str]:
        return [self.box] if self.box else []

    @property
    def home(self):
        assert self.hosts, "no host yet"
        return self.hosts[0].home


def _created(run: Run) -> None:
    host = run.new_host()
    run.box = create_box(run.chaos, host, name="subject", detach=run.detach)


def _in_connect_wait(run: Run) -> None:
    """Created and started, its VM running its vCPUs: the start waits for the guest."""
    _created(run)
    assert run.host is not None and run.box is not None
    run.chaos.note(background_start=run.box)
    run.start_fut = run.host.send("start", box_id=run.box)  # type: ignore[attr-defined]
    run.tree = wait_for_vcpus(run.home, run.box, 30.0)


def _host_died_in_connect_wait(run: Run) -> None:
    _in_connect_wait(run)
    assert run.host is not None
    run.host.signal(signal.SIGKILL)
    run.host.wait_exit(30.0)


def _act_create(run: Run) -> Future:
    assert run.host is not None
    fut = run.host.send("create", options=run.chaos.box_options(detach=run.detach),
                        name="subject")

    def learn(f: Future) -> None:
        reply = f.result() if f.exception() is None else None
        if reply and reply.get("ok"):
            run.box = reply["result"]["id"]
    fut.add_done_callback(learn)
    return fut


def _act_recovery(run: Run) -> Future:
    """A new host on the home: the runtime recovers its boxes as it opens; then it lists
    them. The Future resolves to a reply once both are done (or the host died)."""
    fut: Future = Future()
    chaos, old = run.chaos, run.hosts[-1]

    def started(host: RuntimeHost) -> None:
        run.host = host
        run.hosts.append(host)
        chaos.ledger.own_children.add(host.pid)

    def body() -> None:
        try:
            host = start_host_announcing(chaos, old, started)
            fut.set_result({"ok": True, "result": host.call("list_info", timeout_s=60)})
        except Exception as exc:  # noqa: BLE001 - a host killed at its point fails here
            fut.set_result({"ok": False, "error": {"type": type(exc).__name__,
                                                   "message": str(exc)}})
    threading.Thread(target=body, name="recovery-host", daemon=True).start()
    return fut


def start_host_announcing(chaos: Chaos, old: RuntimeHost,
                          started: Callable[[RuntimeHost], None]) -> RuntimeHost:
    """Start a new host on `old`'s home, calling `started` as soon as its process exists
    (before it is ready: the recovery's points happen while it opens its runtime). Raises
    HostError when it dies or stays silent."""
    factory = chaos.factory
    host = RuntimeHost(factory.env, old.home, chaos.effective(FLAVOUR), factory.root / "hosts",
                factory.history, f"host{len(factory.hosts) + 1}")
    factory.hosts.append(host)
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            host.start()
        except HarnessError as exc:
            box["error"] = exc
    t = threading.Thread(target=run, name="host-start", daemon=True)
    t.start()
    wait_for(lambda: host.proc is not None or not t.is_alive(), 30, "the new host's process")
    if host.proc is not None:
        started(host)
    t.join(90)
    if "error" in box:
        raise box["error"]
    return host


@dataclass(frozen=True)
class Operation:
    """An operation as fault points: `arrange` brings a box to where it starts (not
    recorded), `act` sends it (recorded until its Future resolves)."""

    name: str
    arrange: Callable[[Run], None]
    act: Callable[[Run], Future]
    what: str


OPERATIONS: dict[str, Operation] = {op.name: op for op in (
    Operation("create", lambda run: run.new_host() and None, _act_create,
              "create() of a box"),
    Operation("start", _created, send_op("start", box_id=lambda r: r.box),
              "start() of a created box, until it ends (here: failed)"),
    Operation("stop", _in_connect_wait, send_op("stop", box_id=lambda r: r.box),
              "stop() of a box whose start waits for its guest"),
    Operation("remove", _in_connect_wait, send_op("remove", box_id=lambda r: r.box, force=True),
              "remove(force=True) of a box whose start waits for its guest"),
    Operation("shutdown", _in_connect_wait, send_op("shutdown", grace_s=10),
              "shutdown(10) of a runtime whose box waits for its guest"),
    Operation("recovery", _host_died_in_connect_wait, _act_recovery,
              "a new runtime on a home whose host was SIGKILLed in a box's connect wait"),
    # The 0.10 API beyond a box's lifecycle: clone, export, import_box, snapshots.
    *(Operation(*op) for op in API_OPERATIONS),
)}


def _finish(run: Run, fut: Future, bound_s: float = OP_BOUND_S) -> dict[str, Any] | None:
    """Wait for the operation's reply (and a background start's) within `bound_s`, noted in
    the history as ok/failed; returns the raw reply, or None when the host died first or
    did not answer."""
    reply: dict[str, Any] | None = None
    owner = next((h for h in run.hosts if getattr(fut, "req", None) is not None
                  and h.proc is not None), None)
    try:
        if owner is not None and run.host is not None:
            res = run.host.result(fut, bound_s)
            reply = {"ok": True, "result": res}
        else:
            reply = fut.result(timeout=bound_s)
    except RuntimeOpError as exc:
        reply = {"ok": False, "error": {"type": exc.type, "message": exc.message}}
    except (HostError, TimeoutError):
        reply = None
    bg = getattr(run, "start_fut", None)
    if bg is not None and run.hosts:
        try:
            run.hosts[0].result(bg, bound_s)
        except (RuntimeOpError, HostError):
            pass
    return reply


def settle_arrangement() -> None:
    """Let the arrangement's last log lines land before recording begins: a call answers
    before its own closing lines are written (an export's 'export_box completed' came ~ms
    after its reply and was recorded as the import's first point), so a list would carry
    the arrangement's tail and a fault there would never land."""
    hold(TAIL_S, "the arrangement's closing log lines are written before recording starts")


def discover_once(chaos: Chaos, operation: str, variant: str) -> tuple[list[Point], dict]:
    """One fault-free run of `operation` on a `variant` box: the points it passed, in order,
    and figures (the recorder's looks and their mean cost, the reply)."""
    op = OPERATIONS[operation]
    run = Run(chaos, variant)
    op.arrange(run)
    settle_arrangement()
    rec = Recorder(run.home, run.pids, run.box_ids).start()
    fut = op.act(run)
    reply = _finish(run, fut)
    hold(TAIL_S, "the runtime's cleanup after the operation's answer is recorded too")
    points = rec.stop()
    return points, {"reply_ok": bool(reply and reply.get("ok")),
                    "error": (reply or {}).get("error"), "looks": rec.looks,
                    "mean_look_ms": round(rec.mean_look_ms, 3)}


# -- a fault at a point --------------------------------------------------------------------------
def fits(kind: str, point: str, reference: list[str]) -> bool:
    """Whether a fault `kind` can land at `point` of an operation whose fault-free points are
    `reference`: the host's faults (and its failing disk) everywhere; the box's (shim kill,
    freeze) only between its shim's spawn (or the operation's start, when its arrangement
    spawned it) and its exit."""
    if kind in ("host_sigkill", "host_sigterm", *IO_KINDS):
        return True
    if point not in reference:
        return False
    i = reference.index(point)
    spawn = [k for k in reference if k.startswith("proc:spawn shim")]
    exits = [j for j, k in enumerate(reference) if k.startswith("proc:exit shim")]
    # A shim the arrangement started (stop, remove, shutdown) runs from the first point.
    spawned = (any(k.startswith("proc:spawn shim") for k in reference[:i + 1])
               or (not spawn and bool(exits)))
    gone = any(j <= i for j in exits)
    return spawned and not gone


@dataclass
class PointResult:
    operation: str
    variant: str
    point: str
    kind: str
    landing: dict[str, Any]
    outcome: str = "unknown"            # pass | fail | known | unknown
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    why: str = ""
    wall_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _fire(run: Run, kind: str, faults: list[Fault]) -> Callable[[], None]:
    def fire() -> None:
        host = run.host
        if kind in ("host_sigkill", "host_sigterm"):
            if host is None or not host.alive:
                raise ProcessLookupError("the operation's host is not running")
            host.signal(signal.SIGKILL if kind == "host_sigkill" else signal.SIGTERM)
            return
        if kind in IO_KINDS:
            if host is None or not host.alive:
                raise ProcessLookupError("the operation's host is not running")
            out = run.chaos.workdir / f"strace-{kind}.txt"
            fault = fail_writes(host.pid, home_files(run.home, run.box), IO_KINDS[kind], out)
            faults.append(run.chaos.inject(fault))
            if fault.proc is not None:      # the harness's own child, reaped by heal()
                run.chaos.ledger.exempt.add(fault.proc.pid)
            return
        assert run.box is not None
        tree = box_tree(run.home, run.box) or [p for p in run.tree or () if p.same()]
        if not tree:
            raise ProcessLookupError(f"box {run.box} has no shim running")
        faults.append(run.chaos.inject((kill_shim if kind == "shim_sigkill" else freeze_box)(
            run.home, run.box, tree)))
    return fire


def fault_at_point(chaos: Chaos, operation: str, variant: str, point: str, kind: str,
                   reference: list[str], conclude: bool = True) -> PointResult:
    """Run `operation` on a `variant` box and land `kind` at `point` the moment its evidence
    is seen; then judge, through a fresh host on the home: store_integrity, records_settled,
    home_consistent, read_paths_agree of the box; and the conclusion's process checks. A
    point never seen, or a fault that could not be sent, is judged `unknown`
    (fault_landed[...]). With `conclude` (outside pytest) the world is concluded here and
    the conclusion's verdicts are in the result; a scenario leaves that to the plugin.
    Returns the result; raises nothing on a failing verdict."""
    t0 = time.monotonic()
    op = OPERATIONS[operation]
    run = Run(chaos, variant)
    faults: list[Fault] = []
    trigger = PointTrigger(point, _fire(run, kind, faults))
    op.arrange(run)
    settle_arrangement()
    rec = Recorder(run.home, run.pids, run.box_ids, on_point=trigger.on_point).start()
    fut = op.act(run)
    deadline = Deadline(OP_BOUND_S, f"{operation} to reach {point} or end")
    while not trigger.done.wait(0.01):
        if fut.done() or deadline.expired():
            hold(TAIL_S, "a point seen just after the operation answered still counts")
            break
    result = PointResult(operation, variant, point, kind, {})
    if kind == "freeze" and faults:
        hold(FREEZE_HOLD_S, "the frozen box stays frozen before it is thawed")
        chaos.faults.heal(faults[-1])
    reply = _finish(run, fut)
    for h in run.hosts:
        if not h.alive:
            continue
        if kind.startswith("host") and trigger.landing.landed and h is run.host:
            try:
                h.wait_exit(60.0)
            except HostError:
                pass
    hold(TAIL_S, "what the fault set off is recorded too")
    rec.stop()
    result.landing = trigger.landing.figures(reference)
    if trigger.landing.landed:
        chaos.witness(f"point_hit:{point}", fault=kind, operation=operation, variant=variant,
                      delay_ms=result.landing.get("delay_ms"))
    else:
        result.why = trigger.error or f"{point} was not seen before {operation} ended"
        chaos.judge(Verdict(f"fault_landed[{kind}@{point}]", checks.UNKNOWN,
                            {"seen": trigger.landing.seen, "error": trigger.error},
                            result.why))
    io = [f for f in faults if isinstance(f, SyscallError)]
    if io:
        # The disk fails the hosts' shutdown too, and comes back for the fresh host.
        for h in run.hosts:
            if h.alive:
                h.close()
        chaos.faults.heal(io[0])
        calls = io[0].target.get("injected")
        result.landing.update(attach_ms=io[0].target.get("attach_ms"), files=len(io[0].paths),
                              failed_calls=calls)
        if calls:
            chaos.witness(f"io_error_hit:{point}", errno=io[0].errno, calls=calls,
                          operation=operation)
    # A start that raised while its disk failed must still leave its record failed with a
    # reason (the storage scenarios' contract); the other kinds' starts raise for the fault
    # itself (a shutdown, a killed shim), judged as before.
    failed_start = bool(io) and operation == "start" and reply is not None \
        and not reply.get("ok")
    judge_home(chaos, run, failed_start)
    if conclude:
        try:
            chaos.conclude()
        except ScenarioFailed:
            pass
    result.verdicts = [{"check": j.verdict.check, "status": j.verdict.status,
                        "outcome": j.outcome, "summary": j.verdict.summary,
                        "known": j.known.id if j.known else None} for j in chaos.judgements]
    outcomes = {j.outcome for j in chaos.judgements}
    result.outcome = ("unknown" if not trigger.landing.landed
                      else "fail" if outcomes & {"fail", "unexpected", "fixed"}
                      else "known" if "known" in outcomes else "pass")
    result.wall_s = round(time.monotonic() - t0, 2)
    return result


def judge_home(chaos: Chaos, run: Run, failed_start: bool = False) -> None:
    """A fresh host on the home after the fault: the store is whole, no record stuck, box
    folders and records agree, and every read path says the same of the box; with
    `failed_start` (the start raised under a failing disk), every path reads it failed with
    a reason. A detached box's processes, once judged, are ended (they would outlive every
    host)."""
    for h in run.hosts:
        if h.alive:
            h.close()
    if not run.hosts:
        return
    old = run.hosts[-1]
    fresh = chaos.restart(old)
    home = fresh.home
    try:
        integrity, err = store_integrity(home), None
    except Exception as exc:  # noqa: BLE001 - an unreadable store is 'unknown'
        integrity, err = None, repr(exc)
    chaos.judge(checks.store_integrity(integrity, err))
    rows = store_rows(home) if integrity else []
    alive = [r["id"] for r in rows if box_processes(home, r["id"])]
    dirs = [p.name for p in (home / "boxes").glob("*") if p.is_dir()] \
        if (home / "boxes").is_dir() else []
    chaos.judge(checks.records_settled(rows, alive), checks.home_consistent(dirs, rows))
    # A create cut at its commit may have written the record without answering: its box is
    # then the home's one record, so the read paths are judged whichever side the cut fell
    # on (a check judged in some runs only reads as a flake).
    box = run.box or (rows[0]["id"] if len(rows) == 1 else None)
    if box:
        reads = [*read_host(fresh, box, "fresh"), read_store(home, box, "store.fresh")]
        chaos.judge(checks.read_paths_agree(reads, "fresh"))
        if failed_start:
            chaos.judge(*(failed_start_recorded(r) for r in reads))
    fresh.close()
    if run.detach and run.box:
        tree = box_tree(home, run.box)
        if tree:
            try:
                chaos.inject(kill_shim(home, run.box, tree))
                chaos.note(ended_judged_vm=run.box, judged="the home after a point's fault")
            except ProcessLookupError:
                pass


# The gate's pinned selection (scenarios/points), also `points run --quick`: a store commit
# of create, the image disk's install and the shim's spawn in a start, the record's removal,
# each with the fault that hurts it most.
QUICK: tuple[tuple[str, str, str, str], ...] = (
    ("create", "plain", "store:commit", "host_sigkill"),
    ("start", "plain", "log:boxlite::images::image_disk: Installed image disk to cache: <path>",
     "host_sigterm"),
    ("start", "plain", "log:boxlite::vmm::controller::shim: boxlite-shim subprocess spawned",
     "host_sigkill"),
    ("remove", "plain", "log:boxlite::runtime::rt_impl: Removed box", "host_sigkill"),
)
