# Stage 2 of a boot into this system, run as PID 1: by /sbin/hostctl-vm-init
# (tests/vm/guest-init.sh) when this system is the next boot's, or by the kernel when a
# UEFI guest's systemd-boot entry names it (init=<this>/init). Activates it, marks it
# booted, then hands PID 1 to the guest's systemd.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
# Booted by a UEFI guest's loader entry (init=<this>/init), not by /sbin/hostctl-vm-init:
# its preparation (the seed disk, the ESP on /boot) first.
if [ -z "${HOSTCTL_VM_PREPARED-}" ] && [ -x /sbin/hostctl-vm-init ]; then
  /sbin/hostctl-vm-init --prepare
fi
"$toplevel/activate" || echo "init: activating $toplevel failed; booting systemd anyway" >&2
ln -sfn "$toplevel" /run/booted-system
exec /lib/systemd/systemd
