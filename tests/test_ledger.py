"""The process ledger against real child processes: zombies, leftovers, unreadable probes,
and pid reuse. Every verdict comes from the real checks fed the ledger's own records."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from harness.common.wait import wait_for
from harness.judge import checks
from harness.judge.checks import HOLDS, UNKNOWN, VIOLATED
from harness.observe.processes import ProcessLedger, ProcRecord, become_subreaper, classify
from harness.observe.procfs import Listing, ProcTree

INTERVAL = 0.05
GRACE_S = 1.0       # the leaks below last over 1.2 s: judged with this grace, not the default


def sample_for(ledger: ProcessLedger, seconds: float) -> None:
    """Drive the ledger's own sample() at its interval, in this thread."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ledger.sample()
        time.sleep(ledger.interval_s)


def zombie_verdict(ledger: ProcessLedger) -> checks.Verdict:
    # As Chaos.conclude feeds the check, with a grace short enough for a fast test.
    return checks.no_zombies([r.to_json() for r in ledger.zombie_records()],
                             len(ledger.samples), grace_s=GRACE_S,
                             sampling_errors=ledger.errors)


@contextlib.contextmanager
def running(ledger: ProcessLedger) -> Iterator[ProcessLedger]:
    ledger.start()
    try:
        yield ledger
    finally:
        ledger.stop()


def test_a_leaked_zombie_is_a_violation():
    ledger = ProcessLedger(interval_s=INTERVAL)
    ledger.snapshot_baseline()
    child = subprocess.Popen(["true"])
    # Registered before the first sample, so the ledger treats it as ours and does not reap it.
    ledger.own_children.add(child.pid)
    try:
        # The child exits at once and is not waited for; sampled from its first zombie look on,
        # so it lasts the 1.6 s however long the exit took on a loaded machine.
        wait_for(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE, 10,
                 "the child to exit")
        sample_for(ledger, 1.6)
        recs = ledger.zombie_records()
        assert [r.pid for r in recs] == [child.pid]
        assert psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE
        v = zombie_verdict(ledger)
        assert v.status == VIOLATED, v.summary
        assert f"[{child.pid}] under {os.getpid()}" in v.summary
        assert any(s.zombies and s.zombies[0]["pid"] == child.pid for s in ledger.samples)
    finally:
        assert child.wait(timeout=5) == 0       # reaped by us, with its real exit status
    ledger.sample()
    assert ledger.zombie_records()[0].gone_at is not None


@pytest.mark.parametrize("walk", [True, False], ids=["children lists", "scan of /proc"])
def test_a_zombie_leaked_by_a_descendant_is_a_violation_while_the_thread_samples(walk):
    # The realistic case: a grandchild whose parent (not us) never waits for it. The
    # parent reaps it once its stdin closes. A kernel without children lists is scanned.
    code = ("import os, sys\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os._exit(0)\n"
            "print(pid, flush=True)\n"
            "sys.stdin.read()\n"
            "os.waitpid(pid, 0)\n")
    ledger = ProcessLedger(interval_s=INTERVAL,
                           list_procs=ProcTree(os.getpid(), walk=walk).list)
    with running(ledger):
        parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        ledger.own_children.add(parent.pid)
        try:
            gpid = int(parent.stdout.readline())
            # list(): a snapshot, since the sampling thread adds records meanwhile.
            wait_for(lambda: any(r.pid == gpid and r.zombie_since is not None
                                 and r.last_seen - r.zombie_since >= 1.2
                                 for r in list(ledger.records.values())), 5, "a lasting zombie")
        finally:
            parent.stdin.close()
            assert parent.wait(timeout=5) == 0
    v = zombie_verdict(ledger)
    assert v.status == VIOLATED, v.summary
    assert [z["pid"] for z in v.evidence["lasting"]] == [gpid]
    assert v.evidence["lasting"][0]["ppid"] == parent.pid


ORPHANER = """
import os, sys, time
parent = os.getpid()
pid = os.fork()
if pid == 0:
    while os.getppid() == parent:
        time.sleep(0.01)     # outlives its parent, then exits: an orphan's zombie
    os._exit(0)
print(pid, flush=True)
sys.stdin.readline()         # until the ledger has seen the child under us
"""


def seen_under(ledger: ProcessLedger, pid: int, ppid: int) -> bool:
    return any(r.pid == pid and any(p == ppid for _, p in r.ppids)
               for r in list(ledger.records.values()))


def test_an_adopted_orphan_is_reaped_within_the_grace():
    # A process re-parented to the harness (the subreaper) is an orphan nobody else will
    # wait for: the ledger reaps it, so it never lasts as a zombie.
    assert become_subreaper()       # as the plugin does in every session of this project
    ledger = ProcessLedger(interval_s=INTERVAL)
    with running(ledger):
        parent = subprocess.Popen([sys.executable, "-c", ORPHANER], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        ledger.own_children.add(parent.pid)
        orphan = int(parent.stdout.readline())
        wait_for(lambda: seen_under(ledger, orphan, parent.pid), 10,
                 "the ledger to see the child under its parent")
        parent.stdin.close()
        assert parent.wait(timeout=5) == 0
        parent.stdout.close()
        wait_for(lambda: any(r.pid == orphan and r.gone_at is not None
                             for r in list(ledger.records.values())), 5,
                 "the orphan to be reaped")
    rec = next(r for r in ledger.records.values() if r.pid == orphan)
    assert rec.adopted
    assert [p for _, p in rec.ppids] == [parent.pid, os.getpid()]
    assert rec.zombie_since is not None
    v = zombie_verdict(ledger)
    assert v.status == HOLDS, v.summary
    assert not psutil.pid_exists(orphan) or psutil.Process(orphan).create_time() != \
        rec.create_time


def test_a_runtime_process_directly_under_us_is_adopted_and_reaped():
    # A shim is never the harness's own child: found under us, it was orphaned.
    ledger = ProcessLedger(interval_s=INTERVAL)
    with running(ledger):
        shim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.4)",
                                 "/home/boxes/b1/bin/boxlite-shim"])
        wait_for(lambda: any(r.pid == shim.pid and r.gone_at is not None
                             for r in list(ledger.records.values())), 5,
                 "the shim to be reaped")
    rec = next(r for r in ledger.records.values() if r.pid == shim.pid)
    assert rec.adopted and classify(rec.name, rec.cmd) == "shim"
    assert zombie_verdict(ledger).status == HOLDS
    shim.wait(timeout=5)


def test_the_ledger_does_not_steal_the_exit_status_of_a_direct_child():
    # A host that crashes on start, before HostFactory.start returns (and registers it in
    # own_children), is first seen as a zombie with an unreadable command line: it is our
    # own child, so the ledger must leave its exit status to us.
    ledger = ProcessLedger(interval_s=INTERVAL)
    ledger.snapshot_baseline()
    host = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)", "host_main.py"])
    wait_for(lambda: psutil.Process(host.pid).status() == psutil.STATUS_ZOMBIE, 5,
             "the host to exit")
    ledger.sample()                     # first sight: already a zombie
    ledger.sample()
    (rec,) = [r for r in ledger.records.values() if r.pid == host.pid]
    assert not rec.adopted
    assert host.wait(timeout=5) == 3


def test_a_leaked_process_is_left_running_and_killed_by_identity():
    ledger = ProcessLedger(interval_s=INTERVAL)
    with running(ledger):
        leak = subprocess.Popen(["sleep", "60"])
        try:
            create_time = psutil.Process(leak.pid).create_time()
            wait_for(lambda: (leak.pid, create_time) in ledger.records, 5, "the ledger to see it")
        except BaseException:
            leak.kill()
            leak.wait()
            raise
    try:
        left = ledger.leftovers()
        assert [(r.pid, r.create_time) for r in left] == [(leak.pid, create_time)]
        v = checks.nothing_left_running([r.to_json() for r in left], len(ledger.records))
        assert v.status == VIOLATED, v.summary
        assert f"sleep[{leak.pid}]" in v.summary

        killed = ledger.kill_leftovers()
        assert [(k["pid"], k["create_time"], k["killed"]) for k in killed] == \
            [(leak.pid, create_time, True)]
        assert "unkillable" not in killed[0]
        assert not psutil.pid_exists(leak.pid) or \
            psutil.Process(leak.pid).create_time() != create_time or \
            psutil.Process(leak.pid).status() == psutil.STATUS_ZOMBIE
        assert ledger.leftovers() == []
        v = checks.nothing_left_running([r.to_json() for r in ledger.leftovers()],
                                        len(ledger.records))
        assert v.status == HOLDS
    finally:
        if leak.poll() is None:
            leak.kill()
        leak.wait(timeout=5)


def test_kill_leftovers_leaves_our_own_children_for_us_to_reap():
    ledger = ProcessLedger(interval_s=INTERVAL)
    ledger.snapshot_baseline()
    mine = subprocess.Popen(["sleep", "60"])
    ledger.own_children.add(mine.pid)
    try:
        ledger.sample()
        killed = ledger.kill_leftovers(wait_s=5)
        assert [k["pid"] for k in killed] == [mine.pid]
    finally:
        if mine.poll() is None:
            mine.kill()
    assert mine.wait(timeout=5) == -signal.SIGKILL     # exit status not stolen


def test_a_frozen_leftover_is_still_killed():
    ledger = ProcessLedger(interval_s=INTERVAL)
    ledger.snapshot_baseline()
    frozen = subprocess.Popen(["sleep", "60"])
    ledger.own_children.add(frozen.pid)
    try:
        os.kill(frozen.pid, signal.SIGSTOP)
        ledger.sample()
        assert ledger.kinds("other")[0].pid == frozen.pid
        killed = ledger.kill_leftovers(wait_s=5)
        assert [k["pid"] for k in killed] == [frozen.pid]
        assert frozen.wait(timeout=5) == -signal.SIGKILL
    finally:
        if frozen.poll() is None:
            frozen.kill()
            frozen.wait()


EXEC_LATE = ("import os, sys, time\n"
             "time.sleep(0.5)\n"
             "os.execv(sys.argv[1], sys.argv[1:])\n")


def test_records_name_processes_as_psutil_does_and_follow_an_exec(tmp_path):
    # A name over the kernel's 15 characters is taken from the command line, as psutil
    # does; a process seen before it execs takes its new identity once it has.
    long_sleep = tmp_path / "a-sleep-with-a-long-name"
    shutil.copy("/bin/sleep", long_sleep)
    ledger = ProcessLedger(interval_s=INTERVAL)
    ledger.snapshot_baseline()
    late = subprocess.Popen([sys.executable, "-c", EXEC_LATE, str(long_sleep), "60"])
    ledger.own_children.add(late.pid)
    try:
        ledger.sample()
        (rec,) = [r for r in ledger.records.values() if r.pid == late.pid]
        assert rec.name.startswith("python")
        wait_for(lambda: psutil.Process(late.pid).name() == long_sleep.name, 10, "the exec")
        ledger.sample()
        ps = psutil.Process(late.pid)
        assert (rec.pid, rec.create_time) == (ps.pid, ps.create_time())
        assert rec.name == ps.name() == long_sleep.name
        assert rec.cmd == " ".join(ps.cmdline()) == f"{long_sleep} 60"
    finally:
        late.kill()
        late.wait(timeout=5)


# -- probes that cannot read ----------------------------------------------------------------

def test_a_probe_that_cannot_list_makes_no_zombies_unknown():
    def denied() -> Listing:
        raise PermissionError(13, "Permission denied", f"/proc/{os.getpid()}/task")

    ledger = ProcessLedger(interval_s=INTERVAL, list_procs=denied)
    for _ in range(3):
        ledger.sample()
    assert len(ledger.samples) == 3
    assert len(ledger.errors) == 3 and "PermissionError" in ledger.errors[0]
    v = zombie_verdict(ledger)
    assert v.status == UNKNOWN, v.summary
    assert "sampling failed" in v.summary


def test_a_probe_that_cannot_read_a_process_makes_no_zombies_unknown():
    # A listed process whose stat cannot be read (as for another user's, under hidepid).
    unreadable = Listing(unread={1: "PermissionError(13, 'Permission denied')"})
    ledger = ProcessLedger(interval_s=INTERVAL, list_procs=lambda: unreadable)
    ledger.sample()
    assert ledger.errors and "reading pid 1 failed" in ledger.errors[0]
    assert zombie_verdict(ledger).status == UNKNOWN


def test_a_failed_listing_does_not_mark_running_processes_gone():
    fail_next = []
    tree = ProcTree(os.getpid())

    def flaky() -> Listing:
        if fail_next:
            fail_next.pop()
            raise PermissionError(13, "Permission denied")
        return tree.list()

    ledger = ProcessLedger(interval_s=INTERVAL, list_procs=flaky)
    ledger.snapshot_baseline()
    proc = subprocess.Popen(["sleep", "60"])
    ledger.own_children.add(proc.pid)
    try:
        ledger.sample()
        fail_next.append(True)
        ledger.sample()                 # this one cannot list
        ledger.sample()
        assert ledger.errors
        (rec,) = [r for r in ledger.records.values() if r.pid == proc.pid]
        assert ledger.alive(rec)
        assert rec.gone_at is None
    finally:
        proc.kill()
        proc.wait(timeout=5)


def test_a_ledger_without_samples_judges_nothing():
    ledger = ProcessLedger(interval_s=INTERVAL)
    assert zombie_verdict(ledger).status == UNKNOWN
    v = checks.nothing_left_running([r.to_json() for r in ledger.leftovers()],
                                    len(ledger.kinds("shim", "vm", "bwrap", "host")))
    assert v.status == UNKNOWN


# -- pid reuse ------------------------------------------------------------------------------

def test_a_recycled_pid_is_neither_alive_nor_killed():
    other = subprocess.Popen(["sleep", "60"])
    try:
        real = psutil.Process(other.pid).create_time()
        ledger = ProcessLedger(interval_s=INTERVAL)
        # What the ledger recorded for an earlier process that had this pid.
        old = ProcRecord(other.pid, real - 1000.0, "boxlite-shim", os.getpid(),
                         "/x/boxes/b/bin/boxlite-shim", 0.0, 1.0)
        ledger.records[old.key] = old
        assert not ledger.alive(old)
        assert ledger.leftovers() == []
        assert ledger.kill_leftovers(wait_s=1) == []
        time.sleep(0.1)
        assert other.poll() is None, "a recycled pid was killed"
        assert psutil.Process(other.pid).create_time() == real
        # The record with the right identity is alive.
        same = ProcRecord(other.pid, real, "sleep", os.getpid(), "sleep 60", 0.0, 1.0)
        assert ledger.alive(same)
    finally:
        other.kill()
        other.wait(timeout=5)


def test_a_gone_pid_is_not_alive():
    p = subprocess.Popen(["true"])
    ct = psutil.Process(p.pid).create_time()
    p.wait()
    ledger = ProcessLedger()
    assert not ledger.alive(ProcRecord(p.pid, ct, "true", 1, "true", 0.0, 0.0))


# -- classification and the subreaper --------------------------------------------------------

@pytest.mark.parametrize("name, cmd, kind", [
    ("boxlite-shim", "", "shim"),
    ("bwrap", "bwrap --die-with-parent /x/boxes/b/bin/boxlite-shim", "shim"),
    ("libkrun VM", "", "vm"),
    ("bwrap", "bwrap --unshare-all", "bwrap"),
    ("python3", "/venv/bin/python /h/harness/runtime/host_main.py --home /x", "host"),
    ("sleep", "sleep 60", "other"),
])
def test_classify(name, cmd, kind):
    assert classify(name, cmd) == kind


def test_become_subreaper_in_a_child_process():
    code = ("from harness.observe.processes import become_subreaper, is_subreaper\n"
            "print(is_subreaper(), become_subreaper(), is_subreaper())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True).stdout.split()
    assert out == ["False", "True", "True"]


def test_settle_waits_for_processes_caught_mid_exit(monkeypatch):
    from harness.observe import ledger
    snaps = iter([{"descendants": 2}, {"descendants": 1}, {"descendants": 0}])
    monkeypatch.setattr(ledger, "take", lambda scope, probes=ledger.PROBES: next(snaps))
    after, waited = ledger.settle(None, {"descendants": 0},
                                  {"descendants": lambda b, a: a <= b}, bound_s=5.0,
                                  interval_s=0.01)
    assert after == {"descendants": 0}
    assert waited < 3.0                  # three looks 10 ms apart; the 5 s bound not reached


def test_settle_gives_up_at_its_bound_with_what_is_still_grown(monkeypatch):
    from harness.judge import checks
    from harness.observe import ledger
    monkeypatch.setattr(ledger, "take", lambda scope, probes=ledger.PROBES: {"descendants": 2})
    rules = {"descendants": lambda b, a: a <= b}
    after, waited = ledger.settle(None, {"descendants": 0}, rules, bound_s=0.3,
                                  interval_s=0.05)
    assert after == {"descendants": 2}
    assert 0.3 <= waited < 3.0
    v = checks.ledger_settled({"descendants": 0}, after, rules, waited, 0.3)
    assert v.status == checks.VIOLATED and v.evidence["bound_s"] == 0.3


def test_the_sampler_slows_only_while_nothing_changes():
    from harness.observe import processes
    ledger = ProcessLedger(interval_s=0.1, idle_interval_s=0.5)
    assert ledger.next_interval(0.0) == 0.1
    assert ledger.next_interval(processes.STABLE_AFTER_S) == 0.5
    assert ProcessLedger(interval_s=0.1, idle_interval_s=None).next_interval(60.0) == 0.1


IDLE_S = 6.0        # the slowed sampler's pause in the wake test (seconds)


def ledger_now(ledger: ProcessLedger) -> float:
    """Now on the ledger's own clock (seconds since it started), as its samples' `t`."""
    return ledger.clock() - ledger.t0


def longest_gap(ledger: ProcessLedger, since: float) -> float:
    """The longest pause between two samples taken after `since` (ledger_now's seconds)."""
    ts = [s.t for s in list(ledger.samples) if s.t >= since]
    return max((b - a for a, b in itertools.pairwise(ts)), default=0.0)


def test_a_quiet_tree_is_sampled_slowly_and_a_new_zombie_wakes_the_sampler():
    ledger = ProcessLedger(interval_s=0.05, idle_interval_s=IDLE_S)
    child = None
    try:
        with running(ledger):
            # A child that exits when told; we do not wait for it yet (a zombie, ours).
            child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                     stdin=subprocess.PIPE)
            ledger.own_children.add(child.pid)
            # Only this test's child counts as waitable: an xdist worker may hold other
            # tests' unreaped children, and with one waiting the sampler rightly stays fast.
            ledger.child_waitable = lambda: psutil.Process(child.pid).status() == \
                psutil.STATUS_ZOMBIE
            wait_for(lambda: any(r.pid == child.pid for r in list(ledger.records.values())),
                     5, "the child to be seen")
            # Quiet (one process, nothing changes): the sampler slows to its idle pause. Judged
            # by the pauses it took, not by a count in a window that load can shift.
            t_seen = ledger_now(ledger)
            wait_for(lambda: longest_gap(ledger, t_seen) >= 0.9 * IDLE_S, 3 * IDLE_S,
                     f"a pause of {IDLE_S}s between samples of the quiet tree")
            # The tree is still quiet, so the sampler is in its next idle pause now.
            child.stdin.close()
            t_exit = time.monotonic()
            wait_for(lambda: any(r.pid == child.pid and r.zombie_since is not None
                                 for r in list(ledger.records.values())), IDLE_S + 5,
                     "the zombie")
            # A waitable child wakes the slowed sampler: seen well inside the idle pause (half
            # of it: the margin a loaded machine may take, which a missed wake would exceed).
            seen_after = time.monotonic() - t_exit
            assert seen_after < IDLE_S / 2, seen_after
            # Changed: fast again, three samples where a slow sampler would take one.
            t_woke = ledger_now(ledger)
            wait_for(lambda: sum(1 for s in list(ledger.samples) if s.t >= t_woke) >= 3,
                     IDLE_S / 2, "three samples at the fast pace after the wake")
    finally:
        if child is not None:
            child.stdin.close()
            child.wait(timeout=5)


def test_a_slowed_sampler_still_reaps_an_adopted_orphan_promptly():
    # The subreaper's duty does not wait for the idle pause: a runtime recovering its boxes
    # right after a crash reads a lingering zombie as a live shim.
    assert become_subreaper()
    ledger = ProcessLedger(interval_s=INTERVAL, idle_interval_s=5.0)
    code = ("import os, sys, time\n"
            "parent = os.getpid()\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    while os.getppid() == parent:\n"
            "        time.sleep(0.01)\n"
            "    sys.stdin.read()\n"             # the orphan: exits when its stdin closes
            "    os._exit(0)\n"
            "print(pid, flush=True)\n"
            "sys.stdin.readline()\n")            # until the ledger has seen the child under it
    with running(ledger):
        parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        ledger.own_children.add(parent.pid)
        orphan = int(parent.stdout.readline())
        wait_for(lambda: seen_under(ledger, orphan, parent.pid), 10,
                 "the ledger to see the child under its parent")
        parent.stdin.write("go\n")
        parent.stdin.flush()
        assert parent.wait(timeout=5) == 0
        wait_for(lambda: any(r.pid == orphan and r.adopted
                             for r in list(ledger.records.values())), 5, "the adoption")
        time.sleep(2.0)                      # quiet: the sampler slows to its 5 s pause
        parent.stdin.close()                 # the orphan exits now
        t0 = time.monotonic()
        wait_for(lambda: any(r.pid == orphan and r.gone_at is not None
                             for r in list(ledger.records.values())), 5, "the orphan reaped")
        assert time.monotonic() - t0 < 2.5       # half the 5 s idle pause it must not wait


WAITABLE = """
import os, subprocess, sys, time
from harness.observe.processes import ProcessLedger
ledger = ProcessLedger()
child = subprocess.Popen(["sleep", "2"])      # long enough to be read running first
before = ledger.child_waitable()
end = time.monotonic() + 10
while time.monotonic() < end and not ledger.child_waitable():
    time.sleep(0.01)            # not child.poll(): that would reap it
after = ledger.child_waitable()
child.wait()
print(before, after, ledger.child_waitable())
"""


def test_child_waitable_sees_an_exited_child_without_reaping_it():
    # In a process of its own: this one may hold other tests' unreaped children.
    out = subprocess.run([sys.executable, "-c", WAITABLE], capture_output=True, text=True,
                         timeout=30, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.split() == ["False", "True", "False"], out.stdout + out.stderr


NO_SPIN = """
import subprocess, sys, time
from harness.observe.processes import ProcessLedger
child = subprocess.Popen(["true"])            # exits at once; left unreaped on purpose
time.sleep(0.3)
ledger = ProcessLedger(interval_s=0.1, idle_interval_s=0.5)
ledger.own_children.add(child.pid)
ledger.start()
time.sleep(2.0)
ledger.stop()
child.wait()
print(len(ledger.samples))
"""


def test_a_child_someone_else_reaps_keeps_the_sampler_at_its_fast_pace_not_faster():
    # The regression a CI run caught: an unreaped child made the slowed sampler spin.
    out = subprocess.run([sys.executable, "-c", NO_SPIN], capture_output=True, text=True,
                         timeout=30, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    assert 5 <= int(out.stdout) <= 25, out.stdout      # ~20 at 0.1 s over 2 s, not hundreds


def test_scenarios_sample_at_the_fast_pace_by_default():
    # Checks read exit times from background samples; slowing down is opt-in (bench-ledger).
    assert ProcessLedger().idle_interval_s is None
    assert ProcessLedger().next_interval(600.0) == ProcessLedger().interval_s
