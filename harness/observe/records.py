"""Box records through every read path: the live host's get_info and list_info, a fresh host
on the same home, and a read-only view of the SQLite store (the only path that shows
`error_reason`). Each read is a `RecordRead`; a path that could not be read says why.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.common.errors import HostError
from harness.runtime.host import RuntimeHost, RuntimeOpError

TRANSITIONAL = ("configured", "stopping", "unknown")
FINAL = ("failed", "stopped")


@dataclass
class RecordRead:
    path: str                       # e.g. "live.get_info", "store", "fresh.list_info"
    present: bool = False
    status: str | None = None
    reason: str | None = None       # error_reason; only the store exposes it
    exposes_reason: bool = False
    error: str | None = None        # the path could not be read: the check says unknown
    raw: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def store_path(home: Path) -> Path:
    return home / "db" / "boxlite.db"


def _connect_ro(home: Path) -> sqlite3.Connection:
    db = store_path(home)
    if not db.is_file():
        raise FileNotFoundError(f"no store at {db}")
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)


def read_store(home: Path, box_id: str, label: str = "store") -> RecordRead:
    try:
        con = _connect_ro(home)
        try:
            row = con.execute("SELECT status, json FROM box_state WHERE id = ?",
                              (box_id,)).fetchone()
            cfg = con.execute("SELECT 1 FROM box_config WHERE id = ?", (box_id,)).fetchone()
        finally:
            con.close()
    except (sqlite3.Error, OSError) as exc:
        return RecordRead(label, error=f"{type(exc).__name__}: {exc}", exposes_reason=True)
    if row is None:
        return RecordRead(label, present=False, exposes_reason=True,
                          raw={"box_config_row": cfg is not None})
    state = json.loads(row[1]) if row[1] else {}
    return RecordRead(label, True, row[0], state.get("error_reason"), True,
                      raw={"state": state, "box_config_row": cfg is not None})


def store_rows(home: Path) -> list[dict[str, Any]]:
    """Every box_state row, for ledger probes and reconciliation checks."""
    con = _connect_ro(home)
    try:
        rows = con.execute("SELECT s.id, s.status, s.json, c.id IS NOT NULL FROM box_state s "
                           "LEFT JOIN box_config c ON c.id = s.id").fetchall()
    finally:
        con.close()
    return [{"id": r[0], "status": r[1], "reason": (json.loads(r[2]) if r[2] else {})
             .get("error_reason"), "has_config": bool(r[3])} for r in rows]


def store_integrity(home: Path) -> str:
    con = _connect_ro(home)
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


def read_host(host: RuntimeHost, box_id: str, prefix: str) -> list[RecordRead]:
    """get_info and list_info through a running host, as two separate reads."""
    reads = []
    try:
        info = host.call("get_info", timeout_s=30, box_id=box_id)
        reads.append(RecordRead(f"{prefix}.get_info", info is not None,
                                info and info["status"], raw=info))
    except (RuntimeOpError, HostError) as exc:
        reads.append(RecordRead(f"{prefix}.get_info", error=str(exc)))
    try:
        infos = host.call("list_info", timeout_s=30)
        match = [i for i in infos if i["id"] == box_id]
        info = match[0] if match else None
        reads.append(RecordRead(f"{prefix}.list_info", info is not None,
                                info and info["status"], raw=info))
    except (RuntimeOpError, HostError) as exc:
        reads.append(RecordRead(f"{prefix}.list_info", error=str(exc)))
    return reads
