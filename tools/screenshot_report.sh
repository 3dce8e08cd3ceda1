#!/usr/bin/env bash
# Render a run's report.html to a PNG with headless Chromium, to check the report by eye.
# Usage: tools/screenshot_report.sh RUN_FOLDER [OUT.png] [WIDTH,HEIGHT]
# Needs Chromium (Debian: apt-get install -y chromium). Rebuilds the report first.
set -euo pipefail

run=$(realpath "${1:?usage: $0 RUN_FOLDER [OUT.png] [WIDTH,HEIGHT]}")
out=$(realpath -m "${2:-$run/report.png}")
size=${3:-1400,2400}
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "screenshot_report: no chromium found (apt-get install -y chromium)" >&2; exit 2; }

"$python" -c 'import sys; from pathlib import Path; from harness.report.build import build_report; print(build_report(Path(sys.argv[1])))' "$run"

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# Offline and quiet: no network services, no first-run, a throwaway profile.
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --screenshot="$out" --window-size="$size" \
  "file://$run/report.html" 2>/dev/null
echo "$out"
