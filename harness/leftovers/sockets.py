"""The runtime's short socket entries outside its home, `/tmp/bl-<uid>/<box id>`: which are
ours, and their removal once the home they point into is gone.

0.10.x makes each a link to `<home>/boxes/<id>/sockets` and keeps it after a failed start
until the box is removed; a home we remove with its boxes in it leaves the link pointing at
nothing. An entry is ours only when it provably is: a link into one of our (marked) folders,
or a folder named for a box of one of them; or a dangling link whose target lay in a folder of
ours that is gone (named like ours, under the roots, `.../boxes/<its own name>/...`). Any other
entry is the runtime's for a box that is not ours, and is never touched.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.leftovers.markers import OUR_PREFIXES, roots


def socket_root(uid: int | None = None, tmp: Path = Path("/tmp")) -> Path:
    """Where the runtime puts its socket entries for the user `uid` (default: ours)."""
    return tmp / f"bl-{os.getuid() if uid is None else uid}"


@dataclass(frozen=True)
class SocketEntry:
    """One entry of the socket root: a link (`target` read, made absolute) or a folder."""

    path: Path
    target: Path | None             # None: a folder, not a link

    @property
    def box_id(self) -> str:
        return self.path.name

    def target_exists(self) -> bool:
        return self.target is not None and os.path.lexists(self.target)

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "box": self.box_id,
                "target": None if self.target is None else str(self.target),
                "target_exists": self.target_exists() if self.target is not None else None}


def entries(root: Path | None = None) -> list[SocketEntry]:
    """Every link or folder in the socket root (none when it cannot be read)."""
    root = socket_root() if root is None else root
    out = []
    try:
        listing = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return out
    for e in listing:
        try:
            if e.is_symlink():
                out.append(SocketEntry(Path(e.path), Path(os.path.normpath(
                    os.path.join(root, os.readlink(e.path))))))
            elif e.is_dir(follow_symlinks=False):
                out.append(SocketEntry(Path(e.path), None))
        except OSError:
            continue
    return out


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _is_dir(e: os.DirEntry[str]) -> bool:
    try:
        return e.is_dir(follow_symlinks=False)
    except OSError:
        return False


def box_ids_under(folder: Path) -> set[str]:
    """Names of the box folders in `folder` (a home: boxes/<id>) or in its homes
    (home*/boxes/<id>)."""
    ids = set()
    try:        # one by one: a dead FUSE layer's mount says ENOTCONN to a glob through it
        homes = [Path(e.path) for e in os.scandir(folder) if _is_dir(e)]
    except OSError:
        homes = []
    for boxes in (folder / "boxes", *(h / "boxes" for h in homes)):
        try:
            ids |= {e.name for e in os.scandir(boxes) if e.is_dir(follow_symlinks=False)}
        except OSError:
            continue
    return ids


def into(folders: Iterable[Path], root: Path | None = None) -> list[SocketEntry]:
    """The socket entries of boxes in `folders` (ours): links pointing at or under one of
    them, and folders named for a box found in one of them."""
    folders = [Path(os.path.abspath(f)) for f in folders]
    ids = set().union(*(box_ids_under(f) for f in folders)) if folders else set()
    return [e for e in entries(root)
            if (e.target is not None and any(_within(e.target, f) for f in folders))
            or (e.target is None and e.box_id in ids)]


def dangling_ours(root: Path | None = None, under: Iterable[Path] | None = None,
                  prefixes: tuple[str, ...] = OUR_PREFIXES) -> list[SocketEntry]:
    """Links that point at nothing, into a folder of ours that is gone: the target lay in
    `<one of under>/<our prefix>*/`, that folder no longer exists, and the target path is that
    of the link's own box (`.../boxes/<link name>/...`)."""
    under = roots() if under is None else tuple(under)
    out = []
    for e in entries(root):
        if e.target is None or e.target_exists():
            continue
        for base in under:
            base = Path(os.path.abspath(base))
            if base not in e.target.parents:
                continue
            top = base / e.target.relative_to(base).parts[0]
            parts = e.target.parts
            named = any(parts[i] == "boxes" and parts[i + 1] == e.box_id
                        for i in range(len(parts) - 1))
            if top.name.startswith(prefixes) and not os.path.lexists(top) and named:
                out.append(e)
                break
    return out


def remove(found: Iterable[SocketEntry]) -> list[str]:
    """Remove the entries (a link itself, never what it points at; a folder with what it
    holds); returns the paths removed."""
    removed = []
    for e in found:
        try:
            if e.target is not None:
                if os.path.islink(e.path):
                    os.unlink(e.path)
                    removed.append(str(e.path))
            elif e.path.is_dir() and not e.path.is_symlink():
                shutil.rmtree(e.path)
                removed.append(str(e.path))
        except OSError:
            continue
    return removed
