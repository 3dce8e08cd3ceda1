"""The runtime's own log under `<home>/logs/`, and the evidence blocks it writes on failure."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

EVIDENCE_FIELDS = ("shim_alive", "console_bytes", "ready_socket_exists", "likely_cause")
# The runtime's first words of a graceful shutdown, logged synchronously (its closing
# "Runtime shutdown complete" can be lost at exit: shutdown-log-lost-at-exit).
SHUTDOWN_LOGGED = "Initiating runtime shutdown"
_FIELD = re.compile(r"^\s*[•*-]?\s*(\w+)\s*=\s*(.*?)\s*$")


def runtime_log(home: Path) -> str:
    """All of the runtime's log files, oldest first; '' when there are none."""
    files = sorted((home / "logs").glob("boxlite.log*"))
    return "".join(f.read_text(errors="replace") for f in files)


def timeout_evidence(log: str, box_id: str) -> dict[str, str] | None:
    """The evidence block of the guest-connect timeout for `box_id`, field by field.

    Parsed by field, not by whole message, since releases word the block differently.
    Returns None when the log holds no timeout block for the box.
    """
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if box_id in line and re.search(r"time(d)? ?out", line, re.I) and "Evidence" in "\n".join(
                lines[i:i + 4]):
            fields: dict[str, str] = {}
            for follow in lines[i + 1:i + 30]:
                m = _FIELD.match(follow)
                if m and m.group(1) in EVIDENCE_FIELDS:
                    fields[m.group(1)] = m.group(2)
                if re.match(r"^\d{4}-\d\d-\d\dT", follow):
                    break
            return fields
    return None


def shim_stderr(home: Path, box_id: str) -> str:
    path = home / "boxes" / box_id / "shim.stderr"
    return path.read_text(errors="replace") if path.is_file() else ""


# 0.10.x logs this when the shim is up; the guest-connect wait (its 30 s timer) starts next.
_VM_STARTED = re.compile(r"^(\S+Z)\s+\w+\s+\S+: VM subprocess started successfully "
                         r"box_id=(\w+)", re.M)


def vm_started_at(log: str, box_id: str) -> float | None:
    """When the runtime began waiting for `box_id`'s guest, by its own clock (UTC epoch
    seconds, from the log line's timestamp); None when the log holds no such line (older
    releases word it otherwise)."""
    for m in _VM_STARTED.finditer(log):
        if m.group(2) == box_id:
            try:
                return datetime.fromisoformat(m.group(1)).timestamp()
            except ValueError:
                return None
    return None
