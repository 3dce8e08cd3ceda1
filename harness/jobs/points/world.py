"""A scenario world for one points run outside pytest: the runtime, the image, the known
failures, and for 0.9.x the loopback registry serving the guest base image."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.judge.known import load_table
from harness.observe.processes import become_subreaper
from harness.runtime.image import busybox_image
from harness.runtime.registry import LocalRegistry, needs_registry
from harness.runtime.spec import RuntimeEnv, ensure_runtime
from harness.scenario.context import Chaos


@dataclass
class Setup:
    env: RuntimeEnv
    image: Any
    known: Any
    registries: tuple[str, ...]
    root: Path

    @contextlib.contextmanager
    def world(self, node_id: str, slug: str) -> Iterator[Chaos]:
        """One Chaos world; its teardown leaves nothing running, whatever happened."""
        chaos = Chaos(node_id, self.root / "scenarios" / slug, self.env, self.image, self.known,
                      registries=self.registries)
        try:
            yield chaos
        finally:
            chaos.safety_teardown()


@contextlib.contextmanager
def setup(spec: str, root: Path) -> Iterator[Setup]:
    """The runtime of `spec` installed, the image built, a registry where the release pulls
    its guest image. Raises SetupError (one line) on a bad spec or a failed install."""
    become_subreaper()
    env = ensure_runtime(spec)
    image = busybox_image()
    root.mkdir(parents=True, exist_ok=True)
    reg = None
    if needs_registry(env.version):
        reg = LocalRegistry(root / "registry")
        reg.start()
        reg.push(image)
    try:
        yield Setup(env, image, load_table(), (reg.host,) if reg else (), root)
    finally:
        if reg is not None:
            reg.stop()
