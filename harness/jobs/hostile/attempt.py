"""One case's attempt against the runtime, within bounds: the answers to create and start,
how far the box came, and whether its runtime processes are gone afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.common.errors import HostError
from harness.common.wait import poll_until
from harness.faults.shim import Proc, box_tree, proc_children, vcpus_running
from harness.jobs.hostile.checks import (
    case_processes_gone,
)
from harness.judge.checks import Verdict
from harness.runtime.host import RuntimeHost, RuntimeOpError
from harness.scenario.context import WATCHDOG_BOUND_S

CREATE_BOUND_S = 30.0
# From start() to the VM process (or an answer): well under a second here; a generous bound
# on a loaded machine, past which the start counts as hung.
START_BOUND_S = 20.0
# From killing the shim to start()'s answer: under a second here.
FAIL_BOUND_S = 15.0
REMOVE_BOUND_S = 30.0
PROCESS_BOUND_S = WATCHDOG_BOUND_S     # the shim watchdog's bound
# How long the runtime's asynchronous log writer may take to write a failed start's crash
# block after start() answered. Measured: the block is there when start() answers on an idle
# machine; the bound is generous because waiting costs nothing unless the block is late.
LOG_BLOCK_BOUND_S = 5.0
STAGES = ("create_rejected", "created", "start_failed", "shim_spawned", "vm_entered",
          "vcpus_running", "started")


@dataclass
class Attempt:
    """What one box got to: the answers to create and start, and how far it came."""

    stage: str
    box_id: str | None = None
    create: dict[str, Any] | None = None
    start: dict[str, Any] | None = None
    shim_pid: int | None = None
    killed_by_harness: bool = False

    @property
    def error(self) -> str | None:
        for ans in (self.start, self.create):
            if ans and ans["outcome"] != "ok":
                return f"{ans['outcome']}: {(ans.get('error') or {}).get('message', '')}"
        return None


def answer_of(host: RuntimeHost, call: Callable[[], Any], bound_s: float
              ) -> tuple[Any, dict[str, Any]]:
    """Run a host call; return (result, answer) where answer is what answered_cleanly judges."""
    t0 = time.monotonic()
    try:
        result = call()
        return result, {"outcome": "ok", "error": None, "bound_s": bound_s,
                        "elapsed_s": round(time.monotonic() - t0, 3)}
    except RuntimeOpError as exc:
        err = {"type": exc.type, "message": exc.message, "mro": exc.error.get("mro", [])}
        return None, {"outcome": "error", "error": err, "bound_s": bound_s,
                      "elapsed_s": round(time.monotonic() - t0, 3)}
    except HostError as exc:
        outcome = "no_reply" if host.alive else "host_died"
        return None, {"outcome": outcome, "error": {"type": "HostError", "message": str(exc)},
                      "bound_s": bound_s, "elapsed_s": round(time.monotonic() - t0, 3)}


def watch_start(host: RuntimeHost, box: str, fut: Any, bound_s: float
                ) -> tuple[list[Proc] | None, str]:
    """Poll until start() answers, the box's VM runs its vCPUs, or `bound_s` passes.
    Returns the box's process tree as last seen and the furthest stage seen: start_failed
    (no shim seen), shim_spawned, vm_entered (the shim became 'libkrun VM') or
    vcpus_running."""
    seen: dict[str, Any] = {"tree": None, "stage": "start_failed"}

    def look() -> bool:
        """One look (every 5 ms: the tree through /proc's children files, not a scan of
        every process, which cost a sixth of a core while a start was watched); True once
        the watch is over."""
        if fut.done() or not host.alive:
            return True
        now = box_tree(host.home, box, children=proc_children)
        if now:
            seen["tree"] = now
            seen["stage"] = max(seen["stage"], "shim_spawned", key=STAGES.index)
            for p in now:
                if p.name.startswith("libkrun"):
                    seen["stage"] = max(seen["stage"], "vm_entered", key=STAGES.index)
                    if vcpus_running(p.pid):
                        seen["stage"] = "vcpus_running"
                        return True
        return False
    poll_until(look, bound_s, f"box {box}'s start to answer or its VM to run its vCPUs",
               interval_s=0.005)
    tree, stage = seen["tree"], seen["stage"]
    return tree, stage


def runtime_processes(ledger: Any) -> set:
    """The ledger's keys of every runtime process (shim, VM, bwrap) recorded so far."""
    return {r.key for r in ledger.kinds("shim", "vm", "bwrap")}


def judge_processes_gone(ledger: Any, before: set, bound_s: float = PROCESS_BOUND_S
                         ) -> Verdict:
    """Wait up to `bound_s` for every runtime process recorded since `before` to be gone,
    sampling synchronously (what is alive now, not at the last tick); judge what is left."""
    t0 = time.monotonic()
    mine: list[Any] = []
    left: list[Any] = []

    def all_gone() -> bool:
        ledger.sample()
        mine[:] = [r for r in ledger.kinds("shim", "vm", "bwrap") if r.key not in before]
        left[:] = [r for r in mine if ledger.alive(r)]
        return not left

    poll_until(all_gone, bound_s, "the case's runtime processes to be gone", 0.05)
    return case_processes_gone([r.to_json() for r in left], len(mine), time.monotonic() - t0,
                               bound_s, len(ledger.samples))
