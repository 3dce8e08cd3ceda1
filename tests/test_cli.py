"""The console script on bad input: one line naming the problem, a non-zero exit, never a
traceback — and never a gate run. Every gate case here fails before pytest.main: each asserts
that the gate's start banner was not printed and that its report folder was not created."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("boxlite-chaos")
CMD = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "harness.cli"]
BANNER = "boxlite-chaos gate: runtime"          # printed just before pytest.main


def run_cli(*args: str, kvm: str = "/nonexistent/kvm", tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ,
           # Missing by default: a gate case that got past its own check stops here anyway.
           "BOXLITE_CHAOS_KVM": kvm,
           # Keep any cache it might touch away from the user's.
           "BOXLITE_CHAOS_CACHE": str(tmp / "cache"),
           # Should a gate ever reach pytest.main, it only collects: no scenario runs.
           "PYTEST_ADDOPTS": "--collect-only"}
    env.pop("BOXLITE_CHAOS_REPORT", None)
    return subprocess.run([*CMD, *args], capture_output=True, text=True, env=env, cwd=tmp,
                          timeout=60)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode != 0, proc
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("boxlite-chaos: error: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def gate(tmp: Path, *args: str, kvm: str = "/nonexistent/kvm") -> subprocess.CompletedProcess:
    report = tmp / "report"
    proc = run_cli("gate", "--report", str(report), "-n", "1", *args, kvm=kvm, tmp=tmp)
    assert BANNER not in proc.stdout, "the gate started a run"
    assert not report.exists(), "the gate created its report folder"
    return proc


def test_gate_with_a_malformed_release_spec(tmp_path):
    line = assert_one_line_error(gate(tmp_path, "--runtime", "boxlite==banana"),
                                 "'boxlite==banana'")
    assert "kvm" not in line.lower()         # it failed on the spec, before the KVM check


def test_gate_with_a_missing_wheel(tmp_path):
    line = assert_one_line_error(gate(tmp_path, "--runtime", "wheel:/nonexistent.whl"),
                                 "'wheel:/nonexistent.whl'", "does not exist")
    assert "kvm" not in line.lower()


def test_gate_with_an_unknown_release(tmp_path):
    # A well-formed spec naming no published release: pip answers, the gate says so in one
    # line before any worker starts (this one calls pip: a few seconds).
    assert_one_line_error(gate(tmp_path, "--runtime", "boxlite==0.0.1", kvm="/dev/null"),
                          "'boxlite==0.0.1'", "not a published release")


def test_gate_with_an_unknown_scenario(tmp_path):
    # /dev/null is a character device that opens read-write: the KVM check passes whether
    # or not this machine has KVM, so the scenario name is what fails.
    assert_one_line_error(gate(tmp_path, "--scenario", "no_such_scenario", kvm="/dev/null"),
                          "'no_such_scenario'", "known:", "guest_hang")


def test_gate_without_kvm(tmp_path):
    line = assert_one_line_error(gate(tmp_path, kvm="/nonexistent/kvm"),
                                 "/nonexistent/kvm", "missing")
    assert "KVM" in line


def test_gate_with_kvm_that_is_not_a_device(tmp_path):
    fake = tmp_path / "kvm"
    fake.write_text("")
    assert_one_line_error(gate(tmp_path, kvm=str(fake)), str(fake), "not a character device")


@pytest.mark.parametrize("make", [False, True])
def test_report_on_a_folder_that_is_not_a_run(tmp_path, make):
    run = tmp_path / "empty-dir"
    if make:
        run.mkdir()
    proc = run_cli("report", str(run), tmp=tmp_path)
    assert_one_line_error(proc, str(run), "results.jsonl")
    if make:
        assert list(run.iterdir()) == []     # nothing written into it


def test_report_on_a_run_with_a_torn_results_line(tmp_path):
    # A gate killed mid-write leaves half a line: named, not a traceback.
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text(
        '{"nodeid": "a", "runtime": "r", "outcome": "passed", "duration_s": 1, '
        '"judgements": []}\n{"nodeid": "b", "runt')
    proc = run_cli("report", str(run), tmp=tmp_path)
    assert_one_line_error(proc, "results.jsonl", "line 2")


def test_an_unknown_subcommand_is_a_usage_error(tmp_path):
    proc = run_cli("explode", tmp=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "invalid choice" in proc.stderr


def test_building_the_parser_does_not_import_hypothesis():
    """`gate` runs pytest in this process: hypothesis imported before pytest.main cannot have
    its assertions rewritten, and pytest prints a PytestAssertRewriteWarning per module."""
    code = ("import sys, harness.cli; harness.cli.build_parser(); "
            "print([m for m in sys.modules if m.split('.')[0] in "
            "('hypothesis', '_hypothesis_globals')])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


@pytest.mark.parametrize("args, needles", [
    (("--seed", "banana"), ("seed 'banana'", "whole number")),
    (("--seed", "-4"), ("seed '-4'",)),
    (("--seed", "5", "--explore"), ("--seed", "--explore")),
    (("--repeat", "0"), ("--repeat 0",)),
])
def test_gate_refuses_bad_seeds_and_repeats(tmp_path, args, needles):
    assert_one_line_error(gate(tmp_path, *args, kvm="/dev/null"), *needles)


@pytest.mark.parametrize("n", ["0", "-2", "many"])
def test_gate_refuses_a_worker_count_that_cannot_run_it(tmp_path, n):
    report = tmp_path / "report"
    proc = run_cli("gate", "--report", str(report), "-n", n, kvm="/dev/null", tmp=tmp_path)
    assert proc.returncode == 2 and "-n/--workers" in proc.stderr and "Traceback" not in \
        proc.stderr
    assert not report.exists()


def test_the_repeat_runs_the_same_gate_with_the_same_seed(tmp_path):
    from argparse import Namespace

    from harness.jobs.repeat.flakes import gate_argv
    args = Namespace(runtime="boxlite==0.10.8", workers="3", scenario=["guest_hang"], k="x")
    argv = gate_argv(args, tmp_path / "run-2", 42)
    assert argv[argv.index("--seed") + 1] == "42"
    assert argv[argv.index("--report") + 1] == str(tmp_path / "run-2")
    assert ["--scenario", "guest_hang"] == argv[argv.index("--scenario"):][:2]
    assert "--repeat" not in argv and argv[argv.index("-n") + 1] == "3"
