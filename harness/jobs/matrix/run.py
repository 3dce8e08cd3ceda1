"""`boxlite-chaos matrix`: the gate once per runtime (every published release by default),
one report of scenario × check × runtime; `--bisect CHECK` finds the first release on which a
check's verdict changes.

Each runtime's gate is a whole gate in its own process, virtualenv, homes and folder
(`<report>/<version>`), with the same seed, so the columns differ only by the runtime. A
runtime the harness cannot drive (no wheel for it offline, an install that fails) is a column
of `unknown` with the gate's own one-line reason, never a pass.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packaging.version import Version

from harness.common.errors import HarnessError, SetupError, UsageError
from harness.common.paths import PROJECT
from harness.jobs.matrix.grid import (
    ABSENT,
    CELLS,
    LEGEND,
    SYMBOL,
    VIOLATIONS,
    Column,
    build_grid,
    cell_of,
    gate_word,
    judged_version,
    rejudge_violations,
    render_grid,
)
from harness.jobs.matrix.releases import order_specs, release_specs, version_of
from harness.judge.checks import HOLDS, UNKNOWN, VIOLATED
from harness.judge.known import load_table, wildcard
from harness.report.build import read_run, templates
from harness.runtime.spec import RuntimeSpec
from harness.session import interrupt, seeds
from harness.session.pace import worker_count, workers_or_chosen
from harness.session.selection import resolve_scenarios

HOSTILE_ENV = "BOXLITE_CHAOS_HOSTILE_EXAMPLES"
BUDGET_ENV = "BOXLITE_CHAOS_HOSTILE_BUDGET_S"
# The nightly matrix: 5 generated cases per hostile family (the gate: 40), and 30 s of new
# cases per shard (the gate: 180 s), which bounds the shrinking that a release with a failing
# kind spends in full. The explicit and pinned cases always run.
NIGHTLY_HOSTILE_EXAMPLES = 5
NIGHTLY_HOSTILE_BUDGET_S = 30.0
# A gate that exits with neither verdict (0 green, 1 red) did not judge: its reason is its
# own one-line error on stderr.
_ERROR_LINE = re.compile(r"^boxlite-chaos: error: (.*)$")


def _folder_name(spec: str) -> str:
    v = version_of(spec)
    return v if v else re.sub(r"[^A-Za-z0-9._-]+", "_", spec)[-80:]


def gate_argv(spec: str, report: Path, seed: int, workers: str,
              scenarios: Sequence[str] = (), k: str | None = None) -> list[str]:
    """The command line of one column: the gate against `spec`, into `report`."""
    argv = [sys.executable, "-m", "harness.cli", "gate", "--runtime", spec,
            "--report", str(report), "--seed", str(seed), "-n", workers]
    for name in scenarios:
        argv += ["--scenario", name]
    if k:
        argv += ["-k", k]
    return argv


def why_not_judged(stderr: Path, rc: int) -> str:
    """The gate's own reason for not judging (its 'boxlite-chaos: error:' line), else the
    exit status and the last line it wrote."""
    try:
        lines = stderr.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in reversed(lines):
        m = _ERROR_LINE.match(line.strip())
        if m:
            return m.group(1)
    tail = next((ln.strip() for ln in reversed(lines) if ln.strip()), "")
    return f"the gate exited {rc} without a verdict" + (f": {tail}" if tail else "")


def run_column(spec: str, folder: Path, seed: int, workers: str,
               scenarios: Sequence[str] = (), k: str | None = None,
               hostile_examples: int | None = None, hostile_budget_s: float | None = None,
               call: Callable[..., int] = subprocess.call) -> Column:
    """Run one runtime's gate into `folder` and read its results. A gate that did not judge
    (exit other than 0 or 1), or left no readable results, gives a Column whose `unknown`
    says why. Wall time in seconds (monotonic)."""
    spec_obj = RuntimeSpec.parse(spec)
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if hostile_examples is not None:
        env[HOSTILE_ENV] = str(hostile_examples)
    if hostile_budget_s is not None:
        env[BUDGET_ENV] = str(hostile_budget_s)
    t0 = time.monotonic()
    with open(folder / "gate.stderr", "wb") as err:
        rc = call(gate_argv(spec, folder, seed, workers, scenarios, k), stderr=err, env=env)
    col = Column(spec, spec_obj.version, exit_code=rc, wall_s=round(time.monotonic() - t0, 1))
    if rc not in (0, 1):
        col.unknown = why_not_judged(folder / "gate.stderr", rc)
        return col
    try:
        col.results = read_run(folder)
    except HarnessError as exc:
        col.unknown = f"the gate exited {rc} but its results could not be read: {exc}"
    return col


def write_matrix(folder: Path, data: dict[str, Any], name: str) -> None:
    """matrix.json (everything), matrix-summary.json (the compact form a known-failures
    entry cites: one symbol per runtime for each row) and matrix.html."""
    (folder / "matrix.json").write_text(json.dumps(data, indent=1))
    keys = [r["key"] for r in data["runtimes"]]
    compact = {"run": name, "runtimes": keys, "legend": LEGEND,
               "machine": data.get("machine"), "seed": data.get("seed"),
               "hostile_examples": data.get("hostile_examples"),
               "hostile_budget_s": data.get("hostile_budget_s"), "wall_s": data.get("wall_s"),
               "runtime_gates": {r["key"]: {"green": r["green"], "unknown": r["unknown"],
                                            "wall_s": r["wall_s"]} for r in data["runtimes"]},
               "rows": [[r["scenario"], r["check"], "".join(SYMBOL[r["cells"][k]] for k in keys),
                         *([r["judged_as"]] if r.get("judged_as") else [])]
                        for r in data["rows"]],
               "entries": {e["id"]: {"measured": e["measured"], "violated_on": e["violated_on"],
                                     "agrees": e["agrees"]} for e in data["entries"]},
               "summary": data["summary"]}
    (folder / "matrix-summary.json").write_text(json.dumps(compact, indent=1))
    html = templates().get_template("matrix.html.j2").render(
        data=data, name=name, symbol=SYMBOL, legend=LEGEND, cells=CELLS)
    (folder / "matrix.html").write_text(html)


def run_matrix(args: argparse.Namespace, folder: Path, seed: int) -> int:
    """The gate per runtime of `args.runtime` (default: every release), then the matrix.
    Returns 0 when every runtime's gate was green, 1 when one was red or unknown,
    130 when interrupted."""
    from harness.session import facts
    specs = order_specs(args.runtime or release_specs())
    table = load_table()
    columns = []
    t0 = time.monotonic()
    for i, spec in enumerate(specs, start=1):
        if interrupt.STOP.requested:
            break
        sub = folder / _folder_name(spec)
        print(f"boxlite-chaos matrix: {i} of {len(specs)}: {spec} into {sub}", flush=True)
        col = run_column(spec, sub, seed, args.workers, args.scenario or (), args.k,
                         args.hostile_examples, args.hostile_budget)
        word = gate_word({"unknown": col.unknown, "green": col.exit_code == 0})
        print(f"boxlite-chaos matrix: {spec}: {word} after {col.wall_s:.0f}s", flush=True)
        columns.append(col)
    data = build_grid(columns, table)
    data.update(seed=seed, hostile_examples=args.hostile_examples,
                hostile_budget_s=args.hostile_budget,
                wall_s=round(time.monotonic() - t0, 1),
                started=datetime.now(UTC).isoformat(timespec="seconds"),
                machine=facts.machine_facts(None))
    write_matrix(folder, data, folder.name)
    print(render_grid(data))
    print(f"matrix: {folder / 'matrix.html'} ({data['wall_s']:.0f}s for {len(columns)} runtimes)")
    if interrupt.STOP.requested:
        return interrupt.EXIT_INTERRUPTED
    return 0 if all(r["green"] for r in data["runtimes"]) and len(columns) == len(specs) else 1


def rebuild_matrix(folder: Path) -> dict[str, Any]:
    """Judge a finished matrix folder again against today's known-failures table, without
    running anything: each runtime's results are read back from its gate folder (each
    violation judged again, symptoms included: grid.rejudge_violations), its exit
    and reason from the matrix.json written at the time. Rewrites the matrix files and returns
    the data. Raises SetupError when `folder` holds no matrix.json or a gate folder that
    judged holds no readable results."""
    try:
        old = json.loads((folder / "matrix.json").read_text())
    except (OSError, ValueError) as exc:
        raise SetupError(f"{folder} holds no readable matrix.json ({exc}); is it a matrix "
                         "folder?") from exc
    columns = []
    table = load_table()
    for r in old.get("runtimes", []):
        col = Column(r["spec"], r["version"], unknown=r.get("unknown") or "",
                     exit_code=r.get("exit_code"), wall_s=r.get("wall_s"))
        if not col.unknown:
            try:
                col.results = read_run(folder / _folder_name(r["spec"]))
            except HarnessError as exc:
                raise SetupError(f"matrix {folder}: {r['spec']}: {exc}") from exc
            # Violations are judged again with today's symptoms: their evidence is kept.
            sdk = RuntimeSpec.parse(col.spec).sdk
            col.results = {nid: rejudge_violations(res, judged_version(col, nid), sdk, table)
                           for nid, res in col.results.items()}
        columns.append(col)
    data = build_grid(columns, table)
    for key in ("seed", "hostile_examples", "hostile_budget_s", "wall_s", "started", "machine"):
        data[key] = old.get(key)
    write_matrix(folder, data, folder.name)
    return data


# -- bisect --------------------------------------------------------------------------------------

def check_verdict(results: dict[str, dict[str, Any]], pattern: str) -> str:
    """One runtime's verdict on the checks `pattern` matches, over every scenario that judged
    one: `violated` if any was violated (tabled or not), else `unknown` if any could not be
    measured, else `holds`; `absent` when none was judged."""
    cells = [cell_of(r, j["check"]) for r in results.values() for j in r.get("judgements", [])
             if wildcard(pattern, j.get("check", ""))]
    if not cells:
        return ABSENT
    if any(c in VIOLATIONS for c in cells):
        return VIOLATED
    if UNKNOWN in cells:
        return UNKNOWN
    return HOLDS


def scenarios_judging(results: dict[str, dict[str, Any]], pattern: str) -> list[str]:
    """The scenario names (module names without 'test_', as `gate --scenario` takes them)
    whose results judged a check `pattern` matches."""
    out = set()
    for nid, r in results.items():
        if any(wildcard(pattern, j.get("check", "")) for j in r.get("judgements", [])):
            out.add(Path(nid.split("::", 1)[0]).stem.removeprefix("test_"))
    return sorted(out)


def bisect_releases(verdict_of: Callable[[str], str], releases: Sequence[str]
                    ) -> dict[str, Any]:
    """The first release whose verdict differs from the oldest's, probing as few as a binary
    search needs (it assumes the verdict changes once). A probe that is `unknown` or `absent`
    is skipped, as `git bisect skip` does: the answer is then a range. Returns the probes
    (release → verdict), and `first_changed` / `last_same` (None when the ends agree)."""
    probes: dict[str, str] = {}

    def probe(i: int) -> str:
        v = releases[i]
        if v not in probes:
            probes[v] = verdict_of(v)
        return probes[v]

    lo, hi = 0, len(releases) - 1
    start, end = probe(lo), probe(hi)
    out: dict[str, Any] = {"oldest": start, "newest": end, "probes": probes,
                           "first_changed": None, "last_same": None, "skipped": []}
    if start in (UNKNOWN, ABSENT) or end in (UNKNOWN, ABSENT) or start == end:
        return out
    # Invariant: releases[lo] has the old verdict, releases[hi] does not.
    while hi - lo > 1:
        candidates = list(range(lo + 1, hi))
        mid = candidates[len(candidates) // 2]
        order = sorted(candidates, key=lambda i: abs(i - mid))
        decided = False
        for i in order:
            v = probe(i)
            if v in (UNKNOWN, ABSENT):
                out["skipped"].append(releases[i])
                continue
            if v == start:
                lo = i
            else:
                hi = i
            decided = True
            break
        if not decided:
            break
    out["last_same"], out["first_changed"] = releases[lo], releases[hi]
    out["exact"] = hi - lo == 1
    return out


def run_bisect(args: argparse.Namespace, folder: Path, seed: int) -> int:
    """`matrix --bisect CHECK`: find where CHECK's verdict changes among the releases given
    (default: all). Without --scenario, the newest release's whole gate runs first to learn
    which scenarios judge the check; every other probe runs only those. Writes bisect.json;
    returns 0 when a change was located, 1 otherwise (ends agree, or unknown probes)."""
    releases = [s for s in order_specs(args.runtime or release_specs()) if version_of(s)]
    if len(releases) < 2:
        raise UsageError("--bisect needs at least two releases")
    pattern = args.bisect
    scenarios = list(args.scenario or ())
    if not scenarios:
        newest = releases[-1]
        col = run_column(newest, folder / _folder_name(newest), seed, args.workers,
                         hostile_examples=args.hostile_examples,
                         hostile_budget_s=args.hostile_budget)
        if col.unknown:
            raise UsageError(f"--bisect: the newest release {newest} could not be judged: "
                             f"{col.unknown}")
        scenarios = scenarios_judging(col.results, pattern)
        if not scenarios:
            raise UsageError(f"--bisect {pattern!r}: no scenario judged a check matching it "
                             f"on {newest}")
        known = {version_of(newest): check_verdict(col.results, pattern)}
    else:
        known = {}
    print(f"boxlite-chaos matrix --bisect {pattern}: scenarios {', '.join(scenarios)}",
          flush=True)

    def verdict_of(version: str) -> str:
        if version in known:
            return known[version]
        if interrupt.STOP.requested:
            return UNKNOWN
        col = run_column(f"boxlite=={version}", folder / version, seed, args.workers,
                         scenarios, args.k, args.hostile_examples, args.hostile_budget)
        v = UNKNOWN if col.unknown else check_verdict(col.results, pattern)
        print(f"boxlite-chaos matrix --bisect: {version}: {v}"
              f"{' (' + col.unknown + ')' if col.unknown else ''}", flush=True)
        return v

    out = bisect_releases(verdict_of, [version_of(s) or "" for s in releases])
    out.update(check=pattern, scenarios=scenarios, seed=seed)
    (folder / "bisect.json").write_text(json.dumps(out, indent=1))
    probes = ", ".join(f"{v} {out['probes'][v]}" for v in sorted(out["probes"], key=Version))
    if out["first_changed"]:
        exact = "" if out.get("exact") else \
            f" (somewhere after {out['last_same']}; skipped {', '.join(out['skipped'])})"
        print(f"{pattern}: {out['oldest']} through {out['last_same']}, "
              f"{out['probes'][out['first_changed']]} from {out['first_changed']}{exact}")
    else:
        print(f"{pattern}: no change located: oldest {out['oldest']}, newest {out['newest']}")
    print(f"probes: {probes}")
    if interrupt.STOP.requested:
        return interrupt.EXIT_INTERRUPTED
    return 0 if out["first_changed"] and out.get("exact") else 1


def cmd_matrix(args: argparse.Namespace) -> int:
    from harness.session.doctor import check_kvm
    if args.rejudge:
        data = rebuild_matrix(Path(args.rejudge))
        print(render_grid(data))
        print(f"matrix: {Path(args.rejudge) / 'matrix.html'} (judged again)")
        return 0 if all(r["green"] for r in data["runtimes"]) else 1
    for spec in args.runtime or ():
        RuntimeSpec.parse(spec)             # a malformed spec fails before anything starts
    if args.scenario:
        resolve_scenarios(args.scenario)    # an unknown scenario name fails here
    if args.nightly:
        # The gates it starts inherit the environment: the nightly storage scenarios run
        # there (scenarios/storage/conftest.py skips them elsewhere).
        os.environ["BOXLITE_CHAOS_STORAGE_NIGHTLY"] = "1"
        os.environ["BOXLITE_CHAOS_OPS_NIGHTLY"] = "1"
        args.hostile_examples = (NIGHTLY_HOSTILE_EXAMPLES if args.hostile_examples is None
                                 else args.hostile_examples)
        args.hostile_budget = (NIGHTLY_HOSTILE_BUDGET_S if args.hostile_budget is None
                               else args.hostile_budget)
    if args.hostile_examples is not None and args.hostile_examples < 0:
        raise UsageError(f"--hostile-examples {args.hostile_examples}: expected 0 or more")
    if args.hostile_budget is not None and not 0 < args.hostile_budget <= 240:
        raise UsageError(f"--hostile-budget {args.hostile_budget}: expected seconds above 0 "
                         "and at most 240")
    ok, why = check_kvm()
    if not ok:
        raise SetupError(f"the matrix cannot run: {why}")
    seed = seeds.parse_seed(args.seed) if args.seed is not None else seeds.GATE_SEED
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = (Path(args.report).resolve() if args.report
              else PROJECT / "reports" / f"{'bisect' if args.bisect else 'matrix'}-{stamp}")
    folder.mkdir(parents=True, exist_ok=True)
    args.workers = workers_or_chosen(args.workers)     # once, the same for every runtime
    if args.bisect:
        return run_bisect(args, folder, seed)
    return run_matrix(args, folder, seed)


def add_parser(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("matrix", help="the gate once per runtime (default: every published "
                                      "release), one scenario x check x runtime report")
    m.add_argument("--runtime", action="append", metavar="SPEC",
                   help="a runtime to judge (repeatable; default: every published release, "
                        "0.9.0 to 0.10.8)")
    m.add_argument("--scenario", action="append", help="run only this scenario (repeatable)")
    m.add_argument("-k", help="pytest -k expression")
    m.add_argument("--report", help="matrix folder (default: reports/matrix-<time>)")
    m.add_argument("-n", "--workers", type=worker_count,
                   help="parallel workers of each runtime's gate (default: chosen from this "
                        "machine's cores and memory, harness/session/pace.py)")
    m.add_argument("--seed", help=f"the generated cases' seed (default {seeds.GATE_SEED})")
    m.add_argument("--hostile-examples", type=int, metavar="N",
                   help="generated cases per hostile family (default: the gate's 40; the "
                        f"nightly matrix uses {NIGHTLY_HOSTILE_EXAMPLES})")
    m.add_argument("--hostile-budget", type=float, metavar="SECONDS",
                   help="seconds of new hostile cases per shard, which bounds shrinking "
                        f"(default: the gate's 180; nightly {NIGHTLY_HOSTILE_BUDGET_S:.0f})")
    m.add_argument("--nightly", action="store_true",
                   help=f"the nightly matrix: {NIGHTLY_HOSTILE_EXAMPLES} generated hostile "
                        f"cases per family and {NIGHTLY_HOSTILE_BUDGET_S:.0f} s of new cases "
                        "per shard unless given")
    m.add_argument("--rejudge", metavar="MATRIX",
                   help="judge a finished matrix folder again against today's known-failures "
                        "table (after editing it), running nothing")
    m.add_argument("--bisect", metavar="CHECK",
                   help="find the first release on which the verdict of CHECK (a check id; "
                        "* is a wildcard) changes, running only the scenarios that judge it")
    m.set_defaults(fn=cmd_matrix)
