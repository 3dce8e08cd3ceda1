"""Storage scenarios: the `storage` fixture (a scenario's small disks, unmounted in its
teardown after the scenario concluded) and the split between the gate and the nightly run.

Homes are small disks (test_disk_full.py) or the FUSE layer failing, slowing or power-cutting
chosen calls (test_io_errors.py, test_power_cut.py; harness/faults/fuse.py), unmounted in the
fixture's teardown. Quick scenarios (no VM runs past its spawn: the start fails before its
shim, or the shim is ended once judged) are in the gate. Slow ones
(`@pytest.mark.storage_nightly`: a VM runs until it fails on its own, the ext4 variants of the
gate's, the power cut's other phases) run where $BOXLITE_CHAOS_STORAGE_NIGHTLY=1, as the
nightly release matrix sets it; elsewhere they skip, saying so.
"""

from __future__ import annotations

import os

import pytest

from harness.scenario.storage import StorageWorld

NIGHTLY_ENV = "BOXLITE_CHAOS_STORAGE_NIGHTLY"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "storage_nightly: a slow storage scenario, run where "
                                       f"${NIGHTLY_ENV}=1 (the nightly matrix)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(NIGHTLY_ENV) == "1":
        return
    skip = pytest.mark.skip(reason=f"a nightly storage scenario (set {NIGHTLY_ENV}=1)")
    for item in items:
        if item.get_closest_marker("storage_nightly"):
            item.add_marker(skip)


@pytest.fixture
def storage(chaos):
    world = StorageWorld(chaos)
    try:
        yield world
    finally:
        world.teardown()
