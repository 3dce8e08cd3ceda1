"""Where a run keeps its files: the run's report folder (stashed on the pytest config) and each
scenario's folder under it, `<report>/scenarios/<slug of its node id>`.

Here, below the plugin, because the plugin, the stopping plugin (harness.session.stopping) and
the fleet's plugin all name these folders and must name them alike.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

# The run's report folder, set by harness.plugin's pytest_configure (resolved, absolute).
report_key = pytest.StashKey[Path]()


def slug(nodeid: str) -> str:
    """A scenario's node id as a folder name: runs of anything but [A-Za-z0-9_.-] become
    one `_`, at most 150 characters."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:150]
