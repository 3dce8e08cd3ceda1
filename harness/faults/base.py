"""The fault contract: every fault has inject() and heal(), and heal() is safe to call twice.

`FaultSet` remembers every fault a scenario injected and heals them all, newest first, in
teardown, however the test ended (failure, timeout, KeyboardInterrupt).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.observe.history import History


@dataclass
class Fault:
    name: str
    target: dict[str, Any] = field(default_factory=dict)
    injected: bool = False
    healed: bool = False
    heal_error: str | None = None

    def _inject(self) -> None:
        raise NotImplementedError

    def _heal(self) -> None:
        """Default: nothing to undo (a killed process stays dead)."""

    def describe(self) -> dict[str, Any]:
        return {"fault": self.name, **self.target}


class FaultSet:
    def __init__(self, history: History | None = None) -> None:
        self.history = history
        self.faults: list[Fault] = []

    def inject(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        fault._inject()
        fault.injected = True
        if self.history:
            self.history.append("fault", **fault.describe())
        return fault

    def heal(self, fault: Fault) -> None:
        if fault.healed or not fault.injected:
            return
        try:
            fault._heal()
        except Exception as exc:  # noqa: BLE001 - a heal that fails is reported, not raised
            fault.heal_error = repr(exc)
        fault.healed = True
        if self.history:
            self.history.append("heal", **fault.describe(), error=fault.heal_error)

    def heal_all(self) -> list[Fault]:
        for fault in reversed(self.faults):
            self.heal(fault)
        return self.faults
