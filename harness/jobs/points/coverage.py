"""Coverage of the fault points: per operation and variant, the points discovered, the points
faulted per kind before this job (today's scenarios, mapped onto the points) and by a sweep,
the verdicts, and the points no fault ever reached. Written as JSON and a small HTML page.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

# Where today's scenarios land their faults, as the first point of the operation whose key
# holds the text (the markers they poll), and the fault kinds they send there:
#   scenarios/init/test_host_death.py: SIGKILL and SIGTERM of the host at "image_disk_build"
#     (the log's "Building image disk"), "disk_written" (disk.qcow2 appears) and
#     "shim_spawned" (shim.pid appears) of a start; its explored delays land nowhere named;
#   scenarios/init/test_shim_crash.py, test_guest_hang.py (steps.start_with_fault): the
#     shim's SIGKILL and the freeze as soon as the shim is spawned, and in the connect wait;
#   scenarios/shutdown: SIGTERM (graceful) and SIGKILL of the host with boxes in the connect
#     wait;
#   scenarios/detached (recovery.orphan_detached_box): SIGKILL and SIGTERM of the host after
#     create wrote the record, at the shim's spawn and in the connect wait, detached boxes.
#   scenarios/operations/test_operations_under_faults.py: SIGKILL and SIGTERM of the host at
#     each phase of clone, export, import_box and snapshot create/restore/remove, on stopped
#     (plain) and detached boxes; "" is the operation's first point ("at once after the
#     request is sent"); export's 'manifest' (inside the staging folder) and 'archive' (the
#     destination, outside the home) are not points of the home;
#   no scenario fails the disk at a point of an operation (scenarios/storage fail it from a
#   home's start, through the FUSE layer): io_error and disk_full start from nothing.
HOST = ("host_sigkill", "host_sigterm")
BOX = ("shim_sigkill", "freeze")
CONNECT_WAIT = "VM subprocess started successfully"
BOTH = ("plain", "detached")
TODAY: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("start", "plain", "Building image disk", HOST),
    ("start", "plain", "boxes/<box>/disks/disk.qcow2", HOST),      # created by a rename
    ("start", "plain", "create boxes/<box>/shim.pid", HOST),
    ("start", "plain", "proc:spawn shim", BOX),
    ("start", "plain", CONNECT_WAIT, BOX + HOST),
    ("create", "detached", "store:commit", HOST),
    ("start", "detached", "create boxes/<box>/shim.pid", HOST),
    ("start", "detached", CONNECT_WAIT, HOST),
    *(("clone", v, "create boxes/<tmp>/disks/disk.qcow2", HOST) for v in BOTH),
    *(("clone", v, "boxes/<new>/disks/disk.qcow2", HOST) for v in BOTH),
    *(("export", v, "create tmp/<tmp>", HOST) for v in BOTH),
    *(("import_box", v, "create tmp/<tmp>", HOST) for v in BOTH),
    *(("import_box", v, "create boxes/<new>/disks/disk.qcow2", HOST) for v in BOTH),
    *(("snapshot_create", v, "create boxes/<box>/snapshots/snap", HOST) for v in BOTH),
    *(("snapshot_restore", v, "", HOST) for v in BOTH),
    *(("snapshot_restore", v, "Creating COW child disk", HOST) for v in BOTH),
    *(("snapshot_remove", v, "", HOST) for v in BOTH),
)


def today(lists: dict[tuple[str, str], list[dict[str, Any]]]) -> dict[tuple[str, str],
                                                                   dict[str, set[str]]]:
    """Today's scenarios' faults as points: (operation, variant) -> kind -> point keys. A
    marker no point of the list matches is left out (the list's release words it
    otherwise)."""
    out: dict[tuple[str, str], dict[str, set[str]]] = {}
    for op, variant, marker, kinds in TODAY:
        keys = [p["key"] for p in lists.get((op, variant), [])]
        hit = next((k for k in keys if marker in k), None)
        if hit is None:
            continue
        for kind in kinds:
            out.setdefault((op, variant), {}).setdefault(kind, set()).add(hit)
    return out


def coverage(version: str, lists: dict[tuple[str, str], list[dict[str, Any]]],
             results: list[dict[str, Any]], wall_s: float, quick: bool = False
             ) -> dict[str, Any]:
    """The coverage document: one row per (operation, variant) with a list."""
    before = today(lists)
    rows = []
    for (op, variant), pts in sorted(lists.items()):
        keys = [p["key"] for p in pts]
        mine = [r for r in results if r["operation"] == op and r["variant"] == variant]
        landed = [r for r in mine if r["landing"].get("landed")]
        per_kind: dict[str, set[str]] = {}
        for r in landed:
            per_kind.setdefault(r["kind"], set()).add(r["point"])
        tried = {r["point"] for r in mine}
        reached = {r["point"] for r in landed}
        b = before.get((op, variant), {})
        rows.append({
            "operation": op, "variant": variant, "discovered": len(keys),
            "unstable": sum(1 for p in pts if p.get("unstable")),
            "points": keys,
            "before": {"points": len(set().union(*b.values())) if b else 0,
                       "per_kind": {k: sorted(v) for k, v in b.items()}},
            "after": {"points": len(reached),
                      "per_kind": {k: len(v) for k, v in sorted(per_kind.items())},
                      "outcomes": dict(Counter(r["outcome"] for r in mine))},
            "never_reached": sorted(tried - reached),
            "never_tried": [k for k in keys if k not in tried],
            "results": mine,
        })
    return {"version": version, "quick": quick, "wall_s": round(wall_s, 1),
            "faults": len(results), "landing": landing_figures(results),
            "operations": rows}


def landing_figures(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per fault kind: how many landed, the delay from the point's evidence to the signal
    (for a failing disk: to strace attached to every thread; median and max, ms) and the
    overshoot (points already past; mean and max); for a failing disk also how many faults
    failed at least one call (`exercised`: the runtime wrote to its home after the point)."""
    out: dict[str, dict[str, Any]] = {}
    for kind in sorted({r["kind"] for r in results}):
        land = [r["landing"] for r in results if r["kind"] == kind]
        ok = [x for x in land if x.get("landed")]
        delays = sorted(x["delay_ms"] for x in ok)
        over = [x["overshoot"] for x in ok]
        out[kind] = {"tried": len(land), "landed": len(ok),
                     "delay_ms_median": delays[len(delays) // 2] if delays else None,
                     "delay_ms_max": max(delays) if delays else None,
                     "overshoot_mean": round(sum(over) / len(over), 2) if over else None,
                     "overshoot_max": max(over) if over else None,
                     "overshoot_zero": sum(1 for o in over if o == 0)}
        if any("failed_calls" in x for x in ok):
            out[kind]["exercised"] = sum(1 for x in ok if x.get("failed_calls"))
    return out


def write_page(doc: dict[str, Any], path: Path) -> Path:
    env = Environment(loader=FileSystemLoader(Path(__file__).parent),
                      autoescape=select_autoescape(["html", "j2"]))
    path.write_text(env.get_template("coverage.html.j2").render(doc=doc))
    return path
