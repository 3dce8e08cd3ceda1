"""One report from the report folders of a gate's shards (CI runners): their results, their
scenario folders and their junit files in one folder, and report.html over all of them.

A shard that left no folder, or whose run ended before some of its scenarios finished, is
not a pass: each such scenario (or the whole shard, when its list is gone with it) is
`unknown`, saying which shard. `python -m harness.jobs.fleet.merge OUT SHARD_DIR...` exits 0
only when every shard is there and every scenario passed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from harness.common.errors import HarnessError, UsageError
from harness.jobs.fleet.plugin import LOST_CHECK, SHARD_FILE
from harness.report.build import load_results
from harness.session.stopping import append_result, unfinished_judgement

MISSING_CHECK = "shard_reported"


def _unknown(nodeid: str, runtime: str | None, summary: str, check: str,
             **evidence: Any) -> dict[str, Any]:
    j = unfinished_judgement(summary, **evidence)
    j["check"] = check
    return {"nodeid": nodeid, "outcome": "unknown", "duration_s": None, "runtime": runtime,
            "runtime_version": None, "workdir": None, "judgements": [j]}


def merge(out: Path, shards: list[Path]) -> dict[str, Any]:
    """Merge the shard folders into `out` (results.jsonl, scenarios/, junit-<K>.xml, run.json)
    and build its report; returns what was merged and what is missing."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.jsonl").unlink(missing_ok=True)
    seen: dict[int, Path] = {}
    total = None
    runtime = None
    for folder in shards:
        try:
            meta = json.loads((folder / SHARD_FILE).read_text())
            k, n = (int(x) for x in meta["shard"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{folder}: not a shard's report folder (no readable "
                             f"{SHARD_FILE}: {exc})") from None
        if total is not None and n != total:
            raise UsageError(f"{folder}: shard {k}/{n} is not of the same run as the others "
                             f"(of {total})")
        if k in seen:
            raise UsageError(f"shard {k}/{n} is given twice: {seen[k]} and {folder}")
        total, seen[k] = n, folder
        results = load_results(folder)
        runtime = runtime or next((r.get("runtime") for r in results), None)
        for sub in sorted((folder / "scenarios").glob("*")):
            if sub.is_dir():
                shutil.copytree(sub, out / "scenarios" / sub.name, dirs_exist_ok=True)
        have = set()
        for r in results:
            if r.get("workdir"):
                r["workdir"] = str(out / "scenarios" / Path(r["workdir"]).name)
            r["shard"] = f"{k}/{n}"
            append_result(out, r)
            have.add(r["nodeid"])
        finished = set(meta.get("finished") or [])
        for nodeid in meta.get("collected") or []:
            if nodeid not in have and nodeid not in finished and nodeid.startswith("scenarios/"):
                append_result(out, _unknown(
                    nodeid, runtime, f"shard {k}/{n}'s run ended before it finished; its "
                    "checks were not judged", LOST_CHECK, shard=f"{k}/{n}"))
        if (folder / "junit.xml").is_file():
            shutil.copy(folder / "junit.xml", out / f"junit-{k}.xml")
        if not (out / "run.json").is_file() and (folder / "run.json").is_file():
            shutil.copy(folder / "run.json", out / "run.json")
    missing = sorted(set(range(1, (total or 0) + 1)) - set(seen))
    for k in missing:
        append_result(out, _unknown(f"shard {k}/{total}", runtime,
                                    f"shard {k}/{total} left no report folder (its runner "
                                    "failed before writing one); its scenarios were not "
                                    "judged", MISSING_CHECK, shard=f"{k}/{total}"))
    from harness.report.build import build_report
    build_report(out)
    results = load_results(out)
    return {"shards": total, "merged": sorted(seen), "missing": missing,
            "scenarios": len(results),
            "failing": [r["nodeid"] for r in results if r.get("outcome") != "passed"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.jobs.fleet.merge",
                                description=__doc__.splitlines()[0])
    p.add_argument("out", help="the merged report folder")
    p.add_argument("shards", nargs="+", help="the shards' report folders")
    args = p.parse_args(argv)
    if not args.shards:
        return 2
    try:
        res = merge(Path(args.out), [Path(s) for s in args.shards])
    except HarnessError as exc:
        print(f"boxlite-chaos: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"merged shards {res['merged']} of {res['shards']}"
          + (f"; missing {res['missing']}" if res["missing"] else "")
          + f": {res['scenarios']} scenario(s), {len(res['failing'])} not passed; "
          f"report: {Path(args.out) / 'report.html'}")
    for nodeid in res["failing"]:
        print(f"  not passed: {nodeid}")
    return 1 if res["failing"] or res["missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
