"""The test image: an OCI image layout holding Debian's static busybox.

Built byte-for-byte deterministically (fixed mtimes, owners, order, gzip header) so the same
busybox binary always yields the same manifest digest, and cached under the harness cache.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from harness.common.errors import SetupError
from harness.common.paths import cache_root, locked

# Overridable for machines without Debian's busybox-static (a carried binary).
BUSYBOX = Path(os.environ.get("BOXLITE_CHAOS_BUSYBOX", "/bin/busybox"))
# Bumped when the recipe changes, so a cached image from an older recipe is not reused.
RECIPE_VERSION = 1
APPLETS = ("sh", "sleep", "cat", "echo", "sync", "dd", "ls", "mkdir", "true", "false", "seq",
           "printf", "head", "tail", "wc", "test", "env", "id", "mount", "rm", "sha256sum")
DIRS = ("bin", "dev", "etc", "proc", "sys", "tmp", "root", "data", "var", "run")


@dataclass(frozen=True)
class BusyboxImage:
    path: Path          # the OCI layout directory, for BoxOptions(rootfs_path=...)
    digest: str         # manifest digest, "sha256:..."


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer_tar(busybox: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(info: tarfile.TarInfo, data: bytes | None = None) -> None:
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        for d in DIRS:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            add(info)
        info = tarfile.TarInfo("bin/busybox")
        info.size = len(busybox)
        info.mode = 0o755
        add(info, busybox)
        for applet in sorted(APPLETS):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            info.mode = 0o777
            add(info)
        for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
                           ("etc/group", "root:x:0:\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            add(info, data)
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    # mtime=0 and no file name keep the gzip header identical between builds.
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="", compresslevel=6) as gz:
        gz.write(data)
    return buf.getvalue()


def write_layout(dest: Path, busybox: bytes) -> str:
    """Write an OCI image layout for `busybox` into `dest`; return the manifest digest."""
    layer = _layer_tar(busybox)
    layer_gz = _gzip(layer)
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [_sha256(layer)]},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _sha256(layer_gz), "size": len(layer_gz)}],
    }, sort_keys=True).encode()
    index = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": _sha256(manifest), "size": len(manifest),
                       "annotations": {"org.opencontainers.image.ref.name": "latest"}}],
    }, sort_keys=True).encode()
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for blob in (layer_gz, config, manifest):
        (blobs / _sha256(blob).split(":", 1)[1]).write_bytes(blob)
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (dest / "index.json").write_bytes(index)
    return _sha256(manifest)


def busybox_image(busybox_path: Path = BUSYBOX, cache: Path | None = None) -> BusyboxImage:
    """Return the cached test image, building it once per busybox binary and recipe."""
    if not busybox_path.is_file():
        raise SetupError(
            f"test image: {busybox_path} not found; install Debian's busybox-static "
            "(apt-get install busybox-static)")
    busybox = busybox_path.read_bytes()
    key = hashlib.sha256(busybox + f"recipe{RECIPE_VERSION}".encode()).hexdigest()[:16]
    root = (cache or cache_root()) / "images"
    dest = root / f"busybox-{key}"
    marker = dest / ".digest"
    with locked(root / f"busybox-{key}.lock"):
        if marker.is_file():
            return BusyboxImage(dest, marker.read_text().strip())
        tmp = root / f".busybox-{key}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        digest = write_layout(tmp, busybox)
        (tmp / ".digest").write_text(digest)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        return BusyboxImage(dest, digest)
