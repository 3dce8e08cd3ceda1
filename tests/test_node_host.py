"""The Node host's protocol mapping, against a stand-in SDK folder: the SDK's plain Errors
(code GenericFailure, message = the core's text) come back in host_main.py's error shape, its
infos in host_main.py's record shape, and its flags behave as host_main.py's. Scenarios drive
the real SDK; this only pins what host_main.mjs adds."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

from harness.common.errors import HostError
from harness.runtime.host import (
    BARE,
    Flavour,
    FlavourRefused,
    HostFactory,
    RuntimeOpError,
    refusal,
)
from harness.runtime.spec import RuntimeEnv, RuntimeSpec

pytestmark = pytest.mark.skipif(shutil.which("node") is None,
                                reason="node is not installed (./go installs it)")

# A stand-in for @boxlite-ai/boxlite: the calls host_main.mjs makes, failing as the SDK does.
FAKE_SDK = r"""
const gf = (message) => Object.assign(new Error(message), { code: "GenericFailure" });
const records = new Map();
let shutdowns = [];
class Box {
  constructor(id) { this.id = id; }
  async start() {
    if (records.get(this.id).name === "hangs") return new Promise(() => {});
    records.get(this.id).state = { status: "failed", running: false };
    throw gf("engine reported an error: The VM failed to start.");
  }
  async stop() {}
  async info() { return records.get(this.id); }
  async exec(cmd, args) {
    // The SDK's JsExecution: stdout() yields chunks, then null; wait() gives {exitCode}.
    const chunks = cmd === "hang" ? [] : [...args];
    return {
      async stdout() { return { async next() {
        if (cmd === "hang") return new Promise(() => {});
        return chunks.length ? chunks.shift() : null; } }; },
      async wait() { return { exitCode: cmd === "fail" ? 3 : 0 }; },
    };
  }
}
export class JsBoxlite {
  constructor(opts) { this.opts = opts; }
  static withDefaultConfig() { return new JsBoxlite({ home: process.env.BOXLITE_HOME }); }
  async create(opts, name) {
    if (name === "twin" && [...records.values()].some((r) => r.name === "twin")) {
      throw gf("invalid argument: box with name 'twin' already exists");
    }
    const id = "box" + (records.size + 1);
    records.set(id, { id, name: name ?? undefined, state: { status: "configured",
                      running: false }, createdAt: "2026-12-06T20:00:00+00:00",
                      image: opts.rootfsPath === "/echo" ? JSON.stringify(opts)
                                                          : "rootfs:" + opts.rootfsPath });
    return new Box(id);
  }
  async get(id) { return records.has(id) ? new Box(id) : null; }
  async getInfo(id) { return records.get(id) ?? null; }
  async listInfo() { return [...records.values()]; }
  async remove(id, force) {
    if (!records.delete(id)) throw gf("box not found: " + id);
  }
  async shutdown(timeout) { shutdowns.push(timeout); process.stdout.write(JSON.stringify(
    { event: "fake_shutdown", timeout }) + "\n"); }
}
"""


@pytest.fixture
def fake_env(tmp_path: Path) -> RuntimeEnv:
    folder = tmp_path / "npm-fake"
    pkg = folder / "node_modules" / "@boxlite-ai" / "boxlite"
    pkg.mkdir(parents=True)
    (pkg / "package.json").write_text(json.dumps({"name": "@boxlite-ai/boxlite",
                                                  "version": "0.10.0", "type": "module",
                                                  "main": "index.js"}))
    (pkg / "index.js").write_text(FAKE_SDK)
    ready = {"version": "0.10.3", "native": str(tmp_path / "unused.node")}
    (folder / ".boxlite-chaos-ready.json").write_text(json.dumps(ready))
    spec = RuntimeSpec.parse("npm:@boxlite-ai/boxlite@0.10.0+native@0.10.3")
    return RuntimeEnv(spec, folder, "0.10.3", None, ready)


@pytest.fixture
def factory(fake_env: RuntimeEnv, tmp_path: Path):
    f = HostFactory(fake_env, tmp_path / "run")
    yield f
    f.close_all()


def test_ready_and_ping_name_the_core_and_the_sdk(factory):
    host = factory.start(flavour=BARE)
    ready = next(e for e in host.events if e["event"] == "ready")
    assert (ready["boxlite_version"], ready["sdk"], ready["pid"]) == ("0.10.3", "node", host.pid)
    ping = host.call("ping")
    assert (ping["sdk"], ping["sdk_version"], ping["flavour"]["runtime"]) == \
        ("node", "0.10.0", "options")


def test_errors_come_back_in_the_python_hosts_shape(factory):
    host = factory.start(flavour=BARE)
    box = host.call("create", options={"rootfs_path": "/img", "memory_mib": 128},
                    name="twin")["id"]
    with pytest.raises(RuntimeOpError) as exc:
        host.call("start", box_id=box)
    err = exc.value
    assert (err.type, err.message) == ("EngineError",
                                       "engine reported an error: The VM failed to start.")
    assert err.error["mro"][:2] == ["EngineError", "BoxliteError"]
    assert err.error["sdk_error"] == {"name": "Error", "code": "GenericFailure"}
    _, dup = host.try_call("create", options={"rootfs_path": "/img"}, name="twin")
    assert dup is not None and dup.type == "InvalidArgumentError"
    _, gone = host.try_call("remove", box_id="nope")
    assert gone is not None and (gone.type, gone.message) == ("NotFoundError",
                                                              "box not found: nope")
    _, bad = host.try_call("create", options={"rootfs_path": "/img", "bogus": 1})
    assert bad is not None and bad.type == "ValueError" and "bogus" in bad.message
    _, unknown = host.try_call("frobnicate")
    assert unknown is not None and "unknown operation" in unknown.message
    assert host.alive


def test_infos_come_back_in_the_python_hosts_shape(factory):
    host = factory.start(flavour=BARE)
    box = host.call("create", options={"rootfs_path": "/img"}, name="a")["id"]
    host.try_call("start", box_id=box)
    info = host.call("get_info", box_id=box)
    assert info == {"id": box, "name": "a", "status": "failed", "running": False, "pid": None,
                    "exit_code": None, "created_at": "2026-12-06T20:00:00+00:00",
                    "started_at": "None", "image": "rootfs:/img"}
    assert host.call("list_info") == [info]
    assert host.call("get_info", box_id="nope") is None


def test_box_options_are_the_sdks_names_with_auto_remove_off(factory):
    host = factory.start(flavour=BARE)
    box = host.call("create", options={"rootfs_path": "/echo", "memory_mib": 64,
                                       "disk_size_gb": None, "env": [["A", "1"]],
                                       "volumes": [["/h", "/g", True], ["/h2", "/g2"]],
                                       "ports": [[8080, 80, "tcp"], [None, 81]]})["id"]
    # The stand-in echoes the options it was given as the record's image.
    assert json.loads(host.call("get_info", box_id=box)["image"]) == {
        "rootfsPath": "/echo", "memoryMib": 64, "env": [{"key": "A", "value": "1"}],
        "volumes": [{"hostPath": "/h", "guestPath": "/g", "readOnly": True},
                    {"hostPath": "/h2", "guestPath": "/g2"}],
        "ports": [{"hostPort": 8080, "guestPort": 80, "protocol": "tcp"}, {"guestPort": 81}],
        "autoRemove": False}


def test_requests_run_concurrently(factory):
    host = factory.start(flavour=BARE)
    box = host.call("create", options={"rootfs_path": "/img"}, name="hangs")["id"]
    pending = host.send("start", box_id=box)
    assert host.call("get_info", timeout_s=10, box_id=box)["status"] == "configured"
    assert not pending.done()


def test_graceful_sigterm_shuts_down_then_exits_0(factory):
    host = factory.start(flavour=Flavour(sigterm="graceful", shutdown_timeout=7))
    host.terminate()
    assert host.wait_exit(10).returncode == 0
    events = [e["event"] for e in host.events]
    assert events[:2] == ["ready", "signal"] and "shutdown_done" in events


def test_no_handler_dies_of_sigterm(factory):
    host = factory.start(flavour=Flavour(runtime="default", sigterm="none"))
    host.terminate()
    assert host.wait_exit(10).returncode == -signal.SIGTERM


def test_the_python_only_reaper_is_refused_in_one_line(factory, fake_env):
    with pytest.raises(FlavourRefused, match="--reaper global does not apply to the Node SDK"):
        factory.start(flavour=Flavour(reaper="global"))
    assert refusal(fake_env, Flavour(reaper="global")) is not None
    assert refusal(fake_env, BARE) is None


def test_the_node_host_itself_refuses_the_reaper(fake_env, tmp_path):
    """Started past the harness's own refusal, host_main.mjs says it too, before ready."""
    import subprocess
    proc = subprocess.run([*fake_env.host_argv(), "--home", str(tmp_path / "h"),
                           "--reaper", "global"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "--reaper global does not apply to the Node SDK host" in proc.stderr


def test_spawned_children_keep_their_exit_codes(factory):
    host = factory.start(flavour=BARE)
    child = host.call("spawn_child", argv=["sh", "-c", "exit 7"])
    assert host.call("wait_child", pid=child["pid"]) == {"exit_code": 7, "error": None}
    child = host.call("spawn_child", argv=["sh", "-c", "kill -TERM $$"])
    assert host.call("wait_child", pid=child["pid"])["exit_code"] == -signal.SIGTERM


def test_the_node_host_is_a_host_in_the_process_ledger(fake_env):
    from harness.observe.processes import classify
    cmd = " ".join([*fake_env.host_argv(), "--home", "/x"])
    assert classify("node", cmd) == "host"


def test_exec_streams_stdout_and_gives_the_exit_code(factory):
    """The exec path only runs in a booted guest (none boots here), so only the stand-in
    pins what the host does with the SDK's execution: chunks joined and streamed, exit code
    passed on, a command past its timeout ending in a TimeoutError."""
    host = factory.start(flavour=BARE)
    box = host.call("create", options={"rootfs_path": "/img"})["id"]
    out = host.call("exec", box_id=box, cmd="echo", args=["a", "b"], stream_as="acks")
    assert out == {"exit_code": 0, "stdout": "ab", "stderr": ""}
    assert [e["chunk"] for e in host.events if e["event"] == "exec_out"] == ["a", "b"]
    assert host.call("exec", box_id=box, cmd="fail", args=[])["exit_code"] == 3
    _, err = host.try_call("exec", box_id=box, cmd="hang", exec_timeout_s=0.2)
    assert err is not None and err.type == "TimeoutError"


def test_a_runtime_that_does_not_start_says_why_last(fake_env, tmp_path):
    """As host_main.py's traceback does, the reason is stderr's last line (the harness shows
    the last lines when a host exits before ready)."""
    index = fake_env.venv / "node_modules" / "@boxlite-ai" / "boxlite" / "index.js"
    index.write_text(index.read_text().replace(
        "constructor(opts) { this.opts = opts; }",
        "constructor(opts) { throw Object.assign(new Error('internal error: Failed to acquire "
        "runtime lock at ' + opts.homeDir), { code: 'GenericFailure' }); }"))
    f = HostFactory(fake_env, tmp_path / "run")
    try:
        with pytest.raises(HostError, match=r"InternalError: internal error: Failed to acquire "
                                            r"runtime lock at \S+$"):
            f.start(flavour=BARE)
    finally:
        f.close_all()
