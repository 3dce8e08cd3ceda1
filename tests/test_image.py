"""The busybox test image: a deterministic, self-consistent OCI image layout."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from harness.common.errors import SetupError
from harness.runtime.image import APPLETS, BUSYBOX, busybox_image

needs_busybox = pytest.mark.skipif(not BUSYBOX.is_file(), reason=f"{BUSYBOX} not installed")


def blob(layout: Path, digest: str) -> bytes:
    algo, hexd = digest.split(":", 1)
    assert algo == "sha256"
    data = (layout / "blobs" / "sha256" / hexd).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hexd, f"blob {digest} does not match its digest"
    return data


@needs_busybox
def test_the_same_busybox_gives_the_same_digest_in_two_caches(tmp_path):
    a = busybox_image(cache=tmp_path / "a")
    b = busybox_image(cache=tmp_path / "b")
    assert a.digest == b.digest
    assert a.digest.startswith("sha256:") and len(a.digest) == 71
    assert a.path != b.path
    files_a = sorted(p.relative_to(a.path) for p in a.path.rglob("*"))
    files_b = sorted(p.relative_to(b.path) for p in b.path.rglob("*"))
    assert files_a == files_b
    for rel in files_a:
        if (a.path / rel).is_file():
            assert (a.path / rel).read_bytes() == (b.path / rel).read_bytes(), rel


@needs_busybox
def test_a_cached_image_is_reused(tmp_path):
    first = busybox_image(cache=tmp_path)
    again = busybox_image(cache=tmp_path)
    assert again == first
    assert [p.name for p in (tmp_path / "images").iterdir() if p.is_dir()] == [first.path.name]


@needs_busybox
def test_the_layout_is_complete_and_consistent(tmp_path):
    img = busybox_image(cache=tmp_path)
    assert json.loads((img.path / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((img.path / "index.json").read_text())
    assert index["schemaVersion"] == 2
    (desc,) = index["manifests"]
    assert desc["digest"] == img.digest
    manifest_bytes = blob(img.path, desc["digest"])
    assert desc["size"] == len(manifest_bytes)
    manifest = json.loads(manifest_bytes)

    config_bytes = blob(img.path, manifest["config"]["digest"])
    assert manifest["config"]["size"] == len(config_bytes)
    config = json.loads(config_bytes)
    (layer_desc,) = manifest["layers"]
    layer_gz = blob(img.path, layer_desc["digest"])
    assert layer_desc["size"] == len(layer_gz)
    assert layer_desc["mediaType"].endswith("tar+gzip")

    layer = gzip.decompress(layer_gz)
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        bb = members["bin/busybox"]
        assert bb.isfile() and bb.mode == 0o755
        assert tar.extractfile(bb).read() == BUSYBOX.read_bytes()
        for applet in APPLETS:
            assert members[f"bin/{applet}"].issym()
            assert members[f"bin/{applet}"].linkname == "busybox"
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members.values())
        assert members["tmp"].mode == 0o1777


def test_a_missing_busybox_is_a_setup_error(tmp_path):
    missing = tmp_path / "no" / "busybox"
    with pytest.raises(SetupError, match="busybox-static") as exc:
        busybox_image(missing, cache=tmp_path)
    assert str(missing) in str(exc.value)
    assert not (tmp_path / "images").exists()
