"""Named checks: pure functions from observations to a Verdict (holds, violated, unknown).

A check that raises, or that is handed data it cannot judge, says `unknown` — never a pass.
Every check here has a self-test in tests/test_checks.py that feeds it a violating case.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from harness.judge.verdict import (  # noqa: F401 - re-exported: checks.HOLDS and the like
    CAUSES,
    CHECKS,
    HOLDS,
    UNKNOWN,
    VIOLATED,
    ZOMBIE_GRACE_S,
    Verdict,
    check,
    classify_reason,
    names_cause,
)
from harness.observe.logs import EVIDENCE_FIELDS, SHUTDOWN_LOGGED
from harness.observe.records import FINAL, RecordRead


@check("record_failed")
def record_failed(read: RecordRead, cause: str, *, check_id: str | None = None) -> Verdict:
    """The record exists with status `failed`, and (where the path exposes it) an error
    reason that names `cause`."""
    cid = check_id or f"record_failed[{read.path}]"
    ev = {"read": read.to_json(), "expected_cause": cause}
    if read.error:
        return Verdict(cid, UNKNOWN, ev, f"{read.path} could not be read: {read.error}")
    if not read.present:
        return Verdict(cid, VIOLATED, ev, f"no record of the box in {read.path}")
    if read.status != "failed":
        return Verdict(cid, VIOLATED, ev, f"{read.path} says {read.status!r}, not 'failed'")
    if read.exposes_reason:
        if not (read.reason or "").strip():
            return Verdict(cid, VIOLATED, ev, f"{read.path}: status failed but empty reason")
        if cause not in CAUSES:
            return Verdict(cid, UNKNOWN, ev, f"unknown expected cause {cause!r}")
        named = classify_reason(read.reason)
        ev["reason_names"] = named
        if not names_cause(read.reason, cause):
            return Verdict(cid, VIOLATED, ev,
                           f"{read.path}: reason names {named!r}, expected {cause!r}: "
                           f"{read.reason!r}")
    return Verdict(cid, HOLDS, ev, f"{read.path}: failed" +
                   (f" ({cause})" if read.exposes_reason else ""))


@check("read_paths_agree")
def read_paths_agree(reads: Sequence[RecordRead], moment: str) -> Verdict:
    """Every read path that could be read shows the same presence and status."""
    cid = f"read_paths_agree[{moment}]"
    values = {r.path: (r.status if r.present else None) for r in reads if not r.error}
    ev = {"values": values, "unreadable": {r.path: r.error for r in reads if r.error}}
    if len(values) < 2:
        return Verdict(cid, UNKNOWN, ev, "fewer than two read paths could be read")
    if len(set(values.values())) > 1:
        return Verdict(cid, VIOLATED, ev, "read paths disagree: " +
                       ", ".join(f"{k}={v!r}" for k, v in values.items()))
    if ev["unreadable"]:
        return Verdict(cid, UNKNOWN, ev, "some read paths could not be read")
    agreed = next(iter(values.values()))
    return Verdict(cid, HOLDS, ev, f"{len(values)} read paths agree on {agreed!r}")


@check("timeout_evidence")
def timeout_evidence(evidence: dict[str, str] | None, log_bytes: int) -> Verdict:
    """The runtime log carries the guest-connect timeout's evidence block, every field."""
    cid = "timeout_evidence"
    ev = {"fields": evidence, "log_bytes": log_bytes, "required": list(EVIDENCE_FIELDS)}
    if log_bytes == 0:
        return Verdict(cid, UNKNOWN, ev, "the runtime log is empty or missing")
    if evidence is None:
        return Verdict(cid, VIOLATED, ev, "no timeout evidence block for the box in the log")
    missing = [f for f in EVIDENCE_FIELDS if not evidence.get(f)]
    if missing:
        return Verdict(cid, VIOLATED, ev, f"evidence block lacks {missing}")
    return Verdict(cid, HOLDS, ev, "evidence block has " + ", ".join(
        f"{k}={evidence[k]}" for k in EVIDENCE_FIELDS))


@check("no_zombies")
def no_zombies(zombies: Iterable[dict[str, Any]], samples: int, grace_s: float = ZOMBIE_GRACE_S,
               sampling_errors: Sequence[str] = (),
               reaping_points: Sequence[dict[str, Any]] | None = None) -> Verdict:
    """No zombie outlived the moment by which its parent should have reaped it.

    `zombies` are ledger records with `zombie_since` and `last_seen` (seconds, ledger time),
    and `zombie_ppid` and `box` where known. Every zombie is counted and kept as evidence.

    With `reaping_points` (harness.observe.reaping: {t, ppid, box, settle_s, why}), the bound
    is the runtime's own events, which load stretches along with the reaping: a zombie of
    parent P is leaked when it was already dead at a point of P (for its box, or for any box
    when the point's box is None: the scenario's end) and still a zombie `settle_s` after it.
    Without points (Docker's daemon, the soak), a zombie lasting `grace_s` seconds is leaked:
    during guest connect the runtime notices a dead shim on its next liveness poll, up to
    2.5 s measured on 0.10.8 on an idle machine (upstream issue 523 for the leak).
    Without samples there is nothing to judge: unknown.
    """
    cid = "no_zombies"
    zs = list(zombies)
    longest = max((z["last_seen"] - z["zombie_since"] for z in zs), default=0.0)
    if reaping_points is None:
        lasting = [z for z in zs if (z["last_seen"] - z["zombie_since"]) >= grace_s]
        rule = f"outlived {grace_s}s"
    else:
        lasting = []
        for z in zs:
            parent = z.get("zombie_ppid", z.get("ppid"))
            missed = next((p for p in reaping_points if p["ppid"] == parent
                           and (p["box"] is None or p["box"] == z.get("box"))
                           and z["zombie_since"] <= p["t"]
                           and z["last_seen"] >= p["t"] + p["settle_s"]), None)
            if missed is not None:
                lasting.append({**z, "missed": missed})
        rule = "outlived the moment its parent should have reaped it"
    ev = {"samples": samples, "grace_s": grace_s if reaping_points is None else None,
          "reaping_points": None if reaping_points is None else list(reaping_points)[:200],
          "zombies": zs, "lasting": lasting, "longest_s": round(longest, 3),
          "sampling_errors": list(sampling_errors)[:5]}
    if samples == 0:
        return Verdict(cid, UNKNOWN, ev, "the process ledger took no samples")
    if lasting:
        return Verdict(cid, VIOLATED, ev, f"{len(lasting)} zombie(s) {rule}: " + ", ".join(
            f"{z['name']}[{z['pid']}] under {z.get('zombie_ppid') or z['ppid']}"
            + (f" ({z['missed']['why']} at {z['missed']['t']:.1f}s)" if "missed" in z else "")
            for z in lasting))
    if sampling_errors:
        return Verdict(cid, UNKNOWN, ev, f"sampling failed: {sampling_errors[0]}")
    return Verdict(cid, HOLDS, ev, f"no lasting zombie in {samples} samples "
                   f"({len(zs)} reaped in time, longest {longest:.1f}s)")


@check("nothing_left_running")
def nothing_left_running(leftovers: Iterable[dict[str, Any]], observed: int,
                         what: str = "the scenario") -> Verdict:
    """After teardown, no process the scenario started is still alive."""
    cid = "nothing_left_running"
    left = list(leftovers)
    ev = {"leftovers": left, "observed": observed}
    if observed == 0:
        return Verdict(cid, UNKNOWN, ev, f"the ledger saw no process of {what}")
    if left:
        return Verdict(cid, VIOLATED, ev, f"{len(left)} process(es) outlived {what}: " +
                       ", ".join(f"{p['name']}[{p['pid']}]" for p in left))
    return Verdict(cid, HOLDS, ev, f"all {observed} processes of {what} are gone")


@check("faults_healed")
def faults_healed(faults: Iterable[dict[str, Any]]) -> Verdict:
    """Every injected fault was healed without error."""
    fs = list(faults)
    bad = [f for f in fs if f.get("injected") and (not f.get("healed") or f.get("heal_error"))]
    ev = {"faults": fs}
    if bad:
        return Verdict("faults_healed", VIOLATED, ev, f"{len(bad)} fault(s) not healed")
    return Verdict("faults_healed", HOLDS, ev, f"{len(fs)} fault(s) healed")


@check("op_failed_cleanly")
def op_failed_cleanly(op: str, error: dict[str, Any] | None, host_alive: bool) -> Verdict:
    """The operation failed with a runtime error carrying a message, and the host lived."""
    cid = f"op_failed_cleanly[{op}]"
    ev = {"error": error, "host_alive": host_alive}
    if not host_alive:
        return Verdict(cid, VIOLATED, ev, f"the host died during {op}")
    if error is None:
        return Verdict(cid, VIOLATED, ev, f"{op} succeeded where a failure was expected")
    if not (error.get("message") or "").strip():
        return Verdict(cid, VIOLATED, ev, f"{op} failed with an empty message")
    return Verdict(cid, HOLDS, ev, f"{op} failed: {error.get('type')}: {error['message'][:120]}")


@check("transition_allowed")
def transition_allowed(op: str, state: str, error: dict[str, Any] | None, ran: bool,
                       host_alive: bool = True) -> Verdict:
    """An operation the runtime's state machine allows from `state` is not refused: from
    `failed`, start (failed -> running, litebox/state.rs) and remove (`can_remove` includes
    failed; upstream PR 520). `ran` says whether the operation's own path ran (a start
    spawned a new shim; a remove answered OK); `error` is the runtime's answer when it
    raised. A refusal is violated in the runtime's own words; an operation that ran and then
    failed (a start whose shim was killed) holds: the transition was taken."""
    cid = f"transition_allowed[{op}.{state}]"
    ev = {"op": op, "from": state, "error": error, "ran": ran, "host_alive": host_alive}
    if not host_alive:
        return Verdict(cid, VIOLATED, ev, f"the host died during {op} of a {state} box")
    if ran:
        return Verdict(cid, HOLDS, ev, f"{op} of a {state} box ran" +
                       (f", then failed: {error.get('message', '')[:120]}" if error else ""))
    if error is None:
        return Verdict(cid, UNKNOWN, ev, f"{op} of a {state} box answered OK, yet nothing "
                       "shows its path ran")
    return Verdict(cid, VIOLATED, ev, f"{op} of a {state} box was refused: "
                   f"{error.get('type')}: {(error.get('message') or '')[:200]}")


@check("record_final")
def record_final(read: RecordRead, *, check_id: str | None = None) -> Verdict:
    """The record, if present, is in a final status (never left configured/stopping/running
    by a box that is not running)."""
    cid = check_id or f"record_final[{read.path}]"
    ev = {"read": read.to_json(), "final": list(FINAL)}
    if read.error:
        return Verdict(cid, UNKNOWN, ev, f"{read.path} could not be read: {read.error}")
    if not read.present:
        return Verdict(cid, HOLDS, ev, f"{read.path}: no record (removed)")
    if read.status in FINAL:
        return Verdict(cid, HOLDS, ev, f"{read.path}: {read.status}")
    return Verdict(cid, VIOLATED, ev, f"{read.path}: stuck in {read.status!r}")


@check("store_integrity")
def store_integrity(result: str | None, error: str | None = None) -> Verdict:
    """SQLite's own `PRAGMA integrity_check` says "ok" for the store."""
    ev = {"integrity_check": result, "error": error}
    if error or result is None:
        return Verdict("store_integrity", UNKNOWN, ev, f"store could not be checked: {error}")
    if result != "ok":
        return Verdict("store_integrity", VIOLATED, ev, f"integrity_check says {result!r}")
    return Verdict("store_integrity", HOLDS, ev, "integrity_check ok")


SETTLED = ("configured", "stopped", "failed")


@check("records_settled")
def records_settled(rows: Sequence[dict[str, Any]], live_box_ids: Iterable[str] = ()) -> Verdict:
    """After a restart, no record is stuck in a transitional status: every record is
    configured (never started), stopped or failed — or running with its box really alive."""
    alive = set(live_box_ids)
    stuck = [r for r in rows if r["status"] not in SETTLED
             and not (r["status"] == "running" and r["id"] in alive)]
    ev = {"rows": list(rows), "alive": sorted(alive), "stuck": stuck}
    if stuck:
        return Verdict("records_settled", VIOLATED, ev, "stuck: " + ", ".join(
            f"{r['id']}={r['status']}" for r in stuck))
    return Verdict("records_settled", HOLDS, ev, f"{len(rows)} record(s) settled")


@check("home_consistent")
def home_consistent(box_dirs: Iterable[str], rows: Sequence[dict[str, Any]]) -> Verdict:
    """No box directory without a record, and no started record whose directory is gone."""
    dirs = set(box_dirs)
    ids = {r["id"] for r in rows}
    orphan_dirs = sorted(dirs - ids)
    lost_dirs = sorted(r["id"] for r in rows if r["id"] not in dirs and r["status"] != "configured")
    ev = {"box_dirs": sorted(dirs), "records": sorted(ids), "dirs_without_record": orphan_dirs,
          "records_without_dir": lost_dirs}
    if orphan_dirs or lost_dirs:
        return Verdict("home_consistent", VIOLATED, ev,
                       f"dirs without record: {orphan_dirs}; records without dir: {lost_dirs}")
    return Verdict("home_consistent", HOLDS, ev, f"{len(dirs)} dir(s), {len(ids)} record(s)")


@check("image_cache_usable")
def image_cache_usable(reached: str | None, expected: str, error: str | None = None) -> Verdict:
    """A new box from the same image gets as far as a box did before the fault."""
    ev = {"reached": reached, "expected": expected, "error": error}
    if reached == expected:
        return Verdict("image_cache_usable", HOLDS, ev, f"a new box reached {expected}")
    return Verdict("image_cache_usable", VIOLATED, ev,
                   f"a new box reached {reached!r}, not {expected!r}: {error}")


@check("box_gone")
def box_gone(reads: Sequence[RecordRead], box_dir_exists: bool, socket_dir_exists: bool,
             processes: Sequence[dict[str, Any]]) -> Verdict:
    """After remove, nothing of the box remains: no record on any path, no directory, no
    socket folder, no process."""
    present = [r.path for r in reads if r.present]
    unreadable = [r.path for r in reads if r.error]
    ev = {"present_in": present, "unreadable": unreadable, "box_dir": box_dir_exists,
          "socket_dir": socket_dir_exists, "processes": list(processes)}
    left = present + (["box dir"] if box_dir_exists else []) + \
        (["socket dir"] if socket_dir_exists else []) + [f"pid {p['pid']}" for p in processes]
    if left:
        return Verdict("box_gone", VIOLATED, ev, f"still there after remove: {left}")
    if unreadable:
        return Verdict("box_gone", UNKNOWN, ev, f"could not read {unreadable}")
    return Verdict("box_gone", HOLDS, ev, "no record, directory, socket folder or process left")


@check("acked_records_durable")
def acked_records_durable(acked: Sequence[int], found: Sequence[str]) -> Verdict:
    """Every record the guest acknowledged (written and synced) is on the disk, intact.

    Records are lines 'rec N'; ones written but not acknowledged may or may not be there
    (indeterminate, not a failure)."""
    present = {}
    corrupt = []
    for line in found:
        m = re.fullmatch(r"rec (\d+)", line.strip())
        if m:
            present[int(m.group(1))] = True
        elif line.strip():
            corrupt.append(line[:80])
    missing = [n for n in acked if n not in present]
    ev = {"acked": len(acked), "max_acked": max(acked, default=0), "found": len(present),
          "missing": missing[:20], "corrupt_lines": corrupt[:20],
          "indeterminate": sorted(set(present) - set(acked))[:20]}
    if not acked:
        return Verdict("acked_records_durable", UNKNOWN, ev, "the guest acknowledged nothing")
    if missing or corrupt:
        return Verdict("acked_records_durable", VIOLATED, ev,
                       f"{len(missing)} acknowledged record(s) missing, {len(corrupt)} corrupt")
    return Verdict("acked_records_durable", HOLDS, ev,
                   f"all {len(acked)} acknowledged records intact")


@check("within_bound")
def within_bound(what: str, elapsed_s: float | None, bound_s: float) -> Verdict:
    """An operation or exit completed within its bound (None: it never completed)."""
    cid = f"within_bound[{what}]"
    ev = {"elapsed_s": elapsed_s, "bound_s": bound_s}
    if elapsed_s is None:
        return Verdict(cid, VIOLATED, ev, f"{what} never completed")
    if elapsed_s > bound_s:
        return Verdict(cid, VIOLATED, ev, f"{what} took {elapsed_s:.1f}s > {bound_s:.0f}s")
    return Verdict(cid, HOLDS, ev, f"{what} took {elapsed_s:.1f}s (bound {bound_s:.0f}s)")


@check("no_growth")
def no_growth(name: str, series: Sequence[tuple[float, float]], max_slope: float,
              min_points: int = 5) -> Verdict:
    """A resource does not grow over a run: judged by the least-squares slope of its samples
    (x: step or seconds, y: value), not by comparing two endpoints."""
    cid = f"no_growth[{name}]"
    pts = [(float(x), float(y)) for x, y in series]
    ev: dict[str, Any] = {"points": len(pts), "max_slope": max_slope,
                          "first": pts[:3], "last": pts[-3:]}
    if len(pts) < min_points or len({x for x, _ in pts}) < 2:
        return Verdict(cid, UNKNOWN, ev, f"{len(pts)} sample(s): too few to judge a trend")
    import statistics
    slope, intercept = statistics.linear_regression([x for x, _ in pts], [y for _, y in pts])
    ev.update(slope=slope, intercept=intercept)
    if slope > max_slope:
        return Verdict(cid, VIOLATED, ev, f"{name} grows {slope:.3f} per step (max {max_slope})")
    return Verdict(cid, HOLDS, ev, f"{name} slope {slope:.3f} per step (max {max_slope})")


@check("ledger_settled")
def ledger_settled(before: dict[str, Any], after: dict[str, Any],
                   rules: dict[str, Callable[[Any, Any], bool]],
                   waited_s: float | None = None, bound_s: float | None = None) -> Verdict:
    """Every ledger probe is back where it was (by its own rule); a probe that could not be
    read makes the verdict unknown. `after` may be the last of several snapshots taken up to
    `bound_s` (ledger.settle): then `waited_s` says how long settling took."""
    bad, unread = {}, {}
    for name, ok in rules.items():
        b, a = before.get(name), after.get(name)
        if type(b).__name__ == "Unreadable" or type(a).__name__ == "Unreadable":
            unread[name] = str(a if type(a).__name__ == "Unreadable" else b)
        elif not ok(b, a):
            bad[name] = {"before": b, "after": a}
    ev = {"before": {k: str(v) for k, v in before.items()},
          "after": {k: str(v) for k, v in after.items()}, "grown": bad, "unreadable": unread,
          "waited_s": None if waited_s is None else round(waited_s, 2), "bound_s": bound_s}
    if bad:
        return Verdict("ledger_settled", VIOLATED, ev, "grown: " + ", ".join(
            f"{k} {v['before']}→{v['after']}" for k, v in bad.items()))
    if unread:
        return Verdict("ledger_settled", UNKNOWN, ev, f"could not read {sorted(unread)}")
    return Verdict("ledger_settled", HOLDS, ev, f"{len(rules)} probes settled" + (
        f" (in {waited_s:.1f}s)" if waited_s is not None else ""))


@check("owner_wait")
def owner_wait(expected: int, got: int | None, error: str | None) -> Verdict:
    """Code in the host that waits on its own child gets the child's real exit code."""
    ev = {"expected": expected, "got": got, "error": error}
    if got == expected:
        return Verdict("owner_wait", HOLDS, ev, f"own wait returned exit code {got}")
    return Verdict("owner_wait", VIOLATED, ev,
                   f"own wait returned {got!r} ({error or 'no error'}), expected {expected}")


@check("disks_follow_record")
def disks_follow_record(read: RecordRead, disks: Sequence[str] | None) -> Verdict:
    """The box's disks are on the host exactly while its record exists. Disks without a
    record are orphaned: nothing will ever remove them (incident CL84LvGx7RBE). A record
    without its disks names a box that can never start again. `disks` is None when the
    box's folder could not be listed."""
    cid = f"disks_follow_record[{read.path}]"
    ev = {"read": read.to_json(), "disks": None if disks is None else list(disks)}
    if read.error:
        return Verdict(cid, UNKNOWN, ev, f"{read.path} could not be read: {read.error}")
    if disks is None:
        return Verdict(cid, UNKNOWN, ev, "the box's disks could not be listed")
    if not read.present and disks:
        return Verdict(cid, VIOLATED, ev, f"no record in {read.path}, yet {len(disks)} disk(s) "
                       f"are left on the host: {', '.join(disks)}")
    if read.present and not disks:
        return Verdict(cid, VIOLATED, ev, f"{read.path} holds the record ({read.status!r}) "
                       "but its disks are gone")
    if disks:
        return Verdict(cid, HOLDS, ev, f"record ({read.status!r}) and {len(disks)} disk(s) "
                       f"present: {', '.join(disks)}")
    return Verdict(cid, HOLDS, ev, "neither a record nor disks: the box is gone entirely")


@check("runtime_shutdown_ran")
def runtime_shutdown_ran(log_after_signal: str | None, exit_code: int | None,
                         signs: Sequence[str] | None = None) -> Verdict:
    """On SIGTERM the runtime ran its own graceful shutdown (its log says it began one) and the
    process then exited cleanly: the runner's SIGTERM wiring, seen through the runtime.

    `signs` are what the home shows of a shutdown besides the log (scenario.shutdown.
    shutdown_signs: a starting box's shim.pid deleted, the store written); None when they were
    not read. An exit 0 with nothing logged after the signal is a shutdown whose log lines
    were lost (`[log_lost]`) only when a sign shows it ran; with none, nothing shows a
    shutdown ran at all, and that is a plain violation."""
    ev = {"exit_code": exit_code, "log_tail": (log_after_signal or "")[-600:],
          "signs": None if signs is None else list(signs)}
    if log_after_signal is None:
        return Verdict("runtime_shutdown_ran", UNKNOWN, ev, "the runtime log could not be read")
    # The runtime logs the start of its shutdown synchronously; the closing line can be lost
    # when the process exits right after shutdown() returns (a non-blocking log writer).
    done = SHUTDOWN_LOGGED in log_after_signal
    ev["shutdown_logged"] = done
    ev["complete_logged"] = "Runtime shutdown complete" in log_after_signal
    if not done:
        if exit_code == 0 and not log_after_signal.strip():
            if signs is None:
                return Verdict("runtime_shutdown_ran", UNKNOWN, ev,
                               "exit 0 after SIGTERM and nothing logged after the signal, and "
                               "the home was not read for signs of a shutdown")
            if signs:
                # Its own id, so that the known failure for it names nothing else: the
                # runtime exits before its non-blocking log writer has written the lines of
                # its shutdown (the closing line is lost in 196 of 339 reads, on every
                # release; all of them in 2).
                return Verdict("runtime_shutdown_ran[log_lost]", VIOLATED, ev,
                               "exit 0 after SIGTERM, but the runtime's log holds nothing "
                               "after the signal: its writer lost the lines at exit; the "
                               f"home shows the shutdown ran ({'; '.join(signs)})")
            return Verdict("runtime_shutdown_ran", VIOLATED, ev,
                           "exit 0 after SIGTERM with nothing logged after the signal and no "
                           "sign in the home that a shutdown ran (no shim.pid deleted, the "
                           "store untouched)")
        return Verdict("runtime_shutdown_ran", VIOLATED, ev,
                       f"no runtime shutdown in the log after SIGTERM (exit {exit_code})")
    if exit_code != 0:
        return Verdict("runtime_shutdown_ran", VIOLATED, ev,
                       f"shutdown logged but the process exited {exit_code}")
    return Verdict("runtime_shutdown_ran", HOLDS, ev, "shutdown completed, exit 0")


@check("socket_links_follow_boxes")
def socket_links_follow_boxes(links: Sequence[dict[str, Any]]) -> Verdict:
    """The runtime's socket links of a scenario's boxes (`/tmp/bl-<uid>/<box id>`, read with
    harness.leftovers.sockets once its hosts are gone, before its homes go) each point at its
    box's folder: the runtime keeps a box's link until it removes the box, so one pointing at
    a box folder that is gone was left behind by a remove. Links to folders that are there
    are the runtime's (the scenario's teardown removes them with its homes)."""
    dangling = [x for x in links if x.get("target") is not None and not x.get("target_exists")]
    ev = {"links": list(links), "dangling": dangling}
    if dangling:
        return Verdict("socket_links_follow_boxes", VIOLATED, ev,
                       f"{len(dangling)} socket link(s) point into removed box folders: "
                       + ", ".join(f"{x['path']} -> {x['target']}" for x in dangling[:3]))
    return Verdict("socket_links_follow_boxes", HOLDS, ev,
                   f"{len(links)} socket link(s), each into its box's folder")
