"""Which scenarios a run takes: scenario names (a module's name without `test_`) to the files
under scenarios/, for `gate --scenario` and `matrix --scenario`.
"""

from __future__ import annotations

from pathlib import Path

from harness.common.errors import ScenarioError
from harness.common.paths import PROJECT

SCENARIOS = PROJECT / "scenarios"


def scenario_files() -> dict[str, Path]:
    """Scenario names are module names without 'test_' (e.g. 'guest_hang')."""
    return {p.stem.removeprefix("test_"): p for p in sorted(SCENARIOS.rglob("test_*.py"))}


def resolve_scenarios(names: list[str]) -> list[str]:
    """The file of each named scenario, in the order given. Raises ScenarioError naming an
    unknown name and listing the known ones."""
    known = scenario_files()
    out = []
    for name in names:
        if name in known:
            out.append(str(known[name]))
        else:
            raise ScenarioError(f"unknown scenario {name!r}; known: {', '.join(sorted(known))}")
    return out
