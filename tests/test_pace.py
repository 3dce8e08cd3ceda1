"""The gate's pace: how many workers a machine runs, from its cores and available memory."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.cli import build_parser
from harness.session import pace
from harness.session.pace import (
    HEADROOM_MIB,
    MAX_WORKERS,
    MIB_PER_WORKER,
    PER_CORE,
    choose_workers,
)

PLENTY_MIB = 64 * 1024


def test_two_workers_per_core_where_memory_is_plenty() -> None:
    assert PER_CORE == 2
    assert choose_workers(1, PLENTY_MIB) == 2
    assert choose_workers(2, PLENTY_MIB) == 4          # this machine's figure: 2 cores
    assert choose_workers(4, PLENTY_MIB) == 8


def test_memory_caps_the_count() -> None:
    three = HEADROOM_MIB + 3 * MIB_PER_WORKER
    assert choose_workers(8, three) == 3
    assert choose_workers(8, three - 1) == 2


def test_at_least_one_worker_and_at_most_the_cap() -> None:
    assert choose_workers(2, 0) == 1
    assert choose_workers(2, HEADROOM_MIB - 1) == 1
    assert choose_workers(0, PLENTY_MIB) == PER_CORE       # no affinity read: one core
    assert choose_workers(64, 10**7) == MAX_WORKERS


def test_the_machine_pace_says_its_figures() -> None:
    p = pace.machine_pace()
    assert p.workers == choose_workers(p.cores, p.available_mib)
    line = p.describe()
    assert f"{p.workers} worker" in line and f"{p.cores} core" in line and "-n" in line


def test_an_explicit_count_wins_and_a_chosen_one_is_said() -> None:
    said: list[str] = []
    assert pace.workers_or_chosen("3", said.append) == "3" and said == []
    chosen = pace.workers_or_chosen(None, said.append)
    assert chosen.isdigit() and int(chosen) >= 1
    assert len(said) == 1 and "worker" in said[0]


def test_gate_and_matrix_leave_the_count_to_the_pace_unless_given() -> None:
    assert build_parser().parse_args(["gate"]).workers is None
    assert build_parser().parse_args(["gate", "-n", "2"]).workers == "2"
    assert build_parser().parse_args(["matrix"]).workers is None


@pytest.mark.parametrize("text", ["0", "-1", "many"])
def test_gate_refuses_a_count_that_cannot_run(text: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["gate", "-n", text])


def test_the_module_prints_the_count_for_the_go_script() -> None:
    proc = subprocess.run([sys.executable, "-m", "harness.session.pace"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    assert int(proc.stdout.strip()) >= 1
    assert "worker" in proc.stderr
