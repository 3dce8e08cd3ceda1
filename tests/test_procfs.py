"""The /proc reader under the process ledger: the values psutil gives for the same processes,
stat lines with hostile names, and the walk's answer to processes that die while it reads."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import psutil._pslinux
import pytest

from harness.common.wait import wait_for
from harness.observe import procfs
from harness.observe.procfs import ProcStat, ProcTree

# A real stat line (of cat), with the name swapped in by the tests below.
STAT = ("32282 ({}) R 32280 32280 11643 0 -1 4194304 102 0 0 0 0 0 0 0 20 0 7 0 1287522 "
        "3133440 410 18446744073709551615 94222707027968 94222707047849 140725617675424 0 0 0 "
        "0 0 0 0 0 0 17 0 0 0 0 0 0 94222707063856 94222707065472 94223557652480 "
        "140725617683169 140725617683189 140725617683189 140725617684459 0\n")


@pytest.mark.parametrize("comm", ["cat", "a b", "x) S 1 (y", ") Z 9 9 ", "((", "libkrun VM"])
def test_a_stat_line_is_parsed_whatever_the_name_holds(comm):
    st = procfs.parse_stat(32282, STAT.format(comm).encode())
    assert st == ProcStat(32282, comm, "running", 32280, 1287522, 7)


def test_a_name_that_is_not_utf8_reads_as_psutil_decodes_it():
    st = procfs.parse_stat(1, STAT.replace("{}", "a\xff").encode("latin-1"))
    assert st.comm == os.fsdecode(b"a\xff")


def test_the_state_letters_are_named_as_psutil_names_them():
    assert procfs.STATUSES == psutil._pslinux.PROC_STATUSES


def test_start_ticks_convert_to_psutils_create_time_exactly():
    # Equal as floats, not close: identities (pid, create_time) taken with psutil elsewhere
    # in the harness must find the ledger's records.
    me = procfs.read_stat(os.getpid())
    assert procfs.create_time(me.start_ticks, procfs.boot_time()) == \
        psutil.Process().create_time()
    assert procfs.boot_time() == psutil.boot_time()
    child = subprocess.Popen(["sleep", "30"])
    try:
        st = procfs.read_stat(child.pid)
        assert procfs.create_time(st.start_ticks, procfs.boot_time()) == \
            psutil.Process(child.pid).create_time()
    finally:
        child.kill()
        child.wait()


def test_a_gone_process_reads_as_none():
    p = subprocess.Popen(["true"])
    p.wait()
    assert procfs.read_stat(p.pid) is None
    assert procfs.read_argv(p.pid) is None


def test_command_lines_and_names_are_psutils(tmp_path):
    # A name over 15 characters: the kernel cuts it, psutil extends it from the command line.
    long_sleep = tmp_path / "a-sleep-with-a-long-name"
    shutil.copy("/bin/sleep", long_sleep)
    procs = [subprocess.Popen(["sleep", "30"]),
             subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "a b",
                               "", "x\ry", "z" * 20000]),
             subprocess.Popen([str(long_sleep), "30"])]
    try:
        for p in procs:
            # Popen returns once the child's exec closed its close-on-exec pipe, which the
            # kernel does before it lays out the new argv: for a moment the comm is new and
            # the command line empty (seen once in a loaded CI run), and both readers give
            # the cut comm. The comparison starts once the command line is there.
            wait_for(lambda pid=p.pid: procfs.read_argv(pid) or None, 10.0,
                     f"pid {p.pid}'s command line after its exec")
            ps = psutil.Process(p.pid)
            st = procfs.read_stat(p.pid)
            assert procfs.read_argv(p.pid) == ps.cmdline()
            assert procfs.name_of(st) == ps.name()
        assert procfs.name_of(procfs.read_stat(procs[2].pid)) == long_sleep.name
    finally:
        for p in procs:
            p.kill()
            p.wait()


@pytest.mark.parametrize("raw, argv", [
    (b"sleep\x0030\x00", ["sleep", "30"]),
    (b"a b c", ["a", "b", "c"]),                  # rewritten with spaces (setproctitle)
    (b"a b c\x00", ["a", "b", "c"]),              # ... and still NUL-terminated
    (b"a\x00\x00b\x00", ["a", "", "b"]),
    (b"", []),                                    # a zombie
])
def test_a_command_line_is_split_as_psutil_splits_it(tmp_path, raw, argv):
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cmdline").write_bytes(raw)
    assert procfs.read_argv(7, str(tmp_path)) == argv


@pytest.mark.parametrize("size", [4095 - procfs.READ_SLACK, 4096 - procfs.READ_SLACK, 4096,
                                  4097, 50000])
def test_files_longer_than_one_read_are_read_whole(tmp_path, size):
    (tmp_path / "f").write_bytes(b"7" * size)
    assert procfs._read(str(tmp_path / "f")) == b"7" * size


def test_a_long_children_list_is_read_whole(tmp_path):
    fake = FakeProc(tmp_path)
    fake.add(100, 1, kids=tuple(range(200, 2200)))
    for pid in range(200, 2200):
        fake.add(pid, 100)
    assert sorted(ProcTree(100, str(tmp_path), walk=True).list().procs) == \
        list(range(200, 2200))


def test_a_zombie_and_a_stopped_process_read_as_psutil_sees_them():
    zombie = subprocess.Popen(["true"])
    stopped = subprocess.Popen(["sleep", "30"])
    try:
        os.kill(stopped.pid, signal.SIGSTOP)
        wait_for(lambda: psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE and
                 psutil.Process(stopped.pid).status() == psutil.STATUS_STOPPED, 10,
                 "a zombie and a stopped child")
        for p in (zombie, stopped):
            assert procfs.read_stat(p.pid).status == psutil.Process(p.pid).status()
        assert procfs.read_argv(zombie.pid) == []
        assert procfs.name_of(procfs.read_stat(zombie.pid)) == "true"
    finally:
        stopped.kill()
        stopped.wait()
        zombie.wait()


# -- the tree -----------------------------------------------------------------------------

TREE = ("import subprocess, sys\n"
        "kids = [subprocess.Popen(['sleep', '30']) for _ in range(2)]\n"
        "zombie = subprocess.Popen(['true'])\n"    # left unreaped until stdin closes
        "print('up', flush=True)\n"
        "sys.stdin.read()\n"
        "for k in kids:\n"
        "    k.kill()\n"
        "for k in (*kids, zombie):\n"
        "    k.wait()\n")


@pytest.fixture
def tree():
    """A child with two sleeping children and a zombie one, under this process."""
    top = subprocess.Popen([sys.executable, "-c", TREE], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    assert top.stdout.readline() == "up\n"
    wait_for(lambda: len(psutil.Process(top.pid).children()) == 3 and any(
        c.status() == psutil.STATUS_ZOMBIE for c in psutil.Process(top.pid).children()),
        10, "the tree to be up")
    try:
        yield top
    finally:
        top.stdin.close()               # it kills and reaps its own children
        top.wait(timeout=10)


@pytest.mark.parametrize("walk", [True, False], ids=["children lists", "scan of /proc"])
def test_the_descendants_are_those_psutil_lists(tree, walk):
    mine = ProcTree(os.getpid(), walk=walk).list().procs
    ours = {p.pid: p for p in psutil.Process().children(recursive=True)}
    assert tree.pid in mine
    # Other tests' processes (xdist) may come and go: judge this test's tree.
    subtree = {tree.pid} | {c.pid for c in psutil.Process(tree.pid).children(recursive=True)}
    assert subtree <= set(mine) and len(subtree) == 4
    boot = procfs.boot_time()
    for pid in subtree:
        st, ps = mine[pid], ours[pid]
        assert (st.ppid, st.status, procfs.name_of(st)) == (ps.ppid(), ps.status(), ps.name())
        assert procfs.create_time(st.start_ticks, boot) == ps.create_time()


def test_the_kernel_without_children_lists_is_scanned(tmp_path):
    me, parent = os.getpid(), os.getppid()
    fake = FakeProc(tmp_path)
    fake.add(parent, 1, kids=(me,))
    fake.add(me, parent)
    assert procfs.has_children_files(str(tmp_path))
    # Lists that do not name this process under its parent are not trusted either.
    fake.kids(parent)
    assert not procfs.has_children_files(str(tmp_path))
    (tmp_path / str(me) / "task" / str(me) / "children").unlink()
    assert not procfs.has_children_files(str(tmp_path))
    assert not ProcTree(me, str(tmp_path)).walk
    assert procfs.has_children_files()


class FakeProc:
    """A /proc of stat files and children lists, changed by the tests mid-walk."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def add(self, pid: int, ppid: int, state: str = "S", kids: tuple[int, ...] = (),
            threads: tuple[int, ...] = ()) -> None:
        (self.root / str(pid)).mkdir(exist_ok=True)
        line = STAT.format("p").replace("32282", str(pid), 1).replace(" R 32280 ",
                                                                      f" {state} {ppid} ")
        (self.root / str(pid) / "stat").write_text(line)
        for tid in (pid, *threads):
            (self.root / str(pid) / "task" / str(tid)).mkdir(parents=True, exist_ok=True)
        self.kids(pid, *kids)

    def kids(self, pid: int, *kids: int) -> None:
        (self.root / str(pid) / "task" / str(pid) / "children").write_text(
            "".join(f"{k} " for k in kids))

    def remove(self, pid: int) -> None:
        shutil.rmtree(self.root / str(pid))


class RacingTree(ProcTree):
    """Runs `race` once, right after the `at`-th read of the root's children."""

    def __init__(self, root: int, proc: str, race, at: int = 1) -> None:
        super().__init__(root, proc, walk=True)
        self.race, self.at = race, at

    def children(self, pid: int, strict: bool = False) -> tuple[list[int], bool]:
        out = super().children(pid, strict)
        if pid == self.root:
            self.at -= 1
            if self.at == 0:
                self.race()
        return out


def test_a_parent_dying_mid_walk_does_not_hide_its_children(tmp_path):
    # The host dies after the harness's list was read: its shim moves to the harness (the
    # subreaper), whose list was read already. The walk sees the host newly dead and goes again.
    fake = FakeProc(tmp_path)
    fake.add(100, 1, kids=(200,))
    fake.add(200, 100, kids=(300,))
    fake.add(300, 200)

    def host_dies():
        fake.add(200, 100, state="Z")
        fake.add(300, 100)
        fake.kids(100, 200, 300)

    listing = RacingTree(100, str(tmp_path), host_dies).list()
    assert sorted(listing.procs) == [200, 300] and listing.walks == 2
    assert listing.procs[300].ppid == 100


def test_a_sibling_reaped_mid_read_does_not_hide_the_next(tmp_path):
    # The kernel lost its place in a list when a child it had printed was reaped, and skipped
    # the next one (201). The reaped one is gone when read: the walk goes again.
    fake = FakeProc(tmp_path)
    fake.add(100, 1, kids=(200,))
    fake.add(201, 100)

    def reaped():
        fake.kids(100, 201)         # 200 reaped: gone from the list and from /proc

    listing = RacingTree(100, str(tmp_path), reaped).list()
    assert sorted(listing.procs) == [201] and listing.walks == 2


def test_a_thread_gone_mid_read_walks_again(tmp_path):
    fake = FakeProc(tmp_path)
    fake.add(100, 1, kids=(200,))
    fake.add(200, 100, threads=(201,))      # thread 201 has no children file: it ended
    assert ProcTree(100, str(tmp_path), walk=True).list().walks == procfs.MAX_WALKS


def test_a_lasting_zombie_walks_again_once_only(tmp_path):
    fake = FakeProc(tmp_path)
    fake.add(100, 1, kids=(200,))
    fake.add(200, 100, state="Z")
    tree = ProcTree(100, str(tmp_path), walk=True)
    assert tree.list().walks == 2           # newly dead: it may have handed children over
    listing = tree.list()
    assert listing.walks == 1 and listing.procs[200].status == "zombie"


def test_a_process_seen_by_one_walk_is_listed(tmp_path):
    fake = FakeProc(tmp_path)
    fake.add(100, 1, kids=(200, 201))
    fake.add(200, 100)
    fake.add(201, 100, state="Z")           # newly dead: a second walk

    def gone():                             # 200 ends and is reaped before the second walk
        fake.remove(200)
        fake.kids(100, 201)

    listing = RacingTree(100, str(tmp_path), gone, at=2).list()
    assert sorted(listing.procs) == [200, 201] and listing.walks == 3
    assert listing.procs[200].status == "sleeping"


def test_an_unreadable_process_is_reported_not_dropped(tmp_path, monkeypatch):
    fake = FakeProc(tmp_path)
    fake.add(100, 1, kids=(200,))
    fake.add(200, 100, kids=(300,))
    fake.add(300, 200)
    read_stat = procfs.read_stat

    def denied(pid: int, proc: str = procfs.PROC) -> ProcStat | None:
        if pid == 200:
            raise PermissionError(13, "Permission denied")
        return read_stat(pid, proc)

    monkeypatch.setattr(procfs, "read_stat", denied)
    listing = ProcTree(100, str(tmp_path), walk=True).list()
    assert list(listing.unread) == [200] and "PermissionError" in listing.unread[200]
    assert sorted(listing.procs) == [300]      # its subtree is still walked


def test_a_gone_root_fails_the_listing(tmp_path):
    p = subprocess.Popen(["true"])
    p.wait()
    for walk in (True, False):
        with pytest.raises(OSError):
            ProcTree(p.pid, walk=walk).list()

