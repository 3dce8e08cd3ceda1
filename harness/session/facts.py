"""The facts about this machine a verdict can depend on, recorded in every run folder (run.json,
summary.json) and shown at the top of the report.

On a nested-PVM host every VM dies about 17 s in; without a systemd user manager the runtime
cannot populate a box's cgroup (upstream #1239): both change what the runtime does.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import psutil

from harness.common.paths import PROJECT

KVM_PROVIDERS = ("kvm_intel", "kvm_amd", "kvm_pvm")


def kvm_provider(modules: Path = Path("/sys/module")) -> str | None:
    """The kernel module that provides /dev/kvm here (kvm_intel, kvm_amd, kvm_pvm), or None."""
    for name in KVM_PROVIDERS:
        if (modules / name).is_dir():
            return name
    return None


def own_cgroup(text: str | None = None) -> str:
    """This process's cgroup path (the unified hierarchy's line of /proc/self/cgroup)."""
    if text is None:
        try:
            text = Path("/proc/self/cgroup").read_text()
        except OSError:
            return "unreadable"
    lines = [ln.split(":", 2) for ln in text.splitlines() if ln.count(":") >= 2]
    unified = [ln[2] for ln in lines if ln[0] == "0"]
    return unified[0] if unified else (lines[0][2] if lines else "")


def under_systemd_user_manager(cgroup: str) -> bool:
    """Whether the cgroup lies under a systemd user manager (`user@UID.service`), the only
    place the runtime can create and populate a box's cgroup without root delegation."""
    return any(part.startswith("user@") and part.endswith(".service")
               for part in cgroup.split("/"))





def harness_commit(project: Path = PROJECT) -> str | None:
    """The harness's own git commit, with '-dirty' when its working tree has changes (a gate
    run from a tree being edited judges code no commit holds); None outside a checkout."""
    try:
        out = subprocess.run(["git", "-C", str(project), "describe", "--always", "--dirty",
                              "--abbrev=12"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def machine_facts(runtime: dict[str, Any] | None = None) -> dict[str, Any]:
    """Kernel, KVM provider, cores, memory (MiB), the harness's cgroup and whether a systemd
    user manager owns it, the harness's git commit, plus the runtime's identity when given
    (see RuntimeEnv.identity)."""
    cgroup = own_cgroup()
    return {
        "kernel": platform.release(),
        "kvm_provider": kvm_provider(),
        "kvm_device": os.path.exists("/dev/kvm"),
        "cores": os.cpu_count(),
        "memory_mib": psutil.virtual_memory().total // 2**20,
        "cgroup": cgroup,
        "systemd_user_manager": under_systemd_user_manager(cgroup),
        "runtime": runtime,
        "harness_commit": harness_commit(),
    }
