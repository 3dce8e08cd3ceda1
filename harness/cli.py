"""`boxlite-chaos`: doctor | gate | matrix | ripout | conformance | repro | report | sweep | bench.

Bad input (an unknown runtime version, a missing /dev/kvm, an unknown scenario) is reported in
one line naming the problem, with a non-zero exit; never a traceback. Every job first sweeps
what dead runs left (harness.leftovers.sweep), and stops in order on SIGTERM/SIGINT/SIGHUP with exit
130, or at once on a second signal with exit 131 (harness.session.interrupt).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from harness.common.errors import HarnessError, SetupError, UsageError
from harness.common.paths import PROJECT
from harness.leftovers import sweep
from harness.runtime.spec import DEFAULT_SPEC, RuntimeSpec
from harness.session import interrupt, seeds
from harness.session.pace import worker_count, workers_or_chosen
from harness.session.selection import SCENARIOS, resolve_scenarios


def _new_report_dir(kind: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return PROJECT / "reports" / f"{kind}-{stamp}"


def cmd_doctor(args: argparse.Namespace) -> int:
    from harness.session.doctor import run_doctor
    report = run_doctor(args.runtime, boot=not args.no_boot, refresh=args.refresh)
    print(report.render())
    return 0 if report.tiers.get("init") is None else 1


def cmd_gate(args: argparse.Namespace) -> int:
    import contextlib

    import pytest

    from harness.session.doctor import check_kvm
    RuntimeSpec.parse(args.runtime)         # a malformed spec fails before anything starts
    targets = resolve_scenarios(args.scenario) if args.scenario else [str(SCENARIOS)]
    if args.repeat < 1:
        raise UsageError(f"--repeat {args.repeat}: expected 1 or more runs")
    if args.seed is not None and args.explore:
        raise UsageError("--seed replays a seed's cases and --explore draws a new seed: "
                         "give one of them")
    hosts = None
    if args.tx or args.hosts:
        from harness.jobs.fleet.hosts import resolve_hosts
        hosts = resolve_hosts(args.tx, args.hosts)       # bad input: one line, exit 2
        if args.repeat > 1:
            raise UsageError("--repeat runs on this machine only; give --tx/--hosts or "
                             "--repeat, not both")
    remote = bool(hosts) and any(h.remote for h in hosts)
    seed = (seeds.parse_seed(args.seed) if args.seed is not None
            else seeds.fresh_seed() if args.explore else seeds.GATE_SEED)
    if not remote or any(not h.remote for h in hosts or ()):
        ok, why = check_kvm()
        if not ok:
            raise SetupError(f"the gate cannot run: {why}")
        # An unknown version fails here, in one line, before any worker starts.
        from harness.runtime.spec import ensure_runtime
        ensure_runtime(args.runtime)
    report = Path(args.report).resolve() if args.report else _new_report_dir("gate")
    report.mkdir(parents=True, exist_ok=True)
    os.environ[seeds.SEED_ENV] = str(seed)
    if args.explore:
        os.environ[seeds.EXPLORE_ENV] = "1"
    if not hosts:
        args.workers = workers_or_chosen(args.workers)
    if args.repeat > 1:
        from harness.jobs.repeat.flakes import repeat_gate
        return repeat_gate(args, report, seed)
    os.environ["BOXLITE_CHAOS_REPORT"] = str(report)
    if hosts or args.shard:
        from harness.jobs.fleet import gate as fleet
        if remote:
            # Each host builds its runtime and image (or finds them) before any worker starts.
            fleet.prepare(hosts, args.runtime, report)
        selection = fleet.pytest_arguments(targets, hosts, args.shard)
    else:
        selection = [*targets, "-o", "testpaths=scenarios"]
    argv = [*selection, f"--runtime={args.runtime}", f"--chaos-report={report}",
            f"--junitxml={report / 'junit.xml'}", "-p", "no:cacheprovider", "-q",
            "--chaos-record-durations"]
    if args.workers != "1" and not hosts:
        argv += ["-n", args.workers, "--dist", "worksteal"]
    if args.k:
        argv += ["-k", args.k]
    on = (f", hosts {', '.join(f'{h.name} ({h.workers})' for h in hosts)}" if hosts else "")
    on += f", shard {args.shard[0]}/{args.shard[1]}" if args.shard else ""
    print(f"boxlite-chaos gate: runtime {args.runtime}, seed {seed}"
          f"{' (exploring)' if args.explore else ''}{on}, report {report}", flush=True)
    # Over remote hosts pytest starts in the checkout: it reads testpaths there only.
    with contextlib.chdir(PROJECT) if remote else contextlib.nullcontext():
        rc = pytest.main(argv)
    print(f"report: {report / 'report.html'}")
    if interrupt.STOP.requested:
        return interrupt.EXIT_INTERRUPTED
    findings = report / seeds.FINDINGS
    if findings.is_file():
        n = len(findings.read_text().splitlines())
        print(f"{n} new hostile case(s) in {findings}; to replay them in every run, add the "
              f"lines to {seeds.PINNED.relative_to(PROJECT)}")
    return int(rc)


def cmd_soak(args: argparse.Namespace) -> int:
    """`soak`: on this machine (harness.jobs.soak), or with --tx/--hosts one soak per host at
    once, its report here (harness.jobs.fleet.soak)."""
    from harness.jobs.soak import cli as soak
    soak.check_arguments(args)
    if args.tx or args.hosts:
        from harness.jobs.fleet.soak import soak_on_hosts
        return soak_on_hosts(args)
    return soak.cmd_soak(args)


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report.build import build_report
    run = Path(args.run)
    if not (run / "results.jsonl").is_file():
        raise SetupError(f"{run} holds no results.jsonl; is it a run folder?")
    print(build_report(run))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="boxlite-chaos", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("doctor", help="what this machine can run, and why not")
    d.add_argument("--runtime", default=DEFAULT_SPEC)
    d.add_argument("--no-boot", action="store_true", help="skip the real boot attempt")
    d.add_argument("--refresh", action="store_true", help="ignore the cached boot result")
    d.set_defaults(fn=cmd_doctor)

    g = sub.add_parser("gate", help="run the scenarios against a runtime and write a report")
    g.add_argument("--runtime", default=DEFAULT_SPEC)
    g.add_argument("--report", help="report folder (default: reports/gate-<time>)")
    g.add_argument("--scenario", action="append", help="run only this scenario (repeatable)")
    g.add_argument("-k", help="pytest -k expression")
    g.add_argument("-n", "--workers", type=worker_count,
                   help="parallel workers (pytest-xdist; 1 runs serially). Default: chosen "
                        "from this machine, 2 per core while memory holds them (scenarios "
                        "mostly wait on the runtime; harness/session/pace.py)")
    g.add_argument("--seed", help="draw the generated cases from this seed (default: the "
                                  f"gate's committed seed {seeds.GATE_SEED})")
    g.add_argument("--explore", action="store_true",
                   help="draw from a fresh seed (recorded in the report) and write violated "
                        "generated cases out, ready to pin; for nightly runs (see "
                        "docs/hostile-inputs.md)")
    g.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run the gate N times against one runtime and report, per scenario "
                        "and check, how often each verdict came; a verdict that changes "
                        "between runs is a flake (see docs/repeatable-verdicts.md)")
    from harness.jobs.fleet.shard import parse_shard
    g.add_argument("--tx", action="append", metavar="SPEC",
                   help="run on this host (repeatable): an xdist --tx spec, "
                        "[N*]ssh=DEST//python=CHECKOUT/.venv/bin/python//chdir=CHECKOUT for "
                        "N workers there; each host prepares its own runtime and homes, and "
                        "the report is written here (-n is not used)")
    g.add_argument("--hosts", metavar="FILE",
                   help="run on the hosts of this TOML file (format: harness/jobs/fleet/hosts.py;"
                        " see docs/fleet.md)")
    g.add_argument("--shard", type=parse_shard, metavar="K/N",
                   help="run the K-th of N shares of the scenarios (for CI runners; merge "
                        "the shards' folders with python -m harness.jobs.fleet.merge; see "
                        "docs/fleet.md)")
    g.set_defaults(fn=cmd_gate)

    r = sub.add_parser("report", help="rebuild the HTML report of a run folder")
    r.add_argument("run")
    r.set_defaults(fn=cmd_report)

    from harness.jobs.bench import gate as bench_gate
    from harness.jobs.bench import ledger as bench_ledger
    from harness.jobs.bench import shutdown as bench_shutdown
    from harness.jobs.conformance import matrix as conformance
    from harness.jobs.fleet import soak as fleet_soak
    from harness.jobs.matrix import run as release_matrix
    from harness.jobs.points import run as fault_points
    from harness.jobs.repro import replay as repro
    from harness.jobs.ripout import entries as ripout
    from harness.jobs.soak import cli as soak
    bench_gate.add_parser(sub)
    soaking = soak.add_parser(sub)
    fleet_soak.add_host_arguments(soaking)
    soaking.set_defaults(fn=cmd_soak)
    conformance.add_parser(sub)
    release_matrix.add_parser(sub)
    repro.add_parser(sub)
    ripout.add_parser(sub)
    bench_ledger.add_parser(sub)
    bench_shutdown.add_parser(sub)
    fault_points.add_parser(sub)
    sweep.add_parser(sub)
    return p


# Commands that start nothing: no sweep before them, no stop handling around them.
PASSIVE = ("report", "sweep")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd in PASSIVE:
        return _run(args)
    sweep.claim_run()
    sweep.sweep_at_start()
    try:
        with interrupt.job():
            rc = _run(args)
    except KeyboardInterrupt:
        rc = interrupt.EXIT_INTERRUPTED
    if interrupt.STOP.requested:
        print(f"boxlite-chaos {args.cmd}: interrupted by {interrupt.STOP.describe()}; "
              f"stopped {interrupt.STOP.elapsed():.1f} s after the signal, exit "
              f"{interrupt.EXIT_INTERRUPTED}", file=sys.stderr, flush=True)
        return interrupt.EXIT_INTERRUPTED
    return rc


def _run(args: argparse.Namespace) -> int:
    try:
        return args.fn(args)
    except HarnessError as exc:
        print(f"boxlite-chaos: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
