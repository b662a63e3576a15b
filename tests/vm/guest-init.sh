#!/bin/sh
# PID 1 of the guest before systemd (kernel command line `init=/sbin/hostctl-vm-init`),
# like NixOS's stage 2: installs the lane's seed disk (/dev/vdb: the agent binary, its
# unit, agent.yaml, the D-Bus policy, the controller's ssh key), then runs the system the
# next boot is to run, if a deployment made one (/nix/var/nix/hostctl-vm/next-boot, written
# by the fixture switch-to-configuration's `boot`, `switch`), whose `init` activates it and
# execs systemd. Without one, Debian's systemd starts directly.
#   hostctl-vm-init --prepare   only the installation (and the ESP), then exits
#   hostctl-vm-init --resumed   in a guest just resumed from the lane's template (a booted
#                               guest saved by qemu: tests/src/vm/resume.rs), run over ssh:
#                               see resumed() below
# A seed disk without agent.yaml is the template's: everything but the agent is installed
# and the agent is not enabled, so no agent ever runs under the template's identity.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
seed=/opt/hostctl
# A resumed guest's own files (hostname, agent.yaml, identity, ssh key, secrets), written
# over ssh after the resume; at every later boot they lie over the shared template seed.
own=/var/lib/hostctl-vm/seed
lower=/var/lib/hostctl-vm/template-seed

mount_seed() {
  mkdir -p "$seed"
  if [ -d "$own" ]; then
    mkdir -p "$lower"
    mount -o ro /dev/vdb "$lower" && mount -t overlay overlay -o "ro,lowerdir=$own:$lower" "$seed"
  else
    mount -o ro /dev/vdb "$seed"
  fi
}

install_seed() {
  install -D -m 0644 "$seed/hostctl-agent.service" /etc/systemd/system/hostctl-agent.service
  install -D -m 0644 "$seed/org.hostctl.Agent1.conf" /etc/dbus-1/system.d/org.hostctl.Agent1.conf
  install -D -m 0600 "$seed/authorized_keys" /root/.ssh/authorized_keys
  [ -e "$seed/hostname" ] && install -D -m 0644 "$seed/hostname" /etc/hostname
  if [ -e "$seed/agent.yaml" ]; then
    install -D -m 0600 "$seed/agent.yaml" /etc/hostctl/agent.yaml
    mkdir -p /etc/systemd/system/multi-user.target.wants
    ln -sf /etc/systemd/system/hostctl-agent.service /etc/systemd/system/multi-user.target.wants/hostctl-agent.service
  fi
}

# The resumed guest is this host from now on: its files over the template's seed, its
# hostname, the clock (the saved guest's clock stopped at the save; qemu's RTC follows
# this machine's), fresh randomness (every guest resumed from one template had the same
# kernel random state: $2 is this machine's randomness, mixed in, then the kernel's CRNG is
# reseeded by RNDRESEEDCRNG), then the agent starts.
resumed() {
  umount "$seed" || return 1
  mount_seed || return 1
  install_seed
  hostname -F /etc/hostname
  date -u -s "@$(cat /sys/class/rtc/rtc0/since_epoch)" >/dev/null
  printf '%s' "$1" >/dev/urandom
  perl -e 'open(my $f, ">", "/dev/urandom") or die "/dev/urandom: $!"; ioctl($f, 0x5207, 0) or die "RNDRESEEDCRNG: $!"'
  systemctl daemon-reload
  systemctl start --no-block hostctl-agent.service
}

if [ "${1-}" = --resumed ]; then
  resumed "${2-}" || exit 1
  exit 0
fi
if mount_seed 2>/dev/null; then
  install_seed
fi
# UEFI guests (OVMF; tests/src/vm/guest.rs): the third disk is the EFI system partition,
# mounted on /boot as on NixOS: systemd-boot's entries and loader.conf, bootctl's ESP.
if [ -d /sys/firmware/efi ] && [ -b /dev/vdc1 ]; then
  mount -t vfat -o umask=0077 /dev/vdc1 /boot || echo "hostctl-vm-init: cannot mount the ESP /dev/vdc1 on /boot" >&2
fi
# A UEFI guest boots a test system's `init` directly (its loader entry says
# init=<toplevel>/init): that init runs this script with --prepare for the part above.
export HOSTCTL_VM_PREPARED=1
[ "${1-}" = --prepare ] && exit 0
next=/nix/var/nix/hostctl-vm/next-boot
if [ -x "$next/init" ]; then
  exec "$next/init"
fi
exec /lib/systemd/systemd
