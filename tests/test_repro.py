"""repro: extracting a fault schedule from a history, the errors a bad history gives, and a
replay driven through fake hosts (no micro-VM): box ids mapped, faults timed from the start,
records judged at the moments the recording looked."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path

import pytest

from harness.common.errors import HistoryError
from harness.jobs.repro import replay as repro
from harness.jobs.repro.replay import Replayer
from harness.jobs.repro.schedule import extract_schedule, load_schedule, parse_flavour
from harness.judge.checks import HOLDS
from harness.observe.records import RecordRead
from harness.runtime.host import RUNNER, SDK_DEFAULT, Flavour, RuntimeOpError

PROJECT = Path(__file__).resolve().parent.parent
TIMEOUT = ("engine reported an error: The VM failed to start: timed out after 30s waiting for "
           "it to become ready.")
BOX = "mzDMq6AnYRVb"
OPTIONS = {"rootfs_path": "/elsewhere/busybox", "auto_remove": False, "memory_mib": 64}


def verdict(t: float, check: str, **evidence) -> dict:
    return {"t": t, "kind": "verdict", "check": check, "status": "holds", "evidence": evidence,
            "summary": "", "outcome": "pass", "known_failure": None}


# A guest-hang scenario as the harness records it (test_guest_hang[exit]), teardown included.
GUEST_HANG = [
    {"t": 0.0, "kind": "meta", "event": "open", "scenario": "scenarios/x.py::test_hang",
     "runtime": "boxlite==0.10.8"},
    {"t": 0.01, "kind": "invoke", "host": "host1", "op": "host_start", "pid": 11,
     "flavour": "options,sigterm=graceful"},
    {"t": 0.18, "kind": "ok", "host": "host1", "op": "host_start", "pid": 11},
    {"t": 0.18, "kind": "invoke", "host": "host1", "op": "create", "req": 1,
     "args": {"options": OPTIONS, "name": "hang"}},
    {"t": 0.19, "kind": "ok", "host": "host1", "op": "create", "req": 1, "result": {"id": BOX}},
    {"t": 0.19, "kind": "invoke", "host": "host1", "op": "start", "req": 2,
     "args": {"box_id": BOX}},
    {"t": 0.30, "kind": "observe", "what": "processes", "count": 4, "kinds": {}, "zombies": []},
    {"t": 0.55, "kind": "fault", "fault": "freeze_box", "box": BOX, "pids": [1, 2, 3]},
    {"t": 32.5, "kind": "fail", "host": "host1", "op": "start", "req": 2, "elapsed_s": 32.3,
     "error": {"type": "EngineError", "message": TIMEOUT}},
    verdict(32.5, "op_failed_cleanly[start]"),
    {"t": 32.51, "kind": "invoke", "host": "host1", "op": "get_info", "req": 3,
     "args": {"box_id": BOX}},
    {"t": 32.52, "kind": "ok", "host": "host1", "op": "get_info", "req": 3, "result": {}},
    {"t": 32.52, "kind": "invoke", "host": "host1", "op": "list_info", "req": 4, "args": {}},
    {"t": 32.53, "kind": "ok", "host": "host1", "op": "list_info", "req": 4, "result": []},
    verdict(32.53, "record_failed[store]", expected_cause="timeout"),
    {"t": 32.54, "kind": "invoke", "host": "host1", "op": "exit", "req": 5, "args": {}},
    {"t": 32.60, "kind": "observe", "host": "host1", "what": "host_exit", "returncode": 0},
    {"t": 32.61, "kind": "invoke", "host": "host2", "op": "host_start", "pid": 12,
     "flavour": "options,sigterm=graceful"},
    {"t": 32.85, "kind": "ok", "host": "host2", "op": "host_start", "pid": 12},
    {"t": 32.85, "kind": "invoke", "host": "host2", "op": "list_info", "req": 1, "args": {}},
    {"t": 32.86, "kind": "ok", "host": "host2", "op": "list_info", "req": 1, "result": []},
    {"t": 32.86, "kind": "meta", "event": "call_done", "wall_s": 32.86},
    # teardown: the replay does its own
    {"t": 32.86, "kind": "heal", "fault": "freeze_box", "box": BOX, "pids": [1, 2, 3],
     "error": None},
    {"t": 32.87, "kind": "invoke", "host": "host2", "op": "exit", "req": 2, "args": {}},
    {"t": 32.93, "kind": "meta", "event": "outcome", "outcome": "passed"},
]


def write(path: Path, events: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def test_the_schedule_keeps_operations_faults_and_looks_and_drops_teardown():
    s = extract_schedule(GUEST_HANG)
    assert [(st.action, st.host, st.op) for st in s.steps] == [
        ("host_start", "host1", ""), ("send", "host1", "create"), ("await", "host1", "create"),
        ("send", "host1", "start"), ("fault", "", "freeze_box"), ("await", "host1", "start"),
        ("read", "host1", ""), ("send", "host1", "exit"), ("host_exit", "host1", ""),
        ("host_start", "host2", ""), ("read", "host2", "")]
    fault = s.steps[4]
    assert fault.box == BOX and fault.after_start_s == pytest.approx(0.36)
    assert s.steps[1].args["options"]["memory_mib"] == 64
    assert s.steps[2].box == BOX                       # the create's answer names the box
    assert s.steps[5].recorded == "fail" and s.steps[5].error["message"] == TIMEOUT
    assert s.steps[6].box == BOX and s.steps[10].box is None   # get_info vs list_info
    # host2 starts after host1 exited: a restart on the same home.
    assert s.steps[0].home == s.steps[9].home == "home1"
    assert s.complete and s.record_check == "record_failed" and s.expected_cause == "timeout"
    assert s.judged_start
    assert "freeze_box on box mzDMq6AnYRVb, 0.36s after its start" in s.describe()


def test_a_host_gets_its_own_home_unless_another_just_left_one():
    events = [GUEST_HANG[0],
              {"t": 0.1, "kind": "invoke", "host": "host1", "op": "host_start"},
              {"t": 0.2, "kind": "invoke", "host": "host2", "op": "host_start"},
              {"t": 0.3, "kind": "fault", "fault": "signal_host", "host": "host1",
               "signal": "SIGKILL", "pid": 5},
              {"t": 0.4, "kind": "invoke", "host": "host3", "op": "host_start"}]
    homes = [st.home for st in extract_schedule(events).steps if st.action == "host_start"]
    assert homes == ["home1", "home2", "home1"]    # host3 restarts on killed host1's home
    signal_step = extract_schedule(events).steps[2]
    assert (signal_step.action, signal_step.signal) == ("fault", "SIGKILL")


@pytest.mark.parametrize("flavour", [Flavour(), RUNNER, SDK_DEFAULT,
                                     Flavour(sigterm="graceful", reaper="global")])
def test_a_recorded_flavour_label_parses_back(flavour):
    parsed = parse_flavour(flavour.label)
    assert (parsed.runtime, parsed.sigterm, parsed.reaper) == \
        (flavour.runtime, flavour.sigterm, flavour.reaper)


def test_a_truncated_last_line_is_an_error_naming_it(tmp_path):
    path = write(tmp_path / "history.jsonl", GUEST_HANG[:8])
    with open(path, "a") as fh:
        fh.write('{"t": 32.5, "kind": "fail", "host": "host1", "op": "st')
    with pytest.raises(HistoryError, match=r"line 9 is not valid JSON \(truncated"):
        load_schedule(path)
    # the CLI's dry run surfaces the same error (cli.main prints it in one line)
    args = argparse.Namespace(history=str(path), dry_run=True, runtime="x", report=None)
    with pytest.raises(HistoryError, match="line 9"):
        repro.cmd_repro(args)


def test_a_corrupt_middle_line_is_an_error_naming_it(tmp_path):
    path = write(tmp_path / "history.jsonl", GUEST_HANG)
    lines = path.read_text().splitlines(keepends=True)
    lines[4] = "{not json}\n"
    path.write_text("".join(lines))
    with pytest.raises(HistoryError, match="line 5 is not valid JSON"):
        load_schedule(path)


KILLED_WRITER = """
import sys, time
from pathlib import Path
from harness.observe.history import History
h = History(Path(sys.argv[1]), {"scenario": "scenarios/x.py::test_killed", "runtime": "r"})
h.append("invoke", host="host1", op="host_start", pid=1, flavour="options,sigterm=none")
h.append("ok", host="host1", op="host_start", pid=1)
h.append("invoke", host="host1", op="create", req=1, args={"options": {}, "name": "k"})
h.append("ok", host="host1", op="create", req=1, result={"id": "KILLEDbox001"})
h.append("invoke", host="host1", op="start", req=2, args={"box_id": "KILLEDbox001"})
h.append("fault", fault="kill_shim", box="KILLEDbox001", pid=4242)
print("injected", flush=True)
time.sleep(60)
"""


def test_a_history_from_a_sigkilled_writer_replays_what_was_recorded(tmp_path):
    path = tmp_path / "history.jsonl"
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "injected"
    finally:
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    s = load_schedule(path)
    assert not s.complete and s.record_check is None
    assert [(st.action, st.op) for st in s.steps] == [
        ("host_start", ""), ("send", "create"), ("await", "create"), ("send", "start"),
        ("fault", "kill_shim")]
    assert s.steps[-1].box == "KILLEDbox001"
    assert "incomplete: replaying what was recorded" in s.describe()


# -- a replay through fakes ------------------------------------------------------------------

class FakeHost:
    """Answers like a runtime whose guest never connects: start fails with the timeout."""

    def __init__(self, name: str, home: Path, sent: list) -> None:
        self.name, self.home, self.sent, self.alive = name, home, sent, True

    def send(self, op: str, **args) -> Future:
        self.sent.append((self.name, op, args))
        fut: Future = Future()
        fut.op = op  # type: ignore[attr-defined]
        if op == "exit":
            self.alive = False
        elif op == "create":
            fut.set_result({"id": "REPLAYbox001"})
        elif op == "start":
            fut.set_exception(RuntimeOpError("start", {"type": "EngineError",
                                                       "message": TIMEOUT}))
        else:
            fut.set_result(None)
        return fut

    def result(self, fut: Future, timeout_s: float):
        return fut.result(timeout=0)

    def wait_exit(self, timeout_s: float) -> None:
        assert not self.alive

    def close(self) -> None:
        self.alive = False


class FakeFactory:
    def __init__(self, root: Path) -> None:
        self.root, self.hosts = root, []

    def new_home(self) -> Path:
        return self.root / f"home{len({h.home for h in self.hosts}) + 1}"


class FakeChaos:
    def __init__(self, root: Path) -> None:
        self.factory = FakeFactory(root)
        self.sent: list = []
        self.verdicts: list = []
        self.injected: list = []
        self.notes: list = []

    def host(self, flavour: Flavour, home: Path) -> FakeHost:
        host = FakeHost(f"host{len(self.factory.hosts) + 1}", home, self.sent)
        host.flavour = flavour
        self.factory.hosts.append(host)
        return host

    def restart(self, old: FakeHost) -> FakeHost:
        return self.host(old.flavour, old.home)

    def box_options(self, **overrides):
        return {"rootfs_path": "/here/busybox", "auto_remove": False, **overrides}

    def inject(self, fault):
        self.injected.append(fault)
        return fault

    def judge(self, *verdicts) -> None:
        self.verdicts.extend(verdicts)

    def note(self, **fields) -> None:
        self.notes.append(fields)


def failed_read(path: str) -> RecordRead:
    store = path.startswith("store")
    return RecordRead(path, True, "failed", TIMEOUT if store else None, store)


@pytest.fixture
def fake_runtime(monkeypatch):
    """Reads answer 'failed' on every path; the shim 'exists' at once."""
    monkeypatch.setattr(repro, "wait_for_shim", lambda home, box, timeout_s: ["tree"])
    monkeypatch.setattr(repro, "box_tree", lambda home, box: ["tree"])
    monkeypatch.setattr(repro, "freeze_box", lambda home, box, tree: ("freeze", box))
    monkeypatch.setattr(repro, "read_live", lambda host, box: [
        failed_read("live.get_info"), failed_read("live.list_info"), failed_read("store")])
    monkeypatch.setattr(repro, "read_host", lambda host, box, prefix: [
        failed_read(f"{prefix}.get_info"), failed_read(f"{prefix}.list_info")])
    monkeypatch.setattr(repro, "read_store", lambda home, box, label: failed_read(label))


def test_a_replay_maps_boxes_times_faults_and_judges_where_the_recording_looked(
        tmp_path, fake_runtime):
    chaos = FakeChaos(tmp_path)
    replayer = Replayer(extract_schedule(GUEST_HANG), chaos, say=lambda line: None)
    replayer.run()
    replayer.judge_unread()
    assert [(h, op) for h, op, _ in chaos.sent] == [
        ("host1", "create"), ("host1", "start"), ("host1", "exit")]
    create_args, start_args = chaos.sent[0][2], chaos.sent[1][2]
    assert create_args["options"] == {"rootfs_path": "/here/busybox", "auto_remove": False,
                                      "memory_mib": 64}
    assert start_args == {"box_id": "REPLAYbox001"}
    assert chaos.injected == [("freeze", "REPLAYbox001")]
    assert [h.home for h in chaos.factory.hosts] == [tmp_path / "home1"] * 2
    assert chaos.factory.hosts[0].flavour.sigterm == "graceful"
    checks_judged = [v.check for v in chaos.verdicts]
    assert checks_judged == [
        "op_failed_cleanly[start]",
        "record_failed[live.get_info]", "record_failed[live.list_info]", "record_failed[store]",
        "read_paths_agree[live]",
        "record_failed[after_exit.get_info]", "record_failed[after_exit.list_info]",
        "record_failed[store.after_exit]", "read_paths_agree[after_exit]"]
    assert all(v.status == HOLDS for v in chaos.verdicts), [v.summary for v in chaos.verdicts]
    assert replayer.divergences == []


def test_a_replay_of_a_killed_recording_judges_the_boxes_it_never_looked_at(
        tmp_path, fake_runtime):
    chaos = FakeChaos(tmp_path)
    events = [e for e in GUEST_HANG if e["t"] < 1.0]    # killed while the box was frozen
    replayer = Replayer(extract_schedule(events), chaos, say=lambda line: None)
    replayer.run()
    replayer.judge_unread()
    # The unanswered start was awaited; with no record verdicts recorded, the check follows
    # the replayed box: its host still ran (live), then a fresh host on the home.
    assert [v.check for v in chaos.verdicts] == [
        "record_final[live.get_info]", "record_final[live.list_info]", "record_final[store]",
        "read_paths_agree[live]",
        "record_final[after_exit.get_info]", "record_final[after_exit.list_info]",
        "record_final[store.after_exit]", "read_paths_agree[after_exit]"]
    assert all(v.status == HOLDS for v in chaos.verdicts)


def test_a_diverging_replay_says_so(tmp_path, fake_runtime):
    chaos = FakeChaos(tmp_path)
    events = [{**e, "kind": "ok"} if e["kind"] == "fail" else e for e in GUEST_HANG]
    replayer = Replayer(extract_schedule(events), chaos, say=lambda line: None)
    replayer.run()
    assert replayer.divergences == ["start fail where the recording had ok"]
    assert chaos.notes == [{"replay": "diverged", "detail": replayer.divergences[0]}]


def test_repro_registers_its_subcommand():
    parser = argparse.ArgumentParser()
    repro.add_parser(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["repro", "h.jsonl", "--dry-run"])
    assert (args.history, args.dry_run, args.fn) == ("h.jsonl", True, repro.cmd_repro)
    assert args.runtime == repro.DEFAULT_SPEC
