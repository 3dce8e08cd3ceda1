"""When the runtime should have reaped a dead child: the moments, on the runtime's own events,
by which a zombie of a runtime host counts as leaked (see checks.no_zombies).

A wall-clock grace from a zombie's birth is stretched by load (a busy 2-core machine delayed
the runtime's liveness poll to about 8 s); the runtime's answers are stretched with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# After start/stop/remove of a box answers, a zombie of that box that was already dead when
# the answer came must be gone within this many seconds. The runtime answers a failed start
# after its liveness poll found the shim dead (and reaped it). Measured on 0.10.8, a full
# gate with 4 workers on 2 cores (2026-11-29): of 1,600 zombies, 1,240 had a known box, and
# none was seen after its box's start/stop/remove answered (latest sighting 0.005 s before
# the answer). The bound absorbs the ledger's 0.1 s sampling and a late drop of the process
# handle. A leak (upstream issue 613) stays until its host exits, so a generous bound costs
# no detection. A process first seen already dead has no command line, hence no box: only
# the scenario's end judges it.
REAP_AFTER_ANSWER_S = 5.0
# Operations after which the runtime has dealt with the box's shim.
BOX_OPS = ("start", "stop", "remove")


def reaping_points(events: Iterable[dict[str, Any]], offset_s: float
                   ) -> list[dict[str, Any]]:
    """Every moment a host answered start/stop/remove of a box, from a scenario's history.

    `offset_s` converts history time to ledger time (ledger_t = history_t - offset_s, i.e.
    ledger.t0 - history.t0 in monotonic seconds). Returns points {t, ppid, box, settle_s,
    why}. A harness-side failure (a timeout, a host that exited with the operation pending)
    is not an answer and gives no point.
    """
    pids: dict[str, int] = {}
    sent: dict[tuple[str, Any], tuple[str, str | None]] = {}
    out: list[dict[str, Any]] = []
    for e in events:
        host, kind, op = e.get("host"), e.get("kind"), e.get("op")
        if host is None or op is None:
            continue
        if kind == "invoke" and op == "host_start":
            pids[host] = e.get("pid")
        elif kind == "invoke":
            sent[(host, e.get("req"))] = (op, (e.get("args") or {}).get("box_id"))
        elif kind in ("ok", "fail"):
            op_sent, box = sent.pop((host, e.get("req")), (op, None))
            if (op_sent not in BOX_OPS or not box or host not in pids
                    or (kind == "fail" and not isinstance(e.get("error"), dict))):
                continue
            out.append({"t": round(e["t"] - offset_s, 3), "ppid": pids[host], "box": box,
                        "settle_s": REAP_AFTER_ANSWER_S, "why": f"{host} answered {op_sent}"})
    return out


def end_points(t: float, host_pids: Iterable[int]) -> list[dict[str, Any]]:
    """The end of a scenario's steps (after the zombie settle wait), for every host still
    alive: any zombie it still holds is leaked, whatever box it belongs to."""
    return [{"t": round(t, 3), "ppid": pid, "box": None, "settle_s": 0.0,
             "why": "the scenario ended"} for pid in host_pids]
