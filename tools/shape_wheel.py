"""Build a boxlite wheel whose Python layer changes one behaviour, to show what the gate makes
of a runtime that changes the *shape* of a known bug or stops the operation that carries it:
the gate must go red with the check named, never `known`, never `fixed` (issue 27).

    python tools/shape_wheel.py SHAPE OUT_DIR [--release 0.10.8]
    .venv/bin/boxlite-chaos gate --runtime wheel:OUT_DIR/boxlite-...whl --scenario boot_failure

Shapes (each a proxy around the native `Boxlite`, appended to `boxlite/__init__.py`):
- `get-info-deleted`: the live get_info of a box whose init failed answers None (the record
  looks deleted on that path) instead of the stale 'configured' of
  live-get-info-stale-after-init-failure. Measured 2026-12-06 on 0.10.8: shim_crash x2 and
  boot_failure x2 red, `record_failed[live.get_info]` and `read_paths_agree[live]`
  "violated - not the known symptom of ...".
- `noop-shutdown`: `shutdown()` answers at once and does nothing, so the path that carries
  graceful-shutdown-overwrites-failed-record never runs. Measured 2026-12-06 on 0.10.8:
  boot_failure[shutdown] and the runner's SIGTERM scenarios red: `record_failed[*after_shutdown*]`
  "holds, but ... cannot be called fixed: no witness that its path ran", and
  `runtime_shutdown_ran` violated ("no sign in the home that a shutdown ran").

The release wheel is fetched from PyPI with pip (`pip download`); the wheel written keeps the
release's version, so the known-failures table applies to it as to the release. RECORD is
rewritten with the new file's hash. Raises SystemExit with a message for an unknown shape or
a download that fails.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PROXY = '''

# --- boxlite-chaos shape build (not upstream): {what}
_ChaosNativeBoxlite = Boxlite


class Boxlite:  # noqa: F811 - a proxy: every other call goes to the native runtime
    def __init__(self, *args, **kwargs):
        self._rt = _ChaosNativeBoxlite(*args, **kwargs)

    @classmethod
    def default(cls):
        obj = cls.__new__(cls)
        obj._rt = _ChaosNativeBoxlite.default()
        return obj

    def __getattr__(self, name):
        return getattr(self._rt, name)
{methods}'''

SHAPES = {
    "get-info-deleted": ("the live get_info of a box whose init failed answers None", '''
    async def get_info(self, box_id):
        info = await self._rt.get_info(box_id)
        if info is not None and str(info.state.status).lower().endswith("configured"):
            listed = [i for i in await self._rt.list_info() if i.id == info.id]
            if listed and str(listed[0].state.status).lower().endswith("failed"):
                return None
        return info
'''),
    "noop-shutdown": ("shutdown() answers at once and does nothing", '''
    async def shutdown(self, timeout=None):
        return None
'''),
}


def _record_line(name: str, data: bytes) -> list[str]:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [name, f"sha256={digest}", str(len(data))]


def build(shape: str, release_wheel: Path, out_dir: Path) -> Path:
    """Write the shaped wheel into `out_dir` (same file name as the release's); return it."""
    what, methods = SHAPES[shape]
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / release_wheel.name
    with zipfile.ZipFile(release_wheel) as src, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        init = src.read("boxlite/__init__.py") + PROXY.format(what=what,
                                                              methods=methods).encode()
        record = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        for item in src.infolist():
            if item.filename == "boxlite/__init__.py":
                dst.writestr(item, init)
            elif item.filename == record:
                rows = list(csv.reader(io.StringIO(src.read(record).decode())))
                rows = [_record_line(r[0], init) if r and r[0] == "boxlite/__init__.py" else r
                        for r in rows]
                buf = io.StringIO()
                csv.writer(buf, lineterminator="\n").writerows(rows)
                dst.writestr(item, buf.getvalue())
            else:
                dst.writestr(item, src.read(item.filename))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--release", default="0.10.8")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                              "--only-binary", ":all:", "--python-version", "3.11",
                              f"boxlite=={args.release}", "-d", tmp],
                             capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("boxlite-*.whl"))
        if got.returncode != 0 or not wheels:
            raise SystemExit(f"shape_wheel: could not download boxlite=={args.release}: "
                             f"{(got.stderr or got.stdout).strip()[-300:]}")
        print(build(args.shape, wheels[0], args.out_dir))


if __name__ == "__main__":
    main()
