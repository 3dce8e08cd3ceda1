"""The checks that judge one hostile case: answered cleanly, no crash, its processes gone,
names unambiguous, an image layer contained.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

from harness.judge.checks import HOLDS, UNKNOWN, VIOLATED, Verdict, check

# -- checks -----------------------------------------------------------------------------------

# Error types that are a crash wearing an exception, not the runtime refusing an input: pyo3
# turns a panic into PanicException, the SDK a panicked future into RustPanic.
CRASH_TYPES = ("PanicException", "RustPanic", "SystemError", "MemoryError", "RecursionError")
# Exit statuses of a shim that crashed on its own: Rust's panic status, and death by SIGILL,
# SIGABRT, SIGBUS, SIGFPE, SIGSEGV or SIGSYS (seccomp) as the runtime reports them (128 + n).
CRASH_EXITS = {101: "panic", 132: "SIGILL", 134: "SIGABRT", 135: "SIGBUS", 136: "SIGFPE",
               139: "SIGSEGV", 159: "SIGSYS"}


@check("answered_cleanly")
def answered_cleanly(op: str, answer: dict[str, Any]) -> Verdict:
    """The runtime answered `op`, within its bound, with success or with a runtime error that
    carries a message, and the host lived. A hostile input may be accepted or refused; it must
    not kill the host, hang the call, or fail without saying why.

    `answer`: outcome (ok | error | no_reply | host_died), error ({type, message, mro} or
    None), bound_s, elapsed_s."""
    cid = f"answered_cleanly[{op}]"
    outcome = answer["outcome"]
    ev = {"answer": answer}
    if outcome == "host_died":
        return Verdict(cid, VIOLATED, ev, f"the host died during {op}")
    if outcome == "no_reply":
        return Verdict(cid, VIOLATED, ev, f"{op} got no answer within {answer['bound_s']}s")
    if outcome == "ok":
        return Verdict(cid, HOLDS, ev, f"{op} succeeded")
    if outcome != "error":
        return Verdict(cid, UNKNOWN, ev, f"unknown outcome {outcome!r}")
    err = answer["error"]
    types = {err.get("type"), *err.get("mro", ())}
    crash = sorted(t for t in types if t in CRASH_TYPES)
    if crash:
        return Verdict(cid, VIOLATED, ev, f"{op} crashed: {err.get('type')}: "
                       f"{err.get('message', '')[:160]}")
    if not (err.get("message") or "").strip():
        return Verdict(cid, VIOLATED, ev, f"{op} failed with {err.get('type')} and no message")
    return Verdict(cid, HOLDS, ev, f"{op} refused: {err.get('type')}: {err['message'][:160]}")


@check("runtime_did_not_crash")
def runtime_did_not_crash(exits: Sequence[dict[str, Any]], host_alive: bool,
                          host_stderr: str) -> Verdict:
    """No runtime process crashed on the input: the host lived and printed no panic or
    traceback, and no shim ended on its own with a crash status (a Rust panic, or a fatal
    signal). A shim the harness killed, or one that exited with an error status after saying
    why, did not crash. `exits`: the shim exits the runtime logged (see `shim_exits`)."""
    ev = {"shim_exits": list(exits), "host_alive": host_alive,
          "host_stderr": host_stderr[-1500:]}
    if not host_alive:
        return Verdict("runtime_did_not_crash", VIOLATED, ev, "the host died")
    panic = re.search(r"panicked at (.*)\n(.*)", host_stderr)
    if panic:
        ev["panic"] = f"{panic.group(1)} {panic.group(2)}"
        return Verdict("runtime_did_not_crash", VIOLATED, ev,
                       f"the runtime panicked in the host at {ev['panic'][:240]}")
    if "Traceback (most recent call last)" in host_stderr:
        return Verdict("runtime_did_not_crash", VIOLATED, ev,
                       "the host printed a traceback: " + host_stderr.strip()[-200:])
    crashed = [e for e in exits if not e.get("killed_by_harness")
               and e.get("exit_code") in CRASH_EXITS]
    if crashed:
        return Verdict("runtime_did_not_crash", VIOLATED, ev, "shim crashed: " + ", ".join(
            f"box {e['box']} exit {e['exit_code']} ({CRASH_EXITS[e['exit_code']]})"
            for e in crashed))
    return Verdict("runtime_did_not_crash", HOLDS, ev,
                   f"host alive, {len(exits)} shim exit(s), none a crash")


@check("case_processes_gone")
def case_processes_gone(leftovers: Sequence[dict[str, Any]], observed: int, waited_s: float,
                        bound_s: float, samples: int) -> Verdict:
    """Every runtime process (shim, VM, bwrap) started during a case is gone within `bound_s`
    of its boxes being removed. A case whose boxes never spawned one holds trivially; a ledger
    that took no samples cannot say."""
    ev = {"leftovers": list(leftovers), "observed": observed, "waited_s": round(waited_s, 3),
          "bound_s": bound_s, "samples": samples}
    if samples == 0:
        return Verdict("case_processes_gone", UNKNOWN, ev, "the process ledger took no samples")
    if leftovers:
        return Verdict("case_processes_gone", VIOLATED, ev,
                       f"{len(leftovers)} process(es) alive {waited_s:.1f}s after removal: " +
                       ", ".join(f"{p['name']}[{p['pid']}]" for p in leftovers))
    return Verdict("case_processes_gone", HOLDS, ev,
                   f"all {observed} process(es) of the case gone ({waited_s:.1f}s)")


@check("names_unambiguous")
def names_unambiguous(configs: Sequence[dict[str, Any]]) -> Verdict:
    """No two records share a name, and no record is named after another box's id: either
    would make get(name) or remove(name) pick a box the caller did not mean."""
    ids = {c["id"] for c in configs}
    seen: dict[str, list[str]] = {}
    for c in configs:
        if c["name"] is not None:
            seen.setdefault(c["name"], []).append(c["id"])
    shared = {n: b for n, b in seen.items() if len(b) > 1}
    shadowing = sorted(c["id"] for c in configs
                       if c["name"] in ids and c["name"] != c["id"])
    ev = {"records": len(configs), "shared_names": shared, "named_after_other_id": shadowing}
    if shared or shadowing:
        return Verdict("names_unambiguous", VIOLATED, ev,
                       f"names shared: {sorted(map(repr, shared))}; named after another "
                       f"box's id: {shadowing}")
    return Verdict("names_unambiguous", HOLDS, ev, f"{len(configs)} record(s), names unique")


@check("layer_contained")
def layer_contained(escaped: Sequence[str], planted: int) -> Verdict:
    """Unpacking an image layer wrote nothing outside the runtime's own image folders: none of
    the `planted` escape markers (`../` entries, absolute paths, a path through a symlink) is
    found anywhere else."""
    ev = {"escaped": list(escaped), "planted": planted}
    if planted == 0:
        return Verdict("layer_contained", UNKNOWN, ev, "the layer planted no markers")
    if escaped:
        return Verdict("layer_contained", VIOLATED, ev,
                       f"{len(escaped)} of {planted} layer entries landed outside: "
                       + ", ".join(escaped[:4]))
    return Verdict("layer_contained", HOLDS, ev, f"none of {planted} escaping entries landed")


def kind_of(check_id: str) -> str:
    """The case kind a specialized check id names: its bracket's last part."""
    return check_id.partition("[")[2].rstrip("]").rsplit("/", 1)[-1]


def specialize(v: Verdict, kind: str, moment: str | None = None) -> Verdict:
    """The verdict's id with the moment and the case's kind appended inside its brackets:
    `answered_cleanly[start]` → `answered_cleanly[start/env.nul]`."""
    base, _, rest = v.check.partition("[")
    parts = [p for p in (rest.rstrip("]"), moment, kind) if p]
    return dataclasses.replace(v, check=f"{base}[{'/'.join(parts)}]")
