"""Node SDK runtime specs: parsing, keys, and the one clear line an install that cannot work
gives (leaving no half-made npm folder in the cache)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from harness.common.errors import SetupError, SpecError
from harness.runtime import npm
from harness.runtime.spec import (
    RuntimeSpec,
    counterpart,
    ensure_runtime,
    npm_root,
    ready_runtime,
)

SDK = "@boxlite-ai/boxlite"


@pytest.mark.parametrize("text, version, native", [
    (f"npm:{SDK}@0.10.0", "0.10.0", None),
    (f"  npm:{SDK}@0.9.7\n", "0.9.7", None),
    (f"npm:{SDK}@0.10.0+native@0.10.3", "0.10.3", "0.10.3"),
    (f"npm:{SDK}@1.0.0-rc.1", "1.0.0-rc.1", None),
])
def test_npm_specs(text, version, native):
    spec = RuntimeSpec.parse(text)
    assert (spec.kind, spec.sdk, spec.version) == ("npm", "node", version)
    parts = dict(spec.npm)
    assert parts["native"] == native and parts["native_file"] is None
    assert spec.key == f"npm-{parts['wrapper']}" + (f"-native-{native}" if native else "")


def test_python_specs_say_python():
    assert RuntimeSpec.parse("boxlite==0.10.8").sdk == "python"


@pytest.mark.parametrize("text", [
    "npm:boxlite@0.10.0", f"npm:{SDK}", f"npm:{SDK}@0.10", f"npm:{SDK}@latest",
    f"npm:{SDK}@0.10.0+native", f"npm:{SDK}@0.10.0+native@", f"npm:{SDK}@0.10.0+wasm@1.0.0",
    f"npm:{SDK}@>=0.10.0",
])
def test_malformed_npm_specs(text):
    with pytest.raises(SpecError, match="is not understood") as exc:
        RuntimeSpec.parse(text)
    assert repr(text.strip()) in str(exc.value)
    assert "\n" not in str(exc.value)


def _native_build(folder, version="0.10.4", name=npm.NATIVE_PACKAGE):
    folder.mkdir(parents=True, exist_ok=True)
    node = folder / npm.NATIVE_FILE
    node.write_bytes(b"pretend ELF")
    (folder / "package.json").write_text(json.dumps({"name": name, "version": version}))
    return node


def test_a_local_native_file_takes_its_version_from_its_package_json(tmp_path):
    node = _native_build(tmp_path / "npm" / "linux-x64-gnu")
    spec = RuntimeSpec.parse(f"npm:{SDK}@0.10.0+native:{node}")
    assert (spec.kind, spec.version) == ("npm", "0.10.4")
    assert dict(spec.npm)["native_file"] == node
    key = spec.key
    assert key.startswith("npm-0.10.0-file-0.10.4-")
    node.write_bytes(b"rebuilt")                    # a rebuilt binding gets a new folder
    assert RuntimeSpec.parse(f"npm:{SDK}@0.10.0+native:{node}").key != key


def test_a_local_native_file_without_its_package_json(tmp_path):
    node = tmp_path / npm.NATIVE_FILE
    node.write_bytes(b"x")
    with pytest.raises(SpecError, match="cannot tell which core version"):
        RuntimeSpec.parse(f"npm:{SDK}@0.10.0+native:{node}")
    other = _native_build(tmp_path / "other", name="left-pad")
    with pytest.raises(SpecError, match="is not @boxlite-ai/boxlite-linux-x64-gnu"):
        RuntimeSpec.parse(f"npm:{SDK}@0.10.0+native:{other}")


@pytest.mark.parametrize("name", ["missing.node", "boxlite.so"])
def test_a_local_native_file_that_is_not_one(tmp_path, name):
    if name != "missing.node":
        (tmp_path / name).write_text("x")
    with pytest.raises(SpecError, match="is not a .node file"):
        RuntimeSpec.parse(f"npm:{SDK}@0.10.0+native:{tmp_path / name}")


def test_package_json_pins_exact_versions_and_overrides_the_binding():
    parts = npm.parse_npm(f"npm:{SDK}@0.10.0+native@0.10.3")
    pj = npm.package_json(parts)
    assert pj["dependencies"] == {SDK: "0.10.0"}
    assert pj["overrides"] == {npm.NATIVE_PACKAGE: "0.10.3"}
    assert "overrides" not in npm.package_json(npm.parse_npm(f"npm:{SDK}@0.10.0"))


def test_npm_reason_skips_npms_footer():
    err = ("npm error code ETARGET\nnpm error notarget No matching version found for "
           "@boxlite-ai/boxlite@9.9.9.\nnpm error A complete log of this run can be found in: x")
    assert npm.npm_reason(err) == \
        "notarget No matching version found for @boxlite-ai/boxlite@9.9.9."


def test_a_failed_install_leaves_no_npm_folder(tmp_path, monkeypatch):
    """No registry: npm (faked) fails the way it does for a version never published."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed (./go installs them)")
    monkeypatch.setenv("BOXLITE_CHAOS_CACHE", str(tmp_path / "cache"))
    real_run = subprocess.run

    def fake_run(argv, **kwargs):
        if argv[1:2] == ["install"]:
            (kwargs["cwd"] / "node_modules").mkdir()
            return subprocess.CompletedProcess(argv, 1, "", "npm error code ETARGET\nnpm error "
                                               "notarget No matching version found for "
                                               f"{SDK}@9.9.9.\n")
        return real_run(argv, **kwargs)

    monkeypatch.setattr(npm.subprocess, "run", fake_run)
    with pytest.raises(SpecError) as exc:
        ensure_runtime(f"npm:{SDK}@9.9.9")
    msg = str(exc.value)
    assert msg == (f"runtime spec 'npm:{SDK}@9.9.9': {SDK} 9.9.9 is not published on npm "
                   f"(notarget No matching version found for {SDK}@9.9.9.)")
    assert not (npm_root() / "npm-9.9.9").exists()
    assert ready_runtime(f"npm:{SDK}@9.9.9") is None


def test_an_optional_binding_npm_skipped_is_named(tmp_path, monkeypatch):
    """npm skips an optional dependency it cannot find and exits 0: the spec still fails,
    naming the binding."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed (./go installs them)")

    def fake_run(argv, **kwargs):
        if argv[1:2] == ["install"]:
            pkg = kwargs["cwd"] / "node_modules" / SDK
            pkg.mkdir(parents=True)
            (pkg / "package.json").write_text(json.dumps({"version": "0.9.5"}))
            (kwargs["cwd"] / "package-lock.json").write_text(json.dumps(
                {"packages": {f"node_modules/{SDK}": {"version": "0.9.5"}}}))
            return subprocess.CompletedProcess(argv, 0, "", "")
        raise AssertionError(argv)

    monkeypatch.setattr(npm.subprocess, "run", fake_run)
    monkeypatch.setattr(npm, "node_binary", lambda: "node")
    with pytest.raises(SpecError, match=r"0\.9\.5 has no Linux x64 native binding"):
        ensure_runtime(f"npm:{SDK}@0.9.5", cache=tmp_path)
    assert not (npm_root(tmp_path) / "npm-0.9.5").exists()


def test_no_node_is_one_setup_line(monkeypatch):
    monkeypatch.setattr(npm.shutil, "which", lambda name: None)
    with pytest.raises(SetupError, match="needs `node`") as exc:
        npm.node_binary()
    assert "\n" not in str(exc.value)


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_an_unpublished_version_through_the_real_npm(tmp_path):
    # Asks the npm registry once; npm answers ETARGET for a version never published.
    with pytest.raises(SpecError) as exc:
        ensure_runtime(f"npm:{SDK}@0.0.1", cache=tmp_path)
    assert str(exc.value).startswith(f"runtime spec 'npm:{SDK}@0.0.1': {SDK} 0.0.1 is not "
                                     "published on npm")
    assert not (npm_root(tmp_path) / "npm-0.0.1").exists()


@pytest.mark.parametrize("spec, other", [
    ("boxlite==0.10.0", f"npm:{SDK}@0.10.0"),
    ("boxlite==0.10.3", f"npm:{SDK}@0.10.0+native@0.10.3"),
    ("boxlite==0.9.7", f"npm:{SDK}@0.9.7"),
    ("boxlite==0.10.8", None),              # no Node build carries 0.10.8
    (f"npm:{SDK}@0.10.0", "boxlite==0.10.0"),
    (f"npm:{SDK}@0.10.0+native@0.10.3", "boxlite==0.10.3"),
])
def test_counterparts_carry_the_same_core(spec, other):
    assert counterpart(spec) == other
    if other is not None:
        assert RuntimeSpec.parse(other).version == RuntimeSpec.parse(spec).version
