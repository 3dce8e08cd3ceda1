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

from pathlib import Path

import pytest

from harness.common.errors import HarnessError
from harness.plugin import world_key
from harness.runtime.image import busybox_image
from harness.runtime.spec import ensure_runtime
from harness.session.runfolder import report_key, slug
from harness.targets.base import Target, TargetUnavailable
from harness.targets.scenario import TargetScenario, append_row

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


def _make_target(request: pytest.FixtureRequest, kind: str, world: TargetScenario) -> Target:
    if kind == "docker":
        from harness.targets.docker import DockerTarget
        from harness.targets.dockerd import daemon_root
        # Unix sockets allow 107 bytes: the daemon's folder hangs off the run folder (or
        # /tmp), and the scenario's folder links to it.
        root = daemon_root(world.report_dir / "dockerd")
        (world.workdir / "dockerd").symlink_to(root)
        return DockerTarget(root, world.history, keep=world.workdir / "dockerd").open()
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
                        slug(request.node.nodeid), known_failures, report_dir)
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
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A target that could not be set up still gets its row in the matrix (the plugin
    writes the results of every scenario that ran)."""
    rep = yield
    run = item.config.stash[report_key]
    if rep.skipped and rep.when == "setup" and hasattr(item, "callspec"):
        kind = item.callspec.params.get("target_kind")
        if kind:
            reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
            append_row(run, {"nodeid": item.nodeid, "target": kind,
                             "label": "docker" if kind == "docker"
                             else item.config.getoption("--runtime"),
                             "skipped": reason.removeprefix("Skipped: ")})
    return rep
