"""The gate over two hosts on this machine, one of them killed mid-run: each host an sshd on
127.0.0.1 in its own mount and pid namespaces, with a private /tmp and home (its own cache)
and the checkout read-only (harness.jobs.fleet.loopback). About 1 min on 2 cores: each host
builds its runtime's virtualenv (~15 s, at once), then two short scenarios; then one soak
cycle on one host.

Skips without root, sshd (apt-get install openssh-server) or /dev/kvm (the init tier).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.common.paths import PROJECT
from harness.common.wait import poll_until, wait_for
from harness.jobs.fleet.loopback import LoopbackHosts, carried
from harness.jobs.fleet.loopback import missing as loopback_missing
from harness.leftovers import markers
from harness.session.doctor import check_kvm

WHY = loopback_missing() or (None if check_kvm()[0] else f"the gate needs {check_kvm()[1]}")
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"loopback hosts: {WHY}")


@pytest.fixture
def loopback_hosts(tmp_path: Path):
    """Two hosts, torn down (their namespaces killed) however the test ends."""
    with LoopbackHosts(tmp_path / "hosts", 2) as hs:
        yield hs
    assert not any(h.alive() for h in hs.hosts)


def ssh(hs: LoopbackHosts, host, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-p", str(host.port), "-i", str(hs.key), "-o", "IdentitiesOnly=yes",
         "-o", f"UserKnownHostsFile={hs.folder / 'known_hosts'}", "-o", "BatchMode=yes",
         "root@127.0.0.1", command], capture_output=True, text=True, timeout=30)


def results(report: Path) -> dict[str, dict]:
    try:
        lines = (report / "results.jsonl").read_text().splitlines()
    except OSError:
        return {}
    return {r["nodeid"]: r for r in map(json.loads, lines)}


def test_gate_over_two_hosts_reports_a_lost_host_as_unknown(loopback_hosts, tmp_path) -> None:
    hs = loopback_hosts
    report = tmp_path / "report"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", markers.OWNER_ENV, markers.RUN_ENV))
           and k != "BOXLITE_CHAOS_REPORT"}
    gate = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "gate", "--hosts", str(hs.hosts_file(1)),
         "--report", str(report), "--scenario", "retry_remove", "--scenario", "boot_failure",
         "-k", "retry or exit"], cwd=tmp_path, env=env, stdout=open(tmp_path / "gate.log", "wb"),
        stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # The short scenario is shipped back; the other host is still in its boot failure.
        wait_for(lambda: any(r["outcome"] == "passed" for r in results(report).values()),
                 240, "the short scenario's result")
        busy = wait_for(lambda: next((h for h in hs.hosts if any(
            "host_main.py" in " ".join(p.cmdline()) for p in h.processes())), None),
            60, "a host running the long scenario")
        busy.kill()
        rc = gate.wait(240)
    finally:
        if gate.poll() is None:
            gate.kill()             # our own child, by its Popen
            gate.wait(30)
    log = (tmp_path / "gate.log").read_text(errors="replace")
    assert rc == 1, log[-3000:]
    res = results(report)
    [passed] = [r for r in res.values() if r["outcome"] == "passed"]
    [lost] = [r for r in res.values() if r["outcome"] == "unknown"]
    assert "retry_remove" in passed["nodeid"] and passed["host"] != busy.name
    assert (Path(passed["workdir"]) / "history.jsonl").is_file()
    assert Path(passed["workdir"]).parent == report / "scenarios"
    [j] = lost["judgements"]
    assert j["check"] == "host_reachable" and j["status"] == "unknown"
    assert f"host {busy.name} was lost while running it" in j["summary"], j
    assert "was lost while running it" in (report / "report.html").read_text()
    assert busy.name in json.loads((report / "hosts.json").read_text())["lost"]
    # Nothing left: the killed host is gone whole; the other runs its sshd only, and its /tmp
    # holds nothing of the run (bl-<uid> is the runtime's own folder of socket links).
    assert busy.processes() == []
    [other] = [h for h in hs.hosts if h is not busy]
    only_sshd(other)
    listing = ssh(hs, other, "ls -A /tmp")
    assert listing.returncode == 0, listing
    assert set(listing.stdout.split()) <= {f"bl-{os.getuid()}", *carried_into_tmp()}, \
        listing.stdout


def only_sshd(host) -> None:
    """Wait until the host runs its sshd only: the server side of the run's last ssh session
    may still be closing a moment after the run's client has exited."""
    poll_until(lambda: [p.pid for p in host.processes()] == [host.init[0]], 10,
               f"host {host.name} to run its sshd only")
    left = host.processes()
    assert [p.pid for p in left] == [host.init[0]], left       # repr: pid, name, status


def carried_into_tmp() -> set[str]:
    """The top folders under /tmp that the host keeps read-only for the checkout (a CI clone
    under /tmp) and its interpreter: carried in, not left by the run."""
    return {Path(p).relative_to("/tmp").parts[0] for p in carried()
            if Path(p).is_relative_to("/tmp")}


def test_a_cut_drops_connections_and_the_host_lives(tmp_path) -> None:
    with LoopbackHosts(tmp_path / "hosts", 1) as hs:
        [h] = hs.hosts
        t0 = time.monotonic()
        client = subprocess.Popen(
            ["ssh", "-p", str(h.port), "-i", str(hs.key), "-o", "IdentitiesOnly=yes",
             "-o", f"UserKnownHostsFile={hs.folder / 'known_hosts'}", "-o", "BatchMode=yes",
             "root@127.0.0.1", "sleep 30"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: len(h.processes()) > 2, 20, "the ssh session")
            assert h.cut()
            assert client.wait(10) != 0
        finally:
            if client.poll() is None:
                client.kill()
                client.wait(10)
        assert time.monotonic() - t0 < 25 and h.alive()
        # The checkout is read-only there, and the home is its own: no ~/.boxlite, no cache
        # (only the interpreter carried over, read-only, where it lives under the home).
        out = ssh(hs, h, f"touch {PROJECT}/x; ls -A ~")
        assert "Read-only file system" in out.stderr
        assert not {".boxlite", ".cache"} & set(out.stdout.split()), out.stdout
    assert not h.alive() and h.processes() == []


def test_soak_on_a_host_comes_back_whole(tmp_path) -> None:
    """One soak cycle on one host: its folder and verdicts come back, judged (not unknown),
    and the host keeps nothing of it."""
    with LoopbackHosts(tmp_path / "hosts", 1) as hs:
        [h] = hs.hosts
        report = tmp_path / "report"
        proc = subprocess.run(
            [sys.executable, "-m", "harness.cli", "soak", "--cycles", "1", "--shrink-s", "0",
             "--seed", "7", "--hosts", str(hs.hosts_file(1)), "--report", str(report)],
            cwd=tmp_path, capture_output=True, text=True, timeout=400)
        assert proc.returncode in (0, 1), proc.stdout[-2000:] + proc.stderr[-2000:]
        line = results(report)[f"soak@{h.name}"]
        assert line["outcome"] in ("passed", "failed") and line["host"] == h.name, line
        assert (Path(line["workdir"]) / "history.jsonl").is_file()
        assert (report / "hosts" / h.name / "soak.json").is_file()
        assert (report / "report.html").is_file()
        only_sshd(h)
        listing = ssh(hs, h, "ls -A /tmp")
        assert set(listing.stdout.split()) <= {f"bl-{os.getuid()}", *carried_into_tmp()}, \
        listing.stdout
