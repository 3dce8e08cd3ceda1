"""The Node host's protocol mapping, against a stand-in SDK folder: the SDK's plain Errors
(code GenericFailure, message = the core's text) come back in host_main.py's error shape, its
infos in host_main.py's record shape, and its flags behave as host_main.py's. Scenarios drive
the real SDK; this only pins what host_main.mjs adds. The 0.10 operations and options are
pinned against the installed SDKs themselves, beside host_main.py over the same core."""

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


# -- the real SDK: the 0.10 operations and options, against the installed npm packages ------
# (skipped where ./go has not installed them; the guest never boots, so only what a box
# that was never started answers is compared)

NODE_SPEC = "npm:@boxlite-ai/boxlite@0.10.0"
PYTHON_SPEC = "boxlite==0.10.0"         # the same core release, through the Python SDK


def _installed(spec: str) -> RuntimeEnv:
    from harness.runtime.spec import ready_runtime
    env = ready_runtime(spec)
    if env is None:
        pytest.skip(f"{spec} is not installed (./go installs it)")
    return env


@pytest.fixture
def image() -> str:
    from harness.runtime.image import busybox_image
    return str(busybox_image().path)


@pytest.fixture
def real_hosts(tmp_path: Path):
    """Start hosts of installed runtimes by spec; every one is closed at the end."""
    factories: list[HostFactory] = []

    def start(spec: str, flavour: Flavour = BARE):
        f = HostFactory(_installed(spec), tmp_path / f"run{len(factories)}")
        factories.append(f)
        return f.start(flavour=flavour)
    yield start
    for f in factories:
        f.close_all()


def _answer(host, op: str, **args) -> dict:
    """A reply with what differs between two homes (ids, paths, times) taken out: an error's
    message with the home's paths replaced, a result's keys and value types."""
    result, err = host.try_call(op, **args)
    if err is not None:
        return {"error": err.message.replace(str(host.home), "HOME")
                .replace(args.get("box_id") or "\0", "BOX")}
    if isinstance(result, dict):
        return {"result": {k: type(v).__name__ for k, v in result.items()}}
    return {"result": result}


def test_the_new_operations_answer_as_the_python_hosts_do(real_hosts, image):
    """The same requests to host_main.py and host_main.mjs over one core release: the same
    results (by key and type) and the same errors (by message)."""
    answers = {}
    for spec in (PYTHON_SPEC, NODE_SPEC):
        host = real_hosts(spec)
        box = host.call("create", options={"rootfs_path": image}, name="a")["id"]
        dest = str(host.home / "a.boxlite")
        answers[spec] = {
            "get_info": _answer(host, "get_info", box_id=box),
            "snapshot_list": _answer(host, "snapshot_list", box_id=box),
            "snapshot_create": _answer(host, "snapshot_create", box_id=box, name="s"),
            "snapshot_restore": _answer(host, "snapshot_restore", box_id=box, name="s"),
            "snapshot_remove": _answer(host, "snapshot_remove", box_id=box, name="s"),
            "clone": _answer(host, "clone", box_id=box, name="c"),
            "export": _answer(host, "export", box_id=box, dest=dest),
            "import_box": _answer(host, "import_box", archive_path=dest, name="i"),
            "volume_create": _answer(host, "volume_create", name="v"),
            "volume_list": _answer(host, "volume_list"),
            "volume_remove": _answer(host, "volume_remove", volume_id="v"),
            "image_list": _answer(host, "image_list"),
            # A name that cannot be an id's prefix: get_or_create resolves names as ids too.
            "get_or_create": _answer(host, "get_or_create", options={"rootfs_path": image},
                                     name="g-0"),
            "get_or_create_again": _answer(host, "get_or_create",
                                           options={"rootfs_path": image}, name="g-0"),
            "close": _answer(host, "close"),
        }
        assert host.alive
    python, node = answers[PYTHON_SPEC], answers[NODE_SPEC]
    assert {k: v for k, v in node.items() if v != python[k]} == {}
    assert set(node["get_info"]["result"]) >= {"auto_delete", "auto_stop", "auto_resume"}


def _sdk_lifecycle(env: RuntimeEnv, image: str, home: Path) -> dict:
    """The lifecycle a box created straight through the SDK with no option but its rootfs
    gets: what a user of the SDK gets by default."""
    import os
    import subprocess
    script = (f"const {{ JsBoxlite }} = await import({json.dumps(str(env.venv))} + "
              "'/node_modules/@boxlite-ai/boxlite/dist/index.js');"
              f"const rt = new JsBoxlite({{ homeDir: {json.dumps(str(home))} }});"
              f"const info = await (await rt.create({{ rootfsPath: {json.dumps(image)} }})).info();"
              "console.log(JSON.stringify({ auto_delete: info.autoDelete, "
              "auto_stop: info.autoStop, auto_resume: info.autoResume }));"
              "await rt.shutdown(5);")
    proc = subprocess.run([env.host_argv()[0], "--input-type=module", "-e", script],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env.host_env()})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_sdk_defaults_leave_the_lifecycle_to_the_sdk(real_hosts, image, tmp_path):
    host = real_hosts(NODE_SPEC)
    lifecycle = ("auto_delete", "auto_stop", "auto_resume")

    def created(**options) -> dict:
        box = host.call("create", options={"rootfs_path": image, **options})["id"]
        return {k: host.call("get_info", box_id=box)[k] for k in lifecycle}

    env = _installed(NODE_SPEC)
    assert created(sdk_defaults=True, auto_remove=None) == \
        _sdk_lifecycle(env, image, tmp_path / "sdk-home")
    assert created()["auto_delete"] == 0                     # auto_remove forced off
    assert created(sdk_defaults=True, auto_remove=True)["auto_delete"] > 0
    # The lifecycle fields go to the SDK under its names, and come back as host_main.py's.
    assert created(auto_delete=5, auto_resume=False) == {"auto_delete": 5, "auto_stop": 0,
                                                         "auto_resume": False}


def test_the_class_typed_options_reach_the_sdk(real_hosts, image):
    """network, advanced and secrets in host_main.py's JSON shapes (snake_case, security and
    health_check inside advanced) are taken by the Node SDK under its names, and what it
    refuses it refuses itself; tty, which the Node SDK has no option for, answers
    OpUnsupported."""
    host = real_hosts(NODE_SPEC)
    box = host.call("create", options={
        "rootfs_path": image,
        "network": {"outbound": {"mode": "disabled", "allow_net": []}},
        "advanced": {"security": {"max_open_files": 100}, "health_check": None},
        "secrets": [{"name": "k", "value": "v", "hosts": ["example.com"]}]})["id"]
    assert host.call("get_info", box_id=box)["status"] == "configured"
    # The SDK's own refusals name where each value landed: allow_net as inbound's allowNet
    # (refused: only a key the SDK reads can be), security beside advanced, secrets' hosts.
    refused = {
        "network": ({"inbound": {"mode": "enabled", "allow_net": ["a.example"]}},
                    "inbound.allow_net is not supported yet"),
        "advanced": ({"security": {"max_open_files": "x"}},
                     "JsSecurityOptions.maxOpenFiles on JsBoxOptions.security"),
        "secrets": ([{"name": "k", "value": "v", "hosts": 3}],
                    "JsSecret.hosts on JsBoxOptions.secrets"),
    }
    for key, (value, where) in refused.items():
        _, bad = host.try_call("create", options={"rootfs_path": image, key: value})
        assert bad is not None and where in bad.message, (key, bad)
        assert bad.error["sdk_error"]["name"] == "Error"            # the SDK's, not the host's
    _, tty = host.try_call("create", options={"rootfs_path": image, "tty": True})
    assert tty is not None and tty.type == "OpUnsupported" and "tty" in tty.message
    assert host.alive


def test_an_operation_the_sdk_lacks_answers_op_unsupported(real_hosts):
    """@boxlite-ai/boxlite 0.9.7 has no volumes handle: the scenarios read OpUnsupported as
    nothing to judge (harness.scenario.operations.unsupported)."""
    from harness.runtime.host import RuntimeOpError
    from harness.scenario.operations import unsupported
    host = real_hosts("npm:@boxlite-ai/boxlite@0.9.7")
    for op, args in (("volume_create", {"name": "v"}), ("volume_list", {}),
                     ("volume_remove", {"volume_id": "v"})):
        _, err = host.try_call(op, **args)
        assert isinstance(err, RuntimeOpError) and unsupported(err)
        assert err.message == (f"{op}: @boxlite-ai/boxlite 0.9.7 (core 0.9.7) has no "
                               "JsBoxlite.volumes")
    assert host.call("image_list") == []
    assert host.alive


@pytest.mark.parametrize("chosen, seen", [(None, "unset"), ("debug", "debug")])
def test_the_runtime_log_level_is_the_harness_choice(factory, monkeypatch, tmp_path,
                                                     chosen, seen):
    """A RUST_LOG in the caller's shell never reaches a host (it would change the runtime's
    timings and the points its log shows); BOXLITE_CHAOS_RUST_LOG sets it (points discover
    --log-level debug). Read from a child of the host, which inherits the host's env."""
    from harness.runtime.host import RUST_LOG_ENV
    monkeypatch.setenv("RUST_LOG", "trace")
    if chosen:
        monkeypatch.setenv(RUST_LOG_ENV, chosen)
    else:
        monkeypatch.delenv(RUST_LOG_ENV, raising=False)
    out = tmp_path / "rust_log"
    host = factory.start(flavour=BARE)
    child = host.call("spawn_child", argv=["sh", "-c", f'printf %s "${{RUST_LOG-unset}}" > {out}'])
    assert host.call("wait_child", pid=child["pid"])["exit_code"] == 0
    assert out.read_text() == seen
