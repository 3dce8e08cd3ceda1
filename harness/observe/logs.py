"""The runtime's own log under `<home>/logs/`, and the evidence blocks it writes on failure."""

from __future__ import annotations

import re
from pathlib import Path

EVIDENCE_FIELDS = ("shim_alive", "console_bytes", "ready_socket_exists", "likely_cause")
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
