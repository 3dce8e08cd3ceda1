"""`boxlite-chaos conformance`: the canonical failure pattern against Docker, the default
BoxLite runtime and any --runtime given, side by side.

Each column is one pytest run of scenarios/conformance (`-k docker`, or `-k boxlite` with
its --runtime) into its own folder under the run's report folder; the matrix (part of the
pattern x target -> verdict, with evidence) is printed and written to conformance.json there.
A column that cannot run (no dockerd, no local registry for a release before 0.10, a version
that does not exist) says `unknown` with the reason, and never stops the other columns.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.common.paths import PROJECT
from harness.judge.checks import HOLDS, UNKNOWN, VIOLATED
from harness.runtime.spec import DEFAULT_SPEC, RuntimeSpec
from harness.targets.pattern import ROWS, row_of
from harness.targets.scenario import CONFORMANCE_ROWS

SCENARIOS = PROJECT / "scenarios" / "conformance"
COLUMN_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Column:
    kind: str                   # docker | boxlite
    spec: str | None            # the BoxLite runtime spec; None for Docker

    @property
    def name(self) -> str:
        return self.spec or self.kind

    @property
    def folder(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name)


def columns(runtimes: Sequence[str], docker: bool = True, default: bool = True) -> list[Column]:
    """Docker first, then the default runtime, then each --runtime once. A malformed spec
    raises SpecError before anything runs."""
    specs = ([DEFAULT_SPEC] if default else []) + list(runtimes)
    out = [Column("docker", None)] if docker else []
    for spec in dict.fromkeys(s.strip() for s in specs):
        RuntimeSpec.parse(spec)
        out.append(Column("boxlite", spec))
    return out


def run_column(col: Column, report: Path, k: str | None = None,
               timeout_s: float = COLUMN_TIMEOUT_S) -> dict[str, Any]:
    """One pytest run of the conformance scenarios for this column; returns how it ended."""
    out = report / col.folder
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFORMANCE_ROWS).unlink(missing_ok=True)
    expr = col.kind if not k else f"({k}) and {col.kind}"
    argv = [sys.executable, "-m", "pytest", str(SCENARIOS), "-k", expr,
            "--runtime", col.spec or DEFAULT_SPEC, "--chaos-report", str(out),
            "--junitxml", str(out / "junit.xml"), "-p", "no:cacheprovider", "-q",
            "-o", "testpaths=scenarios"]
    env = {**os.environ, "BOXLITE_CHAOS_REPORT": str(out)}
    log = out / "pytest.log"
    with open(log, "wb") as fh:
        try:
            rc = subprocess.run(argv, cwd=PROJECT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                timeout=timeout_s).returncode
            error = None
        except subprocess.TimeoutExpired:
            rc, error = None, f"the column's run passed its {timeout_s:.0f}s limit"
    return {"column": col.name, "folder": str(out), "returncode": rc, "error": error,
            "log_tail": _tail(log)}


def _tail(path: Path, lines: int = 4) -> str:
    try:
        text = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])[-500:]


def read_rows(folder: Path) -> list[dict[str, Any]]:
    path = folder / CONFORMANCE_ROWS
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue            # a torn line from a killed run: the cell says unknown
    return out


def cell(verdicts: Sequence[dict[str, Any]], why_none: str) -> dict[str, Any]:
    """One cell: violated if any verdict is, else unknown if any is, else holds; with the
    summaries of the deciding verdicts as evidence. No verdict at all: unknown, and why."""
    if not verdicts:
        return {"status": UNKNOWN, "summary": why_none, "known": [], "verdicts": 0}
    statuses = {v["status"] for v in verdicts}
    status = VIOLATED if VIOLATED in statuses else UNKNOWN if UNKNOWN in statuses else HOLDS
    deciding = [v for v in verdicts if v["status"] == status]
    known = sorted({v["known_failure"] for v in deciding if v.get("known_failure")})
    summary = "; ".join(dict.fromkeys(v["summary"] for v in deciding))
    return {"status": status, "summary": summary[:400], "known": known,
            "verdicts": len(verdicts), "checks": sorted({v["check"] for v in deciding})}


def build_matrix(runs: Sequence[tuple[Column, dict[str, Any]]]) -> dict[str, Any]:
    """The matrix from each column's conformance.jsonl (and how its run ended)."""
    cols, cells = [], {key: {} for key, _t, _ids in ROWS}
    for col, run in runs:
        rows = read_rows(Path(run["folder"]))
        judged = [r for r in rows if r.get("target") == col.kind and "judgements" in r]
        skips = sorted({r["skipped"] for r in rows if r.get("target") == col.kind
                        and r.get("skipped")})
        label = next((r["label"] for r in judged if r.get("label")), col.name)
        why = skips[0] if skips else run.get("error") or (
            f"no scenario judged this (pytest exit {run.get('returncode')}: "
            f"{run.get('log_tail', '')})")
        cols.append({"name": col.name, "label": label, "kind": col.kind, "spec": col.spec,
                     "version": next((r.get("version") for r in judged), None),
                     "folder": run["folder"], "returncode": run.get("returncode"),
                     "scenarios": len(judged), "skipped": skips})
        by_row: dict[str, list[dict[str, Any]]] = {key: [] for key in cells}
        for r in judged:
            for j in r["judgements"]:
                key = row_of(j["check"])
                if key:
                    by_row[key].append({**j, "scenario": r["nodeid"]})
        for key in cells:
            cells[key][col.name] = cell(by_row[key], why)
    return {"columns": cols,
            "rows": [{"key": key, "title": title, "checks": list(ids), "cells": cells[key]}
                     for key, title, ids in ROWS]}


def render(matrix: dict[str, Any]) -> str:
    cols = matrix["columns"]
    first = max(len(r["title"]) for r in matrix["rows"])

    def status(c: dict[str, Any]) -> str:
        return c["status"] + (" (known)" if c["known"] else "")

    widths = [max(len(c["label"]), *(len(status(r["cells"][c["name"]]))
                                     for r in matrix["rows"])) for c in cols]
    head = " | ".join([f"{'part of the pattern':<{first}}",
                       *(f"{c['label']:<{w}}" for c, w in zip(cols, widths, strict=True))])
    lines = [head, "-" * len(head)]
    for r in matrix["rows"]:
        lines.append(" | ".join([f"{r['title']:<{first}}", *(
            f"{status(r['cells'][c['name']]):<{w}}" for c, w in zip(cols, widths, strict=True))]))
    lines += ["", "evidence:"]
    for r in matrix["rows"]:
        lines.append(f"  {r['title']}")
        for c in cols:
            x = r["cells"][c["name"]]
            known = f" [known: {', '.join(x['known'])}]" if x["known"] else ""
            lines.append(f"    {c['label']}: {x['status']}{known} - {x['summary'][:300]}")
    return "\n".join(lines)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `conformance` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "conformance", help="the canonical failure pattern against Docker and BoxLite "
        "runtimes: a matrix of check x target -> verdict, with evidence")
    p.add_argument("--runtime", action="append", default=[],
                   help="a BoxLite runtime to add as a column (repeatable), e.g. boxlite==0.9.4")
    p.add_argument("--no-docker", action="store_true", help="leave out the Docker column")
    p.add_argument("--no-default", action="store_true",
                   help=f"leave out the default runtime ({DEFAULT_SPEC})")
    p.add_argument("--report", help="report folder (default reports/conformance-<time>)")
    p.add_argument("-k", help="pytest -k expression narrowing the scenarios")
    p.add_argument("--column-timeout", type=float, default=COLUMN_TIMEOUT_S,
                   help="seconds one column may run")
    p.set_defaults(fn=cmd_conformance)
    return p


def cmd_conformance(args: argparse.Namespace) -> int:
    """Runs every column, prints the matrix and writes conformance.json. Verdicts are the
    report, not the exit status: 0 once the matrix is written."""
    cols = columns(args.runtime, docker=not args.no_docker, default=not args.no_default)
    if not cols:
        from harness.common.errors import ScenarioError
        raise ScenarioError("no column to run: --no-docker and --no-default without --runtime")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = Path(args.report).resolve() if args.report else \
        PROJECT / "reports" / f"conformance-{stamp}"
    report.mkdir(parents=True, exist_ok=True)
    print(f"boxlite-chaos conformance: {', '.join(c.name for c in cols)}; report {report}",
          flush=True)
    runs = []
    for col in cols:
        print(f"  running {col.name} ...", flush=True)
        run = run_column(col, report, args.k, args.column_timeout)
        runs.append((col, run))
        print(f"  {col.name}: pytest exit {run['returncode']}"
              + (f" ({run['error']})" if run["error"] else ""), flush=True)
    matrix = {"report": str(report), **build_matrix(runs)}
    (report / "conformance.json").write_text(json.dumps(matrix, indent=1, default=str))
    print(render(matrix))
    print(f"conformance.json: {report / 'conformance.json'}")
    return 0
