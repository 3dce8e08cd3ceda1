"""The fleet's pytest plugin (`-p harness.jobs.fleet.plugin`, added by `gate --hosts/--tx/
--shard`): remote workers, lost hosts, and shards.

Controller side, for each remote host (an xdist `--tx` spec that is not popen):
  - no rsync: xdist would copy pytest itself into the host's working folder; a host runs its
    own checkout (checked by harness.jobs.fleet.prepare);
  - its workers get their host's name and the run's settings (seed, exploring: the
    BOXLITE_CHAOS_* variables that are not about one machine) in their workerinput;
  - a scenario's shipment (harness.jobs.fleet.transport), arriving on its teardown report, is
    written into the report folder as a local worker would have written it;
  - a host lost mid-run: the scenario each of its workers was running is `unknown`, saying
    which host was lost and how; xdist puts the scenarios queued to it back in the queue for
    the other hosts, and replaces the worker only when the host answers again. When no host is
    left, every scenario not run is `unknown` too, and the run fails.
Worker side, on a remote host: its report folder is a marked folder in the host's own /tmp
(swept there if the worker dies), emptied as each scenario is shipped and removed at the end;
what dead runs left on the host is swept when its worker starts.

`--chaos-shard K/N` (CI runners): this run keeps the K-th of N shares of the collected tests,
balanced by the committed per-test durations (the same on every runner), and writes
shard.json for harness.jobs.fleet.merge.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.jobs.fleet import transport
from harness.jobs.fleet.hosts import HOSTS_FILE, host_name
from harness.jobs.fleet.shard import parse_shard, shard_of
from harness.session.runfolder import report_key, slug

FLEET = "bxc_fleet"                 # workerinput key of a remote worker
SHARD_FILE = "shard.json"
LOST_CHECK = "host_reachable"
# Variables about one machine: a host keeps its own.
HOST_SPECIFIC = {"BOXLITE_CHAOS_CACHE", "BOXLITE_CHAOS_TMP", "BOXLITE_CHAOS_REPORT",
                 "BOXLITE_CHAOS_BUSYBOX", "BOXLITE_CHAOS_KVM"}


def forwarded_env(environ: dict[str, str]) -> dict[str, str]:
    """The run's settings a remote worker takes over (seed, exploring, hostile examples)."""
    return {k: v for k, v in environ.items()
            if k.startswith("BOXLITE_CHAOS_") and k not in HOST_SPECIFIC}


@dataclass
class FleetState:
    """This process's part of a fleet run."""

    hosts: dict[str, str] = field(default_factory=dict)         # gateway id -> host name
    errors: dict[str, str] = field(default_factory=dict)        # gateway id -> why it went down
    lost: dict[str, str] = field(default_factory=dict)          # host name -> why
    collected: list[str] = field(default_factory=list)
    finished: set[str] = field(default_factory=set)
    shipped: int = 0
    local: Path | None = None       # a remote worker's report folder on its host
    host: str = ""


_fleet = FleetState()


def _is_worker() -> bool:
    return bool(os.environ.get("PYTEST_XDIST_WORKER"))


def _report(config: pytest.Config) -> Path:
    return config.stash[report_key]


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("boxlite-chaos fleet")
    g.addoption("--chaos-shard", metavar="K/N", type=parse_shard, default=None,
                help="run the K-th of N shares of the tests (balanced by the committed "
                     "durations); for CI runners")


# -- worker side (a remote host) -----------------------------------------------------------

@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Before harness.plugin picks its report folder: on a remote worker, one on its host."""
    global _fleet
    _fleet = FleetState()
    fleet = (getattr(config, "workerinput", None) or {}).get(FLEET)
    if not fleet:
        return
    from harness.leftovers import markers, sweep
    os.environ.update(fleet["env"])
    sweep.sweep_at_start()
    folder = markers.tmp_root() / f"bxc-fleet-{config.workerinput['workerid']}-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    markers.mark(folder, "fleet-report", host=fleet["host"])
    config.option.chaos_report = str(folder)
    _fleet.local, _fleet.host = folder, fleet["host"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """On a remote worker, after a scenario's teardown: its results and folder travel on the
    teardown's report; the host keeps nothing of it."""
    rep = yield
    if _fleet.local is None or rep.when != "teardown":
        return rep
    workdir = _fleet.local / "scenarios" / slug(item.nodeid)
    results = transport.results_for(_fleet.local / "results.jsonl", item.nodeid)
    if results or workdir.is_dir():
        setattr(rep, transport.SHIPMENT, transport.pack(workdir, results, _fleet.host))
        shutil.rmtree(workdir, ignore_errors=True)
    return rep


# -- controller side -----------------------------------------------------------------------

@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config: pytest.Config, specs: list[Any]) -> None:
    if all(s.popen for s in specs):
        return
    ds = config.pluginmanager.getplugin("dsession")
    ds.nodemanager.roots = []
    _replace_lost_workers_only_on_live_hosts(ds)


def _replace_lost_workers_only_on_live_hosts(ds: Any) -> None:
    """xdist replaces a worker that went down by starting a new one on the same spec; on a
    host that is gone that start raises, and the run would end in an internal error. Here it
    is a lost host, and the run goes on without it: the scenarios queued to it go back to the
    queue, and when every other worker was already told to finish (worksteal tells an idle
    worker so), a worker is started on a host that still answers to take them. With no such
    host, what is left is `unknown` (pytest_sessionfinish)."""
    start_again = ds._clone_node
    loop_once = ds.loop_once

    def clone(node: Any) -> Any:
        if node.gateway.spec.popen:
            return start_again(node)
        host = host_name(node.gateway.spec)
        try:
            return start_again(node)
        except Exception as exc:  # noqa: BLE001 - whatever execnet raised: the host is gone
            why = _fleet.errors.get(node.gateway.id, "its worker went down")
            _fleet.lost.setdefault(host, f"{why}; reconnecting failed: {_unreachable(exc)}")
            print(f"\nboxlite-chaos: host {host} lost ({_fleet.lost[host]}); the run goes "
                  "on without it", flush=True)
        others = [n for n in ds._active_nodes if n is not node]
        if ds.sched.pending and not [n for n in others if not n.shutting_down]:
            return _start_elsewhere(ds, others)
        return None

    def loop_once_or_end() -> None:
        # Every worker ended with scenarios still queued (their hosts were lost): the run
        # ends, and those scenarios are unknown, instead of xdist's internal error.
        if not ds._active_nodes and _fleet.lost:
            ds.shuttingdown = True
            return
        loop_once()
    ds._clone_node = clone
    ds.loop_once = loop_once_or_end


def _unreachable(exc: BaseException) -> str:
    import execnet
    if isinstance(exc, execnet.HostNotFound):
        return "ssh could not reach it"
    return (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]


def _start_elsewhere(ds: Any, live: list[Any]) -> Any:
    """A new worker on the first host of `live` workers that takes one (for the scenarios a
    lost host left in the queue)."""
    import execnet
    for node in live:
        if node.gateway.spec.popen:
            continue
        spec = execnet.XSpec(str(node.gateway.spec))
        spec.id = None
        ds.nodemanager.group.allocate_id(spec)
        try:
            new = ds.nodemanager.setup_node(spec, ds.queue.put)
        except Exception as exc:  # noqa: BLE001 - that host is gone as well
            _fleet.lost.setdefault(host_name(spec), f"starting a worker failed: "
                                                    f"{_unreachable(exc)}")
            continue
        ds._active_nodes.add(new)
        ds.shuttingdown = False
        print(f"\nboxlite-chaos: worker {new.gateway.id} started on host {host_name(spec)} "
              "for the scenarios queued to the lost host", flush=True)
        return new
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    spec = node.gateway.spec
    if spec.popen:
        return
    _fleet.hosts[node.gateway.id] = host_name(spec)
    node.workerinput[FLEET] = {"host": host_name(spec), "env": forwarded_env(dict(os.environ))}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    if error is not None:
        _fleet.errors[node.gateway.id] = (str(error).strip().splitlines() or ["?"])[-1][:300]


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_handlecrashitem(crashitem: str, report: Any, sched: Any) -> None:
    """The scenario a lost host's worker was running: `unknown`, naming the host and how its
    worker went (before harness.session.stopping writes its own line for a local worker)."""
    node = getattr(report, "node", None)
    spec = getattr(getattr(node, "gateway", None), "spec", None)
    if spec is None or spec.popen:
        return
    gw = node.gateway.id
    host = host_name(spec)
    _fleet.finished.add(crashitem)
    why = _fleet.errors.get(gw, "its connection ended")
    _write_unknown(node.config, crashitem, host,
                   f"host {host} was lost while running it (worker {gw}: {why}); its checks "
                   "were not judged", error=why)


def _write_unknown(config: pytest.Config, nodeid: str, host: str | None, summary: str,
                   **evidence: Any) -> None:
    from harness.session.stopping import append_result, unfinished_judgement
    judgement = unfinished_judgement(summary, host=host, **evidence)
    judgement["check"] = LOST_CHECK
    append_result(_report(config), {
        "nodeid": nodeid, "outcome": "unknown", "duration_s": None,
        "runtime": config.getoption("--runtime"), "runtime_version": None, "workdir": None,
        "host": host, "judgements": [judgement]})


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """On the controller: a shipped scenario's results and folder into the report."""
    if _is_worker():
        return
    if report.when == "teardown":
        _fleet.finished.add(report.nodeid)
    shipment = getattr(report, transport.SHIPMENT, None)
    if shipment is None:
        return
    delattr(report, transport.SHIPMENT)
    config = _config()
    if config is None:
        return
    from harness.session.stopping import append_result
    try:
        lines = transport.unpack(shipment, _report(config))
    except (OSError, ValueError) as exc:
        print(f"\nboxlite-chaos: error: the shipment of {report.nodeid} from host "
              f"{shipment.get('host')} could not be written: {exc}", file=sys.stderr)
        return
    for line in lines:
        append_result(_report(config), line)
    _fleet.shipped += 1


_config_ref: list[pytest.Config] = []


def _config() -> pytest.Config | None:
    return _config_ref[-1] if _config_ref else None


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    _config_ref[:] = [session.config]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    if not _fleet.collected:
        _fleet.collected = list(ids)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With --chaos-shard: keep this shard's share (the same choice on every worker)."""
    shard = config.getoption("--chaos-shard")
    if shard is None:
        return
    mine = set(shard_of([i.nodeid for i in items], *shard))
    keep = [i for i in items if i.nodeid in mine]
    drop = [i for i in items if i.nodeid not in mine]
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep


def pytest_collection_finish(session: pytest.Session) -> None:
    if not _fleet.collected:
        _fleet.collected = [i.nodeid for i in session.items]


def _has_result(report: Path) -> set[str]:
    from harness.report.build import load_results
    with contextlib.suppress(OSError, ValueError):
        return {r.get("nodeid") for r in load_results(report)}
    return set()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """On the controller, before the report: what lost hosts left unrun is `unknown`; the
    hosts, and the shard, are written down."""
    config = session.config
    if _is_worker():
        return
    report = _report(config)
    if _fleet.lost:
        have = _has_result(report)
        lost = "; ".join(f"{h}: {why}" for h, why in sorted(_fleet.lost.items()))
        for nodeid in _fleet.collected:
            if nodeid in have or nodeid in _fleet.finished or \
                    not nodeid.startswith("scenarios/"):
                continue
            _write_unknown(config, nodeid, None, f"not run: it was queued to a host that was "
                           f"lost, and no other host could take it (lost: {lost})",
                           lost=dict(_fleet.lost))
        if session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if _fleet.hosts or _fleet.lost:
        path = report / HOSTS_FILE
        with contextlib.suppress(OSError, ValueError):
            facts = json.loads(path.read_text()) if path.is_file() else {}
            facts.update({"workers": _fleet.hosts, "lost": _fleet.lost,
                          "shipped": _fleet.shipped})
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(facts, indent=1, default=str))
    shard = config.getoption("--chaos-shard")
    if shard is not None:
        with contextlib.suppress(OSError):
            report.mkdir(parents=True, exist_ok=True)
            (report / SHARD_FILE).write_text(json.dumps({
                "shard": list(shard), "collected": _fleet.collected,
                "finished": sorted(_fleet.finished)}, indent=1))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """A remote worker leaves nothing on its host: its report folder goes (every scenario
    in it was shipped)."""
    if _fleet.local is None:
        return
    from harness.leftovers import markers
    shutil.rmtree(_fleet.local, ignore_errors=True)
    markers.release(_fleet.local)
    _fleet.local = None
