"""Fixtures the harness's self-tests share."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.targets.base import TargetUnavailable
from harness.targets.docker import DockerTarget
from harness.targets.dockerd import daemon_root


@pytest.fixture
def dockerd_root(tmp_path: Path) -> Iterator[Path]:
    """A private dockerd's folder: under tmp_path, or under /tmp when tmp_path is too long
    for containerd's sockets (it is under xdist); a /tmp one (its log) is removed after."""
    root = daemon_root(tmp_path)
    yield root
    if not root.is_relative_to(tmp_path):
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def docker_target(dockerd_root: Path) -> DockerTarget:
    """A DockerTarget opened on dockerd_root (closing it is the test's: it judges the
    close), or a skip that says why dockerd cannot run a container here."""
    try:
        return DockerTarget(dockerd_root).open()
    except TargetUnavailable as exc:
        pytest.skip(f"docker: {exc}")
