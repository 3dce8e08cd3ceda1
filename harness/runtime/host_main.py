"""The runtime host: a small program that embeds one boxlite runtime and serves JSON lines.

Runs inside the runtime's virtualenv and imports only the standard library and boxlite, so it
can drive any release. One request per stdin line, one reply per stdout line; requests run
concurrently, so a `start` can be in flight while the harness reads records. Runtime errors
come back as {"ok": false, "error": {"type", "message"}}; the host itself never crashes on them.

Flavours are flags:
  --runtime options|default   Boxlite(Options(home_dir=...)) or Boxlite.default() (the home is
                              isolated through BOXLITE_HOME, set by the harness)
  --sigterm none|graceful|sdk none: default action (the process just dies); graceful: run
                              shutdown(--shutdown-timeout) then exit 0, like upstream's runner;
                              sdk: leave whatever the SDK installed
  --reaper none|global        global: a process-wide waitpid(-1) reaper thread (the mechanism
                              upstream reverted in issue 523), for rip-out runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback

import boxlite

_out_lock = threading.Lock()
REAPER_IDLE_S = 0.05


def emit(obj: dict) -> None:
    line = json.dumps(obj, default=str)
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def info_dict(info) -> dict:
    state = info.state
    return {
        "id": info.id,
        "name": info.name,
        "status": str(state.status),
        "running": bool(state.running),
        "pid": state.pid,
        "exit_code": getattr(state, "exit_code", None),
        "created_at": str(info.created_at),
        "started_at": str(getattr(info, "started_at", None)),
        "image": str(info.image),
        # The 0.10 lifecycle options as the runtime resolved them (absent before 0.10).
        **{k: getattr(info, k) for k in ("auto_delete", "auto_stop", "auto_resume")
           if hasattr(info, k)},
    }


BOX_OPTION_FIELDS = ("image", "rootfs_path", "cpus", "memory_mib", "disk_size_gb", "working_dir",
                     "env", "volumes", "ports", "auto_remove", "detach", "entrypoint", "cmd",
                     "user", "auto_stop", "auto_delete", "auto_resume", "network", "tty",
                     "advanced", "secrets")
# JSON shapes of the option fields whose SDK type is a class: a dict (or, for secrets, a list
# of dicts) becomes that class, keyword for keyword, so an unknown key is refused by the SDK
# itself; any other value goes to BoxOptions as it is, for the SDK to judge.
_OPTION_CLASSES = {"network": ("NetworkSpec", {"outbound": "OutboundNetworkSpec",
                                               "inbound": "InboundNetworkSpec"}),
                   "advanced": ("AdvancedBoxOptions", {"security": "SecurityOptions",
                                                       "health_check": "HealthCheckOptions"}),
                   "secrets": ("Secret", {})}


def _sdk_object(key: str, value):
    cls, nested = _OPTION_CLASSES[key]
    if key == "secrets":        # a list of Secret: a dict inside the list is one
        if not isinstance(value, list):
            return value
        return [getattr(boxlite, cls)(**v) if isinstance(v, dict) else v for v in value]
    if not isinstance(value, dict):
        return value
    kw = {k: (getattr(boxlite, nested[k])(**v) if k in nested and isinstance(v, dict) else v)
          for k, v in value.items()}
    return getattr(boxlite, cls)(**kw)
# Not a BoxOptions field: `sdk_defaults: true` leaves every unset option to the SDK, as a user
# gets it (auto_remove included), instead of forcing auto_remove=False.
SDK_DEFAULTS = "sdk_defaults"


def box_options(raw: dict) -> boxlite.BoxOptions:
    raw = dict(raw)
    sdk_defaults = bool(raw.pop(SDK_DEFAULTS, False))
    kwargs = {k: v for k, v in raw.items() if k in BOX_OPTION_FIELDS and v is not None}
    unknown = sorted(set(raw) - set(BOX_OPTION_FIELDS))
    if unknown:
        raise ValueError(f"unknown box options: {unknown}")
    for key in ("env", "volumes", "ports"):
        if key in kwargs:
            kwargs[key] = [tuple(x) if isinstance(x, list) else x for x in kwargs[key]]
    for key in _OPTION_CLASSES:
        if key in kwargs:
            kwargs[key] = _sdk_object(key, kwargs[key])
    if not sdk_defaults:
        # The SDK default would remove the record on stop, hiding the thing under test.
        kwargs.setdefault("auto_remove", False)
    return boxlite.BoxOptions(**kwargs)


class OpUnsupported(Exception):
    """This release of the SDK lacks the API an operation needs; the message names it."""


def _api(obj, name: str, op: str):
    """`obj.name`, or OpUnsupported naming what this release lacks."""
    fn = getattr(obj, name, None)
    if fn is None:
        raise OpUnsupported(f"{op}: boxlite {_version()} has no {type(obj).__name__}.{name}")
    return fn


def _plain(obj) -> dict:
    """The public, JSON-able attributes of an SDK info object (SnapshotInfo, VolumeInfo...)."""
    out = {}
    for key in dir(obj):
        if key.startswith("_"):
            continue
        val = getattr(obj, key, None)
        if not callable(val):
            out[key] = val if isinstance(val, (str, int, float, bool, type(None))) else str(val)
    return out


class Host:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.boxes: dict[str, object] = {}
        self.children: dict[int, subprocess.Popen] = {}
        self.loop = asyncio.get_running_loop()
        if args.runtime == "default":
            self.rt = boxlite.Boxlite.default()
        else:
            registries = [boxlite.ImageRegistry(host=h, transport="http", search=True)
                          for h in args.registry]
            opts = (boxlite.Options(home_dir=args.home, image_registries=registries)
                    if registries else boxlite.Options(home_dir=args.home))
            self.rt = boxlite.Boxlite(opts)

    async def handle(self, op: str, a: dict):
        fn = getattr(self, "op_" + op, None)
        if fn is None:
            raise ValueError(f"unknown operation {op!r}")
        return await fn(**a)

    async def _box(self, box_id: str):
        box = self.boxes.get(box_id)
        if box is None:
            box = await self.rt.get(box_id)
            if box is None:
                raise LookupError(f"no box {box_id}")
            self.boxes[box_id] = box
        return box

    async def op_ping(self):
        return {"pid": os.getpid(), "boxlite_version": _version(), "flavour": vars(self.args)}

    async def op_create(self, options: dict, name: str | None = None):
        box = await self.rt.create(box_options(options), name=name)
        self.boxes[box.id] = box
        return {"id": box.id}

    async def op_start(self, box_id: str):
        await (await self._box(box_id)).start()
        return None

    async def op_stop(self, box_id: str):
        await (await self._box(box_id)).stop()
        return None

    async def op_exec(self, box_id: str, cmd: str, args: list[str] | None = None,
                      exec_timeout_s: float | None = None, stream_as: str | None = None):
        """Run a command in the box; with `stream_as`, each stdout chunk is also emitted at
        once as an event (so acknowledgements survive the host being killed mid-command)."""
        box = await self._box(box_id)
        execution = await box.exec(cmd, args or [])
        stdout, stderr = [], []

        async def drain():
            out = execution.stdout()
            async for chunk in out:
                text = chunk if isinstance(chunk, str) else chunk.decode(errors="replace")
                stdout.append(text)
                if stream_as:
                    emit({"event": "exec_out", "stream": stream_as, "chunk": text})
            return await execution.wait()

        result = (await asyncio.wait_for(drain(), exec_timeout_s) if exec_timeout_s
                  else await drain())
        return {"exit_code": getattr(result, "exit_code", result), "stdout": "".join(stdout),
                "stderr": "".join(stderr)}

    async def op_remove(self, box_id: str, force: bool = False):
        await self.rt.remove(box_id, force=force)
        self.boxes.pop(box_id, None)
        return None

    async def op_get_info(self, box_id: str):
        info = await self.rt.get_info(box_id)
        return None if info is None else info_dict(info)

    async def op_list_info(self):
        return [info_dict(i) for i in await self.rt.list_info()]

    async def op_shutdown(self, grace_s: int | None = None):
        await self.rt.shutdown(grace_s)
        return None

    # -- the 0.10 API beyond a box's lifecycle (older releases answer OpUnsupported) --------
    async def op_clone(self, box_id: str, name: str | None = None):
        box = await self._box(box_id)
        clone = await _api(box, "clone_box", "clone")(name=name)
        self.boxes[clone.id] = clone
        return {"id": clone.id}

    async def op_export(self, box_id: str, dest: str):
        box = await self._box(box_id)
        return {"path": str(await _api(box, "export", "export")(dest=dest))}

    async def op_import_box(self, archive_path: str, name: str | None = None):
        box = await _api(self.rt, "import_box", "import_box")(archive_path, name=name)
        self.boxes[box.id] = box
        return {"id": box.id}

    async def op_snapshot_create(self, box_id: str, name: str):
        box = await self._box(box_id)
        return _plain(await _api(box, "snapshot", "snapshot_create").create(name=name))

    async def op_snapshot_restore(self, box_id: str, name: str):
        await _api(await self._box(box_id), "snapshot", "snapshot_restore").restore(name)
        return None

    async def op_snapshot_remove(self, box_id: str, name: str):
        await _api(await self._box(box_id), "snapshot", "snapshot_remove").remove(name)
        return None

    async def op_snapshot_list(self, box_id: str):
        snaps = await _api(await self._box(box_id), "snapshot", "snapshot_list").list()
        return [_plain(s) for s in snaps]

    async def op_volume_create(self, name: str | None = None):
        return _plain(await _api(self.rt, "volumes", "volume_create").create(name))

    async def op_volume_remove(self, volume_id: str, force: bool = False):
        await _api(self.rt, "volumes", "volume_remove").remove(volume_id, force=force)
        return None

    async def op_volume_list(self):
        return [_plain(v) for v in await _api(self.rt, "volumes", "volume_list").list()]

    async def op_image_list(self):
        return [_plain(i) for i in await _api(self.rt, "images", "image_list").list()]

    async def op_get_or_create(self, options: dict, name: str | None = None):
        box, created = await _api(self.rt, "get_or_create", "get_or_create")(
            box_options(options), name=name)
        self.boxes[box.id] = box
        return {"id": box.id, "created": bool(created)}

    async def op_close(self):
        """Boxlite.close() is synchronous in 0.10.8; an awaitable one is awaited."""
        result = _api(self.rt, "close", "close")()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            await result
        return None

    async def op_spawn_child(self, argv: list[str]):
        """Own a child process, as any other code in a daemon would (owner-wait property)."""
        proc = subprocess.Popen(argv)
        self.children[proc.pid] = proc
        return {"pid": proc.pid}

    async def op_wait_child(self, pid: int):
        proc = self.children.pop(pid)
        try:
            _, status = await asyncio.to_thread(os.waitpid, pid, 0)
        except ChildProcessError as exc:
            # The exit status was stolen by someone else's waitpid(-1).
            return {"exit_code": None, "error": f"ChildProcessError: {exc}"}
        proc.returncode = os.waitstatus_to_exitcode(status)
        return {"exit_code": proc.returncode, "error": None}

    async def op_exit(self, code: int = 0):
        self.loop.call_later(0.05, os._exit, code)
        return None


def _version() -> str:
    try:
        import importlib.metadata as md
        return md.version("boxlite")
    except Exception:  # noqa: BLE001 - a version we cannot read is reported as such
        return "unknown"


def install_global_reaper() -> None:
    def reap() -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, 0)
                emit({"event": "reaped", "pid": pid})
            except ChildProcessError:
                # No child right now. This reproduces upstream's reverted reaper, which idles
                # for the host's whole life; there is nothing to wait for with a deadline.
                time.sleep(REAPER_IDLE_S)
    threading.Thread(target=reap, name="global-reaper", daemon=True).start()


async def serve(args: argparse.Namespace) -> None:
    host = Host(args)
    loop = asyncio.get_running_loop()
    if args.sigterm == "graceful":
        def on_term() -> None:
            t0 = time.monotonic()
            emit({"event": "signal", "signal": "SIGTERM"})

            async def down() -> None:
                try:
                    await host.rt.shutdown(args.shutdown_timeout)
                    emit({"event": "shutdown_done", "elapsed_s": time.monotonic() - t0})
                except Exception as exc:  # noqa: BLE001 - reported, then exit anyway
                    emit({"event": "shutdown_error", "error": repr(exc)})
                os._exit(0)
            loop.create_task(down())
        loop.add_signal_handler(signal.SIGTERM, on_term)
    elif args.sigterm == "none":
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if args.reaper == "global":
        install_global_reaper()

    queue: asyncio.Queue = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read_stdin, name="stdin", daemon=True).start()
    emit({"event": "ready", "pid": os.getpid(), "boxlite_version": _version()})

    async def run_one(req: dict) -> None:
        rid = req.get("id")
        t0 = time.monotonic()
        try:
            result = await host.handle(req["op"], req.get("args") or {})
            emit({"id": rid, "ok": True, "result": result, "elapsed_s": time.monotonic() - t0})
        except Exception as exc:  # noqa: BLE001 - every runtime error is data for the harness
            emit({"id": rid, "ok": False, "elapsed_s": time.monotonic() - t0,
                  "error": {"type": type(exc).__name__, "message": str(exc),
                            "mro": [c.__name__ for c in type(exc).__mro__],
                            "traceback": traceback.format_exc(limit=3)}})

    tasks = set()
    while True:
        line = await queue.get()
        if line is None:
            break
        try:
            req = json.loads(line)
        except json.JSONDecodeError as exc:
            emit({"id": None, "ok": False, "error": {"type": "ProtocolError",
                                                     "message": f"bad request line: {exc}"}})
            continue
        task = loop.create_task(run_one(req))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    # stdin closed: the harness is gone or done; leave like a daemon losing its supervisor.
    os._exit(0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", required=True)
    p.add_argument("--runtime", choices=("options", "default"), default="options")
    p.add_argument("--sigterm", choices=("none", "graceful", "sdk"), default="none")
    p.add_argument("--shutdown-timeout", type=int, default=25)
    p.add_argument("--reaper", choices=("none", "global"), default="none")
    p.add_argument("--registry", action="append", default=[],
                   help="an http image registry on loopback (host:port), searched first")
    args = p.parse_args()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
