"""Hosts on this machine that share nothing the harness relies on: each an sshd bound to
127.0.0.1 on a port of its own, inside its own mount and pid namespaces, with a private /tmp
and home (so its own cache: ~/.cache/boxlite-chaos) and the checkout read-only. For the fleet's
self-tests and its measurements (`python -m harness.jobs.fleet.loopback 2` serves two until
Ctrl-C and prints their hosts file).

A host is gone with its namespace: killing the namespace's first process (its pid 1, by pid
and start time) makes the kernel kill every process in it, and its tmpfs mounts go with the
mount namespace. Root only (unshare, mount); traffic stays on loopback.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from harness.common.errors import SetupError
from harness.common.paths import PROJECT
from harness.common.wait import WaitTimeout, poll_until, wait_for

SSHD = Path("/usr/sbin/sshd")
START_S = 15.0
SERVE_S = 12 * 3600.0     # `python -m harness.jobs.fleet.loopback` serves at most this long
STOP_S = 10.0

# Run as the namespace's pid 1 (through sh): bind the host's own ssh folder over /etc/ssh
# before /tmp (where that folder lives) is covered, then a private /tmp and home, and the
# checkout read-only: a host writes only its own /tmp and home. What must stay readable under
# the covered folders (the interpreter the checkout's virtualenv links to) is carried over
# read-only through the ssh folder: $4... are those paths.
NAMESPACE_SCRIPT = r"""
set -e
cfg=$1; project=$2; sshd=$3; shift 3
i=0
for keep in "$@"; do
  mkdir -p "$cfg/keep/$i"; mount --bind "$keep" "$cfg/keep/$i"
  mount -o remount,bind,ro "$cfg/keep/$i"; i=$((i+1))
done
mount --rbind "$cfg" /etc/ssh
mount -t tmpfs -o mode=1777,size=4g bxc-host-tmp /tmp
mount -t tmpfs -o mode=0700,size=4g bxc-host-home /root
i=0
for keep in "$@"; do
  mkdir -p "$keep"; mount --bind "/etc/ssh/keep/$i" "$keep"; i=$((i+1))
done
mount --bind "$project" "$project"
mount -o remount,bind,ro "$project"
mkdir -p /run/sshd
exec "$sshd" -D -e -f /etc/ssh/sshd_config
"""
COVERED = (Path("/tmp"), Path("/root"))


def carried(project: Path = PROJECT) -> list[str]:
    """What a host must still read under its private /tmp and home: the interpreter this
    checkout's virtualenv is made from (pyenv's lives in ~/.pyenv), and the checkout itself
    when it lives there (a CI clone in /tmp: without it the host's mount of the checkout
    failed with 'mount point does not exist')."""
    out: list[str] = []
    for path in (Path(os.path.realpath(sys.base_prefix)), Path(os.path.realpath(project))):
        if any(path.is_relative_to(c) for c in COVERED) and str(path) not in out:
            out.append(str(path))
    return out

SSHD_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey /etc/ssh/host_ed25519
AuthorizedKeysFile /etc/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PidFile none
MaxStartups 32
MaxSessions 32
LogLevel ERROR
"""


def missing() -> str | None:
    """Why loopback hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "loopback hosts need root (unshare --mount --pid, mount)"
    for tool in ("unshare", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not SSHD.is_file():
        return f"{SSHD} is missing (apt-get install openssh-server)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


@dataclass
class LoopbackHost:
    """One host: its sshd in namespaces of its own. `start()` waits until it takes logins;
    `kill()` ends its namespace (everything in it); `stop()` also waits for unshare."""

    name: str
    folder: Path                # its ssh folder (keys, config) on this machine
    client_key: Path
    port: int = 0
    unshare: subprocess.Popen | None = None
    init: tuple[int, float] | None = None       # the namespace's pid 1: (pid, start time)
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.folder.parent / f"{self.name}.sshd.log"

    def start(self) -> LoopbackHost:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"bxc {self.name}",
              "-f", str(self.folder / "host_ed25519")])
        shutil.copy(self.client_key.with_suffix(".pub"), self.folder / "authorized_keys")
        self.port = free_port()
        (self.folder / "sshd_config").write_text(SSHD_CONFIG.format(port=self.port))
        self.unshare = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "--propagation",
             "private", "--kill-child=SIGKILL", "--", "/bin/sh", "-c", NAMESPACE_SCRIPT,
             "sh", str(self.folder), str(PROJECT), str(SSHD), *carried()],
            stdin=subprocess.DEVNULL, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
            start_new_session=True)
        try:
            self.init = wait_for(self._init, START_S, f"host {self.name}'s namespace to start",
                                 0.05)
            wait_for(self._listening, START_S, f"host {self.name}'s sshd on 127.0.0.1:"
                       f"{self.port}", 0.1)
        except WaitTimeout as exc:
            self.stop()
            raise SetupError(f"{exc}; its log: {self._log_tail()}") from None
        return self

    def _init(self) -> tuple[int, float] | None:
        if self.unshare is None or self.unshare.poll() is not None:
            raise SetupError(f"host {self.name}: unshare exited ({self._log_tail()})")
        try:
            kids = psutil.Process(self.unshare.pid).children()
            return (kids[0].pid, kids[0].create_time()) if kids else None
        except psutil.Error:
            return None

    def _listening(self) -> bool:
        if self.unshare is None or self.unshare.poll() is not None:
            raise SetupError(f"host {self.name}: its sshd exited ({self._log_tail()})")
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-3:]) or "empty"
        return "no log"

    def processes(self) -> list[psutil.Process]:
        """Every process in this host's pid namespace (its sshd and what it started)."""
        if self.init is None:
            return []
        ns = pid_namespace(self.init[0])
        if ns is None:
            return []
        out = []
        for p in psutil.process_iter():
            if pid_namespace(p.pid) == ns:
                out.append(p)
        return out

    def alive(self) -> bool:
        if self.init is None:
            return False
        try:
            return psutil.Process(self.init[0]).create_time() == self.init[1]
        except psutil.Error:
            return False

    def kill(self) -> None:
        """The host dies at once: SIGKILL of its namespace's pid 1 (by pid and start time)."""
        if self.alive():
            assert self.init is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.init[0], signal.SIGKILL)

    def cut(self) -> list[int]:
        """Its ssh connections drop while the host lives on: SIGKILL of the sshd processes
        that serve them (its listener's children, by pid and start time). What ran through
        them is orphaned on the host. Returns their pids."""
        if not self.alive():
            return []
        assert self.init is not None
        ns = pid_namespace(self.init[0])
        cut = []
        for p in self.processes():
            try:
                if p.ppid() != self.init[0] or pid_namespace(p.pid) != ns:
                    continue
                if p.is_running():          # still that process (pid and start time)
                    os.kill(p.pid, signal.SIGKILL)
                    cut.append(p.pid)
            except (psutil.Error, ProcessLookupError):
                continue
        return cut

    def stop(self) -> None:
        self.kill()
        if self.unshare is not None:
            try:
                self.unshare.wait(STOP_S)
            except subprocess.TimeoutExpired:
                self.unshare.kill()         # our own child, by its Popen
                self.unshare.wait(STOP_S)

    def hosts_table(self, workers: int = 1) -> str:
        """This host's [[host]] table for a hosts file (harness.jobs.fleet.hosts)."""
        return (f'[[host]]\nname = "{self.name}"\nssh = "root@127.0.0.1"\nport = {self.port}\n'
                f'identity = "{self.client_key}"\n'
                f'known_hosts = "{self.folder.parent / "known_hosts"}"\nworkers = {workers}\n')


class LoopbackHosts:
    """N loopback hosts under `folder` (keys, configs, logs, the hosts file), started together
    and torn down together (also when a start fails)."""

    def __init__(self, folder: Path, n: int, prefix: str = "host") -> None:
        why = missing()
        if why:
            raise SetupError(why)
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.key = self.folder / "client_ed25519"
        self.hosts = [LoopbackHost(f"{prefix}-{chr(ord('a') + i)}", self.folder / f"{prefix}-"
                                   f"{chr(ord('a') + i)}", self.key) for i in range(n)]

    def __enter__(self) -> LoopbackHosts:
        try:
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bxc client",
                  "-f", str(self.key)])
            for h in self.hosts:
                h.start()
            (self.folder / "known_hosts").write_text("".join(
                f"[127.0.0.1]:{h.port} {(h.folder / 'host_ed25519.pub').read_text()}"
                for h in self.hosts))
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for h in self.hosts:
            h.stop()

    def hosts_file(self, workers: int = 1, python: str | None = None,
                   chdir: Path = PROJECT) -> Path:
        """A hosts file naming every host, each running the checkout's interpreter."""
        python = python or str(PROJECT / ".venv" / "bin" / "python")
        path = self.folder / "hosts.toml"
        path.write_text(f'python = "{python}"\nchdir = "{chdir}"\n\n'
                        + "\n".join(h.hosts_table(workers) for h in self.hosts))
        return path


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise SetupError(f"{argv[0]} failed: {(proc.stderr or proc.stdout).strip()[:300]}")


def main(argv: list[str] | None = None) -> int:
    """Serve N loopback hosts until interrupted; print their hosts file."""
    args = argv if argv is not None else sys.argv[1:]
    n = int(args[0]) if args else 2
    workers = int(args[1]) if len(args) > 1 else 1
    folder = Path(args[2]) if len(args) > 2 else Path("/tmp") / f"bxc-loopback-{os.getpid()}"
    with LoopbackHosts(folder, n) as hosts:
        path = hosts.hosts_file(workers)
        print(f"hosts file: {path}", flush=True)
        for h in hosts.hosts:
            print(f"{h.name}: 127.0.0.1:{h.port}, namespace pid 1 = {h.init}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            ended = poll_until(lambda: not all(h.alive() for h in hosts.hosts), SERVE_S,
                               "^C, or one of the hosts to end", interval_s=1.0)
            print("a host ended; stopping the others" if ended else
                  f"served {SERVE_S / 3600:.0f} h; stopping the hosts", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
