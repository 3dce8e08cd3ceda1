"""The release matrix's figures: scenario × check × runtime, each cell the check's verdict on
that runtime, and for each row the first and last release where it was violated.

Cells: `holds`, `violated` (a runtime bug the table does not name for that release), `known`
(violated, and the table names it), `fixed` (holds where a strict entry expects it violated),
`unseen` (holds where a non-strict entry expects a race), `unknown` (could not measure, or the
runtime could not be driven), `absent` (the scenario ran without judging this check),
`skipped`, `not run`. Ranges are read from the raw statuses, so they do not depend on the
known-failures table they are there to check; known / fixed / unseen are read against the
table given (today's), whatever table the gates ran with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from packaging.version import InvalidVersion, Version

from harness.jobs.matrix.releases import covered, span_specifier, spans
from harness.judge.checks import HOLDS, UNKNOWN, VIOLATED, Verdict
from harness.judge.known import (
    FIXED,
    KNOWN,
    UNEXPECTED,
    UNSEEN,
    KnownFailure,
    judge,
    wildcard,
)
from harness.runtime.spec import RuntimeSpec

ABSENT, NOT_RUN, SKIPPED = "absent", "not run", "skipped"
CELLS = (HOLDS, VIOLATED, UNEXPECTED, KNOWN, FIXED, UNSEEN, UNKNOWN, ABSENT, SKIPPED, NOT_RUN)
SYMBOL = {HOLDS: "·", VIOLATED: "V", UNEXPECTED: "E", KNOWN: "K", FIXED: "X", UNSEEN: "N",
          UNKNOWN: "U", ABSENT: "-", SKIPPED: "S", NOT_RUN: " "}
LEGEND = ("· holds, V violated (not in the table), E violated unlike the symptom of the entry "
          "that covers it, K known (violated, tabled), X fixed (holds "
          "where the table expects it violated), N unseen (a tabled race did not show), "
          "U unknown, - not judged, S skipped, blank: not run")
BAD = frozenset({VIOLATED, UNEXPECTED, FIXED, UNKNOWN})    # cells that make a gate red
VIOLATIONS = frozenset({VIOLATED, UNEXPECTED, KNOWN})       # the runtime showed a violation


@dataclass
class Column:
    """One runtime of the matrix: its spec, its version, and what its gate said."""

    spec: str
    version: str
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    unknown: str = ""               # why this runtime could not be judged at all
    exit_code: int | None = None
    wall_s: float | None = None

    @property
    def key(self) -> str:
        """The column's name: the version for a release, the spec for anything else (a wheel
        may carry a release's version number)."""
        return self.version if self.spec == f"boxlite=={self.version}" else self.spec


def cell_of(result: dict[str, Any] | None, check: str) -> str:
    """One cell: the check's worst judgement in one scenario's result (or why there is none)."""
    if result is None:
        return NOT_RUN
    js = [j for j in result.get("judgements", []) if j.get("check") == check]
    if not js:
        return SKIPPED if result.get("outcome") == "skipped" else ABSENT
    words = []
    for j in js:
        status, outcome = j.get("status"), j.get("outcome")
        if status == UNKNOWN or status not in (HOLDS, VIOLATED):
            words.append(UNKNOWN)
        elif status == VIOLATED:
            words.append(outcome if outcome in (KNOWN, UNEXPECTED) else VIOLATED)
        else:
            words.append(outcome if outcome in (FIXED, UNSEEN) else HOLDS)
    order = (UNKNOWN, VIOLATED, UNEXPECTED, FIXED, KNOWN, UNSEEN, HOLDS)
    return min(words, key=order.index)


def rejudge_violations(result: dict[str, Any], version: str, sdk: str,
                       table: list[KnownFailure]) -> dict[str, Any]:
    """One scenario's result with each violated judgement judged again against `table`,
    symptoms included (results keep every verdict's evidence): `known` when an entry's
    symptom shows, `unexpected` when entries cover the check but none shows, `fail` when none
    covers it. Holding and unknown judgements are kept (a witness is not in the results)."""
    out = []
    for j in result.get("judgements", []):
        if j.get("status") == VIOLATED:
            again = judge(Verdict(j["check"], VIOLATED, j.get("evidence") or {},
                                  j.get("summary", "")), version, result.get("nodeid", ""),
                          table, sdk=sdk).to_json()
            j = {**j, "outcome": again["outcome"], "known_failure": again["known_failure"],
                 "symptom_mismatch": again.get("symptom_mismatch", [])}
        out.append(j)
    return {**result, "judgements": out}


def judged_version(column: Column, nodeid: str) -> str:
    """The version a scenario's result was judged against: its own record (the Docker
    reference scenarios in a BoxLite gate judge Docker's version), else the column's."""
    r = column.results.get(nodeid) or {}
    v = r.get("runtime_version")
    return v if isinstance(v, str) and v else column.version


def against_table(cell: str, check: str, version: str, scenario: str,
                  table: list[KnownFailure], sdk: str = "") -> str:
    """A cell read against `table` (today's, not the one the gate ran with): a violation is
    `known` when an entry applies, a check that held is `fixed` (strict entry) or `unseen`
    (non-strict) where one does. A violation judged unlike its entry's symptom stays
    `unexpected` while an entry applies (the summary keeps no evidence to judge it again).
    Other cells are kept. `sdk` ("python", "node") keeps an SDK's own entries to its
    columns; "" lets every entry apply."""
    try:
        entry = next((k for k in table if k.applies(check, version, scenario, sdk)), None)
    except InvalidVersion:
        entry = None
    if cell == UNEXPECTED:
        return UNEXPECTED if entry else VIOLATED
    if cell in VIOLATIONS:
        return KNOWN if entry else VIOLATED
    if cell in (HOLDS, FIXED, UNSEEN):
        return HOLDS if entry is None else FIXED if entry.strict else UNSEEN
    return cell


def _release_order(columns: Sequence[Column]) -> list[str]:
    out = []
    for c in columns:
        try:
            Version(c.key)
        except InvalidVersion:
            continue
        out.append(c.key)
    return out


def row_ranges(cells: dict[str, str], ran: Sequence[str]) -> dict[str, Any]:
    """For one row (cells by version): the first and last release where it was violated, the
    release a fix landed in (the first release after the last violation, when every measured
    release from there on holds) and the one the bug came in (the first violation, when an
    older release held)."""
    violated = [v for v in ran if cells.get(v) in VIOLATIONS]
    out: dict[str, Any] = {"first_violated": violated[0] if violated else None,
                           "last_violated": violated[-1] if violated else None,
                           "fixed_in": None, "came_in": None, "contiguous": True}
    if not violated:
        return out
    try:
        span_specifier(violated, ran)
    except ValueError:
        out["contiguous"] = False
    after = ran[ran.index(violated[-1]) + 1:]
    if after and all(cells.get(v) in (HOLDS, FIXED, UNSEEN) for v in after):
        out["fixed_in"] = after[0]
    before = ran[:ran.index(violated[0])]
    if before and cells.get(before[-1]) in (HOLDS, FIXED, UNSEEN):
        out["came_in"] = violated[0]
    return out


def entry_measure(entry: KnownFailure, rows: list[dict[str, Any]], ran: Sequence[str]
                  ) -> dict[str, Any]:
    """What the matrix measured for one known-failures entry: the releases where a check it
    matches was violated, the range that names them, and where that disagrees with the
    entry's `versions` (releases it claims that held, releases it misses that were
    violated). `measured` is a list of ranges: more than one when the bug went away and came
    back."""
    mine = [r for r in rows if wildcard(entry.check, r["check"])
            and any(wildcard(p, r["scenario"]) for p in entry.scenarios)]
    violated = [v for v in ran if any(r["cells"].get(v) in VIOLATIONS for r in mine)]
    judged = [v for v in ran if any(r["cells"].get(v) in (HOLDS, VIOLATED, KNOWN, FIXED,
                                                          UNSEEN) for r in mine)]
    claims = covered(entry.versions, ran)
    return {"id": entry.id, "versions": str(entry.versions), "rows": len(mine),
            "violated_on": violated, "judged_on": judged, "measured": spans(violated, ran),
            "claims_but_held": [v for v in claims if v in judged and v not in violated],
            "violated_unclaimed": [v for v in violated if v not in claims],
            "agrees": set(claims) & set(judged) == set(violated)}


def rows_from_summary(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a committed matrix summary (matrix-summary.json) with their cells by
    runtime again, and the version a reference scenario (Docker) was judged against
    (`judged_as`, None for the runtime's own). Raises ValueError for a row whose symbols do
    not fit the runtimes."""
    keys = summary["runtimes"]
    word = {sym: w for w, sym in SYMBOL.items()}
    out = []
    for scenario, check, marks, *rest in summary["rows"]:
        judged_as = rest[0] if rest else None
        if len(marks) != len(keys) or any(m not in word for m in marks):
            raise ValueError(f"matrix summary row {scenario} {check}: {marks!r} does not "
                             f"fit {len(keys)} runtimes")
        out.append({"scenario": scenario, "check": check, "judged_as": judged_as,
                    "cells": {k: word[m] for k, m in zip(keys, marks, strict=True)}})
    return out


def build_grid(columns: Sequence[Column], table: list[KnownFailure]) -> dict[str, Any]:
    """The matrix's data from the columns' results (each column a runtime, oldest first):
    rows of (scenario, check) with a cell per runtime and their ranges, each runtime's
    summary, and each known-failures entry against what was measured."""
    ran = _release_order(columns)
    pairs = sorted({(nid, j["check"]) for c in columns for nid, r in c.results.items()
                    for j in r.get("judgements", []) if isinstance(j.get("check"), str)})
    rows = []
    for nid, check in pairs:
        cells = {c.key: (UNKNOWN if c.unknown else against_table(
            cell_of(c.results.get(nid), check), check, judged_version(c, nid), nid, table,
            RuntimeSpec.parse(c.spec).sdk)) for c in columns}
        other = {judged_version(c, nid) for c in columns if nid in c.results} - \
            {c.version for c in columns}
        rows.append({"scenario": nid, "check": check, "cells": cells,
                     "judged_as": other.pop() if len(other) == 1 else None,
                     "steady": len({x for x in cells.values() if x != ABSENT}) <= 1
                     and not set(cells.values()) & (BAD | VIOLATIONS),
                     **row_ranges(cells, ran)})
    runtimes = []
    for c in columns:
        counts = {k: sum(r["cells"][c.key] == k for r in rows) for k in CELLS}
        # Red today: a cell the table does not explain, or a scenario that failed without a
        # verdict (an error outside its checks), which no table can explain.
        red = sorted({r["scenario"] for r in rows if r["cells"][c.key] in BAD} |
                     {nid for nid, r in c.results.items()
                      if r.get("outcome") not in ("passed", "skipped")
                      and not r.get("judgements")})
        runtimes.append({"spec": c.spec, "version": c.version, "key": c.key, "unknown": c.unknown,
                         "exit_code": c.exit_code, "wall_s": c.wall_s,
                         "scenarios": len(c.results), "red_scenarios": red,
                         "green": not c.unknown and c.exit_code in (0, 1) and not red,
                         "cells": counts})
    untabled = [{"scenario": r["scenario"], "check": r["check"],
                 "on": [v for v in ran if r["cells"].get(v) == VIOLATED]}
                for r in rows if VIOLATED in r["cells"].values()]
    return {"runtimes": runtimes, "releases": ran, "rows": rows,
            "entries": [entry_measure(e, rows, ran) for e in table],
            "untabled": untabled,
            "summary": {"runtimes": len(columns),
                        "green": sum(r["green"] for r in runtimes),
                        "rows": len(rows), "changing_rows": sum(not r["steady"] for r in rows),
                        "untabled_rows": len(untabled)}}


def gate_word(runtime: dict[str, Any]) -> str:
    """'green', 'red', or 'UNKNOWN (why)' for one runtime's gate."""
    if runtime["unknown"]:
        return f"UNKNOWN ({runtime['unknown']})"
    return "green" if runtime["green"] else "red"


def render_grid(data: dict[str, Any]) -> str:
    """The matrix for a terminal: each runtime's gate, the rows that are not the same
    everywhere (one symbol per runtime, oldest first) with their ranges, and each table entry
    whose range disagrees with the measurement."""
    versions = [r["key"] for r in data["runtimes"]]
    lines = ["runtimes: " + ", ".join(f"{r['key']} {gate_word(r)}" for r in data["runtimes"]),
             LEGEND, "   ".join(versions)]
    for r in data["rows"]:
        if r["steady"]:
            continue
        marks = " ".join(SYMBOL[r["cells"][v]] for v in versions)
        span = ""
        if r["first_violated"]:
            span = f"violated {r['first_violated']}..{r['last_violated']}"
            if r["fixed_in"]:
                span += f", fixed in {r['fixed_in']}"
            if not r["contiguous"]:
                span += " (not contiguous)"
        lines.append(f"{marks}  {r['scenario']}  {r['check']}  {span}")
    for e in data["entries"]:
        if not e["agrees"] and e["judged_on"]:
            lines.append(f"table {e['id']}: versions {e['versions']!r}, measured "
                         f"{' or '.join(e['measured']) or 'never violated'}"
                         + (f"; claims but held on {', '.join(e['claims_but_held'])}"
                            if e["claims_but_held"] else "")
                         + (f"; violated but not claimed on {', '.join(e['violated_unclaimed'])}"
                            if e["violated_unclaimed"] else ""))
    s = data["summary"]
    lines.append(f"{s['runtimes']} runtimes, {s['green']} green; {s['rows']} scenario checks, "
                 f"{s['changing_rows']} shown (not the same on every runtime, or violated on one); "
                 f"{s['untabled_rows']} "
                 "violated where no table entry names the release")
    return "\n".join(lines)
