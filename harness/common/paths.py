"""Where the harness keeps its caches, and a cross-process lock for creating them."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

# The checkout: fixtures/, scenarios/ and reports/ are found from here.
PROJECT = Path(__file__).resolve().parents[2]


def cache_root() -> Path:
    """The per-user cache: $BOXLITE_CHAOS_CACHE, else $XDG_CACHE_HOME/boxlite-chaos."""
    env = os.environ.get("BOXLITE_CHAOS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "boxlite-chaos"


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `lock_path` (shared safely by xdist workers)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
