"""One record, seen alike by every SDK.

When `failed` was added to the runtime's box states, the Node, Python and C SDKs' status
mappings were not updated with it (fixed upstream "so REST/CLI/SDK consumers see one
consistent name"). Here one home is driven through one SDK and read through the other, one
host at a time (one runtime per home): the Python and Node SDKs carrying the same core
version. A box fails to start through the driving SDK; after its host leaves, a fresh host of
each SDK reads it through get_info and list_info, beside the store: every path must show the
same status string (`failed`) and presence. Then the reading SDK removes it, and every path of
both must say it is gone. A disagreement names both SDKs' paths and their words.

Runs where the runtime under test has a counterpart in the other SDK (Python 0.10.0 with Node
0.10.0, Python 0.10.3 with native 0.10.3 under the 0.10.0 wrapper, and the other way round);
elsewhere it skips saying why.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.common.errors import HarnessError
from harness.judge import checks
from harness.observe.records import RecordRead, read_host, read_store
from harness.runtime.host import BARE, RuntimeHost
from harness.runtime.registry import needs_registry
from harness.runtime.spec import RuntimeEnv, counterpart, ensure_runtime
from harness.scenario.context import Chaos
from harness.scenario.shutdown import failed_box_options
from harness.scenario.steps import create_box, observed_failure, start_with_fault

pytestmark = pytest.mark.tier("init")


@pytest.fixture(scope="session")
def counterpart_env(runtime_env: RuntimeEnv) -> RuntimeEnv:
    """The other SDK's runtime with the same core version (built once, cached)."""
    other = counterpart(runtime_env.spec)
    if other is None:
        pytest.skip(f"no {'Node' if runtime_env.sdk == 'python' else 'Python'} SDK build "
                    f"carries core {runtime_env.version} ({runtime_env.spec.text})")
    if needs_registry(runtime_env.version):
        pytest.skip(f"core {runtime_env.version} pulls its guest base image; the cross-SDK "
                    "scenario runs on releases that embed it")
    try:
        return ensure_runtime(other)
    except HarnessError as exc:
        pytest.skip(f"the counterpart runtime {other} cannot be installed here: {exc}")


def sdk_host(chaos: Chaos, env: RuntimeEnv, home: Path) -> RuntimeHost:
    """A host of `env`'s SDK on `home` (whose last host must have exited: one runtime per
    home), owned by the scenario's factory so its teardown ends it and its processes are
    judged as the scenario's own."""
    if any(h.alive and h.home == home for h in chaos.factory.hosts):
        raise HarnessError(f"a host on {home} is still running; a home takes one runtime")
    host = RuntimeHost(env, home, chaos.effective(BARE), chaos.workdir / "hosts",
                       chaos.history, f"host{len(chaos.factory.hosts) + 1}-{env.sdk}")
    chaos.factory.hosts.append(host)
    host.start()
    chaos.ledger.own_children.add(host.pid)
    return host


def read_as(host: RuntimeHost, box_id: str, moment: str) -> list[RecordRead]:
    """get_info and list_info through `host`, labelled with its SDK (e.g. node.after_exit)."""
    return read_host(host, box_id, f"{host.env.sdk}.{moment}")


@pytest.mark.parametrize("driver", ["runtime", "counterpart"])
def test_a_failed_record_reads_alike_through_every_sdk(chaos, doctor_boots, counterpart_env,
                                                       driver):
    drive_env, read_env = ((chaos.env, counterpart_env) if driver == "runtime"
                           else (counterpart_env, chaos.env))
    chaos.note(driver=drive_env.spec.text, reader=read_env.spec.text)

    # 1. The box fails to start through the driving SDK, whose host then just leaves.
    home = chaos.factory.new_home()
    first = sdk_host(chaos, drive_env, home)
    box = create_box(chaos, first, name="crosssdk", **failed_box_options(doctor_boots))
    start = start_with_fault(chaos, first, box, fault=None)
    chaos.judge(checks.op_failed_cleanly("start", start.error, start.host_alive))
    cause = observed_failure(chaos, start, home)
    first.close()

    # 2. A fresh host of each SDK reads it, one after the other, beside the store.
    reader = sdk_host(chaos, read_env, home)
    after = [*read_as(reader, box, "after_exit"), read_store(home, box, "store.after_exit")]
    reader.close()
    again = sdk_host(chaos, drive_env, home)
    after += read_as(again, box, "after_exit")
    again.close()
    chaos.judge(*(checks.record_failed(r, cause) for r in after),
                checks.read_paths_agree(after, f"cross_sdk.after_exit[{driver}]"))

    # 3. The reading SDK removes it; every path of both SDKs must say it is gone.
    remover = sdk_host(chaos, read_env, home)
    remover.call("remove", timeout_s=60, box_id=box, force=True)
    gone = [*read_as(remover, box, "after_remove"), read_store(home, box, "store.after_remove")]
    remover.close()
    last = sdk_host(chaos, drive_env, home)
    gone += read_as(last, box, "after_remove")
    last.close()
    chaos.judge(checks.read_paths_agree(gone, f"cross_sdk.after_remove[{driver}]"))
