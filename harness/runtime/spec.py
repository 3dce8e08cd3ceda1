"""Runtime specs ("boxlite==X.Y.Z", "wheel:PATH", "npm:@boxlite-ai/boxlite@X.Y.Z[+native...]")
and the cached virtualenv (or npm folder, harness.runtime.npm) each one gets.

The harness never imports boxlite itself: every runtime under test lives in its own virtualenv
or npm folder, so a fixed release, a pre-fix release, a local wheel and the Node SDK can be
driven side by side. A spec names which host program runs it (`RuntimeEnv.host_argv`).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.common.errors import SpecError
from harness.common.paths import cache_root, locked
from harness.runtime import npm

# The runtime a plain run judges: the latest release. Pinned here and nowhere else.
DEFAULT_SPEC = "boxlite==0.10.8"

_RELEASE = re.compile(r"^boxlite==(\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?)$")
_WHEEL_VERSION = re.compile(r"^boxlite-(\d+\.\d+\.\d+[^-]*)-")
INSTALL_TIMEOUT_S = 600.0


HOST_DIR = Path(__file__).parent


@dataclass(frozen=True)
class RuntimeSpec:
    """What the user asked for: a release from PyPI, a wheel file, or the Node SDK from npm
    (with its own native binding, another published one, or a local `.node` file)."""

    text: str
    kind: str           # "release" | "wheel" | "npm"
    version: str        # the boxlite (core) version the spec installs
    wheel: Path | None = None
    npm: tuple[tuple[str, Any], ...] = ()   # npm specs: harness.runtime.npm.parse_npm's parts

    @property
    def sdk(self) -> str:
        """Which SDK embeds the runtime: "python" or "node"."""
        return "node" if self.kind == "npm" else "python"

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
        if text.startswith("npm:"):
            parts = npm.parse_npm(text)
            return cls(text, "npm", parts["version"], npm=tuple(parts.items()))
        raise SpecError(
            f"runtime spec {text!r} is not understood; use 'boxlite==X.Y.Z', 'wheel:PATH' or "
            f"'npm:{npm.SDK_PACKAGE}@X.Y.Z[+native@A.B.C|+native:FILE.node]'")

    @property
    def key(self) -> str:
        """Folder name of this spec's virtualenv; a rebuilt wheel gets a new one."""
        if self.kind == "release":
            return f"boxlite-{self.version}"
        if self.kind == "npm":
            return npm.npm_key(dict(self.npm))
        assert self.wheel is not None
        digest = hashlib.sha256(self.wheel.read_bytes()).hexdigest()[:12]
        return f"wheel-{self.version}-{digest}"

    def requirement(self) -> str:
        return self.text if self.kind == "release" else str(self.wheel)


@dataclass(frozen=True)
class RuntimeEnv:
    """A ready virtualenv holding one runtime."""

    spec: RuntimeSpec
    venv: Path          # the virtualenv, or the npm folder of a Node SDK runtime
    version: str        # as reported by the installed package (npm: the native binding's)
    wheel_sha256: str | None = None     # of the wheel pip installed (pip's install report)
    ready: dict[str, Any] = field(default_factory=dict, compare=False)  # npm: its ready marker

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def sdk(self) -> str:
        return self.spec.sdk

    def host_argv(self) -> list[str]:
        """The host program for this runtime, before its flags: host_main.py in the
        virtualenv, or host_main.mjs under node with the SDK's npm folder."""
        if self.sdk == "node":
            return [npm.node_path(), str(HOST_DIR / "host_main.mjs"), "--sdk", str(self.venv)]
        return [str(self.python), str(HOST_DIR / "host_main.py")]

    def host_env(self) -> dict[str, str]:
        """Environment the host program needs besides the harness's: the Node host loads the
        exact binding file this runtime was installed with."""
        if self.sdk == "node":
            return {"NAPI_RS_NATIVE_LIBRARY_PATH": self.ready["native"]}
        return {}

    def identity(self) -> dict[str, str | None]:
        """What identifies the runtime under test: spec, version, and the sha256 of its wheel
        (from pip's install report; a virtualenv cached before the report was kept gives the
        sha256 of the installed distribution's RECORD instead, and says so)."""
        out: dict[str, Any] = {"spec": self.spec.text, "version": self.version,
                               "wheel_sha256": self.wheel_sha256}
        if self.sdk == "node":
            out.update(sdk="node", native_sha256=self.ready.get("native_sha256"),
                       packages=self.ready.get("packages"), node=self.ready.get("node"))
            return out
        if self.wheel_sha256 is None:
            records = sorted(self.venv.glob("lib/python*/site-packages/boxlite-*.dist-info/RECORD"))
            if records:
                out["record_sha256"] = hashlib.sha256(records[0].read_bytes()).hexdigest()
        return out


# The Node SDK's builds on npm for Linux x64 (measured 2026-12-06): the native binding's
# versions, each with the wrapper it runs under (0.10.3 has no wrapper of its own and loads
# under 0.10.0's). 0.9.5 has no Linux binding.
NODE_BUILDS = {"0.9.7": "0.9.7", "0.10.0": "0.10.0", "0.10.3": "0.10.0"}


def counterpart(spec: RuntimeSpec | str) -> str | None:
    """The other SDK's spec carrying the same core version, for scenarios that drive one home
    through both SDKs: a Python release's Node build, a Node build's Python release. None
    where there is none (a Python release with no Node build, a wheel, a local `.node`)."""
    if isinstance(spec, str):
        spec = RuntimeSpec.parse(spec)
    if spec.kind == "release" and spec.version in NODE_BUILDS:
        wrapper = NODE_BUILDS[spec.version]
        native = "" if wrapper == spec.version else f"+native@{spec.version}"
        return f"npm:{npm.SDK_PACKAGE}@{wrapper}{native}"
    if spec.kind == "npm" and not dict(spec.npm)["native_file"]:
        return f"boxlite=={spec.version}"
    return None


def venv_root(cache: Path | None = None) -> Path:
    return (cache or cache_root()) / "venvs"


def npm_root(cache: Path | None = None) -> Path:
    """Where npm specs' folders go, beside npm's own download cache (`_npm-cache`)."""
    return (cache or cache_root()) / "npm"


def spec_root(spec: RuntimeSpec, cache: Path | None = None) -> Path:
    return npm_root(cache) if spec.kind == "npm" else venv_root(cache)


def ready_runtime(spec: RuntimeSpec | str, cache: Path | None = None) -> RuntimeEnv | None:
    """The spec's virtualenv if it is already built, without building it; None otherwise
    (also for a malformed spec: the caller that builds it reports that)."""
    try:
        if isinstance(spec, str):
            spec = RuntimeSpec.parse(spec)
        marker = spec_root(spec, cache) / spec.key / ".boxlite-chaos-ready.json"
        ready = json.loads(marker.read_text())
    except (SpecError, OSError, ValueError):
        return None
    return RuntimeEnv(spec, marker.parent, ready["version"], ready.get("wheel_sha256"), ready)


def ensure_runtime(spec: RuntimeSpec | str, cache: Path | None = None,
                   log=None) -> RuntimeEnv:
    """Return the virtualenv for `spec`, creating it once (under a lock shared by workers).

    Raises SpecError when the spec is malformed, or when the virtualenv cannot be created or
    the runtime installed into it (an unpublished version, no network); the half-made
    virtualenv is removed first, under the same lock, so the cache holds only ready ones.
    """
    if isinstance(spec, str):
        spec = RuntimeSpec.parse(spec)
    if spec.kind == "npm":
        return _ensure_npm(spec, cache, log)
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


def _ensure_npm(spec: RuntimeSpec, cache: Path | None, log) -> RuntimeEnv:
    """ensure_runtime for an npm spec: the same lock, ready marker and clean-up as a
    virtualenv (harness.runtime.npm.install does the work and says what it raises)."""
    root = npm_root(cache)
    folder = root / spec.key
    marker = folder / ".boxlite-chaos-ready.json"
    with locked(root / f"{spec.key}.lock"):
        if marker.is_file():
            ready = json.loads(marker.read_text())
            return RuntimeEnv(spec, folder, ready["version"], None, ready)
        shutil.rmtree(folder, ignore_errors=True)
        try:
            ready = npm.install(spec.text, dict(spec.npm), folder, root / "_npm-cache")
            marker.write_text(json.dumps(ready))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if log:
            log(f"runtime {spec.text}: npm folder built in {ready['install_s']:.1f}s")
        return RuntimeEnv(spec, folder, ready["version"], None, ready)


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
