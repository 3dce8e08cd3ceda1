"""The canonical failure pattern as checks over any target's observations.

Docker, containerd, Kata and Daytona follow it, and upstream named it when BoxLite began to
keep failed records: a failed start keeps the record with its error; the record outlives a
daemon restart; only an explicit delete removes it; nothing of a failed instance keeps
running; a daemon told to stop is gone, whole, within its bound. The SIGTERM and zombie parts
reuse harness.judge.checks (within_bound, no_zombies) and harness.scenario.shutdown
(runtime_gone_within).
Self-tests: tests/test_targets.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.judge.checks import HOLDS, UNKNOWN, VIOLATED, Verdict, check
from harness.targets.base import RecordView


def _short(text: str | None, n: int = 140) -> str:
    text = (text or "").strip().replace("\n", " ")
    return text if len(text) <= n else text[:n] + "..."


def _unsettled(cid: str, read: RecordView, ev: dict[str, Any], missing: str) -> Verdict | None:
    """The verdict for a read that is unreadable, missing or stuck; None for a settled one."""
    if read.read_error:
        return Verdict(cid, UNKNOWN, ev, f"{read.path} could not be read: {read.read_error}")
    if not read.present:
        return Verdict(cid, VIOLATED, ev, f"{read.path}: {missing}")
    if read.transitional:
        return Verdict(cid, VIOLATED, ev, f"{read.path}: stuck in {read.status!r}")
    return None


@check("pattern_failed_record")
def failed_record(read: RecordView) -> Verdict:
    """After a start failed, the record is there, says failed where the path can tell, and
    carries a non-empty error where the path shows errors."""
    cid = f"pattern_failed_record[{read.path}]"
    ev = {"read": read.to_json()}
    early = _unsettled(cid, read, ev, "no record after the failed start")
    if early is not None:
        return early
    if read.failed is False:
        return Verdict(cid, VIOLATED, ev, f"{read.path} says {read.status!r}: the failure "
                       "is not recorded")
    if read.exposes_error and not (read.error or "").strip():
        return Verdict(cid, VIOLATED, ev, f"{read.path}: {read.status!r} without an error")
    if read.failed is None:
        return Verdict(cid, HOLDS, ev, f"{read.path}: present ({read.status!r}; this path "
                       "does not show failures)")
    return Verdict(cid, HOLDS, ev, f"{read.path}: {read.status!r}" + (
        f", error {_short(read.error, 90)!r}" if read.exposes_error else ""))


@check("pattern_record_survives_restart")
def record_survives_restart(read: RecordView, was_failed: bool,
                            error_before: str | None) -> Verdict:
    """After the daemon restarted, the record is still there and settled; a record that had
    failed still says so, with the error it had before the restart."""
    cid = f"pattern_record_survives_restart[{read.path}]"
    ev = {"read": read.to_json(), "was_failed": was_failed, "error_before": error_before}
    early = _unsettled(cid, read, ev, "the record is gone after the restart")
    if early is not None:
        return early
    if was_failed is True:
        if read.failed is False:
            return Verdict(cid, VIOLATED, ev, f"{read.path}: was failed, now {read.status!r}")
        if read.exposes_error and error_before and (read.error or "") != error_before:
            return Verdict(cid, VIOLATED, ev, f"{read.path}: the error changed across the "
                           f"restart: {_short(error_before, 60)!r} -> "
                           f"{_short(read.error, 60)!r}")
    return Verdict(cid, HOLDS, ev, f"{read.path}: {read.status!r}" + (
        ", error kept" if was_failed is True and read.exposes_error else ""))


@check("pattern_no_leaked_helpers")
def no_leaked_helpers(left: Mapping[str, Sequence[dict[str, Any]]], observed: int,
                      bound_s: float) -> Verdict:
    """No helper process (shim, VM, container process) of a failed instance is alive
    `bound_s` after its failure. `left`: instance -> its helpers still alive then;
    `observed`: helpers seen at all, without which an empty `left` proves nothing."""
    leaked = {iid: list(procs) for iid, procs in left.items() if procs}
    ev = {"left": leaked, "instances": sorted(left), "observed": observed, "bound_s": bound_s}
    if leaked:
        return Verdict("pattern_no_leaked_helpers", VIOLATED, ev, "helpers still alive "
                       f"{bound_s:.0f}s after the failure: " + "; ".join(
                           f"{iid[:12]}: " + ", ".join(f"{p['name']}[{p['pid']}]"
                                                       for p in procs)
                           for iid, procs in leaked.items()))
    if observed <= 0:
        return Verdict("pattern_no_leaked_helpers", UNKNOWN, ev,
                       "no helper process was ever observed: nothing to judge")
    return Verdict("pattern_no_leaked_helpers", HOLDS, ev,
                   f"none of {len(left)} failed instances kept a helper ({observed} observed)")


@check("target_cleaned_up")
def target_cleaned_up(processes_left: Iterable[dict[str, Any]], mounts_left: Iterable[str],
                      observed: int) -> Verdict:
    """After the harness's teardown, nothing of the target's daemon runs and nothing it
    mounted is still mounted (the harness's own safety promise on a shared machine)."""
    procs, mounts = list(processes_left), list(mounts_left)
    ev = {"processes_left": procs, "mounts_left": mounts, "observed": observed}
    if procs or mounts:
        return Verdict("target_cleaned_up", VIOLATED, ev, f"{len(procs)} process(es) and "
                       f"{len(mounts)} mount(s) left: " + ", ".join(
                           [f"{p['name']}[{p['pid']}]" for p in procs] + mounts[:5]))
    if observed <= 0:
        return Verdict("target_cleaned_up", UNKNOWN, ev, "no process of the daemon was seen")
    return Verdict("target_cleaned_up", HOLDS, ev,
                   f"all {observed} daemon processes gone, no mount left")


# The conformance matrix: one row per part of the pattern, each fed by these check ids
# (a name, or a name with its bracketed argument).
ROWS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("failed_record", "a failed start keeps the record, with its error",
     ("pattern_failed_record",)),
    ("record_survives_restart", "the record survives a daemon restart",
     ("pattern_record_survives_restart",)),
    ("no_leaked_helpers", "no per-instance helper left after failures",
     ("pattern_no_leaked_helpers",)),
    ("sigterm_stop", "SIGTERM: the daemon exits within 60 s, leaving nothing running",
     ("within_bound[daemon_exit_after_sigterm]", "runtime_gone_within[sigterm]",
      "runtime_gone_within[daemon_exit]")),
    ("no_zombies", "no zombies under the daemon", ("no_zombies",)),
    ("cleaned_up", "harness: the daemon and its mounts are gone after the run",
     ("target_cleaned_up",)),
)


def row_of(check_id: str) -> str | None:
    for key, _title, ids in ROWS:
        if any(check_id == i or check_id.split("[")[0] == i for i in ids):
            return key
    return None
