"""Fault points: the ordered steps an operation of the runtime passes, found from the runtime
itself, and a watcher that fires the moment a chosen step is seen (to land a fault *at* it).

A point is one of four kinds, each read from where the runtime leaves it:
  log    a line of the runtime's log (`<home>/logs/boxlite.log*`), normalised to its module
         and message (ids, paths, hashes, numbers, key=value fields stripped);
  store  a commit to the store: the WAL (`<home>/db/boxlite.db-wal`) grew;
  file   a file or folder created, renamed or removed in the home (paths normalised), found by
         polling (no inotify: a file created and removed or renamed within one poll is
         missed; the poll's interval is the resolution, POLL_S);
  proc   a runtime process (bwrap, or the shim, named 'libkrun VM' once its VM runs) spawned
         or gone among the host's descendants.
The same name seen again in one run is numbered (`#2`), so a list is a sequence of unique keys.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from harness.observe.processes import classify

# How often the recorder looks (seconds): log, WAL size, folders, processes. Measured cost of
# one look on a home with one box: well under 1 ms for the log and WAL, ~1-3 ms for the walk.
POLL_S = 0.005
KINDS = ("log", "store", "file", "proc")
# Folders walked for files, relative to the home, and how deep under each; the extracted image
# layers (`images/local/*/extracted/**`) are left out: hundreds of files, one point each would
# drown the rest, and their step is logged ("Creating copy-based mount").
WALK = (("", 1), ("db", 1), ("boxes", 3), ("images", 2), ("images/disk-images", 1),
        ("bases", 1), ("tmp", 1))
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+Z)\s+(\w+)\s+([\w:]+):\s?(.*)$")


# -- normalisation -------------------------------------------------------------------------
_SUBS: tuple[tuple[re.Pattern[str], str], ...] = (
    # An init task's name is the point (debug level: 'Executing task box_id=<id>
    # task=guest_connect'): it moves before the fields, which go.
    # Only there: the info-level lists' keys ('Task failed: ... task=guest_connect') stay.
    (re.compile(r"^(Executing task)((?:\s\w+=\S+)*?)\stask=(\w+)"), r"\1 \3\2"),
    (re.compile(r"\s\w+=.*$"), ""),                          # key=value fields, to the end
    (re.compile(r"(?:/[\w.@+-]+)+/?"), "<path>"),            # absolute paths
    (re.compile(r"\bsha256[:-][0-9a-f]{12,}\b"), "<digest>"),
    (re.compile(r"\b[0-9a-f]{12,}\b"), "<hex>"),
    # Box ids: 12 letters and digits, mixed case or with a digit (the recorder also swaps
    # the ids it knows before this runs).
    (re.compile(r"\b(?=[A-Za-z0-9]*\d)(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{8,}\b"), "<id>"),
    (re.compile(r"\b(?=[A-Za-z0-9]{1,11}[A-Z])(?=[A-Za-z0-9]*[a-z])[A-Za-z0-9]{12}\b"), "<id>"),
    (re.compile(r"BOXID"), "<id>"),
    (re.compile(r"\d+(?:\.\d+)?"), "#"),
    (re.compile(r"\{.*\}"), "{…}"),                           # Debug-printed structs
    (re.compile(r"\s+"), " "),
)


def normalise_message(message: str) -> str:
    """A log message without what changes from run to run: key=value fields (an init task's
    `task=` name excepted), paths, digests, hex ids, box ids, numbers and Debug-printed
    structs."""
    out = message.strip()
    for pattern, repl in _SUBS:
        out = pattern.sub(repl, out)
    return out.strip(" :,")


def parse_log_line(line: str, box_ids: Iterable[str] = ()) -> tuple[float, str, str] | None:
    """(UTC epoch seconds, module, normalised message) of one runtime log line, or None for
    a continuation line (an evidence block's fields, a console tail). `box_ids` are swapped
    for <id> first."""
    for b in box_ids:
        line = line.replace(b, "BOXID")         # a word, so a path around it stays one path
    m = _LOG_LINE.match(line)
    if not m:
        return None
    try:
        ts = datetime_epoch(m.group(1))
    except ValueError:
        return None
    return ts, m.group(3), normalise_message(m.group(4))


def datetime_epoch(stamp: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


_FILE_SUBS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\.tmp[\w]{6}"), "<tmp>"),
    (re.compile(r"\d{4}-\d\d-\d\d"), "<date>"),
    (re.compile(r"sha256-[0-9a-f]{64}"), "<digest>"),
    (re.compile(r"-r\d+"), "-r<size>"),
    (re.compile(r"(?<=bases/)[\w-]+(?=\.ext4)"), "<layer>"),
    (re.compile(r"\b[0-9a-f]{12,}\b"), "<hex>"),
    (re.compile(r"(?<=local/)[^/]+"), "<image>"),
    # A box folder of a box the run did not know (the one a clone or an import makes).
    (re.compile(r"(?<=boxes/)[A-Za-z0-9]{12}(?=/|$)"), "<new>"),
    # A shared base disk (a clone's or a snapshot's: bases/<random>.qcow2).
    (re.compile(r"(?<=bases/)[\w-]+(?=\.qcow2)"), "<base>"),
)


def normalise_path(rel: str, box_ids: Iterable[str] = ()) -> str:
    """A path relative to the home, with the run's box ids as <box>, another box's folder as
    <new> (a clone's, an import's) and temporary or hashed names replaced by what they are."""
    for b in box_ids:
        rel = rel.replace(b, "<box>")
    for pattern, repl in _FILE_SUBS:
        rel = pattern.sub(repl, rel)
    return rel


# -- points ----------------------------------------------------------------------------------
@dataclass
class Point:
    """One step an operation passed. `t` is on the monotonic clock: for a log point the
    line's own timestamp (microseconds), else when the recorder saw it (so up to POLL_S plus
    one look late). `key` is `kind:name` (numbered when the name repeats in a run)."""

    kind: str
    name: str
    t: float
    key: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "name": self.name}


def wal_mark(home: Path) -> int:
    """A number that changes with every commit to the store: the wal-index header's change
    counter (`iChange`, bytes 8-11 of `<home>/db/boxlite.db-shm`, which SQLite bumps on each
    write transaction; a WAL reused from its start after a checkpoint does not grow), else
    the WAL's size; 0 when neither is there."""
    db = home / "db"
    try:
        with open(db / "boxlite.db-shm", "rb") as fh:
            head = fh.read(12)
        if len(head) == 12:
            return int.from_bytes(head[8:12], "little") + 1
    except OSError:
        pass
    try:
        return (db / "boxlite.db-wal").stat().st_size
    except OSError:
        return 0


def _wall_to_mono() -> float:
    return time.time() - time.monotonic()


class Recorder:
    """Records the points of a home and a host's descendants on a thread, from `start()` to
    `stop()`; what existed before `start()` is the baseline, not a point.

    `pids` returns the processes whose descendants count (the host, which may change, as in a
    recovery where a new host starts). `on_point` is called on the recorder's thread for each
    new point, as soon as it is seen (the watcher of a fault uses it to signal at once)."""

    def __init__(self, home: Path, pids: Callable[[], Iterable[int]],
                 box_ids: Callable[[], Iterable[str]] = lambda: (),
                 on_point: Callable[[Point], None] | None = None,
                 interval_s: float = POLL_S) -> None:
        self.home = home
        self.pids = pids
        self.box_ids = box_ids
        self.on_point = on_point
        self.interval_s = interval_s
        self.points: list[Point] = []
        self.looks = 0
        self.look_s = 0.0
        self._counts: dict[str, int] = {}
        self._log_pos: dict[Path, int] = {}
        self._log_rest = ""
        self._wal = 0
        self._files: dict[str, int] = {}        # rel path -> inode
        self._procs: dict[tuple[int, float], str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- reading ---------------------------------------------------------------------------
    def _logs(self) -> list[tuple[float, str, str]]:
        out: list[tuple[float, str, str]] = []
        ids = list(self.box_ids())
        for f in sorted((self.home / "logs").glob("boxlite.log*")):
            pos = self._log_pos.get(f, 0)
            try:
                with open(f, "rb") as fh:
                    fh.seek(pos)
                    chunk = fh.read()
            except OSError:
                continue
            # Only whole lines: a line being written is read on the next look.
            cut = chunk.rfind(b"\n") + 1
            self._log_pos[f] = pos + cut
            for line in chunk[:cut].decode(errors="replace").splitlines():
                parsed = parse_log_line(line, ids)
                if parsed:
                    out.append(parsed)
        return out

    def _wal_size(self) -> int:
        return wal_mark(self.home)

    def _walk(self) -> dict[str, int]:
        found: dict[str, int] = {}

        def visit(d: Path, rel: str, depth: int) -> None:
            try:
                with os.scandir(d) as it:
                    for e in it:
                        r = f"{rel}/{e.name}" if rel else e.name
                        if r in ("logs", "db/boxlite.db-wal", "db/boxlite.db-shm"):
                            continue
                        try:
                            found[r] = e.inode()
                            if depth > 1 and e.is_dir(follow_symlinks=False) \
                                    and r not in ("images", "boxes", "images/disk-images",
                                                  "bases", "tmp", "db"):
                                visit(Path(e.path), r, depth - 1)
                        except OSError:
                            continue
            except OSError:
                return
        for sub, depth in WALK:
            visit(self.home / sub if sub else self.home, sub, depth)
        return found

    def _descendants(self) -> dict[tuple[int, float], str]:
        out: dict[tuple[int, float], str] = {}
        for pid in list(self.pids()):
            try:
                kids = psutil.Process(pid).children(recursive=True)
            except psutil.Error:
                continue
            for p in kids:
                try:
                    if p.status() == psutil.STATUS_ZOMBIE:
                        continue
                    kind = classify(p.name(), " ".join(p.cmdline()[:1]))
                    # The shim renames itself 'libkrun VM' once its VM runs: one process,
                    # whichever name a look catches first, so both are the shim.
                    if kind in ("shim", "vm", "bwrap"):
                        out[(p.pid, p.create_time())] = "bwrap" if kind == "bwrap" else "shim"
                except psutil.Error:
                    continue
        return out

    # -- points ----------------------------------------------------------------------------
    def _add(self, kind: str, name: str, t: float, **evidence: Any) -> None:
        n = self._counts.get(f"{kind}:{name}", 0) + 1
        self._counts[f"{kind}:{name}"] = n
        key = f"{kind}:{name}" + (f"#{n}" if n > 1 else "")
        p = Point(kind, name, t, key, evidence)
        with self._lock:
            self.points.append(p)
        if self.on_point is not None:
            self.on_point(p)

    def baseline(self) -> None:
        """What is there now is not a point: the log so far, the WAL's size, the files, the
        processes."""
        self._logs()
        self._wal = self._wal_size()
        self._files = self._walk()
        self._procs = self._descendants()

    def look(self) -> None:
        """One look at everything; new points are added in the order they happened where
        that is known (log lines by their timestamp), else in a fixed order of kinds."""
        t0 = time.monotonic()
        offset = _wall_to_mono()
        for ts, module, msg in self._logs():
            self._add("log", f"{module}: {msg}", ts - offset)
        wal = self._wal_size()
        if wal != self._wal and wal != 0:
            self._add("store", "commit", t0, mark=wal)
        self._wal = wal
        files = self._walk()
        ids = list(self.box_ids())
        by_inode = {ino: rel for rel, ino in self._files.items()}
        for rel in sorted(set(files) - set(self._files)):
            was = by_inode.get(files[rel])
            if was is not None and was not in files:
                self._add("file", f"rename {normalise_path(was, ids)} -> "
                                  f"{normalise_path(rel, ids)}", t0)
            else:
                self._add("file", f"create {normalise_path(rel, ids)}", t0)
        gone = set(self._files) - set(files)
        renamed = {by_inode.get(files[r]) for r in files}
        for rel in sorted(gone - renamed):
            # A removed tree is one point: its top, not every entry under it.
            if rel.rsplit("/", 1)[0] not in gone:
                self._add("file", f"remove {normalise_path(rel, ids)}", t0)
        self._files = files
        procs = self._descendants()
        for key in sorted(set(procs) - set(self._procs), key=lambda k: k[1]):
            self._add("proc", f"spawn {procs[key]}", t0, pid=key[0])
        for key in sorted(set(self._procs) - set(procs)):
            self._add("proc", f"exit {self._procs[key]}", t0, pid=key[0])
        self._procs = procs
        self.looks += 1
        self.look_s += time.monotonic() - t0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.look()
            self._stop.wait(self.interval_s)

    def start(self) -> Recorder:
        self.baseline()
        self._thread = threading.Thread(target=self._run, name="points-recorder", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Point]:
        """Stop looking (after one last look) and return the points seen, in order."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.look()
        return self.ordered()

    def ordered(self) -> list[Point]:
        with self._lock:
            return list(self.points)

    @property
    def mean_look_ms(self) -> float:
        return 1000 * self.look_s / self.looks if self.looks else 0.0


# -- lists, stability and releases -------------------------------------------------------------
def lcs(a: Sequence[str], b: Sequence[str]) -> list[str]:
    """The longest common subsequence of two key lists (what both runs passed in the same
    order)."""
    n, m = len(a), len(b)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            table[i][j] = (table[i + 1][j + 1] + 1 if a[i] == b[j]
                           else max(table[i + 1][j], table[i][j + 1]))
    out, i, j = [], 0, 0
    while i < n and j < m:
        if a[i] == b[j]:
            out.append(a[i])
            i, j = i + 1, j + 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return out


def merge_runs(runs: Sequence[Sequence[Point]]) -> list[dict[str, Any]]:
    """The point list of several fault-free runs of one operation: the keys every run passed
    in the same order are stable; any other key (missing from a run, or out of order) is kept
    at its place in the first run it appears in, marked `unstable` with why."""
    keys = [[p.key for p in run] for run in runs]
    common = keys[0]
    for other in keys[1:]:
        common = lcs(common, other)
    stable = set(common)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for run_no, run in enumerate(runs):
        for i, p in enumerate(run):
            if p.key in seen:
                continue
            seen.add(p.key)
            entry = p.to_json()
            if p.key not in stable:
                present = [n + 1 for n, ks in enumerate(keys) if p.key in ks]
                entry["unstable"] = ("out of order between runs" if len(present) == len(runs)
                                     else f"only in run(s) {present} of {len(runs)}")
            if run_no == 0:
                out.append(entry)
            else:
                # After the last point of this run that is already placed.
                prev = next((q.key for q in reversed(run[:i]) if q.key in seen - {p.key}),
                            None)
                at = next((k for k, e in enumerate(out) if e["key"] == prev), -1)
                out.insert(at + 1, entry)
    return out


def points_path(root: Path, version: str, operation: str) -> Path:
    return root / version / f"{operation}.json"


def save_points(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def load_points(path: Path) -> dict[str, Any]:
    """A committed point list. Raises FileNotFoundError, json.JSONDecodeError."""
    return json.loads(path.read_text())


def diff_points(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]
                ) -> dict[str, list[str]]:
    """What changed between two releases' lists of one operation: points new in `new`,
    points vanished from `old`, and points both have but in another order. Unstable points
    are compared like the rest and named as such."""
    a = [p["key"] for p in old]
    b = [p["key"] for p in new]
    both = lcs(a, b)
    flag = {p["key"]: " (unstable)" for p in [*old, *new] if p.get("unstable")}
    return {"new": [k + flag.get(k, "") for k in b if k not in set(a)],
            "vanished": [k + flag.get(k, "") for k in a if k not in set(b)],
            "moved": [k + flag.get(k, "") for k in b if k in set(a) and k not in set(both)]}


# -- landing a fault at a point --------------------------------------------------------------
@dataclass
class Landing:
    """Where a fault landed against its point: when the point's evidence happened (`t_point`,
    the log line's own time, else when seen), when it was seen, when the fault was sent (all
    monotonic seconds), and the points passed before the signal."""

    target: str
    t_point: float | None = None
    t_seen: float | None = None
    t_fault: float | None = None
    seen: list[str] = field(default_factory=list)

    @property
    def landed(self) -> bool:
        return self.t_fault is not None

    def figures(self, reference: Sequence[str]) -> dict[str, Any]:
        """How close it landed: seconds from the evidence to the fault, from being seen to
        the fault, and the overshoot (points after the target in `reference` already passed
        before the fault was sent)."""
        if not self.landed or self.t_point is None or self.t_seen is None:
            return {"landed": False}
        assert self.t_fault is not None
        after = set(reference[reference.index(self.target) + 1:]) \
            if self.target in reference else set()
        return {"landed": True,
                "delay_ms": round(1000 * (self.t_fault - self.t_point), 3),
                "seen_to_fault_ms": round(1000 * (self.t_fault - self.t_seen), 3),
                "overshoot": len([k for k in self.seen if k in after]),
                "overshot": [k for k in self.seen if k in after]}


class PointTrigger:
    """Calls `fire()` (a fault's inject) the first time the point `target` is seen, from the
    recorder's thread, and notes the moment; every point seen before the fault is kept for
    the overshoot. Pass `trigger.on_point` as the Recorder's `on_point`."""

    def __init__(self, target: str, fire: Callable[[], None]) -> None:
        self.landing = Landing(target)
        self.fire = fire
        self.error: str | None = None
        self.done = threading.Event()

    def on_point(self, p: Point) -> None:
        if self.landing.landed:
            # Seen after the fault: only a log line's own timestamp says it happened before
            # (the other kinds carry when a look saw them, so the overshoot is a lower bound
            # for them).
            if p.kind == "log" and p.t <= (self.landing.t_fault or 0):
                self.landing.seen.append(p.key)
            return
        self.landing.seen.append(p.key)
        if p.key != self.landing.target:
            return
        self.landing.t_point, self.landing.t_seen = p.t, time.monotonic()
        try:
            self.fire()
        except Exception as exc:  # noqa: BLE001 - a fault that cannot be sent is 'unknown'
            self.error = f"{type(exc).__name__}: {exc}"
            self.done.set()
            return
        self.landing.t_fault = time.monotonic()
        self.done.set()
