"""The small disk's size per release (harness/faults/storage.py size_mib_for) against what a home
was measured to hold (HOME_NEEDS_KIB, 2026-12-07): two boxes of every measured release fit with
space to spare, and the release the fill levels were measured on keeps its 160 MiB."""

from __future__ import annotations

import pytest

from harness.faults.storage import (
    HOME_NEEDS_KIB,
    HOME_OPENED_KIB,
    KIB,
    MIB,
    SIZE_MIB,
    size_mib_for,
)


@pytest.mark.parametrize("version", sorted(HOME_NEEDS_KIB))
def test_the_small_disk_holds_a_first_and_a_second_box(version):
    first, second = HOME_NEEDS_KIB[version]
    spare_kib = size_mib_for(version) * MIB // KIB - HOME_OPENED_KIB - first - second
    assert spare_kib >= 32 * 1024, (version, spare_kib)


def test_the_fill_levels_release_keeps_its_disk():
    assert SIZE_MIB == 160
    assert [size_mib_for(v) for v in ("0.10.0", "0.10.3", "0.10.8")] == [SIZE_MIB] * 3


@pytest.mark.parametrize("version", ["0.9.0", "0.9.4", "0.9.7"])
def test_a_0_9_first_box_never_fit_the_old_disk(version):
    """Why 0.9.x gets a larger disk: its first box alone needs more than SIZE_MIB."""
    assert HOME_NEEDS_KIB[version][0] + HOME_OPENED_KIB > SIZE_MIB * MIB // KIB
    assert size_mib_for(version) == SIZE_MIB + 256
