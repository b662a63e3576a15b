# Sourced by tests/vm/run.sh and bench/vm-boot.sh from the workspace root: installs the
# lane's prerequisites, builds or reuses the guest image and picks the accelerator.
# Exports HOSTCTL_VM_IMAGE (the image directory), HOSTCTL_VM_ACCEL (kvm or tcg) and
# HOSTCTL_VM_RUN_DIR, and sets an EXIT trap that kills, by pid, every qemu still running
# that the run started (a test process killed by a signal runs no destructor).
bash tests/support/prereqs.sh
bash tests/support/prereqs.sh --vm

cache=${HOSTCTL_VM_CACHE:-/var/cache/hostctl-vm}
image=$(bash tests/vm/build-image.sh "$cache")
if [ ! -s "$image/root.img" ]; then
  echo "vm lane: tests/vm/build-image.sh printed '$image', which is not an image directory (no root.img)" >&2
  exit 1
fi

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

# Every qemu the tests start writes its pid file here (tests/src/vm/guest.rs).
run_dir=$(mktemp -d /tmp/hostctl-vm-run.XXXXXX)
reap_qemu() {
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
trap reap_qemu EXIT
export HOSTCTL_VM_IMAGE=$image HOSTCTL_VM_ACCEL=$accel HOSTCTL_VM_RUN_DIR=$run_dir
