"""The runtime host's channel (harness/runtime/host.py) against a fake host program: no boxlite
here, only the JSON-lines protocol the real hosts speak."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from harness.common.wait import poll_until
from harness.runtime.host import BARE, HostError, RuntimeHost

# Says ready, answers one ping, then closes its stdout and lingers 60 s before exiting: the
# moment between a host's EOF and its exit, stretched so a test can send into it.
CLOSES_THEN_LINGERS = r"""
import json, os, sys, time
print(json.dumps({"event": "ready", "pid": os.getpid()}), flush=True)
req = json.loads(sys.stdin.readline())
print(json.dumps({"id": req["id"], "ok": True, "result": "pong"}), flush=True)
os.close(1)
sys.stdout = None
time.sleep(60)
"""


def fake_host(tmp_path: Path, program: str) -> RuntimeHost:
    script = tmp_path / "host.py"
    script.write_text(program)
    env = SimpleNamespace(sdk="python", host_env=dict,
                          host_argv=lambda: [sys.executable, str(script)])
    return RuntimeHost(env, tmp_path / "home", BARE, tmp_path / "work")   # type: ignore[arg-type]


def test_an_op_sent_after_the_hosts_eof_fails_at_once_not_at_its_timeout(tmp_path):
    host = fake_host(tmp_path, CLOSES_THEN_LINGERS).start()
    try:
        assert host.call("ping", timeout_s=10) == "pong"
        assert poll_until(lambda: host._stdout_closed, 30, "the fake host's EOF", 0.01)
        assert host.alive               # EOF seen, the process not yet gone
        t0 = time.monotonic()
        with pytest.raises(HostError, match="closed its stdout"):
            host.call("remove", timeout_s=30, box_id="b")
        assert time.monotonic() - t0 < 10      # refused, not the 30 s timeout
    finally:
        host.kill()
        host.wait_exit(10)


# Leaves a child holding its stdout (as a shim spawned with inherited stdio would), then exits
# with a request unanswered: no EOF comes while the child lives.
EXITS_UNDER_A_CHILD = r"""
import json, os, subprocess, sys
print(json.dumps({"event": "ready", "pid": os.getpid()}), flush=True)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
print(json.dumps({"event": "child", "pid": child.pid}), flush=True)
sys.stdin.readline()
os._exit(3)
"""


def test_an_op_pending_when_the_host_exits_fails_without_its_eof(tmp_path):
    host = fake_host(tmp_path, EXITS_UNDER_A_CHILD).start()
    assert poll_until(lambda: any(e["event"] == "child" for e in host.events), 10,
                      "the fake host's child")
    child = next(e["pid"] for e in host.events if e["event"] == "child")
    child_t = psutil.Process(child).create_time()
    try:
        t0 = time.monotonic()
        with pytest.raises(HostError, match=r"exited \(status 3\) while remove was pending"):
            host.call("remove", timeout_s=30, box_id="b")
        assert time.monotonic() - t0 < 15      # the exit seen, not the 30 s timeout
        assert not host._stdout_closed                  # the child still holds the pipe
    finally:
        p = psutil.Process(child)
        if p.create_time() == child_t:
            p.kill()
            p.wait(10)
