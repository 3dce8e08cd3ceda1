"""The hosts a run spreads over: xdist `--tx` specs as given, or a small TOML hosts file that
turns into them, checked before anything starts (a bad spec is one line and exit 2).

A remote host runs the harness from its own checkout, so its spec names that checkout's
interpreter (`//python=`) and folder (`//chdir=`); the same code on every host is checked when
the hosts are prepared (harness.jobs.fleet.prepare). Hosts file:

    python = "/srv/boxlite-chaos/.venv/bin/python"   # defaults for every [[host]]
    chdir = "/srv/boxlite-chaos"
    workers = 2

    [[host]]
    name = "kvm-a"                  # how the report names it (default: its ssh destination)
    ssh = "ci@gate-runner.example"             # destination, or an alias of an ssh_config
    port = 22                       # optional, like identity, known_hosts, ssh_config
    identity = "/home/ci/.ssh/id_ed25519"
    workers = 4                     # xdist workers on this host
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import execnet

from harness.common.errors import UsageError

# Name of the XSpec key that carries a host's name to the controller's hooks (execnet keeps
# keys it does not know as attributes of the spec, and ignores them).
NAME_KEY = "bxc_host"
# A fleet run's report folder names its hosts, their facts and what became of them here.
HOSTS_FILE = "hosts.json"
# A lost host is noticed within about ServerAliveInterval * ServerAliveCountMax seconds, not
# when TCP gives up; BatchMode: a missing key fails at once instead of asking for a password.
SSH_DEFAULTS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3")
HOST_KEYS = {"name", "ssh", "port", "identity", "known_hosts", "ssh_config", "python", "chdir",
             "workers"}
DEFAULT_KEYS = {"python", "chdir", "workers", "ssh_config", "identity", "known_hosts"}


@dataclass(frozen=True)
class Host:
    """One host of a run: its name, its execnet spec (without the worker count) and how many
    xdist workers it runs."""

    name: str
    spec: str
    workers: int = 1

    @property
    def remote(self) -> bool:
        return not execnet.XSpec(self.spec).popen

    def tx(self) -> str:
        """The `--tx` argument for xdist."""
        return f"{self.workers}*{self.spec}" if self.workers > 1 else self.spec


def host_name(spec: Any) -> str:
    """The name of the host an execnet spec points at: its bxc_host key, else its ssh
    destination (the last word of `ssh=`), else its socket, else 'local'."""
    name = getattr(spec, NAME_KEY, None)
    if name:
        return str(name)
    if getattr(spec, "ssh", None):
        return str(spec.ssh).split()[-1]
    if getattr(spec, "socket", None):
        return f"socket {spec.socket}"
    return "local"


def parse_tx(text: str) -> Host:
    """One `--tx` spec ('[N*]popen|ssh=...|socket=...[//key=value...]') as a Host; UsageError
    when it is not one execnet could start, or when a remote one lacks python= or chdir=."""
    count, sep, spec = text.partition("*")
    workers = 1
    if sep and count.strip().isdigit():
        workers = int(count)
    else:
        spec = text
    if workers < 1:
        raise UsageError(f"--tx {text!r}: {workers} workers; give 1 or more")
    try:
        xs = execnet.XSpec(spec)
    except (ValueError, AttributeError) as exc:
        raise UsageError(f"--tx {text!r}: not an execnet spec ({exc})") from None
    kinds = [k for k in ("popen", "ssh", "socket", "vagrant_ssh") if getattr(xs, k, None)]
    if len(kinds) != 1:
        raise UsageError(f"--tx {text!r}: expected one of popen, ssh=DEST or socket=HOST:PORT "
                         "at its start (e.g. 'ssh=ci@gate-runner.example"
                         "//python=/srv/bxc/.venv/bin/python//chdir=/srv/bxc')")
    if kinds != ["popen"]:
        missing = [k for k in ("python", "chdir") if not getattr(xs, k, None)]
        if missing:
            raise UsageError(
                f"--tx {text!r}: a remote host runs the harness from its own checkout; give "
                + " and ".join(f"//{k}=" for k in missing)
                + " (that checkout's .venv/bin/python, and the checkout's folder)")
    return Host(host_name(xs), spec, workers)


def _word(host: str, key: str, value: Any) -> str:
    text = str(value)
    if not text or re.search(r"\s|//", text):
        raise UsageError(f"hosts file: host {host!r}: {key} = {text!r}: expected one word "
                         "without spaces or '//' (it goes into an execnet spec)")
    return text


def host_from_table(entry: dict[str, Any], defaults: dict[str, Any], where: str) -> Host:
    """One [[host]] table (over the file's defaults) as a Host."""
    unknown = set(entry) - HOST_KEYS
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {sorted(unknown)}; known: "
                         f"{sorted(HOST_KEYS)}")
    t = {**defaults, **entry}
    if "ssh" not in t:
        raise UsageError(f"{where}: no ssh = \"user@host\" (or an ssh_config alias)")
    name = _word(where, "name", t.get("name", t["ssh"]))
    for key in ("python", "chdir"):
        if key not in t:
            raise UsageError(f"{where} ({name}): no {key} = ... (give it here or at the top "
                             "of the file: the host's checkout and its .venv/bin/python)")
    workers = t.get("workers", 1)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise UsageError(f"{where} ({name}): workers = {workers!r}: expected 1 or more")
    opts = list(SSH_DEFAULTS)
    if "port" in t:
        port = t["port"]
        if not isinstance(port, int) or not 0 < port < 65536:
            raise UsageError(f"{where} ({name}): port = {port!r}: expected 1-65535")
        opts += ["-p", str(port)]
    if "identity" in t:
        opts += ["-i", _word(name, "identity", Path(t["identity"]).expanduser()),
                 "-o", "IdentitiesOnly=yes"]
    if "known_hosts" in t:
        opts += ["-o", "UserKnownHostsFile="
                 + _word(name, "known_hosts", Path(t["known_hosts"]).expanduser()),
                 "-o", "StrictHostKeyChecking=yes"]
    spec = f"ssh={' '.join(opts)} {_word(name, 'ssh', t['ssh'])}"
    if "ssh_config" in t:
        spec += f"//ssh_config={_word(name, 'ssh_config', Path(t['ssh_config']).expanduser())}"
    spec += (f"//python={_word(name, 'python', t['python'])}"
             f"//chdir={_word(name, 'chdir', t['chdir'])}//{NAME_KEY}={name}")
    return Host(name, spec, workers)


def load_hosts_file(path: Path) -> list[Host]:
    """A TOML hosts file (see the module's docstring) as Hosts; UsageError naming the file
    and the problem otherwise."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"hosts file {path}: cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"hosts file {path}: not TOML: {exc}") from None
    entries = data.get("host")
    if not isinstance(entries, list) or not entries or \
            not all(isinstance(e, dict) for e in entries):
        raise UsageError(f"hosts file {path}: expected one or more [[host]] tables")
    unknown = set(data) - DEFAULT_KEYS - {"host"}
    if unknown:
        raise UsageError(f"hosts file {path}: unknown top-level key(s) {sorted(unknown)}; "
                         f"defaults may be {sorted(DEFAULT_KEYS)}")
    defaults = {k: v for k, v in data.items() if k != "host"}
    return [host_from_table(e, defaults, f"hosts file {path}, host #{n}")
            for n, e in enumerate(entries, start=1)]


def resolve_hosts(tx: list[str] | None, hosts_file: str | None) -> list[Host]:
    """The hosts of a run from `--tx` specs and/or a hosts file; names must be unique (they
    name the hosts' folders and lines in the report)."""
    hosts = [parse_tx(t) for t in tx or []]
    if hosts_file:
        hosts += load_hosts_file(Path(hosts_file))
    seen: dict[str, Host] = {}
    for h in hosts:
        if h.name in seen and h.remote:
            raise UsageError(f"host {h.name!r} is given twice; give each host once (with "
                             "N* or workers = N for more workers on it)")
        seen[h.name] = h
    return hosts
