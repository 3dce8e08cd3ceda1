"""One scenario's world: its history, process ledger, hosts, faults and verdicts.

`Chaos` is what the `chaos` fixture hands a scenario. Scenarios arrange steps on it and call
`chaos.judge(...)` with check verdicts; `conclude()` ends the scenario (heals faults, ends
hosts, waits out the shim watchdog, judges processes) and turns the verdicts into outcomes.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import checks
from harness.errors import HarnessError
from harness.faults.base import Fault, FaultSet
from harness.history import History, read_history
from harness.image import BusyboxImage
from harness.known import FAILING, Judgement, KnownFailure, judge
from harness.observe.processes import ProcessLedger
from harness.observe.reaping import end_points, reaping_points
from harness.runtime.host import BARE, Flavour, HostFactory, RuntimeHost
from harness.runtime.spec import RuntimeEnv
from harness.wait import Deadline, poll_until

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


class ScenarioFailed(AssertionError):
    """Raised by conclude() when a verdict fails the scenario; the message lists them."""


def raise_if_failing(judgements: list[Judgement]) -> None:
    failing = [j for j in judgements if j.outcome in FAILING]
    if failing:
        raise ScenarioFailed("\n".join(
            f"{j.verdict.check}: {j.outcome.upper()} ({j.verdict.status}) - "
            f"{j.verdict.summary}" for j in failing))


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

    def __post_init__(self) -> None:
        # A rerun into the same report folder starts from an empty scenario folder: a home
        # left by the previous run would change what the runtime sees.
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.history = History(self.workdir / "history.jsonl", {
            "scenario": self.node_id, "runtime": self.env.spec.text,
            "runtime_version": self.env.version, "image": self.image.digest})
        self.ledger = ProcessLedger(on_sample=self._on_sample)
        # Homes live under a short temporary folder (a unix socket path inside a home must
        # fit in 108 bytes on 0.9.x); the scenario folder links to it.
        self.homes_root = Path(tempfile.mkdtemp(prefix="bxc-", dir="/tmp"))
        (self.workdir / "homes").symlink_to(self.homes_root)
        self.history.append("meta", event="homes", path=str(self.homes_root))
        self.factory = HostFactory(self.env, self.workdir, self.history, self.homes_root)
        self.faults = FaultSet(self.history)
        self._last_count = -1
        self.ledger.start()

    def _on_sample(self, s) -> None:
        # Only changes go to the history, so it stays readable; zombies always do.
        if s.count != self._last_count or s.zombies:
            self._last_count = s.count
            self.history.append("observe", what="processes", count=s.count, kinds=s.by_name,
                                zombies=s.zombies)

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

    # -- judging --------------------------------------------------------------------------
    def judge(self, *verdicts: checks.Verdict) -> None:
        for v in verdicts:
            j = judge(v, self.env.version, self.node_id, self.known)
            self.judgements.append(j)
            self.history.append("verdict", **j.to_json())

    def end_processes(self) -> None:
        """Heal every fault, end every host, and wait out the watchdog for the rest."""
        self.faults.heal_all()
        for host in self.factory.hosts:
            if host.alive:
                host.close()
        deadline = Deadline(WATCHDOG_BOUND_S, "the scenario's shims to exit after their hosts")
        while True:
            self.ledger.sample()        # judge what is alive now, not at the last tick
            left = self.ledger.leftovers(RUNTIME_KINDS)
            if not left or deadline.expired():
                break
            time.sleep(0.05)
        self.teardown_report["watchdog_wait_s"] = round(deadline.elapsed(), 3)

    def conclude(self) -> list[Judgement]:
        """End the scenario and judge what it left; raise ScenarioFailed on a failing verdict."""
        if self.concluded:
            return self.judgements
        self.concluded = True
        points, errors = self.reaping_points()
        self.end_processes()
        self.ledger.stop()
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
        )
        self.teardown_report["killed"] = self.ledger.kill_leftovers()
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
        """Whatever happened, leave nothing running: heal, kill hosts, kill leftovers."""
        self.faults.heal_all()
        self.factory.close_all()
        if not self.concluded:
            self.ledger.stop()
            self.teardown_report["killed"] = self.ledger.kill_leftovers()
            self.write_summary()
        self.history.close()
        # The homes go with the scenario; what a failure needs was copied to artifacts/.
        (self.workdir / "homes").unlink(missing_ok=True)
        shutil.rmtree(self.homes_root, ignore_errors=True)

    def write_summary(self) -> None:
        (self.workdir / "verdicts.json").write_text(json.dumps({
            "scenario": self.node_id, "runtime": self.env.spec.text,
            "runtime_version": self.env.version,
            "judgements": [j.to_json() for j in self.judgements],
            "processes": [r.to_json() for r in self.ledger.records.values()],
            "samples": [{"t": s.t, "count": s.count, "zombies": len(s.zombies),
                         "kinds": s.by_name} for s in self.ledger.samples],
            "teardown": self.teardown_report,
        }, indent=1, default=str))

    def keep_artifacts(self) -> Path:
        """Copy what a person needs to diagnose a failure into the scenario's folder."""
        dest = self.workdir / "artifacts"
        dest.mkdir(exist_ok=True)
        for i, home in enumerate(sorted({h.home for h in self.factory.hosts})):
            out = dest / f"home{i + 1}"
            out.mkdir(exist_ok=True)
            for src in [*home.glob("logs/*"), *home.glob("boxes/*/shim.stderr"),
                        *home.glob("boxes/*/logs/*"), *home.glob("db/boxlite.db*")]:
                rel = src.relative_to(home)
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                try:
                    shutil.copy2(src, out / rel)
                except OSError:
                    pass
        return dest
