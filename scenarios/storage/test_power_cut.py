"""The power goes while the runtime works on its home (LazyFS's model, through the FUSE layer's
power cut, harness/faults/fuse.py PowerCut): every process of the home stopped and killed at
once, what no fsync made durable since the checkpoint dropped (unsynced writes, and names no
fsync of their folder made durable), and a fresh runtime on what a real disk would hold.
Cut after an acknowledged create, during a start's disk build, at a start's shim spawn, after
an acknowledged stop, after the runtime's answered shutdown and after an acknowledged remove.
Then: the store opens and passes its integrity check, no record is left in a transitional
status, records and box folders agree, an acknowledged remove stays done (whether an
acknowledged create is still there is noted: no check says so yet), a new box reaches its
shim spawn, and every box left can be removed.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from harness.common.errors import ArrangementError
from harness.common.procs import Proc
from harness.common.wait import wait_for
from harness.faults.fuse import FuseLayer, available, power_cut
from harness.faults.shim import box_tree
from harness.judge import checks
from harness.scenario import storage as st
from harness.scenario.steps import START_BOUND_S, create_box

pytestmark = [pytest.mark.tier("init"),
              pytest.mark.skipif(available() is not None, reason=f"the FUSE layer: {available()}")]

GATE = ["after_create", "start_shim_spawn", "after_remove"]
NIGHTLY = ["start_disk_build", "after_stop", "after_shutdown"]


def home_procs(host: st.RuntimeHost, layer: FuseLayer, boxes: list[str]) -> list[Proc]:
    """The host and every process under it, and each box's tree (by pid and start time)."""
    out: dict[int, Proc] = {}
    try:
        top = psutil.Process(host.pid)
        for p in [top, *top.children(recursive=True)]:
            try:
                out[p.pid] = Proc(p.pid, p.create_time(), p.name())
            except psutil.Error:
                continue
    except psutil.Error:
        pass
    for box in boxes:
        for p in box_tree(layer.home, box) or []:
            out.setdefault(p.pid, p)
    return list(out.values())


def staging_started(home: Path) -> bool:
    """The start's disk build has staged something in HOME/tmp (0.10.8: a .tmp* folder)."""
    try:
        return any((home / "tmp").iterdir())
    except OSError:
        return False


def cut(chaos, storage, host, layer: FuseLayer, boxes: list[str], phase: str) -> dict:
    fault = chaos.inject(power_cut(layer, home_procs(host, layer, boxes), phase))
    chaos.witness("power_cut", phase=phase, lost=fault.target.get("lost"),
                  killed=len(fault.target.get("killed", [])))
    if fault.target.get("left"):
        raise ArrangementError(f"processes of the home outlived the power cut: "
                               f"{fault.target['left']}")
    return fault.target


def run_phase(chaos, storage, layer, host, phase: str) -> tuple[list[str], dict]:
    """Drive the runtime to `phase` and cut the power there; returns the boxes made and what
    the harness was told before the cut ({"created": id} / {"removed": id})."""
    acked: dict = {}
    if phase == "after_create":
        layer.checkpoint()
        box = create_box(chaos, host, name="cut-create", memory_mib=st.BOX_MEMORY_MIB)
        acked["created"] = box
    elif phase in ("start_disk_build", "start_shim_spawn"):
        box = create_box(chaos, host, name="cut-start", memory_mib=st.BOX_MEMORY_MIB)
        layer.checkpoint()
        fut = host.send("start", box_id=box)
        anchor = ((lambda: staging_started(layer.home)) if phase == "start_disk_build"
                  else (lambda: box_tree(layer.home, box)))
        wait_for(lambda: anchor() or fut.done(), START_BOUND_S,
                 f"box {box}'s start to reach {phase}")
        if fut.done():
            raise ArrangementError(f"the start ended before {phase}: nothing to cut there")
    elif phase in ("after_stop", "after_shutdown"):
        box = create_box(chaos, host, name="cut-stop", memory_mib=st.BOX_MEMORY_MIB)
        fut = host.send("start", box_id=box)
        wait_for(lambda: box_tree(layer.home, box) or fut.done(), START_BOUND_S,
                 f"the shim of box {box} to be spawned")
        if not box_tree(layer.home, box):
            raise ArrangementError("the start ended before its shim was seen: no stop to cut")
        layer.checkpoint()
        if phase == "after_stop":
            _, err = st.try_op(host, "stop", box_id=box)
        else:                           # the runtime's graceful shutdown, answered
            _, err = st.try_op(host, "shutdown", timeout_s=60, grace_s=10)
        chaos.note(**{f"{phase.removeprefix('after_')}_error": err})
    elif phase == "after_remove":
        box = create_box(chaos, host, name="cut-remove", memory_mib=st.BOX_MEMORY_MIB)
        layer.checkpoint()
        _, err = st.try_op(host, "remove", box_id=box, force=True)
        if err is None:
            acked["removed"] = box
        chaos.note(remove_error=err)
    else:
        raise ArrangementError(f"unknown phase {phase!r}")
    chaos.note(cut_at=phase, box=box)
    cut(chaos, storage, host, layer, [box], phase)
    return [box], acked


@pytest.mark.parametrize("phase", [*GATE, *(pytest.param(p, marks=pytest.mark.storage_nightly)
                                           for p in NIGHTLY)])
def test_power_cut(chaos, storage, phase):
    layer = storage.layer()
    host = chaos.host(home=layer.home)
    boxes, acked = run_phase(chaos, storage, layer, host, phase)
    fresh = chaos.restart(host)
    rows = st.judge_home(chaos, layer, "after_power_cut")
    ids = {r["id"] for r in rows}
    chaos.note(after_cut_records=[(r["id"], r.get("status")) for r in rows],
               box_dirs=st.box_dirs(layer))
    if "created" in acked:
        # No check says yet that an acknowledged create survives a power cut: noted.
        read = st.read_store_apart(layer.home, acked["created"], "store.after_power_cut")
        chaos.note(acked_create_present=read.present, read=read.to_json())
    if "removed" in acked:
        box = acked["removed"]
        reads = [*st.read_host(fresh, box, "fresh"),
                 st.read_store_apart(layer.home, box, "store.after_power_cut")]
        chaos.judge(checks.box_gone(reads, (layer.home / "boxes" / box).exists(), False, []))
    new = st.new_box_reaches_spawn(chaos, fresh, layer)
    left = sorted((ids | set(st.listed_ids(fresh) or [])) - {new} - {None})
    st.remove_all(chaos, fresh, layer, [*left, *([new] if new else [])])

