"""The known-failures table: genuine runtime bugs, keyed by check, runtime version range and
symptom (what the runtime did), with the witness that shows the bug's path ran.

On an affected version a violation of the check that shows the entry's `symptom` (matchers over
the verdict's evidence: the status read, the reason's cause, which processes were left) is
reported as `known` and does not fail the scenario; a violation of the same check that does not
show it is `unexpected` and fails, naming the entry and what was expected and seen (pytest's
`xfail(raises=...)`, web-platform-tests' expected statuses). The check holding there is
`fixed` and fails it (strict), so the table is updated the day upstream fixes the bug — but only
when the entry's `witness` was observed (the facts a scenario records when the bug's path ran:
the operation answered, the phase reached, the race window hit); without it the verdict is
`unknown`, with the reason. `unknown` always fails, known or not.

A bug that shows only on some runs (a race) is an entry with `strict = false` and `seen` (how
often repeat runs saw it, e.g. "3 of 5 gate runs, 2026-11-29"): there the check holding is
reported as `unseen` and passes. A strict entry must have been seen on every run that reached
it (`boxlite-chaos gate --repeat N` shows it).

An entry's `versions` is measured, not guessed: `measured` names the committed summary of the
release matrix (`boxlite-chaos matrix`, fixtures/matrix/) whose run showed the bug on exactly
those releases; tests/test_known_ranges.py holds every entry to it.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from harness.common.errors import SetupError
from harness.common.paths import PROJECT
from harness.judge.checks import HOLDS, UNKNOWN, VIOLATED, Verdict

DEFAULT_TABLE = PROJECT / "fixtures" / "known_failures.toml"

PASS, FAIL, KNOWN, FIXED, UNSEEN = "pass", "fail", "known", "fixed", "unseen"
# A violation of a check an entry covers that does not show the entry's symptom: a new bug.
UNEXPECTED = "unexpected"
FAILING = (FAIL, FIXED, UNEXPECTED)
OUTCOMES = (PASS, FAIL, KNOWN, FIXED, UNSEEN, UNEXPECTED)
_MISSING = object()


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _resolve(root: Any, path: str) -> Any:
    """The value at a dotted `path` in `root`. A key may hold dots itself ("live.get_info"):
    the longest key that the path starts with is taken. Through a list, the list of each
    element's value (elements without it left out). `_MISSING` when nothing is there."""
    if path == "":
        return root
    if isinstance(root, list):
        return _Many(x for x in (_resolve(e, path) for e in root) if x is not _MISSING)
    if not isinstance(root, dict):
        return _MISSING
    keys = [k for k in root if isinstance(k, str) and (path == k or path.startswith(k + "."))]
    if not keys:
        return _MISSING
    key = max(keys, key=len)
    return _resolve(root[key], path[len(key) + 1:])


class _Many(list):
    """Values gathered through a list: a matcher must hold for every one (and one at least)."""


MATCHER_KEYS = ("re", "in", "absent", "min", "max", "len", "not")


@dataclass(frozen=True)
class Matcher:
    """One expectation about one value: equal to a scalar, one of a list, `{re = ...}` (a
    regex search in its text), `{absent = true|false}` (missing or null: TOML has no null),
    `{min = N}` / `{max = N}`, `{len = N}` (a list's length), `{not = <matcher>}`. Raises
    TypeError when malformed (re.error for a bad regex)."""

    raw: Any

    def __post_init__(self) -> None:
        if isinstance(self.raw, dict):
            bad = [k for k in self.raw if k not in MATCHER_KEYS]
            if bad or not self.raw:
                raise TypeError(f"matcher {self.raw!r}: keys must be among {MATCHER_KEYS}")
            if "re" in self.raw:
                re.compile(str(self.raw["re"]))
            if "not" in self.raw:
                Matcher(self.raw["not"])

    def test(self, value: Any) -> bool:
        raw = self.raw
        if isinstance(value, _Many) and not (isinstance(raw, dict) and "len" in raw):
            return bool(value) and all(self.test(v) for v in value)
        if isinstance(raw, dict):
            return all(self._one(k, want, value) for k, want in raw.items())
        if value is _MISSING:
            return False
        if isinstance(raw, list):
            return value in raw
        return value == raw

    def _one(self, key: str, want: Any, value: Any) -> bool:
        if key == "absent":
            return (value is _MISSING or value is None) == bool(want)
        if key == "not":
            return not Matcher(want).test(value)
        if value is _MISSING:
            return False
        if key == "re":
            return re.search(str(want), _text(value)) is not None
        if key == "in":
            return value in want
        if key == "len":
            return isinstance(value, list) and len(value) == want
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        return value >= want if key == "min" else value <= want

    def __str__(self) -> str:
        raw = self.raw
        if isinstance(raw, dict):
            return ", ".join(f"{k} {v!r}" for k, v in raw.items())
        if isinstance(raw, list):
            return f"one of {raw!r}"
        return f"== {raw!r}"


@dataclass(frozen=True)
class Symptom:
    """What the runtime did when the bug showed: matchers over a violated verdict's evidence,
    keyed by dotted path (`summary` is the verdict's summary line, `check` its id)."""

    matchers: tuple[tuple[str, Matcher], ...]

    @classmethod
    def parse(cls, raw: Any) -> Symptom:
        """Raises TypeError for anything but a non-empty table of path = matcher."""
        if not isinstance(raw, dict) or not raw:
            raise TypeError(f"symptom must be a table of path = matcher, not {raw!r}")
        return cls(tuple((str(k), Matcher(v)) for k, v in raw.items()))

    def mismatches(self, verdict: Verdict) -> list[str]:
        """Each expectation the verdict does not meet, as 'path: expected X, saw Y'; empty
        when it shows the symptom."""
        root = {**verdict.evidence, "summary": verdict.summary, "check": verdict.check}
        out = []
        for path, m in self.matchers:
            got = _resolve(root, path)
            if not m.test(got):
                saw = "nothing" if got is _MISSING else _text(got)[:160]
                out.append(f"{path}: expected {m}, saw {saw}")
        return out

    def __str__(self) -> str:
        return "; ".join(f"{p} {m}" for p, m in self.matchers)


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
    symptom: Symptom | None = None      # what a violation must show to be this bug
    witness: tuple[str, ...] = ()       # facts showing the bug's path ran (patterns, all needed)
    sdk: str = ""                       # "python" | "node": an SDK's own bug; "" the core's

    def unwitnessed(self, facts: Iterable[str]) -> list[str]:
        """The witness patterns no observed fact matches."""
        seen = list(facts)
        return [w for w in self.witness if not any(wildcard(w, f) for f in seen)]

    def applies(self, check_id: str, version: str, scenario: str, sdk: str = "") -> bool:
        """Whether the entry covers `check_id` in `scenario` on `version` through `sdk` (an
        entry naming an SDK covers that SDK's runs only; `sdk` "" matches any entry)."""
        return ((not self.sdk or not sdk or self.sdk == sdk)
                and wildcard(self.check, check_id)
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


SDKS = ("python", "node")


def _sdk(raw: Any) -> str:
    """An entry's SDK: "" (the core's bug, every SDK) or one of SDKS; TypeError else."""
    if raw != "" and raw not in SDKS:
        raise TypeError(f"sdk must be one of {SDKS}, not {raw!r}")
    return raw


def _names(raw: Any) -> tuple[str, ...]:
    """A witness: a fact name or a list of them; TypeError for anything else."""
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(x, str) and x for x in items):
        raise TypeError(f"witness must be a fact name or a list of them, not {raw!r}")
    return tuple(items)


def load_table(path: Path = DEFAULT_TABLE) -> list[KnownFailure]:
    """Every entry of the table at `path`. Raises SetupError naming the entry when one is
    malformed: a required field missing, a non-strict entry without `seen`, an entry without
    a `symptom`, or a strict one without a `witness`."""
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
            if "symptom" not in raw:
                raise KeyError("symptom (what the runtime did when the bug showed)")
            if strict and "witness" not in raw:
                raise KeyError("witness (what shows the bug's path ran; a strict entry "
                               "holding is fixed only with it)")
            out.append(KnownFailure(raw["id"], raw["check"], Releases.parse(raw["versions"]),
                                    (scen,) if isinstance(scen, str) else tuple(scen),
                                    raw["reason"], raw["evidence"], raw.get("upstream", ""),
                                    strict, str(raw.get("seen", "")),
                                    str(raw.get("measured", "")),
                                    _patterns(raw.get("excluding", [])),
                                    Symptom.parse(raw["symptom"]),
                                    _names(raw.get("witness", [])), _sdk(raw.get("sdk", ""))))
        except (KeyError, TypeError, AttributeError, InvalidSpecifier, re.error) as exc:
            raise SetupError(f"known-failures table {path}: entry {i} is malformed: {exc!r}") \
                from exc
    return out


@dataclass
class Judgement:
    verdict: Verdict
    outcome: str                    # pass | fail | known | fixed | unseen | unexpected
    known: KnownFailure | None = None
    # unexpected: how the violation differs from the entry's symptom; unknown for lack of a
    # witness: the witness patterns not observed.
    mismatch: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        out = {**self.verdict.to_json(), "outcome": self.outcome,
               "known_failure": self.known.id if self.known else None}
        if self.mismatch:
            out["symptom_mismatch"] = self.mismatch
        return out


def facts_from_event(event: dict[str, Any]) -> list[str]:
    """The witness facts one history event shows: `sent:OP` when an operation was sent,
    `called:OP` when the runtime answered it (with `ok:OP` or `failed:OP`; a harness timeout
    is no answer), `fault:NAME` when a fault was injected, and a `witness` event's name."""
    kind, op = event.get("kind"), event.get("op")
    if kind == "invoke" and op:
        return [f"sent:{op}"]
    if kind == "ok" and op:
        return [f"called:{op}", f"ok:{op}"]
    if kind == "fail" and op and isinstance(event.get("error"), dict):
        return [f"called:{op}", f"failed:{op}"]
    if kind == "fault" and event.get("fault"):
        return [f"fault:{event['fault']}"]
    if kind == "witness" and event.get("name"):
        return [str(event["name"])]
    return []


def facts_of(verdict: Verdict, witnessed: Iterable[str] = ()) -> list[str]:
    """The facts a verdict is judged with: the scenario's witnesses and those the check
    itself recorded in its evidence (`witnessed`, a list of names)."""
    own = verdict.evidence.get("witnessed") if isinstance(verdict.evidence, dict) else None
    return [*witnessed, *(own if isinstance(own, list) else [])]


def judge(verdict: Verdict, version: str, scenario: str, table: list[KnownFailure],
          witnessed: Iterable[str] = (), sdk: str = "") -> Judgement:
    """The outcome of `verdict` on runtime `version` in `scenario`.

    A violation is `known` when an entry covering its check shows its symptom (the first
    such entry is named), `unexpected` when entries cover the check but none shows it, and
    `fail` when none covers it. A holding check covered by a strict entry is `fixed` when
    that entry's witness is among `witnessed` (facts the scenario recorded) or the verdict's
    own `witnessed` evidence, and otherwise `unknown` (outcome fail), saying which witness is
    missing; covered only by non-strict entries it is `unseen`. `sdk` is the SDK the runtime
    was driven through ("python", "node"; "" when not known): an entry naming another SDK
    does not cover it."""
    entries = [k for k in table if k.applies(verdict.check, version, scenario, sdk)]
    kf = entries[0] if entries else None
    if verdict.status == UNKNOWN:
        return Judgement(verdict, FAIL, kf)
    if verdict.status == VIOLATED:
        if not entries:
            return Judgement(verdict, FAIL)
        misses: list[str] = []
        for k in entries:
            miss = k.symptom.mismatches(verdict) if k.symptom else []
            if not miss:
                return Judgement(verdict, KNOWN, k)
            misses += [f"{k.id}: {m}" for m in miss]
        return Judgement(verdict, UNEXPECTED, kf, misses)
    if verdict.status == HOLDS:
        strict = [k for k in entries if k.strict]
        if not entries:
            return Judgement(verdict, PASS)
        if not strict:
            return Judgement(verdict, UNSEEN, kf)
        facts = facts_of(verdict, witnessed)
        for k in strict:
            if not k.unwitnessed(facts):
                return Judgement(verdict, FIXED, k)
        k = strict[0]
        missing = k.unwitnessed(facts)
        held = Verdict(verdict.check, UNKNOWN, {**verdict.evidence, "held": verdict.summary,
                                                "witness_missing": missing},
                       f"holds, but known failure {k.id} cannot be called fixed: no witness "
                       f"that its path ran ({', '.join(missing)} not observed)")
        return Judgement(held, FAIL, k, [f"{k.id}: witness {w} not observed" for w in missing])
    return Judgement(verdict, FAIL, kf)


def describe(j: Judgement) -> str:
    """One line for a failing judgement: the check, its outcome and why."""
    if j.outcome == UNEXPECTED and j.known is not None:
        return (f"{j.verdict.check}: violated - not the known symptom of {j.known.id} "
                f"({'; '.join(j.mismatch)}) - {j.verdict.summary}")
    return f"{j.verdict.check}: {j.outcome.upper()} ({j.verdict.status}) - {j.verdict.summary}"
