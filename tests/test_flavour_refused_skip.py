"""A scenario whose host flavour its runtime's SDK cannot be (FlavourRefused) is a skip that
carries the refusal, in pytest's outcome and in the run's results line; any other error stays
an error. End to end through a pytest run with the plugin loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCENARIOS = '''
import pytest
from harness.plugin import world_key
from harness.runtime.host import FlavourRefused, HostError


class World:
    """The least a scenario's world is to the plugin (see harness/plugin.py, world_key)."""
    ready = True

    class history:
        @staticmethod
        def append(*a, **k):
            pass

    def __init__(self, nodeid):
        self.nodeid = nodeid

    def conclude(self):
        pass

    def keep_artifacts(self):
        pass

    def result(self, outcome, duration_s):
        return {"nodeid": self.nodeid, "outcome": outcome, "judgements": []}


@pytest.fixture
def world(request):
    request.node.stash[world_key] = World(request.node.nodeid)


@pytest.fixture
def refused_host(world):
    raise FlavourRefused("host: --reaper global does not apply to the Node SDK host")


def test_needs_the_reaper(world):
    raise FlavourRefused("host: --reaper global does not apply to the Node SDK host")


def test_wrapped_refusal(world):
    try:
        raise FlavourRefused("host: --sigterm graceful-early applies to the Node SDK host only")
    except FlavourRefused as exc:
        raise RuntimeError("the scenario could not start its host") from exc


def test_refused_in_a_fixture(refused_host):
    pass


def test_another_host_error(world):
    raise HostError("host: exited before ready")
'''


def test_a_refused_flavour_is_a_skip_carrying_its_message(tmp_path):
    scen = tmp_path / "scenarios"
    scen.mkdir()
    (scen / "test_refused.py").write_text(SCENARIOS)
    report = tmp_path / "report"
    # A run of its own: under xdist this test's worker variables would make the plugin of the
    # run below act as a worker (no results.jsonl of its own).
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")},
           "BOXLITE_CHAOS_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider",
                           "-p", "no:xdist", "--chaos-report", str(report), "scenarios"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert "3 skipped" in out and "1 failed" in out, out
    assert "flavour refused: host: --reaper global does not apply to the Node SDK host" in out
    assert "graceful-early applies to the Node SDK host only" in out
    lines = {json.loads(x)["nodeid"].rsplit("::", 1)[1]: json.loads(x)
             for x in (report / "results.jsonl").read_text().splitlines()}
    for name in ("test_needs_the_reaper", "test_wrapped_refusal", "test_refused_in_a_fixture"):
        assert lines[name]["outcome"] == "skipped", lines[name]
        assert lines[name]["skipped"].startswith("flavour refused: host: --"), lines[name]
    assert lines["test_another_host_error"]["outcome"] == "failed"
    assert "skipped" not in lines["test_another_host_error"]
