"""A failed start with the options users get: the SDK's own lifecycle defaults and each
lifecycle flag, beside the harness's usual auto_remove=False.

Every other scenario forces auto_remove=False (Chaos.box_options), so nothing judged what a
user gets. Measured on 0.10.8 (2026-12-06): with nothing set a box reads auto_delete=1 (remove
on stop), auto_stop=0, auto_resume=True; auto_remove=True is the same; auto_remove=False is
auto_delete=0. auto_stop is refused by the local runtime ("only supported by REST
runtimes"), and detach=True is refused with the defaults ("remove-on-stop is incompatible with
detach=true").

PR 520 promises that a box whose start fails keeps its record, `failed` with its reason,
until the user destroys it: judged with record_failed on every read path, live and after the
host ends (on its own, or through a graceful shutdown), whatever the lifecycle options say;
and the box's disks with its record. Measured on 0.10.8: with auto_delete > 0 (the SDK's
default, auto_remove=True, auto_delete=5) the record is `failed` in the runtime where the start
failed, and the next runtime's recovery deletes record and folder ("Removing ephemeral
(remove-on-stop) box during recovery"): the known failure
failed-remove-on-stop-box-deleted-at-recovery.

The shutdown and recovery families under the same options: a failed box beside boxes still
starting (one initializing in the guest-connect wait, one guest hung) when the host gets the
production runner's SIGTERM (a graceful shutdown) or a SIGKILL (nothing runs; a fresh runtime
recovers the home), judged with the shutdown scenarios' checks (scenarios/shutdown) and, for the
failed box, PR 520's promise on every read path of the fresh runtime, with its disks.

The gate runs the SDK's defaults with the host exiting, and with the runner's SIGTERM and a
SIGKILL; BOXLITE_CHAOS_OPS_NIGHTLY=1 runs every variant and ending.
"""

from __future__ import annotations

import pytest

from harness.judge import checks
from harness.observe.boxes import box_disks
from harness.observe.records import read_store
from harness.scenario import operations as ops
from harness.scenario.shutdown import CASES as HOST_ENDINGS
from harness.scenario.shutdown import (
    arrange,
    failed_box_options,
    record_verdicts,
    signal_and_judge,
)
from harness.scenario.steps import (
    ENDINGS,
    create_box,
    judge_failed_record,
    observed_failure,
    start_with_fault,
)

pytestmark = pytest.mark.tier("init")

# The box options of each variant, over the test image (None: left to the SDK).
VARIANTS = {
    "auto_remove_false": {},                    # the harness's usual options
    "sdk_defaults": ops.user_options(),
    "auto_remove_true": ops.user_options(auto_remove=True),
    "auto_delete_0": ops.user_options(auto_delete=0),
    "auto_delete_5": ops.user_options(auto_delete=5),
    "auto_resume_false": ops.user_options(auto_resume=False),
}
GATE = {("sdk_defaults", "exit")}
CASES = [(v, e) for v in VARIANTS for e in ENDINGS]


# The shutdown family (the runner's SIGTERM) and the recovery family (SIGKILL, then a fresh
# runtime), each with 3 boxes: initializing, guest hung, failed (harness/scenario/shutdown.py).
HOST_GATE = {("sdk_defaults", "runner"), ("sdk_defaults", "sigkill")}
HOST_CASES = [(v, e) for v in VARIANTS for e in ("runner", "sigkill")]


def _param(variant: str, ending: str, gate: set[tuple[str, str]] = GATE):
    marks = () if (variant, ending) in gate else (pytest.mark.skipif(
        not ops.nightly(), reason=f"nightly: set {ops.NIGHTLY_ENV}=1"),)
    return pytest.param(variant, ending, id=f"{variant}-{ending}", marks=marks)


@pytest.mark.parametrize("variant, ending", [_param(*c) for c in CASES])
def test_a_failed_start_keeps_its_record_with_these_options(chaos, doctor_boots, variant,
                                                            ending):
    host = chaos.host()
    box = create_box(chaos, host, name=f"defaults-{variant}",
                     **{**failed_box_options(doctor_boots), **VARIANTS[variant]})
    lifecycle = ops.lifecycle_of(host.call("get_info", box_id=box))
    chaos.note(variant=variant, options=VARIANTS[variant], lifecycle=lifecycle)
    if lifecycle.get("auto_delete"):
        # A remove-on-stop box (auto_delete > 0): the path a fresh runtime's recovery takes
        # ("Removing ephemeral (remove-on-stop) box during recovery" on 0.10.8).
        chaos.witness("remove_on_stop_box", box=box, **lifecycle)
    start = start_with_fault(chaos, host, box, fault=None)
    chaos.judge(checks.op_failed_cleanly("start", start.error, start.host_alive))
    if start.error is not None:
        chaos.witness("start_failed", box=box, error=start.error)
    cause = observed_failure(chaos, start, host.home)
    chaos.note(start_elapsed_s=round(start.elapsed_s, 2), error=start.error, observed=cause)
    fresh = judge_failed_record(chaos, host, box, cause, ending)
    # Whatever became of the record, the box's disks went with it (or stayed with it).
    chaos.judge(checks.disks_follow_record(read_store(fresh.home, box, f"store.after_{ending}"),
                                           box_disks(fresh.home, box)))


@pytest.mark.parametrize("variant, ending", [_param(*c, gate=HOST_GATE) for c in HOST_CASES])
def test_host_ends_with_a_failed_box_and_boxes_starting_with_these_options(chaos, doctor_boots,
                                                                          variant, ending):
    case = HOST_ENDINGS[ending]
    host = chaos.host(case.flavour)
    boxes = arrange(host, chaos.faults, 3, chaos.box_options(**VARIANTS[variant]),
                    failed_box_options(doctor_boots))
    failed = next(b for b in boxes if b.state == "failed")
    lifecycle = ops.lifecycle_of(host.call("get_info", box_id=failed.id))
    chaos.note(variant=variant, options=VARIANTS[variant], lifecycle=lifecycle)
    chaos.witness("start_failed", box=failed.id, error=failed.error)
    if lifecycle.get("auto_delete"):
        chaos.witness("remove_on_stop_box", box=failed.id, **lifecycle)
    signal_and_judge(chaos, host, boxes, case)

    # A fresh runtime on the home (its recovery runs): every record settled, the failed box
    # still failed with its cause on every read path, its disks with its record.
    fresh = chaos.restart(host)
    chaos.judge(*record_verdicts(fresh, boxes, case.moment))
    chaos.judge(checks.disks_follow_record(
        read_store(fresh.home, failed.id, f"store.{case.moment}.{failed.label}"),
        box_disks(fresh.home, failed.id)))


@pytest.mark.parametrize("options, refusal", [
    (ops.user_options(auto_stop=3), "only supported by REST runtimes"),
    (ops.user_options(detach=True), "remove-on-stop is incompatible with detach"),
], ids=["auto_stop", "detach_with_defaults"])
def test_options_the_local_runtime_refuses_leave_nothing(chaos, options, refusal):
    """A create the local runtime refuses answers an error naming why, and leaves no record
    and no folder. A release that accepts the option is noted, not failed: these refusals
    are documented choices, not promises."""
    host = chaos.host()
    _, exc = host.try_call("create", timeout_s=60, options=chaos.box_options(**options),
                           name="refused")
    error = None if exc is None else {"type": exc.type, "message": exc.message}
    chaos.note(options=options, error=error, expected_refusal=refusal)
    if exc is None:
        pytest.skip(f"this release accepts {options}: nothing refused to judge")
    chaos.judge(checks.op_failed_cleanly("create", error, host.alive),
                ops.opchecks.new_boxes_whole("create", [], ops.store_rows(host.home),
                                             ops.all_disks(host.home), at_most=0))
