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


def classify_reason(reason: str | None) -> str | None:
    """Which cause a reason names; timeout first, since a timeout also 'failed to start'."""
    if not reason:
        return None
    for cause in ("timeout", "shim_exit", "boot_failure"):
        if CAUSES[cause].search(reason):
            return cause
    return None
