"""Storage scenarios' steps: a home on a small filesystem, filled before a chosen step; the
failed start judged on every read path (the store read from a child process, since an
in-process reader of a failing store can die of SIGBUS); then space back, a fresh runtime, and
its recovery judged (a new box reaches its shim spawn, every half-made box removes).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from harness.common.errors import HostError
from harness.common.wait import wait_for
from harness.faults.fuse import FuseLayer, IoFault, io_fault
from harness.faults.shim import box_tree
from harness.faults.storage import FillDisk, SmallDisk, fill_disk, size_mib_for
from harness.judge import checks
from harness.judge import storage_checks as sc
from harness.judge.verdict import Verdict
from harness.observe.boxes import check_disk_images
from harness.observe.records import RecordRead, read_host  # noqa: F401 - re-exported
from harness.observe.store_apart import (  # noqa: F401 - read_store_apart re-exported
    read_store_apart,
    store_integrity_apart,
    store_rows_apart,
)
from harness.runtime.host import RuntimeHost, RuntimeOpError  # noqa: F401 - re-exported
from harness.scenario.context import Chaos
from harness.scenario.steps import START_BOUND_S, end_judged_vm

# Light boxes: every VM here fails on its own (nested PVM), in less CPU with less memory
# (harness.scenario.shutdown.LIGHT_MEMORY_MIB); no storage scenario boots a guest.
BOX_MEMORY_MIB = 128


@dataclass
class StorageWorld:
    """The small disks of one scenario. `teardown()` (the `storage` fixture's, after the
    scenario concluded) ends the hosts still running and unmounts every disk, lazily where a
    process still holds it; a crash of ours leaves them to the sweep (their homes are in the
    scenario's marked folder)."""

    chaos: Chaos
    disks: list[SmallDisk] = field(default_factory=list)
    layers: list[FuseLayer] = field(default_factory=list)

    def home(self, kind: str = "tmpfs") -> SmallDisk:
        """A new home on a small disk of the size the runtime under test needs
        (harness.faults.storage.size_mib_for: 0.9.x's dense guest rootfs base takes 256 MiB
        more than 0.10.x's)."""
        size = size_mib_for(self.chaos.env.version)
        disk = SmallDisk(self.chaos.factory.new_home(), size, kind)
        self.disks.append(disk)
        disk.mount()
        self.chaos.history.append("meta", event="small_disk", **disk.describe())
        return disk

    def layer(self) -> FuseLayer:
        """A new home on the FUSE layer (harness.faults.fuse); ArrangementError when it
        cannot be mounted."""
        layer = FuseLayer(self.chaos.factory.new_home())
        self.layers.append(layer)
        layer.mount()
        self.chaos.history.append("meta", event="fuse_layer", **layer.describe())
        return layer

    def io(self, layer: FuseLayer, op: str | list[str], path: str, errno: str | None = "EIO",
           **rule: Any) -> IoFault:
        """Inject the layer's rule (harness.faults.fuse.io_fault: nth, every, delay_ms,
        phase)."""
        fault = self.chaos.inject(io_fault(layer, op, path, errno, **rule))
        assert isinstance(fault, IoFault)
        return fault

    def fill(self, disk: SmallDisk, leave_kib: int, phase: str) -> FillDisk:
        fault = self.chaos.inject(fill_disk(disk, leave_kib, phase))
        assert isinstance(fault, FillDisk)
        return fault

    def teardown(self) -> None:
        self.chaos.faults.heal_all()
        self.chaos.factory.close_all()
        for disk in self.disks:
            done = disk.unmount()
            self.chaos.history.append("meta", event="small_disk_unmounted", home=str(disk.home),
                                      done=done)
        for layer in self.layers:
            done = layer.unmount()
            self.chaos.history.append("meta", event="fuse_layer_unmounted", home=str(layer.home),
                                      done=done)


def witness_fired(chaos: Chaos, fault: IoFault, what: str) -> int:
    """`fuse_fault_fired:<op>` (each op of the rule) when the layer failed or delayed at
    least one call under the rule, from the layer's own count; returns that count (0: the
    rule never fired, nothing witnessed)."""
    counts = fault.counts() or {}
    fired = int(counts.get("fired", 0))
    chaos.note(io_fault_counts=counts, rule=fault.rule, what=what)
    if fired:
        for op in fault.rule["op"]:
            chaos.witness(f"fuse_fault_fired:{op}", rule=fault.rule, fired=fired, what=what,
                          fired_on=counts.get("fired_on", [])[:3])
    return fired


def options(chaos: Chaos) -> dict[str, Any]:
    return chaos.box_options(memory_mib=BOX_MEMORY_MIB)


def try_op(host: RuntimeHost, op: str, timeout_s: float = 120, **args: Any
           ) -> tuple[Any, dict[str, Any] | None]:
    """(result, None) or (None, the runtime's error)."""
    try:
        return host.call(op, timeout_s=timeout_s, **args), None
    except RuntimeOpError as exc:
        return None, {"type": exc.type, "message": exc.message}


def box_dirs(disk: SmallDisk) -> list[str]:
    boxes = disk.home / "boxes"
    return sorted(p.name for p in boxes.iterdir() if p.is_dir()) if boxes.is_dir() else []


def listed_ids(host: RuntimeHost) -> list[str] | None:
    try:
        return [i["id"] for i in host.call("list_info", timeout_s=30)]
    except (RuntimeOpError, HostError):
        return None


def store_ids(disk: SmallDisk) -> list[str] | None:
    rows, _ = store_rows_apart(disk.home)
    return None if rows is None else [r["id"] for r in rows]


def judge_failed_start(chaos: Chaos, host: RuntimeHost, disk: SmallDisk, box: str,
                       error: dict[str, Any] | None, moment: str = "live") -> None:
    """The start raised while the disk was full: its error names the storage cause, and the
    record is failed with a reason on the live host's list and in the store (live get_info
    is the known stale path, judged elsewhere)."""
    chaos.judge(checks.op_failed_cleanly("start", error, host.alive))
    if error is not None:
        chaos.judge(sc.reason_names_storage("start", error.get("message")))
    reads = [r for r in read_host(host, box, moment) if r.path.endswith("list_info")]
    reads.append(read_store_apart(disk.home, box, f"store.{moment}"))
    judge_reads(chaos, reads)


def judge_reads(chaos: Chaos, reads: list[RecordRead]) -> None:
    chaos.judge(*(sc.failed_start_recorded(r) for r in reads))
    for r in reads:
        if r.exposes_reason and r.present and (r.reason or "").strip():
            chaos.judge(sc.reason_names_storage(r.path, r.reason))


def restart_with_space(chaos: Chaos, world: StorageWorld, host: RuntimeHost,
                       disk: SmallDisk) -> RuntimeHost:
    """Space back (every fault healed: the filler goes), the old host ended, a fresh one on
    the home."""
    chaos.faults.heal_all()
    if host.alive:
        host.close()
    return chaos.restart(host) if not host.alive else host


def judge_home(chaos: Chaos, disk: SmallDisk, moment: str) -> list[dict[str, Any]]:
    """The store whole, the boxes' disk images whole (qemu-img check), no record stuck,
    records and box folders agree. Returns the rows."""
    result, why = store_integrity_apart(disk.home)
    chaos.judge(checks.store_integrity(result, why),
                sc.disk_images_whole(check_disk_images(disk.home)))
    rows, why = store_rows_apart(disk.home)
    if rows is None:
        chaos.note(store_rows_unreadable=why, moment=moment)
        return []
    chaos.judge(checks.records_settled(rows), home_consistent_at(moment, box_dirs(disk), rows))
    return rows


def home_consistent_at(moment: str, dirs: list[str], rows: list[dict[str, Any]]) -> Verdict:
    """checks.home_consistent named for the moment it judged (`home_consistent[after_stop]`,
    `home_consistent[fresh]`): a scenario judges its home at more than one moment, and what
    the live runtime left (before the next runtime's recovery tidies the home) is a different
    fact from what a fresh runtime keeps, so a known failure of one moment must not be called
    fixed by the other holding."""
    v = checks.home_consistent(dirs, rows)
    return replace(v, check=f"{v.check}[{moment}]")


def new_box_reaches_spawn(chaos: Chaos, host: RuntimeHost, disk: SmallDisk) -> str | None:
    """After space came back: a new box's start gets to its shim spawn (image_cache_usable);
    its VM is then ended (nothing here judges it). Returns the new box's id."""
    created, err = try_op(host, "create", options=options(chaos), name="after-space")
    if err is not None:
        chaos.judge(checks.image_cache_usable("create_failed", "shim_spawned", err["message"]))
        return None
    box = created["id"]
    fut = host.send("start", box_id=box)
    wait_for(lambda: box_tree(disk.home, box) or fut.done(), START_BOUND_S,
             f"the shim of box {box} to be spawned, or its start to end")
    tree = box_tree(disk.home, box)
    error = None
    if tree:
        end_judged_vm(chaos, disk.home, box, tree, "reached its shim spawn after space came back")
    try:
        host.result(fut, START_BOUND_S)
    except RuntimeOpError as exc:
        error = exc.message
    chaos.judge(checks.image_cache_usable("shim_spawned" if tree else "start_ended",
                                          "shim_spawned", None if tree else error))
    return box


def remove_all(chaos: Chaos, host: RuntimeHost, disk: SmallDisk, boxes: list[str]) -> None:
    """remove(force=True) of every box; then nothing of any may be left."""
    removals = []
    for box in boxes:
        _, err = try_op(host, "remove", box_id=box, force=True)
        left = []
        read = read_store_apart(disk.home, box)
        if read.error:
            left.append(f"store unreadable: {read.error}")
        elif read.present:
            left.append(f"record in store ({read.status})")
        if (disk.home / "boxes" / box).exists():
            left.append("box folder")
        removals.append({"box": box, "error": err and err["message"], "left": left})
    chaos.judge(sc.half_made_boxes_removed(removals))


def judge_failed_create(chaos: Chaos, world: StorageWorld, host: RuntimeHost,
                        disk: SmallDisk, listed: list[str] | None,
                        stored: list[str] | None) -> None:
    """After a create that raised: no record it added, live (list_info and the store) and
    after a restart with the space back (a fresh runtime's list_info and the store); the home
    judged; then a new box must reach its shim spawn and every box must remove. `listed` and
    `stored` are the ids before the create."""
    chaos.judge(sc.failed_create_left_no_record("live.list_info", listed, listed_ids(host)),
                sc.failed_create_left_no_record("store.live", stored, store_ids(disk)))
    fresh = restart_with_space(chaos, world, host, disk)
    now = listed_ids(fresh)
    chaos.judge(sc.failed_create_left_no_record("fresh.list_info", listed, now),
                sc.failed_create_left_no_record("store.fresh", stored, store_ids(disk)))
    judge_home(chaos, disk, "fresh")
    new = new_box_reaches_spawn(chaos, fresh, disk)
    remove_all(chaos, fresh, disk, sorted(set(now or []) | ({new} if new else set())))


def recover(chaos: Chaos, world: StorageWorld, host: RuntimeHost, disk: SmallDisk,
            half_made: list[str], spawned: Sequence[str] = ()) -> RuntimeHost:
    """Space back, a fresh runtime: the home judged, the failed boxes judged on the fresh
    paths, a new box to its shim spawn, then every box removed. `spawned`: boxes whose start
    got past the fault to its shim spawn (their VM ended by us, so no storage reason is
    theirs to give): removed, not judged."""
    fresh = restart_with_space(chaos, world, host, disk)
    for box in half_made:
        reads = [*read_host(fresh, box, "fresh"),
                 read_store_apart(disk.home, box, "store.fresh")]
        judge_reads(chaos, reads)
    judge_home(chaos, disk, "fresh")
    new = new_box_reaches_spawn(chaos, fresh, disk)
    t0 = time.monotonic()
    remove_all(chaos, fresh, disk, [*half_made, *spawned] + ([new] if new else []))
    chaos.note(removed_in_s=round(time.monotonic() - t0, 2))
    return fresh
