"""The soak's driver: it picks among the machine's enabled rules for a budget, or takes a
recorded schedule's steps in order, with a live progress line; and one run on a fresh world.

Why a manual driver and not hypothesis' runner: `run_state_machine_as_test` suits many short
examples and a soak is one long one. Its first example is always the simplest (the first enabled
rule, over and over), so `max_examples=1` runs a degenerate schedule; later examples switch whole
rules off (swarm testing); one example holds at most 8 KiB of choices (~1,500 steps); and a
failing example found elsewhere cannot be handed to its shrinker without its private database
format. So `drive()` chooses among the machine's enabled rules itself (weighted, from
`random.Random(seed)`) and calls them through the machine, recording each step as (rule, box
label, the box's state). A failure is shrunk (`harness.jobs.soak.shrink`) by delta debugging
over the recorded steps, each candidate replayed on a fresh home until the same check fails
again, and written out as a history for `boxlite-chaos repro` and a schedule for
`boxlite-chaos soak --replay`. The machine still runs under hypothesis' own runner for short
explorations:
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

import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from harness.common.wait import poll_until
from harness.jobs.soak.model import (
    MAX_BOXES,
    MAX_STARTING,
    REMOVED,
    RULES,
    SHIM_SYNC_S,
    STARTING,
    Reproduced,
)
from harness.jobs.soak.world import SoakWorld
from harness.judge.known import FAILING, KNOWN
from harness.scenario.context import Chaos, ScenarioFailed
from harness.scenario.steps import START_BOUND_S

if TYPE_CHECKING:
    from harness.jobs.soak.machine import SoakMachine


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
    """The soak's status line on stderr: a rich live line redrawn in place on a terminal, a
    plain line every `every_s` seconds otherwise (logs, nohup)."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None,
                 every_s: float = 30.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_s = every_s if not self.tty else 0.5
        self._last = float("-inf")
        self._live: Live | None = None
        if self.tty:
            self._live = Live(console=Console(file=self.stream, force_terminal=True),
                              auto_refresh=False, transient=False)
            self._live.start()

    def update(self, line: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        if self._live is not None:
            self._live.update(Text(line, no_wrap=True, overflow="ellipsis"), refresh=True)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()


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
        if replay_step(world, machine, step):
            machine.model_holds()
            world.sample()
        if progress:
            progress.update(progress_line(world, None))




def replay_step(world: SoakWorld, machine: SoakMachine, step: Mapping[str, Any]) -> bool:
    """Take a recorded step: wait until its box is eligible again (its start resolved, its
    shim spawned) while anything is in flight, then call the rule; False if skipped."""
    world.paced = False
    name, label = step["rule"], step.get("box")
    spec = RULES[name]
    shim_rule = name in ("freeze_shim", "crash_shim")
    seen: dict[str, Any] = {}

    def enabled_or_hopeless() -> bool:
        world.poll()
        cands = world.candidates(name)
        box = world.boxes.get(label) if spec.takes_box else None
        seen.update(cands=cands, box=box,
                    ok=(box in cands) if spec.takes_box else bool(cands))
        # Only a start in flight (or a shim still to spawn) can make the step eligible.
        return seen["ok"] or not (world.in_state(STARTING) or shim_rule)
    poll_until(enabled_or_hopeless, SHIM_SYNC_S if shim_rule else START_BOUND_S,
               f"step {step.get('i')} ({name} {label}) to become enabled", 0.1)
    cands, box = seen["cands"], seen["box"]
    if not seen["ok"]:
        why = f"step {step.get('i')}: {name} {label or ''} is not enabled here; skipped"
        world.divergences.append(why)
        world.chaos.note(replay="diverged", detail=why)
        return False
    if name == "create":
        world._next_label = label
    fn = getattr(machine, name)
    fn(pick=cands.index(box)) if spec.takes_box else fn()
    return True



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
    from harness.jobs.soak.machine import SoakMachine
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
