"""`boxlite-chaos ripout`: reverting each fix turns its check red, mechanically.

Each entry of fixtures/ripout.toml is run on both sides in its own pytest process and report
folder. An entry passes only when the fixed side is green (the scenario passes and the named
check holds) AND the reverted side is red with the named check `violated`; a setup error, a
timeout, an `unknown` or a different failing check does not count as red.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.common.errors import SetupError
from harness.common.paths import PROJECT
from harness.judge.known import FAILING, read_toml_table
from harness.runtime.spec import DEFAULT_SPEC, RuntimeSpec

TABLE = PROJECT / "fixtures" / "ripout.toml"
SIDE_TIMEOUT_S = 600


@dataclass(frozen=True)
class Side:
    runtime: str
    overrides: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.runtime + "".join(f" +{o}" for o in self.overrides)


@dataclass(frozen=True)
class Entry:
    id: str
    fix: str
    upstream: str
    scenario: str
    check: str
    fixed: Side
    reverted: Side


def load_entries(path: Path = TABLE, reverted_runtime: str | None = None) -> list[Entry]:
    data = read_toml_table(path, "rip-out table")
    out = []
    for i, raw in enumerate(data.get("entry", []), start=1):
        try:
            def side(d: dict[str, Any]) -> Side:
                spec = DEFAULT_SPEC if d["runtime"] == "default" else d["runtime"]
                RuntimeSpec.parse(spec)
                return Side(spec, tuple(d.get("overrides", ())))
            fixed, reverted = side(raw["fixed"]), side(raw["reverted"])
            if reverted_runtime and reverted.runtime != fixed.runtime:
                # A maintainer's own build with the fix reverted replaces the old release.
                RuntimeSpec.parse(reverted_runtime)
                reverted = Side(reverted_runtime, reverted.overrides)
            out.append(Entry(raw["id"], raw["fix"], raw.get("upstream", ""), raw["scenario"],
                             raw["check"], fixed, reverted))
        except (KeyError, TypeError) as exc:
            raise SetupError(f"rip-out table {path}: entry {i} is malformed: {exc!r}") from exc
    return out


@dataclass
class SideResult:
    entry: str
    side: str                       # fixed | reverted
    runtime: str
    outcome: str                    # green | red | not-green | not-red
    reason: str
    check_status: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0

    def row(self, fix: str) -> dict[str, Any]:
        return {"fix": fix, "entry": self.entry, "runtime": self.runtime, "side": self.side,
                "verdict": self.outcome, "check_status": self.check_status,
                "reason": self.reason, "evidence": self.evidence, "wall_s": round(self.wall_s, 1)}


def run_side(entry: Entry, which: str, report: Path) -> SideResult:
    side = entry.fixed if which == "fixed" else entry.reverted
    out = report / "ripout" / entry.id / which
    argv = [sys.executable, "-m", "pytest", str(PROJECT / entry.scenario), "-q",
            "-p", "no:cacheprovider", "-o", "testpaths=scenarios", "--runtime", side.runtime,
            "--chaos-report", str(out)]
    for o in side.overrides:
        argv += ["--chaos-override", o]
    t0 = time.monotonic()
    env = {**os.environ, "BOXLITE_CHAOS_REPORT": str(out)}
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=SIDE_TIMEOUT_S,
                              cwd=PROJECT, env=env)
    except subprocess.TimeoutExpired:
        return SideResult(entry.id, which, side.label, "not-" + _want(which),
                          f"timed out after {SIDE_TIMEOUT_S}s", wall_s=time.monotonic() - t0)
    wall = time.monotonic() - t0
    (out / "pytest.log").parent.mkdir(parents=True, exist_ok=True)
    (out / "pytest.log").write_text(proc.stdout + proc.stderr)
    return judge_side(entry, which, side.label, out / "results.jsonl", proc.returncode, wall)


def _want(which: str) -> str:
    return "green" if which == "fixed" else "red"


def judge_side(entry: Entry, which: str, label: str, results: Path, rc: int,
               wall_s: float) -> SideResult:
    """Decide one side from the run's results (pure apart from reading the file)."""
    want = _want(which)
    rows = [json.loads(x) for x in results.read_text().splitlines() if x.strip()] \
        if results.is_file() else []
    if not rows:
        return SideResult(entry.id, which, label, f"not-{want}",
                          f"setup error: the scenario produced no result (pytest exit {rc})",
                          wall_s=wall_s)
    row = rows[-1]
    js = {j["check"]: j for j in row["judgements"]}
    j = js.get(entry.check)
    if j is None:
        return SideResult(entry.id, which, label, f"not-{want}",
                          f"check {entry.check} was never judged (outcome {row['outcome']})",
                          wall_s=wall_s)
    ev = {"summary": j["summary"], "status": j["status"], "outcome": j["outcome"],
          "scenario_outcome": row["outcome"]}
    if which == "fixed":
        ok = row["outcome"] == "passed" and j["status"] == "holds"
        failing = [c for c, x in js.items() if x["outcome"] in FAILING]
        reason = (f"{entry.check} holds, scenario passed" if ok else
                  f"{entry.check} {j['status']}; scenario {row['outcome']}; failing: {failing}")
        return SideResult(entry.id, which, label, "green" if ok else "not-green", reason,
                          j["status"], ev, wall_s)
    ok = j["status"] == "violated"
    reason = (f"{entry.check} violated: {j['summary']}" if ok else
              f"{entry.check} {j['status']} (red must be this check violated)")
    return SideResult(entry.id, which, label, "red" if ok else "not-red", reason,
                      j["status"], ev, wall_s)


def run_ripout(entries: list[Entry], report: Path) -> list[dict[str, Any]]:
    rows = []
    for e in entries:
        for which in ("fixed", "reverted"):
            r = run_side(e, which, report)
            rows.append(r.row(e.fix))
            print(f"  {e.id:<26} {which:<9} {r.runtime:<34} {r.outcome:<10} {r.reason[:90]}",
                  flush=True)
    return rows


def entry_passes(rows: list[dict[str, Any]], entry_id: str) -> bool:
    sides = {r["side"]: r["verdict"] for r in rows if r["entry"] == entry_id}
    return sides.get("fixed") == "green" and sides.get("reverted") == "red"


def cmd_ripout(args: argparse.Namespace) -> int:
    entries = load_entries(reverted_runtime=args.reverted_runtime)
    if args.entry:
        known = {e.id for e in entries}
        bad = [x for x in args.entry if x not in known]
        if bad:
            raise SetupError(f"unknown rip-out entry {bad}; known: {sorted(known)}")
        entries = [e for e in entries if e.id in args.entry]
    report = Path(args.report).resolve() if args.report else \
        PROJECT / "reports" / f"ripout-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    report.mkdir(parents=True, exist_ok=True)
    print(f"boxlite-chaos ripout: {len(entries)} entries, report {report}")
    rows = run_ripout(entries, report)
    (report / "ripout.json").write_text(json.dumps({"rows": rows}, indent=1))
    print("\nfix × runtime × verdict")
    failed = 0
    for e in entries:
        ok = entry_passes(rows, e.id)
        failed += not ok
        print(f"  {'PASS' if ok else 'FAIL'}  {e.id}: {e.check}")
    from harness.report.build import build_report
    (report / "results.jsonl").touch()
    build_report(report)
    return 1 if failed else 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("ripout", help="run each fix's check on the fixed and reverted runtime")
    p.add_argument("--entry", action="append", help="only this entry (repeatable)")
    p.add_argument("--reverted-runtime", help="wheel:PATH of your build with the fix reverted "
                   "(replaces the pre-fix release on entries whose sides differ by runtime)")
    p.add_argument("--report", help="report folder (default reports/ripout-<time>)")
    p.set_defaults(fn=cmd_ripout)
