"""What the soak samples: the runtime's processes by box, zombies, disk use, the host's
memory, descriptors and threads. Each probe takes what it measures (a pid, a path), never the
SoakWorld, which draws its samples from them (SoakWorld.sample).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from harness.observe.processes import classify

_BOX_IN_CMD = re.compile(r"/boxes/([A-Za-z0-9_-]+)/")


def box_processes(root_pid: int, seen: dict[tuple[int, float], str] | None = None
                  ) -> dict[str, list[dict[str, Any]]]:
    """The runtime's live processes (bwrap, shim, VM) under `root_pid`, by the box id their
    command line names ("?" when it names none). A process that is exiting has an empty
    command line: it keeps the box `seen` remembered for it (pid and start time), and is left
    out if it was never seen whole."""
    out: dict[str, list[dict[str, Any]]] = {}
    for p in psutil.Process(root_pid).children(recursive=True):
        try:
            with p.oneshot():
                if p.status() == psutil.STATUS_ZOMBIE:
                    continue
                name, argv, key = p.name(), p.cmdline(), (p.pid, p.create_time())
        except psutil.Error:
            continue
        kind = classify(name, " ".join(argv[:1]))
        if kind not in ("shim", "vm", "bwrap"):
            continue
        m = _BOX_IN_CMD.search(" ".join(argv))
        box = m.group(1) if m else (seen or {}).get(key)
        if box is None and not argv:
            continue
        if m and seen is not None:
            seen[key] = m.group(1)
        entry = {"pid": p.pid, "name": name, "kind": kind}
        if box is None:
            entry.update(cmd=" ".join(argv)[:300], create_time=key[1])
        out.setdefault(box or "?", []).append(entry)
    return out


def zombie_count(root_pid: int) -> int:
    n = 0
    for p in psutil.Process(root_pid).children(recursive=True):
        try:
            n += p.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            pass
    return n


def disk_kib(path: Path, skip: Sequence[str] = ()) -> int:
    """Blocks allocated under `path` (sparse disks count what they use), skipping top-level
    names in `skip`; files that vanish while walking are not counted."""
    total = 0
    stack = [path]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            if d == path and e.name in skip:
                continue
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(Path(e.path))
                else:
                    total += e.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
    return total // 1024


def host_probe(pid: int) -> dict[str, float]:
    """The host process's resident memory (MiB), descriptors and threads."""
    p = psutil.Process(pid)
    with p.oneshot():
        return {"host_rss_mib": round(p.memory_info().rss / 2**20, 2),
                "host_fds": p.num_fds(), "host_threads": p.num_threads()}


def socket_dir(box_id: str) -> Path:
    return Path(f"/tmp/bl-{os.getuid()}/{box_id}")
