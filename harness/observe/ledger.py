"""The leak ledger: a declarative table of probes, each read before, during and after a
scenario and compared. Adding a probe touches one place: `PROBES`.

Each probe reads one resource for a set of hosts (their homes and pids); a probe that cannot
read returns `Unreadable`, and the comparison then says `unknown` rather than guessing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from harness.common.wait import poll_until
from harness.observe.processes import classify
from harness.observe.records import store_rows


@dataclass(frozen=True)
class Unreadable:
    why: str


@dataclass(frozen=True)
class Scope:
    """What the probes look at: the harness's pid, the scenario's homes and live host pids."""

    root_pid: int
    homes: tuple[Path, ...]
    host_pids: tuple[int, ...]
    box_ids: tuple[str, ...] = ()


def _descendants(scope: Scope) -> Any:
    kids = psutil.Process(scope.root_pid).children(recursive=True)
    counts: dict[str, int] = {}
    for p in kids:
        try:
            kind = classify(p.name(), " ".join(p.cmdline()[:1]) if p.status() != "zombie" else "")
        except psutil.Error:
            continue
        if kind != "other":
            counts[kind] = counts.get(kind, 0) + 1
    return sum(v for k, v in counts.items() if k != "host")


def _zombies(scope: Scope) -> Any:
    n = 0
    for p in psutil.Process(scope.root_pid).children(recursive=True):
        try:
            n += p.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            pass
    return n


def _box_dirs(scope: Scope) -> Any:
    return sum(len([d for d in (h / "boxes").iterdir() if d.is_dir()])
               for h in scope.homes if (h / "boxes").is_dir())


def _records(scope: Scope) -> Any:
    by_status: dict[str, int] = {}
    for h in scope.homes:
        if (h / "db" / "boxlite.db").is_file():
            for row in store_rows(h):
                by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    return by_status


def _host_fds(scope: Scope) -> Any:
    return sum(psutil.Process(pid).num_fds() for pid in scope.host_pids)


def _host_threads(scope: Scope) -> Any:
    return sum(psutil.Process(pid).num_threads() for pid in scope.host_pids)


def _mounts(scope: Scope) -> Any:
    text = Path("/proc/self/mountinfo").read_text()
    return sum(1 for line in text.splitlines() for h in scope.homes if str(h) in line)


def _socket_dirs(scope: Scope) -> Any:
    base = Path(f"/tmp/bl-{os.getuid()}")
    return sum(1 for b in scope.box_ids if (base / b).exists())


@dataclass(frozen=True)
class Probe:
    name: str
    read: Callable[[Scope], Any]
    # True when `after` is acceptable given `before` (the default: nothing new).
    settled: Callable[[Any, Any], bool] = lambda before, after: after <= before


PROBES: tuple[Probe, ...] = (
    Probe("descendants", _descendants),
    Probe("zombies", _zombies),
    Probe("box_dirs", _box_dirs, lambda b, a: True),        # failed boxes keep theirs
    Probe("records", _records, lambda b, a: True),          # judged by records_settled
    # A live runtime warms up (tokio grows its pools on demand): judged by slope over a run
    # (checks.no_growth), not by two endpoints.
    Probe("host_fds", _host_fds, lambda b, a: True),
    Probe("host_threads", _host_threads, lambda b, a: True),
    Probe("mounts", _mounts),
    Probe("socket_dirs", _socket_dirs),
)


def take(scope: Scope, probes: Sequence[Probe] = PROBES) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for probe in probes:
        try:
            out[probe.name] = probe.read(scope)
        except Exception as exc:  # noqa: BLE001 - an unreadable probe is reported, not raised
            out[probe.name] = Unreadable(f"{type(exc).__name__}: {exc}")
    return out


# How long processes caught mid-exit get to finish: a start answers when the runtime has
# killed its shim, a moment before bwrap reaps the VM and is reaped itself.
SETTLE_BOUND_S = 10.0


def settle(scope: Scope, before: dict[str, Any], rules: dict[str, Callable[[Any, Any], bool]],
           bound_s: float = SETTLE_BOUND_S, interval_s: float = 0.1
           ) -> tuple[dict[str, Any], float]:
    """Take the probes until every rule holds against `before` or `bound_s` has passed.
    Returns the last snapshot (what a check judges: anything still grown at the bound is a
    leak) and the seconds it took."""
    last: dict[str, Any] = {}

    def settled() -> bool:
        last.clear()
        last.update(take(scope))
        return all(ok(before.get(n), last.get(n)) for n, ok in rules.items()
                   if not isinstance(last.get(n), Unreadable)
                   and not isinstance(before.get(n), Unreadable))

    t0 = time.monotonic()
    poll_until(settled, bound_s, "the ledger's probes to settle back to where they were",
               interval_s)
    return dict(last), time.monotonic() - t0
