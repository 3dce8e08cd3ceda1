"""The known-failures table: genuine runtime bugs, keyed by check and runtime version range.

On an affected version a violation of the check is reported as `known` and does not fail the
scenario; the check holding there is reported as `fixed` and fails it (strict), so the table is
updated the day upstream fixes the bug. `unknown` always fails, known or not.

A bug that shows only on some runs (a race) is an entry with `strict = false` and `seen` (how
often repeat runs saw it, e.g. "3 of 5 gate runs, 2026-11-29"): there the check holding is
reported as `unseen` and passes. A strict entry must have been seen on every run that reached
it (`boxlite-chaos gate --repeat N` shows it).

An entry's `versions` is measured, not guessed: `measured` names the committed summary of the
release matrix (`boxlite-chaos matrix`, fixtures/matrix/) whose run showed the bug on exactly
those releases; tests/test_known_ranges.py holds every entry to it.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from harness.common.errors import SetupError
from harness.common.paths import PROJECT
from harness.judge.checks import HOLDS, UNKNOWN, VIOLATED, Verdict

DEFAULT_TABLE = PROJECT / "fixtures" / "known_failures.toml"

PASS, FAIL, KNOWN, FIXED, UNSEEN = "pass", "fail", "known", "fixed", "unseen"
FAILING = (FAIL, FIXED)
OUTCOMES = (PASS, FAIL, KNOWN, FIXED, UNSEEN)


@dataclass(frozen=True)
class Releases:
    """An entry's affected versions: one PEP 440 range, or several (any of them), for a bug
    that went away and came back. Written as a string or a list of strings in the table."""

    ranges: tuple[SpecifierSet, ...]

    @classmethod
    def parse(cls, raw: Any) -> Releases:
        """Raises TypeError for something other than a string or a list of strings, and
        InvalidSpecifier for a malformed range."""
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list) or not items or \
                not all(isinstance(x, str) for x in items):
            raise TypeError(f"versions must be a range or a list of ranges, not {raw!r}")
        return cls(tuple(SpecifierSet(x) for x in items))

    def contains(self, version: str | Version, prereleases: bool | None = None) -> bool:
        return any(r.contains(version, prereleases=prereleases) for r in self.ranges)

    def __contains__(self, version: str | Version) -> bool:
        return self.contains(version)

    def __str__(self) -> str:
        return " or ".join(str(r) for r in self.ranges)


@dataclass(frozen=True)
class KnownFailure:
    id: str
    check: str                  # pattern over check ids; only * is a wildcard
    versions: Releases | SpecifierSet
    scenarios: tuple[str, ...]  # patterns over scenario node ids ("*" for all)
    reason: str
    evidence: str
    upstream: str = ""
    strict: bool = True         # False: a race, seen on some runs only (see `seen`)
    seen: str = ""              # how often repeat runs saw it; required when not strict
    measured: str = ""          # the release matrix whose run measured `versions`
    excluding: tuple[str, ...] = ()     # check patterns the entry does not cover

    def applies(self, check_id: str, version: str, scenario: str) -> bool:
        return (wildcard(self.check, check_id)
                and not any(wildcard(p, check_id) for p in self.excluding)
                and any(wildcard(p, scenario) for p in self.scenarios)
                and Version(version) in self.versions)


def wildcard(pattern: str, value: str) -> bool:
    """Only `*` is special, so check ids with brackets match literally."""
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), value) is not None


def read_toml_table(path: Path, what: str) -> dict[str, Any]:
    """A committed TOML table (known failures, rip-out entries); SetupError naming `what`
    and the path when it cannot be read or parsed."""
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SetupError(f"{what} {path}: {exc}") from exc


def _patterns(raw: Any) -> tuple[str, ...]:
    """A list of check patterns (`excluding`); TypeError for anything else."""
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise TypeError(f"excluding must be a list of check patterns, not {raw!r}")
    return tuple(raw)


def load_table(path: Path = DEFAULT_TABLE) -> list[KnownFailure]:
    data = read_toml_table(path, "known-failures table")
    out = []
    for i, raw in enumerate(data.get("failure", []), start=1):
        try:
            scen = raw.get("scenarios", "*")
            strict = raw.get("strict", True)
            if not isinstance(strict, bool):
                raise TypeError(f"strict must be true or false, not {strict!r}")
            if not strict and not str(raw.get("seen", "")).strip():
                raise KeyError("seen (a non-strict entry says how often it was seen)")
            out.append(KnownFailure(raw["id"], raw["check"], Releases.parse(raw["versions"]),
                                    (scen,) if isinstance(scen, str) else tuple(scen),
                                    raw["reason"], raw["evidence"], raw.get("upstream", ""),
                                    strict, str(raw.get("seen", "")),
                                    str(raw.get("measured", "")),
                                    _patterns(raw.get("excluding", []))))
        except (KeyError, TypeError, AttributeError, InvalidSpecifier) as exc:
            raise SetupError(f"known-failures table {path}: entry {i} is malformed: {exc!r}") \
                from exc
    return out


@dataclass
class Judgement:
    verdict: Verdict
    outcome: str                    # pass | fail | known | fixed
    known: KnownFailure | None = None

    def to_json(self) -> dict:
        return {**self.verdict.to_json(), "outcome": self.outcome,
                "known_failure": self.known.id if self.known else None}


def judge(verdict: Verdict, version: str, scenario: str,
          table: list[KnownFailure]) -> Judgement:
    kf = next((k for k in table if k.applies(verdict.check, version, scenario)), None)
    if verdict.status == UNKNOWN:
        return Judgement(verdict, FAIL, kf)
    if verdict.status == VIOLATED:
        return Judgement(verdict, KNOWN if kf else FAIL, kf)
    if verdict.status == HOLDS:
        if kf is None:
            return Judgement(verdict, PASS, kf)
        return Judgement(verdict, FIXED if kf.strict else UNSEEN, kf)
    return Judgement(verdict, FAIL, kf)
