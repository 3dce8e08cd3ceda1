"""Runtime specs ("boxlite==X.Y.Z" or "wheel:PATH") and the cached virtualenv each one gets.

The harness never imports boxlite itself: every runtime under test lives in its own virtualenv
so a fixed release, a pre-fix release and a local wheel can be driven side by side.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.common.errors import SpecError
from harness.common.paths import cache_root, locked

# The runtime a plain run judges: the latest release. Pinned here and nowhere else.
DEFAULT_SPEC = "boxlite==0.10.8"

_RELEASE = re.compile(r"^boxlite==(\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?)$")
_WHEEL_VERSION = re.compile(r"^boxlite-(\d+\.\d+\.\d+[^-]*)-")
INSTALL_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class RuntimeSpec:
    """What the user asked for: a release from PyPI or a wheel file."""

    text: str
    kind: str           # "release" | "wheel"
    version: str        # the boxlite version the spec installs
    wheel: Path | None = None

    @classmethod
    def parse(cls, text: str) -> RuntimeSpec:
        text = text.strip()
        m = _RELEASE.match(text)
        if m:
            return cls(text, "release", m.group(1))
        if text.startswith("wheel:"):
            path = Path(text[len("wheel:"):]).expanduser().resolve()
            if not path.is_file():
                raise SpecError(f"runtime spec {text!r}: wheel file {path} does not exist")
            m = _WHEEL_VERSION.match(path.name)
            if not m or path.suffix != ".whl":
                raise SpecError(
                    f"runtime spec {text!r}: {path.name} is not a boxlite wheel "
                    "(expected boxlite-X.Y.Z-...whl)")
            return cls(text, "wheel", m.group(1), path)
        raise SpecError(
            f"runtime spec {text!r} is not understood; use 'boxlite==X.Y.Z' or 'wheel:PATH'")

    @property
    def key(self) -> str:
        """Folder name of this spec's virtualenv; a rebuilt wheel gets a new one."""
        if self.kind == "release":
            return f"boxlite-{self.version}"
        assert self.wheel is not None
        digest = hashlib.sha256(self.wheel.read_bytes()).hexdigest()[:12]
        return f"wheel-{self.version}-{digest}"

    def requirement(self) -> str:
        return self.text if self.kind == "release" else str(self.wheel)


@dataclass(frozen=True)
class RuntimeEnv:
    """A ready virtualenv holding one runtime."""

    spec: RuntimeSpec
    venv: Path
    version: str        # as reported by the installed package
    wheel_sha256: str | None = None     # of the wheel pip installed (pip's install report)

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def identity(self) -> dict[str, str | None]:
        """What identifies the runtime under test: spec, version, and the sha256 of its wheel
        (from pip's install report; a virtualenv cached before the report was kept gives the
        sha256 of the installed distribution's RECORD instead, and says so)."""
        out: dict[str, str | None] = {"spec": self.spec.text, "version": self.version,
                                      "wheel_sha256": self.wheel_sha256}
        if self.wheel_sha256 is None:
            records = sorted(self.venv.glob("lib/python*/site-packages/boxlite-*.dist-info/RECORD"))
            if records:
                out["record_sha256"] = hashlib.sha256(records[0].read_bytes()).hexdigest()
        return out


def venv_root(cache: Path | None = None) -> Path:
    return (cache or cache_root()) / "venvs"


def ready_runtime(spec: RuntimeSpec | str, cache: Path | None = None) -> RuntimeEnv | None:
    """The spec's virtualenv if it is already built, without building it; None otherwise
    (also for a malformed spec: the caller that builds it reports that)."""
    try:
        if isinstance(spec, str):
            spec = RuntimeSpec.parse(spec)
        marker = venv_root(cache) / spec.key / ".boxlite-chaos-ready.json"
        ready = json.loads(marker.read_text())
    except (SpecError, OSError, ValueError):
        return None
    return RuntimeEnv(spec, marker.parent, ready["version"], ready.get("wheel_sha256"))


def ensure_runtime(spec: RuntimeSpec | str, cache: Path | None = None,
                   log=None) -> RuntimeEnv:
    """Return the virtualenv for `spec`, creating it once (under a lock shared by workers).

    Raises SpecError when the spec is malformed, or when the virtualenv cannot be created or
    the runtime installed into it (an unpublished version, no network); the half-made
    virtualenv is removed first, under the same lock, so the cache holds only ready ones.
    """
    if isinstance(spec, str):
        spec = RuntimeSpec.parse(spec)
    root = venv_root(cache)
    venv = root / spec.key
    marker = venv / ".boxlite-chaos-ready.json"
    with locked(root / f"{spec.key}.lock"):
        if marker.is_file():
            ready = json.loads(marker.read_text())
            return RuntimeEnv(spec, venv, ready["version"], ready.get("wheel_sha256"))
        shutil.rmtree(venv, ignore_errors=True)
        t0 = time.monotonic()
        try:
            _run([sys.executable, "-m", "venv", str(venv)], spec, "create the virtualenv")
            report = venv / "pip-install-report.json"
            _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                  "--disable-pip-version-check", "--report", str(report),
                  spec.requirement()], spec, "install the runtime")
            wheel_sha256 = installed_sha256(report) or (
                hashlib.sha256(spec.wheel.read_bytes()).hexdigest() if spec.wheel else None)
            out = _run([str(venv / "bin" / "python"), "-c",
                        "import importlib.metadata as m; print(m.version('boxlite'))"],
                       spec, "read the installed version")
            version = out.strip()
            marker.write_text(json.dumps({"spec": spec.text, "version": version,
                                          "wheel_sha256": wheel_sha256,
                                          "install_s": round(time.monotonic() - t0, 1)}))
        except BaseException:
            # Interrupted too (Ctrl-C in pip): a folder without its marker is never used, but
            # left behind it looks like a cached runtime to whoever lists the cache.
            shutil.rmtree(venv, ignore_errors=True)
            raise
        if log:
            log(f"runtime {spec.text}: virtualenv built in {time.monotonic() - t0:.1f}s")
        return RuntimeEnv(spec, venv, version, wheel_sha256)


def installed_sha256(report: Path) -> str | None:
    """The sha256 of the boxlite distribution in pip's `--report` JSON, or None."""
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return None
    for item in data.get("install", []):
        if (item.get("metadata") or {}).get("name", "").lower() == "boxlite":
            hashes = ((item.get("download_info") or {}).get("archive_info") or {}).get(
                "hashes") or {}
            return hashes.get("sha256")
    return None


def _run(argv: list[str], spec: RuntimeSpec, what: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
                              env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    except subprocess.TimeoutExpired as exc:
        raise SpecError(f"runtime spec {spec.text!r}: could not {what} within "
                        f"{INSTALL_TIMEOUT_S:.0f}s") from exc
    if proc.returncode != 0:
        err = proc.stderr.strip()
        if "No matching distribution" in err or "Could not find a version" in err:
            raise SpecError(f"runtime spec {spec.text!r}: boxlite {spec.version} is not a "
                            "published release (pip found no matching distribution)")
        tail = "\n".join(err.splitlines()[-5:])
        raise SpecError(f"runtime spec {spec.text!r}: could not {what}:\n{tail}")
    return proc.stdout
