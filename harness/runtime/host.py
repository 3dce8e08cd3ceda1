"""The harness side of a runtime host: start it, talk to it, signal it, wait for it.

`RuntimeHost` is one host process on one home. `HostFactory` owns every host it started so a
test's teardown can end them all, however the test ended.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

from harness.common.errors import HostError
from harness.common.wait import Deadline
from harness.leftovers import sockets
from harness.runtime.spec import RuntimeEnv

# The runtime log filter (RUST_LOG) a host is given; unset: the runtime's default (info).
RUST_LOG_ENV = "BOXLITE_CHAOS_RUST_LOG"

READY_TIMEOUT_S = 60.0
# How often a wait for a reply looks at whether the host is exiting (seconds), and how long a
# reply may still arrive after the host's main thread has ended (seconds: the reader drains
# the pipe in well under that).
REPLY_SLICE_S = 0.25
EXIT_DRAIN_S = 1.0


class EventLog(Protocol):
    """Where a host notes what it sent and what came back: a scenario's history
    (harness.observe.history.History), which sits a room above this one."""

    def append(self, kind: str, **fields: Any) -> Any: ...


@dataclass(frozen=True)
class Flavour:
    """How the host embeds the runtime; each field is a flag of host_main.py."""

    runtime: str = "options"        # options | default
    sigterm: str = "none"           # none | graceful | sdk | graceful-early (Node only)
    shutdown_timeout: int = 25
    reaper: str = "none"            # none | global
    registries: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        out = ["--runtime", self.runtime, "--sigterm", self.sigterm,
               "--shutdown-timeout", str(self.shutdown_timeout), "--reaper", self.reaper]
        for reg in self.registries:
            out += ["--registry", reg]
        return out

    @property
    def label(self) -> str:
        parts = [self.runtime, f"sigterm={self.sigterm}"]
        if self.reaper != "none":
            parts.append(f"reaper={self.reaper}")
        return ",".join(parts)


RUNNER = Flavour(sigterm="graceful")
SDK_DEFAULT = Flavour(runtime="default", sigterm="sdk")
BARE = Flavour()


class FlavourRefused(HostError):
    """The host program of this runtime's SDK cannot be this flavour (the Node host has no
    process-wide reaper; graceful-early is Node's); the message says which flag and why.
    A scenario that needs the flavour cannot judge it on this runtime."""


def refusal(env: RuntimeEnv, flavour: Flavour) -> str | None:
    """Why `env`'s host program cannot be `flavour`, or None. The Node host refuses the same
    flag itself; asking here saves starting node to hear it."""
    if env.sdk == "node" and flavour.reaper != "none":
        return (f"--reaper {flavour.reaper} does not apply to the Node SDK host: Node has no "
                "process-wide waitpid(-1) (the reverted reaper of upstream issue 523 is "
                "Python-only)")
    if env.sdk == "python" and flavour.sigterm == "graceful-early":
        return ("--sigterm graceful-early applies to the Node SDK host only: Boxlite.default() "
                "installs its SIGTERM handler when it is made, so no handler can come first")
    return None


class RuntimeOpError(Exception):
    """The runtime answered an operation with an error (data, not a harness failure)."""

    def __init__(self, op: str, error: dict[str, Any]) -> None:
        self.op = op
        self.type = error.get("type", "?")
        self.message = error.get("message", "")
        self.error = error
        super().__init__(f"{op}: {self.type}: {self.message}")


@dataclass
class ExitInfo:
    returncode: int
    elapsed_s: float            # from the signal (or wait start) to the exit


@dataclass
class RuntimeHost:
    env: RuntimeEnv
    home: Path
    flavour: Flavour
    workdir: Path
    history: EventLog | None = None
    name: str = "host"
    proc: subprocess.Popen | None = None
    create_time: float | None = None
    events: list[dict] = field(default_factory=list)
    _pending: dict[int, Future] = field(default_factory=dict)
    _next_id: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ready: threading.Event = field(default_factory=threading.Event)
    _signal_t: float | None = None
    _stdout_closed: bool = False        # the reader saw EOF: no reply can come any more

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> RuntimeHost:
        """Start the host and wait for it to say ready. Raises FlavourRefused when its SDK's
        host cannot be this flavour, HostError when it exits or stays silent."""
        why = refusal(self.env, self.flavour)
        if why:
            raise FlavourRefused(f"{self.name}: {why}")
        self.home.mkdir(parents=True, exist_ok=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items()
                   if not k.startswith("BOXLITE") and k != "RUST_LOG"}
        # The runtime's log level is the harness's choice, not the caller's shell: debug
        # logging changes timings and the points a log shows (points discover --log-level).
        if os.environ.get(RUST_LOG_ENV):
            env["RUST_LOG"] = os.environ[RUST_LOG_ENV]
        # Both flavours see the isolated home; the default runtime only through the env.
        env["BOXLITE_HOME"] = str(self.home)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env.host_env())
        stderr = open(self.workdir / f"{self.name}.stderr", "ab")
        self.proc = subprocess.Popen(
            [*self.env.host_argv(), "--home", str(self.home), *self.flavour.argv()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env,
            cwd=self.workdir, start_new_session=True)
        stderr.close()
        self.create_time = psutil.Process(self.proc.pid).create_time()
        threading.Thread(target=self._read, name=f"{self.name}-reader", daemon=True).start()
        self._note("invoke", op="host_start", pid=self.proc.pid, flavour=self.flavour.label,
                   home=str(self.home))
        deadline = Deadline(READY_TIMEOUT_S, f"{self.name} to say ready")
        stderr_path = self.workdir / f"{self.name}.stderr"
        while not self._ready.wait(0.1):
            if self.proc.poll() is not None:
                tail = stderr_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise HostError(f"{self.name} exited with {self.proc.returncode} before it "
                                f"was ready: {' | '.join(tail)}")
            if deadline.expired():
                self.kill()
                raise HostError(f"{self.name} (pid {self.proc.pid}) did not say ready within "
                                f"{READY_TIMEOUT_S:.0f}s; see {stderr_path}")
        self._note("ok", op="host_start", pid=self.proc.pid)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "host not started"
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                msg = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if "event" in msg:
                msg["t_mono"] = time.monotonic()
                self.events.append(msg)
                if msg["event"] == "ready":
                    self._ready.set()
                else:
                    self._note("observe", what="host_event", **msg)
                continue
            fut = self._pending.pop(msg.get("id"), None)
            if fut is not None:
                fut.set_result(msg)
        # EOF: the host is gone; fail whatever is still waiting. Under the send lock, so an
        # operation sent between the EOF and the process's exit (it is still `alive` for that
        # moment) is refused at once rather than waiting out its timeout for a reply.
        with self._lock:
            self._stdout_closed = True
            pending, self._pending = self._pending, {}
        for fut in pending.values():
            fut.set_exception(HostError(f"{self.name} exited (its stdout closed) while "
                                        f"{getattr(fut, 'op', 'an operation')} was pending"))

    # -- operations -----------------------------------------------------------------------
    def send(self, op: str, **args: Any) -> Future:
        """Send an operation without waiting; the Future resolves to the raw reply."""
        if not self.alive:
            raise HostError(f"{self.name} is not running; cannot send {op}")
        with self._lock:
            if self._stdout_closed:
                raise HostError(f"{self.name} closed its stdout (it is exiting); cannot send {op}")
            self._next_id += 1
            rid = self._next_id
            fut: Future = Future()
            self._pending[rid] = fut
            assert self.proc is not None and self.proc.stdin is not None
            self._note("invoke", op=op, req=rid, args=args)
            try:
                self.proc.stdin.write((json.dumps({"id": rid, "op": op, "args": args}) + "\n")
                                      .encode())
                self.proc.stdin.flush()
            except BrokenPipeError as exc:
                self._pending.pop(rid, None)
                raise HostError(f"{self.name} closed its stdin; cannot send {op}") from exc
        fut.op = op  # type: ignore[attr-defined]
        fut.req = rid  # type: ignore[attr-defined]
        return fut

    def result(self, fut: Future, timeout_s: float) -> Any:
        """Wait up to `timeout_s` seconds for a sent operation. Runtime errors raise
        RuntimeOpError; HostError when no reply comes in time, or when the host process is
        exiting with the operation unanswered (judged by its main thread, below)."""
        op = getattr(fut, "op", "?")
        deadline = Deadline(timeout_s, f"{self.name}'s reply to {op}")
        exiting_since: float | None = None
        while True:
            try:
                reply = fut.result(timeout=min(REPLY_SLICE_S, max(0.0, deadline.remaining())))
                break
            except FutureTimeout as exc:
                if deadline.expired():
                    self._note("fail", op=op, req=getattr(fut, "req", None),
                               error="harness timeout", timeout_s=timeout_s)
                    raise HostError(f"{self.name}: no reply to {op} within "
                                    f"{timeout_s:.0f}s") from exc
                # A host whose main thread has exited sends nothing more, but its stdout
                # need not reach EOF yet: a thread still in the kernel (seen: Node 0.9.7
                # aborting on a 32 GiB allocation stayed a zombie leader for 30 s) or a
                # child that inherited the pipe keeps it open. Replies it wrote before
                # exiting are still read; after EXIT_DRAIN_S none is coming.
                if exiting_since is None and self._exiting():
                    exiting_since = time.monotonic()
                if exiting_since is not None and \
                        time.monotonic() - exiting_since >= EXIT_DRAIN_S:
                    self._note("fail", op=op, req=getattr(fut, "req", None),
                               error="host exited", status=self._exit_word())
                    raise HostError(f"{self.name} exited ({self._exit_word()}) while {op} "
                                    "was pending") from exc
        if reply.get("ok"):
            self._note("ok", op=op, req=reply.get("id"), elapsed_s=reply.get("elapsed_s"),
                       result=reply.get("result"))
            return reply.get("result")
        self._note("fail", op=op, req=reply.get("id"), elapsed_s=reply.get("elapsed_s"),
                   error={k: v for k, v in reply["error"].items() if k != "traceback"})
        raise RuntimeOpError(op, reply["error"])

    def _exiting(self) -> bool:
        """True once the host's process has ended or its main thread has (a zombie leader
        whose other threads are still being torn down)."""
        if self.proc is None or self.proc.poll() is not None:
            return True
        try:
            return psutil.Process(self.proc.pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
        except psutil.Error:
            return False

    def _exit_word(self) -> str:
        rc = self.proc.poll() if self.proc is not None else None
        if rc is None:
            return "its main thread ended; the process not yet reaped"
        return f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"status {rc}"

    def call(self, op: str, timeout_s: float = 60.0, **args: Any) -> Any:
        return self.result(self.send(op, **args), timeout_s)

    def try_call(self, op: str, timeout_s: float = 60.0,
                 **args: Any) -> tuple[Any, RuntimeOpError | None]:
        """Like call, but a runtime error is returned instead of raised."""
        try:
            return self.call(op, timeout_s, **args), None
        except RuntimeOpError as exc:
            return None, exc

    # -- signals and exit -----------------------------------------------------------------
    def signal(self, sig: int) -> None:
        if self.alive:
            self._signal_t = time.monotonic()
            self._note("fault", fault="signal_host", signal=signal.Signals(sig).name, pid=self.pid)
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def wait_exit(self, timeout_s: float) -> ExitInfo:
        """Wait for the host to exit; elapsed is measured from the last signal sent."""
        assert self.proc is not None
        t_from = self._signal_t or time.monotonic()
        try:
            rc = self.proc.wait(timeout=Deadline(timeout_s, f"{self.name} to exit").remaining())
        except subprocess.TimeoutExpired as exc:
            raise HostError(f"{self.name} (pid {self.pid}) still running after "
                            f"{timeout_s:.0f}s") from exc
        info = ExitInfo(rc, time.monotonic() - t_from)
        self._note("observe", what="host_exit", returncode=rc, elapsed_s=round(info.elapsed_s, 3))
        return info

    def close(self, timeout_s: float = 10.0) -> int | None:
        """Ask the host to exit without a runtime shutdown (like a daemon that just leaves)."""
        if not self.alive:
            return self.proc.returncode if self.proc else None
        try:
            self.send("exit")
            return self.wait_exit(timeout_s).returncode
        except HostError:
            self.kill()
            return self.wait_exit(timeout_s).returncode

    def _note(self, kind: str, **fields: Any) -> None:
        if self.history is not None:
            self.history.append(kind, host=self.name, **fields)


class HostFactory:
    """Starts runtime hosts and owns them: `close_all` ends every one still running."""

    def __init__(self, env: RuntimeEnv, root: Path, history: EventLog | None = None,
                 homes_root: Path | None = None) -> None:
        self.env = env
        self.root = root
        # Homes may need short paths: 0.9.x binds unix sockets inside the home (SUN_LEN).
        self.homes_root = homes_root or root
        self.history = history
        self.hosts: list[RuntimeHost] = []
        self._homes = 0

    def new_home(self) -> Path:
        self._homes += 1
        home = self.homes_root / f"home{self._homes}"
        home.mkdir(parents=True, exist_ok=True)
        return home

    def start(self, home: Path | None = None, flavour: Flavour = BARE,
              name: str | None = None) -> RuntimeHost:
        home = home or self.new_home()
        name = name or f"host{len(self.hosts) + 1}"
        host = RuntimeHost(self.env, home, flavour, self.root / "hosts", self.history, name)
        self.hosts.append(host)
        return host.start()

    def restart(self, old: RuntimeHost, flavour: Flavour | None = None) -> RuntimeHost:
        """A new host on the same home (the old one must have exited: one runtime per home)."""
        if old.alive:
            raise HostError(f"{old.name} is still running; a home takes one runtime at a time")
        return self.start(old.home, flavour or old.flavour)

    def close_all(self, socket_root: Path | None = None) -> list[str]:
        """End every host still running; then, its runtimes gone, remove the runtime's socket
        entries (`socket_root`, default /tmp/bl-<uid>) of the boxes in our homes: a box not
        removed keeps its link until a remove that no runtime will now make, and it would
        point at nothing once the homes go. Returns the entries removed."""
        for host in self.hosts:
            if host.alive:
                host.kill()
                try:
                    host.wait_exit(10.0)
                except HostError:
                    pass
        if any(h.alive for h in self.hosts):
            return []               # a runtime that lives on may still use them
        return sockets.remove(sockets.into([self.homes_root], socket_root))
