"""The run-folder side of a case (`Workspace.materialize` turns symbolic paths, images and
ports into real things) and what the runtime said about a box: log lines, shim exits, configs.
"""

from __future__ import annotations

import copy
import re
import shutil
import socket
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.jobs.hostile.layouts import build_image
from harness.jobs.hostile.strategies import HostileCase
from harness.observe.records import store_path

# -- the run-folder side of a case ------------------------------------------------------------

@dataclass
class Resolved:
    """A case made real: options and name as create() gets them, and what to undo."""

    options: dict[str, Any]
    name: str | None
    markers: list[str] = field(default_factory=list)      # planted escape markers
    marker_dir: Path | None = None
    sockets: list[socket.socket] = field(default_factory=list)

    def close(self) -> None:
        for s in self.sockets:
            s.close()
        self.sockets.clear()


class Workspace:
    """Materializes cases under `root` (the scenario's folder): volume folders and files, broken
    images built from `base_image`, host ports held by a listening socket."""

    def __init__(self, root: Path, base_image: Path) -> None:
        self.root = root
        self.base_image = base_image
        self.count = 0

    def materialize(self, case: HostileCase, base_options: dict[str, Any]) -> Resolved:
        self.count += 1
        opts = copy.deepcopy(base_options)
        opts.update(copy.deepcopy(case.options))
        res = Resolved(opts, case.name)
        if "volumes" in opts:
            opts["volumes"] = [[self.path(v[0]), *v[1:]] for v in opts["volumes"]]
        if "ports" in opts:
            opts["ports"] = [[self.bound(res) if p[0] == "@bound" else p[0], *p[1:]]
                             for p in opts["ports"]]
        if str(opts.get("rootfs_path", "")).startswith("@image/"):
            opts["rootfs_path"] = self.image(opts["rootfs_path"], res)
        return res

    def path(self, token: Any) -> Any:
        if not isinstance(token, str) or not token.startswith("@ws/"):
            return token
        what, _, rest = token[len("@ws/"):].partition("/")
        path = self.root / "volumes" / what / rest
        if what == "dir":
            path.mkdir(parents=True, exist_ok=True)
        elif what == "file":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("a file where a folder belongs\n")
        elif what == "missing":
            shutil.rmtree(path, ignore_errors=True)
        else:
            raise ValueError(f"unknown workspace token {token!r}")
        return str(path)

    def bound(self, res: Resolved) -> int:
        """A host port held by a listening socket (kept in `res` until it closes). On
        loopback only: a listener on 127.0.0.1 collides with any bind of the same port,
        all-interfaces included, and nothing of ours listens beyond loopback."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        res.sockets.append(sock)
        return sock.getsockname()[1]

    def image(self, token: str, res: Resolved) -> str:
        _, variant, seed, where = token.split("/")
        dest = self.root / "images" / f"{self.count:04d}-{variant}"
        if variant == "layer_escapes":
            res.marker_dir = self.root / "images" / f"{self.count:04d}-markers"
            res.marker_dir.mkdir(parents=True, exist_ok=True)
        res.markers = build_image(self.base_image, dest, variant, int(seed), float(where),
                                  res.marker_dir)
        return str(dest)


def unpacked_by_runtime(home: Path) -> Callable[[Path], bool]:
    """Whether a path is inside a layer's own unpacked folder (`.../sha256-<digest>/...`
    under the home's images) or the runtime's scratch folder: where a layer's files belong."""
    def inside(p: Path) -> bool:
        if p.is_relative_to(home / "tmp"):
            return True
        return p.is_relative_to(home / "images") and any(
            a.name.startswith("sha256-") for a in p.parents)
    return inside


def escaped_markers(markers: Iterable[str], roots: Sequence[Path],
                    contained: Callable[[Path], bool]) -> list[str]:
    """Marker files found under any of `roots` (recursively) or beside any of their ancestors,
    except where `contained` says a layer's files belong."""
    names = set(markers)
    if not names:
        return []
    found = {str(p) for root in roots for p in root.rglob("hostile-escape-*")
             if p.name in names and not contained(p)}
    found |= {str(a / n) for root in roots for a in root.parents for n in names
              if (a / n).exists()}
    return sorted(found)


# -- what the runtime said about a box --------------------------------------------------------

class LogCursor:
    """The runtime log text appended since the cursor was made (or last read)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.offsets = {p: p.stat().st_size for p in self._files()}

    def _files(self) -> list[Path]:
        return sorted((self.home / "logs").glob("boxlite.log*"))

    def read(self) -> str:
        out = []
        for p in self._files():
            with open(p, "rb") as fh:
                fh.seek(self.offsets.get(p, 0))
                data = fh.read()
            self.offsets[p] = self.offsets.get(p, 0) + len(data)
            out.append(data.decode(errors="replace"))
        return "".join(out)


_EXITED = re.compile(r"exited unexpectedly during startup pid=(\d+) exit_code=(-?\d+)")
_CRASH_BLOCK = re.compile(r"Box (\w+) failed to start(.*?)(?=\n\d{4}-\d\d-\d\dT|\Z)", re.S)


# A crash block names a fatal signal as "internal error (SIGABRT)" and may carry no exit code
# (0.10.8, memory_mib below 37): the status the runtime would report is 128 + the signal.
_SIGNAL_IN_BLOCK = re.compile(r"\((SIG[A-Z]+)\)")


def signal_exit_code(text: str) -> int | None:
    """128 + n for the first fatal signal named as `(SIGxxx)` in `text`, else None."""
    import signal as _signal
    m = _SIGNAL_IN_BLOCK.search(text or "")
    if not m:
        return None
    try:
        return 128 + int(_signal.Signals[m.group(1)])
    except KeyError:
        return None


def crash_block_logged(log: str, box: str) -> bool:
    """Whether the runtime has logged its crash block ("Box <id> failed to start") for `box`."""
    return any(m.group(1) == box for m in _CRASH_BLOCK.finditer(log))


def shim_exits(log: str, boxes: dict[str, int | None]) -> list[dict[str, Any]]:
    """The shim exits the runtime logged for `boxes` (box id → shim.pid, if known): exit code
    and the crash block's text. Parsed by field, since releases word the blocks differently.
    The crash block is keyed by box id, so a shim the harness never saw (it died before the
    first poll: load makes that likelier) is still found; a block that names only a signal
    gives 128 + n."""
    out = []
    by_pid = {pid: box for box, pid in boxes.items() if pid}
    for m in _EXITED.finditer(log):
        box = by_pid.get(int(m.group(1)))
        if box:
            out.append({"box": box, "pid": int(m.group(1)), "exit_code": int(m.group(2)),
                        "detail": ""})
    for m in _CRASH_BLOCK.finditer(log):
        if m.group(1) not in boxes:
            continue
        code = re.search(r"Exit code:\s*(-?\d+)", m.group(2))
        rec = next((e for e in out if e["box"] == m.group(1)), None)
        if rec is None:
            rec = {"box": m.group(1), "pid": boxes[m.group(1)], "exit_code": None, "detail": ""}
            out.append(rec)
        if code and rec["exit_code"] is None:
            rec["exit_code"] = int(code.group(1))
        if rec["exit_code"] is None:
            rec["exit_code"] = signal_exit_code(m.group(2).split("\n", 1)[0])
        rec["detail"] = m.group(2).strip()[:600]
    return out


def store_configs(home: Path) -> list[dict[str, Any]]:
    """Every box_config row's id and name, read-only."""
    con = sqlite3.connect(f"file:{store_path(home)}?mode=ro", uri=True, timeout=5.0)
    try:
        return [{"id": r[0], "name": r[1]} for r in
                con.execute("SELECT id, name FROM box_config").fetchall()]
    finally:
        con.close()
