"""Node SDK runtimes: `npm:@boxlite-ai/boxlite@X.Y.Z[+native@A.B.C | +native:FILE.node]` specs,
and the cached npm folder each one gets (package.json + package-lock.json pinning exact versions).

The Node host (host_main.mjs) loads the SDK from that folder and the native binding from the
exact `.node` file named here (NAPI_RS_NATIVE_LIBRARY_PATH), so which core runs is never left
to the SDK's loader. A spec's `version` is the version of the core it carries (the native
binding's), so version ranges of core bugs apply to both SDKs alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from harness.common.errors import SetupError, SpecError

SDK_PACKAGE = "@boxlite-ai/boxlite"
# The native binding's package for this machine (napi-rs names it by target triple).
NATIVE_PACKAGE = "@boxlite-ai/boxlite-linux-x64-gnu"
NATIVE_FILE = "boxlite.linux-x64-gnu.node"
NODE_MIN_MAJOR = 18                     # the SDK's `engines`
INSTALL_TIMEOUT_S = 600.0
_VERSION = r"\d+\.\d+\.\d+(?:-[0-9A-Za-z.]+)?"
_NPM_SPEC = re.compile(
    rf"^npm:{re.escape(SDK_PACKAGE)}@(?P<wrapper>{_VERSION})"
    rf"(?:\+native(?:@(?P<native>{_VERSION})|:(?P<file>.+)))?$")
READY = ".boxlite-chaos-ready.json"


def parse_npm(text: str) -> dict[str, Any]:
    """The parts of an npm spec: wrapper, native (a version or None), native_file (a Path or
    None) and version (the core's). Raises SpecError for a malformed spec, a missing file, or a
    local file whose core version cannot be told (it must sit beside its package.json, as in
    napi's `npm/linux-x64-gnu` folder of a build)."""
    m = _NPM_SPEC.match(text)
    if not m:
        raise SpecError(
            f"runtime spec {text!r} is not understood; use 'npm:{SDK_PACKAGE}@X.Y.Z', "
            f"'npm:{SDK_PACKAGE}@X.Y.Z+native@A.B.C' or 'npm:{SDK_PACKAGE}@X.Y.Z+native:FILE.node'")
    wrapper, native, file = m.group("wrapper"), m.group("native"), m.group("file")
    native_file = None
    version = native or wrapper
    if file:
        native_file = Path(file).expanduser().resolve()
        if not native_file.is_file() or native_file.suffix != ".node":
            raise SpecError(f"runtime spec {text!r}: {native_file} is not a .node file")
        version = local_native_version(text, native_file)
    return {"wrapper": wrapper, "native": native, "native_file": native_file,
            "version": version}


def local_native_version(text: str, native_file: Path) -> str:
    """The core version a locally built `.node` carries, from the package.json napi writes
    beside it. Raises SpecError when there is none, or it names another package."""
    pkg = native_file.with_name("package.json")
    try:
        data = json.loads(pkg.read_text())
    except (OSError, ValueError) as exc:
        raise SpecError(f"runtime spec {text!r}: cannot tell which core version "
                        f"{native_file.name} carries: no readable {pkg} beside it (build with "
                        "napi and name the file in its npm/linux-x64-gnu folder)") from exc
    if data.get("name") != NATIVE_PACKAGE or not re.fullmatch(_VERSION, str(data.get("version"))):
        raise SpecError(f"runtime spec {text!r}: {pkg} is not {NATIVE_PACKAGE}'s package.json")
    return str(data["version"])


def npm_key(parts: dict[str, Any]) -> str:
    """The folder name of a spec's npm install; a rebuilt local `.node` gets a new one."""
    key = f"npm-{parts['wrapper']}"
    if parts["native"]:
        key += f"-native-{parts['native']}"
    if parts["native_file"]:
        digest = hashlib.sha256(parts["native_file"].read_bytes()).hexdigest()[:12]
        key += f"-file-{parts['version']}-{digest}"
    return key


def node_path() -> str:
    """Path of `node` on PATH, unchecked (a host start must not pay for `node --version`).
    Raises SetupError when there is none."""
    node = shutil.which("node")
    if node is None:
        raise SetupError("the Node SDK needs `node` (>= 18) on PATH; ./go installs Debian's "
                         "nodejs and npm")
    return node


def node_binary() -> str:
    """Path of `node`, checked for the SDK's minimum major version. Raises SetupError (one
    line) when node is missing or too old; `./go` installs Debian's nodejs."""
    node = node_path()
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    m = re.match(r"v(\d+)\.", out.stdout.strip())
    if not m or int(m.group(1)) < NODE_MIN_MAJOR:
        raise SetupError(f"{node} is {out.stdout.strip() or 'unreadable'}; the Node SDK needs "
                         f"node >= {NODE_MIN_MAJOR}")
    return node


def package_json(parts: dict[str, Any]) -> dict[str, Any]:
    """Exact versions only: the wrapper, and the native binding as the wrapper's optional
    dependency overridden to the version asked for. Peers (playwright-core, optional for the
    SDK) are never installed."""
    out: dict[str, Any] = {"name": "boxlite-chaos-runtime", "version": "0.0.0", "private": True,
                           "dependencies": {SDK_PACKAGE: parts["wrapper"]}}
    if parts["native"]:
        out["overrides"] = {NATIVE_PACKAGE: parts["native"]}
    return out


def install(text: str, parts: dict[str, Any], folder: Path, npm_cache: Path) -> dict[str, Any]:
    """Install one npm spec into `folder` (the caller holds the spec's lock and removes the
    folder when this raises): package.json pinning exact versions, then `npm install` from
    npm's cache in the project cache (offline once cached), which writes package-lock.json
    with each package's integrity; the installed versions are held to the lock and the spec,
    then the SDK is loaded once with the chosen binding. Returns the ready marker's contents.
    Raises SpecError (one line) for a version npm does not have, a binding that does not
    load, or npm failing; SetupError without node/npm."""
    node = node_binary()
    npm = shutil.which("npm")
    if npm is None:
        raise SetupError("the Node SDK needs `npm` on PATH; ./go installs Debian's npm")
    t0 = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "package.json").write_text(json.dumps(package_json(parts), indent=1) + "\n")
    # Not `npm ci`: npm 10-11 leave other platforms' optional bindings out of the lock it
    # writes here, and `npm ci` then refuses that lock as out of sync. `npm install` over a
    # kept lock installs exactly what it pins (integrity-checked), and the versions found
    # installed are held to the lock below, which is what `npm ci` would promise.
    flags = ["--omit=peer", "--ignore-scripts", "--no-audit", "--no-fund",
             "--prefer-offline", "--cache", str(npm_cache)]
    _npm([npm, "install", *flags], folder, text, parts)
    installed = {name: _installed_version(folder, name) for name in (SDK_PACKAGE, NATIVE_PACKAGE)}
    pinned = locked_versions(folder / "package-lock.json")
    wanted = {SDK_PACKAGE: parts["wrapper"], NATIVE_PACKAGE: parts["native"] or parts["wrapper"]}
    if installed[NATIVE_PACKAGE] is None and not parts["native_file"]:
        # npm skips an optional dependency it cannot find without failing.
        which = (f"{NATIVE_PACKAGE} {parts['native']} is not published on npm" if parts["native"]
                 else f"{SDK_PACKAGE} {parts['wrapper']} has no Linux x64 native binding "
                      f"({NATIVE_PACKAGE} {parts['wrapper']} is not published)")
        raise SpecError(f"runtime spec {text!r}: {which}")
    for name, version in installed.items():
        if version != pinned.get(name) or (not parts["native_file"] and version != wanted[name]):
            raise SpecError(f"runtime spec {text!r}: npm installed {name} {version}, but the "
                            f"lock pins {pinned.get(name)} and the spec asks {wanted[name]}")
    if parts["native_file"]:
        native = folder / "native" / NATIVE_FILE
        native.parent.mkdir(exist_ok=True)
        shutil.copyfile(parts["native_file"], native)
        installed[NATIVE_PACKAGE] = f"{parts['version']} (local {parts['native_file']})"
    else:
        native = folder / "node_modules" / NATIVE_PACKAGE / NATIVE_FILE
    if not native.is_file():
        raise SpecError(f"runtime spec {text!r}: npm installed no {NATIVE_PACKAGE} "
                        f"binding ({native} is missing); {SDK_PACKAGE} {parts['wrapper']} may "
                        "have no Linux x64 build")
    _load_check(node, folder, native, text)
    return {"spec": text, "version": parts["version"], "sdk": "node",
            "native": str(native), "native_sha256": hashlib.sha256(native.read_bytes()).hexdigest(),
            "packages": installed, "node": _node_version(node),
            "install_s": round(time.monotonic() - t0, 1)}


def locked_versions(lock: Path) -> dict[str, str]:
    """Package name -> version pinned in a package-lock.json (v2/v3 `packages`)."""
    try:
        packages = json.loads(lock.read_text()).get("packages", {})
    except (OSError, ValueError):
        return {}
    return {k.rsplit("node_modules/", 1)[1]: v.get("version") for k, v in packages.items()
            if "node_modules/" in k}


def _installed_version(folder: Path, name: str) -> str | None:
    try:
        return json.loads((folder / "node_modules" / name / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def _node_version(node: str) -> str:
    return subprocess.run([node, "--version"], capture_output=True, text=True,
                          timeout=30).stdout.strip()


def _load_check(node: str, folder: Path, native: Path, text: str) -> None:
    """Import the SDK with the chosen binding in a throwaway node process: a binding that does
    not load (0.9.5 has none for Linux) is a spec error now, not a host that dies later."""
    script = ("const [url] = process.argv.slice(1);\n"
              "import(url).then((m) => {\n"
              "  if (typeof m.JsBoxlite !== 'function') throw new Error('no JsBoxlite export');\n"
              "}).catch((e) => {\n"
              "  console.error(String((e && e.message) || e).split('\\n')[0]);\n"
              "  process.exit(1);\n"
              "});\n")
    proc = subprocess.run([node, "--input-type=module", "-e", script,
                           sdk_entry(folder).as_uri()], capture_output=True,
                          text=True, timeout=120, cwd=folder,
                          env={**os.environ, "NAPI_RS_NATIVE_LIBRARY_PATH": str(native)})
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["(no message)"])[-1][:300]
        raise SpecError(f"runtime spec {text!r}: the SDK does not load: {why}")


def sdk_entry(folder: Path) -> Path:
    """The SDK's ES module entry inside an npm folder (its package.json `main`)."""
    pkg = folder / "node_modules" / SDK_PACKAGE
    try:
        main = json.loads((pkg / "package.json").read_text()).get("main") or "index.js"
    except (OSError, ValueError):
        main = "dist/index.js"
    return pkg / main


def _npm(argv: list[str], folder: Path, text: str, parts: dict[str, Any]) -> None:
    """Run npm in `folder`; SpecError naming the spec and npm's own reason in one line."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=folder,
                              timeout=INSTALL_TIMEOUT_S,
                              env={**os.environ, "npm_config_update_notifier": "false"})
    except subprocess.TimeoutExpired as exc:
        raise SpecError(f"runtime spec {text!r}: `npm {argv[1]}` did not finish within "
                        f"{INSTALL_TIMEOUT_S:.0f}s") from exc
    if proc.returncode == 0:
        return
    err = proc.stderr
    if "ETARGET" in err or "E404" in err or "No matching version" in err:
        what = [f"{SDK_PACKAGE} {parts['wrapper']}"]
        if parts["native"]:
            what.append(f"{NATIVE_PACKAGE} {parts['native']}")
        raise SpecError(f"runtime spec {text!r}: {' or '.join(what)} is not published on npm "
                        f"({npm_reason(err)})")
    raise SpecError(f"runtime spec {text!r}: `npm {argv[1]}` failed: {npm_reason(err)}")


def npm_reason(stderr: str) -> str:
    """npm's first `npm error` line that says something (not the log-file footer)."""
    for line in stderr.splitlines():
        line = re.sub(r"^npm (ERR!|error)\s*", "", line.strip())
        if line and not re.match(r"(code |A complete log|Log files|errno |syscall )", line):
            return line[:240]
    return (stderr.strip().splitlines() or ["no output"])[-1][:240]
