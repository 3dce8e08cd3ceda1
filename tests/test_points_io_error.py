"""The failing disk at a point (harness.faults.syscall): strace fails only the named files'
writes, never the process's stdout; heal() leaves the process running untraced, also after
strace was SIGKILLed; a tracee left stopped fails the heal, and faults_healed with it. Real
processes and a real strace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.common.wait import wait_for
from harness.faults.base import FaultSet
from harness.faults.syscall import (
    available,
    fail_writes,
    home_files,
    left_traced,
    task_status,
    threads,
)
from harness.judge import checks
from harness.observe.points import Point, PointTrigger

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))

# A writer driven over its stdin, answering on its stdout (like a host's JSON lines): each
# line in makes it write a byte to a.db and b.log and fsync a.db, from a second thread too,
# and answer with each call's errno (0 for success).
WRITER = r"""
import json, os, sys, threading
d = sys.argv[1]
fds = {n: os.open(os.path.join(d, n), os.O_WRONLY | os.O_CREAT, 0o644)
       for n in ("a.db", "b.log")}
def one(out):
    for n, fd in fds.items():
        for call, f in (("write", lambda: os.write(fd, b"x")), ("fsync", lambda: os.fsync(fd))):
            try:
                f(); out[f"{call} {n}"] = 0
            except OSError as e:
                out[f"{call} {n}"] = e.errno
CHILD = "import os, sys; fd = os.open(sys.argv[1], os.O_WRONLY); os.write(fd, b'x'); os.fsync(fd)"
for line in sys.stdin:
    if line.startswith("spawn"):
        import subprocess
        rc = subprocess.run([sys.executable, "-c", CHILD, os.path.join(d, "a.db")]).returncode
        sys.stdout.write(json.dumps({"child": rc}) + "\n"); sys.stdout.flush()
        continue
    out, other = {}, {}
    t = threading.Thread(target=one, args=(other,)); t.start(); one(out); t.join()
    out.update({"thread " + k: v for k, v in other.items()})
    sys.stdout.write(json.dumps(out) + "\n"); sys.stdout.flush()
"""


@pytest.fixture
def writer(tmp_path: Path):
    err = open(tmp_path / "stderr.txt", "wb")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=err, text=True)
    err.close()
    yield proc
    proc.kill()
    proc.wait(10)


def ask(proc: subprocess.Popen, what: str = "go") -> dict[str, int]:
    assert proc.stdin and proc.stdout
    proc.stdin.write(what + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def test_only_the_named_files_fail_and_the_protocol_goes_on(writer, tmp_path):
    assert set(ask(writer).values()) == {0}
    faults = FaultSet()
    fault = fail_writes(writer.pid, [tmp_path / "a.db", tmp_path / "stderr.txt"], "EIO",
                        out=tmp_path / "strace.txt")
    faults.inject(fault)
    # The file behind fd 2 is never failed, even when named.
    assert fault.paths == [tmp_path / "a.db"]
    assert all(task_status(writer.pid, t)["TracerPid"] == str(fault.proc.pid)
               for t in threads(writer.pid))
    got = ask(writer)               # the answer came back over stdout: the protocol is whole
    assert got["write a.db"] == got["fsync a.db"] == 5 == got["thread write a.db"]
    assert got["write b.log"] == got["fsync b.log"] == 0 == got["thread write b.log"]
    # A program it runs is let go at its execve: the failing disk is this process's only.
    assert ask(writer, "spawn") == {"child": 0}
    faults.heal(fault)
    assert fault.heal_error is None and fault.target["injected"] >= 4
    assert fault.strace is not None and fault.strace.same() is None
    assert left_traced([writer.pid]) == []
    assert set(ask(writer).values()) == {0}


def test_enospc_is_the_full_disk(writer, tmp_path):
    faults = FaultSet()
    fault = faults.inject(fail_writes(writer.pid, [tmp_path / "b.log"], "ENOSPC"))
    got = ask(writer)
    assert got["write b.log"] == 28 and got["write a.db"] == 0
    faults.heal(fault)
    assert fault.heal_error is None and left_traced([writer.pid]) == []


def test_a_sigkilled_strace_leaves_the_process_running_untraced(writer, tmp_path):
    faults = FaultSet()
    fault = faults.inject(fail_writes(writer.pid, [tmp_path / "a.db"]))
    assert ask(writer)["write a.db"] == 5
    os.kill(fault.proc.pid, signal.SIGKILL)     # the strace we started, by its pid
    faults.heal(fault)
    assert fault.heal_error is None
    assert left_traced([writer.pid]) == []
    assert all(task_status(writer.pid, t)["State"][:1] in ("S", "R") for t in threads(writer.pid))
    assert set(ask(writer).values()) == {0}


def test_a_tracee_left_stopped_fails_the_heal_and_faults_healed(writer, tmp_path):
    faults = FaultSet()
    record = tmp_path / "strace.out"
    fault = faults.inject(fail_writes(writer.pid, [tmp_path / "a.db"], out=record))
    # SIGSTOP to a traced process: strace lets it stop, and it stays stopped once detached.
    # Waited for in strace's own record, not in the writer's state: the state reads 't' at
    # the signal-delivery stop already, and a strace told to end before it has turned that
    # into a group stop detaches without the signal (seen under load: nothing left stopped).
    os.kill(writer.pid, signal.SIGSTOP)
    wait_for(lambda: record.is_file() and "--- stopped by SIGSTOP ---" in record.read_text(),
             10, "strace to record the writer's group stop")
    faults.heal(fault)
    assert fault.heal_error and "stopped" in fault.heal_error
    verdict = checks.faults_healed([{**fault.describe(), "injected": True, "healed": True,
                                     "heal_error": fault.heal_error}])
    assert verdict.status == checks.VIOLATED
    # The heal still sent it on: it answers again.
    assert set(ask(writer).values()) == {0}


def test_a_process_gone_is_a_fault_not_landed(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(10)
    trigger = PointTrigger("store:commit", lambda: FaultSet().inject(
        fail_writes(proc.pid, [tmp_path / "x"])))
    trigger.on_point(Point("store", "commit", time.monotonic(), "store:commit"))
    assert not trigger.landing.landed and "strace" in (trigger.error or "")


def test_a_home_fails_its_store_and_its_files(tmp_path):
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "boxlite.db").write_bytes(b"")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "boxlite.log").write_text("")
    layer = tmp_path / "images" / "local" / "i" / "extracted"
    layer.mkdir(parents=True)
    (layer / "bin").write_text("")
    files = home_files(tmp_path, "BOX1")
    assert tmp_path / "db" / "boxlite.db-wal" in files          # not there yet: named ahead
    assert tmp_path / "logs" / "boxlite.log" in files
    assert tmp_path / "boxes" / "BOX1" / "shim.pid" in files
    assert layer / "bin" not in files
    assert len(files) == len(set(files))
