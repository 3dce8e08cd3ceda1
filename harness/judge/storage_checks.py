"""Checks for a runtime whose home's storage failed (full, or refusing writes): a failed start
is recorded as failed with its reason, the reason names the storage cause, a create that
raised leaves no record, and once space is back every half-made box can be removed.
Each has a violating self-test in tests/test_storage_checks.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from harness.judge.verdict import HOLDS, UNKNOWN, VIOLATED, Verdict, check
from harness.observe.records import RecordRead

# What a reason must say to name a storage cause: the kernel's words (ENOSPC, EIO, EDQUOT,
# EROFS, EFBIG), or SQLite's ("database or disk is full", "disk I/O error").
STORAGE_CAUSE = re.compile(
    r"No space left|ENOSPC|os error 28|disk is full|disk I/O error|Input/output error|EIO\b|"
    r"File too large|EFBIG|Disk quota exceeded|EDQUOT|Read-only file system|EROFS", re.I)


def names_storage(text: str | None) -> str | None:
    """The storage cause `text` names (the matched words), or None."""
    m = STORAGE_CAUSE.search(text or "")
    return m.group(0) if m else None


@check("failed_start_recorded")
def failed_start_recorded(read: RecordRead) -> Verdict:
    """After a start that raised, the box's record (where there is one) is `failed` with a
    reason (on paths that expose it) — never left `configured`, as if never started, with
    nothing to say why it is not running."""
    cid = f"failed_start_recorded[{read.path}]"
    ev = {"read": read.to_json()}
    if read.error:
        return Verdict(cid, UNKNOWN, ev, f"{read.path} could not be read: {read.error}")
    if not read.present:
        return Verdict(cid, HOLDS, ev, f"{read.path}: no record")
    if read.status != "failed":
        why = " with no reason" if not (read.reason or "").strip() else ""
        return Verdict(cid, VIOLATED, ev, f"{read.path} says {read.status!r}{why} after a "
                       "failed start")
    if read.exposes_reason and not (read.reason or "").strip():
        return Verdict(cid, VIOLATED, ev, f"{read.path}: failed with no reason")
    return Verdict(cid, HOLDS, ev, f"{read.path}: failed" +
                   (f" ({(read.reason or '')[:100]})" if read.exposes_reason else ""))


@check("reason_names_storage")
def reason_names_storage(where: str, reason: str | None) -> Verdict:
    """A failure's reason (what the caller heard, or the record's error_reason), given while
    the storage was failing, names the storage cause (STORAGE_CAUSE). `reason` None: nothing
    was said there to judge."""
    cid = f"reason_names_storage[{where}]"
    ev = {"where": where, "reason": reason, "named": names_storage(reason)}
    if reason is None:
        return Verdict(cid, UNKNOWN, ev, f"no reason at {where} to judge")
    if ev["named"]:
        return Verdict(cid, HOLDS, ev, f"{where} names {ev['named']!r}")
    return Verdict(cid, VIOLATED, ev, f"{where} does not name the storage cause: "
                   f"{reason.strip()[:160]!r}")


@check("failed_create_left_no_record")
def failed_create_left_no_record(path: str, before: Iterable[str] | None,
                                 after: Iterable[str] | None) -> Verdict:
    """A create that raised added no record: the ids `path` lists after it are those it
    listed before (None: the path could not be read)."""
    cid = f"failed_create_left_no_record[{path}]"
    if before is None or after is None:
        return Verdict(cid, UNKNOWN, {"before": before, "after": after},
                       f"{path} could not be listed")
    new = sorted(set(after) - set(before))
    ev = {"before": sorted(before), "after": sorted(after), "new": new}
    if new:
        return Verdict(cid, VIOLATED, ev, f"{path} lists {len(new)} record(s) of a create that "
                       f"raised: {new}")
    return Verdict(cid, HOLDS, ev, f"{path}: no record added by the failed create")


@check("half_made_boxes_removed")
def half_made_boxes_removed(removals: Sequence[dict[str, Any]]) -> Verdict:
    """Once space is back, `remove(force=True)` of every box the failure left half made
    answers, and nothing of it stays: each of `removals` is {box, error, left} (`left`: what
    of the box was still there after, e.g. 'record in store', 'box folder')."""
    rs = list(removals)
    bad = [r for r in rs if r.get("error") or r.get("left")]
    ev = {"removals": rs, "failed": bad}
    if not rs:
        return Verdict("half_made_boxes_removed", UNKNOWN, ev, "no half-made box to remove")
    if bad:
        return Verdict("half_made_boxes_removed", VIOLATED, ev, "; ".join(
            f"{r['box']}: " + (f"remove raised {r['error'][:100]!r}" if r.get("error")
                               else f"left {r['left']}") for r in bad))
    return Verdict("half_made_boxes_removed", HOLDS, ev, f"{len(rs)} half-made box(es) removed")


@check("disk_images_whole")
def disk_images_whole(results: Sequence[dict[str, Any]]) -> Verdict:
    """Every qcow2 disk of the home's boxes passes `qemu-img check`: each of `results` is
    {path, exit_code, output} (harness.observe.boxes.check_disk_images). qemu-img's exit
    codes (its manual): 0 no errors; 3 leaked clusters only (space lost, no data harmed: what a
    cut write is allowed to leave, noted); 2 corruption; 1 the check could not complete; None
    qemu-img could not be run (unknown). No disk at all holds: a failure may stop before any."""
    rs = list(results)
    corrupt = [r for r in rs if r.get("exit_code") == 2]
    unchecked = [r for r in rs if r.get("exit_code") not in (0, 2, 3)]
    leaks = [r["path"] for r in rs if r.get("exit_code") == 3]
    ev = {"disks": rs, "corrupt": corrupt, "unchecked": unchecked, "leaks": leaks}
    if corrupt:
        return Verdict("disk_images_whole", VIOLATED, ev, "; ".join(
            f"{r['path']}: {(r.get('output') or '').strip()[-160:]}" for r in corrupt))
    if unchecked:
        r = unchecked[0]
        return Verdict("disk_images_whole", UNKNOWN, ev, f"{len(unchecked)} disk(s) could not "
                       f"be checked: {r['path']}: {(r.get('output') or '').strip()[-160:]}")
    return Verdict("disk_images_whole", HOLDS, ev, f"{len(rs)} qcow2 disk(s) whole" +
                   (f" ({len(leaks)} with leaked clusters only)" if leaks else ""))
