"""The pytest plugin: options, tier markers, the fixture chain, verdicts, artifacts, reports.

Fixture chain (session → function):
  runtime_env    the virtualenv of --runtime (built once, shared by workers under a lock)
  busybox        the deterministic test image
  known_failures the known-failures table
  doctor         doctor's findings; decides which tiers run and why the others skip
  chaos          one scenario's world (history, ledger, hosts, faults, verdicts); its verdicts
                 are judged at the end of the test's call phase
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from harness.common.errors import HarnessError
from harness.common.paths import cache_root
from harness.judge.known import load_table
from harness.observe.processes import become_subreaper
from harness.runtime.host import FlavourRefused
from harness.runtime.image import busybox_image
from harness.runtime.spec import DEFAULT_SPEC, ensure_runtime, ready_runtime
from harness.scenario.context import Chaos, ScenarioFailed
from harness.session import schedule, seeds, stopping
from harness.session.doctor import DoctorReport, check_kvm, run_doctor
from harness.session.facts import machine_facts
from harness.session.runfolder import report_key, slug


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """Orderly stops, dead workers and what a run leaves are a plugin of their own. It is
    registered as the module this plugin already imported: naming it in `pytest_plugins`
    made pytest warn, on every gate, that it could not rewrite a module already imported."""
    if not pluginmanager.is_registered(stopping):
        pluginmanager.register(stopping, "boxlite_chaos_stopping")

# The scenario's world (a Chaos, or a conformance TargetScenario): anything with `history`,
# `ready`, `conclude()`, `result(outcome, duration_s)` and `keep_artifacts()`.
world_key = pytest.StashKey[Any]()
chaos_key = world_key
REPORT_ENV = "BOXLITE_CHAOS_REPORT"


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("boxlite-chaos")
    g.addoption("--runtime", default=os.environ.get("BOXLITE_CHAOS_RUNTIME", DEFAULT_SPEC),
                help=f"runtime spec under test (default {DEFAULT_SPEC})")
    g.addoption("--chaos-report", default=os.environ.get(REPORT_ENV),
                help="folder for histories, verdicts and the report (default: a new folder "
                     "under reports/)")
    g.addoption("--chaos-record-durations", action="store_true",
                default=os.environ.get("BOXLITE_CHAOS_RECORD_DURATIONS") == "1",
                help="blend this run's per-test times into the scheduler's estimates "
                     "(the cache's durations.json); gate and bench-gate turn it on")
    g.addoption("--chaos-order", choices=("longest-first", "collection"),
                default="longest-first",
                help="order of a parallel (worksteal) run: longest-first from measured "
                     "durations (default), or plain collection order")
    g.addoption("--chaos-override", action="append", default=[], metavar="FIELD=VALUE",
                help="force a host flavour field on every host (rip-out: sigterm=none, "
                     "reaper=global)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "tier(name): init or booted; decides when it runs")
    become_subreaper()
    report = given = config.getoption("--chaos-report")
    if not report:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        report = str(Path("reports") / f"run-{stamp}-{os.getpid()}")
        # xdist workers inherit the controller's folder through the environment.
        os.environ[REPORT_ENV] = str(Path(report).resolve())
    config.stash[report_key] = Path(report).resolve()
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        # A rerun into the same folder reports this run only.
        for name in ("results.jsonl", HARNESS_CPU, seeds.FINDINGS):
            (config.stash[report_key] / name).unlink(missing_ok=True)
        if given:           # a run with a report folder (gate, ./go test), not a quick pytest
            record_run(config)
            keep_bytecode()


def keep_bytecode() -> None:
    """Where PYTHONDONTWRITEBYTECODE is set, the processes this run starts (xdist workers,
    hosts) would compile every module from source: 1.6 s of CPU per worker to import and
    collect, against 0.6 s with compiled modules (measured on 2 cores, 2026-11-30). Their
    compiled modules go to this project's cache instead, never into a source tree; a
    PYTHONPYCACHEPREFIX the user set is kept."""
    if os.environ.get("PYTHONDONTWRITEBYTECODE") and not os.environ.get("PYTHONPYCACHEPREFIX"):
        del os.environ["PYTHONDONTWRITEBYTECODE"]
        prefix = cache_root() / "pycache"
        prune_pycache(prefix)
        os.environ["PYTHONPYCACHEPREFIX"] = str(prefix)


def prune_pycache(prefix: Path) -> list[Path]:
    """Remove what `prefix` (a PYTHONPYCACHEPREFIX tree, which mirrors source folders by
    their absolute paths) holds for folders that are gone: a CI clone in a new /tmp folder
    each run would otherwise add ~17 MiB to it every time. Returns what it removed; a
    folder it cannot remove is left for the next run."""
    removed: list[Path] = []
    stack = [prefix]
    while stack:
        here = stack.pop()
        try:
            entries = [e for e in os.scandir(here) if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for e in entries:
            mirrored = Path("/") / Path(e.path).relative_to(prefix)
            if mirrored.is_dir():
                stack.append(Path(e.path))
            else:
                shutil.rmtree(e.path, ignore_errors=True)
                if not os.path.lexists(e.path):
                    removed.append(Path(e.path))
    return removed


RUN_FILE = "run.json"


def record_run(config: pytest.Config) -> None:
    """What the run's verdicts depend on besides the runtime: the seed its generated cases
    came from (replay with `gate --seed`), and whether it explored."""
    try:
        seed = seeds.run_seed()
    except HarnessError as exc:
        raise pytest.UsageError(f"boxlite-chaos: {exc}") from exc
    path = config.stash[report_key]
    path.mkdir(parents=True, exist_ok=True)
    env = ready_runtime(config.getoption("--runtime"))
    (path / RUN_FILE).write_text(json.dumps({
        "seed": seed, "exploring": seeds.exploring(),
        "runtime": config.getoption("--runtime"),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(env.identity() if env else None)}, indent=1) + "\n")


ESTIMATES = "bxc_estimates"


_ESTIMATES_KEY = pytest.StashKey[dict]()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist, on the controller: with worksteal (the order matters only to its initial
    runs), every worker orders its collection from the same table."""
    config = node.config
    if (config.getoption("dist", "no") == "worksteal"
            and config.getoption("--chaos-order") == "longest-first"):
        # Read once per run: a table read per worker changes under a run beside this one
        # that records its durations, and workers ordering their collections from different
        # tables stop the run ("Different tests were collected between gw0 and gw3": a 0.9.7
        # matrix column, 2026-12-06).
        if _ESTIMATES_KEY not in config.stash:
            config.stash[_ESTIMATES_KEY] = schedule.load_estimates()
        node.workerinput[ESTIMATES] = config.stash[_ESTIMATES_KEY]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker: longest first, dealt into the runs worksteal sends (see
    harness.session.schedule). Serial runs keep collection order."""
    winput = getattr(config, "workerinput", None)
    if not winput or ESTIMATES not in winput:
        return          # serial, another xdist mode, or --chaos-order collection
    items[:] = schedule.longest_first(items, [i.nodeid for i in items], winput[ESTIMATES],
                                      int(winput.get("workercount", 1)))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """On the controller: a test's seconds, setup + call + teardown, for the scheduler."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration


_durations: dict[str, float] = {}


@pytest.fixture(scope="session")
def report_dir(pytestconfig: pytest.Config) -> Path:
    path = pytestconfig.stash[report_key]
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def runtime_env(pytestconfig: pytest.Config):
    try:
        return ensure_runtime(pytestconfig.getoption("--runtime"))
    except HarnessError as exc:
        pytest.exit(f"boxlite-chaos: {exc}", returncode=exc.exit_code)


@pytest.fixture(scope="session")
def busybox():
    try:
        return busybox_image()
    except HarnessError as exc:
        pytest.exit(f"boxlite-chaos: {exc}", returncode=exc.exit_code)


@pytest.fixture(scope="session")
def known_failures():
    return load_table()


@pytest.fixture(scope="session")
def doctor(pytestconfig: pytest.Config) -> DoctorReport:
    """Doctor's findings, including a real boot attempt (cached per kernel boot)."""
    return run_doctor(pytestconfig.getoption("--runtime"), boot=True)


@pytest.fixture(scope="session")
def doctor_boots(doctor: DoctorReport) -> bool:
    """Whether a micro-VM boots on this machine (decides how some faults are made)."""
    return doctor.reason("booted") is None


def _tier(item: pytest.Item) -> str | None:
    m = item.get_closest_marker("tier")
    return m.args[0] if m else None


@pytest.fixture(autouse=True)
def tier_gate(request: pytest.FixtureRequest) -> None:
    """Skip a scenario whose tier this machine cannot run, with doctor's exact reason."""
    tier = _tier(request.node)
    if tier is None:
        return
    if tier == "init":
        ok, why = check_kvm()
        if not ok:
            pytest.skip(f"init tier: {why}")
        return
    why = request.getfixturevalue("doctor").reason(tier)
    if why is not None:
        pytest.skip(f"{tier} tier: {why}")


def flavour_overrides(items: list[str]) -> dict[str, object]:
    import dataclasses

    from harness.runtime.host import Flavour
    fields = {f.name: f.type for f in dataclasses.fields(Flavour)}
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in fields or key == "registries":
            raise pytest.UsageError(f"--chaos-override {item!r}: expected FIELD=VALUE with FIELD "
                                    f"one of {sorted(k for k in fields if k != 'registries')}")
        out[key] = int(value) if key == "shutdown_timeout" else value
    return out


@pytest.fixture(scope="session")
def guest_registry(runtime_env, busybox, report_dir: Path):
    """A loopback registry serving the guest base image, for releases that pull it."""
    from harness.runtime.registry import LocalRegistry, needs_registry
    if not needs_registry(runtime_env.version):
        yield None
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    reg = LocalRegistry(report_dir / "registry" / worker)
    try:
        reg.start()
        reg.push(busybox)
    except HarnessError as exc:
        reg.stop()
        pytest.exit(f"boxlite-chaos: {exc}", returncode=exc.exit_code)
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def chaos(request: pytest.FixtureRequest, runtime_env, busybox, known_failures,
          report_dir: Path, guest_registry):
    ctx = Chaos(request.node.nodeid, report_dir / "scenarios" / slug(request.node.nodeid),
                runtime_env, busybox, known_failures,
                overrides=flavour_overrides(request.config.getoption("--chaos-override")),
                registries=(guest_registry.host,) if guest_registry else ())
    request.node.stash[chaos_key] = ctx
    try:
        yield ctx
    finally:
        ctx.safety_teardown()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """After the scenario's steps, conclude it: its verdicts decide the test's outcome. From
    the steps' start to the conclusion's end, a stop interrupts the scenario."""
    t0 = time.monotonic()
    with stopping.scenario_steps():
        try:
            result = yield
        finally:
            ctx = item.stash.get(world_key, None)
            if ctx is not None:
                with contextlib.suppress(HarnessError):         # a full disk: said later
                    ctx.history.append("meta", event="call_done",
                                       wall_s=round(time.monotonic() - t0, 3))
        failed = None
        if ctx is not None and ctx.ready:
            try:
                ctx.conclude()
            except ScenarioFailed as exc:
                failed = str(exc)
    if failed:
        pytest.fail(failed, pytrace=False)
    return result


def flavour_refused(call: pytest.CallInfo) -> FlavourRefused | None:
    """The FlavourRefused a phase ended in (raised, or the cause or context of what was
    raised), or None."""
    exc = call.excinfo.value if call.excinfo is not None else None
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, FlavourRefused):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def skip_refused(item: pytest.Item, rep: pytest.TestReport, refused: FlavourRefused) -> None:
    """Make `rep` a skip that carries the refusal: the scenario needs a host flavour this
    runtime's SDK does not have (a Python-only mechanism in Node), which says nothing about
    the runtime, so it is neither a red nor an `unknown`."""
    _, lineno, _ = item.location
    rep.outcome = "skipped"
    rep.longrepr = (str(item.path), (lineno or 0) + 1, f"Skipped: flavour refused: {refused}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    rep = yield
    refused = flavour_refused(call) if rep.failed else None
    if refused is not None:
        skip_refused(item, rep, refused)
    ctx = item.stash.get(world_key, None)
    if ctx is not None and ctx.ready and (rep.when == "call" or refused is not None):
        if rep.failed:
            ctx.keep_artifacts()
        line = stopping.result_line(ctx.result(rep.outcome, rep.duration), call,
                                    rep.duration, ctx.history)
        if refused is not None:
            line["skipped"] = f"flavour refused: {refused}"
        try:
            ctx.history.append("meta", event="outcome", outcome=line["outcome"],
                               duration_s=round(rep.duration, 3))
        except HarnessError as exc:
            print(f"\nboxlite-chaos: error: {exc}", file=sys.stderr, flush=True)
        stopping.append_result(item.config.stash[report_key], line)
    return rep


HARNESS_CPU = "harness-cpu.jsonl"


def _record_own_cpu(report: Path) -> None:
    """This pytest process's own CPU seconds (the harness's: sampler, checks, hypothesis),
    one line per process, so bench-gate can split the gate's CPU into harness and runtime."""
    import resource
    ru = resource.getrusage(resource.RUSAGE_SELF)
    line = json.dumps({"process": os.environ.get("PYTEST_XDIST_WORKER", "controller"),
                       "cpu_s": round(ru.ru_utime + ru.ru_stime, 3)}) + "\n"
    if not report.is_dir():
        return                  # a run that made no report folder (no scenario ran)
    try:
        fd = os.open(report / HARNESS_CPU, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError:
        pass


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _record_own_cpu(session.config.stash[report_key])
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    stopping.before_report(session)
    measured = dict(_durations)
    _durations.clear()
    if measured and session.config.getoption("--chaos-record-durations"):
        try:
            schedule.record(measured)
        except OSError as exc:
            print(f"boxlite-chaos: durations not recorded: {exc}")
    path = session.config.stash[report_key]
    if (path / "results.jsonl").is_file():
        stopping.write_report(path)
