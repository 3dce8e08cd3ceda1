"""Loop devices whose backing file lies in one of our folders: found from /sys, detached.

A storage fault puts a home on an ext4 image attached to a loop device (harness.faults.storage);
`mount -o loop` sets autoclear, so an unmount normally detaches it, but a lazy unmount of a busy
mount, or a run that died between attaching and mounting, leaves the device. The sweep detaches
a dead run's; a scenario's teardown detaches its own.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

SYS_BLOCK = Path("/sys/block")
LOSETUP_TIMEOUT_S = 10.0


def loops_backed_under(root: Path, sys_block: Path = SYS_BLOCK) -> list[dict[str, str]]:
    """Each attached loop device ({device, backing}) whose backing file is at or under `root`.
    The kernel writes ' (deleted)' after a backing file that was unlinked; it still counts."""
    out = []
    base = str(root)
    for dev in sorted(sys_block.glob("loop*")):
        try:
            backing = (dev / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue                    # not attached
        path = backing.removesuffix(" (deleted)")
        if path == base or path.startswith(base + "/"):
            out.append({"device": f"/dev/{dev.name}", "backing": backing})
    return out


def detach(device: str) -> str | None:
    """`losetup -d DEVICE`; None when done, else why not. On a device still in use the kernel
    sets autoclear instead: it goes when its last user lets go."""
    try:
        proc = subprocess.run(["losetup", "-d", device], capture_output=True, text=True,
                              timeout=LOSETUP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"losetup -d {device}: {exc}"
    return None if proc.returncode == 0 else (proc.stderr.strip() or f"exit {proc.returncode}")


def detach_under(root: Path) -> list[dict[str, Any]]:
    """Detach every loop device backed by a file under `root`; what was done, per device."""
    return [{**loop, "error": detach(loop["device"])} for loop in loops_backed_under(root)]
