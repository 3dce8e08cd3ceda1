"""The runtime's home fails chosen calls (an errno) or slows them (a delay), through the FUSE
layer (harness/faults/fuse.py): the store's WAL fsync at create, the failed-state write of a
failed start, the shim copy, the rename of a disk image, and a slow store fsync under a start.
Each failure must be said with its storage cause and recorded (a failed start `failed` with
its reason, a create that raised leaving no record); then the rules are cleared, a fresh
runtime must find the home whole, a new box must reach its shim spawn, and every half-made box
must be removable. A rule's witness (`fuse_fault_fired:<op>`) comes from the layer's own count
of the calls it failed: a rule that never fired witnesses nothing.
"""

from __future__ import annotations

import time

import psutil
import pytest

from harness.common.errors import ArrangementError
from harness.common.wait import wait_for
from harness.faults.fuse import available
from harness.faults.shim import box_tree
from harness.judge import checks
from harness.judge import storage_checks as sc
from harness.scenario import storage as st
from harness.scenario.steps import START_BOUND_S, create_box, end_judged_vm, start_with_fault

pytestmark = [pytest.mark.tier("init"),
              pytest.mark.skipif(available() is not None, reason=f"the FUSE layer: {available()}")]

WAL = "db/boxlite.db-wal"
# The disk images a fresh home's first start builds and renames into place (0.10.8, seen
# through the layer 2026-12-07: 3 renames per first start, into images/disk-images/ and bases/).
DISK_IMAGE = "images/disk-images/*"


def test_wal_fsync_fails_at_create(chaos, storage):
    """The create's one commit cannot be made durable (EIO on the WAL's fsync): the create
    must raise with the storage cause and leave no record, live or after a restart."""
    layer = storage.layer()
    host = chaos.host(home=layer.home)
    listed, stored = st.listed_ids(host), st.store_ids(layer)
    fault = storage.io(layer, "fsync", WAL, "EIO", phase="create")
    created, err = st.try_op(host, "create", options=st.options(chaos), name="wal-fsync")
    fired = st.witness_fired(chaos, fault, "create")
    if not fired:
        raise ArrangementError(f"no fsync of {WAL} during the create: the rule did not land "
                               f"(create answered {created or err})")
    chaos.judge(checks.op_failed_cleanly("create", err, host.alive))
    if err is not None:
        chaos.judge(sc.reason_names_storage("create", err["message"]))
    st.judge_failed_create(chaos, storage, host, layer, listed, stored)


def fail_start_by_rename(chaos, storage, layer, host, name: str):
    """A start failed by EIO on the rename of its disk image (the first start of a fresh
    home builds it): the rule is set after the create; returns (box, the fault)."""
    box = create_box(chaos, host, name=name, memory_mib=st.BOX_MEMORY_MIB)
    fault = storage.io(layer, "rename", DISK_IMAGE, "EIO", every=True, phase="disk_image")
    return box, fault


def test_disk_image_rename_fails_during_start(chaos, storage):
    """EIO on the rename of the disk image the start built: the start fails with the storage
    cause and the box is recorded failed with its reason."""
    layer = storage.layer()
    host = chaos.host(home=layer.home)
    box, fault = fail_start_by_rename(chaos, storage, layer, host, "rename-eio")
    start = start_with_fault(chaos, host, box, if_spawned=True)
    chaos.note(start_error=start.error, start_s=round(start.elapsed_s, 2))
    if not st.witness_fired(chaos, fault, "start"):
        raise ArrangementError(f"no rename into {DISK_IMAGE} during the start: the rule did "
                               "not land")
    st.judge_failed_start(chaos, host, layer, box, start.error)
    st.recover(chaos, storage, host, layer, [box])


def test_failed_state_write_fails(chaos, storage):
    """The start fails (EIO on its disk image's rename) and so does the store's WAL fsync
    from then on, so the failed state's commit cannot be made durable: the record must not
    be left `configured` with no reason (the disk-full variant's known failure, here by EIO)."""
    layer = storage.layer()
    host = chaos.host(home=layer.home)
    box, rename = fail_start_by_rename(chaos, storage, layer, host, "state-eio")
    wal = storage.io(layer, "fsync", WAL, "EIO", every=True, phase="failed_state_write")
    start = start_with_fault(chaos, host, box, if_spawned=True)
    chaos.note(start_error=start.error, start_s=round(start.elapsed_s, 2))
    # 0.10.x fails the start at the rename, then cannot make the failed state durable; 0.9.7
    # commits before its disk build, so the WAL fsync fails the start itself (2026-12-06).
    st.witness_fired(chaos, rename, "start")
    if start.error is None or not st.witness_fired(chaos, wal, "failed_state_write"):
        raise ArrangementError(f"the start did not fail with the store's fsync failing "
                               f"(start error {start.error})")
    st.judge_failed_start(chaos, host, layer, box, start.error)
    st.recover(chaos, storage, host, layer, [box])


def test_shim_copy_fails(chaos, storage):
    """ENOSPC on every write into the box's bin/ (the copies of boxlite-shim and
    libkrunfw): the start either fails with the storage cause and is recorded failed, or
    goes on from the runtime's own shim (the copy is only a warning in 0.10.8); either way
    the home must agree with itself after, and every box must be removable."""
    layer = storage.layer()
    host = chaos.host(home=layer.home)
    box = create_box(chaos, host, name="shim-copy", memory_mib=st.BOX_MEMORY_MIB)
    fault = storage.io(layer, "write", "boxes/*/bin/*", "ENOSPC", every=True,
                       phase="shim_copy")
    fut = host.send("start", box_id=box)
    wait_for(lambda: box_tree(layer.home, box) or fut.done(), START_BOUND_S,
             f"the shim of box {box} to be spawned, or its start to end")
    tree = box_tree(layer.home, box)
    if not st.witness_fired(chaos, fault, "start"):
        if tree:                        # 0.9.4, 0.9.5 run the shim where it was unpacked
            end_judged_vm(chaos, layer.home, box, tree, "spawned with no shim copy")
            pytest.skip("this runtime copies no shim into the box folder: no write into its "
                        "bin/ before the spawn")
        raise ArrangementError("no write into the box's bin/ during the start: the rule did "
                               "not land")
    if tree:
        bin_dir = layer.backing / "boxes" / box / "bin"
        chaos.note(spawned_despite_failed_copy=True, shim_cmd=_cmdline(tree[0].pid),
                   left_in_bin={p.name: p.stat().st_size for p in bin_dir.iterdir()}
                   if bin_dir.is_dir() else None)
        end_judged_vm(chaos, layer.home, box, tree, "spawned after its shim copy failed")
    error = None
    try:
        host.result(fut, START_BOUND_S)
    except st.RuntimeOpError as exc:
        error = {"type": exc.type, "message": exc.message}
    chaos.note(start_error=error)
    if not tree:
        st.judge_failed_start(chaos, host, layer, box, error)
    st.recover(chaos, storage, host, layer, [] if tree else [box], spawned=[box] if tree else [])


def _cmdline(pid: int) -> str | None:
    try:
        return " ".join(psutil.Process(pid).cmdline())[:200]
    except psutil.Error:
        return None


def test_slow_store_fsync_under_start(chaos, storage):
    """Every fsync of the store's files takes 1 s longer: the create and the start still
    answer within their bounds (the start reaches its shim spawn, by the runtime's own
    shim.pid), and the home is whole after."""
    layer = storage.layer()
    host = chaos.host(home=layer.home)
    fault = storage.io(layer, "fsync", "db/*", None, every=True, delay_ms=1000,
                       phase="store_fsync")
    box = create_box(chaos, host, name="slow-fsync", memory_mib=st.BOX_MEMORY_MIB)
    t0 = time.monotonic()
    fut = host.send("start", box_id=box)
    wait_for(lambda: box_tree(layer.home, box) or fut.done(), START_BOUND_S * 2,
             f"the shim of box {box} to be spawned, or its start to end")
    spawn_s = time.monotonic() - t0
    tree = box_tree(layer.home, box)
    st.witness_fired(chaos, fault, "create_and_start")
    chaos.judge(checks.within_bound("start_to_shim_spawn", spawn_s if tree else None,
                                    START_BOUND_S))
    if tree:
        end_judged_vm(chaos, layer.home, box, tree, "reached its shim spawn under slow fsync")
    try:
        host.result(fut, START_BOUND_S)
    except st.RuntimeOpError as exc:
        chaos.note(start_error={"type": exc.type, "message": exc.message})
    st.recover(chaos, storage, host, layer, [] if tree else [box], spawned=[box] if tree else [])
