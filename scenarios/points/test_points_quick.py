"""The gate's pinned fault points: a handful of the points `boxlite-chaos points run` sweeps
nightly (harness.scenario.points.QUICK), each fault landed the moment its point's evidence is
seen, then judged by a fresh runtime on the home (store whole, records settled, folders and
records agreeing, every read path agreeing) and by the conclusion (nothing left running).

The points are those committed for the runtime's release (fixtures/points/<version>/); a
release with no list, or whose list lacks the point, skips and says so (`points discover`).
"""

import pytest

from harness.common.paths import PROJECT
from harness.observe.points import load_points, points_path
from harness.scenario.points import QUICK, fault_at_point

pytestmark = pytest.mark.tier("init")

LISTS = PROJECT / "fixtures" / "points"


def _reference(version: str, op: str, variant: str) -> list[str]:
    path = points_path(LISTS, version, op)
    if not path.is_file():
        pytest.skip(f"no point list for {op} on {version}: run `boxlite-chaos points discover "
                    f"--runtime boxlite=={version}`")
    return [p["key"] for p in load_points(path)["variants"].get(variant, {}).get("points", [])]


@pytest.mark.parametrize(("op", "variant", "point", "kind"), QUICK,
                         ids=[f"{k}@{op}:{p.split(': ')[-1][:40]}" for op, _, p, k in QUICK])
def test_fault_at_a_pinned_point(chaos, op, variant, point, kind):
    ref = _reference(chaos.env.version, op, variant)
    if point not in ref:
        pytest.skip(f"{point!r} is not among {op}'s points on {chaos.env.version}")
    result = fault_at_point(chaos, op, variant, point, kind, ref, conclude=False)
    chaos.note(point_result={k: v for k, v in result.to_json().items() if k != "verdicts"})
