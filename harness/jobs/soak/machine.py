"""The soak's schedule as a hypothesis `RuleBasedStateMachine`: one rule per step kind, each
weighted for the soak's own driver, and the world's after-step check as its invariant.

Kept apart from `harness.jobs.soak.world` so that importing the soak's command line (every
`boxlite-chaos` invocation builds it) does not import hypothesis before pytest can register
its assertion rewriting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from harness.jobs.soak.model import RULES, RuleSpec

if TYPE_CHECKING:
    from harness.jobs.soak.world import SoakWorld

PICK = st.integers(min_value=0, max_value=2**16 - 1)


def soak_rule(weight: float, takes_box: bool = True) -> Callable:
    """A rule of the machine, enabled while the world has candidates for it; `weight` is how
    often the soak's driver picks it among the enabled ones."""
    def deco(fn: Callable) -> Callable:
        name = fn.__name__
        RULES[name] = RuleSpec(name, weight, takes_box)
        wrapped = rule(pick=PICK)(fn) if takes_box else rule()(fn)
        return precondition(lambda self: bool(self.world.candidates(name)))(wrapped)
    return deco


class SoakMachine(RuleBasedStateMachine):
    """The soak's rules over a `SoakWorld`; the invariant is the world's after-step check."""

    def __init__(self, world: SoakWorld) -> None:
        super().__init__()
        self.world = world

    @soak_rule(2.0, takes_box=False)
    def create(self) -> None:
        self.world.do("create")

    @soak_rule(4.0)
    def start(self, pick: int) -> None:
        self.world.do("start", pick)

    @soak_rule(3.0)
    def freeze_shim(self, pick: int) -> None:
        self.world.do("freeze_shim", pick)

    @soak_rule(3.0)
    def crash_shim(self, pick: int) -> None:
        self.world.do("crash_shim", pick)

    @soak_rule(0.3, takes_box=False)
    def terminate_host(self) -> None:
        self.world.do("terminate_host")

    @soak_rule(0.3, takes_box=False)
    def kill_host(self) -> None:
        self.world.do("kill_host")

    @soak_rule(10.0, takes_box=False)
    def restart_host(self) -> None:
        self.world.do("restart_host")

    @soak_rule(1.0)
    def stop(self, pick: int) -> None:
        self.world.do("stop", pick)

    @soak_rule(1.5)
    def remove(self, pick: int) -> None:
        self.world.do("remove", pick)

    @soak_rule(0.5)
    def force_remove(self, pick: int) -> None:
        self.world.do("force_remove", pick)

    @soak_rule(2.0, takes_box=False)
    def wait(self) -> None:
        self.world.do("wait")

    @invariant()
    def model_holds(self) -> None:
        self.world.check()

    def teardown(self) -> None:
        self.world.chaos.faults.heal_all()
