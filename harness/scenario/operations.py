"""Steps for the 0.10 operations beyond a box's lifecycle (clone, export, import, snapshots)
under faults: a box brought to a state, an operation whose host is signalled at one of its
phases, and what a fresh host on the home then finds.

The phases were found from fault-free runs of 0.10.8 on this machine (2026-12-06), by the
runtime log (`<home>/logs/`) and the files appearing in the home at a 2 ms poll:
- clone (5-17 ms): the new box's disk in a staging folder `boxes/.tmp*/disks/disk.qcow2`,
  renamed to `boxes/<new>/`, then the log line "Batch cloned boxes" (written as it answers:
  a signal there lands after the reply).
- export (~1.4 s of a failed box): `<home>/tmp/.tmp*/disk.qcow2` (the flatten, ~1.35 s),
  `manifest.json` beside it, then the archive written in place at the destination (~60 ms,
  growing), then "Exported box to archive"; the staging folder goes at the end.
- import_box (~15 ms): `<home>/tmp/.tmp*/` staging, then `boxes/<new>/disks/disk.qcow2`
  (the 2 ms poll misses it about 1 time in 6: the reply comes first).
- snapshot create (~5 ms): `boxes/<id>/snapshots/<name>/disk.qcow2`, then the box's disk is
  made a COW child of it; restore (~1 ms): a new COW child of the snapshot's disk.
No operation here runs a shim: the boxes are not running on this machine (guests never boot).
"""

from __future__ import annotations

import os
import signal
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.common.errors import ArrangementError
from harness.common.wait import WaitTimeout, wait_for
from harness.judge import checks
from harness.judge import operation_checks as opchecks
from harness.observe.boxes import box_disks
from harness.observe.logs import runtime_log
from harness.observe.records import read_store, store_integrity, store_rows
from harness.runtime.host import BARE, RUNNER, Flavour, RuntimeHost, RuntimeOpError
from harness.scenario.context import Chaos
from harness.scenario.steps import create_box, start_with_fault

# The nightly matrix sets this to run every operation x phase x signal x state; the gate runs
# a few quick cases.
NIGHTLY_ENV = "BOXLITE_CHAOS_OPS_NIGHTLY"
# How often a phase's anchor (a file, a log line) is polled before the signal.
ANCHOR_POLL_S = 0.002
# An operation here takes at most ~1.5 s (export); a phase not reached in this long is not
# going to be.
PHASE_BOUND_S = 30.0
OP_BOUND_S = 60.0
# The host flavour each signal is sent to: SIGKILL a bare host (the process just dies),
# SIGTERM a host wired like upstream's runner (a graceful shutdown, then exit).
SIGNALS: dict[str, tuple[int, Flavour]] = {"SIGKILL": (signal.SIGKILL, BARE),
                                           "SIGTERM": (signal.SIGTERM, RUNNER)}
STATES = ("configured", "failed", "stopped", "detached")
QCOW2_MAGIC = b"QFI\xfb"


def nightly() -> bool:
    """Whether the nightly matrix's cases run (BOXLITE_CHAOS_OPS_NIGHTLY=1)."""
    return os.environ.get(NIGHTLY_ENV) == "1"


def unsupported(exc: RuntimeOpError) -> bool:
    """The runtime, or its host program, lacks the operation (an older release, or a
    backend that says so): nothing to judge there."""
    return exc.type in ("OpUnsupported", "UnsupportedError")


def user_options(**flags: Any) -> dict[str, Any]:
    """Box option overrides (for Chaos.box_options) that leave every lifecycle option the
    SDK's, as a user gets them (auto_remove too, which Chaos.box_options forces False), with
    `flags` set (auto_remove, auto_delete, auto_stop, auto_resume, detach)."""
    return {"auto_remove": None, "sdk_defaults": True, **flags}


LIFECYCLE = ("auto_delete", "auto_stop", "auto_resume")


def lifecycle_of(info: dict[str, Any] | None) -> dict[str, Any]:
    """The lifecycle fields a host's get_info carries (the Python host passes what the SDK's
    BoxInfo has; absent fields are left out)."""
    return {k: info[k] for k in LIFECYCLE if info and k in info}


def box_in_state(chaos: Chaos, host: RuntimeHost, state: str, name: str) -> str:
    """A box in `state`: configured (created), failed (its start failed: the shim is killed
    at its spawn, the quickest failure here), stopped (failed, then stop()), detached (a
    detach=True box whose start failed). Returns its id. Raises ArrangementError when the
    start did not fail (a machine where guests boot)."""
    box = create_box(chaos, host, name=name, **({"detach": True} if state == "detached" else {}))
    if state == "configured":
        return box
    start = start_with_fault(chaos, host, box, "kill", if_spawned=True)
    if start.error is None:
        raise ArrangementError(f"box {box}: its start succeeded; a {state} box needs it to fail")
    chaos.witness("start_failed", box=box, error=start.error)
    if state == "stopped":
        host.call("stop", box_id=box)
    return box


# -- what is in the home ------------------------------------------------------------------

def box_ids(home: Path) -> set[str]:
    """Box ids with a record in the store or a folder under boxes/."""
    folders = {p.name for p in (home / "boxes").iterdir()} if (home / "boxes").is_dir() else set()
    return folders | {r["id"] for r in store_rows(home)}


def all_disks(home: Path) -> dict[str, list[str]] | None:
    """Each box folder's disk files, by box id; None when a folder cannot be listed."""
    root = home / "boxes"
    out: dict[str, list[str]] = {}
    for p in (root.iterdir() if root.is_dir() else ()):
        disks = box_disks(home, p.name)
        if disks is None:
            return None
        out[p.name] = disks
    return out


def staging(home: Path) -> list[str] | None:
    """Files under the home's tmp/ (where export and import stage), relative to it; None
    when it cannot be listed."""
    root = home / "tmp"
    try:
        return sorted(str(Path(r, f).relative_to(root)) for r, _, fs in os.walk(root,
                      onerror=_raise) for f in fs) if root.exists() else []
    except OSError:
        return None


def _raise(exc: OSError) -> None:
    raise exc


def qcow2_backing(path: Path) -> tuple[str | None, str | None]:
    """(format, backing file) of a disk image from its header: ('qcow2', path or None) for a
    qcow2 image, ('raw', None) for any other readable file, (None, None) when unreadable."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
            if len(head) < 20 or head[:4] != QCOW2_MAGIC:
                return "raw", None
            offset, size = struct.unpack(">QI", head[8:20])
            if not offset:
                return "qcow2", None
            fh.seek(offset)
            return "qcow2", fh.read(size).decode(errors="replace")
    except OSError:
        return None, None


def disk_chain(home: Path, box_id: str) -> list[dict[str, Any]]:
    """The box's disk and each backing file it names, in order (a relative backing is
    resolved against the image's folder); bounded at 16 links."""
    chain: list[dict[str, Any]] = []
    path: Path | None = home / "boxes" / box_id / "disks" / "disk.qcow2"
    if not path.exists():
        return chain
    while path is not None and len(chain) < 16:
        fmt, backing = qcow2_backing(path) if path.exists() else (None, None)
        chain.append({"path": str(path), "exists": path.exists(), "format": fmt,
                      "backing": backing})
        path = (path.parent / backing) if backing else None
    return chain


def backing_of(home: Path, box_id: str) -> str | None:
    """The backing file of the box's disk, or None when the disk is gone or unreadable."""
    chain = disk_chain(home, box_id)
    return chain[0]["backing"] if chain and chain[0]["format"] == "qcow2" else None


def snapshot_folders(home: Path, box_id: str) -> dict[str, list[str]]:
    root = home / "boxes" / box_id / "snapshots"
    return {p.name: sorted(f.name for f in p.iterdir() if f.is_file())
            for p in (root.iterdir() if root.is_dir() else ()) if p.is_dir()}


# -- a fault at a phase -------------------------------------------------------------------

@dataclass
class Faulted:
    """How an operation under a fault went: whether the host was signalled with the
    operation still unanswered, and how far from its phase's anchor the signal landed."""

    op: str
    phase: str
    signal: str
    answered_before: bool               # the reply came before the signal: the fault missed
    reply: dict[str, Any] | None        # {"ok": ..., ...} if the host answered at all
    anchor_to_signal_ms: float | None   # from the anchor seen to the signal sent
    exit_code: int | None
    evidence: dict[str, Any] = field(default_factory=dict)


def fault_op(chaos: Chaos, host: RuntimeHost, op: str, args: dict[str, Any], phase: str,
             anchor: Callable[[], bool] | None, sig: str) -> Faulted:
    """Send `op`, poll `anchor` every ANCHOR_POLL_S until it is true (None: signal at once),
    then signal the host with `sig` and wait for it to exit. Records the fault, how close it
    landed, and a `fault_landed:<op>` witness when the operation was still unanswered.
    Raises WaitTimeout when the phase is never reached and the operation never answers."""
    fut = host.send(op, **args)
    t_anchor = None
    if anchor is not None:
        wait_for(lambda: anchor() or fut.done(), PHASE_BOUND_S,
                 f"{op} to reach its phase {phase!r}", interval_s=ANCHOR_POLL_S)
        t_anchor = time.monotonic()
    answered = fut.done()
    t_sig = time.monotonic()
    host.signal(SIGNALS[sig][0])
    closeness = None if t_anchor is None else round((t_sig - t_anchor) * 1000, 2)
    exit_code = host.wait_exit(OP_BOUND_S).returncode
    reply = None
    try:
        reply = {"ok": True, "result": host.result(fut, 1)}
    except RuntimeOpError as exc:
        reply = {"ok": False, "error": {"type": exc.type, "message": exc.message}}
    except Exception as exc:  # noqa: BLE001 - the host died before answering: no reply
        reply = {"ok": None, "error": repr(exc)[:200]}
    # What the dead host left, before a fresh runtime opens the home (and may tidy it).
    left = {"box_folders": sorted(p.name for p in (host.home / "boxes").glob("*")),
            "staging": staging(host.home)}
    out = Faulted(op, phase, sig, answered, reply, closeness, exit_code, left)
    chaos.note(op=op, phase=phase, signal=sig, answered_before_signal=answered,
               anchor_to_signal_ms=closeness, exit_code=exit_code, reply=reply, left=left)
    if not answered:
        chaos.witness(f"fault_landed:{op}", phase=phase, signal=sig,
                      anchor_to_signal_ms=closeness)
    return out


def log_has(home: Path, text: str, after: int) -> Callable[[], bool]:
    """An anchor: `text` appears in the runtime log past its first `after` characters."""
    return lambda: text in runtime_log(home)[after:]


def new_folder(home: Path, before: set[str], hidden: bool = False,
               sub: str = "disks/disk.qcow2") -> Callable[[], bool]:
    """An anchor: a folder under boxes/ not in `before` holds `sub`; with `hidden`, only a
    staging folder (a clone builds its box in boxes/.tmp*/ and renames it), else only a
    box's own."""
    root = home / "boxes"
    return lambda: any((p / sub).exists() for p in root.iterdir()
                       if p.name not in before and p.name.startswith(".") == hidden) \
        if root.is_dir() else False


def staged(home: Path, name: str) -> Callable[[], bool]:
    """An anchor: a file `name` is staged under the home's tmp/."""
    return lambda: any(name in s for s in (staging(home) or ()))


# -- judging the home after the fault -----------------------------------------------------

def judge_home(chaos: Chaos, fresh: RuntimeHost, op: str, before: set[str], source: str | None,
               at_most: int = 1) -> None:
    """What a fresh host on the home finds after `op` was cut: an intact store, records
    settled, folders and records together, what `op` added whole (at most `at_most` boxes),
    the source box's record and disks together with a whole disk chain, nothing staged."""
    try:
        integrity, err = store_integrity(fresh.home), None
    except Exception as exc:  # noqa: BLE001 - an unreadable store is 'unknown'
        integrity, err = None, repr(exc)
    rows = store_rows(fresh.home)
    dirs = [p.name for p in (fresh.home / "boxes").glob("*") if p.is_dir()]
    chaos.judge(checks.store_integrity(integrity, err), checks.records_settled(rows),
                checks.home_consistent(dirs, rows),
                opchecks.new_boxes_whole(op, before, rows, all_disks(fresh.home), at_most),
                opchecks.staging_cleared(op, staging(fresh.home)))
    if source is not None:
        chaos.judge(checks.disks_follow_record(read_store(fresh.home, source, "store.fresh"),
                                               box_disks(fresh.home, source)))
    new = sorted(set(dirs) - before - {source})
    # Check ids name each box by its role (box ids change from run to run).
    roles = {**({source: "source"} if source else {}),
             **{b: f"new{i}" if len(new) > 1 else "new" for i, b in enumerate(new, 1)}}
    for box, role in roles.items():
        if box_disks(fresh.home, box):
            chaos.judge(opchecks.disk_chain_whole(box, disk_chain(fresh.home, box), role))


def judge_archive(chaos: Chaos, fresh: RuntimeHost, dest: Path) -> None:
    """The export's destination holds a whole archive or none; a cut one left there is
    imported by the fresh host, which must refuse it cleanly and leave nothing."""
    exists = dest.exists()
    size = dest.stat().st_size if exists else None
    import_error = None
    if exists:
        before = box_ids(fresh.home)
        _, exc = fresh.try_call("import_box", timeout_s=OP_BOUND_S, archive_path=str(dest),
                                name="reimported")
        import_error = None if exc is None else f"{exc.type}: {exc.message}"
        if exc is not None:
            chaos.witness("cut_archive_left", dest=str(dest), size=size, error=import_error)
            chaos.judge(opchecks.cut_import_refused(import_error,
                                                    sorted(box_ids(fresh.home) - before),
                                                    staging(fresh.home)))
    chaos.judge(opchecks.export_whole_or_none(str(dest), exists, size, import_error))


def ensure_phase(reached: Faulted) -> None:
    """A fault that landed after the operation answered tested nothing of its phases."""
    if reached.answered_before:
        raise ArrangementError(f"{reached.op} answered before its phase {reached.phase!r} "
                               f"was signalled ({reached.reply}); the fault missed")


def refuse_unsupported(op: str, exc: RuntimeOpError | None) -> None:
    """Raise ArrangementError when the release lacks `op`."""
    if exc is not None and unsupported(exc):
        raise ArrangementError(f"{op}: not in this release: {exc.message}")


__all__ = ["NIGHTLY_ENV", "SIGNALS", "STATES", "Faulted", "WaitTimeout", "backing_of",
           "box_in_state", "box_ids", "disk_chain", "ensure_phase", "fault_op", "judge_archive",
           "judge_home", "log_has", "new_folder", "nightly", "refuse_unsupported",
           "snapshot_folders", "staged", "staging", "unsupported"]
