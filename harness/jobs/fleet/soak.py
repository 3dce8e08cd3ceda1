"""`soak --tx SPEC | --hosts FILE`: one soak on each host at once, each with its own seed and
homes, their folders brought back and one report written here.

Each host runs `python -m harness.jobs.soak.cli` in its own checkout, as a child of its
execnet gateway that dies with it (PR_SET_PDEATHSIG: a lost controller stops the soak in
order, through its own SIGTERM handling); its report folder, in the host's /tmp, travels back
as a tar and is removed there. A host lost mid-soak is `unknown`, with the reason.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tarfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.common.errors import UsageError
from harness.common.paths import PROJECT
from harness.jobs.fleet.hosts import HOSTS_FILE, Host, resolve_hosts
from harness.jobs.fleet.plugin import LOST_CHECK
from harness.session.stopping import append_result, unfinished_judgement

# Beyond the soak's own budget: preparing the host, shrinking, the report, the transfer.
MARGIN_S = 1800.0
# The node id (and scenario folder) a host's soak writes its result under: the soak job's
# harness.jobs.soak.model.NODE_ID, read here from its files, not its code (tests/test_fleet.py
# checks that the two agree).
NODE_ID = "soak"
REMOTE_SOURCE = """
from harness.jobs.fleet import soak
soak.on_host(channel)
"""


def add_host_arguments(p: Any) -> None:
    """The soak's --tx/--hosts options (the CLI adds them to `soak`)."""
    p.add_argument("--tx", action="append", metavar="SPEC",
                   help="soak on this host too (repeatable; an xdist --tx spec, see `gate "
                        "--tx`): one soak per host at once, seeds SEED, SEED+1, ...")
    p.add_argument("--hosts", metavar="FILE",
                   help="soak on the hosts of this TOML file (harness/jobs/fleet/hosts.py)")


def soak_on_hosts(args: Any, say: Any = print) -> int:
    """`soak --tx/--hosts`: the hosts resolved (bad input raises UsageError in one line), the
    report folder (`--report`, else reports/soak-<time>), then run_soak_on_hosts."""
    hosts = resolve_hosts(args.tx, args.hosts)
    report = Path(args.report).resolve() if args.report else \
        PROJECT / "reports" / datetime.now(UTC).strftime("soak-%Y%m%dT%H%M%SZ")
    return run_soak_on_hosts(hosts, args, report, say=say)


def soak_argv(args: Any, seed: int | None) -> list[str]:
    """The soak CLI arguments a host runs with (its own seed; no report folder)."""
    if getattr(args, "replay", None):
        raise UsageError("--replay runs on this machine only (its schedule is a file here); "
                         "give --tx/--hosts or --replay, not both")
    out = ["--runtime", args.runtime, "--max-boxes", str(args.max_boxes),
           "--max-starting", str(args.max_starting), "--shrink-s", str(args.shrink_s)]
    out += ["--duration", str(args.duration)] if args.duration is not None \
        else ["--cycles", str(args.cycles)]
    if seed is not None:
        out += ["--seed", str(seed)]
    return out


def on_host(channel: Any) -> None:
    """On the host: run the soak as a child that dies with this process; send back its exit
    status, the tail of its output and its report folder as a tar; keep nothing."""
    import ctypes
    import os
    import signal
    import subprocess
    import sys

    from harness.leftovers import markers
    req = channel.receive()
    folder = markers.tmp_root() / f"bxc-fleet-soak-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    markers.mark(folder, "fleet-soak")
    libc = ctypes.CDLL(None, use_errno=True)

    def die_with_parent() -> None:
        libc.prctl(1, signal.SIGTERM)       # PR_SET_PDEATHSIG
    log = folder / "soak.log"
    try:
        with open(log, "wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "harness.jobs.soak.cli", "--report",
                                     str(folder / "report"), *req["argv"]],
                                    stdout=fh, stderr=subprocess.STDOUT,
                                    preexec_fn=die_with_parent)
            rc = proc.wait()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            if (folder / "report").is_dir():
                tar.add(folder / "report", arcname=".")
        channel.send({"rc": rc, "tar": buf.getvalue(),
                      "log": log.read_text(errors="replace")[-4000:]})
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        markers.release(folder)


def soak_one(host: Host, argv: list[str], timeout_s: float) -> dict[str, Any]:
    import execnet
    group = execnet.Group()
    try:
        ch = group.makegateway(host.spec).remote_exec(REMOTE_SOURCE)
        ch.send({"argv": argv})
        return ch.receive(timeout_s)
    except execnet.TimeoutError:
        return {"error": f"no answer within {timeout_s:.0f} s"}
    except (execnet.HostNotFound, execnet.RemoteError, OSError, EOFError) as exc:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
        return {"error": f"{type(exc).__name__}: {text}"}
    finally:
        group.terminate(timeout=10.0)


def _extract(data: bytes, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")


def collect(report: Path, host: Host, answer: dict[str, Any],
            runtime: str) -> dict[str, Any]:
    """One host's soak into the report: its folder under hosts/<name>/, its scenario folder
    as scenarios/soak@<name>, its results line naming the host (unknown when it was lost)."""
    nodeid = f"{NODE_ID}@{host.name}"
    if "error" in answer:
        j = unfinished_judgement(f"host {host.name} was lost during its soak ({answer['error']})"
                                 "; its checks were not judged", host=host.name)
        j["check"] = LOST_CHECK
        line = {"nodeid": nodeid, "outcome": "unknown", "duration_s": None, "runtime": runtime,
                "runtime_version": None, "workdir": None, "host": host.name, "judgements": [j]}
        append_result(report, line)
        return line
    folder = report / "hosts" / host.name
    _extract(answer["tar"], folder)
    (folder / "soak.log").write_text(answer.get("log", ""))
    workdir = report / "scenarios" / nodeid
    if (folder / "scenarios" / NODE_ID).is_dir():
        shutil.copytree(folder / "scenarios" / NODE_ID, workdir, dirs_exist_ok=True)
    lines = []
    with contextlib.suppress(OSError):
        lines = [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines()
                 if x.strip()]
    if not lines:
        j = unfinished_judgement(f"the soak on host {host.name} wrote no result (exit "
                                 f"{answer.get('rc')}): {answer.get('log', '')[-300:]}",
                                 host=host.name)
        lines = [{"nodeid": nodeid, "outcome": "unknown", "duration_s": None,
                  "runtime": runtime, "runtime_version": None, "workdir": None,
                  "judgements": [j]}]
    for line in lines:
        line.update(nodeid=nodeid, host=host.name,
                    workdir=str(workdir) if workdir.is_dir() else None)
        append_result(report, line)
    return lines[-1]


def run_soak_on_hosts(hosts: list[Host], args: Any, report: Path,
                      say: Any = print) -> int:
    """A soak on every host at once; the report here. Exit 1 unless every soak passed."""
    from harness.jobs.fleet.prepare import prepare_hosts
    from harness.report.build import build_report
    if not all(h.remote for h in hosts):
        raise UsageError("soak --tx/--hosts takes remote hosts only (a local soak is plain "
                         "`soak`)")
    report.mkdir(parents=True, exist_ok=True)
    (report / "results.jsonl").unlink(missing_ok=True)
    facts = prepare_hosts(hosts, args.runtime, say=say)
    seeds = {h.name: (args.seed + i if args.seed is not None else None)
             for i, h in enumerate(hosts)}
    (report / HOSTS_FILE).write_text(json.dumps(
        {"hosts": {h.name: {"spec": h.spec, "seed": seeds[h.name], **facts.get(h.name, {})}
                   for h in hosts}}, indent=1, default=str))
    budget = (args.duration or 0) + MARGIN_S
    answers: dict[str, dict[str, Any]] = {}
    say(f"boxlite-chaos soak: on {len(hosts)} hosts ({', '.join(h.name for h in hosts)}), "
        f"report {report}")
    t0 = time.monotonic()

    def one(h: Host) -> None:
        answers[h.name] = soak_one(h, soak_argv(args, seeds[h.name]), budget)
    threads = [threading.Thread(target=one, args=(h,), name=f"soak-{h.name}", daemon=True)
               for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = False
    for h in hosts:
        line = collect(report, h, answers.get(h.name, {"error": "no answer"}), args.runtime)
        failed |= line.get("outcome") != "passed"
        say(f"host {h.name}: {line.get('outcome')}")
    path = build_report(report)
    say(f"soak on {len(hosts)} hosts: {time.monotonic() - t0:.0f} s; report: {path}")
    return 1 if failed else 0
