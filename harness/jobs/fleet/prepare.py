"""Each host prepares what its scenarios need before any worker starts: the runtime's
virtualenv and the busybox image, in its own cache (the same spec-keyed, locked cache a local
run uses), and says what it is (its facts, its checkout's fingerprint). One execnet gateway per
host, all hosts at once; a host that cannot be reached or prepared stops the run before it
starts, in one line naming the host.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from pathlib import Path
from typing import Any

from harness.common.errors import SetupError
from harness.common.paths import PROJECT
from harness.jobs.fleet.hosts import Host

PREPARE_S = 900.0           # a cold host downloads and installs the runtime
# What the harness runs from: the same on every host, or its verdicts are not the gate's.
FINGERPRINTED = ("harness", "scenarios", "fixtures", "pyproject.toml")
SUFFIXES = {".py", ".toml", ".json", ".jsonl", ".j2", ".txt", ".sh"}

# Run on the host (execnet.remote_exec): the checkout is its working folder.
REMOTE_SOURCE = """
from harness.jobs.fleet import prepare
channel.send(prepare.on_host(channel.receive()))
"""


def fingerprint(root: Path = PROJECT) -> dict[str, str]:
    """sha256 of each file the harness runs from (relative path -> digest)."""
    out: dict[str, str] = {}
    for top in FINGERPRINTED:
        base = root / top
        paths = [base] if base.is_file() else sorted(base.rglob("*")) if base.is_dir() else []
        for path in paths:
            if path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts:
                out[path.relative_to(root).as_posix()] = hashlib.sha256(
                    path.read_bytes()).hexdigest()
    return out


def differences(mine: dict[str, str], theirs: dict[str, str], limit: int = 5,
                also_mine: dict[str, str] | None = None) -> list[str]:
    """The files whose content differs, or that only one side has (at most `limit`). With
    `also_mine` (this checkout read again later), a file matching either reading is the same:
    a file edited while the hosts were read is not a different checkout."""
    later = mine if also_mine is None else also_mine
    out = []
    for path in sorted(set(mine) | set(theirs)):
        if mine.get(path) != theirs.get(path) and later.get(path) != theirs.get(path):
            out.append(path + ("" if path in mine and path in theirs
                               else " (only here)" if path in mine else " (only there)"))
    return out[:limit] + ([f"... {len(out) - limit} more"] if len(out) > limit else [])


def on_host(request: dict[str, Any]) -> dict[str, Any]:
    """On the host: build (or find) the runtime and the image; say what this host is."""
    from harness.common.errors import HarnessError
    from harness.runtime.image import busybox_image
    from harness.runtime.spec import ensure_runtime
    from harness.session.doctor import check_kvm
    from harness.session.facts import machine_facts
    t0 = time.monotonic()
    facts: dict[str, Any] = {"hostname": socket.gethostname(), "fingerprint": fingerprint()}
    try:
        env = ensure_runtime(request["runtime"])
        busybox_image()
    except HarnessError as exc:
        return {**facts, "error": str(exc)}
    kvm, why = check_kvm()
    return {**facts, "prepare_s": round(time.monotonic() - t0, 1), "kvm": kvm,
            "kvm_why": why, "runtime_version": env.version, "venv": str(env.venv),
            "machine": machine_facts(env.identity())}


def prepare_one(host: Host, runtime: str, timeout_s: float = PREPARE_S) -> dict[str, Any]:
    """Prepare one host through its own gateway; the facts it sent, or {"error": ...}."""
    import execnet
    t0 = time.monotonic()
    group = execnet.Group()
    try:
        gw = group.makegateway(host.spec)
        ch = gw.remote_exec(REMOTE_SOURCE)
        ch.send({"runtime": runtime})
        facts = ch.receive(timeout_s)
    except execnet.TimeoutError:
        return {"error": f"not prepared within {timeout_s:.0f} s"}
    except execnet.RemoteError as exc:
        text = str(exc).strip().splitlines()
        return {"error": f"preparing failed there: {text[-1] if text else exc!r}"}
    except (execnet.HostNotFound, OSError, EOFError) as exc:
        text = str(exc).strip().splitlines()
        return {"error": "the harness could not be started there over ssh (its stderr is "
                         f"above): {type(exc).__name__}: {text[-1] if text else exc!r}"}
    finally:
        group.terminate(timeout=5.0)
    facts["connect_and_prepare_s"] = round(time.monotonic() - t0, 1)
    return facts


def prepare_hosts(hosts: list[Host], runtime: str, timeout_s: float = PREPARE_S,
                  say: Any = print) -> dict[str, dict[str, Any]]:
    """Every remote host prepared at once; host name -> its facts. Raises SetupError naming
    each host that failed, that cannot run the init tier, or runs other code than this
    checkout."""
    remote = [h for h in hosts if h.remote]
    out: dict[str, dict[str, Any]] = {}
    before = fingerprint()

    def one(h: Host) -> None:
        out[h.name] = prepare_one(h, runtime, timeout_s)
    threads = [threading.Thread(target=one, args=(h,), name=f"prepare-{h.name}", daemon=True)
               for h in remote]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s + 30)
    after = fingerprint()
    problems = []
    for h in remote:
        facts = out.get(h.name) or {"error": "no answer"}
        if "error" in facts:
            problems.append(f"host {h.name}: {facts['error']}")
            continue
        diff = differences(before, facts.pop("fingerprint", {}), also_mine=after)
        if diff:
            problems.append(f"host {h.name}: its checkout differs from this one: "
                            + ", ".join(diff))
        elif not facts.get("kvm"):
            problems.append(f"host {h.name}: cannot run the gate: {facts.get('kvm_why')}")
        else:
            say(f"host {h.name}: ready ({facts['hostname']}, boxlite "
                f"{facts['runtime_version']}, prepared in {facts['connect_and_prepare_s']} s)")
    if problems:
        raise SetupError("; ".join(problems))
    return out
