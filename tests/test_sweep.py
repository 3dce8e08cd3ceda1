"""The sweep's decisions (harness.leftovers.sweep): what a dead run left goes, with its sizes;
nothing of a live run, nothing without our marker, never a process that is not provably ours.

Folders live under tmp_path (the sweep is given it as its root) and the index under a
private cache; processes are real children of this test, marked or not."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness.common.wait import wait_for
from harness.leftovers import markers, processes, sweep
from harness.leftovers.footprint import footprint
from harness.leftovers.markers import MARKER, OWNER_ENV, Owner
from harness.leftovers.processes import ProcInfo


@pytest.fixture(autouse=True)
def private_index(tmp_path, monkeypatch):
    monkeypatch.setenv("BOXLITE_CHAOS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(OWNER_ENV, "")


def dead_owner() -> Owner:
    """A process that existed and is gone (reaped)."""
    proc = subprocess.Popen(["sleep", "30"])
    owner = Owner.of(proc.pid)
    proc.kill()
    proc.wait()
    assert owner is not None
    return owner


def folder(root: Path, name: str, owner: Owner, run: Owner | None = None,
           size: int = 0, **kw) -> Path:
    path = root / name
    path.mkdir(parents=True)
    if size:
        (path / "disk.img").write_bytes(b"x" * size)
    markers.mark(path, "homes", owner=owner, run=run or owner, **kw)
    return path


def run_sweep(root: Path, **kw) -> sweep.SweepReport:
    return sweep.sweep(under=[root], **kw)


# -- owners ---------------------------------------------------------------------------------

def test_alive_is_pid_and_start_time():
    me = markers.me()
    assert markers.alive(me) is True
    # The same pid with another start time: a recycled pid is another process.
    assert markers.alive(Owner(me.pid, me.create_time - 5.0)) is False
    assert markers.alive(dead_owner()) is False


def test_a_zombie_owner_is_dead():
    proc = subprocess.Popen(["true"])
    owner = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:          # not reaped: a zombie once it exits
        p = psutil.Process(proc.pid)
        owner = owner or Owner(proc.pid, p.create_time())
        if p.status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.01)
    try:
        assert markers.alive(owner) is False
    finally:
        proc.wait()


def test_owner_tokens_round_trip():
    me = markers.me()
    assert Owner.parse(me.token) == me
    assert Owner.parse("garbage") is None and Owner.parse(None) is None


# -- decisions ------------------------------------------------------------------------------

def decide(owner: Owner, run: Owner, alive: set[Owner], **kw) -> sweep.Leftover:
    data = {"owner": owner.to_json(), "run": run.to_json(), "kind": "homes",
            "boot_id": "boot-1"}
    return sweep.decide(Path("/tmp/bxc-x"), data, is_alive=lambda o: o in alive,
                        this_boot="boot-1", **kw)


OWNER, RUN = Owner(100, 1.0), Owner(50, 0.5)


def test_live_owner_is_kept():
    d = decide(OWNER, RUN, {OWNER, RUN})
    assert d.decision == "keep" and "alive" in d.why


def test_dead_owner_of_a_dead_run_is_swept():
    d = decide(OWNER, RUN, set())
    assert d.decision == "sweep" and "gone" in d.why


def test_dead_owner_of_a_live_run_is_that_runs_to_sweep():
    assert decide(OWNER, RUN, {RUN}).decision == "keep"
    # ... which it does itself, for its own dead workers only.
    assert decide(OWNER, RUN, {RUN}, own_run=RUN).decision == "sweep"
    assert decide(OWNER, RUN, set(), own_run=Owner(51, 0.5)).decision == "keep"


def test_only_the_owner_asked_for():
    assert decide(OWNER, RUN, set(), only_owner=Owner(101, 1.0)).decision == "keep"
    assert decide(OWNER, RUN, set(), only_owner=OWNER).decision == "sweep"


def test_unknown_liveness_is_kept():
    data = {"owner": OWNER.to_json(), "run": RUN.to_json(), "kind": "homes"}
    d = sweep.decide(Path("/tmp/x"), data, is_alive=lambda o: None, this_boot="b")
    assert d.decision == "keep" and "cannot tell" in d.why


def test_made_before_the_last_boot_is_swept_whatever_runs_now():
    data = {"owner": OWNER.to_json(), "run": RUN.to_json(), "kind": "homes",
            "boot_id": "old-boot"}
    d = sweep.decide(Path("/tmp/x"), data, is_alive=lambda o: True, this_boot="new-boot")
    assert d.decision == "sweep" and "boot" in d.why


def test_a_marker_without_owner_is_kept():
    d = sweep.decide(Path("/tmp/x"), {"owner": {}}, is_alive=lambda o: False, this_boot="b")
    assert d.decision == "keep"


# -- folders --------------------------------------------------------------------------------

def test_a_dead_runs_folder_goes_with_its_size(tmp_path):
    root = tmp_path / "tmp"
    gone = folder(root, "bxc-dead", dead_owner(), size=300_000)
    rep = run_sweep(root)
    assert not gone.exists()
    assert [x.path for x in rep.swept] == [gone]
    assert rep.swept[0].size >= 300_000 and rep.freed >= 300_000
    assert "removed" in rep.lines()[0] and "MiB" in rep.lines()[0]


def test_a_live_runs_folder_stays(tmp_path):
    root = tmp_path / "tmp"
    live = folder(root, "bxc-live", markers.me())
    rep = run_sweep(root)
    assert live.is_dir() and (live / MARKER).is_file()
    assert not rep.swept and "alive" in rep.kept[0].why


def test_a_reused_pid_does_not_keep_a_folder(tmp_path):
    root = tmp_path / "tmp"
    me = markers.me()
    stale = folder(root, "bxc-reused", Owner(me.pid, me.create_time - 100.0))
    run_sweep(root)
    assert not stale.exists()


def test_nothing_without_our_marker_is_touched(tmp_path):
    root = tmp_path / "tmp"
    bare = root / "bxc-nomarker"
    bare.mkdir(parents=True)
    (bare / "data").write_text("not ours to judge")
    torn = root / "bxc-torn"
    torn.mkdir()
    (torn / MARKER).write_text('{"owner": {"pid": 1')
    rep = run_sweep(root)
    assert (bare / "data").is_file() and torn.is_dir()
    assert not rep.swept and set(rep.lookalikes) == {bare, torn}
    assert "no owner marker" in "\n".join(rep.lines())


def test_dry_run_changes_nothing(tmp_path):
    root = tmp_path / "tmp"
    gone = folder(root, "bxc-dead", dead_owner(), size=10_000)
    rep = run_sweep(root, dry_run=True)
    assert gone.is_dir() and rep.swept and rep.swept[0].size >= 10_000
    assert rep.lines()[0].startswith("  would remove")


def test_a_folder_outside_the_roots_is_found_through_the_index(tmp_path):
    """A dockerd root kept with the report: only its bulk goes, the log stays."""
    report = tmp_path / "report" / "dockerd" / "1-1"
    report.mkdir(parents=True)
    (report / "data").mkdir()
    (report / "data" / "layer").write_bytes(b"y" * 5000)
    (report / "dockerd.log").write_text("log")
    markers.mark(report, "dockerd", remove=("data", "exec"), owner=dead_owner(),
               run=dead_owner())
    rep = run_sweep(tmp_path / "empty-root")
    assert [x.path for x in rep.swept] == [report.resolve()]
    assert not (report / "data").exists() and (report / "dockerd.log").is_file()
    assert not (report / MARKER).exists()
    assert not list(markers.index_dir().glob("*.json"))       # forgotten once done
    assert "data, exec of" in rep.lines()[0]


def test_a_stale_index_entry_is_dropped(tmp_path):
    gone = tmp_path / "elsewhere"
    gone.mkdir()
    markers.mark(gone, "registry", remove=(), owner=dead_owner(), run=dead_owner())
    (gone / MARKER).unlink()
    assert not run_sweep(tmp_path / "empty-root").swept
    assert not list(markers.index_dir().glob("*.json"))


def test_a_scenarios_artifacts_are_copied_before_its_homes_go(tmp_path):
    root, workdir = tmp_path / "tmp", tmp_path / "report" / "scenarios" / "s1"
    workdir.mkdir(parents=True)
    homes = folder(root, "bxc-h", dead_owner(), workdir=str(workdir))
    (homes / "home1" / "logs").mkdir(parents=True)
    (homes / "home1" / "logs" / "boxlite.log").write_text("the runtime's own words")
    (workdir / "homes").symlink_to(homes)
    run_sweep(root)
    assert not homes.exists() and not (workdir / "homes").is_symlink()
    copied = workdir / "artifacts" / "home1" / "logs" / "boxlite.log"
    assert copied.read_text() == "the runtime's own words"


# -- processes ------------------------------------------------------------------------------

def spawn(cwd: Path, owner_token: str | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != OWNER_ENV}
    if owner_token:
        env[OWNER_ENV] = owner_token
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            cwd=cwd, env=env)
    # Popen returns at the exec's close-on-exec, before the kernel lays out the new
    # environment: /proc/PID/environ reads empty a moment longer, and the sweep would read
    # the process as a stranger.
    if owner_token:
        wait_for(lambda: _environ(proc.pid).get(OWNER_ENV) == owner_token, 10,
                 f"the environment of {proc.pid} to carry its owner")
    return proc


def _environ(pid: int) -> dict[str, str]:
    try:
        return psutil.Process(pid).environ()
    except psutil.Error:
        return {}


def test_a_process_of_the_dead_owner_is_killed_and_its_folder_goes(tmp_path):
    root, owner = tmp_path / "tmp", dead_owner()
    homes = folder(root, "bxc-proc", owner)
    proc = spawn(homes, owner.token)
    try:
        rep = run_sweep(root)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        assert [p.pid for p in rep.swept[0].ours] == [proc.pid]
        assert "killed" in rep.lines()[0]
        assert not homes.exists()
    finally:
        proc.kill()
        proc.wait()


def test_a_process_not_provably_ours_is_left_and_keeps_its_folder(tmp_path):
    root = tmp_path / "tmp"
    homes = folder(root, "bxc-stranger", dead_owner())
    proc = spawn(homes, Owner(1, 1.0).token)        # refers to it, but carries another owner
    try:
        rep = run_sweep(root)
        assert proc.poll() is None, "a process not provably ours was killed"
        assert homes.is_dir() and not rep.swept
        assert [p.pid for p in rep.kept[0].strangers] == [proc.pid]
        assert "left alone: pid" in "\n".join(rep.lines())
    finally:
        proc.kill()
        proc.wait()


def info(pid: int, ppid: int, cmd: str = "", cwd: str = "/") -> ProcInfo:
    return ProcInfo(pid, float(pid), ppid, f"p{pid}", cmd, cwd)


def test_identify_by_environment_ancestry_or_cgroup():
    owner = Owner(7, 7.0)
    left = sweep.Leftover(Path("/tmp/bxc-ab"), "homes", owner, owner, "sweep", "")
    procs = [info(10, 1, "host_main.py --home /tmp/bxc-ab/home1"),      # carries the owner
             info(11, 10, "bwrap --bind /tmp/bxc-ab/home1/boxes/x"),    # child of it
             info(12, 11, "/tmp/bxc-ab/home1/boxes/x/bin/boxlite-shim"),  # VM: clean env
             info(13, 1, "cat /tmp/bxc-ab/home1/logs/x"),               # someone else's
             info(14, 1, "ls /tmp/bxc-abc/home1"),                      # another folder
             info(15, 1, "sleep 3600")]                                 # in its cgroup
    env = {10: owner.token, 11: owner.token, 13: "99:1.0"}
    sweep.identify(left, procs, env_of=lambda p: env.get(p.pid), in_cgroups={15})
    assert sorted(p.pid for p in left.ours) == [10, 11, 12, 15]
    assert [p.pid for p in left.strangers] == [13]


def test_refers_to_is_a_whole_path():
    f = Path("/tmp/bxc-ab")
    assert processes.refers_to(info(1, 0, "x --home /tmp/bxc-ab/home1"), f)
    assert processes.refers_to(info(1, 0, "x", cwd="/tmp/bxc-ab"), f)
    assert processes.refers_to(info(1, 0, "x --root=/tmp/bxc-ab"), f)
    assert not processes.refers_to(info(1, 0, "x /tmp/bxc-abc/home1"), f)


# -- the run's footprint ----------------------------------------------------------------------

def test_footprint_counts_this_runs_folders_only(tmp_path):
    root, run, other = tmp_path / "tmp", dead_owner(), dead_owner()
    folder(root, "bxc-1", run, size=200_000)
    folder(root, "bxc-2", run, size=100_000)
    folder(root, "bxc-3", other, size=500_000)
    size, n = footprint(run, under=[root])
    assert n == 2 and 300_000 <= size < 500_000


def test_footprint_reads_an_unmarked_folder_again_once_it_changes(tmp_path):
    """The sampler's memory of unmarked folders: a settled one is skipped while unchanged,
    a marker written later is seen (it changes the folder's time), a folder too young to
    have settled is never remembered."""
    root, run = tmp_path / "tmp", dead_owner()
    old = root / "krun-empty-root-x"
    old.mkdir(parents=True)
    young = root / "bxc-young"
    young.mkdir()
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    unmarked: dict[str, int] = {}
    assert footprint(run, under=[root], unmarked=unmarked) == (0, 0)
    assert list(unmarked) == [str(old)]         # the young one may still get its marker
    (young / "disk.img").write_bytes(b"x" * 100_000)
    markers.mark(young, "homes", owner=run, run=run)
    (old / "disk.img").write_bytes(b"x" * 100_000)
    markers.mark(old, "homes", owner=run, run=run)
    size, n = footprint(run, under=[root], unmarked=unmarked)
    assert n == 2 and size >= 200_000


def test_marker_is_json_naming_owner_run_and_kind(tmp_path):
    path = tmp_path / "f"
    path.mkdir()
    markers.mark(path, "homes", scenario="s::t", workdir="/r/s")
    data = json.loads((path / MARKER).read_text())
    assert data["owner"]["pid"] == os.getpid() and data["kind"] == "homes"
    assert data["note"] == {"scenario": "s::t", "workdir": "/r/s"}
    assert os.environ[OWNER_ENV] == markers.me().token     # what it starts now carries it


def test_a_cgroup_a_live_run_also_names_is_not_the_dead_ones(tmp_path):
    """A reused pid can give a dead daemon's cgroup the name of a live one's: processes in it
    are not killed for the dead one, and it is not removed."""
    root, shared = tmp_path / "tmp", "/sys/fs/cgroup/pids/boxlite-chaos-7-1"
    folder(root, "chaos-dockerd-live", markers.me(), cgroups=[shared])
    folder(root, "chaos-dockerd-dead", dead_owner(), cgroups=[shared, shared + "-other"])
    left = [x for x in sweep.plan(under=[root], procs=[]) if x.decision == "sweep"]
    assert [x.path.name for x in left] == ["chaos-dockerd-dead"]
    assert left[0].cgroups == [shared + "-other"]


def test_rmdir_cgroups_removes_only_empty_folders_under_its_root(tmp_path):
    from harness.leftovers.processes import rmdir_cgroups
    root = tmp_path / "cg"
    (root / "a" / "b").mkdir(parents=True)
    (root / "busy").mkdir()
    (root / "busy" / "cgroup.procs").write_text("1\n")    # a populated cgroup refuses rmdir
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    done = rmdir_cgroups([root / "a", root / "busy", outside], under=f"{root}/")
    assert done["removed"] == [str(root / "a" / "b"), str(root / "a")]
    assert [f.split(":")[0] for f in done["failed"]] == [str(root / "busy")]
    assert outside.is_dir() and (root / "busy").is_dir()
