"""Self-tests of the storage checks (harness/judge/storage_checks.py): each holds, is violated
(the VIOLATING dict, which tests/test_checks.py's meta-test reads) and says unknown where it
cannot judge."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness.judge import storage_checks as sc
from harness.judge.verdict import HOLDS, UNKNOWN, VIOLATED, Verdict
from harness.observe.records import RecordRead

# Reasons as 0.10.8 words them (measured 2026-12-07, harness/faults/storage.py LEVELS).
ENOSPC = ("storage error: mke2fs failed with exit code Some(1): mkfs.ext4: No space left on "
          "device while looking up \"mkfs.ext4\"")
SQLITE_FULL = ("storage error: Failed to initialize database: database error: database or "
               "disk is full")
SQLITE_IO = "database error: disk I/O error"
VM = "engine reported an error: The VM failed to start."


def store(status="failed", reason=ENOSPC, present=True, error=None, path="store.apart"):
    present = present and error is None
    return RecordRead(path, present, status if present else None, reason, True, error)


def test_failed_start_recorded_holds_on_failed_with_reason_and_on_no_record():
    assert sc.failed_start_recorded(store()).status == HOLDS
    assert sc.failed_start_recorded(store(present=False)).status == HOLDS
    assert sc.failed_start_recorded(
        RecordRead("fresh.list_info", True, "failed")).status == HOLDS


def test_failed_start_recorded_violated_by_configured_with_no_reason():
    v = sc.failed_start_recorded(store("configured", None))
    assert v.status == VIOLATED and "no reason" in v.summary
    assert v.check == "failed_start_recorded[store.apart]"
    assert v.evidence["read"]["status"] == "configured"


def test_failed_start_recorded_violated_by_failed_without_reason_and_other_statuses():
    assert sc.failed_start_recorded(store("failed", " ")).status == VIOLATED
    assert sc.failed_start_recorded(RecordRead("fresh.get_info", True, "configured")
                                    ).status == VIOLATED


def test_failed_start_recorded_unknown_when_unreadable():
    assert sc.failed_start_recorded(store(error="the store reader died of SIGBUS")
                                    ).status == UNKNOWN


@pytest.mark.parametrize("reason", [ENOSPC, SQLITE_FULL, SQLITE_IO, "os error 28",
                                    "write: File too large", "EROFS: Read-only file system",
                                    "Disk quota exceeded"])
def test_reason_names_storage_holds(reason):
    assert sc.reason_names_storage("start", reason).status == HOLDS


def test_reason_names_storage_violated_by_a_vague_reason():
    v = sc.reason_names_storage("start", VM)
    assert v.status == VIOLATED and v.check == "reason_names_storage[start]"


def test_reason_names_storage_unknown_without_a_reason():
    assert sc.reason_names_storage("store", None).status == UNKNOWN


def test_failed_create_left_no_record():
    assert sc.failed_create_left_no_record("store", ["a"], ["a"]).status == HOLDS
    v = sc.failed_create_left_no_record("fresh.list_info", [], ["b"])
    assert v.status == VIOLATED and v.evidence["new"] == ["b"]
    assert sc.failed_create_left_no_record("store", None, ["b"]).status == UNKNOWN


def test_half_made_boxes_removed():
    ok = {"box": "a", "error": None, "left": []}
    assert sc.half_made_boxes_removed([ok]).status == HOLDS
    assert sc.half_made_boxes_removed([ok, {"box": "b", "error": "boom", "left": []}]
                                      ).status == VIOLATED
    assert sc.half_made_boxes_removed([{"box": "c", "error": None, "left": ["box folder"]}]
                                      ).status == VIOLATED
    assert sc.half_made_boxes_removed([]).status == UNKNOWN


VIOLATING: dict[str, Callable[[], Verdict]] = {
    "failed_start_recorded": lambda: sc.failed_start_recorded(store("configured", None)),
    "reason_names_storage": lambda: sc.reason_names_storage("start", VM),
    "failed_create_left_no_record": lambda: sc.failed_create_left_no_record("store", [], ["x"]),
    "half_made_boxes_removed": lambda: sc.half_made_boxes_removed(
        [{"box": "b", "error": "boom", "left": []}]),
    "disk_images_whole": lambda: sc.disk_images_whole(
        [{"path": "boxes/b/disks/disk.qcow2", "exit_code": 2, "output": "ERROR cluster 3"}]),
}


def test_disk_images_whole_reads_qemu_img_exit_codes():
    ok = {"path": "a.qcow2", "exit_code": 0, "output": "No errors were found"}
    leak = {"path": "b.qcow2", "exit_code": 3, "output": "1 leaked clusters were found"}
    assert sc.disk_images_whole([ok, leak]).status == HOLDS
    assert sc.disk_images_whole([]).status == HOLDS
    assert sc.disk_images_whole([ok, {**ok, "exit_code": 1}]).status == UNKNOWN
    assert sc.disk_images_whole([{**ok, "exit_code": None}]).status == UNKNOWN


def test_a_real_qcow2_cut_in_its_tables_is_not_whole(tmp_path):
    """Through the real qemu-img: a fresh qcow2 is whole; one whose refcount table is
    overwritten is corrupt (exit 2) or cannot be checked (exit 1) — never whole."""
    import shutil
    import subprocess

    from harness.observe.boxes import check_disk_images
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed (Debian's qemu-utils; ./go installs it)")
    disks = tmp_path / "boxes" / "b" / "disks"
    disks.mkdir(parents=True)
    disk = disks / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    subprocess.run(["qemu-io", "-c", "write 0 1M", str(disk)], check=True,
                   capture_output=True)
    assert sc.disk_images_whole(check_disk_images(tmp_path)).status == HOLDS
    data = bytearray(disk.read_bytes())
    table = int.from_bytes(data[48:56], "big")      # the header's refcount_table_offset
    data[table:table + 8] = (0xFFFFFFFFFFFFFE00).to_bytes(8, "big")
    disk.write_bytes(bytes(data))
    v = sc.disk_images_whole(check_disk_images(tmp_path))
    assert v.status in (VIOLATED, UNKNOWN) and v.evidence["disks"][0]["exit_code"] in (1, 2)


@pytest.mark.parametrize("name", sorted(VIOLATING))
def test_violating_case(name):
    v = VIOLATING[name]()
    assert v.status == VIOLATED and v.check.split("[")[0] == name
