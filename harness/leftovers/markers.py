"""Owner markers: which process, and which run, made a folder outside the report; whether they
live; and where the marked folders are (one level under /tmp, or listed in the index).

Every such folder (runtime homes `/tmp/bxc-*`, a conformance target's `/tmp/chaos-*`, a private
dockerd's root, the loopback registry's folder) holds MARKER: the pid and start time of the
process that made it (its owner) and of the run it belongs to (the gate, soak, ... that
started that process). Folders outside /tmp are also listed in the index (`<cache>/owned/`).

Our own rather than pid or lock files: a marker names a run as well as its owner, and tells a
reused pid or a reboot from the owner (start time, boot id), which a pid file cannot.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from harness.common.paths import cache_root

MARKER = ".boxlite-chaos-owner.json"
# Environment variables every process a run starts inherits. Not BOXLITE_*: the runtime host
# drops those from its children's environment.
OWNER_ENV = "BXC_OWNER"
RUN_ENV = "BXC_RUN"
# Where a run makes its short-lived folders (runtime homes): /tmp, or $BOXLITE_CHAOS_TMP.
TMP_ENV = "BOXLITE_CHAOS_TMP"


def tmp_root() -> Path:
    return Path(os.environ.get(TMP_ENV) or "/tmp")


def roots() -> tuple[Path, ...]:
    """Where the sweep looks for marked folders (one level down), besides the index."""
    return (tmp_root(),)


# Folders a run of ours makes directly under /tmp, by name (for the "left alone" count of
# markerless folders, e.g. from a harness that predates markers).
OUR_PREFIXES = ("bxc-", "chaos-")


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def index_dir() -> Path:
    return cache_root() / "owned"


# -- identities -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Owner:
    """A process by pid and start time: `token` is how markers and environments carry it."""

    pid: int
    create_time: float

    @property
    def token(self) -> str:
        return f"{self.pid}:{self.create_time!r}"

    @classmethod
    def parse(cls, token: str | None) -> Owner | None:
        try:
            pid, ct = str(token).split(":", 1)
            return cls(int(pid), float(ct))
        except (ValueError, AttributeError):
            return None

    @classmethod
    def of(cls, pid: int) -> Owner | None:
        try:
            return cls(pid, psutil.Process(pid).create_time())
        except psutil.Error:
            return None

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "create_time": self.create_time}


_me: Owner | None = None


def me() -> Owner:
    global _me
    if _me is None or _me.pid != os.getpid():          # forked: another process
        _me = Owner.of(os.getpid())
        assert _me is not None
    return _me


def claim_run() -> Owner:
    """This process starts a run (a CLI job, a pytest controller): its children inherit the
    run's identity."""
    os.environ[RUN_ENV] = me().token
    os.environ[OWNER_ENV] = me().token
    return me()


def run_owner() -> Owner:
    return Owner.parse(os.environ.get(RUN_ENV)) or claim_run()


def alive(owner: Owner) -> bool | None:
    """True: that very process runs. False: it is gone (a zombie has ended). None: cannot tell
    (not allowed to look): never swept."""
    try:
        p = psutil.Process(owner.pid)
        return p.create_time() == owner.create_time and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return None


# -- markers --------------------------------------------------------------------------------

def mark(folder: Path, kind: str, *, remove: Iterable[str] = (".",),
         cgroups: Iterable[str] = (), owner: Owner | None = None, run: Owner | None = None,
         **note: Any) -> Path:
    """Write `folder`'s owner marker (atomically: a half-written one is never read) and list
    it in the index. `remove`: what a sweep removes, relative to the folder ("." for all of
    it); `cgroups`: folders under /sys/fs/cgroup a sweep may rmdir (when empty); `note`:
    anything a person, or the sweep (`workdir`: where a scenario's artifacts go), needs.
    The owner is this process and the run its run, unless given (tests)."""
    if owner is None:
        owner = me()
        os.environ[OWNER_ENV] = owner.token     # what this process starts carries it
    run = run or run_owner()
    folder = Path(folder).resolve()
    try:
        cmd = " ".join(psutil.Process().cmdline())[:300]
    except psutil.Error:
        cmd = ""
    data = {"owner": {**owner.to_json(), "cmd": cmd}, "run": run.to_json(),
            "boot_id": boot_id(), "kind": kind, "path": str(folder),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "remove": list(remove), "cgroups": [str(c) for c in cgroups], "note": note}
    _write_atomic(folder / MARKER, json.dumps(data, indent=1, default=str))
    if folder.parent in roots():
        return folder / MARKER          # found by scanning its root
    try:
        idx = index_dir()
        idx.mkdir(parents=True, exist_ok=True)
        _write_atomic(idx / _index_name(folder), json.dumps({"path": str(folder)}))
    except OSError:
        pass            # the index only finds folders outside /tmp; the marker is what counts
    return folder / MARKER


def release(folder: Path) -> None:
    """The owner is done with `folder` (removed it, or left it clean in the report): its
    marker and index entry go."""
    folder = Path(folder).resolve()
    for path in (folder / MARKER, index_dir() / _index_name(folder)):
        with contextlib.suppress(OSError):
            path.unlink()


def _index_name(folder: Path) -> str:
    return hashlib.sha256(str(folder).encode()).hexdigest()[:24] + ".json"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The folder's marker, or None when it has none or it cannot be read as one."""
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("owner"), dict):
        return None
    return data


def owner_of(data: dict[str, Any], key: str) -> Owner | None:
    """The process a marker names under `key` ("owner" or "run"); None when it names none."""
    raw = data.get(key) or {}
    try:
        return Owner(int(raw["pid"]), float(raw["create_time"]))
    except (KeyError, TypeError, ValueError):
        return None


def folders_under(under: Iterable[Path]) -> Iterator[os.DirEntry[str]]:
    """Every folder directly under each of `under` (links not followed); a root or entry
    that cannot be read is skipped."""
    for root in under:
        try:
            entries = list(os.scandir(root))
        except OSError:
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    yield e
            except OSError:
                continue


def marked_folders(under: Iterable[Path] | None = None, index: Path | None = None
                   ) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every folder directly under `under` (default: roots()) with a marker, then every
    indexed folder whose marker is still there and names it."""
    seen: set[Path] = set()
    for e in folders_under(roots() if under is None else under):
        path = Path(e.path)
        data = read_marker(path)
        if data is not None:
            seen.add(path)
            yield path, data
    index = index_dir() if index is None else index
    try:
        entries = sorted(index.glob("*.json"))
    except OSError:
        entries = []
    for entry in entries:
        try:
            path = Path(json.loads(entry.read_text())["path"])
        except (OSError, ValueError, KeyError, TypeError):
            entry.unlink(missing_ok=True)
            continue
        if path in seen:
            continue
        seen.add(path)
        data = read_marker(path)
        if data is None or Path(data.get("path", "")) != path:
            entry.unlink(missing_ok=True)     # gone, moved or no longer ours: nothing to do
            continue
        yield path, data


def unmarked_lookalikes(under: Iterable[Path] | None = None) -> list[Path]:
    """Folders named like ours with no marker: never touched, only counted."""
    out = []
    for root in roots() if under is None else under:
        with contextlib.suppress(OSError):
            for e in os.scandir(root):
                if (e.name.startswith(OUR_PREFIXES) and e.is_dir(follow_symlinks=False)
                        and read_marker(Path(e.path)) is None):
                    out.append(Path(e.path))
    return sorted(out)

