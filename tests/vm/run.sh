#!/usr/bin/env bash
# The VM lane: real Linux guests under qemu (Debian 12, systemd as PID 1, the system bus,
# Nix with its daemon, this checkout's agent as a systemd service), driven by the real
# `hostctl` from this machine. See docs/VM-LANE.md.
#   tests/vm/run.sh            the lane (CI runs it after tests/run.sh)
#   tests/vm/run.sh --full     also the long scenarios (HOSTCTL_VM_FULL=1)
#   tests/vm/run.sh -- ARGS    ARGS go to the test binaries (e.g. a test name filter)
# The guest image is built from Debian's packages on first use and cached under
# HOSTCTL_VM_CACHE (default /var/cache/hostctl-vm), keyed by what goes into it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
full=0
test_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --full) full=1; shift ;;
    --) shift; test_args=("$@"); break ;;
    *) echo "tests/vm/run.sh: unknown argument '$1' (expected --full or -- TEST-ARGS)" >&2; exit 2 ;;
  esac
done
bash tests/support/prereqs.sh
bash tests/vm/prereqs.sh

cache=${HOSTCTL_VM_CACHE:-/var/cache/hostctl-vm}
image=$(bash tests/vm/build-image.sh "$cache")

# KVM only if it really works here: /dev/kvm can exist while qemu aborts or hangs with it.
# The probe boots the guest kernel with no root disk and panic=-1: it must reach its
# panic and exit (-no-reboot) within a bounded time; otherwise TCG (multi-threaded).
accel=tcg
if [ -w /dev/kvm ]; then
  probe=$(mktemp -d)
  if timeout 20 qemu-system-x86_64 -nodefaults -no-user-config -display none -accel kvm -cpu host -m 256 \
       -kernel "$image/vmlinuz" -append "console=ttyS0 panic=-1" -no-reboot -serial "file:$probe/console" \
       >/dev/null 2>&1 && grep -q 'Kernel panic' "$probe/console"; then
    accel=kvm
  fi
  rm -rf "$probe"
fi
echo "vm lane: image $image, accelerator $accel" >&2

# Every qemu the tests start writes its pid here; whatever is still running when the
# lane ends (a test process killed by a signal runs no destructor) is killed, by pid.
run_dir=$(mktemp -d /tmp/hostctl-vm-run.XXXXXX)
cleanup() {
  for pidfile in "$run_dir"/qemu-*.pid; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if [ -n "$pid" ] && grep -qa qemu-system "/proc/$pid/cmdline" 2>/dev/null; then
      echo "vm lane: killing qemu $pid left running ($pidfile)" >&2
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$run_dir"
}
trap cleanup EXIT

export HOSTCTL_VM_IMAGE=$image HOSTCTL_VM_ACCEL=$accel HOSTCTL_VM_FULL=$full HOSTCTL_VM_RUN_DIR=$run_dir
export HOSTCTL_NIX_TRIXIE="${HOSTCTL_NIX_TRIXIE:-/opt/hostctl-nix-trixie}"
# One guest set at a time: the machine's cores are what the guests run on.
cargo test -p hostctl-tests --test 'vm_*' -- --test-threads=1 "${test_args[@]}"
