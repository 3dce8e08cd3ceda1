"""The soak's model: its bounds and box states, a box as modelled, the rules' weights, and
the tally that judges verdicts through the known-failures table over the whole run.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from harness.common.paths import PROJECT
from harness.faults.base import Fault
from harness.judge.checks import Verdict
from harness.judge.known import FAIL, FIXED, KNOWN, UNEXPECTED, Judgement, judge
from harness.runtime.host import RuntimeHost
from harness.scenario.context import WATCHDOG_BOUND_S, Chaos

NODE_ID = "soak"
REPORTS = PROJECT / "reports"

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


# Filled by `harness.jobs.soak.machine` as it defines the machine's rules.
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
        sdk = getattr(getattr(self.chaos.env, "spec", None), "sdk", "")
        j = judge(v, self.chaos.env.version, self.chaos.node_id, self.chaos.known,
                  self.chaos.witnessed, sdk)
        self.counts.setdefault(v.check, Counter())[j.outcome] += 1
        seen = (j.outcome, v.summary if j.outcome in (FAIL, KNOWN, UNEXPECTED) else "")
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
        if j.outcome in (FAIL, UNEXPECTED) and v.check in self.stop_on:
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
                       if outcome in (FAIL, UNEXPECTED) or outcome == FIXED and self.fixed(c)),
                      key=lambda f: f["step"])

    def violations(self) -> int:
        return sum(n[FAIL] + n[UNEXPECTED] + (n[FIXED] if n[KNOWN] == 0 else 0)
                   for n in self.counts.values())

    def outcome_counts(self) -> Counter:
        return sum(self.counts.values(), Counter())
