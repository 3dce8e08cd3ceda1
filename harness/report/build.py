"""Build a run's report from its folder: summary.json for machines, report.html for people.

The HTML is one self-contained file (inline CSS, timelines as inline PNGs) that opens offline;
links to histories and artifacts are relative, so the run folder can be moved or archived
whole. A scenario whose history is corrupt, or whose harness died before writing a result,
still gets its row: the report says what is missing instead of failing to build.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape

from harness.common.errors import HarnessError, HistoryError, SetupError
from harness.judge.checks import UNKNOWN
from harness.judge.known import (
    FAILING,
    FIXED,
    KNOWN,
    UNEXPECTED,
    KnownFailure,
    load_table,
)
from harness.observe.history import read_history
from harness.report.plots import draw_timelines, trend_pngs
from harness.report.timeline import Timeline, build_timeline, last_run

MAX_ARTIFACT_LINKS = 200
# A non-strict known failure's check that held (harness.judge.known.UNSEEN, where it exists).
UNSEEN = "unseen"


def read_results_lines(path: Path) -> list[tuple[int, Any]]:
    """(line number, decoded JSON) for each non-blank line of a results.jsonl. Raises
    OSError when it cannot be read, HistoryError naming the file and line when a line is not
    JSON (a run killed mid-write)."""
    out = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise HistoryError(f"results {path}: line {n} is not valid JSON (a run killed "
                               f"mid-write?): {exc.msg} at column {exc.colno}") from exc
    return out


def _is_result(r: Any) -> bool:
    return (isinstance(r, dict) and isinstance(r.get("nodeid"), str)
            and isinstance(r.get("outcome"), str) and isinstance(r.get("judgements"), list)
            and all(isinstance(j, dict) and isinstance(j.get("check"), str)
                    and isinstance(j.get("outcome"), str) for j in r["judgements"]))


def read_run(run: Path) -> dict[str, dict[str, Any]]:
    """A run folder's results by scenario node id (a later line for the same scenario wins).

    Raises SetupError naming the path when `run` holds no results.jsonl (a run that did not
    finish, or not a run folder), and naming the file and line number when a line is torn or
    is not a scenario's result.
    """
    path = run / "results.jsonl"
    if not path.is_file():
        raise SetupError(f"run folder {run} holds no results.jsonl (the run did not finish, "
                         "or this is not a run folder)")
    try:
        lines = read_results_lines(path)
    except HistoryError as exc:
        raise SetupError(str(exc)) from exc
    except OSError as exc:
        raise SetupError(f"results {path} could not be read: {exc}") from exc
    out: dict[str, dict[str, Any]] = {}
    for n, r in lines:
        if not _is_result(r):
            raise SetupError(f"results {path}: line {n} is not a scenario's result (it needs "
                             "nodeid, outcome and a list of judgements with check and outcome)")
        out[r["nodeid"]] = r
    return out


def load_results(run: Path) -> list[dict[str, Any]]:
    path = run / "results.jsonl"
    if not path.is_file():
        return []
    return [r for _, r in read_results_lines(path)]


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The machine-readable summary, less what needs the known-failures table
    (`known_failures_seen`, filled by build_report)."""
    rows = []
    for r in results:
        counts: dict[str, int] = {}
        for j in r["judgements"]:
            counts[j["outcome"]] = counts.get(j["outcome"], 0) + 1
        rows.append({"scenario": r["nodeid"], "runtime": r["runtime"],
                     "outcome": r["outcome"], "wall_s": r["duration_s"], "verdicts": counts,
                     "failing": [j["check"] for j in r["judgements"] if j["outcome"] in FAILING],
                     "known": [j["check"] for j in r["judgements"] if j["outcome"] == KNOWN]})
    return {"scenarios": rows,
            "passed": sum(r["outcome"] == "passed" for r in rows),
            "failed": sum(r["outcome"] == "failed" for r in rows),
            "unknown": [{k: u[k] for k in ("scenario", "runtime", "check", "summary")}
                        for u in unknown_verdicts(results)],
            "unexpected": [{k: u[k] for k in ("scenario", "runtime", "check", "summary",
                                              "known_failure", "symptom_mismatch")}
                           for u in unexpected_verdicts(results)]}


# -- scenarios ------------------------------------------------------------------------------

@dataclass
class ScenarioView:
    """What the report shows of one scenario: its result (if any), timeline and files."""

    nodeid: str
    runtime: str
    outcome: str                        # passed | failed | skipped | incomplete
    wall_s: float | None
    judgements: list[dict[str, Any]]
    anchor: str
    timeline: str | None = None         # data URI of the timeline PNG
    timeline_error: str | None = None
    files: list[tuple[str, str]] = field(default_factory=list)       # (href, label)
    artifacts: list[tuple[str, str]] = field(default_factory=list)
    artifacts_left_out: int = 0
    faults: list[str] = field(default_factory=list)


def _href(run: Path, path: Path) -> str:
    return quote(Path(os.path.relpath(path, run)).as_posix())


def _workdir(run: Path, recorded: str | None) -> Path | None:
    if not recorded:
        return None
    path = Path(recorded)
    # The run's own copy first: a copied or archived run folder keeps the scenario folders'
    # names, while the recorded path may be the original's (or gone).
    inside = run / "scenarios" / path.name
    return inside if inside.is_dir() else path


def _anchor(nodeid: str, runtime: str) -> str:
    return "s-" + re.sub(r"[^A-Za-z0-9_-]+", "-", f"{nodeid}-{runtime}").strip("-")


def _read_samples(workdir: Path) -> list[dict[str, Any]] | None:
    try:
        return json.loads((workdir / "verdicts.json").read_text()).get("samples")
    except (OSError, ValueError, AttributeError):
        return None


def _read_timeline(view: ScenarioView, workdir: Path) -> Timeline | None:
    try:
        return build_timeline(last_run(read_history(workdir / "history.jsonl")))
    except HarnessError as exc:
        view.timeline_error = str(exc)
        return None


def _draw_all(jobs: list[tuple[ScenarioView, Path, Timeline | None]]) -> None:
    """Each view's timeline picture and its faults' lines; one that cannot be drawn says why
    in its view and costs nothing else."""
    todo = [(view, workdir, tl) for view, workdir, tl in jobs if tl is not None]
    pngs = draw_timelines([(tl, _read_samples(workdir)) for _, workdir, tl in todo])
    for (view, _, tl), (png, error) in zip(todo, pngs, strict=True):
        if png is not None:
            view.timeline = png
        else:
            view.timeline_error = f"the timeline could not be drawn: {error}"
        view.faults = [f"{f.name} at {f.start:.2f}s" + (f", healed at {f.end:.2f}s"
                       if f.end is not None and not f.instant else "") for f in tl.faults]


def _link_files(run: Path, view: ScenarioView, workdir: Path) -> None:
    for name in ("history.jsonl", "verdicts.json"):
        if (workdir / name).is_file():
            view.files.append((_href(run, workdir / name), name))
    for stderr in sorted((workdir / "hosts").glob("*.stderr")):
        view.files.append((_href(run, stderr), f"hosts/{stderr.name}"))
    arts = sorted(p for p in (workdir / "artifacts").rglob("*") if p.is_file())
    view.artifacts = [(_href(run, p), p.relative_to(workdir / "artifacts").as_posix())
                      for p in arts[:MAX_ARTIFACT_LINKS]]
    view.artifacts_left_out = max(0, len(arts) - MAX_ARTIFACT_LINKS)


def scenario_views(run: Path, results: list[dict[str, Any]]) -> list[ScenarioView]:
    """One view per result, plus one per scenario folder whose harness died before its
    result (its history has no outcome); folders left by an earlier run are not this run's."""
    views, seen, jobs = [], set(), []
    for r in sorted(results, key=lambda r: (r["nodeid"], r["runtime"])):
        view = ScenarioView(r["nodeid"], r["runtime"], r["outcome"], r.get("duration_s"),
                            r.get("judgements", []), _anchor(r["nodeid"], r["runtime"]))
        workdir = _workdir(run, r.get("workdir"))
        if workdir is not None and workdir.is_dir():
            seen.add(workdir.resolve())
            jobs.append((view, workdir, _read_timeline(view, workdir)))
            _link_files(run, view, workdir)
        else:
            view.timeline_error = f"the scenario folder {r.get('workdir')} is missing"
        views.append(view)
    for history in sorted(run.glob("scenarios/*/history.jsonl")):
        workdir = history.parent
        if workdir.resolve() in seen:
            continue
        view = ScenarioView(workdir.name, "?", "incomplete", None, [], _anchor(workdir.name, ""))
        tl = _read_timeline(view, workdir)
        if tl is not None and tl.complete:
            continue
        jobs.append((view, workdir, tl))
        if tl is not None:
            view.nodeid = tl.meta.get("scenario", workdir.name)
            view.runtime = tl.meta.get("runtime", "?")
            view.wall_s = tl.end
            view.judgements = [{k: v for k, v in e.items() if k not in ("t", "kind")}
                               for e in tl.verdicts]
        _link_files(run, view, workdir)
        views.append(view)
    _draw_all(jobs)
    return views


# -- known failures, rip-out matrix, soak -----------------------------------------------------

def one_line(text: str) -> str:
    """The first sentence of a (wrapped, multi-line) reason, on one line."""
    flat = " ".join(text.split())
    return re.split(r"(?<=[.!?])\s+(?=[A-Z(\"'])", flat, maxsplit=1)[0]


def known_seen(results: list[dict[str, Any]], table: list[KnownFailure]) -> list[dict[str, Any]]:
    """Each known-failures entry that matched a verdict in this run (`known`, `fixed` or
    `unseen`), with its one-line reason, whether it is strict, and every check and scenario it
    matched."""
    by_id = {k.id: k for k in table}
    seen: dict[str, dict[str, Any]] = {}
    for r in results:
        for j in r.get("judgements", []):
            kid = j.get("known_failure")
            if not kid or j.get("outcome") not in (KNOWN, FIXED, UNSEEN):
                continue
            entry = by_id.get(kid)
            reason = entry.reason if entry else "(no longer in the known-failures table)"
            row = seen.setdefault(kid, {
                "id": kid, "check": entry.check if entry else "?",
                "versions": str(entry.versions) if entry else "?",
                "reason": one_line(reason), "reason_full": reason,
                # Fields the table may not have yet: a strict entry fails when its check holds.
                "strict": bool(getattr(entry, "strict", True)),
                "seen": getattr(entry, "seen", "") if entry else "",
                "upstream": entry.upstream if entry else "", "matches": []})
            row["showed"] = row.get("showed", False) or j["outcome"] == KNOWN
            row["matches"].append({"scenario": r["nodeid"], "runtime": r["runtime"],
                                   "check": j["check"], "outcome": j["outcome"],
                                   "anchor": _anchor(r["nodeid"], r["runtime"])})
    return sorted(seen.values(), key=lambda row: row["id"])


def known_summary(known: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """summary.json's `known_failures_seen`: per entry its id, reason, strictness, matches."""
    return [{"id": k["id"], "reason": k["reason"], "strict": k["strict"],
             "matches": [{f: m[f] for f in ("scenario", "check", "outcome")}
                         for m in k["matches"]]} for k in known]


def unexpected_verdicts(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every violation of a check a known failure covers that did not show the entry's
    symptom (`unexpected`): a new bug hiding behind a known one; each fails the gate."""
    return [{"scenario": r["nodeid"], "runtime": r.get("runtime", "?"), "check": j["check"],
             "summary": j.get("summary", ""), "known_failure": j.get("known_failure"),
             "symptom_mismatch": j.get("symptom_mismatch", []),
             "anchor": _anchor(r["nodeid"], r.get("runtime", ""))}
            for r in results for j in r.get("judgements", []) if j.get("outcome") == UNEXPECTED]


def unknown_verdicts(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every verdict that could not be measured (status `unknown`): each fails the gate."""
    return [{"scenario": r["nodeid"], "runtime": r.get("runtime", "?"), "check": j["check"],
             "summary": j.get("summary", ""), "anchor": _anchor(r["nodeid"], r.get("runtime", ""))}
            for r in results for j in r.get("judgements", []) if j.get("status") == UNKNOWN]


def _optional_json(run: Path, name: str) -> tuple[Any, str | None]:
    path = run / name
    if not path.is_file():
        return None, None
    try:
        return json.loads(path.read_text()), None
    except (OSError, ValueError) as exc:
        return None, f"{name} could not be read: {exc}"


RIPOUT_FIELDS = ("fix", "runtime", "side", "verdict", "evidence")


def ripout_rows(data: Any) -> list[dict[str, Any]]:
    """ripout.json: a list of {fix, runtime, side, verdict, evidence} (or {"rows": [...]})."""
    rows = data.get("rows", []) if isinstance(data, dict) else data or []
    return [{k: row.get(k, "") for k in RIPOUT_FIELDS} for row in rows if isinstance(row, dict)]


def soak_view(data: Any) -> dict[str, Any]:
    """soak.json: {"samples": [{"t"|"step"|"iteration": x, metric: number, ...}], any other
    top-level fields (seed, schedule, ...)}; a bare list is taken as the samples."""
    if isinstance(data, list):
        data = {"samples": data}
    samples = [s for s in data.get("samples", []) if isinstance(s, dict)]
    return {"plots": trend_pngs(samples), "samples": len(samples),
            "fields": {k: v for k, v in data.items() if k != "samples"}}


def flake_rows(data: Any) -> dict[str, Any]:
    """stability.json (harness.jobs.repeat.stability): its flaky checks and scenarios, and the
    figures of the summary line."""
    if not isinstance(data, dict):
        return {"checks": [], "races": [], "scenarios": [], "summary": {}}
    return {"checks": [f for f in data.get("flakes", []) if isinstance(f, dict)],
            "races": [f for f in data.get("races", []) if isinstance(f, dict)],
            "scenarios": [s for s in data.get("scenarios", [])
                          if isinstance(s, dict) and s.get("flake")],
            "summary": data.get("summary", {})}


# -- the report -----------------------------------------------------------------------------

def templates() -> Environment:
    """The report's templates (report.html.j2, stability.html.j2), HTML-escaped."""
    return Environment(loader=PackageLoader("harness.report", "templates"),
                       autoescape=select_autoescape(default_for_string=True, default=True))


def build_report(run: Path) -> Path:
    """Write `run`'s summary.json and report.html; return the report's path. Raises
    HistoryError when results.jsonl holds a line that is not JSON; anything else that is
    missing or unreadable (a history, the known-failures table, ripout.json, soak.json,
    stability.json) is said in the report instead."""
    results = load_results(run)
    table_error = None
    try:
        table = load_table()
    except HarnessError as exc:
        table, table_error = [], str(exc)
    known = known_seen(results, table)
    summary = summarize(results)
    summary["known_failures_seen"] = known_summary(known)
    views = scenario_views(run, results)
    summary["incomplete"] = [v.nodeid for v in views if v.outcome == "incomplete"]
    facts, facts_error = _optional_json(run, "run.json")
    # What the verdicts depend on besides the runtime: the seed and this machine.
    summary["run"] = facts
    (run / "summary.json").write_text(json.dumps(summary, indent=1))

    ripout, ripout_error = _optional_json(run, "ripout.json")
    soak, soak_error = _optional_json(run, "soak.json")
    stability, stability_error = _optional_json(run, "stability.json")
    html = templates().get_template("report.html.j2").render(
        run=run.name, summary=summary, views=views, known=known, table_error=table_error,
        unknown=unknown_verdicts(results), unexpected=unexpected_verdicts(results),
        ripout=ripout_rows(ripout) if ripout is not None else None, ripout_error=ripout_error,
        soak=soak_view(soak) if soak is not None else None, soak_error=soak_error,
        flakes=flake_rows(stability) if stability is not None else None,
        stability_error=stability_error,
        stability_html=(run / "stability.html").is_file(),
        facts=facts, facts_error=facts_error)
    out = run / "report.html"
    out.write_text(html)
    return out
