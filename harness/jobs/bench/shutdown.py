"""The bench-shutdown job: host shutdown timed with boxes in every init state, p50/p95/max
per flavour and N (the arrangement is the core's, harness.scenario.shutdown)."""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.common.errors import HarnessError
from harness.common.wait import WaitTimeout, wait_for
from harness.faults.base import FaultSet
from harness.observe.history import History
from harness.observe.processes import ProcessLedger, become_subreaper
from harness.runtime.host import (
    HostFactory,
)
from harness.scenario.context import RUNTIME_KINDS, WATCHDOG_BOUND_S
from harness.scenario.shutdown import (
    CASES,
    Case,
    arrange,
    failed_box_options,
    signal_host,
)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    vs = sorted(values)
    if not vs:
        return None
    return vs[max(0, math.ceil(q / 100 * len(vs)) - 1)]


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (case, n): how many runs, and p50/p95/max of exit and last-gone times."""
    rows = []
    for key in dict.fromkeys((r["case"], r["n"]) for r in runs):
        group = [r for r in runs if (r["case"], r["n"]) == key]
        row: dict[str, Any] = {"case": key[0], "n": key[1], "runs": len(group),
                               "errors": sum(1 for r in group if r.get("error"))}
        for what in ("exit_s", "last_gone_s"):
            vals = [r[what] for r in group if r.get(what) is not None]
            row[f"{what}_unmeasured"] = len(group) - len(vals)
            for q, name in ((50, "p50"), (95, "p95"), (100, "max")):
                row[f"{what}_{name}"] = percentile(vals, q)
        rows.append(row)
    return rows


def render_table(rows: Sequence[dict[str, Any]]) -> str:
    """Seconds from the signal, to the millisecond (a graceful exit here takes milliseconds)."""
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    def cols(r: dict[str, Any], what: str) -> str:
        return "/".join(f(r[f"{what}_{k}"]) for k in ("p50", "p95", "max"))

    head = (f"{'case':<12}{'n':>3}{'runs':>6}{'err':>5}   {'exit p50/p95/max (s)':<26}"
            f"{'last gone p50/p95/max (s)':<26}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['case']:<12}{r['n']:>3}{r['runs']:>6}{r['errors']:>5}   "
                     f"{cols(r, 'exit_s'):<26}{cols(r, 'last_gone_s'):<26}")
    return "\n".join(lines)


def _bench_once(env: Any, image: Any, workdir: Path, case: Case, n: int,
                failed_options: dict[str, Any]) -> dict[str, Any]:
    history = History(workdir / "history.jsonl", {"bench": "shutdown", "case": case.name,
                                                  "n": n, "runtime": env.spec.text})
    ledger = ProcessLedger().start()
    factory = HostFactory(env, workdir, history)
    faults = FaultSet(history)
    out: dict[str, Any] = {"case": case.name, "n": n, "workdir": str(workdir)}
    try:
        host = factory.start(flavour=case.flavour)
        ledger.own_children.add(host.pid)
        boxes = arrange(host, faults, n, {"rootfs_path": str(image.path), "auto_remove": False},
                        failed_options)
        run = signal_host(host, ledger, faults, boxes, case)
        facts = run.facts()
        history.append("note", **facts)
        out.update(exit_s=facts["exit_s"], last_gone_s=facts["last_gone_s"],
                   orphans=len(facts["orphans"]), returncode=run.returncode)
    except (HarnessError, WaitTimeout) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        faults.heal_all()
        factory.close_all()
        try:
            wait_for(lambda: ledger.sample() and not ledger.leftovers(RUNTIME_KINDS),
                     WATCHDOG_BOUND_S, "the bench's processes to end after their hosts",
                     interval_s=0.05)
        except WaitTimeout:
            pass            # killed just below, and counted
        ledger.stop()
        out["killed_in_teardown"] = len(ledger.kill_leftovers())
        history.close()
    return out


def run_benchmark(spec: str, flavours: Sequence[str], ns: Sequence[int], repeats: int,
                  out_dir: Path | None = None, log: Any = print) -> list[dict[str, Any]]:
    """Repeat the shutdown scenario's arrangement and signal outside pytest, and return (and
    print) p50/p95/max of the host's exit and of the last box process's end, per case and N.

    Cases are names from CASES. No checks are judged here; each run's history, with its
    facts, lands under `out_dir`, with `runs.json` and `table.json` beside them.
    """
    from harness.runtime.image import busybox_image
    from harness.runtime.spec import ensure_runtime
    from harness.session.doctor import boot_probe

    unknown = sorted(set(flavours) - set(CASES))
    if unknown:
        raise HarnessError(f"unknown flavour(s) {unknown}; known: {', '.join(CASES)}")
    become_subreaper()
    env = ensure_runtime(spec)
    image = busybox_image()
    failed_options = failed_box_options(boot_probe(env)[0])
    if out_dir is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out_dir = Path("reports") / f"bench-shutdown-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for name in flavours:
        for n in ns:
            for i in range(repeats):
                t0 = time.monotonic()
                r = _bench_once(env, image, out_dir / f"{name}-n{n}-r{i + 1}", CASES[name], n,
                                failed_options)
                r["wall_s"] = round(time.monotonic() - t0, 1)
                runs.append(r)
                log(f"{name} n={n} #{i + 1}: exit {r.get('exit_s')}s, last gone "
                    f"{r.get('last_gone_s')}s, orphans {r.get('orphans')}, wall {r['wall_s']}s"
                    + (f", ERROR {r['error']}" if r.get("error") else ""))
    table = summarize(runs)
    (out_dir / "runs.json").write_text(json.dumps(runs, indent=1))
    (out_dir / "table.json").write_text(json.dumps(table, indent=1))
    log(render_table(table))
    return table


def _split_list(kind: type) -> Any:
    return lambda text: [kind(x) for x in text.split(",") if x]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `bench-shutdown` on the CLI's subparsers."""
    from harness.runtime.spec import DEFAULT_SPEC

    p = subparsers.add_parser("bench-shutdown", help="time host shutdown with boxes in every "
                              "init state: p50/p95/max per flavour and N")
    p.add_argument("--runtime", default=DEFAULT_SPEC)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n", type=_split_list(int), action="extend", nargs="+",
                   help="box counts, e.g. --n 1 3 8 or --n 1,3 (default 1 3 8)")
    p.add_argument("--flavour", type=_split_list(str), action="extend", nargs="+",
                   help=f"cases among {', '.join(CASES)} (default runner sdk_default bare)")
    p.add_argument("--out", help="folder for the runs (default reports/bench-shutdown-<time>)")
    p.set_defaults(fn=cmd_bench_shutdown)
    return p


def cmd_bench_shutdown(args: argparse.Namespace) -> int:
    flat = lambda xs: [x for part in xs for x in part] if xs else None  # noqa: E731
    table = run_benchmark(args.runtime, flat(args.flavour) or ["runner", "sdk_default", "bare"],
                          flat(args.n) or [1, 3, 8], args.repeats,
                          Path(args.out) if args.out else None)
    return 1 if any(r["errors"] for r in table) else 0
