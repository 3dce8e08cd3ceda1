"""Runtime specs: parsing, and the error a version that was never published gives (leaving
no half-made virtualenv in the cache)."""

from __future__ import annotations

import subprocess

import pytest

from harness.common.errors import SpecError
from harness.runtime import spec as spec_module
from harness.runtime.spec import DEFAULT_SPEC, RuntimeSpec, ensure_runtime, venv_root


@pytest.mark.parametrize("text, version", [
    ("boxlite==0.10.8", "0.10.8"),
    ("  boxlite==1.2.3\n", "1.2.3"),
    ("boxlite==0.11.0rc1", "0.11.0rc1"),
    ("boxlite==2.0.0b3", "2.0.0b3"),
])
def test_release_specs(text, version):
    spec = RuntimeSpec.parse(text)
    assert (spec.kind, spec.version, spec.wheel) == ("release", version, None)
    assert spec.key == f"boxlite-{version}"
    assert spec.requirement() == text.strip()


def test_default_spec_parses():
    spec = RuntimeSpec.parse(DEFAULT_SPEC)
    assert spec.kind == "release"
    assert DEFAULT_SPEC == f"boxlite=={spec.version}"


def test_wheel_spec(tmp_path):
    wheel = tmp_path / "boxlite-0.10.9.dev3-cp311-abi3-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"pretend zip")
    spec = RuntimeSpec.parse(f"wheel:{wheel}")
    assert (spec.kind, spec.version, spec.wheel) == ("wheel", "0.10.9.dev3", wheel)
    assert spec.requirement() == str(wheel)
    key = spec.key
    assert key.startswith("wheel-0.10.9.dev3-")
    wheel.write_bytes(b"rebuilt")                           # a rebuilt wheel gets a new venv
    assert RuntimeSpec.parse(f"wheel:{wheel}").key != key


def test_wheel_spec_for_a_missing_file(tmp_path):
    text = f"wheel:{tmp_path}/boxlite-1.0.0-py3-none-any.whl"
    with pytest.raises(SpecError, match="does not exist") as exc:
        RuntimeSpec.parse(text)
    assert repr(text) in str(exc.value)


@pytest.mark.parametrize("name", ["notes.txt", "boxlite-1.0.0-py3-none-any.zip",
                                  "other-1.0.0-py3-none-any.whl", "boxlite.whl"])
def test_wheel_spec_for_a_file_that_is_not_a_boxlite_wheel(tmp_path, name):
    f = tmp_path / name
    f.write_text("x")
    text = f"wheel:{f}"
    with pytest.raises(SpecError, match="is not a boxlite wheel") as exc:
        RuntimeSpec.parse(text)
    assert repr(text) in str(exc.value)


@pytest.mark.parametrize("text", ["boxlite==banana", "boxlite>=0.10", "boxlite", "0.10.8",
                                  "", "boxlite==0.10", "pip==0.10.8", "wheel"])
def test_malformed_specs(text):
    with pytest.raises(SpecError, match="is not understood") as exc:
        RuntimeSpec.parse(text)
    assert repr(text.strip()) in str(exc.value)


def test_a_directory_is_not_a_wheel(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        RuntimeSpec.parse(f"wheel:{tmp_path}")


def test_ensure_runtime_for_an_unpublished_version(tmp_path):
    # Runs the real venv + pip install; pip finds no such release.
    with pytest.raises(SpecError) as exc:
        ensure_runtime("boxlite==0.0.1", cache=tmp_path)
    msg = str(exc.value)
    assert "'boxlite==0.0.1'" in msg
    assert "not a published release" in msg
    # No ready marker: the next run tries again instead of trusting a broken venv.
    assert not (venv_root(tmp_path) / "boxlite-0.0.1" / ".boxlite-chaos-ready.json").exists()
    assert not (venv_root(tmp_path) / "boxlite-0.0.1").exists()


@pytest.mark.parametrize("failing_step", ["venv", "pip"])
def test_a_failed_build_leaves_no_virtualenv_in_the_cache(tmp_path, monkeypatch, failing_step):
    """No network, no real pip: `venv` half-makes its folder, then the failing step exits 1
    the way pip does for a version that was never published."""
    monkeypatch.setenv("BOXLITE_CHAOS_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_run(argv, **kwargs):
        step = "venv" if argv[1:3] == ["-m", "venv"] else "pip"
        calls.append(step)
        if step == "venv":
            bin_dir = tmp_path / "cache" / "venvs" / "boxlite-9.9.9" / "bin"
            bin_dir.mkdir(parents=True)
            (bin_dir / "python").write_text("")
        if step == failing_step:
            return subprocess.CompletedProcess(argv, 1, "", "ERROR: No matching distribution "
                                               "found for boxlite==9.9.9")
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(spec_module.subprocess, "run", fake_run)
    with pytest.raises(SpecError, match="'boxlite==9.9.9'"):
        ensure_runtime("boxlite==9.9.9")
    assert calls == ["venv", "pip"][:calls.index(failing_step) + 1]
    root = venv_root()
    assert root == tmp_path / "cache" / "venvs"
    assert [p.name for p in root.iterdir() if p.is_dir()] == []     # the lock file may stay
