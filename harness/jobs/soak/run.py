"""A soak run: set up the runtime, drive or replay, shrink the failures and write the report
folder (soak.json, schedule.json, results.jsonl, report.html).
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.common.errors import SetupError
from harness.common.wait import Deadline
from harness.jobs.soak.driver import Budget, Progress, RunResult, drive, replay_schedule, run_world
from harness.jobs.soak.model import MAX_BOXES, MAX_STARTING, NODE_ID, REPORTS
from harness.jobs.soak.shrink import Shrunk, shrink_failure, shrink_targets
from harness.judge.known import FAILING, Judgement
from harness.runtime.spec import DEFAULT_SPEC
from harness.scenario.context import Chaos


@dataclass
class SoakResult:
    report: Path
    seed: int
    run: RunResult
    shrunk: list[Shrunk]
    bench: dict[str, Any]

    @property
    def failed(self) -> bool:
        return self.run.failed


def _new_chaos(workdir: Path, env: Any, image: Any, known: Any) -> Chaos:
    return Chaos(NODE_ID, workdir, env, image, known)


def bench_figures(run: RunResult) -> dict[str, Any]:
    hours = run.wall_s / 3600
    cores = os.cpu_count() or 1
    return {"cycles": run.world.cycles, "steps": len(run.world.schedule),
            "wall_s": round(run.wall_s, 1), "cycles_per_hour": round(run.world.cycles / hours, 1)
            if hours else None, "harness_cpu_s": round(run.cpu_s, 1),
            "harness_cpu_pct_of_one_core": round(100 * run.cpu_s / run.wall_s, 2)
            if run.wall_s else None,
            "harness_cpu_pct_of_machine": round(100 * run.cpu_s / run.wall_s / cores, 2)
            if run.wall_s else None, "cores": cores,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def summary_text(res: SoakResult) -> str:
    w, b = res.run.world, res.bench
    lines = [f"seed {res.seed}; {b['steps']} steps, {b['cycles']} fault cycles in "
             f"{b['wall_s']:.0f} s ({b['cycles_per_hour']} per hour); harness CPU "
             f"{b['harness_cpu_pct_of_one_core']}% of one core",
             "faults: " + (", ".join(f"{k} {v}" for k, v in sorted(w.faults.items())) or "none"),
             "starts: " + (", ".join(f"{k} {v}" for k, v in sorted(w.starts.items())) or "none")]
    for f in w.tally.failing():
        lines.append(f"{f['outcome'].upper()} {f['check']} (first at step {f['step']}, "
                     f"{f['subject']}): {f['summary']}")
    for j in teardown_failures(res.run):
        lines.append(f"{j.outcome.upper()} {j.verdict.check} (at the end): {j.verdict.summary}")
    for s in res.shrunk:
        lines.append(f"shrunk {' | '.join(s.checks)}: {len(s.steps)} steps" + (
            f" -> {s.folder}" if s.folder else f" (not reproduced: {s.note})"))
    return "\n".join(lines)


def teardown_failures(run: RunResult) -> list[Judgement]:
    """Failing verdicts of the run's end (faults healed, zombies, processes left running)."""
    stepwise = set(run.world.tally.counts)
    return [j for j in run.chaos.judgements if j.outcome in FAILING
            and j.verdict.check not in stepwise]


def write_outputs(res: SoakResult) -> Path:
    """soak.json (samples, verdicts, trends), schedule.json, results.jsonl and report.html."""
    from harness.report.build import build_report
    w, run = res.run.world, res.run
    (res.report / "schedule.json").write_text(json.dumps(
        {"seed": res.seed, "runtime": run.chaos.env.spec.text, "steps": w.schedule}, indent=1))
    trends = {v["check"]: {"status": v["status"], "slope": v["evidence"].get("slope"),
                           "max_slope": v["evidence"].get("max_slope"),
                           "points": v["evidence"].get("points"),
                           "segments": v["evidence"].get("segments"), "outcome": v["outcome"]}
              for (c, _), v in w.tally.firsts.items() if c.startswith("no_growth[")}
    (res.report / "soak.json").write_text(json.dumps({
        "summary": summary_text(res), "seed": res.seed, "runtime": run.chaos.env.spec.text,
        "runtime_version": run.chaos.env.version, "bench": res.bench,
        "faults": dict(w.faults), "starts": dict(w.starts), "trends": trends,
        "verdicts": {c: dict(n) for c, n in sorted(w.tally.counts.items())},
        "failing": [{k: f[k] for k in ("check", "outcome", "subject", "step", "summary")}
                    for f in w.tally.failing()] + [
            {"check": j.verdict.check, "outcome": j.outcome, "subject": "teardown",
             "step": None, "summary": j.verdict.summary} for j in teardown_failures(run)],
        "repro": [s.to_json() for s in res.shrunk], "divergences": w.divergences[:50],
        "samples": w.samples}, indent=1, default=str))
    with open(res.report / "results.jsonl", "w") as fh:
        fh.write(json.dumps({
            "nodeid": NODE_ID, "outcome": "failed" if run.failed else "passed",
            "duration_s": round(run.wall_s, 3), "runtime": run.chaos.env.spec.text,
            "runtime_version": run.chaos.env.version, "workdir": str(run.chaos.workdir),
            "judgements": [j.to_json() for j in run.chaos.judgements]}, default=str) + "\n")
    return build_report(res.report)


def run_soak(budget: Budget, runtime: str = DEFAULT_SPEC, report: Path | None = None,
             seed: int | None = None, *, max_boxes: int = MAX_BOXES,
             max_starting: int = MAX_STARTING, shrink_s: float = 600.0,
             replay: Path | None = None, progress: Progress | None = None,
             say: Callable[[str], None] = print) -> SoakResult:
    """Run a soak (or replay a recorded schedule) and write its report folder; shrink each
    distinct failing check within `shrink_s` seconds in all."""
    from harness.judge.known import load_table
    from harness.observe.processes import become_subreaper
    from harness.runtime.image import busybox_image
    from harness.runtime.spec import ensure_runtime
    from harness.session.doctor import check_kvm

    ok, why = check_kvm()
    if not ok:
        raise SetupError(f"the soak cannot run: {why}")
    steps = None
    if replay is not None:
        try:
            steps = json.loads(Path(replay).read_text())["steps"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SetupError(f"schedule {replay}: cannot be read as a soak schedule: "
                             f"{exc!r}") from exc
    become_subreaper()
    env, image, known = ensure_runtime(runtime), busybox_image(), load_table()
    seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
    report = (report or REPORTS / datetime.now(UTC).strftime("soak-%Y%m%dT%H%M%SZ")).resolve()
    report.mkdir(parents=True, exist_ok=True)
    say(f"boxlite-chaos soak: runtime {env.spec.text}, seed {seed}, "
        + (f"replaying {len(steps)} steps" if steps is not None else
           f"budget {budget.duration_s or 0:.0f} s" if budget.duration_s
           else f"budget {budget.cycles} cycles") + f", report {report}")
    chaos = _new_chaos(report / "scenarios" / NODE_ID, env, image, known)
    chaos.history.append("meta", event="soak", seed=seed, budget=vars(budget),
                         max_boxes=max_boxes, max_starting=max_starting,
                         replay=str(replay) if replay else None)
    rng = random.Random(seed)
    body = (lambda m: replay_schedule(m, steps, progress)) if steps is not None \
        else (lambda m: drive(m, budget, rng, progress))
    try:
        run = run_world(chaos, body, max_boxes=max_boxes, max_starting=max_starting,
                        trends=steps is None)
    finally:
        if progress:
            progress.close()
    res = SoakResult(report, seed, run, [], bench_figures(run))
    deadline = Deadline(shrink_s, "shrinking the soak's failures")
    targets = shrink_targets(run.world.tally.failing())
    for n, failure in enumerate(targets, start=1):
        if run.interrupted or deadline.expired():
            break
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", failure["checks"][0]).strip("_")
        say(f"shrinking {' | '.join(failure['checks'])} (first at step {failure['step']})")
        res.shrunk.append(shrink_failure(
            failure, run.world.schedule,
            lambda wd: _new_chaos(wd, env, image, known), report / "repro" / f"{n}-{slug}",
            deadline.remaining() / (len(targets) - n + 1), say))
    path = write_outputs(res)
    say(summary_text(res))
    for s in res.shrunk:
        if s.folder:
            say(f"replay: boxlite-chaos repro {s.folder / 'history.jsonl'}  |  "
                f"boxlite-chaos soak --replay {s.folder / 'schedule.json'}")
    say(f"report: {path}")
    return res
