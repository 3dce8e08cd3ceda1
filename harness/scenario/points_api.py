"""The 0.10 API beyond a box's lifecycle as fault points: clone, export, import_box,
snapshot create / restore / remove. harness.scenario.points makes
each (name, arrange, act, what) of API_OPERATIONS an Operation of its OPERATIONS; `run` is
its Run (not imported here: points imports this module).

No shim runs in these operations here (guests never boot on this machine, so a box is at
best stopped or failed; harness.scenario.operations.box_in_state), so only the host's faults
(and the store's I/O errors) fit them. The variant names the source box: `plain` is a stopped
box (its start failed, then stop()), `detached` a detach=True box whose start failed. A
release without the operation answers OpUnsupported, and discovery records that answer.

An export's archive goes beside the home (`<home>/../export-<n>.boxlite`), outside the walk
of the home: its points are the staging in `<home>/tmp/` and the log; the archive's own
appearance is not a point.

Volumes are not here: 0.10.8 answers volume_create with 'unsupported: named volumes are not
supported yet' (UnsupportedError) and passes no point.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from harness.scenario.operations import box_in_state

Run = Any  # harness.scenario.points.Run

_archives = itertools.count(1)


def _source(run: Run) -> None:
    """A new host with a source box: stopped (plain) or failed and detached (detached)."""
    host = run.new_host()
    run.box = box_in_state(run.chaos, host, "stopped" if run.variant == "plain" else "detached",
                           "subject")


def _archive_path(run: Run) -> Path:
    return run.home.parent / f"export-{next(_archives)}.boxlite"


def _exported(run: Run) -> None:
    """A source box exported to an archive beside the home (the import's input)."""
    _source(run)
    assert run.host is not None and run.box is not None
    dest = _archive_path(run)
    run.host.call("export", box_id=run.box, dest=str(dest), timeout_s=120)
    run.archive = dest  # type: ignore[attr-defined]


def _snapshotted(run: Run) -> None:
    """A source box with one snapshot, `snap` (restore's input)."""
    _source(run)
    assert run.host is not None
    run.host.call("snapshot_create", box_id=run.box, name="snap", timeout_s=120)


def _restored_beside(run: Run) -> None:
    """A source box with snapshots `snap` and `snap2`, restored to `snap` (remove's input:
    the runtime refuses to remove the snapshot its current disk depends on)."""
    _snapshotted(run)
    assert run.host is not None
    run.host.call("snapshot_create", box_id=run.box, name="snap2", timeout_s=120)
    run.host.call("snapshot_restore", box_id=run.box, name="snap", timeout_s=120)


def send_op(op: str, **kw: Callable[[Run], object] | object) -> Callable[[Run], Future]:
    """An act that sends `op` to the run's host with `kw`, each callable one called with the
    run first (its box, say); returns the act (it returns the request's Future)."""
    def act(run: Run) -> Future:
        assert run.host is not None
        args = {k: (v(run) if callable(v) else v) for k, v in kw.items()}
        return run.host.send(op, **args)
    return act


def _box(run: Run) -> str | None:
    return run.box


# (name, arrange, act, what), as harness.scenario.points.Operation takes them.
API_OPERATIONS: tuple[tuple[str, Callable[[Run], None], Callable[[Run], Future], str], ...] = (
    ("clone", _source, send_op("clone", box_id=_box, name="clone"),
              "clone() of a stopped box"),
    ("export", _source,
              send_op("export", box_id=_box, dest=lambda r: str(_archive_path(r))),
              "export() of a stopped box to an archive beside the home"),
    ("import_box", _exported,
              send_op("import_box", archive_path=lambda r: str(r.archive), name="imported"),
              "import_box() of an archive exported from a stopped box"),
    ("snapshot_create", _source,
              send_op("snapshot_create", box_id=_box, name="snap"),
              "snapshot_create() of a stopped box"),
    ("snapshot_restore", _snapshotted,
              send_op("snapshot_restore", box_id=_box, name="snap"),
              "snapshot_restore() of a stopped box to its one snapshot"),
    ("snapshot_remove", _restored_beside,
              send_op("snapshot_remove", box_id=_box, name="snap2"),
              "snapshot_remove() of a snapshot the box's disk no longer depends on"),
)
