"""The conformance scenarios' fixtures, documented where they are made:

  target_kind   docker | boxlite: every scenario here runs against both (boxlite carries the
                init tier: it needs /dev/kvm); `-k docker` or `-k boxlite` picks one
  boxlite_env   the virtualenv of --runtime, or why there is none (the scenarios then skip
                with that reason instead of ending the session)
  world         one scenario's TargetScenario with its target opened: a private dockerd, or a
                runtime host (runner flavour) on a fresh home; skips with the reason when the
                target cannot run here

The hooks conclude the world after the scenario's steps (its verdicts decide the outcome),
add its line to the run's results.jsonl for the HTML report, and record every skip, with its
reason, in the run's conformance.jsonl so the matrix can say why a cell is unknown.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from harness.context import ScenarioFailed
from harness.errors import HarnessError
from harness.image import busybox_image
from harness.plugin import report_key
from harness.runtime.spec import ensure_runtime
from harness.targets.base import Target, TargetUnavailable
from harness.targets.scenario import TargetScenario, append_row

world_key = pytest.StashKey[TargetScenario]()

TARGETS = [pytest.param("docker", id="docker"),
           pytest.param("boxlite", id="boxlite", marks=pytest.mark.tier("init"))]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target_kind" in metafunc.fixturenames:
        metafunc.parametrize("target_kind", TARGETS)


@pytest.fixture(scope="session")
def boxlite_env(pytestconfig: pytest.Config):
    """The runtime's virtualenv, or the HarnessError that says why it cannot be had."""
    try:
        return ensure_runtime(pytestconfig.getoption("--runtime"))
    except HarnessError as exc:
        return exc


def _slug(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:150]


def _make_target(request: pytest.FixtureRequest, kind: str, world: TargetScenario) -> Target:
    if kind == "docker":
        from harness.targets.docker import DockerTarget, daemon_root
        # Unix sockets allow 107 bytes: the daemon's folder hangs off the run folder (or
        # /tmp), and the scenario's folder links to it.
        root = daemon_root(world.report_dir / "dockerd")
        (world.workdir / "dockerd").symlink_to(root)
        return DockerTarget(root).open()
    from harness.targets.boxlite import BoxliteTarget
    env = request.getfixturevalue("boxlite_env")
    if isinstance(env, HarnessError):
        raise TargetUnavailable(f"runtime {request.config.getoption('--runtime')}: {env}")
    try:
        image = busybox_image()
    except HarnessError as exc:
        raise TargetUnavailable(str(exc)) from exc
    return BoxliteTarget(env, image, world.workdir, world.history,
                         guests_boot=request.getfixturevalue("doctor_boots")).open()


@pytest.fixture
def world(request: pytest.FixtureRequest, target_kind: str, report_dir: Path,
          known_failures) -> TargetScenario:
    sc = TargetScenario(request.node.nodeid, report_dir / "scenarios" /
                        _slug(request.node.nodeid), known_failures, report_dir)
    request.node.stash[world_key] = sc
    try:
        try:
            sc.open(lambda s: _make_target(request, target_kind, s))
        except TargetUnavailable as exc:
            pytest.skip(f"{target_kind}: {exc}")
        yield sc
    finally:
        sc.safety_teardown()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """After the scenario's steps, conclude its world: its verdicts decide the outcome."""
    t0 = time.monotonic()
    try:
        result = yield
    finally:
        sc = item.stash.get(world_key, None)
        if sc is not None:
            sc.history.append("meta", event="call_done", wall_s=round(time.monotonic() - t0, 3))
    failed = None
    if sc is not None and sc.target is not None:
        try:
            sc.conclude()
        except ScenarioFailed as exc:
            failed = str(exc)
    if failed:
        pytest.fail(failed, pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    rep = yield
    sc = item.stash.get(world_key, None)
    run = item.config.stash[report_key]
    if sc is not None and sc.target is not None and rep.when == "call":
        sc.history.append("meta", event="outcome", outcome=rep.outcome,
                          duration_s=round(rep.duration, 3))
        with open(run / "results.jsonl", "a") as fh:
            fh.write(json.dumps(sc.result(rep.outcome, rep.duration), default=str) + "\n")
    elif rep.skipped and rep.when == "setup" and hasattr(item, "callspec"):
        kind = item.callspec.params.get("target_kind")
        if kind:
            reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
            append_row(run, {"nodeid": item.nodeid, "target": kind,
                             "label": "docker" if kind == "docker"
                             else item.config.getoption("--runtime"),
                             "skipped": reason.removeprefix("Skipped: ")})
    return rep
