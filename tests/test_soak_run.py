"""The soak end to end, one fault cycle against the real default runtime: it must come back
judged (exit 0 or 1, with soak.json, schedule.json and a results line), never crash. The
restructure of ce27881 dropped SoakResult's @dataclass and every soak died with a TypeError
while each piece's own tests stayed green; this is the test that would have said so. About
20 s; skips where /dev/kvm is missing (the soak needs the init tier)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness.common.paths import PROJECT


@pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="the soak needs /dev/kvm")
def test_one_soak_cycle_comes_back_judged(tmp_path):
    report = tmp_path / "soak"
    p = subprocess.run([sys.executable, "-m", "harness.cli", "soak", "--cycles", "1",
                        "--seed", "1", "--shrink-s", "0", "--report", str(report)],
                       cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert p.returncode in (0, 1), p.stdout[-2000:] + p.stderr[-2000:]
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    soak = json.loads((report / "soak.json").read_text())
    assert soak["seed"] == 1 and soak["bench"]["cycles"] >= 1 and soak["verdicts"]
    assert json.loads((report / "schedule.json").read_text())["steps"]
    (line,) = (report / "results.jsonl").read_text().splitlines()
    assert json.loads(line)["outcome"] in ("passed", "failed")
