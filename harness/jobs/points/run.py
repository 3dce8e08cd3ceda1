"""`points discover | diff | run`: each operation's points recorded per release under
fixtures/points/<version>/<operation>.json, their differences between releases, and the sweep
that lands each fault kind at each point and writes the coverage page.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.common.errors import HarnessError, SetupError, UsageError
from harness.common.paths import PROJECT
from harness.common.wait import Deadline
from harness.jobs.points.coverage import coverage, write_page
from harness.jobs.points.world import Setup, setup
from harness.observe.points import (
    POLL_S,
    diff_points,
    load_points,
    merge_runs,
    points_path,
    save_points,
)
from harness.runtime.host import RUST_LOG_ENV
from harness.runtime.spec import DEFAULT_SPEC
from harness.scenario.points import (
    FAULT_KINDS,
    MORE_KINDS,
    OPERATIONS,
    QUICK,
    VARIANTS,
    discover_once,
    fault_at_point,
    fits,
)

FIXTURES = PROJECT / "fixtures" / "points"
REPORTS = PROJECT / "reports"
DISCOVERY_RUNS = 2


def discover(s: Setup, operations: Sequence[str], variants: Sequence[str],
             runs: int = DISCOVERY_RUNS, root: Path = FIXTURES,
             say: Callable[[str], None] = print) -> list[Path]:
    """Record each operation's points on each variant `runs` times, fault-free, and write
    the merged list (unstable points marked) to root/<version>/<operation>.json."""
    written = []
    for op in operations:
        doc: dict[str, Any] = {
            "version": s.env.version, "operation": op, "what": OPERATIONS[op].what,
            "recorded": datetime.now(UTC).strftime("%Y-%m-%d"), "runs": runs,
            "method": {"log": "the runtime's log, tailed", "store": "wal-index change counter",
                       "file": f"polling every {POLL_S * 1000:.0f} ms (no inotify)",
                       "proc": "psutil descendants of the host"},
            "variants": {}}
        for variant in variants:
            lists, figures = [], []
            for n in range(runs):
                try:
                    with s.world(f"points:discover:{op}:{variant}",
                                 f"discover-{op}-{variant}-{n + 1}") as chaos:
                        pts, fig = discover_once(chaos, op, variant)
                except HarnessError as exc:
                    # An arrangement that never came about (a VM that never ran its vCPUs
                    # under load): this run has no list; say so in the file.
                    say(f"{op} [{variant}] run {n + 1}: {exc}")
                    figures.append({"error": str(exc)})
                    continue
                lists.append(pts)
                figures.append(fig)
            if not lists:
                doc["variants"][variant] = {"count": 0, "error": figures[-1]["error"],
                                            "runs": figures, "points": []}
                continue
            merged = merge_runs(lists)
            doc["variants"][variant] = {
                "count": len(merged), "unstable": sum(1 for p in merged if p.get("unstable")),
                "per_run": [len(x) for x in lists], "runs": figures, "points": merged}
            unstable = doc["variants"][variant]["unstable"]
            say(f"{op} [{variant}]: {len(merged)} points ({unstable} unstable; "
                f"runs {[len(x) for x in lists]})")
        written.append(save_points(points_path(root, s.env.version, op), doc))
    return written


def reference(version: str, op: str, variant: str, root: Path = FIXTURES) -> list[dict]:
    """The committed list of `op` on `variant` for `version`. Raises SetupError when there
    is none (run `points discover --runtime ...` first)."""
    path = points_path(root, version, op)
    if not path.is_file():
        raise SetupError(f"no point list for {op} on {version} ({path}); run "
                         f"`boxlite-chaos points discover --runtime boxlite=={version}` first")
    return load_points(path)["variants"].get(variant, {}).get("points", [])


def plan(version: str, operations: Sequence[str], variants: Sequence[str],
         kinds: Sequence[str], quick: bool, stable_only: bool = False,
         root: Path = FIXTURES, points: Sequence[str] = ()
         ) -> list[tuple[str, str, str, str, list[str]]]:
    """(operation, variant, point, kind, reference keys) for each fault to land; with
    `points`, only the points whose key holds one of those texts."""
    out = []
    if quick:
        for op, variant, point, kind in QUICK:
            ref = [p["key"] for p in reference(version, op, variant, root)]
            out.append((op, variant, point, kind, ref))
        return out
    groups: list[list[tuple[str, str, str, str, list[str]]]] = []
    for kind in kinds:
        for op in operations:
            for variant in variants:
                pts = reference(version, op, variant, root)
                ref = [p["key"] for p in pts]
                groups.append([(op, variant, p["key"], kind, ref) for p in pts
                               if not (stable_only and p.get("unstable"))
                               and (not points or any(t in p["key"] for t in points))
                               and fits(kind, p["key"], ref)])
    # Round robin over (kind, operation, variant): a sweep cut short by its budget has
    # touched every operation with every kind, not finished one and never begun the rest.
    while any(groups):
        for g in groups:
            if g:
                out.append(g.pop(0))
    return out


def sweep(s: Setup, todo: Sequence[tuple[str, str, str, str, list[str]]], report: Path,
          say: Callable[[str], None] = print, budget_s: float | None = None
          ) -> list[dict[str, Any]]:
    """Land each planned fault in a world of its own; results go to report/points.jsonl
    as they come (a sweep cut short keeps what it did). With `budget_s` (seconds), no new
    fault starts once it is spent."""
    results = []
    report.mkdir(parents=True, exist_ok=True)
    budget = Deadline(budget_s, "the sweep's budget") if budget_s else None
    with open(report / "points.jsonl", "a") as out:
        for i, (op, variant, point, kind, ref) in enumerate(todo, 1):
            if budget is not None and budget.expired():
                say(f"budget of {budget_s:.0f} s spent: {len(todo) - i + 1} faults not landed")
                break
            with s.world(f"points:{op}:{variant}:{kind}@{point}",
                         f"{op}-{variant}-{i:03d}-{kind}") as chaos:
                r = fault_at_point(chaos, op, variant, point, kind, ref).to_json()
            results.append(r)
            out.write(json.dumps(r, default=str) + "\n")
            out.flush()
            land = r["landing"]
            say(f"[{i}/{len(todo)}] {op} [{variant}] {kind} @ {point}: {r['outcome']}"
                + (f" (delay {land['delay_ms']} ms, overshoot {land['overshoot']})"
                   if land.get("landed") else f" ({r['why']})") + f" {r['wall_s']} s")
    return results


# -- CLI -------------------------------------------------------------------------------------
def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `points` on the CLI's subparsers."""
    p = subparsers.add_parser("points", help="fault points: discover each operation's points "
                              "per release, diff releases, land a fault at each point")
    sub = p.add_subparsers(dest="points_cmd", required=True)
    d = sub.add_parser("discover", help="record each operation's points (fault-free runs) "
                       "into fixtures/points/<version>/")
    d.add_argument("--runtime", default=DEFAULT_SPEC)
    d.add_argument("--operation", action="append", choices=sorted(OPERATIONS))
    d.add_argument("--variant", action="append", choices=VARIANTS)
    d.add_argument("--runs", type=int, default=DISCOVERY_RUNS,
                   help="fault-free runs per operation; a point not in every run in the "
                   "same order is marked unstable")
    d.add_argument("--out", help=f"where the lists go (default {FIXTURES})")
    d.add_argument("--log-level", choices=("info", "debug"), default="info",
                   help="the runtime's log level (RUST_LOG); debug lists go to <out>/debug/")
    d.set_defaults(fn=cmd_discover)
    f = sub.add_parser("diff", help="new, vanished and moved points between two releases")
    f.add_argument("old", help="a version (e.g. 0.10.0) or a folder of lists")
    f.add_argument("new", help="a version (e.g. 0.10.8) or a folder of lists")
    f.set_defaults(fn=cmd_diff)
    r = sub.add_parser("run", help="land each fault kind at each point, judge, and write "
                       "the coverage page (reports/points-<time>/)")
    r.add_argument("--runtime", default=DEFAULT_SPEC)
    r.add_argument("--quick", action="store_true", help="only the gate's pinned selection")
    r.add_argument("--operation", action="append", choices=sorted(OPERATIONS))
    r.add_argument("--variant", action="append", choices=VARIANTS)
    r.add_argument("--kind", action="append", choices=FAULT_KINDS + MORE_KINDS,
                   help=f"the kinds to land (default: {', '.join(FAULT_KINDS)}); io_error and "
                   "disk_full fail the host's writes to its home with EIO or ENOSPC (strace)")
    r.add_argument("--stable-only", action="store_true", help="leave out unstable points")
    r.add_argument("--point", action="append", metavar="TEXT",
                   help="only the points whose key holds TEXT (e.g. 'store:commit')")
    r.add_argument("--budget-s", type=float,
                   help="start no new fault after this many seconds (the page shows the rest "
                   "as never tried)")
    r.add_argument("--limit", type=int, help="land at most this many faults (the first ones)")
    r.add_argument("--dry-run", action="store_true",
                   help="print how many faults each operation would land, and stop")
    r.add_argument("--report", help="report folder (default reports/points-<time>)")
    r.set_defaults(fn=cmd_run)
    c = sub.add_parser("coverage", help="rebuild a sweep folder's coverage page from its "
                       "points.jsonl (a sweep cut short, or a newer mapping of today's faults)")
    c.add_argument("report", help="a reports/points-<time> folder")
    c.add_argument("--wall-s", type=float, help="the sweep's wall time, if known")
    c.set_defaults(fn=cmd_coverage)
    return p


def write_coverage(report: Path, version: str, results: list[dict[str, Any]], wall_s: float,
                   quick: bool = False) -> dict[str, Any]:
    """coverage.json and coverage.html in `report`, over every committed list of `version`."""
    lists = {(op, v): reference(version, op, v) for op in OPERATIONS for v in VARIANTS
             if points_path(FIXTURES, version, op).is_file()}
    cov = coverage(version, lists, results, wall_s, quick=quick)
    (report / "coverage.json").write_text(json.dumps(cov, indent=1, default=str) + "\n")
    write_page(cov, report / "coverage.html")
    return cov


def cmd_coverage(args: argparse.Namespace) -> int:
    report = Path(args.report)
    path = report / "points.jsonl"
    if not path.is_file():
        raise SetupError(f"{report} holds no points.jsonl; is it a `points run` folder?")
    results = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    old = report / "coverage.json"
    version = json.loads(old.read_text())["version"] if old.is_file() else None
    if version is None:
        raise SetupError(f"{report} holds no coverage.json naming its release")
    wall = args.wall_s if args.wall_s is not None else json.loads(old.read_text())["wall_s"]
    cov = write_coverage(report, version, results, wall)
    _print_rows(cov)
    return 0


def _print_rows(cov: dict[str, Any]) -> None:
    for row in cov["operations"]:
        print(f"{row['operation']} [{row['variant']}]: {row['discovered']} points; before "
              f"{row['before']['points']}, after {row['after']['points']} faulted; "
              f"verdicts {row['after']['outcomes']}; never reached {len(row['never_reached'])}")


def _folder(arg: str) -> Path:
    path = Path(arg)
    if path.is_dir():
        return path
    if (FIXTURES / arg).is_dir():
        return FIXTURES / arg
    raise UsageError(f"{arg}: no such folder, and no point lists for version {arg} under "
                     f"{FIXTURES}")


def diff_text(old: Path, new: Path) -> str:
    """The differences, operation by operation and variant by variant, as text."""
    lines = [f"points: {old} -> {new}"]
    for op in sorted({p.stem for p in old.glob("*.json")} | {p.stem for p in new.glob("*.json")}):
        a = load_points(old / f"{op}.json") if (old / f"{op}.json").is_file() else None
        b = load_points(new / f"{op}.json") if (new / f"{op}.json").is_file() else None
        if a is None or b is None:
            lines.append(f"{op}: only in {'new' if a is None else 'old'}")
            continue
        for variant in sorted(set(a["variants"]) | set(b["variants"])):
            pa = a["variants"].get(variant, {}).get("points", [])
            pb = b["variants"].get(variant, {}).get("points", [])
            d = diff_points(pa, pb)
            lines.append(f"{op} [{variant}]: {len(pa)} -> {len(pb)} points; "
                         f"{len(d['new'])} new, {len(d['vanished'])} vanished, "
                         f"{len(d['moved'])} moved")
            for what in ("new", "vanished", "moved"):
                lines += [f"  {what:8} {k}" for k in d[what]]
    return "\n".join(lines)


def cmd_discover(args: argparse.Namespace) -> int:
    ops = args.operation or list(OPERATIONS)
    variants = args.variant or list(VARIANTS)
    root = Path(args.out) if args.out else FIXTURES
    if args.log_level == "debug":
        # The hosts log at debug (init tasks by name, locks, binaries found); such lists are
        # kept apart from the info-level ones every sweep is judged against.
        os.environ[RUST_LOG_ENV] = "debug"
        root = root / "debug"
    t0 = time.monotonic()
    with setup(args.runtime, REPORTS / datetime.now(UTC).strftime(
            "points-discover-%Y%m%dT%H%M%SZ")) as s:
        for path in discover(s, ops, variants, args.runs, root):
            print(f"wrote {path}")
    print(f"discovery took {time.monotonic() - t0:.0f} s")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    print(diff_text(_folder(args.old), _folder(args.new)))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    ops = args.operation or list(OPERATIONS)
    variants = args.variant or list(VARIANTS)
    kinds = args.kind or list(FAULT_KINDS)
    report = Path(args.report) if args.report else REPORTS / datetime.now(UTC).strftime(
        "points-%Y%m%dT%H%M%SZ")
    if args.dry_run:
        from collections import Counter

        from harness.runtime.spec import RuntimeSpec
        version = RuntimeSpec.parse(args.runtime).version
        todo = plan(version, ops, variants, kinds, args.quick, args.stable_only,
                    points=args.point or ())
        for (op, variant, kind), n in sorted(Counter((t[0], t[1], t[3]) for t in todo).items()):
            print(f"{op} [{variant}] {kind}: {n}")
        print(f"{len(todo)} faults in all")
        return 0
    t0 = time.monotonic()
    with setup(args.runtime, report) as s:
        todo = plan(s.env.version, ops, variants, kinds, args.quick, args.stable_only,
                    points=args.point or ())
        todo = todo[:args.limit] if args.limit else todo
        print(f"{len(todo)} faults to land on {s.env.version}")
        results = sweep(s, todo, report, budget_s=args.budget_s)
        wall = time.monotonic() - t0
        cov = write_coverage(report, s.env.version, results, wall, quick=args.quick)
    _print_rows(cov)
    print(f"sweep wall time {wall:.0f} s; {report / 'coverage.html'}")
    return 1 if any(r["outcome"] in ("fail", "unknown") for r in results) else 0
