"""The store read from a separate process, for homes whose storage is failing.

An in-process sqlite3 reader of a store whose writes fail was seen to die of SIGBUS (the probe
of 2026-12-06, ../shared/BOXLITE_NOTES.md "Storage": SQLite maps the WAL index, and a mapped
page of a full tmpfs cannot be backed). Here the reads of harness.observe.records run in a
child Python; a child that dies, hangs or cannot read gives an unreadable read (its check says
unknown), never a dead harness.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.observe.records import RecordRead

READ_TIMEOUT_S = 30.0

_SCRIPT = r"""
import json, sys
from dataclasses import asdict
from pathlib import Path
from harness.observe import records
home, what, box = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
out = {}
try:
    if what == "record":
        out["read"] = asdict(records.read_store(home, box, sys.argv[4]))
    elif what == "rows":
        out["rows"] = records.store_rows(home)
    elif what == "integrity":
        out["integrity"] = records.store_integrity(home)
except Exception as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def _child(home: Path, what: str, box_id: str = "", label: str = "store",
           timeout_s: float = READ_TIMEOUT_S) -> dict[str, Any]:
    """Run one read in a child; {"error": why} when it could not answer."""
    try:
        proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(home), what, box_id, label],
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"the store reader did not answer within {timeout_s:.0f}s"}
    except OSError as exc:
        return {"error": f"the store reader could not start: {exc}"}
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        return {"error": f"the store reader died of {name}", "died_of": name}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": f"the store reader exited {proc.returncode}: "
                         f"{proc.stderr.strip()[-300:]}"}


def read_store_apart(home: Path, box_id: str, label: str = "store") -> RecordRead:
    """records.read_store in a child process."""
    out = _child(home, "record", box_id, label)
    if "read" in out:
        return RecordRead(**out["read"])
    return RecordRead(label, error=out["error"], exposes_reason=True)


def store_rows_apart(home: Path) -> tuple[list[dict[str, Any]] | None, str | None]:
    """records.store_rows in a child process: (rows, None) or (None, why not)."""
    out = _child(home, "rows")
    return (out["rows"], None) if "rows" in out else (None, out["error"])


def store_integrity_apart(home: Path) -> tuple[str | None, str | None]:
    """records.store_integrity in a child process: (result, None) or (None, why not)."""
    out = _child(home, "integrity")
    return (out["integrity"], None) if "integrity" in out else (None, out["error"])
