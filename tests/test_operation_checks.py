"""Self-tests of harness/judge/operation_checks.py (VIOLATING is read by the meta-test in
tests/test_checks.py), and of the home readers in harness/scenario/operations.py."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from harness.judge import operation_checks as oc
from harness.judge.verdict import HOLDS, UNKNOWN, VIOLATED, Verdict
from harness.scenario import operations as ops

ROW = {"id": "src", "status": "failed"}


def row(box: str, status: str = "stopped") -> dict:
    return {"id": box, "status": status}


# -- new_boxes_whole -----------------------------------------------------------------------

def test_new_boxes_whole_holds_for_a_whole_clone_and_for_nothing():
    whole = oc.new_boxes_whole("clone", ["src"], [ROW, row("new")],
                               {"src": ["disk.qcow2"], "new": ["disk.qcow2"]})
    assert (whole.check, whole.status) == ("new_boxes_whole[clone]", HOLDS)
    nothing = oc.new_boxes_whole("clone", ["src"], [ROW], {"src": ["disk.qcow2"]})
    assert nothing.status == HOLDS and "nothing" in nothing.summary


@pytest.mark.parametrize("rows, disks, words", [
    ([ROW, row("new")], {"src": ["disk.qcow2"]}, "record without disks"),
    ([ROW, row("new")], {"src": ["disk.qcow2"], "new": []}, "record without disks"),
    ([ROW], {"src": ["disk.qcow2"], "new": ["disk.qcow2"]}, "folder without record"),
])
def test_new_boxes_whole_violated_by_half_a_box(rows, disks, words):
    v = oc.new_boxes_whole("clone", ["src"], rows, disks)
    assert v.status == VIOLATED and words in v.summary


def test_new_boxes_whole_violated_by_more_boxes_than_asked():
    v = oc.new_boxes_whole("clone", [], [row("a"), row("b")], {"a": ["d"], "b": ["d"]})
    assert v.status == VIOLATED and "2 boxes" in v.summary
    assert oc.new_boxes_whole("export", [], [row("a")], {"a": ["d"]}, at_most=0).status \
        == VIOLATED


def test_new_boxes_whole_unknown_when_folders_unlisted():
    assert oc.new_boxes_whole("clone", [], [], None).status == UNKNOWN


# -- export_whole_or_none / cut_import_refused / staging_cleared ---------------------------

def test_export_whole_or_none_holds_for_none_and_for_an_importable_archive():
    assert oc.export_whole_or_none("/d", False, None, None).status == HOLDS
    assert oc.export_whole_or_none("/d", True, 1076496, None).status == HOLDS


def test_export_whole_or_none_violated_by_a_cut_archive_left():
    v = oc.export_whole_or_none("/d", True, 1786, "StorageError: failed to unpack")
    assert v.status == VIOLATED and "cut archive (1786 bytes)" in v.summary


def test_cut_import_refused():
    assert oc.cut_import_refused("StorageError: failed", [], []).status == HOLDS
    assert oc.cut_import_refused(None, ["new"], []).status == VIOLATED
    assert oc.cut_import_refused("StorageError", ["new"], []).status == VIOLATED
    assert oc.cut_import_refused("StorageError", [], [".tmpX/disk.qcow2"]).status == VIOLATED
    assert oc.cut_import_refused("StorageError", [], None).status == UNKNOWN


def test_staging_cleared():
    assert oc.staging_cleared("export", []).status == HOLDS
    v = oc.staging_cleared("export", [".tmpX/disk.qcow2"])
    assert (v.check, v.status) == ("staging_cleared[export]", VIOLATED)
    assert oc.staging_cleared("export", None).status == UNKNOWN


# -- disk chains, restores, snapshots ------------------------------------------------------

def link(path: str, exists: bool = True, fmt: str | None = "qcow2") -> dict:
    return {"path": path, "exists": exists, "format": fmt, "backing": None}


def test_disk_chain_whole():
    assert oc.disk_chain_whole("b", [link("d"), link("base", fmt="raw")]).status == HOLDS
    v = oc.disk_chain_whole("b", [link("d"), link("base", exists=False, fmt=None)])
    assert v.status == VIOLATED and "base (missing)" in v.summary
    assert oc.disk_chain_whole("b", []).status == VIOLATED
    assert oc.disk_chain_whole("b", None).status == UNKNOWN


def test_restore_as_snapshot_or_before():
    assert oc.restore_as_snapshot_or_before("b", "/s2", "/s1", "/s1").status == HOLDS
    assert oc.restore_as_snapshot_or_before("b", "/s2", "/s1", "/s2").status == HOLDS
    assert oc.restore_as_snapshot_or_before("b", "/s2", "/s1", "/base").status == VIOLATED
    assert oc.restore_as_snapshot_or_before("b", "/s2", "/s1", None).status == VIOLATED


def test_snapshots_whole_or_gone():
    assert oc.snapshots_whole_or_gone("b", ["s1"], {"s1": ["disk.qcow2"]}).status == HOLDS
    assert oc.snapshots_whole_or_gone("b", ["s1"], {}).status == VIOLATED
    assert oc.snapshots_whole_or_gone("b", [], {"s1": ["disk.qcow2"]}).status == VIOLATED
    assert oc.snapshots_whole_or_gone("b", None, {}).status == UNKNOWN


# -- the readers ---------------------------------------------------------------------------

def qcow2(path, backing: str | None) -> None:
    head = b"QFI\xfb" + struct.pack(">I", 3)
    name = (backing or "").encode()
    head += struct.pack(">QI", 64 if backing else 0, len(name))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head.ljust(64, b"\0") + name)


def test_disk_chain_follows_backings(tmp_path):
    base = tmp_path / "bases" / "b.ext4"
    base.parent.mkdir()
    base.write_bytes(b"\0" * 100)
    qcow2(tmp_path / "boxes" / "x" / "disks" / "disk.qcow2", str(base))
    chain = ops.disk_chain(tmp_path, "x")
    assert [c["format"] for c in chain] == ["qcow2", "raw"]
    assert ops.backing_of(tmp_path, "x") == str(base)
    base.unlink()
    assert oc.disk_chain_whole("x", ops.disk_chain(tmp_path, "x")).status == VIOLATED
    assert ops.disk_chain(tmp_path, "gone") == []


def test_staging_lists_the_home_tmp(tmp_path):
    assert ops.staging(tmp_path) == []
    (tmp_path / "tmp" / ".tmpA").mkdir(parents=True)
    (tmp_path / "tmp" / ".tmpA" / "disk.qcow2").write_bytes(b"")
    assert ops.staging(tmp_path) == [".tmpA/disk.qcow2"]


VIOLATING: dict[str, Callable[[], Verdict]] = {
    "new_boxes_whole": lambda: oc.new_boxes_whole("clone", ["src"], [ROW, row("new")],
                                                  {"src": ["disk.qcow2"]}),
    "export_whole_or_none": lambda: oc.export_whole_or_none("/d", True, 10, "cut"),
    "cut_import_refused": lambda: oc.cut_import_refused(None, [], []),
    "staging_cleared": lambda: oc.staging_cleared("export", [".tmpX/disk.qcow2"]),
    "disk_chain_whole": lambda: oc.disk_chain_whole("b", [link("d", exists=False)]),
    "restore_as_snapshot_or_before": lambda: oc.restore_as_snapshot_or_before(
        "b", "/s2", "/s1", None),
    "snapshots_whole_or_gone": lambda: oc.snapshots_whole_or_gone("b", ["s1"], {}),
    "get_or_create_by_name": lambda: oc.get_or_create_by_name(
        "g", {"id": "gLFipDddSrdE", "created": False}, {"name": "subject"}),
}


@pytest.mark.parametrize("name", sorted(VIOLATING))
def test_violating_case(name):
    v = VIOLATING[name]()
    assert v.status == VIOLATED, v
    assert v.check.split("[")[0] == name


# -- get_or_create_by_name -----------------------------------------------------------------

SUBJECT = {"id": "gLFipDddSrdE", "name": "subject"}


def test_get_or_create_by_name_holds_for_the_named_box_found_or_created():
    found = oc.get_or_create_by_name("subject", {"id": SUBJECT["id"], "created": False},
                                     SUBJECT, named_before=True, label="exact")
    assert (found.check, found.status) == ("get_or_create_by_name[exact]", HOLDS)
    made = oc.get_or_create_by_name("fresh-1", {"id": "Zq0", "created": True},
                                    {"id": "Zq0", "name": "fresh-1"}, named_before=False)
    assert made.status == HOLDS and "created it" in made.summary


def test_get_or_create_by_name_violated_by_the_box_an_id_prefix_names():
    """The colleague's sighting on 0.10.8: name "g" answered box gLFipDddSrdE, "subject"."""
    v = oc.get_or_create_by_name("g", {"id": SUBJECT["id"], "created": False}, SUBJECT,
                                 label="id_prefix_1")
    assert (v.check, v.status) == ("get_or_create_by_name[id_prefix_1]", VIOLATED)
    assert v.evidence == {"asked_name": "g", "returned_id": "gLFipDddSrdE",
                          "returned_name": "subject", "created": False, "named_before": None}
    assert "'subject'" in v.summary and "created=False" in v.summary


def test_get_or_create_by_name_violated_by_a_second_box_of_an_existing_name():
    v = oc.get_or_create_by_name("subject", {"id": "other", "created": True},
                                 {"name": "subject"}, named_before=True)
    assert v.status == VIOLATED and "created another" in v.summary


def test_get_or_create_by_name_unknown_without_a_reply_or_info():
    assert oc.get_or_create_by_name("g", None, None).status == UNKNOWN
    assert oc.get_or_create_by_name("g", {"id": "x", "created": False}, None).status == UNKNOWN
