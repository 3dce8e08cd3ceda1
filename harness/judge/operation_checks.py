"""Checks for what the 0.10 operations beyond a box's lifecycle promise: a clone or an import
is a whole box or nothing, an export a whole archive or none, a restore the snapshot or before.

Each has a violating self-test in tests/test_operation_checks.py (its VIOLATING dict).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.judge.verdict import HOLDS, UNKNOWN, VIOLATED, Verdict, check


@check("new_boxes_whole")
def new_boxes_whole(op: str, before: Iterable[str], rows: Sequence[dict[str, Any]],
                    disks: Mapping[str, Sequence[str]] | None, at_most: int = 1) -> Verdict:
    """What `op` (clone, import_box) added to the home is at most `at_most` box(es), each a
    whole box: a record in the store and a folder holding its disks. A record without disks
    can never start; a folder without a record is never removed (incident CL84LvGx7RBE).
    `before` are the box ids before the operation, `rows` the store's records after it,
    `disks` each box folder's disk files (None: the folders could not be listed)."""
    cid = f"new_boxes_whole[{op}]"
    old = set(before)
    ev: dict[str, Any] = {"op": op, "before": sorted(old), "rows": list(rows),
                          "disks": None if disks is None else {k: list(v) for k, v in
                                                               disks.items()}}
    if disks is None:
        return Verdict(cid, UNKNOWN, ev, "the box folders could not be listed")
    ids = {r["id"] for r in rows}
    new = sorted((ids | set(disks)) - old)
    halves = [f"{b}: record without disks" for b in new if b in ids and not disks.get(b)]
    halves += [f"{b}: folder without record" for b in new if b not in ids]
    ev.update(new=new, halves=halves)
    if halves:
        return Verdict(cid, VIOLATED, ev, f"{op} left half a box: " + "; ".join(halves))
    if len(new) > at_most:
        return Verdict(cid, VIOLATED, ev, f"{op} added {len(new)} boxes, at most {at_most} "
                       f"expected: {new}")
    if new:
        return Verdict(cid, HOLDS, ev, f"{op} added whole box(es): {new}")
    return Verdict(cid, HOLDS, ev, f"{op} added nothing")


@check("export_whole_or_none")
def export_whole_or_none(dest: str, exists: bool, size: int | None,
                         import_error: str | None) -> Verdict:
    """The archive at `dest` is whole (the runtime imports it) or not there at all. An archive
    cut by a fault and left at the destination looks like an export to anyone who finds it.
    `import_error` is what importing it answered (None: it imported)."""
    ev = {"dest": dest, "exists": exists, "size": size, "import_error": import_error}
    if not exists:
        return Verdict("export_whole_or_none", HOLDS, ev, "no archive at the destination")
    if import_error:
        return Verdict("export_whole_or_none", VIOLATED, ev,
                       f"a cut archive ({size} bytes) is left at {dest}: its import says "
                       f"{import_error[:200]}")
    return Verdict("export_whole_or_none", HOLDS, ev, f"a whole archive ({size} bytes): it "
                   "imports")


@check("cut_import_refused")
def cut_import_refused(error: str | None, added: Sequence[str],
                       staging: Sequence[str] | None) -> Verdict:
    """Importing a cut archive is refused with an error, and leaves nothing: no box
    (`added`: records or folders that were not there before) and nothing staged in the
    home's tmp/ (`staging`; None: it could not be listed)."""
    ev = {"error": error, "added": list(added),
          "staging": None if staging is None else list(staging)}
    if not error:
        return Verdict("cut_import_refused", VIOLATED, ev, "a cut archive was imported")
    if added or staging:
        return Verdict("cut_import_refused", VIOLATED, ev,
                       f"refused, but left boxes {list(added)} and staged {list(staging or [])}")
    if staging is None:
        return Verdict("cut_import_refused", UNKNOWN, ev, "the home's tmp/ could not be listed")
    return Verdict("cut_import_refused", HOLDS, ev, f"refused cleanly: {error[:160]}")


@check("staging_cleared")
def staging_cleared(op: str, staging: Sequence[str] | None) -> Verdict:
    """Once a fresh runtime has opened the home, nothing an interrupted `op` staged in the
    home's tmp/ is left: nothing else would ever remove it. `staging` lists what is there."""
    cid = f"staging_cleared[{op}]"
    ev = {"op": op, "staging": None if staging is None else list(staging)}
    if staging is None:
        return Verdict(cid, UNKNOWN, ev, "the home's tmp/ could not be listed")
    if staging:
        return Verdict(cid, VIOLATED, ev, f"{len(staging)} staged file(s) left by {op}: "
                       + ", ".join(list(staging)[:5]))
    return Verdict(cid, HOLDS, ev, "the home's tmp/ is empty")


@check("disk_chain_whole")
def disk_chain_whole(box_id: str, chain: Sequence[dict[str, Any]] | None,
                     label: str | None = None) -> Verdict:
    """The box's disk and every backing file it names exist and are qcow2 images (or the
    raw base an ext4 backing is). `chain` is the disk first, then each backing: dicts with
    `path`, `exists`, `format` (qcow2, raw, or None when unreadable); None: not readable.
    `label` names the box in the check id (a role, stable from run to run; box ids are not)."""
    cid = f"disk_chain_whole[{label or box_id}]"
    ev = {"box": box_id, "chain": None if chain is None else list(chain)}
    if chain is None:
        return Verdict(cid, UNKNOWN, ev, "the disk chain could not be read")
    if not chain:
        return Verdict(cid, VIOLATED, ev, "the box has no disk")
    broken = [c for c in chain if not c.get("exists") or c.get("format") is None]
    if broken:
        return Verdict(cid, VIOLATED, ev, "broken disk chain: " + ", ".join(
            f"{c['path']} ({'missing' if not c.get('exists') else 'unreadable'})"
            for c in broken))
    return Verdict(cid, HOLDS, ev, f"{len(chain)} disk(s) in the chain, all there")


@check("restore_as_snapshot_or_before")
def restore_as_snapshot_or_before(box_id: str, before: str | None, snapshot: str,
                                  after: str | None, label: str | None = None) -> Verdict:
    """After a restore of `snapshot` (cut or not), the box's disk is the snapshot's (its
    backing file is the snapshot's disk) or as before (the backing it had: `before`).
    `after` is the backing file of the disk now; None: the disk is gone or unreadable."""
    cid = f"restore_as_snapshot_or_before[{label or box_id}]"     # label: see disk_chain_whole
    ev = {"box": box_id, "before": before, "snapshot": snapshot, "after": after}
    if after is None:
        return Verdict(cid, VIOLATED, ev, "the box's disk is gone or unreadable after the "
                       "restore")
    if after == snapshot:
        return Verdict(cid, HOLDS, ev, "the box is as the snapshot")
    if after == before:
        return Verdict(cid, HOLDS, ev, "the box is as before the restore")
    return Verdict(cid, VIOLATED, ev, f"the box's disk is backed by {after}: neither the "
                   f"snapshot ({snapshot}) nor as before ({before})")


@check("snapshots_whole_or_gone")
def snapshots_whole_or_gone(box_id: str, listed: Sequence[str] | None,
                            folders: Mapping[str, Sequence[str]] | None,
                            label: str | None = None) -> Verdict:
    """Every snapshot the runtime lists has its folder with a disk, and every snapshot folder
    is listed: a listed snapshot without a disk cannot be restored, a folder nobody lists is
    never removed. `listed` from snapshot.list(); `folders` from boxes/<id>/snapshots/."""
    cid = f"snapshots_whole_or_gone[{label or box_id}]"     # label: see disk_chain_whole
    ev = {"box": box_id, "listed": listed, "folders": None if folders is None else
          {k: list(v) for k, v in folders.items()}}
    if listed is None or folders is None:
        return Verdict(cid, UNKNOWN, ev, "the snapshots could not be listed")
    halves = [f"{n}: listed without a disk" for n in listed if not folders.get(n)]
    halves += [f"{n}: folder nobody lists" for n in folders if n not in listed]
    if halves:
        return Verdict(cid, VIOLATED, ev, "half a snapshot: " + "; ".join(halves))
    return Verdict(cid, HOLDS, ev, f"{len(listed)} snapshot(s), each whole")


@check("get_or_create_by_name")
def get_or_create_by_name(asked_name: str, reply: Mapping[str, Any] | None,
                          info: Mapping[str, Any] | None, named_before: bool | None = None,
                          label: str | None = None) -> Verdict:
    """`get_or_create(options, name=asked_name)` answers a box named `asked_name`: the one
    that had that name (created false) or a new one given it (created true). A box of
    another name is someone else's box handed out as the caller's: in 0.10.x the name goes
    through BoxManager::lookup_box (boxlite/src/litebox/manager.rs), which matches an exact
    id, then an exact name, then a unique id prefix (RuntimeImpl::create_inner,
    boxlite/src/runtime/rt_impl.rs). `reply` is the op's answer ({"id", "created"}; None: it
    raised), `info` the returned box's get_info (None: unreadable); `named_before`, when
    known, whether a box named `asked_name` existed before the call (then created must be
    false). `label` names the case in the check id (stable; asked names derived from box
    ids are not). A crash inside becomes `unknown` (@check)."""
    cid = f"get_or_create_by_name[{label or asked_name}]"
    ev: dict[str, Any] = {"asked_name": asked_name, "returned_id": None, "returned_name": None,
                          "created": None, "named_before": named_before}
    if reply is None:
        return Verdict(cid, UNKNOWN, ev, f"get_or_create(name={asked_name!r}) answered no box")
    ev.update(returned_id=reply.get("id"), created=reply.get("created"))
    if info is None:
        return Verdict(cid, UNKNOWN, ev, f"the info of the returned box {reply.get('id')} "
                       "could not be read")
    ev["returned_name"] = name = info.get("name")
    if name != asked_name:
        made = "created" if reply.get("created") else "returned the existing"
        return Verdict(cid, VIOLATED, ev, f"get_or_create(name={asked_name!r}) {made} box "
                       f"{reply.get('id')} named {name!r} (created={reply.get('created')})")
    if named_before and reply.get("created"):
        return Verdict(cid, VIOLATED, ev, f"a box named {asked_name!r} existed, yet "
                       f"get_or_create created another ({reply.get('id')})")
    how = "created it" if reply.get("created") else "returned the existing one"
    return Verdict(cid, HOLDS, ev, f"a box named {asked_name!r}: {how} ({reply.get('id')})")
