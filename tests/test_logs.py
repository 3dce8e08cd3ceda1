"""Facts read from the runtime's own log."""

from datetime import UTC, datetime

from harness.observe.logs import vm_started_at

LOG = """\
2026-11-29T20:42:57.107543Z  INFO boxlite::vmm::controller::shim: Starting Box subprocess \
engine=Libkrun
2026-11-29T20:42:57.183815Z  INFO boxlite::vmm::controller::shim: boxlite-shim subprocess \
spawned box_id=krDe0ku16bOu pid=10479 shim_spawn_duration_ms=76
2026-11-29T20:42:57.183963Z  INFO boxlite::vmm::controller::shim: VM subprocess started \
successfully box_id=krDe0ku16bOu
2026-11-29T20:43:21.759722Z  WARN boxlite::litebox::init::tasks::guest_connect: VM subprocess \
exited unexpectedly during startup pid=10479 exit_code=1
"""


def test_the_guest_wait_start_is_the_runtime_s_own_timestamp():
    t = vm_started_at(LOG, "krDe0ku16bOu")
    assert t == datetime(2026, 11, 29, 20, 42, 57, 183963, tzinfo=UTC).timestamp()


def test_no_line_for_the_box_is_none():
    assert vm_started_at(LOG, "otherBox0000") is None
    assert vm_started_at("", "krDe0ku16bOu") is None
