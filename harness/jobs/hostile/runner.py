"""Driving one case through a long-lived host: bounds, attempts, and `HostileRunner`, which
keeps the tallies and raises a case's failures under their check ids.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import assume

from harness.common.errors import HarnessError, HostError, SetupError
from harness.common.wait import poll_until
from harness.faults.shim import box_tree, kill_shim
from harness.jobs.hostile.attempt import (
    CREATE_BOUND_S,
    FAIL_BOUND_S,
    LOG_BLOCK_BOUND_S,
    REMOVE_BOUND_S,
    START_BOUND_S,
    Attempt,
    answer_of,
    judge_processes_gone,
    runtime_processes,
    watch_start,
)
from harness.jobs.hostile.checks import (
    CRASH_EXITS,
    answered_cleanly,
    kind_of,
    layer_contained,
    names_unambiguous,
    runtime_did_not_crash,
    specialize,
)
from harness.jobs.hostile.shards import EXPLICIT, Shard
from harness.jobs.hostile.strategies import (
    HOLDER_ID_AS_NAME,
    HOLDER_SAME_NAME,
    HostileCase,
    abbreviate,
    kinds,
)
from harness.jobs.hostile.workspace import (
    LogCursor,
    Workspace,
    crash_block_logged,
    escaped_markers,
    shim_exits,
    signal_exit_code,
    store_configs,
    unpacked_by_runtime,
)
from harness.judge import checks
from harness.judge.checks import HOLDS, UNKNOWN, VIOLATED, Verdict
from harness.judge.known import FAILING, judge
from harness.observe.records import read_store, store_rows
from harness.runtime.host import RuntimeHost
from harness.session import seeds


class CaseFailed(AssertionError):
    """A case's verdict failed (not a known failure): hypothesis shrinks on this."""


_FAILURE_TYPES: dict[str, type[CaseFailed]] = {}


def raise_case_failed(failing: Sequence[tuple[str, str]]) -> None:
    """Raise a CaseFailed subclass of its own for each set of failing check ids: hypothesis
    tells bugs apart by exception type (and raise site, hence this one place), so each bug is
    shrunk and reported on its own instead of being shrunk into another."""
    ids = " ".join(sorted({c for c, _ in failing}))
    kind = _FAILURE_TYPES.get(ids)
    if kind is None:
        name = "CaseFailed_" + hashlib.sha1(ids.encode()).hexdigest()[:8]
        kind = _FAILURE_TYPES[ids] = type(name, (CaseFailed,), {"__doc__": ids,
                                                                "__module__": __name__})
    raise kind("; ".join(f"{c}: {s}" for c, s in failing))


@dataclass
class Tally:
    """All verdicts of one check id over the cases of a run."""

    check: str
    holds: int = 0
    violated: list[dict[str, Any]] = field(default_factory=list)
    unknown: list[dict[str, Any]] = field(default_factory=list)

    def add(self, v: Verdict, case: HostileCase) -> None:
        if v.status == HOLDS:
            self.holds += 1
            return
        entry = {"case": case.short(600), "summary": v.summary,
                 "evidence": json.loads(json.dumps(abbreviate(v.evidence, text=800),
                                                   default=str))}
        (self.violated if v.status == VIOLATED else self.unknown).append(entry)

    def verdict(self) -> Verdict:
        """Unknown in any case → unknown; violated in any → violated; else holds."""
        n = self.holds + len(self.violated) + len(self.unknown)
        def keep(xs: list) -> list:
            return xs[:3] + xs[-1:] if len(xs) > 4 else xs
        ev = {"cases": n, "holds": self.holds, "violated": len(self.violated),
              "unknown": len(self.unknown), "violations": keep(self.violated),
              "unknowns": keep(self.unknown),
              # The check is per kind: a case of it ran, so its path through create and
              # start ran (a known failure's witness).
              "witnessed": ["hostile_case_ran"] if n else []}
        if self.unknown:
            return Verdict(self.check, UNKNOWN, ev, f"{len(self.unknown)} of {n} case(s) "
                           f"could not be judged: {self.unknown[-1]['summary']}")
        if self.violated:
            last = self.violated[-1]
            return Verdict(self.check, VIOLATED, ev, f"{len(self.violated)} of {n} case(s): "
                           f"{last['summary']} — last (shrunk) case: {last['case']}")
        return Verdict(self.check, HOLDS, ev, f"held in all {n} case(s)")


class HostileRunner:
    """Drives hostile cases through one long-lived host (restarted if it dies) and keeps the
    per-check tallies that become the scenario's verdicts.

    Per case: create and start the hostile box (the shim is killed once it has become the VM:
    a start that gets that far has passed every host-side use of its options), judge the
    answers, the records and the home, remove the boxes, check a well-formed box still gets
    to its VM, and that every process of the case is gone. A failing case raises CaseFailed so
    hypothesis shrinks it; after `budget_s` a case already run replays its outcome and a new
    one is rejected, which bounds shrinking. With a `shard`, only the cases of its kinds run;
    the family's others pass through untouched (their shard runs them)."""

    def __init__(self, chaos: Any, family: str, budget_s: float,
                 shard: Shard | None = None) -> None:
        self.chaos = chaos
        self.family = family
        self.budget_s = budget_s
        # The kinds this runner judges (a shard's); cases of the family's other kinds are
        # drawn, so the sequence stays the family's, and left to their own shards.
        self.shard = shard
        self.own_kinds = frozenset(shard.kinds if shard else kinds(family))
        self.family_kinds = frozenset(kinds(family))
        self.t0 = time.monotonic()
        self.host: RuntimeHost = chaos.host()
        self.workspace = Workspace(chaos.workdir / "hostile", chaos.image.path)
        self.tallies: dict[str, Tally] = {}
        self.outcomes: dict[str, bool] = {}         # case key → failed
        self.runs = {"canonical": 0, "pinned": 0, "generated": 0, "replayed": 0,
                     "rejected": 0, "other_shards": 0}
        self.seed = seeds.run_seed()
        self.findings: set[tuple[str, ...]] = set()
        self.failures: list[dict[str, Any]] = []
        self.host_restarts = 0

    # -- hypothesis's side -----------------------------------------------------------------
    def run(self, case: HostileCase) -> None:
        if case.kind not in self.own_kinds:
            if case.kind not in self.family_kinds:
                raise SetupError(f"case of kind {case.kind!r} drawn in family {self.family}")
            # Another shard of the family runs this case (it draws the same sequence).
            self.runs["other_shards"] += 1
            return
        key = case.key()
        if time.monotonic() - self.t0 > self.budget_s and case.origin not in EXPLICIT:
            if key not in self.outcomes:
                self.runs["rejected"] += 1
                assume(False)
            self.runs["replayed"] += 1
            failing = self.outcomes[key]
        else:
            self.runs[case.origin] += 1
            failing = self.outcomes[key] = self.judge_case(case)
        # An explicit example is minimal already and hypothesis would stop generating at its
        # failure; its verdicts fail the scenario all the same.
        if failing and case.origin not in EXPLICIT:
            raise_case_failed(failing)

    def judge_case(self, case: HostileCase) -> list[tuple[str, str]]:
        """Run the case, tally its verdicts; return the failing ones as (check id, summary)."""
        verdicts, facts = self.one_case(case)
        failing = []
        for v in verdicts:
            j = judge(v, self.chaos.env.version, self.chaos.node_id, self.chaos.known)
            self.tallies.setdefault(v.check, Tally(v.check)).add(v, case)
            if j.outcome in FAILING and v.status != HOLDS:
                failing.append((v.check, v.summary))
        violated = sorted(v.check for v in verdicts if v.status == VIOLATED)
        if violated and case.origin == "generated" and seeds.exploring():
            self.write_finding(case, violated)
        self.chaos.note(hostile_case=sum(self.runs[o] for o in (*EXPLICIT, "generated")),
                        case_kind=case.kind, origin=case.origin, case=case.short(800), **facts,
                        failing=[c for c, _ in failing])
        if failing:
            self.failures.append({"case": case.to_json(), "failing": failing})
            self.chaos.note(hostile_failure=case.kind, options=case.options, name=case.name,
                            holder=case.holder, verdicts=[f"{c}: {s}" for c, s in failing])
        return failing

    def write_finding(self, case: HostileCase, violated: list[str]) -> None:
        """An exploring run's new finding, once per kind and set of violated checks, written
        as a line ready to pin (see harness.session.seeds)."""
        key = (case.kind, *violated)
        if key in self.findings:
            return
        self.findings.add(key)
        seeds.write_finding(self.chaos.workdir.parent.parent, case.to_json(), self.seed,
                            violated)

    def explore(self, test: Callable[[], None]) -> None:
        """Run the hypothesis test; a failure made only of failing cases is already in the
        tallies (and the history), so it is noted, not raised; anything else is raised."""
        try:
            test()
        except BaseException as exc:  # noqa: BLE001 - sorted below: ours is data, the rest not
            self.chaos.note(hypothesis="falsified", detail="".join(
                traceback.format_exception(exc))[-6000:])
            if not only_case_failures(exc):
                self.judge_totals()
                raise
        self.judge_totals(complete=True)

    def judge_totals(self, complete: bool = False) -> None:
        """Judge every tally. `complete`: hypothesis ran to its end, so every kind of the
        runner has cases (each has an explicit example); one without is a harness error,
        raised after the verdicts so it cannot pass unseen."""
        judged = {kind_of(t.check) for t in self.tallies.values()}
        unjudged = sorted(self.own_kinds - judged)
        self.chaos.note(hostile_family=self.family,
                        shard=self.shard.label if self.shard else None,
                        kinds=sorted(self.own_kinds), runs=self.runs,
                        host_restarts=self.host_restarts, failing_cases=len(self.failures),
                        unjudged_kinds=unjudged, elapsed_s=round(time.monotonic() - self.t0, 1))
        self.chaos.judge(*(t.verdict() for t in self.tallies.values()))
        self.tallies.clear()
        if complete and unjudged:
            raise HarnessError(f"hostile {self.family}: no case judged kind(s) {unjudged}")

    # -- one case --------------------------------------------------------------------------
    def one_case(self, case: HostileCase) -> tuple[list[Verdict], dict[str, Any]]:
        chaos, kind = self.chaos, case.kind
        host = self.live_host()
        ledger_before = runtime_processes(chaos.ledger)
        log = LogCursor(host.home)
        stderr_at = self._stderr_size(host)
        res = self.workspace.materialize(case, chaos.box_options())
        verdicts: list[Verdict] = []
        boxes: list[str] = []
        t0 = time.monotonic()
        try:
            if case.holder:
                holder = self.attempt(host, chaos.box_options(), case.name
                                      if case.holder == HOLDER_SAME_NAME else None, start=False)
                boxes += [holder.box_id] if holder.box_id else []
                if case.holder == HOLDER_ID_AS_NAME:
                    res.name = holder.box_id
            hostile = self.attempt(host, res.options, res.name)
            boxes += [hostile.box_id] if hostile.box_id else []
            verdicts.append(specialize(answered_cleanly("create", hostile.create), kind))
            if hostile.start is not None:
                verdicts.append(specialize(answered_cleanly("start", hostile.start), kind))
            host = self.host
            crash_host_alive = host.alive
            record = None
            if host.alive:
                verdicts += [specialize(v, kind, m) for v, m in self.judge_home(host)]
                if hostile.box_id:
                    read = read_store(host.home, hostile.box_id)
                    record = [read.status, read.reason] if read.present else read.error
            exits = self.logged_exits(log, hostile)
            for e in exits:
                e["killed_by_harness"] = hostile.killed_by_harness
            verdicts.append(specialize(runtime_did_not_crash(
                exits, crash_host_alive, self._stderr_since(host, stderr_at)), kind))
            host = self.live_host()
            for box in boxes:
                _, ans = answer_of(host, lambda b=box, h=host: h.call(
                    "remove", timeout_s=REMOVE_BOUND_S, box_id=b, force=True), REMOVE_BOUND_S)
                verdicts.append(specialize(answered_cleanly("remove", ans), kind))
                host = self.live_host()
            boxes.clear()
            control = self.attempt(host, chaos.box_options(), None)
            verdicts.append(specialize(checks.image_cache_usable(
                control.stage, "vcpus_running", control.error), kind))
            host = self.live_host()
            if control.box_id:
                host.try_call("remove", timeout_s=REMOVE_BOUND_S, box_id=control.box_id,
                              force=True)
            verdicts.append(specialize(judge_processes_gone(chaos.ledger, ledger_before), kind))
            host = self.live_host()
            verdicts += [specialize(v, kind, m) for v, m in self.judge_home(host, "removed")]
            if res.markers:
                escaped = escaped_markers(res.markers, [chaos.workdir, host.home.parent],
                                          unpacked_by_runtime(host.home))
                verdicts.append(specialize(layer_contained(escaped, len(res.markers)), kind))
                for path in escaped:        # judged; now leave nothing of ours out there
                    Path(path).unlink(missing_ok=True)
        finally:
            res.close()
            for box in boxes:       # a case cut short still removes what it made
                if self.host.alive:
                    self.host.try_call("remove", timeout_s=REMOVE_BOUND_S, box_id=box,
                                       force=True)
        facts = {"hostile_stage": hostile.stage, "hostile_error": hostile.error,
                 "hostile_record": record, "control_stage": control.stage,
                 "case_s": round(time.monotonic() - t0, 2)}
        return verdicts, facts

    def logged_exits(self, log: LogCursor, att: Attempt) -> list[dict[str, Any]]:
        """The hostile box's shim exits, from the runtime's own words. A start that failed
        with "failed to start" means the runtime saw the VM end and logs a crash block for
        the box; its log writer is asynchronous, so under load the block can land after
        start() answered: wait for it (LOG_BLOCK_BOUND_S), instead of judging a log that
        does not hold it yet. A fatal signal named by start()'s error counts as well."""
        if not att.box_id:
            return []
        text = log.read()
        message = (att.start or {}).get("error") or {}
        message = message.get("message") or "" if isinstance(message, dict) else ""
        if "failed to start" in message and not crash_block_logged(text, att.box_id):
            chunks = [text]

            def block_logged() -> bool:
                chunks.append(log.read())
                return crash_block_logged("".join(chunks), att.box_id)
            seen = poll_until(block_logged, LOG_BLOCK_BOUND_S,
                              f"the runtime's crash block for box {att.box_id}", 0.05)
            text = "".join(chunks)
            self.chaos.note(crash_block_waited=att.box_id, seen=seen)
        exits = shim_exits(text, {att.box_id: att.shim_pid})
        from_error = signal_exit_code(message)
        if from_error and not any(e["exit_code"] in CRASH_EXITS for e in exits):
            exits.append({"box": att.box_id, "pid": att.shim_pid, "exit_code": from_error,
                          "detail": f"start() said: {message[:300]}"})
        return exits

    def live_host(self) -> RuntimeHost:
        """The host, restarted on its home if it died (its death is judged where it showed)."""
        if not self.host.alive:
            self.host_restarts += 1
            self.chaos.note(host_restart=self.host.name, returncode=self.host.proc.returncode
                            if self.host.proc else None)
            self.host = self.chaos.restart(self.host)
        return self.host

    def attempt(self, host: RuntimeHost, options: dict[str, Any], name: str | None,
                start: bool = True) -> Attempt:
        """Create a box and start it; once its VM runs (a vCPU thread exists: every host-side
        use of the options is behind it), kill the shim. The start then fails at once;
        waiting would cost the VM's own ~17 s failure here. A shim that dies before that
        point died of the input, and the runtime's log says how."""
        made, create = answer_of(host, lambda: host.call(
            "create", timeout_s=CREATE_BOUND_S, options=options, name=name), CREATE_BOUND_S)
        if made is None:
            return Attempt("create_rejected", create=create)
        box = made["id"]
        if not start:
            return Attempt("created", box, create)
        try:
            fut = host.send("start", box_id=box)
        except HostError as exc:
            ans = {"outcome": "host_died", "error": {"type": "HostError", "message": str(exc)},
                   "bound_s": START_BOUND_S, "elapsed_s": 0.0}
            return Attempt("start_failed", box, create, ans)
        tree, stage = watch_start(host, box, fut, START_BOUND_S)
        att = Attempt(stage, box, create, shim_pid=tree[0].pid if tree else None)
        if stage == "vcpus_running":
            try:
                self.chaos.inject(kill_shim(host.home, box, tree))
                att.killed_by_harness = True
            except ProcessLookupError:
                pass                # the shim ended on its own meanwhile
        bound = FAIL_BOUND_S if (att.killed_by_harness or fut.done()) else START_BOUND_S
        _, att.start = answer_of(host, lambda: host.result(fut, bound), bound)
        if att.start["outcome"] == "ok":
            att.stage = "started"
        if att.start["outcome"] == "no_reply":
            # Hung: end what it spawned so the next case starts clean; the verdicts say why.
            host.try_call("remove", timeout_s=REMOVE_BOUND_S, box_id=box, force=True)
            now = box_tree(host.home, box) or tree
            if now:
                try:
                    self.chaos.inject(kill_shim(host.home, box, now))
                except ProcessLookupError:
                    pass
        return att

    # -- judging the home and processes ---------------------------------------------------
    def judge_home(self, host: RuntimeHost, moment: str = "settled"
                   ) -> list[tuple[Verdict, str | None]]:
        home = host.home
        try:
            rows, configs, err = store_rows(home), store_configs(home), None
        except (sqlite3.Error, OSError) as exc:
            rows, configs, err = None, None, f"{type(exc).__name__}: {exc}"
        if err:
            bad = Verdict("records_settled", UNKNOWN, {"error": err}, f"store unreadable: {err}")
            return [(bad, moment)]
        boxes_dir = home / "boxes"
        dirs = [p.name for p in boxes_dir.iterdir() if p.is_dir()] if boxes_dir.is_dir() else []
        out = [(checks.home_consistent(dirs, rows), moment)]
        if moment == "settled":
            out += [(checks.records_settled(rows), None), (names_unambiguous(configs), None)]
        return out

    @staticmethod
    def _stderr_size(host: RuntimeHost) -> int:
        path = host.workdir / f"{host.name}.stderr"
        return path.stat().st_size if path.is_file() else 0

    @staticmethod
    def _stderr_since(host: RuntimeHost, offset: int) -> str:
        path = host.workdir / f"{host.name}.stderr"
        if not path.is_file():
            return ""
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")


def only_case_failures(exc: BaseException) -> bool:
    """True when `exc` is a CaseFailed, or a group (hypothesis's multiple bugs, flaky
    replays) made only of them."""
    if isinstance(exc, CaseFailed):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(only_case_failures(e) for e in exc.exceptions)
