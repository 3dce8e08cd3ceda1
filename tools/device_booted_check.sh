#!/usr/bin/env bash
# One short, prepared check of the booted tier on a lent machine with no network.
# Carries: .whl/ with a boxlite wheel for the machine's Python and a static busybox.
# Uses the machine's own pytest/psutil/hypothesis/jinja2; writes everything under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 BOXLITE_CHAOS_CACHE=/tmp/bcc \
       BOXLITE_CHAOS_BUSYBOX=$PWD/.whl/busybox XDG_DATA_HOME=/tmp/xdg
WHEEL=$(ls "$PWD"/.whl/boxlite-*cp$(python3 -c 'import sys;print(f"{sys.version_info[0]}{sys.version_info[1]}")')*.whl | head -1)
{
  echo "== machine"; uname -a; nproc; ls -la /dev/kvm 2>&1; python3 --version
  grep -c -E 'vmx|svm' /proc/cpuinfo 2>&1 | sed 's/^/cpu flags vmx|svm lines: /'
  echo "== doctor"; timeout 200 python3 -m harness.cli doctor --runtime "wheel:$WHEEL"; echo "doctor rc=$?"
} 2>&1 | tee "$OUT/doctor.txt"
echo "== booted tier + guest hang"
timeout 330 python3 -m pytest -p harness.plugin -p no:cacheprovider scenarios/booted \
  scenarios/init/test_guest_hang.py -k "not thawed" --runtime "wheel:$WHEEL" \
  --chaos-report "$OUT/run" -q -rs -x 2>&1 | tee "$OUT/pytest.txt"
echo "pytest rc=${PIPESTATUS[0]}"
cd "$OUT" && tar czf run.tgz run 2>/dev/null && rm -rf run
