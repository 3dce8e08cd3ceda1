"""A box's folder on the host: what the runtime leaves under <home>/boxes/<id>/."""

from __future__ import annotations

from pathlib import Path


def box_disks(home: Path, box_id: str) -> list[str] | None:
    """The disk images in `<home>/boxes/<id>/disks/` by name; [] when the box's folder or its
    disks folder is gone, None when it exists but cannot be listed."""
    try:
        return sorted(p.name for p in (home / "boxes" / box_id / "disks").iterdir()
                      if p.is_file())
    except FileNotFoundError:
        return []
    except OSError:
        return None
