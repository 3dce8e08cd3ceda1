"""Build a run's report from its results: summary.json for machines, report.html for people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from harness.known import FAILING


def load_results(run: Path) -> list[dict[str, Any]]:
    path = run / "results.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    rows = []
    for r in results:
        counts: dict[str, int] = {}
        for j in r["judgements"]:
            counts[j["outcome"]] = counts.get(j["outcome"], 0) + 1
        rows.append({"scenario": r["nodeid"], "runtime": r["runtime"],
                     "outcome": r["outcome"], "wall_s": r["duration_s"], "verdicts": counts,
                     "failing": [j["check"] for j in r["judgements"] if j["outcome"] in FAILING],
                     "known": [j["check"] for j in r["judgements"] if j["outcome"] == "known"]})
    return {"scenarios": rows,
            "passed": sum(r["outcome"] == "passed" for r in rows),
            "failed": sum(r["outcome"] == "failed" for r in rows),
            "known_failures_seen": sorted({k for r in rows for k in r["known"]})}


def build_report(run: Path) -> Path:
    results = load_results(run)
    summary = summarize(results)
    (run / "summary.json").write_text(json.dumps(summary, indent=1))
    env = Environment(loader=PackageLoader("harness.report", "templates"),
                      autoescape=select_autoescape())
    html = env.get_template("report.html.j2").render(summary=summary, results=results,
                                                     run=run.name)
    out = run / "report.html"
    out.write_text(html)
    return out
