"""The fleet's evidence on this machine: a gate subset over one loopback host and over two
(wall times), then over two with one host killed mid-run and with one host's connections cut
mid-run (what the report says, and what is left running in each host's namespace).

    .venv/bin/python tools/fleet_evidence.py OUT [WORKERS_PER_HOST [faults]]

Writes OUT/<run>/ (report folders) and prints one JSON object of figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from harness.jobs.fleet.loopback import LoopbackHost, LoopbackHosts

SUBSET = ["--scenario", "boot_failure", "--scenario", "shim_crash", "--scenario",
          "retry_remove", "--scenario", "guest_hang", "-k", "not guest_hang_at_boot"]


def listing(h: LoopbackHost, width: int = 90) -> list[str]:
    out = []
    for p in h.processes():
        try:
            out.append(f"{p.pid} {' '.join(p.cmdline())[:width]}")
        except Exception:  # noqa: BLE001 - gone meanwhile
            continue
    return out


def gate(hosts_file: Path, report: Path, fault=None) -> dict:
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "gate", "--hosts",
                             str(hosts_file), "--report", str(report), *SUBSET],
                            stdout=open(report.with_suffix(".log"), "wb"),
                            stderr=subprocess.STDOUT)
    faulted = None
    if fault is not None:
        host, how, after_s = fault
        while proc.poll() is None and faulted is None:
            busy = any("host_main.py" in line for line in listing(host, 10**4))
            if busy and time.monotonic() - t0 > after_s:
                faulted = {"at_s": round(time.monotonic() - t0, 1), "how": how,
                           "host": host.name, "its_processes": listing(host)}
                host.kill() if how == "kill" else host.cut()
            time.sleep(0.5)
    rc = proc.wait()
    wall = time.monotonic() - t0
    results = [json.loads(x) for x in (report / "results.jsonl").read_text().splitlines()]
    return {"rc": rc, "wall_s": round(wall, 1), "fault": faulted,
            "scenarios": [{"nodeid": r["nodeid"].split("::")[-1], "host": r.get("host"),
                           "outcome": r["outcome"], "wall_s": r.get("duration_s"),
                           "why": [j["summary"] for j in r["judgements"]
                                   if j["status"] == "unknown"]} for r in results]}


def main() -> int:
    out = Path(sys.argv[1])
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    out.mkdir(parents=True, exist_ok=True)
    figures: dict = {}
    with LoopbackHosts(out / "hosts", 2) as hs:
        both = hs.hosts_file(workers)
        one = out / "one-host.toml"
        text = both.read_text()
        one.write_text(text[:text.index("[[host]]", text.index("[[host]]") + 1)])
        if sys.argv[3:4] != ["faults"]:
            figures["one_host"] = gate(one, out / "one-host")
            figures["two_hosts"] = gate(both, out / "two-hosts")
        figures["two_hosts_one_killed"] = gate(both, out / "killed",
                                               (hs.hosts[1], "kill", 15.0))
        figures["left_after_kill"] = {h.name: listing(h) for h in hs.hosts}
    with LoopbackHosts(out / "hosts2", 2) as hs:
        figures["two_hosts_one_cut"] = gate(hs.hosts_file(workers), out / "cut",
                                            (hs.hosts[1], "cut", 15.0))
        time.sleep(2.0)
        figures["left_after_cut"] = {h.name: listing(h) for h in hs.hosts}
        figures["tmp_after_cut"] = {h.name: subprocess.run(
            ["ssh", "-p", str(h.port), "-i", str(hs.key), "-o", "IdentitiesOnly=yes", "-o",
             f"UserKnownHostsFile={hs.folder / 'known_hosts'}", "-o", "BatchMode=yes",
             "root@127.0.0.1", "ls -A /tmp"], capture_output=True, text=True,
            timeout=30).stdout.split() for h in hs.hosts}
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
