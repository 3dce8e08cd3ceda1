"""Reading processes straight from /proc for the process ledger, which samples every 0.1 s:
one stat read per descendant, the tree walked down from its root, values equal to psutil's.

psutil's `children(recursive=True)` reads the stat file of every process on the machine and
then builds an object per descendant that reads it (and /proc/stat) again: about 4 ms per
sample on an otherwise idle 150-process machine. Walking the kernel's per-thread children
lists reads only the tree under the root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import NamedTuple

PROC = "/proc"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Names of the state letters in /proc/<pid>/stat, as psutil gives them (psutil._pslinux).
STATUSES = {"R": "running", "S": "sleeping", "D": "disk-sleep", "T": "stopped",
            "t": "tracing-stop", "Z": "zombie", "X": "dead", "x": "dead", "K": "wake-kill",
            "W": "waking", "I": "idle", "P": "parked"}
# The kernel keeps 15 characters of a process name (comm); psutil then takes the name from
# the command line when it extends them.
COMM_LEN = 15
# Walks of one listing at most, when processes die during it (see ProcTree.list).
MAX_WALKS = 3
GONE = (FileNotFoundError, ProcessLookupError)
READ_SIZE = 4096
READ_SLACK = 128


class ProcStat(NamedTuple):
    """What /proc/<pid>/stat says about a process, in psutil's words."""
    pid: int
    comm: str               # the kernel's name, at most 15 characters
    status: str             # as psutil's status(): "running", "sleeping", "zombie", ...
    ppid: int
    start_ticks: int        # clock ticks from boot to the process's start: its identity
    threads: int


def _read(path: str) -> bytes:
    """The whole file: one read for a stat line, a short children list or command line. A
    read that stops over READ_SLACK bytes short was the end: the kernel fills it with whole
    records (a child's pid and a space; a stat line is one, under 1.5 KiB) or, for a command
    line, with all there is."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, READ_SIZE)
        if len(data) <= READ_SIZE - READ_SLACK:
            return data
        chunks = [data]
        while chunk := os.read(fd, READ_SIZE):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def parse_stat(pid: int, data: bytes) -> ProcStat:
    # The name is in parentheses and may itself hold spaces and ") ": it ends at the last ')'.
    rpar = data.rfind(b")")
    fields = data[rpar + 2:].split(None, 20)      # state, ppid, ... starttime is the 20th
    return ProcStat(pid, os.fsdecode(data[data.find(b"(") + 1:rpar]),
                    STATUSES.get(fields[0].decode(), "?"), int(fields[1]), int(fields[19]),
                    int(fields[17]))


def read_stat(pid: int, proc: str = PROC) -> ProcStat | None:
    """The process's stat; None when it is gone. PermissionError is left to the caller."""
    try:
        return parse_stat(pid, _read(f"{proc}/{pid}/stat"))
    except GONE:
        return None


def read_argv(pid: int, proc: str = PROC) -> list[str] | None:
    """The command line as psutil's `cmdline()` splits it; [] for a zombie or a kernel
    thread, None when the process is gone or cannot be read."""
    try:
        data = os.fsdecode(_read(f"{proc}/{pid}/cmdline"))
    except OSError:
        return None
    if not data:
        return []
    if "\r" in data:                     # psutil reads it as text: universal newlines
        data = data.replace("\r\n", "\n").replace("\r", "\n")
    # NUL-separated, unless the process rewrote it with spaces (setproctitle): as psutil.
    sep = "\x00" if data.endswith("\x00") else " "
    if data.endswith(sep):
        data = data[:-1]
    argv = data.split(sep)
    if sep == "\x00" and len(argv) == 1 and " " in data:
        argv = data.split(" ")
    return argv


def name_of(st: ProcStat, argv: list[str] | None = None, proc: str = PROC) -> str:
    """psutil's `name()`: the comm, or the command's base name when the comm (cut at 15
    characters) begins it. Reads the command line only for a name that long."""
    if len(st.comm) < COMM_LEN:
        return st.comm
    if argv is None:
        argv = read_argv(st.pid, proc)
    if argv:
        extended = os.path.basename(argv[0])
        if extended.startswith(st.comm):
            return extended
    return st.comm


def boot_time(proc: str = PROC) -> float:
    """psutil's `boot_time()`: whole seconds, from /proc/stat, as the clock says now."""
    with open(f"{proc}/stat", "rb") as fh:
        for line in fh:
            if line.startswith(b"btime"):
                return float(line.split()[1])
    raise RuntimeError(f"no btime line in {proc}/stat")


def create_time(start_ticks: int, boot: float) -> float:
    """psutil's `create_time()`, bit for bit: the same operations in the same order."""
    return float(start_ticks) / CLK_TCK + boot


def has_children_files(proc: str = PROC) -> bool:
    """Whether the kernel lists children per thread (CONFIG_PROC_CHILDREN, in distribution
    kernels since Linux 4.2). Without it the file is absent, and a walk would see no one:
    so this process must also be in its parent's list, where the parent can be read."""
    me, parent = os.getpid(), os.getppid()
    if not os.path.exists(f"{proc}/{me}/task/{me}/children"):
        return False
    try:
        return parent == 0 or me in ProcTree(parent, proc, walk=True).children(parent)[0]
    except OSError:
        return True


@dataclass
class Listing:
    """One listing of the descendants of a root."""
    procs: dict[int, ProcStat] = field(default_factory=dict)
    unread: dict[int, str] = field(default_factory=dict)    # pid -> why it could not be read
    walks: int = 0


class ProcTree:
    """Lists the descendants of `root` with their stat, by walking the children lists under
    it, or by reading every process's stat where the kernel has no children lists."""

    def __init__(self, root: int, proc: str = PROC, walk: bool | None = None) -> None:
        self.root = root
        self.proc = proc
        self.walk = has_children_files(proc) if walk is None else walk
        self._dead: set[int] = set()    # pids already dead at the previous listing

    def list(self) -> Listing:
        """Descendants of the root. Raises OSError when the root's own children cannot be
        listed (it is gone, or /proc is not readable).

        The kernel's children lists are exact only for a frozen tree: a process that dies
        while the walk is under way may hide others from it. Its children move to a
        subreaper (the harness) or to another of its threads, maybe one already read; a
        sibling reaped while its parent's list is read can make the kernel skip the next
        one. Every such walk sees a process gone or newly dead (or a thread gone), and is then
        walked again (at most MAX_WALKS in all); a process seen in any walk is listed. A
        process started during the walk may be seen only at the next listing, as with a
        scan of /proc."""
        if not self.walk:
            return self._scan()
        out = Listing()
        dead = self._dead
        while out.walks < MAX_WALKS:
            out.walks += 1
            if not self._walk(out, dead):
                break
            dead = dead | {pid for pid, st in out.procs.items() if _dead(st)}
        self._dead = {pid for pid, st in out.procs.items() if _dead(st)}
        return out

    def _walk(self, out: Listing, dead: set[int]) -> bool:
        """One walk into `out`; True when a process died during it."""
        stack, whole = self.children(self.root, strict=True)
        raced = not whole
        done: set[int] = set()
        while stack:
            pid = stack.pop()
            if pid in done:
                continue
            done.add(pid)
            kids, whole = self.children(pid)
            # Read after its children: alive then, it was alive while they were read.
            try:
                st = read_stat(pid, self.proc)
            except PermissionError as exc:
                if pid not in out.procs:
                    out.unread[pid] = repr(exc)
                st = None
            else:
                if st is None or (_dead(st) and pid not in dead):
                    raced = True
                if st is not None:
                    out.procs[pid] = st
                    out.unread.pop(pid, None)
            raced = raced or not whole
            stack.extend(kids)
        return raced

    def children(self, pid: int, strict: bool = False) -> tuple[list[int], bool]:
        """Child pids of every thread of `pid` ([] when it is gone, unless `strict`), and
        whether every thread listed could be read (one that ended may have handed its
        children to a thread read before it)."""
        task = f"{self.proc}/{pid}/task"
        try:
            tids = os.listdir(task)
        except GONE:
            if strict:
                raise
            return [], True
        kids: list[int] = []
        whole = True
        for tid in tids:
            try:
                kids.extend(map(int, _read(f"{task}/{tid}/children").split()))
            except GONE:
                whole = False
        return kids, whole

    def _scan(self) -> Listing:
        """Every process's stat, then the tree from the root: as psutil's `children()`."""
        out = Listing(walks=1)
        stats: dict[int, ProcStat] = {}
        under: dict[int, list[int]] = {}
        for name in os.listdir(self.proc):
            if name.isdigit():
                st = read_stat(int(name), self.proc)     # PermissionError: listing failed
                if st is not None:
                    stats[st.pid] = st
                    under.setdefault(st.ppid, []).append(st.pid)
        if self.root not in stats:
            raise ProcessLookupError(f"the root {self.root} is gone")
        stack = list(under.get(self.root, ()))
        while stack:
            pid = stack.pop()
            if pid not in out.procs:
                out.procs[pid] = stats[pid]
                stack.extend(under.get(pid, ()))
        return out


def _dead(st: ProcStat) -> bool:
    return st.status in ("zombie", "dead")
