#!/usr/bin/env bash
# The VM lane: real Linux guests under qemu (Debian 12, systemd as PID 1, the system bus,
# Nix with its daemon, this checkout's agent as a systemd service), driven by the real
# `hostctl` from this machine. See docs/VM-LANE.md.
#   tests/vm/run.sh            the lane (CI runs it after tests/run.sh)
#   tests/vm/run.sh -- ARGS    ARGS go to the test binaries (e.g. a test name filter)
#   tests/vm/run.sh --full     every power-cut point of scenario 8 (CI runs a fixed subset);
#                              also with -- ARGS after it
# The guest image is built from Debian's packages on first use and cached under
# HOSTCTL_VM_CACHE (default /var/cache/hostctl-vm), keyed by what goes into it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
test_args=()
export HOSTCTL_VM_FULL=0
if [ "${1:-}" = --full ]; then
  HOSTCTL_VM_FULL=1
  shift
fi
case ${1:-} in
  '') ;;
  --) shift; test_args=("$@") ;;
  *) echo "tests/vm/run.sh: unknown argument '$1' (expected nothing, --full, or -- TEST-ARGS)" >&2; exit 2 ;;
esac
# shellcheck source=tests/vm/lane.sh
. tests/vm/lane.sh   # prerequisites, the image, the accelerator, the qemu reaper

export HOSTCTL_NIX_TRIXIE="${HOSTCTL_NIX_TRIXIE:-/opt/hostctl-nix-trixie}"
# One guest set at a time: the machine's cores are what the guests run on.
cargo test --no-fail-fast -p hostctl-tests --test 'vm_*' -- --test-threads=1 "${test_args[@]}"
