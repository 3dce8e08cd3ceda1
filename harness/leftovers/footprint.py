"""Sizes on disk: the bytes a folder holds, and this run's /tmp footprint (its marked folders
right now), sampled on a thread for its peak.

Our own walk rather than `du` or shutil.disk_usage: du is a process per sample and disk_usage
measures a whole filesystem; this counts allocated blocks (sparse images) within one mount.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.leftovers.markers import Owner, folders_under, owner_of, read_marker, roots


def disk_usage(path: Path) -> int:
    """Bytes on disk under `path` (allocated blocks: sparse disk images count what they hold),
    without following links or crossing into other filesystems."""
    try:
        top = os.lstat(path)
    except OSError:
        return 0
    if not stat.S_ISDIR(top.st_mode):
        return top.st_blocks * 512
    total, stack = top.st_blocks * 512, [str(path)]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode) and st.st_dev == top.st_dev:
                    stack.append(e.path)
    return total


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def footprint(run: Owner, under: Iterable[Path] | None = None,
              unmarked: dict[str, int] | None = None) -> tuple[int, int]:
    """(bytes, folders) of this run's marked folders under the roots right now.

    `unmarked`, kept by the caller between calls: folders read without a marker, by their
    modification time (ns). One unchanged since is not read again: writing a marker changes
    its folder's time. A shared /tmp can hold thousands of folders not ours (a runtime that
    leaves one per VM: 6,600 here took 63 ms of CPU per sample, every second of a run)."""
    total = n = 0
    settled = time.time_ns() - UNMARKED_SETTLED_NS
    for e in folders_under(roots() if under is None else under):
        try:
            mtime = e.stat(follow_symlinks=False).st_mtime_ns if unmarked is not None else 0
        except OSError:
            continue
        if unmarked is not None and unmarked.get(e.path) == mtime:
            continue
        data = read_marker(Path(e.path))
        if data is None:
            if unmarked is not None and mtime < settled:
                unmarked[e.path] = mtime
            continue
        if owner_of(data, "run") == run:
            total += disk_usage(Path(e.path))
            n += 1
    return total, n


# A folder is remembered as unmarked only once its time is this old: a marker written in the
# same tick of the file system's clock as the read would not change it (ns).
UNMARKED_SETTLED_NS = 2_000_000_000


class FootprintSampler:
    """Samples this run's /tmp footprint on a thread; `peak` is the largest seen."""

    def __init__(self, run: Owner, interval_s: float = 1.0) -> None:
        self.run, self.interval_s = run, interval_s
        self.peak, self.peak_folders, self.peak_at_s, self.samples = 0, 0, 0.0, 0
        self._t0 = time.monotonic()
        self._unmarked: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tmp-footprint", daemon=True)

    def start(self) -> FootprintSampler:
        self._thread.start()
        return self

    def sample(self) -> None:
        size, n = footprint(self.run, unmarked=self._unmarked)
        self.samples += 1
        if size > self.peak:
            self.peak, self.peak_folders = size, n
            self.peak_at_s = time.monotonic() - self._t0

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.sample()
            self._stop.wait(self.interval_s)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout=5)
        return {"peak_bytes": self.peak, "peak_folders": self.peak_folders,
                "peak_at_s": round(self.peak_at_s, 1), "samples": self.samples,
                "interval_s": self.interval_s}

    def line(self) -> str:
        return (f"peak /tmp footprint: {mib(self.peak)} in {self.peak_folders} folder(s), "
                f"{self.peak_at_s:.0f} s into the run (sampled every {self.interval_s:g} s)")
