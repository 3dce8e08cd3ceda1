#!/usr/bin/env bash
# The two set-up-and-go commands (see README):
#   ./go gate [boxlite-chaos gate options]   the CI gate against the default runtime + report
#   ./go test [pytest options]               the harness self-tests plus the gate scenarios
# Each installs what it needs on a fresh Debian machine first (apt-get, then pip).
set -euo pipefail
cd "$(dirname "$0")"

# openssh-server: the fleet's self-test starts sshd hosts on loopback (never the service).
# nodejs, npm: the Node SDK's runtime host (`--runtime npm:@boxlite-ai/boxlite@X.Y.Z`).
# fuse3, python3-pyfuse3: the storage faults' FUSE layer (harness/faults/fuse_layer.py, system Python).
# strace: the points sweep's io_error kind (harness/faults/syscall.py: EIO injected at a point).
# qemu-utils: qemu-img check of the boxes' qcow2 disks after storage faults (disk_images_whole).
APT_PACKAGES=(busybox-static docker.io docker-registry skopeo openssh-server nodejs npm fuse3 python3-pyfuse3 qemu-utils strace)

need_root() { if [ "$(id -u)" != 0 ]; then echo "sudo"; fi; }

setup() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    # A nodejs from elsewhere (NodeSource) carries its own npm and conflicts with Debian's.
    if [ "$pkg" = npm ] && command -v npm >/dev/null; then continue; fi
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "go: installing Debian packages: ${missing[*]}"
    $(need_root) apt-get update -qq
    # docker.io must not start a system dockerd (with a bridge and iptables rules): the
    # harness starts its own, loopback-only. policy-rc.d 101 forbids service starts.
    local policy=/usr/sbin/policy-rc.d added_policy=""
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' | $(need_root) tee "$policy" >/dev/null
      $(need_root) chmod +x "$policy"; added_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive $(need_root) apt-get install -y -qq "${missing[@]}" >/dev/null
    if [ -n "$added_policy" ]; then $(need_root) rm -f "$policy"; fi
  fi
  local stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
  if [ ! -f "$stamp" ]; then
    echo "go: preparing .venv"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
    touch "$stamp"
  fi
}

cmd="${1:-}"; shift || true
case "$cmd" in
  gate)
    setup
    exec .venv/bin/boxlite-chaos gate "$@" ;;
  test)
    setup
    report="reports/test-$(date -u +%Y%m%dT%H%M%SZ)"
    # Workers chosen from this machine's cores and memory (harness/session/pace.py, which
    # says why on stderr); a -n among the options given wins, pytest taking the last one.
    workers=$(.venv/bin/python -m harness.session.pace)
    exec .venv/bin/python -m pytest tests scenarios -n "$workers" --dist worksteal \
      --chaos-record-durations --chaos-report "$report" --junitxml "$report/junit.xml" "$@" ;;
  *)
    echo "usage: ./go gate [options] | ./go test [pytest options]" >&2
    exit 2 ;;
esac
