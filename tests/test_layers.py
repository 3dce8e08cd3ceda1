"""The rooms of ARCHITECTURE.md as an executable contract: import-linter's contracts in
pyproject.toml ([tool.importlinter]) hold for harness/, and they do fail on an upward import,
a job importing another job, a circle, or one target knowing the other.

The failing cases run the project's own contracts against a mirror of harness/ (the same
modules, empty) with one import added, so what they prove is about the real configuration.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.common.paths import PROJECT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONFIG = PROJECT / "pyproject.toml"


def lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with the project's contracts over the `harness` package found first on
    `cwd` (it puts its working directory first on sys.path); no cache written."""
    if not LINT_IMPORTS.is_file():
        pytest.fail(f"{LINT_IMPORTS} is missing: install the dev extra (pip install -e '.[dev]'; "
                    "./go does)")
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", str(CONFIG)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_harness_keeps_its_layers() -> None:
    proc = lint(PROJECT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "BROKEN" not in proc.stdout and "0 broken" in proc.stdout, proc.stdout


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    """harness/ as empty modules under tmp_path: every module the contracts name exists, and
    no module imports anything."""
    for src in (PROJECT / "harness").rglob("*.py"):
        dst = tmp_path / src.relative_to(PROJECT)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text("")
    return tmp_path


def test_the_empty_mirror_keeps_every_contract(mirror: Path) -> None:
    proc = lint(mirror)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(("edits", "broken"), [
    pytest.param({"harness/leftovers/sweep.py": "from harness.targets.base import Target\n"},
                 "harness.leftovers is not allowed to import harness.targets",
                 id="upward-import"),
    pytest.param({"harness/session/stopping.py":
                   "def report(config):\n    from harness.plugin import report_key\n"},
                 "harness.session is not allowed to import harness.plugin",
                 id="upward-import-inside-a-function"),
    pytest.param({"harness/common/wait.py": "import harness.cli\n"},
                 "harness.common is not allowed to import harness.cli",
                 id="the-ground-floor-importing-the-top"),
    pytest.param({"harness/jobs/matrix/run.py": "from harness.jobs.bench import gate\n"},
                 "harness.jobs.matrix is not allowed to import harness.jobs.bench",
                 id="a-job-importing-a-job"),
    pytest.param({"harness/jobs/soak/probes.py": "from typing import TYPE_CHECKING\n"
                  "if TYPE_CHECKING:\n    from harness.jobs.soak.world import SoakWorld\n",
                  "harness/jobs/soak/world.py": "from harness.jobs.soak import probes\n"},
                 "No cycles are allowed in harness.jobs.soak", id="a-circle-in-a-job"),
    pytest.param({"harness/scenario/steps.py": "from harness.judge import checks\n",
                  "harness/judge/checks.py": "from harness.faults import shim\n",
                  "harness/faults/shim.py": "from harness.scenario import steps\n"},
                 "harness.faults is not allowed to import harness.scenario",
                 id="a-circle-through-three-rooms"),
    pytest.param({"harness/judge/known.py": "from harness.faults.base import Fault\n"},
                 "harness.judge is not allowed to import harness.faults",
                 id="siblings-on-one-level"),
    pytest.param({"harness/targets/boxlite.py": "from harness.targets.dockerd import Daemon\n"},
                 "The BoxLite target does not know the Docker target", id="target-to-target"),
    pytest.param({"harness/targets/pattern.py": "from harness.targets import boxlite\n"},
                 "The target seam (base, pattern checks, scenario) knows no target behind it",
                 id="the-seam-knowing-a-target"),
])
def test_the_contract_fails_on(mirror: Path, edits: dict[str, str], broken: str) -> None:
    for rel, source in edits.items():
        (mirror / rel).write_text(source)
    proc = lint(mirror)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert broken in proc.stdout, proc.stdout
