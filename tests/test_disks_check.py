# ---- for tests/test_checks.py ----
from harness.judge import checks
from harness.judge.checks import HOLDS, UNKNOWN, VIOLATED
from harness.observe.records import RecordRead


def store(status="failed", present=True, error=None, path="store"):
    return RecordRead(path, present, status if present else None, "reason", True, error)


def test_disks_follow_record_holds_with_record_and_disks_and_with_neither():
    assert checks.disks_follow_record(store(), ["disk.qcow2"]).status == HOLDS
    assert checks.disks_follow_record(store(present=False), []).status == HOLDS


def test_disks_follow_record_violated_by_orphaned_disks():
    v = checks.disks_follow_record(store(present=False), ["disk.qcow2"])
    assert v.status == VIOLATED and "disk.qcow2" in v.summary
    assert v.check == "disks_follow_record[store]"


def test_disks_follow_record_violated_by_a_record_without_disks():
    v = checks.disks_follow_record(store(), [])
    assert v.status == VIOLATED and "disks are gone" in v.summary


def test_disks_follow_record_unknown_when_unmeasured():
    assert checks.disks_follow_record(store(error="locked"), ["d"]).status == UNKNOWN
    assert checks.disks_follow_record(store(), None).status == UNKNOWN


def test_box_disks_lists_a_box_folder(tmp_path):
    from harness.observe.boxes import box_disks
    disks = tmp_path / "boxes" / "b1" / "disks"
    disks.mkdir(parents=True)
    (disks / "disk.qcow2").write_bytes(b"")
    assert box_disks(tmp_path, "b1") == ["disk.qcow2"]
    assert box_disks(tmp_path, "gone") == []
