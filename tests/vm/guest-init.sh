#!/bin/sh
# PID 1 of the guest before systemd (kernel command line `init=/sbin/hostctl-vm-init`),
# like NixOS's stage 2: installs the lane's seed disk (/dev/vdb: the agent binary, its
# unit, agent.yaml, the D-Bus policy, the controller's ssh key), then runs the system the
# next boot is to run, if a deployment made one (/nix/var/nix/hostctl-vm/next-boot, written
# by the fixture switch-to-configuration's `boot`, `switch`), whose `init` activates it and
# execs systemd. Without one, Debian's systemd starts directly.
#   hostctl-vm-init --prepare   only the installation (and the ESP), then exits
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /opt/hostctl
if mount -o ro /dev/vdb /opt/hostctl 2>/dev/null; then
  install -D -m 0644 /opt/hostctl/hostctl-agent.service /etc/systemd/system/hostctl-agent.service
  install -D -m 0600 /opt/hostctl/agent.yaml /etc/hostctl/agent.yaml
  install -D -m 0644 /opt/hostctl/org.hostctl.Agent1.conf /etc/dbus-1/system.d/org.hostctl.Agent1.conf
  install -D -m 0600 /opt/hostctl/authorized_keys /root/.ssh/authorized_keys
  install -D -m 0644 /opt/hostctl/hostname /etc/hostname
  mkdir -p /etc/systemd/system/multi-user.target.wants
  ln -sf /etc/systemd/system/hostctl-agent.service /etc/systemd/system/multi-user.target.wants/hostctl-agent.service
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
