"""Stability of the gate over repeat runs (`gate --repeat N`): per scenario and check, how often
each outcome came out, and which checks flake, i.e. change outcome from one run to another.

`build_stability` reads the runs' results.jsonl and writes stability.json and stability.html
into the repeat folder; `render_stability_table` prints the same figures for a terminal. A check
counts once per run: judged more than once in one scenario, by its worst judgement.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

from harness.common.errors import SetupError
from harness.judge.checks import HOLDS, UNKNOWN, VIOLATED
from harness.judge.known import FAIL, FIXED, KNOWN, PASS, UNEXPECTED
from harness.report.build import UNSEEN, read_run, templates

OUTCOMES = (PASS, FAIL, UNEXPECTED, KNOWN, FIXED, UNSEEN)
# A check that is `known` in some runs and `unseen` in others is a race that a non-strict
# known-failures entry expects: told apart from the flakes, not counted among them.
RACE = frozenset({KNOWN, UNSEEN})
STATUSES = (HOLDS, VIOLATED, UNKNOWN)
SCENARIO_OUTCOMES = ("passed", "failed", "skipped")
GREEN = ("passed", "skipped")
ABSENT = "absent"           # the scenario ran and did not judge this check
NOT_RUN = "not run"         # the scenario has no result in this run
# Worst first: which of a check's judgements in one scenario stands for the run.
SEVERITY = {FAIL: 0, UNEXPECTED: 0, FIXED: 1, KNOWN: 2, UNSEEN: 3, PASS: 4}
STATUS_SEVERITY = {UNKNOWN: 0, VIOLATED: 1, HOLDS: 2}
SYMBOL = {PASS: "P", FAIL: "F", UNKNOWN: "U", KNOWN: "K", FIXED: "X", UNSEEN: "N", ABSENT: "-",
          UNEXPECTED: "E",
          NOT_RUN: ".", "passed": "P", "failed": "F", "skipped": "S"}
LEGEND = ("per run: P pass, F fail, E violated unlike its known failure's symptom (fails), "
          "U unknown (fails), K known, X fixed, N unseen (a non-strict "
          "known failure did not show), - not judged, . scenario did not run, S skipped")


# -- reading the runs ---------------------------------------------------------------------------

def _junit_problems(run: Path) -> int:
    """Errors and failures pytest counted in the run's junit.xml (0 when there is none): a
    scenario that failed in set-up writes no result line, but is not a green gate."""
    try:
        root = ET.parse(run / "junit.xml").getroot()
    except (OSError, ET.ParseError):
        return 0
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    total = 0
    for suite in suites:
        for attr in ("errors", "failures"):
            try:
                total += int(suite.get(attr, "0"))
            except ValueError:
                pass
    return total


def _gate(index: int, folder: Path, run: Path, results: dict[str, dict[str, Any]]
          ) -> dict[str, Any]:
    counts = Counter(r["outcome"] for r in results.values())
    red = sorted(nid for nid, r in results.items() if r["outcome"] not in GREEN)
    why = [f"{nid} {results[nid]['outcome']}" for nid in red]
    junit = _junit_problems(run)
    if junit > len(red):
        why.append(f"junit.xml counts {junit} errors and failures, {len(red)} of them with "
                   "a result (the others failed outside a scenario's steps)")
    try:
        facts = json.loads((run / "run.json").read_text())
    except (OSError, ValueError):
        facts = {}
    return {"run": index, "path": _relative(folder, run), "gate": "red" if why else "green",
            "green": not why, "seed": facts.get("seed"),
            "harness_commit": (facts.get("machine") or {}).get("harness_commit"),
            "scenarios": len(results),
            **{o: counts.get(o, 0) for o in SCENARIO_OUTCOMES}, "red_because": why}


def _relative(folder: Path, path: Path) -> str:
    try:
        return Path(os.path.relpath(path, folder)).as_posix() \
            if path.resolve().is_relative_to(folder.resolve()) else str(path)
    except ValueError:
        return str(path)


# -- the figures --------------------------------------------------------------------------------

def _worst(judgements: list[dict[str, Any]]) -> dict[str, Any]:
    return min(judgements, key=lambda j: (SEVERITY.get(j["outcome"], -1),
                                          STATUS_SEVERITY.get(j.get("status"), -1)))


def _label(cell: dict[str, Any] | str) -> str:
    """A run's word for a check: its outcome, `unknown` for a fail that could not measure,
    or absent / not run."""
    if isinstance(cell, str):
        return cell
    return UNKNOWN if cell["outcome"] == FAIL and cell.get("status") == UNKNOWN \
        else cell["outcome"]


def _counts(values: list[str], keys: tuple[str, ...]) -> dict[str, int]:
    c = Counter(values)
    return {**{k: c.get(k, 0) for k in keys}, **{k: n for k, n in c.items() if k not in keys}}


def _sides(cells: list[dict[str, Any] | str], scenario_outcomes: list[str]
           ) -> list[dict[str, Any]]:
    """Per distinct outcome among the runs where the scenario ran: which runs, and what one
    of them said (the first run's summary)."""
    sides: dict[str, dict[str, Any]] = {}
    for i, cell in enumerate(cells, start=1):
        if cell == NOT_RUN:
            continue
        outcome = cell["outcome"] if isinstance(cell, dict) else ABSENT
        side = sides.get(outcome)
        if side is None:
            summary = cell.get("summary", "") if isinstance(cell, dict) else \
                f"the scenario ran ({scenario_outcomes[i - 1]}) without judging this check"
            side = sides[outcome] = {"outcome": outcome, "runs": [], "statuses": {},
                                     "summary": summary}
        side["runs"].append(i)
        if isinstance(cell, dict):
            status = cell.get("status", "?")
            side["statuses"][status] = side["statuses"].get(status, 0) + 1
    return list(sides.values())


def _check_row(scenario: str, check: str, per_run: list[dict[str, dict[str, Any]]]
               ) -> dict[str, Any]:
    cells: list[dict[str, Any] | str] = []
    scenario_outcomes = []
    for results in per_run:
        r = results.get(scenario)
        scenario_outcomes.append(r["outcome"] if r else NOT_RUN)
        if r is None:
            cells.append(NOT_RUN)
            continue
        js = [j for j in r["judgements"] if j["check"] == check]
        cells.append(_worst(js) if js else ABSENT)
    judged = [c for c in cells if isinstance(c, dict)]
    sides = _sides(cells, scenario_outcomes)
    labels = [_label(c) for c in cells]
    return {"scenario": scenario, "check": check,
            "outcomes": _counts([c["outcome"] for c in judged], OUTCOMES),
            "statuses": _counts([c.get("status", "?") for c in judged], STATUSES),
            "absent": len(cells) - len(judged), "not_run": labels.count(NOT_RUN),
            "per_run": labels, "flake": len(sides) > 1, "sides": sides,
            "race": len(sides) > 1 and {side["outcome"] for side in sides} <= RACE,
            "identical_pass": all(label == PASS for label in labels),
            "identical_known": all(label == KNOWN for label in labels)}


def _scenario_row(scenario: str, per_run: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    labels = [r[scenario]["outcome"] if scenario in r else NOT_RUN for r in per_run]
    runtimes = sorted({r[scenario].get("runtime", "?") for r in per_run if scenario in r})
    return {"scenario": scenario, "runtimes": runtimes,
            "outcomes": _counts([x for x in labels if x != NOT_RUN], SCENARIO_OUTCOMES),
            "not_run": labels.count(NOT_RUN), "per_run": labels,
            "flake": len(set(labels)) > 1}


def stability_data(folder: Path, runs: list[Path], per_run: list[dict[str, dict[str, Any]]]
                   ) -> dict[str, Any]:
    """The figures of build_stability from runs already read (read_run), in run order."""
    scenarios = sorted({nid for results in per_run for nid in results})
    pairs = sorted({(nid, j["check"]) for results in per_run for nid, r in results.items()
                    for j in r["judgements"]})
    checks = [_check_row(nid, check, per_run) for nid, check in pairs]
    # Flakes first, then the expected races, then whatever did not pass in every run, then
    # the identical passes.
    checks.sort(key=lambda c: (not c["flake"], c["race"], c["identical_pass"], c["scenario"],
                               c["check"]))
    gates = [_gate(i, folder, run, results)
             for i, (run, results) in enumerate(zip(runs, per_run, strict=True), start=1)]
    scenario_rows = [_scenario_row(nid, per_run) for nid in scenarios]
    flakes = [c for c in checks if c["flake"] and not c["race"]]
    races = [c for c in checks if c["race"]]
    return {
        "folder": str(folder),
        "runtimes": sorted({r.get("runtime", "?") for results in per_run
                            for r in results.values()}),
        # Repeat runs compare like with like only if they judged the same harness code with
        # the same seed: a tree edited during the repeat ('-dirty', or commits that differ)
        # makes any difference suspect.
        "same_code": len({(g["harness_commit"], g["seed"]) for g in gates}) == 1
        and not any((g["harness_commit"] or "").endswith("-dirty") for g in gates),
        "summary": {"runs": len(runs), "green_runs": sum(g["gate"] == "green" for g in gates),
                    "scenarios": len(scenarios), "checks_judged": len(checks),
                    "flakes": len(flakes), "races": len(races),
                    "flaky_scenarios": sum(s["flake"] for s in scenario_rows)},
        "runs": gates,
        "scenarios": scenario_rows,
        "checks": checks,
        "flakes": flakes,
        "races": races,
    }


def build_stability(folder: Path, runs: list[Path]) -> dict[str, Any]:
    """Compare the repeat runs `runs` (in order: run 1 first), write `folder`/stability.json
    (the returned dict) and `folder`/stability.html, and return the dict.

    Raises SetupError when `runs` is empty, when a run folder holds no results.jsonl (naming
    its path), or when a line of one is torn or not a scenario's result (naming the file and
    line number); OSError when `folder` cannot be written.
    """
    if not runs:
        raise SetupError(f"{folder}: no runs to compare")
    data = stability_data(folder, runs, [read_run(run) for run in runs])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stability.json").write_text(json.dumps(data, indent=1))
    html = templates().get_template("stability.html.j2").render(
        data=data, name=folder.name, symbol=SYMBOL, legend=LEGEND)
    (folder / "stability.html").write_text(html)
    return data


# -- the terminal -------------------------------------------------------------------------------

def _count_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in counts.items() if n)


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def summary_line(data: dict[str, Any]) -> str:
    """'5 runs, 3 green; 12 scenarios, 40 checks judged; 2 flakes' (or 'no flakes: ...')."""
    s = data["summary"]
    line = (f"{_n(s['runs'], 'run')}, {s['green_runs']} green; {_n(s['scenarios'], 'scenario')}"
            f", {_n(s['checks_judged'], 'check')} judged; ")
    if not s["flakes"] and not s.get("flaky_scenarios"):
        line += ("no flakes: every check had the same outcome in every run where its "
                 "scenario ran")
    else:
        line += _n(s["flakes"], "flake")
        if s.get("flaky_scenarios"):
            line += f" ({_n(s['flaky_scenarios'], 'scenario')} changed outcome between runs)"
    if s.get("races"):
        line += (f"{',' if s['flakes'] else ''} apart from {_n(s['races'], 'race')} a "
                 "non-strict known failure expects (known in some runs, unseen in others)")
    return line


def render_stability_table(data: dict[str, Any], verbose: bool = False) -> str:
    """The stability figures for a terminal: the gate per run, one line per scenario's outcome
    that changed and per scenario and check that did not pass in every run (flakes first),
    and a summary line that says so explicitly when there are no flakes."""
    lines = ["gate per run: " + ", ".join(f"{g['run']} {g['gate']}" for g in data["runs"])]
    steady_known = 0
    if not data.get("same_code", True):
        lines.append("WARNING: the runs did not all judge the same committed harness code and "
                     "seed: " + ", ".join(f"{g['run']} {g.get('harness_commit')} seed "
                                          f"{g.get('seed')}" for g in data["runs"]))
    rows = []
    for s in data["scenarios"]:
        if s["flake"]:
            rows.append(("FLAKE", s["per_run"], _count_text(
                {**s["outcomes"], NOT_RUN: s["not_run"]}), s["scenario"], "(scenario outcome)"))
    for c in data["checks"]:
        if c["identical_pass"]:
            continue
        if c["identical_known"] and not verbose:
            steady_known += 1
            continue
        counts = {**{k: n for k, n in c["outcomes"].items() if k != FAIL},
                  FAIL: c["outcomes"].get(FAIL, 0) - c["statuses"].get(UNKNOWN, 0),
                  UNKNOWN: c["statuses"].get(UNKNOWN, 0), ABSENT: c["absent"] - c["not_run"],
                  NOT_RUN: c["not_run"]}
        flag = "race" if c["race"] else "FLAKE" if c["flake"] else ""
        rows.append((flag, c["per_run"], _count_text(counts),
                     c["scenario"], c["check"]))
    if rows:
        width = max(len(r[2]) for r in rows)
        lines.append(LEGEND)
        for flag, per_run, counts, scenario, check in rows:
            runs = " ".join(SYMBOL.get(x, "?") for x in per_run)
            lines.append(f"{flag:<7}{runs}  {counts:<{width}}  {scenario}  {check}")
    elif not steady_known:
        lines.append("every check passed in every run")
    if steady_known:
        lines.append(f"{_n(steady_known, 'check')} known (a tabled runtime bug) in every run: "
                     "listed in stability.html")
    lines.append(summary_line(data))
    return "\n".join(lines)
