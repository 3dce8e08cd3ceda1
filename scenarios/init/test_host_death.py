"""The runtime's process dies during writes: SIGTERM or SIGKILL of the host at chosen points
of create and start, found by markers (a log line, a file appearing) and by a delay that
hypothesis explores. A new host on the same home must then find an intact store, no record
stuck in a transitional status, no box directory without a record (or the reverse), an image
cache that still works, and nothing left running.

Seeds: hypothesis prints its seed and a reproduction blob when an example fails; its example
database lives in the run's report folder.
"""

import signal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from harness.common.wait import WaitTimeout, hold, wait_for
from harness.faults.shim import wait_for_shim
from harness.judge import checks
from harness.observe.logs import runtime_log
from harness.observe.records import store_integrity, store_rows
from harness.runtime.host import RuntimeOpError
from harness.scenario.steps import create_box

pytestmark = pytest.mark.tier("init")

SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}


def _marker(host, box, name):
    """A probe that is true once the start pipeline has reached `name`."""
    boxdir = host.home / "boxes" / box
    return {
        "image_disk_build": lambda: "Building image disk" in runtime_log(host.home)
        or "Creating COW child disk" in runtime_log(host.home),
        "disk_written": lambda: (boxdir / "disks" / "disk.qcow2").exists(),
        "shim_spawned": lambda: (boxdir / "shim.pid").exists(),
    }[name]


def _die_and_judge(chaos, sig, point, delay_s=None):
    host = chaos.host()
    box = create_box(chaos, host, name="victim")
    fut = host.send("start", box_id=box)
    if delay_s is not None:
        hold(delay_s, f"the start runs {delay_s:.3f}s before the host is signalled")
    else:
        wait_for(_marker(host, box, point), 30, f"start of box {box} to reach {point}",
                 interval_s=0.005)
    chaos.note(point=point, delay_s=delay_s, signal=sig)
    host.signal(SIGNALS[sig])
    host.wait_exit(30)
    try:
        fut.result(timeout=1)
    except Exception:  # noqa: BLE001 - the reply may or may not have been written
        pass

    fresh = chaos.restart(host)
    try:
        integrity, err = store_integrity(fresh.home), None
    except Exception as exc:  # noqa: BLE001 - an unreadable store is 'unknown'
        integrity, err = None, repr(exc)
    chaos.judge(checks.store_integrity(integrity, err))
    rows = store_rows(fresh.home)
    dirs = [p.name for p in (fresh.home / "boxes").glob("*") if p.is_dir()] \
        if (fresh.home / "boxes").is_dir() else []
    chaos.judge(checks.records_settled(rows), checks.home_consistent(dirs, rows))

    # The image cache still works: a new box from the same image gets to its shim spawn.
    reached, error = None, None
    try:
        nbox = create_box(chaos, fresh, name="after")
        fresh.send("start", box_id=nbox)
        wait_for_shim(fresh.home, nbox, timeout_s=60)
        reached = "shim_spawned"
    except (RuntimeOpError, WaitTimeout) as exc:
        error = str(exc)
    chaos.judge(checks.image_cache_usable(reached, "shim_spawned", error))
    fresh.kill()
    fresh.wait_exit(30)


@pytest.mark.parametrize("sig", SIGNALS)
@pytest.mark.parametrize("point", ["image_disk_build", "disk_written", "shim_spawned"])
def test_host_dies_at_a_marked_point(chaos, sig, point):
    _die_and_judge(chaos, sig, point)


@pytest.mark.parametrize("sig", SIGNALS)
def test_host_dies_after_an_explored_delay(chaos, sig, report_dir):
    @settings(max_examples=3, deadline=None, derandomize=False, print_blob=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow],
              database=DirectoryBasedExampleDatabase(str(report_dir / "hypothesis")))
    @given(delay_s=st.floats(min_value=0.0, max_value=0.6))
    def run(delay_s):
        _die_and_judge(chaos, sig, "delay", delay_s=delay_s)

    run()
