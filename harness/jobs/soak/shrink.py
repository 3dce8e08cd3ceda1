"""Shrinking a soak's failure: delta debugging over the recorded steps, each candidate replayed
on a fresh home until the same check fails again.

The harness keeps its own ddmin: a failing schedule found by the soak's driver cannot be handed
to hypothesis' shrinker without its private database format (see `harness.jobs.soak.driver`).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.common.wait import Deadline
from harness.jobs.soak.driver import replay_schedule, run_world
from harness.judge.known import FAIL
from harness.scenario.context import Chaos


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
