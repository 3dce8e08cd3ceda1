"""tools/shape_wheel.py: a release wheel with one behaviour of its Python layer changed."""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import zipfile

import pytest

from harness.common.paths import PROJECT

spec = importlib.util.spec_from_file_location("shape_wheel", PROJECT / "tools" / "shape_wheel.py")
shape_wheel = importlib.util.module_from_spec(spec)
spec.loader.exec_module(shape_wheel)

INIT = b"class Boxlite:\n    pass\n"


def fake_release(tmp_path):
    path = tmp_path / "boxlite-0.10.8-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("boxlite/__init__.py", INIT)
        z.writestr("boxlite/boxlite.so", b"\x7fELF")
        z.writestr("boxlite-0.10.8.dist-info/RECORD",
                   "boxlite/__init__.py,sha256=x,24\nboxlite/boxlite.so,sha256=y,4\n"
                   "boxlite-0.10.8.dist-info/RECORD,,\n")
    return path


@pytest.mark.parametrize("shape", sorted(shape_wheel.SHAPES))
def test_a_shaped_wheel_keeps_the_release_and_changes_one_method(tmp_path, shape):
    out = shape_wheel.build(shape, fake_release(tmp_path), tmp_path / "out")
    assert out.name == "boxlite-0.10.8-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(out) as z:
        init = z.read("boxlite/__init__.py")
        rows = {r[0]: r for r in csv.reader(io.StringIO(
            z.read("boxlite-0.10.8.dist-info/RECORD").decode())) if r}
        assert z.read("boxlite/boxlite.so") == b"\x7fELF"
    assert init.startswith(INIT) and b"boxlite-chaos shape build" in init
    digest = base64.urlsafe_b64encode(hashlib.sha256(init).digest()).rstrip(b"=").decode()
    assert rows["boxlite/__init__.py"][1:] == [f"sha256={digest}", str(len(init))]
    compile(init, "boxlite/__init__.py", "exec")
    method = "get_info" if shape == "get-info-deleted" else "shutdown"
    assert f"async def {method}".encode() in init
