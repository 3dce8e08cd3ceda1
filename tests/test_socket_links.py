"""The runtime's socket links outside the home (/tmp/bl-<uid>/<box id>), on fake layouts: which
are ours, the scenario's teardown (HostFactory.close_all) and the sweep removing only those,
and the check that judges a link left pointing into a removed box folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.judge import checks
from harness.judge.checks import HOLDS, VIOLATED
from harness.leftovers import sockets, sweep
from harness.leftovers.markers import Owner, mark
from harness.runtime.host import HostFactory


@pytest.fixture(autouse=True)
def private_index(tmp_path, monkeypatch):
    """An index of the test's own: the sweeps below call every owner dead, and over the user's
    index they would sweep the folders of live runs beside this one (and another run's sweep
    could take this test's dead folder first)."""
    monkeypatch.setenv("BOXLITE_CHAOS_CACHE", str(tmp_path / "cache"))


# The meta-test in tests/test_checks.py reads this: every registered check fails somewhere.
VIOLATING = {
    "socket_links_follow_boxes": lambda: checks.socket_links_follow_boxes([{
        "path": "/tmp/bl-0/AAAA", "box": "AAAA", "target_exists": False,
        "target": "/tmp/bxc-x/home1/boxes/AAAA/sockets"}]),
}


def box(home: Path, box_id: str, root: Path, keep_folder: bool = True) -> Path:
    """A box folder in `home` (or only its name in the link) and its link in `root`."""
    target = home / "boxes" / box_id / "sockets"
    if keep_folder:
        target.mkdir(parents=True)
    root.mkdir(exist_ok=True)
    (root / box_id).symlink_to(target)
    return root / box_id


def test_socket_root_is_per_user():
    assert sockets.socket_root(1000) == Path("/tmp/bl-1000")
    assert sockets.socket_root(0, Path("/x")) == Path("/x/bl-0")


def test_entries_into_our_folders_only(tmp_path):
    root, ours, theirs = tmp_path / "bl-0", tmp_path / "bxc-1", tmp_path / "elsewhere"
    mine = box(ours / "home1", "AAAA", root)
    gone = box(ours / "home1", "BBBB", root, keep_folder=False)
    other = box(theirs, "CCCC", root)
    (ours / "home1" / "boxes" / "DDDD").mkdir(parents=True)
    (root / "DDDD").mkdir()                 # a socket folder named for a box of ours
    (root / "EEEE").mkdir()                 # one named for nobody's box we know
    found = {e.path for e in sockets.into([ours], root)}
    assert found == {mine, gone, root / "DDDD"}
    assert other not in found and root / "EEEE" not in found
    assert sorted(sockets.remove(sockets.into([ours], root))) == sorted(map(str, found))
    assert {p.name for p in root.iterdir()} == {"CCCC", "EEEE"}
    assert (ours / "home1" / "boxes" / "AAAA" / "sockets").is_dir(), "only the link went"


def test_dangling_links_are_ours_only_into_a_gone_folder_named_like_ours(tmp_path):
    tmp, root = tmp_path / "tmp", tmp_path / "bl-0"
    tmp.mkdir()
    gone = box(tmp / "bxc-gone" / "home1", "AAAA", root, keep_folder=False)
    box(tmp / "bxc-live" / "home1", "BBBB", root, keep_folder=False)
    (tmp / "bxc-live").mkdir()              # a live run's folder: its links are its own
    box(tmp / "other-gone" / "home1", "CCCC", root, keep_folder=False)      # not our name
    (root / "DDDD").symlink_to(tmp / "bxc-gone" / "home1" / "boxes" / "XXXX" / "sockets")
    box(tmp_path / "elsewhere", "EEEE", root, keep_folder=False)            # outside roots
    assert [e.path for e in sockets.dangling_ours(root, [tmp])] == [gone]


def test_the_teardown_removes_the_links_of_its_homes_once_its_hosts_are_gone(tmp_path):
    root, homes = tmp_path / "bl-0", tmp_path / "bxc-h"
    failed = box(homes / "home1", "AAAA", root)         # a failed start: kept until remove
    stranger = box(tmp_path / "not-ours", "BBBB", root)
    factory = HostFactory(None, tmp_path / "run", homes_root=homes)  # type: ignore[arg-type]
    assert factory.close_all(socket_root=root) == [str(failed)]
    assert not os.path.lexists(failed) and stranger.is_symlink()


def test_the_sweep_removes_a_dead_runs_links_and_only_ours(tmp_path):
    tmp, root = tmp_path / "tmp", tmp_path / "bl-0"
    dead = Owner(2**22 + 7, 1.0)
    homes = tmp / "bxc-dead"
    homes.mkdir(parents=True)
    mark(homes, "homes", owner=dead, run=dead)
    link = box(homes / "home1", "AAAA", root)
    earlier = box(tmp / "bxc-earlier" / "home1", "BBBB", root, keep_folder=False)
    live = box(tmp_path / "live-home", "CCCC", root)
    dry = sweep.sweep(under=[tmp], dry_run=True, is_alive=lambda o: False, socket_root=root)
    assert dry.swept[0].done["socket_entries"] == [str(link)]
    assert dry.socket_links == [str(earlier)] and link.is_symlink() and earlier.is_symlink()
    rep = sweep.sweep(under=[tmp], is_alive=lambda o: False, socket_root=root)
    assert rep.swept[0].done["socket_entries_removed"] == [str(link)]
    assert rep.socket_links == [str(earlier)]
    assert not homes.exists() and [p.name for p in root.iterdir()] == [live.name]
    assert any("socket link" in line for line in rep.lines())


def test_socket_links_follow_boxes_holds_for_links_into_existing_box_folders(tmp_path):
    root, home = tmp_path / "bl-0", tmp_path / "bxc-h" / "home1"
    box(home, "AAAA", root)
    v = checks.socket_links_follow_boxes([e.to_json() for e in sockets.into([home], root)])
    assert v.status == HOLDS and "1 socket link" in v.summary


def test_socket_links_follow_boxes_violated_by_a_link_into_a_removed_box_folder(tmp_path):
    root, home = tmp_path / "bl-0", tmp_path / "bxc-h" / "home1"
    box(home, "AAAA", root)
    left = box(home, "BBBB", root, keep_folder=False)   # its box removed, its link kept
    v = checks.socket_links_follow_boxes([e.to_json() for e in sockets.into([home], root)])
    assert v.status == VIOLATED and str(left) in v.summary
    assert [x["box"] for x in v.evidence["dangling"]] == ["BBBB"]
