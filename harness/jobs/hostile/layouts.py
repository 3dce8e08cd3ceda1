"""Broken image layouts: OCI layouts restamped from a good one (digests, sizes, gzip and CRC
state) so each variant breaks in exactly one way.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import shutil
import struct
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.jobs.hostile.strategies import IMAGE_VARIANTS, fake_value

# -- broken image layouts ---------------------------------------------------------------------

def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def put_blob(layout: Path, data: bytes) -> str:
    digest = sha256(data)
    blob_path(layout, digest).write_bytes(data)
    return digest


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True).encode()


@dataclass
class LayoutParts:
    """The parsed chain of a single-manifest layout: index → manifest → config, layers."""

    path: Path
    index: dict[str, Any]
    manifest: dict[str, Any]
    config: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> LayoutParts:
        index = json.loads((path / "index.json").read_text())
        manifest = json.loads(blob_path(path, index["manifests"][0]["digest"]).read_text())
        config = json.loads(blob_path(path, manifest["config"]["digest"]).read_text())
        return cls(path, index, manifest, config)

    @property
    def layer_digest(self) -> str:
        return self.manifest["layers"][0]["digest"]

    def save(self) -> str:
        """Write config, manifest and index back (new digests); return the manifest digest."""
        cfg = _dump(self.config)
        self.manifest["config"].update(digest=put_blob(self.path, cfg), size=len(cfg))
        man = _dump(self.manifest)
        digest = put_blob(self.path, man)
        self.index["manifests"][0].update(digest=digest, size=len(man))
        (self.path / "index.json").write_bytes(_dump(self.index))
        return digest


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as gz:
        gz.write(data)
    return buf.getvalue()


@dataclass(frozen=True)
class _LayerPrefix:
    """A layer's members re-serialized (no end-of-archive yet), deflated once: a variant
    only appends one member, so it resumes copies of these states instead of recompressing
    the whole layer (that took 0.18 s a case idle, and seconds on a loaded 2-core machine)."""

    head: bytes                  # raw deflate output for `size` bytes of tar
    deflate: Any                 # zlib.Compress fed those bytes (copied, never fed again)
    crc: int
    size: int
    digest: Any                  # hashlib.sha256 of those bytes (copied, never fed again)


_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"   # deflate, mtime 0, no name


_PREFIXES: dict[str, _LayerPrefix] = {}


def _layer_prefix(digest: str, layer: Path) -> _LayerPrefix:
    """Kept per layer digest (blobs are content-addressed): one build per base layer."""
    if digest not in _PREFIXES:
        _PREFIXES[digest] = _deflated_prefix(layer.read_bytes())
    return _PREFIXES[digest]


def _deflated_prefix(layer: bytes) -> _LayerPrefix:
    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as src:
        dst = tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT)
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        raw = buf.getvalue()            # read before close(): no end-of-archive blocks
    comp = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return _LayerPrefix(comp.compress(raw), comp, zlib.crc32(raw), len(raw),
                        hashlib.sha256(raw))


def restamp_layer(parts: LayoutParts, text: str) -> None:
    """Replace the first layer by a copy holding one more file (`etc/hostile-variant`), so its
    digest is new; update the manifest and the config's diff_id."""
    old = blob_path(parts.path, parts.layer_digest)
    pre = _layer_prefix(parts.layer_digest, old)
    data = text.encode()
    info = tarfile.TarInfo("etc/hostile-variant")
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tail = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape") + data
    tail += bytes(-len(tail) % tarfile.BLOCKSIZE) + bytes(2 * tarfile.BLOCKSIZE)
    tail += bytes(-(pre.size + len(tail)) % tarfile.RECORDSIZE)
    comp = pre.deflate.copy()
    body = pre.head + comp.compress(tail) + comp.flush()
    size = pre.size + len(tail)
    blob = _GZIP_HEADER + body + struct.pack("<II", zlib.crc32(tail, pre.crc), size & 0xFFFFFFFF)
    raw_digest = pre.digest.copy()
    raw_digest.update(tail)
    parts.manifest["layers"][0].update(digest=put_blob(parts.path, blob), size=len(blob))
    parts.config["rootfs"]["diff_ids"][0] = "sha256:" + raw_digest.hexdigest()
    old.unlink()


def escape_layer(marker: str, inside: Path) -> tuple[bytes, list[str]]:
    """A layer whose entries try to land outside the rootfs: `../` at several depths, an
    absolute path into `inside`, and a symlink to `inside` followed by a file through it.
    Returns the gzipped layer and the marker file names it plants."""
    buf = io.BytesIO()
    names = []
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        def add(name: str, data: bytes = b"escaped\n", link: str | None = None) -> None:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
                return
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for depth in range(1, 7):
            names.append(f"{marker}-up{depth}")
            add("../" * depth + names[-1])
        names.append(f"{marker}-abs")
        add(str(inside / names[-1]))
        add(f"{marker}-link", link=str(inside))
        names.append(f"{marker}-via-link")
        add(f"{marker}-link/{names[-1]}")
    return _gzip(buf.getvalue()), names


def build_image(base: Path, dest: Path, variant: str, seed: int, where: float,
                inside: Path | None = None) -> list[str]:
    """Build `variant` of the layout at `base` into `dest` (which must not exist yet).

    Every variant that is still a layout carries a config label unique to (variant, seed), so
    its manifest digest differs from the base's: the runtime cannot answer it from an image
    it cached for the well-formed image. `where` (0..1) places a corruption or a cut.
    Returns the marker names an escaping layer planted (only `layer_escapes` plants any)."""
    if variant == "missing":
        return []
    if variant == "file":
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(f"not an image layout {seed}\n")
        return []
    if variant == "symlink_loop":
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(dest.name)
        return []
    dest.mkdir(parents=True)
    if variant == "empty_dir":
        return []
    if variant == "not_a_layout":
        for i in range(3):
            (dest / f"file{i}-{seed}.txt").write_text(fake_value("text", "en_US", seed + i))
        return []
    shutil.copytree(base / "blobs", dest / "blobs")
    shutil.copy2(base / "oci-layout", dest / "oci-layout")
    shutil.copy2(base / "index.json", dest / "index.json")
    parts = LayoutParts.load(dest)
    parts.config.setdefault("config", {}).setdefault("Labels", {})[
        "org.boxlite-chaos.variant"] = f"{variant}-{seed}"
    if variant.startswith("layer_") or variant == "diff_id_wrong":
        # A layer of its own: the runtime caches unpacked layers by digest, and would never
        # read a broken copy of a layer it already holds.
        restamp_layer(parts, f"{variant} {seed}\n")
    layer = blob_path(dest, parts.layer_digest)
    planted: list[str] = []
    if variant == "layer_swapped":
        # A valid layer stored under the original layer's digest: only a digest check sees it.
        layer.write_bytes(_gzip(b"\0" * 1024))
    elif variant == "layer_not_gzip":
        garbage = random.Random(seed).randbytes(4096)
        parts.manifest["layers"][0].update(digest=put_blob(dest, garbage), size=len(garbage))
        layer.unlink()
    elif variant == "diff_id_wrong":
        parts.config["rootfs"]["diff_ids"] = [sha256(f"wrong {seed}".encode())]
    elif variant == "layer_escapes":
        assert inside is not None, "layer_escapes needs a folder for its markers"
        data, planted = escape_layer(f"hostile-escape-{seed}", inside)
        parts.manifest["layers"].append({"mediaType": parts.manifest["layers"][0]["mediaType"],
                                         "digest": put_blob(dest, data), "size": len(data)})
        parts.config["rootfs"]["diff_ids"].append(sha256(gzip.decompress(data)))
    digest = parts.save()
    if variant == "no_oci_layout":
        (dest / "oci-layout").unlink()
    elif variant == "index_not_json":
        (dest / "index.json").write_text('{"schemaVersion": 2, "manifests": [')
    elif variant == "index_no_manifests":
        (dest / "index.json").write_bytes(_dump({"schemaVersion": 2, "manifests": []}))
    elif variant == "manifest_missing":
        blob_path(dest, digest).unlink()
    elif variant == "manifest_corrupt":
        blob_path(dest, digest).write_text('{"schemaVersion": 2, "layers": [{"digest": 1}]}')
    elif variant == "config_missing":
        blob_path(dest, parts.manifest["config"]["digest"]).unlink()
    elif variant == "layer_missing":
        layer.unlink()
    elif variant == "layer_is_dir":
        layer.unlink()
        layer.mkdir()
    elif variant == "layer_corrupt":
        data = bytearray(layer.read_bytes())
        at = int(where * (len(data) - 16))
        data[at:at + 16] = bytes(b ^ 0xFF for b in data[at:at + 16])
        layer.write_bytes(bytes(data))
    elif variant == "layer_truncated":
        data = layer.read_bytes()
        layer.write_bytes(data[:int(where * len(data))])
    elif variant not in IMAGE_VARIANTS:
        raise ValueError(f"unknown image variant {variant!r}")
    return planted
