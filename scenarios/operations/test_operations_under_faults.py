"""The 0.10 operations beyond a box's lifecycle under faults: clone, export, import_box and
snapshot create / restore / remove, with the host SIGKILLed (a bare host: it just dies) or
SIGTERMed (a host wired like upstream's runner: a graceful shutdown, then exit) at each
operation's phases, on a box in each state the operation accepts here (failed, stopped,
detached); a configured box (never started, no disk) must be refused cleanly.

The phases and their anchors are in harness.scenario.operations. No shim runs in these
operations here (boxes do not run on this machine), so no shim is killed.

Judged by a fresh host on the home: the store's integrity, records settled, box folders and
records together, what the operation added a whole box or nothing, the source box's record
with its disks and a whole disk chain, nothing left staged in the home's tmp/; an export's
destination a whole archive or none (a cut one is imported, and must be refused cleanly,
leaving nothing); a restore leaving the box as the snapshot or as before; every snapshot
listed whole, every snapshot folder listed. nothing_left_running and no_zombies at the end.

The gate runs GATE's cases; BOXLITE_CHAOS_OPS_NIGHTLY=1 runs them all (the nightly matrix).
"""

from __future__ import annotations

import pytest

from harness.judge import checks
from harness.judge import operation_checks as opchecks
from harness.scenario import operations as ops
from harness.scenario.operations import (
    SIGNALS,
    backing_of,
    box_ids,
    box_in_state,
    fault_op,
    judge_archive,
    judge_home,
    log_has,
    new_folder,
    snapshot_folders,
    staged,
    staging,
)

pytestmark = pytest.mark.tier("init")

# (operation, phase) -> how the phase is anchored, in words (the code is in _anchor).
PHASES = {
    ("clone", "staged"): "the new box's disk appears in its staging folder boxes/.tmp*/",
    ("clone", "renamed"): "the new box's folder boxes/<new>/ holds its disk",
    ("export", "flatten"): "the flattened disk is staged in <home>/tmp/",
    ("export", "manifest"): "manifest.json is staged beside it",
    ("export", "archive"): "the archive appears at the destination",
    ("import_box", "staged"): "the archive's disk is staged in <home>/tmp/",
    ("import_box", "box_folder"): "the new box's disks/disk.qcow2 appears",
    ("snapshot_create", "snapshot_disk"): "boxes/<id>/snapshots/<name>/disk.qcow2 appears",
    ("snapshot_restore", "sent"): "at once after the request is sent",
    ("snapshot_restore", "cow_child"): "the log says 'Creating COW child disk' (the restore's)",
    ("snapshot_remove", "sent"): "at once after the request is sent",
}
FAULT_STATES = ("failed", "stopped", "detached")
CASES = [(op, phase, sig, state) for (op, phase) in PHASES for sig in SIGNALS
         for state in FAULT_STATES]
# The gate's quick case: the multi-step write of an archive, on a failed box (its fault landed
# in 12 of 12 tries). Clone at its staged disk went to the nightly set: a clone takes 5-17 ms
# and answered before the fault landed in 1 of 3 gates of 2026-12-06 (a skip that comes and
# goes is a flake of ours in a gate).
GATE = {("export", "archive", "SIGKILL", "failed")}


def _param(case: tuple[str, str, str, str]):
    marks = () if case in GATE else (pytest.mark.skipif(
        not ops.nightly(), reason=f"nightly: set {ops.NIGHTLY_ENV}=1"),)
    return pytest.param(*case, id="-".join(case), marks=marks)


def _skip_unsupported(op: str, exc) -> None:
    if exc is not None and ops.unsupported(exc):
        pytest.skip(f"{op} is not in this release: {exc.message}")


@pytest.mark.parametrize("op, phase, sig, state", [_param(c) for c in CASES])
def test_operation_cut_at_a_phase(chaos, op, phase, sig, state, tmp_path):
    host = chaos.host(SIGNALS[sig][1])
    source = box_in_state(chaos, host, state, name="source")
    dest = tmp_path / "box.boxlite"
    args, anchor = _arrange(chaos, host, op, phase, source, dest)
    before = box_ids(host.home)
    chaos.note(case=f"{op}@{phase}", anchor=PHASES[(op, phase)], state=state)

    sent = {k: v for k, v in args.items() if not k.startswith("_")}
    cut = fault_op(chaos, host, op, sent, phase, anchor, sig)
    if cut.answered_before:
        # The operation outran the 2 ms poll (clone and import take 5-17 ms): nothing of
        # its phases was cut, so there is nothing to judge (noted in the history).
        pytest.skip(f"{op} answered before its phase {phase!r} was signalled: {cut.reply}")
    fresh = chaos.restart(host)
    judge_home(chaos, fresh, op, before, source)
    if op == "export":
        judge_archive(chaos, fresh, dest)
    elif op == "snapshot_restore":
        chaos.judge(opchecks.restore_as_snapshot_or_before(
            source, args["_before"], args["_snapshot"], backing_of(fresh.home, source),
            "source"))
    if op.startswith("snapshot_"):
        listed, exc = fresh.try_call("snapshot_list", box_id=source)
        chaos.judge(opchecks.snapshots_whole_or_gone(
            source, None if exc else [s["name"] for s in listed],
            snapshot_folders(fresh.home, source), "source"))


def _arrange(chaos, host, op: str, phase: str, source: str, dest):
    """The operation's arguments and its phase's anchor; what it needs made first (an
    archive to import, snapshots to restore or remove) is made fault-free here."""
    home = host.home
    boxes = box_ids(home)
    if op == "clone":
        anchor = new_folder(home, boxes, hidden=phase == "staged")
        return {"box_id": source, "name": "clone"}, anchor
    if op == "export":
        anchor = {"flatten": staged(home, "disk.qcow2"), "manifest": staged(home, "manifest.json"),
                  "archive": dest.exists}[phase]
        return {"box_id": source, "dest": str(dest)}, anchor
    if op == "import_box":
        _, exc = host.try_call("export", timeout_s=ops.OP_BOUND_S, box_id=source,
                               dest=str(dest))
        _skip_unsupported("export", exc)
        if exc is not None:
            raise exc
        boxes = box_ids(home)
        anchor = staged(home, "disk.qcow2") if phase == "staged" else new_folder(home, boxes)
        return {"archive_path": str(dest), "name": "imported"}, anchor
    _, exc = host.try_call("snapshot_create", box_id=source, name="s1")
    _skip_unsupported(op, exc)
    if exc is not None:
        raise exc
    if op == "snapshot_create":
        snap = home / "boxes" / source / "snapshots" / "s2" / "disk.qcow2"
        return {"box_id": source, "name": "s2"}, snap.exists
    host.call("snapshot_create", box_id=source, name="s2")
    if op == "snapshot_remove":
        # Back on s1, the box's disk no longer depends on s2, so its remove is allowed.
        host.call("snapshot_restore", box_id=source, name="s1")
        return {"box_id": source, "name": "s2"}, None
    s1 = str(home / "boxes" / source / "snapshots" / "s1" / "disk.qcow2")
    log_at = len(ops.runtime_log(home))
    anchor = None if phase == "sent" else log_has(home, "Creating COW child disk", log_at)
    return {"box_id": source, "name": "s1", "_before": backing_of(home, source),
            "_snapshot": s1}, anchor


@pytest.mark.parametrize("op", ["clone", "export", "snapshot_create"])
def test_a_never_started_box_is_refused_cleanly(chaos, op, tmp_path):
    """A configured box has no disk yet: clone, export and snapshot are refused (measured:
    'Container disk not found', 'Failed to write snapshot marker'), and leave nothing."""
    host = chaos.host()
    box = box_in_state(chaos, host, "configured", name="never-started")
    dest = tmp_path / "box.boxlite"
    args = {"clone": {"box_id": box, "name": "clone"},
            "export": {"box_id": box, "dest": str(dest)},
            "snapshot_create": {"box_id": box, "name": "s1"}}[op]
    before = box_ids(host.home)
    _, exc = host.try_call(op, timeout_s=ops.OP_BOUND_S, **args)
    _skip_unsupported(op, exc)
    error = None if exc is None else {"type": exc.type, "message": exc.message}
    chaos.judge(checks.op_failed_cleanly(op, error, host.alive),
                opchecks.new_boxes_whole(op, before, ops.store_rows(host.home),
                                         ops.all_disks(host.home), at_most=0),
                opchecks.staging_cleared(op, staging(host.home)),
                opchecks.export_whole_or_none(str(dest), dest.exists(), None, None
                                              if not dest.exists() else "refused export"))
    if op == "snapshot_create":
        listed, lexc = host.try_call("snapshot_list", box_id=box)
        chaos.judge(opchecks.snapshots_whole_or_gone(
            box, None if lexc else [s["name"] for s in listed],
            snapshot_folders(host.home, box), "never_started"))


def test_named_volumes_are_answered(chaos):
    """Named volumes (runtime.volumes): measured on 0.10.8, the local runtime answers
    UnsupportedError 'named volumes are not supported yet' to create and list, so there is
    no volume to cut; a release that supports them skips here naming that its fault cases
    (a volume whole or gone) are still to be written."""
    host = chaos.host()
    created, exc = host.try_call("volume_create", name="v1")
    chaos.note(volume_create=created, error=None if exc is None else exc.message)
    if exc is not None and ops.unsupported(exc):
        pytest.skip(f"named volumes are not in this runtime: {exc.message}")
    pytest.skip(f"named volumes answer {created or exc}: their fault cases are not written yet")
