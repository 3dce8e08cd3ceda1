"""Verdicts and the check registry: what a check returns and how a crashing check becomes
`unknown`; which init-failure cause an error reason names."""


from __future__ import annotations

import functools
import re
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

HOLDS, VIOLATED, UNKNOWN = "holds", "violated", "unknown"
# How long a zombie may last before it counts as leaked (see no_zombies).
ZOMBIE_GRACE_S = 5.0


@dataclass
class Verdict:
    check: str                      # check id, e.g. "record_failed[store]"
    status: str                     # holds | violated | unknown
    evidence: dict[str, Any] = field(default_factory=dict)
    summary: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check(name: str) -> Callable:
    """Register a check; an exception inside it becomes an `unknown` verdict."""
    def deco(fn: Callable[..., Verdict]) -> Callable[..., Verdict]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Verdict:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - a crashing check is "could not measure"
                return Verdict(kwargs.get("check_id") or name, UNKNOWN,
                               {"error": repr(exc), "traceback": traceback.format_exc(limit=4)},
                               f"check crashed: {exc!r}")
        wrapper.check_name = name  # type: ignore[attr-defined]
        CHECKS[name] = wrapper
        return wrapper
    return deco


CHECKS: dict[str, Callable[..., Verdict]] = {}

# What an error reason must say for each init-failure cause.
CAUSES: dict[str, re.Pattern] = {
    "timeout": re.compile(r"timed out|timeout", re.I),
    "shim_exit": re.compile(r"exit(ed)?( with)?( code| status)|signal|killed|SIGKILL", re.I),
    "boot_failure": re.compile(r"failed to start|boot", re.I),
}


# A process's own exit in a reason ('Exit code: 1'), not a signal's (128 + N, or said so).
_OWN_EXIT = re.compile(r"exit code:?\s*(\d{1,3})\b", re.I)
_SIGNALLED = re.compile(r"signal|killed|SIGKILL", re.I)


def names_cause(reason: str | None, cause: str) -> bool:
    """Whether `reason` explains `cause`: it names that cause first (classify_reason), or,
    for a boot failure, it says the box failed to start and gives the VM process's own exit
    beside it. 0.9.5-0.9.7 word a guest that dies during boot so ('Box <id> failed to start /
    Exit code: 1 / Console output ... / Shim stderr ...': the VM process exits 1 when the guest
    kernel dies, measured 2026-12-06 through Python and Node 0.9.7), where 0.10 say 'The VM
    failed to start.'. A reason that says the process was killed, or a signal's exit code
    (128 + N), does not explain a boot failure."""
    named = classify_reason(reason)
    if named == cause:
        return True
    if cause != "boot_failure" or named != "shim_exit" or not reason:
        return False
    # The runtime's own words, not the console and shim stderr it appends (whose last line
    # here is libkrun's 'Received KVM_EXIT_INTERNAL_ERROR signal').
    head = re.split(r"\n\s*(?:Console output|Shim stderr)", reason, maxsplit=1)[0]
    code = _OWN_EXIT.search(head)
    return (CAUSES["boot_failure"].search(head) is not None and code is not None
            and int(code.group(1)) < 128 and _SIGNALLED.search(head) is None)


def classify_reason(reason: str | None) -> str | None:
    """Which cause a reason names; timeout first, since a timeout also 'failed to start'."""
    if not reason:
        return None
    for cause in ("timeout", "shim_exit", "boot_failure"):
        if CAUSES[cause].search(reason):
            return cause
    return None
