"""A local OCI registry on 127.0.0.1 serving the guest base image that boxlite 0.9.x pulls at
first start (`debian:bookworm-slim`), so pre-fix releases run offline.

Debian's `docker-registry` (the CNCF distribution registry) listens on loopback only; `skopeo`
pushes the busybox test image under that name. The registry is started and stopped by the
harness (identified by pid and start time), its storage under the run's folder.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

from harness.common.errors import SetupError
from harness.common.wait import wait_for
from harness.leftovers.markers import mark, release
from harness.runtime.image import BusyboxImage

GUEST_BASE = "library/debian:bookworm-slim"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalRegistry:
    root: Path
    proc: subprocess.Popen | None = None
    port: int = 0
    create_time: float = 0.0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> LocalRegistry:
        for tool in ("docker-registry", "skopeo"):
            if shutil.which(tool) is None:
                raise SetupError(f"local registry: {tool} is not installed "
                                 "(apt-get install docker-registry skopeo)")
        self.root.mkdir(parents=True, exist_ok=True)
        # Should this process die, a sweep stops the registry (it never notices by itself);
        # its storage stays with the report.
        mark(self.root, "registry", remove=())
        self.port = free_port()
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'storage'}\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n")
        log = open(self.root / "registry.log", "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(config)],
                                     stdout=log, stderr=log, start_new_session=True)
        log.close()
        self.create_time = psutil.Process(self.proc.pid).create_time()
        wait_for(self._answers, 20, f"the local registry on {self.host} to answer")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise SetupError(f"local registry exited with {self.proc.returncode}; "
                             f"see {self.root / 'registry.log'}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def push(self, image: BusyboxImage, name: str = GUEST_BASE) -> str:
        ref = f"docker://{self.host}/{name}"
        proc = subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                               f"oci:{image.path}:latest", ref],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise SetupError(f"local registry: skopeo could not push {ref}: "
                             f"{proc.stderr.strip()[-300:]}")
        return ref

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            p = psutil.Process(self.proc.pid)
            if p.create_time() == self.create_time:
                p.terminate()
        except psutil.Error:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        release(self.root)


def needs_registry(version: str) -> bool:
    """0.9.x pulls its guest base image at first start; 0.10.x embeds it."""
    from packaging.version import Version
    return Version(version) < Version("0.10.0")
