"""A scenario's results and folder, shipped from a remote worker to the controller.

A remote worker writes into a folder on its own host; when a scenario's teardown is done, its
results lines and its folder (history, verdicts, host stderr, artifacts) travel back as data on
the teardown's report (xdist sends a report's attributes to the controller), and the controller
writes them into its report folder, as a local worker would have. A shipment is plain data
(str, bytes, lists, dicts) so that execnet can carry it.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

# What one scenario may ship; the rest of its files are named as left out (a store copy can
# be large, and a shipment travels in one message).
MAX_SHIPMENT_BYTES = 64 * 2**20
SHIPMENT = "bxc_shipment"


def pack(workdir: Path, results: list[dict[str, Any]], host: str,
         limit: int = MAX_SHIPMENT_BYTES) -> dict[str, Any]:
    """A scenario's shipment: its results lines, its folder's files (relative path -> bytes,
    smallest first until `limit`), and the files left out."""
    files: dict[str, bytes] = {}
    left_out: list[str] = []
    total = 0
    paths = sorted((p for p in workdir.rglob("*") if p.is_file() and not p.is_symlink()),
                   key=lambda p: p.stat().st_size) if workdir.is_dir() else []
    for path in paths:
        rel = path.relative_to(workdir).as_posix()
        try:
            data = path.read_bytes()
        except OSError as exc:
            left_out.append(f"{rel} (unreadable: {exc.strerror or exc})")
            continue
        if total + len(data) > limit:
            left_out.append(f"{rel} ({len(data)} bytes, over the {limit} byte shipment)")
            continue
        files[rel] = data
        total += len(data)
    return {"host": host, "folder": workdir.name, "results": results, "files": files,
            "left_out": left_out}


def _safe(rel: str) -> PurePosixPath:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ValueError(f"a shipped path leaves its scenario folder: {rel!r}")
    return p


def unpack(shipment: dict[str, Any], report: Path) -> list[dict[str, Any]]:
    """Write a shipment's files under `report`/scenarios/<its folder>; return its results
    lines, pointing at that folder and naming the host they ran on. A file left out is named
    in the folder's `shipment-left-out.txt`."""
    folder = _safe(str(shipment["folder"]))
    if len(folder.parts) != 1:
        raise ValueError(f"a shipped folder name is a path: {shipment['folder']!r}")
    workdir = report / "scenarios" / folder.name
    for rel, data in shipment.get("files", {}).items():
        path = workdir / _safe(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if shipment.get("left_out"):
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "shipment-left-out.txt").write_text("\n".join(shipment["left_out"]) + "\n")
    out = []
    for line in shipment.get("results", []):
        line = dict(line)
        if line.get("workdir"):
            line["workdir"] = str(workdir)
        line["host"] = shipment.get("host")
        out.append(line)
    return out


def results_for(path: Path, nodeid: str) -> list[dict[str, Any]]:
    """The lines of a results.jsonl that are `nodeid`'s."""
    out = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return out
    for raw in text.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict) and line.get("nodeid") == nodeid:
            out.append(line)
    return out
