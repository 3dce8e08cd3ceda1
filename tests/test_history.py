"""The append-only history: one flushed JSON object per line, and a reader that names the line
of any corruption instead of dropping it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.common.errors import HistoryError
from harness.observe.history import History, read_history

PROJECT = Path(__file__).resolve().parent.parent


def test_one_flushed_json_object_per_line(tmp_path):
    path = tmp_path / "sub" / "history.jsonl"
    h = History(path, {"scenario": "s1", "runtime": "boxlite==0.10.8"})
    try:
        h.append("invoke", op="start", box_id="b1")
        h.append("fail", op="start", error={"type": "X", "message": "timed out"})
        h.append("note", odd=Path("/x"))                    # not JSON: written as str
        # Read back while the history is still open: every event is already on disk.
        lines = path.read_text().splitlines()
        assert len(lines) == 4
        events = [json.loads(line) for line in lines]
        assert [e["kind"] for e in events] == ["meta", "invoke", "fail", "note"]
        assert events[0]["scenario"] == "s1" and events[0]["event"] == "open"
        assert events[3]["odd"] == "/x"
        assert all(isinstance(e["t"], float | int) for e in events)
        assert [e["t"] for e in events] == sorted(e["t"] for e in events)
        assert read_history(path) == events
    finally:
        h.close()


def test_unknown_kinds_are_refused_and_appends_after_close_are_dropped(tmp_path):
    path = tmp_path / "h.jsonl"
    h = History(path)
    with pytest.raises(ValueError, match="unknown history kind 'bogus'"):
        h.append("bogus")
    h.close()
    h.close()                                               # closing twice is fine
    h.append("note", late=True)
    assert [e["kind"] for e in read_history(path)] == ["meta"]


def write_events(path: Path, *events: dict) -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))


META = {"t": 0.0, "kind": "meta", "event": "open"}
NOTE = {"t": 0.1, "kind": "note", "x": 1}


def test_a_truncated_last_line_is_named(tmp_path):
    path = tmp_path / "h.jsonl"
    write_events(path, META, NOTE)
    whole = json.dumps({"t": 0.2, "kind": "note", "text": "cut here"})
    with open(path, "a") as fh:
        fh.write(whole[: len(whole) // 2])                  # half a line, no newline
    with pytest.raises(HistoryError, match=r"line 3 is not valid JSON \(truncated"):
        read_history(path)


def test_a_corrupt_middle_line_is_named(tmp_path):
    path = tmp_path / "h.jsonl"
    write_events(path, META, NOTE)
    with open(path, "a") as fh:
        fh.write('{"t": 0.2, "kind": "no\n')
        fh.write(json.dumps(NOTE) + "\n")
    with pytest.raises(HistoryError, match="line 3 is not valid JSON") as exc:
        read_history(path)
    assert "truncated" not in str(exc.value)
    assert str(path) in str(exc.value)


def test_a_line_that_is_not_an_event_is_named(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps(META) + "\n[1, 2]\n")
    with pytest.raises(HistoryError, match="line 2 is not a history event"):
        read_history(path)


def test_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps(META) + "\n\n" + json.dumps(NOTE) + "\n")
    assert [e["kind"] for e in read_history(path)] == ["meta", "note"]


@pytest.mark.parametrize("content", [json.dumps(NOTE) + "\n" + json.dumps(META) + "\n", ""])
def test_a_history_without_the_meta_first_line_is_rejected(tmp_path, content):
    path = tmp_path / "h.jsonl"
    path.write_text(content)
    with pytest.raises(HistoryError, match="line 1 must be the 'meta' event"):
        read_history(path)


def test_a_missing_history_is_a_clear_error(tmp_path):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(HistoryError, match="no such file") as exc:
        read_history(path)
    assert str(path) in str(exc.value)


def test_a_line_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_bytes(json.dumps(META).encode() + b"\n" + b'{"t": 1, "kind": "\xff"}\n')
    with pytest.raises(HistoryError, match="line 2"):
        read_history(path)


WRITER = """
import os, sys, time
from pathlib import Path
from harness.observe.history import History
h = History(Path(sys.argv[1]), {"scenario": "killed"})
for i in range(200):
    h.append("observe", i=i, pad="x" * 100)
print("written", flush=True)
while True:
    h.append("note", tick=time.monotonic())
    time.sleep(0.001)
"""


def test_a_sigkilled_writer_leaves_a_readable_history(tmp_path):
    path = tmp_path / "h.jsonl"
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "written"
    finally:
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    # Each line reaches the kernel in one flushed write: a kill between writes tears none.
    events = read_history(path)
    assert events[0]["kind"] == "meta" and events[0]["scenario"] == "killed"
    assert [e["i"] for e in events if e["kind"] == "observe"] == list(range(200))
    assert path.read_text().endswith("\n")
