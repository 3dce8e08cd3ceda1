"""`boxlite-chaos doctor`: can this machine run each tier, and if not, exactly why.

The boot probe is a real boot attempt of the test image through the runtime under test; its
result is cached per kernel boot and runtime version, since a host does not change underneath.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.common.errors import HarnessError
from harness.common.paths import cache_root, locked
from harness.observe.logs import shim_stderr
from harness.runtime.host import BARE, HostFactory, RuntimeOpError
from harness.runtime.image import busybox_image
from harness.runtime.spec import RuntimeEnv, ensure_runtime

BOOT_PROBE_TIMEOUT_S = 120.0


def kvm_path() -> Path:
    # Overridable so the missing-/dev/kvm error can be shown without removing the device.
    return Path(os.environ.get("BOXLITE_CHAOS_KVM", "/dev/kvm"))


@dataclass
class Finding:
    name: str
    ok: bool
    detail: str


@dataclass
class DoctorReport:
    findings: list[Finding] = field(default_factory=list)
    tiers: dict[str, str | None] = field(default_factory=dict)   # tier -> skip reason or None

    def add(self, name: str, ok: bool, detail: str) -> Finding:
        f = Finding(name, ok, detail)
        self.findings.append(f)
        return f

    def reason(self, tier: str) -> str | None:
        return self.tiers.get(tier, f"unknown tier {tier!r}")

    def to_json(self) -> dict[str, Any]:
        return {"findings": [asdict(f) for f in self.findings], "tiers": self.tiers}

    def render(self) -> str:
        lines = [f"{'ok ' if f.ok else 'NO '} {f.name}: {f.detail}" for f in self.findings]
        for tier, why in self.tiers.items():
            lines.append(f"tier {tier}: " + ("runs" if why is None else f"skipped - {why}"))
        return "\n".join(lines)


def check_kvm() -> tuple[bool, str]:
    path = kvm_path()
    if not path.exists():
        return False, f"{path} is missing: this host offers no KVM (enable virtualisation)"
    if not stat.S_ISCHR(path.stat().st_mode):
        return False, f"{path} exists but is not a character device"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        os.close(fd)
    except OSError as exc:
        return False, f"{path} cannot be opened read-write: {exc.strerror}"
    return True, f"{path} present and opens read-write"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"


def boot_probe(env: RuntimeEnv, refresh: bool = False) -> tuple[bool, str]:
    """Try to boot one micro-VM; cached per kernel boot and runtime version."""
    cache = cache_root() / "doctor" / f"boot-{env.version}-{_boot_id()}.json"
    with locked(cache.with_suffix(".lock")):
        if cache.is_file() and not refresh:
            data = json.loads(cache.read_text())
            return data["boots"], data["detail"] + " (cached)"
        boots, detail = _boot_once(env)
        cache.write_text(json.dumps({"boots": boots, "detail": detail}))
        return boots, detail


def _boot_once(env: RuntimeEnv) -> tuple[bool, str]:
    image = busybox_image()
    with tempfile.TemporaryDirectory(prefix="boxlite-chaos-doctor-") as tmp:
        factory = HostFactory(env, Path(tmp))
        try:
            host = factory.start(flavour=BARE)
            t0 = time.monotonic()
            box = host.call("create", timeout_s=60, options={
                "rootfs_path": str(image.path), "auto_remove": False})["id"]
            try:
                host.call("start", timeout_s=BOOT_PROBE_TIMEOUT_S, box_id=box)
            except RuntimeOpError as exc:
                stderr = shim_stderr(host.home, box).strip().splitlines()
                tail = f"; shim stderr ends: {stderr[-1][:200]}" if stderr else ""
                return False, (f"a micro-VM does not boot here: {exc.type}: {exc.message} "
                               f"(after {time.monotonic() - t0:.1f}s){tail}")
            booted_s = time.monotonic() - t0
            try:
                out = host.call("exec", timeout_s=60, box_id=box, cmd="echo", args=["booted"],
                                exec_timeout_s=30)
                said = f"; exec said {out['stdout'].strip()!r}"
            except RuntimeOpError as exc:
                said = f"; exec failed: {exc.message}"
            host.call("stop", timeout_s=60, box_id=box)
            return True, f"a micro-VM booted in {booted_s:.1f}s{said}"
        except HarnessError as exc:
            return False, f"boot probe could not run: {exc}"
        finally:
            factory.close_all()


def run_doctor(spec: str, boot: bool = True, refresh: bool = False) -> DoctorReport:
    report = DoctorReport()
    report.add("kvm", *check_kvm())
    try:
        img = busybox_image()
        report.add("test image", True, f"{img.path} ({img.digest[:19]})")
    except HarnessError as exc:
        report.add("test image", False, str(exc))
    env = None
    try:
        env = ensure_runtime(spec)
        report.add("runtime", True, f"{spec} ready in {env.venv} (boxlite {env.version})")
    except HarnessError as exc:
        report.add("runtime", False, str(exc))
    ready = all(f.ok for f in report.findings)
    report.tiers["init"] = None if ready else "; ".join(
        f"{f.name}: {f.detail}" for f in report.findings if not f.ok)
    if not ready or env is None:
        report.tiers["booted"] = report.tiers["init"]
    elif not boot:
        report.tiers["booted"] = "boot probe not run (--no-boot)"
    else:
        boots, detail = boot_probe(env, refresh)
        report.add("boot", boots, detail)
        report.tiers["booted"] = None if boots else detail
    return report
