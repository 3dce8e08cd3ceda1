"""The sweep: what dead runs left in their marked folders (harness.leftovers.markers) goes: the
folders, their mounts and cgroups, and the processes provably theirs; `boxlite-chaos sweep`.

A folder is swept only when its marker says so: its owner is dead (gone, a zombie, or the pid
now names another process: the start time differs, or the machine rebooted) and so is its
run, unless the run itself is sweeping its own dead workers' folders. Nothing without a
readable marker is ever touched. A process is killed only when it refers to a swept folder
(command line or working directory) AND carries the owner's OWNER_ENV (inherited from the
owner: hosts, bwraps, dockerd, registries), or descends from a live process that does (a box's
VM, whose environment bwrap clears), or sits in one of the folder's marked cgroups; any other
process that refers to it is reported, never killed, and the folder stays while it runs.

Our own rather than a /tmp cleaner (tmpreaper, systemd-tmpfiles): those go by age, and would
remove a live run's folders; only the markers say whose a folder is and whether they live.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from harness.common.procs import Proc, kill_all
from harness.leftovers import sockets
from harness.leftovers.footprint import disk_usage, mib
from harness.leftovers.loops import detach_under
from harness.leftovers.markers import (
    Owner,
    alive,
    boot_id,
    marked_folders,
    owner_of,
    release,
    roots,
    unmarked_lookalikes,
)

# `boxlite-chaos` claims its run through this module (sweep.claim_run) before sweeping.
from harness.leftovers.markers import claim_run as claim_run
from harness.leftovers.mounts import mounts_under, unmount_under
from harness.leftovers.processes import (
    ProcInfo,
    cgroup_pids,
    environ_owner,
    list_processes,
    refers_to,
    rmdir_cgroups,
)

KILL_WAIT_S = 5.0


# -- the plan -------------------------------------------------------------------------------

@dataclass
class Leftover:
    """One marked folder and what the sweep decided about it."""

    path: Path
    kind: str
    owner: Owner | None
    run: Owner | None
    decision: str                       # sweep | keep
    why: str
    marker: dict[str, Any] = field(default_factory=dict)
    ours: list[ProcInfo] = field(default_factory=list)          # killed
    strangers: list[ProcInfo] = field(default_factory=list)     # refer to it; not provably ours
    size: int = 0
    done: dict[str, Any] = field(default_factory=dict)
    # Its marked cgroups that no live run's marker also names (a reused pid can make a dead
    # daemon's cgroup name a live one's): only these identify processes or get removed.
    cgroups: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "kind": self.kind, "decision": self.decision,
                "why": self.why, "owner": self.owner.to_json() if self.owner else None,
                "run": self.run.to_json() if self.run else None, "size": self.size,
                "processes_killed": [p.describe() for p in self.ours],
                "processes_left_alone": [p.describe() for p in self.strangers], **self.done}


Alive = Callable[[Owner], "bool | None"]


def decide(path: Path, data: dict[str, Any], *, is_alive: Alive = alive,
           this_boot: str | None = None, own_run: Owner | None = None,
           only_owner: Owner | None = None) -> Leftover:
    """Sweep or keep one marked folder, from its marker alone. `own_run`: the run that is
    sweeping its own workers' folders (their run is alive: it is the sweeper); `only_owner`:
    consider only the folders of that owner."""
    owner, run = owner_of(data, "owner"), owner_of(data, "run")
    left = Leftover(path, str(data.get("kind", "?")), owner, run, "keep", "", data)
    if owner is None:
        left.why = "its marker names no owner"
        return left
    if only_owner is not None and owner != only_owner:
        left.why = "not the owner being swept"
        return left
    if own_run is not None and run != own_run:
        left.why = "another run's"
        return left
    this_boot = boot_id() if this_boot is None else this_boot
    rebooted = bool(data.get("boot_id")) and bool(this_boot) and data["boot_id"] != this_boot
    if not rebooted:
        state = is_alive(owner)
        if state is None:
            left.why = f"cannot tell whether its owner (pid {owner.pid}) is alive"
            return left
        if state:
            left.why = f"its owner (pid {owner.pid}) is alive"
            return left
        if own_run is None and run is not None and run != owner:
            state = is_alive(run)
            if state is None or state:
                left.why = (f"its owner (pid {owner.pid}) is gone but its run (pid {run.pid}) "
                            "is alive: that run cleans up after its own")
                return left
    left.decision = "sweep"
    left.why = ("made before this machine's last boot" if rebooted
                else f"its owner (pid {owner.pid}) is gone")
    return left


def identify(left: Leftover, procs: list[ProcInfo],
             env_of: Callable[[ProcInfo], str | None] | None = None,
             in_cgroups: set[int] | None = None) -> None:
    """Split the processes that refer to a folder being swept into ours (killed) and strangers
    (reported). Ours: it, or a live ancestor, started with the owner's OWNER_ENV; or it sits
    in one of the folder's marked cgroups."""
    if left.owner is None:
        return
    token = left.owner.token
    env_of = env_of or (lambda p: environ_owner(p.pid, p.create_time))
    by_pid = {p.pid: p for p in procs}
    in_cgroups = cgroup_pids(left.cgroups) if in_cgroups is None else in_cgroups
    cache: dict[int, str | None] = {}

    def carries(p: ProcInfo) -> bool:
        seen = 0
        while p is not None and p.pid > 1 and seen < 64:
            if p.pid not in cache:
                cache[p.pid] = env_of(p)
            if cache[p.pid] == token:
                return True
            p, seen = by_pid.get(p.ppid), seen + 1     # type: ignore[assignment]
        return False

    for p in procs:
        if p.zombie or p.pid == os.getpid():
            continue
        cgroup_member = p.pid in in_cgroups
        if not (cgroup_member or refers_to(p, left.path)):
            continue
        (left.ours if cgroup_member or carries(p) else left.strangers).append(p)


def plan(*, under: Iterable[Path] | None = None, index: Path | None = None,
         own_run: Owner | None = None, only_owner: Owner | None = None,
         is_alive: Alive = alive, procs: list[ProcInfo] | None = None,
         env_of: Callable[[ProcInfo], str | None] | None = None) -> list[Leftover]:
    """What a sweep would do, folder by folder (nothing is changed)."""
    out = [decide(path, data, is_alive=is_alive, own_run=own_run, only_owner=only_owner)
           for path, data in marked_folders(under, index)]
    claimed = {c for x in out if x.decision == "keep" for c in x.marker.get("cgroups", [])}
    for x in out:
        x.cgroups = [c for c in x.marker.get("cgroups", []) if c not in claimed]
    if only_owner is not None or own_run is not None:
        out = [x for x in out if x.decision == "sweep"]
    if any(x.decision == "sweep" for x in out):
        procs = list_processes() if procs is None else procs
        for left in out:
            if left.decision == "sweep":
                identify(left, procs, env_of)
    return out


# -- doing it -------------------------------------------------------------------------------

def _kill(procs: list[ProcInfo]) -> list[dict[str, Any]]:
    """SIGCONT then SIGKILL each (pid and start time checked right before) and wait for them
    to end. Not reaped here: a sweeping subreaper reaps its adopted orphans itself."""
    return kill_all([Proc(p.pid, p.create_time, p.name) for p in procs], wait_s=KILL_WAIT_S)


def copy_home_artifacts(homes: Iterable[Path], dest: Path) -> list[str]:
    """Copy what a person needs to diagnose a scenario from its runtime homes (runtime log,
    shim stderr, box logs, the store) to dest/home<N>/; returns what could not be copied."""
    errors = []
    dest.mkdir(parents=True, exist_ok=True)
    for i, home in enumerate(sorted(homes)):
        out = dest / f"home{i + 1}"
        out.mkdir(exist_ok=True)
        try:
            os.listdir(home)
        except OSError:
            # A home on a storage fault's FUSE layer whose process ended (ENOTCONN): its
            # files are in the backing folder beside it (harness.faults.fuse).
            if home.with_name(home.name + ".backing").is_dir():
                home = home.with_name(home.name + ".backing")
        try:
            found = [*home.glob("logs/*"), *home.glob("boxes/*/shim.stderr"),
                     *home.glob("boxes/*/logs/*"), *home.glob("db/boxlite.db*")]
        except OSError as exc:
            errors.append(f"{home}: {exc.strerror or exc}")
            continue
        for src in found:
            rel = src.relative_to(home)
            try:
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, out / rel)
            except OSError as exc:
                errors.append(f"{src}: {exc.strerror or exc}")
    return errors


def _keep_evidence(left: Leftover) -> None:
    """A scenario's homes: copy its artifacts into its folder first, if that folder is there
    and has none yet (a worker that died never copied them)."""
    workdir = (left.marker.get("note") or {}).get("workdir")
    if not workdir or not Path(workdir).is_dir():
        return
    link = Path(workdir) / "homes"
    if link.is_symlink() and Path(os.readlink(link)) == left.path:
        link.unlink()                   # it would point at nothing
    if (Path(workdir) / "artifacts").exists():
        return
    homes = sorted(p for p in left.path.glob("home*") if p.is_dir())
    if homes:
        errors = copy_home_artifacts(homes, Path(workdir) / "artifacts")
        left.done["artifacts"] = str(Path(workdir) / "artifacts")
        if errors:
            left.done["artifact_errors"] = errors[:5]


def execute(left: Leftover, dry_run: bool = False,
            socket_root: Path | None = None) -> Leftover:
    """Kill ours, unmount, rmdir cgroups, copy a scenario's evidence, remove what the marker
    says and the runtime's socket entries (`socket_root`, default /tmp/bl-<uid>) of the boxes
    in it; keep the folder while a stranger uses it or a mount stays."""
    targets = [left.path if rel == "." else left.path / rel
               for rel in left.marker.get("remove", ["."])]
    targets = [t for t in targets if t == left.path or left.path in t.parents]
    if len(left.path.parts) < 3 or left.path in (*roots(), Path("/tmp"), Path.home()):
        targets = []                    # a marker that names / or /tmp itself: never
    left.size = sum(disk_usage(t) for t in targets)
    mounts = mounts_under(left.path)
    left.done["mounts"] = mounts
    links = sockets.into(targets, socket_root)
    if links:
        left.done["socket_entries"] = [str(e.path) for e in links]
    if dry_run:
        return left
    if left.ours:
        left.done["killed"] = _kill(left.ours)
    still = [p for p in left.strangers if _same(p)]
    if still:
        left.decision = "keep"
        left.why += f"; in use by {len(still)} process(es) not provably ours"
        return left
    if mounts:
        left.done["unmounted"] = unmount_under(left.path)
    # A storage fault's ext4 image on a loop device (harness.faults.storage): the unmount
    # detaches it (autoclear) unless it was lazy or never mounted.
    loops = detach_under(left.path)
    if loops:
        left.done["loops_detached"] = loops
    if left.cgroups:
        left.done["cgroups"] = rmdir_cgroups(left.cgroups)
    if mounts_under(left.path):
        left.decision = "keep"
        left.why += "; a mount under it could not be undone"
        return left
    if left.kind in ("homes", "boxlite-target"):
        _keep_evidence(left)
    if links:
        left.done["socket_entries_removed"] = sockets.remove(links)
    errors = []
    for t in targets:
        if t.is_symlink() or not t.exists():
            continue
        shutil.rmtree(t, onerror=lambda _f, p, e: errors.append(f"{p}: {e[1]}"))
    if errors:
        left.done["remove_errors"] = errors[:5]
    if not left.path.exists() or left.path not in targets:
        release(left.path)
    return left


def _same(p: ProcInfo) -> bool:
    try:
        q = psutil.Process(p.pid)
        return q.create_time() == p.create_time and q.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class SweepReport:
    swept: list[Leftover]
    kept: list[Leftover]
    lookalikes: list[Path]
    dry_run: bool
    # The runtime's socket links of our boxes whose folder was already gone.
    socket_links: list[str] = field(default_factory=list)

    @property
    def freed(self) -> int:
        return sum(x.size for x in self.swept)

    def lines(self, verbose: bool = True) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        out = []
        for x in self.swept:
            parts = x.marker.get("remove", ["."])
            what = (f"{x.path}" if parts == ["."] else f"{', '.join(parts)} of {x.path}") \
                + f" ({x.kind}, {mib(x.size)})"
            extra = []
            if x.ours:
                extra.append(f"{'would kill' if self.dry_run else 'killed'} "
                             + ", ".join(f"{p.name} {p.pid}" for p in x.ours))
            if x.done.get("mounts"):
                extra.append(f"{len(x.done['mounts'])} mount(s)")
            out.append(f"  {verb} {what}: {x.why}" + (f"; {'; '.join(extra)}" if extra else ""))
        if self.socket_links:
            out.append(f"  {verb} {len(self.socket_links)} socket link(s) into folders of ours "
                       "already gone (" + ", ".join(self.socket_links[:4])
                       + (" ..." if len(self.socket_links) > 4 else "") + ")")
        for x in self.kept:
            if verbose or x.strangers:
                out.append(f"  kept {x.path} ({x.kind}): {x.why}")
            for p in x.strangers:
                out.append(f"    left alone: pid {p.pid} {p.name} ({p.cmd[:100]})")
        if verbose and self.lookalikes:
            out.append(f"  left alone, no owner marker: {len(self.lookalikes)} folder(s) "
                       "named like ours (" + ", ".join(map(str, self.lookalikes[:4]))
                       + (" ..." if len(self.lookalikes) > 4 else "") + ")")
        return out

    def headline(self) -> str:
        verb = "would free" if self.dry_run else "freed"
        return (f"sweep: {len(self.swept)} folder(s) of dead runs, {verb} {mib(self.freed)}; "
                f"{len(self.kept)} kept")

    def to_json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "freed": self.freed,
                "swept": [x.to_json() for x in self.swept],
                "kept": [x.to_json() for x in self.kept],
                "lookalikes": [str(p) for p in self.lookalikes],
                "socket_links": self.socket_links}


def sweep(*, dry_run: bool = False, under: Iterable[Path] | None = None,
          index: Path | None = None,
          own_run: Owner | None = None, only_owner: Owner | None = None,
          is_alive: Alive = alive, socket_root: Path | None = None) -> SweepReport:
    """Plan and (unless `dry_run`) do it. Never raises for one folder's trouble: it is said.
    `socket_root`: the runtime's socket entries (default /tmp/bl-<uid>)."""
    under = roots() if under is None else tuple(under)
    swept, kept = [], []
    for left in plan(under=under, index=index, own_run=own_run, only_owner=only_owner,
                     is_alive=is_alive):
        if left.decision == "sweep":
            try:
                execute(left, dry_run, socket_root)
            except OSError as exc:
                left.decision, left.why = "keep", f"{left.why}; {exc}"
        (swept if left.decision == "sweep" else kept).append(left)
    looks = [] if own_run or only_owner else unmarked_lookalikes(under)
    gone = [] if own_run or only_owner else sockets.dangling_ours(socket_root, under)
    links = [str(e.path) for e in gone] if dry_run else sockets.remove(gone)
    return SweepReport(swept, kept, looks, dry_run, links)


_swept_at_start = False


def sweep_at_start(say: Callable[[str], None] = print) -> SweepReport | None:
    """Once per process, at the start of a run: sweep what dead runs left, say what was freed."""
    global _swept_at_start
    if _swept_at_start:
        return None
    _swept_at_start = True
    try:
        rep = sweep()
    except (OSError, psutil.Error) as exc:
        say(f"boxlite-chaos: sweep at start failed: {exc}")
        return None
    if rep.swept or any(x.strangers for x in rep.kept):
        say(f"boxlite-chaos {rep.headline()}")
        for line in rep.lines(verbose=False):
            say(line)
    return rep

# -- command line ---------------------------------------------------------------------------

def cmd_sweep(args: argparse.Namespace) -> int:
    rep = sweep(dry_run=args.dry_run)
    print(rep.headline())
    for line in rep.lines():
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(rep.to_json(), indent=1, default=str))
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("sweep", help="remove what dead runs left (homes, dockerd and registry "
                                     "folders, their mounts, cgroups and processes)")
    p.add_argument("--dry-run", action="store_true", help="say what would go; change nothing")
    p.add_argument("--json", metavar="PATH", help="also write what was found as JSON")
    p.set_defaults(fn=cmd_sweep)
