"""One scenario's world: its history, process ledger, hosts, faults and verdicts.

`Chaos` is what the `chaos` fixture hands a scenario. Scenarios arrange steps on it and call
`chaos.judge(...)` with check verdicts; `conclude()` ends the scenario (heals faults, ends
hosts, waits out the shim watchdog, judges processes) and turns the verdicts into outcomes.
Its runtime homes live under /tmp with an owner marker (harness.leftovers.markers) and go at
its end.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.common.errors import HarnessError
from harness.common.wait import poll_until
from harness.faults.base import Fault, FaultSet
from harness.judge import checks
from harness.judge.known import (
    FAILING,
    Judgement,
    KnownFailure,
    describe,
    facts_from_event,
    judge,
)
from harness.leftovers import markers, sockets, sweep
from harness.observe.history import History, read_history
from harness.observe.processes import ProcessLedger
from harness.observe.reaping import end_points, reaping_points
from harness.runtime.host import BARE, Flavour, HostFactory, RuntimeHost
from harness.runtime.image import BusyboxImage
from harness.runtime.spec import RuntimeEnv

# At the end of a scenario's steps, how long hosts still alive get to reap a zombie they hold
# before it counts as leaked (no_zombies). The runtime reaps a dead shim on its next liveness
# poll: up to 2.5 s measured idle, about 8 s with 25 failures at once on 2 busy cores. A real
# leak (upstream issue 613) never goes, so the wait costs detection nothing, and it is spent
# only when a zombie is there.
ZOMBIE_SETTLE_S = 15.0
# Upstream: the shim's parent watchdog SIGTERMs itself when its parent dies and is force-killed
# within about 8 s. Processes may outlive their host by at most this much.
WATCHDOG_BOUND_S = 10.0
RUNTIME_KINDS = ("shim", "vm", "bwrap", "host")
# Free space a scenario needs where its homes go (markers.tmp_root(), /tmp) before it starts:
# a home holds 107-113 MiB once a box was created (disk images, the guest rootfs), and a
# scenario that restarts or adds a host may hold two.
HOMES_FREE_MIB = 256


class DiskFull(HarnessError):
    """No space left where the run writes; the message names the path."""


def disk_full(path: Path, exc: OSError | None = None) -> DiskFull:
    where = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    try:
        free = f"{shutil.disk_usage(where).free / 2**20:.0f} MiB free"
    except OSError:
        free = "free space unknown"
    why = f" ({exc.strerror or exc})" if exc is not None else ""
    return DiskFull(f"no space left to write {path}{why}; {free} on its filesystem")


def require_space(parent: Path, mib: int, what: str) -> None:
    """Fail clearly, naming `parent`, when its filesystem has less than `mib` MiB free."""
    try:
        free = shutil.disk_usage(parent).free
    except OSError as exc:
        raise disk_full(parent, exc) from exc
    if free < mib * 2**20:
        raise DiskFull(f"{parent} has {free / 2**20:.0f} MiB free; {what} need about {mib} MiB "
                       "(`boxlite-chaos sweep` removes what dead runs left)")


def keep_whole_lines(path: Path) -> None:
    """Cut a JSON-lines file back to its last complete line (a write the disk refused half
    way must not leave a torn line behind)."""
    try:
        with open(path, "r+b") as fh:
            size = fh.seek(0, os.SEEK_END)
            pos = size
            while pos > 0:
                step = min(65536, pos)
                fh.seek(pos - step)
                chunk = fh.read(step)
                nl = chunk.rfind(b"\n")
                if nl != -1:
                    keep = pos - step + nl + 1
                    if keep != size:
                        fh.truncate(keep)
                    return
                pos -= step
            fh.truncate(0)
    except OSError:
        pass


class GuardedHistory(History):
    """A history that stays readable when its disk fills: a refused write is cut back to the
    last whole line and raises DiskFull naming the file."""

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        try:
            return super().append(kind, **fields)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise
            keep_whole_lines(self.path)
            raise disk_full(self.path, exc) from exc


class ScenarioFailed(AssertionError):
    """Raised by conclude() when a verdict fails the scenario; the message lists them."""


def raise_if_failing(judgements: list[Judgement]) -> None:
    failing = [j for j in judgements if j.outcome in FAILING]
    if failing:
        raise ScenarioFailed("\n".join(describe(j) for j in failing))


@dataclass
class Chaos:
    node_id: str
    workdir: Path
    env: RuntimeEnv
    image: BusyboxImage
    known: list[KnownFailure]
    history: History = field(init=False)
    ledger: ProcessLedger = field(init=False)
    factory: HostFactory = field(init=False)
    faults: FaultSet = field(init=False)
    # Flavour fields forced on every host (rip-out runs put a reverted mechanism back), and
    # image registries every host searches (pre-0.10 releases pull their guest base image).
    overrides: dict[str, Any] = field(default_factory=dict)
    registries: tuple[str, ...] = ()
    judgements: list[Judgement] = field(default_factory=list)
    concluded: bool = False
    teardown_report: dict[str, Any] = field(default_factory=dict)
    # Facts that show a path of the runtime ran (a known failure's witness): name -> evidence.
    witnessed: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A rerun into the same report folder starts from an empty scenario folder: a home
        # left by the previous run would change what the runtime sees.
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.history = GuardedHistory(self.workdir / "history.jsonl", {
            "scenario": self.node_id, "runtime": self.env.spec.text,
            "runtime_version": self.env.version, "image": self.image.digest})
        self.history.watch(self._facts)
        self.ledger = ProcessLedger(on_sample=self._on_sample)
        # Homes live under a short temporary folder (a unix socket path inside a home must
        # fit in 108 bytes on 0.9.x); the scenario folder links to it. Its marker lets a
        # sweep remove it should this process die before its teardown.
        parent = markers.tmp_root()
        require_space(parent, HOMES_FREE_MIB, "a scenario's runtime homes")
        try:
            self.homes_root = Path(tempfile.mkdtemp(prefix="bxc-", dir=parent))
            markers.mark(self.homes_root, "homes", scenario=self.node_id,
                       workdir=str(self.workdir))
        except OSError as exc:
            raise disk_full(parent, exc) from exc
        (self.workdir / "homes").symlink_to(self.homes_root)
        self.history.append("meta", event="homes", path=str(self.homes_root))
        self.factory = HostFactory(self.env, self.workdir, self.history, self.homes_root)
        self.faults = FaultSet(self.history)
        self._last_count = -1
        self._ended = False             # hosts ended, leftovers killed (conclude or teardown)
        self.ledger.start()

    def _on_sample(self, s) -> None:
        # Only changes go to the history, so it stays readable; zombies always do.
        if s.count != self._last_count or s.zombies:
            self._last_count = s.count
            try:
                self.history.append("observe", what="processes", count=s.count,
                                    kinds=s.by_name, zombies=s.zombies)
            except DiskFull as exc:
                # The sampler keeps sampling (the checks read its samples, not the history).
                self.ledger.errors.append(str(exc))

    # -- arranging ------------------------------------------------------------------------
    def host(self, flavour: Flavour = BARE, home: Path | None = None) -> RuntimeHost:
        host = self.factory.start(home, self.effective(flavour))
        self.ledger.own_children.add(host.pid)
        return host

    def effective(self, flavour: Flavour) -> Flavour:
        return dataclasses.replace(flavour, **self.overrides,
                                   registries=tuple(flavour.registries) + self.registries)

    def restart(self, old: RuntimeHost, flavour: Flavour | None = None) -> RuntimeHost:
        host = self.factory.restart(old, self.effective(flavour) if flavour else None)
        self.ledger.own_children.add(host.pid)
        return host

    def box_options(self, **overrides: Any) -> dict[str, Any]:
        return {"rootfs_path": str(self.image.path), "auto_remove": False, **overrides}

    def inject(self, fault: Fault) -> Fault:
        return self.faults.inject(fault)

    def note(self, **fields: Any) -> None:
        self.history.append("note", **fields)

    def _facts(self, event: dict[str, Any]) -> None:
        for fact in facts_from_event(event):
            self.witnessed.setdefault(fact, {"t": event.get("t")})

    def witness(self, name: str, **evidence: Any) -> None:
        """Record that a path of the runtime ran (`name`, e.g. `start_failed`), with what
        showed it. A known failure's check holding is `fixed` only once its witness was
        recorded, so record it before judging what it witnesses."""
        self.history.append("witness", name=name, **evidence)
        self.witnessed[name] = evidence

    # -- judging --------------------------------------------------------------------------
    def judge(self, *verdicts: checks.Verdict) -> None:
        for v in verdicts:
            j = judge(v, self.env.version, self.node_id, self.known, self.witnessed,
                      self.env.spec.sdk)
            self.judgements.append(j)
            self.history.append("verdict", **j.to_json())

    def end_processes(self) -> None:
        """Heal every fault, end every host, and wait out the watchdog for the rest."""
        self.faults.heal_all()
        for host in self.factory.hosts:
            if host.alive:
                host.close()
        def gone() -> bool:
            self.ledger.sample()        # judge what is alive now, not at the last tick
            return not self.ledger.leftovers(RUNTIME_KINDS)
        t0 = time.monotonic()
        # A shim still running past the bound is judged by the checks, not raised here.
        poll_until(gone, WATCHDOG_BOUND_S, "the scenario's shims to exit after their hosts",
                   0.05)
        self.teardown_report["watchdog_wait_s"] = round(time.monotonic() - t0, 3)

    def conclude(self) -> list[Judgement]:
        """End the scenario and judge what it left; raise ScenarioFailed on a failing verdict."""
        if self.concluded:
            return self.judgements
        self.concluded = True
        points, errors = self.reaping_points()
        self.end_processes()
        self.ledger.stop()
        # Read once its hosts are gone and before its homes go (the teardown removes them).
        links = [e.to_json() for e in sockets.into([self.homes_root])]
        observed = len(self.ledger.kinds(*RUNTIME_KINDS))
        leftovers = [r.to_json() for r in self.ledger.leftovers(RUNTIME_KINDS)]
        self.judge(
            checks.faults_healed([{**f.describe(), "injected": f.injected, "healed": f.healed,
                                   "heal_error": f.heal_error} for f in self.faults.faults]),
            checks.no_zombies([r.to_json() for r in self.ledger.zombie_records()],
                              len(self.ledger.samples),
                              sampling_errors=[*self.ledger.errors, *errors],
                              reaping_points=points),
            checks.nothing_left_running(leftovers, observed),
            checks.socket_links_follow_boxes(links),
        )
        self.teardown_report["killed"] = self.ledger.kill_leftovers()
        self._ended = True
        self.write_summary()
        raise_if_failing(self.judgements)
        return self.judgements

    def reaping_points(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The moments by which the runtime should have reaped its dead children (see
        harness.observe.reaping): each answered start/stop/remove of a box, and the end of the
        steps, after giving the hosts still alive up to ZOMBIE_SETTLE_S to reap what they
        hold. Returns (points, errors reading the history)."""
        live = {h.pid for h in self.factory.hosts if h.alive}

        def none_held() -> bool:
            return not any(z["ppid"] in live for z in self.ledger.sample().zombies)
        t0 = time.monotonic()
        poll_until(none_held, ZOMBIE_SETTLE_S, "the live hosts to reap their zombies", 0.1)
        self.teardown_report["zombie_settle_s"] = round(time.monotonic() - t0, 3)
        end = end_points(self.ledger.sample().t, live)
        try:
            events = read_history(self.history.path)
        except HarnessError as exc:
            return end, [f"history unreadable for the reaping points: {exc}"]
        return reaping_points(events, self.ledger.t0 - self.history.t0) + end, []

    ready = True        # a Chaos world is usable from the start

    def result(self, outcome: str, duration_s: float) -> dict[str, Any]:
        """This scenario's line in the run's results.jsonl."""
        return {"nodeid": self.node_id, "outcome": outcome, "duration_s": round(duration_s, 3),
                "runtime": self.env.spec.text, "runtime_version": self.env.version,
                "workdir": str(self.workdir),
                "judgements": [j.to_json() for j in self.judgements]}

    def safety_teardown(self) -> None:
        """Whatever happened, leave nothing running: heal, kill hosts, kill leftovers. Also
        after a conclusion cut short (an interrupted run)."""
        self.faults.heal_all()
        self.factory.close_all()
        if not self._ended:
            self.ledger.stop()
            self.teardown_report["killed"] = self.ledger.kill_leftovers()
            self._ended = True
            self.write_summary()
        self.history.close()
        # The homes go with the scenario; what a failure needs was copied to artifacts/.
        (self.workdir / "homes").unlink(missing_ok=True)
        shutil.rmtree(self.homes_root, ignore_errors=True)
        markers.release(self.homes_root)

    def write_summary(self) -> None:
        path = self.workdir / "verdicts.json"
        try:
            path.write_text(json.dumps({
                "scenario": self.node_id, "runtime": self.env.spec.text,
                "runtime_version": self.env.version,
                "judgements": [j.to_json() for j in self.judgements],
                "processes": [r.to_json() for r in self.ledger.records.values()],
                "samples": [{"t": s.t, "count": s.count, "zombies": len(s.zombies),
                             "kinds": s.by_name} for s in self.ledger.samples],
                "teardown": self.teardown_report,
            }, indent=1, default=str))
        except OSError as exc:
            # The teardown goes on (the homes must still go); the history holds the verdicts.
            print(f"boxlite-chaos: error: {disk_full(path, exc)}", file=sys.stderr, flush=True)

    def keep_artifacts(self) -> Path:
        """Copy what a person needs to diagnose a failure into the scenario's folder."""
        dest = self.workdir / "artifacts"
        errors = sweep.copy_home_artifacts({h.home for h in self.factory.hosts}, dest)
        if errors:
            self.teardown_report["artifact_errors"] = errors[:10]
        return dest
