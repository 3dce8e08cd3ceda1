"""The mounts a daemon leaves under its folder (a private dockerd's overlays, a FUSE layer's
mount points): listing them from /proc/self/mountinfo, and unmounting them before a folder goes.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path
from typing import Any

MNT_DETACH = 2


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(root: Path, mountinfo: str | None = None) -> list[str]:
    """Mount points at or under `root`, deepest last (as /proc/self/mountinfo lists them)."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    base = str(root)
    out = []
    for line in mountinfo.splitlines():
        parts = line.split()
        if len(parts) < 5:
            continue
        point = _unescape(parts[4])
        if point == base or point.startswith(base + "/"):
            out.append(point)
    return out


def unmount_under(root: Path) -> list[dict[str, Any]]:
    """Unmount everything at or under `root`: newest first (a mount can hide older ones
    beneath it), lazily where it is busy, pass after pass until none is left or a pass
    makes no progress. Lists what was unmounted, and each mount still there at the end."""
    libc = ctypes.CDLL(None, use_errno=True)
    done: list[dict[str, Any]] = []
    for _ in range(16):
        points = mounts_under(root)
        progress = False
        for point in reversed(points):
            for flags, how in ((0, "umount"), (MNT_DETACH, "detach")):
                if libc.umount2(point.encode(), flags) == 0:
                    done.append({"point": point, "how": how, "error": None})
                    progress = True
                    break
        if not points or not progress:
            break
    return done + [{"point": p, "how": None, "error": "still mounted"}
                   for p in mounts_under(root)]
