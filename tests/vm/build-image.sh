#!/usr/bin/env bash
# Builds the VM lane's guest image from Debian's packages, or reuses the cached one.
#   build-image.sh CACHE_DIR   -> prints the image directory (vmlinuz, initrd.img, root.img,
#                                 esp.img: the UEFI guests' boot disk)
# The cache key is a hash of everything that goes into the image: this script,
# packages.txt, guest-init.sh and the mirror. What changes per build of this checkout (the
# agent binary, its unit, agent.yaml) is not in the image: tests/vm/run.sh puts it on a
# small seed disk that guest-init.sh installs at boot, so rebuilding the agent does not
# rebuild the image. Mounts are made inside a private mount namespace (unshare), so they
# vanish with it, also when this script fails.
set -euo pipefail
# Only the image directory goes to stdout (the caller captures it); everything the build's
# tools print (mke2fs says "Creating regular file ...") goes to stderr.
exec 3>&1 1>&2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${1:?usage: build-image.sh CACHE_DIR}

# The mirror this machine's apt uses (deb.debian.org through the package proxy here).
mirror=$(grep -rhoE '^(URIs:[[:space:]]*|deb[[:space:]]+)https?://[^[:space:]]+/debian/?([[:space:]]|$)' \
  /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | grep -oE 'https?://[^[:space:]]+' | head -n1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
suite=bookworm

key=$( { cat "$here/build-image.sh" "$here/packages.txt" "$here/guest-init.sh"; echo "$mirror $suite"; } | sha256sum | cut -c1-16)
image="$cache/image-$key"
if [ -s "$image/root.img" ]; then
  echo "$image" >&3
  exit 0
fi
mkdir -p "$cache"
# Older images are of no further use; the disk is shared.
find "$cache" -maxdepth 1 -name 'image-*' -type d ! -name "image-$key" -exec rm -rf {} +
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"
pkgs() { sed -n "s/^$1: //p" "$here/packages.txt"; }

# esp_image IMAGE LOADER KERNEL_DIR: the UEFI guests' boot disk (tests/src/vm/guest.rs boots
# each over a qcow2 overlay of it, with OVMF): a GPT with one EFI system partition (FAT32,
# written with mtools, no loop mount) holding systemd-boot as the removable-media loader
# (EFI/BOOT/BOOTX64.EFI) and one entry, `debian.conf`, for the image's own system (Debian's
# systemd through /sbin/hostctl-vm-init, as the direct-kernel guests boot). Deployed test
# systems add their `nixos-generation-<N>.conf` entries (tests/vm/fleet).
esp_image() {
  local esp=$1 loader=$2 kernels=$3 at part=$work/esp.d
  truncate -s 256M "$esp"
  printf 'label: gpt\nstart=2048, size=520192, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="ESP"\n' \
    | sfdisk -q "$esp" >/dev/null
  mkfs.fat -F 32 -n ESP --offset 2048 "$esp" $((520192 / 2)) >/dev/null
  at="$esp@@1M"
  mkdir -p "$part"
  printf 'timeout 0\ndefault debian.conf\n' >"$part/loader.conf"
  printf '%s\n' 'title Debian (the guest image)' 'linux /EFI/debian/vmlinuz' 'initrd /EFI/debian/initrd.img' \
    'options root=/dev/vda rw console=ttyS0 init=/sbin/hostctl-vm-init quiet systemd.show_status=0 panic=5' \
    >"$part/debian.conf"
  MTOOLS_SKIP_CHECK=1 mmd -i "$at" ::/EFI ::/EFI/BOOT ::/EFI/debian ::/EFI/nixos ::/loader ::/loader/entries
  MTOOLS_SKIP_CHECK=1 mcopy -i "$at" "$loader" ::/EFI/BOOT/BOOTX64.EFI
  MTOOLS_SKIP_CHECK=1 mcopy -i "$at" "$kernels/vmlinuz" "$kernels/initrd.img" ::/EFI/debian/
  MTOOLS_SKIP_CHECK=1 mcopy -i "$at" "$part/loader.conf" ::/loader/loader.conf
  MTOOLS_SKIP_CHECK=1 mcopy -i "$at" "$part/debian.conf" ::/loader/entries/debian.conf
}

echo "building the guest image ($suite from $mirror) in $work" >&2
start=$SECONDS
debootstrap --variant=minbase --include="$(pkgs debootstrap | tr ' ' ,)" "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; echo "debootstrap failed (log above)" >&2; exit 1; }
echo "debootstrap: $((SECONDS - start)) s" >&2

# Inside the chroot: no service may start (policy-rc.d). The initramfs carries only what
# mounting the root needs (virtio PCI and block, ext4): the default (MODULES=most) is three
# times the size and takes seconds more to unpack and probe under TCG.
# shellcheck disable=SC2016
unshare --mount --propagation private bash -euo pipefail -c '
  root=$1; shift
  mount -t proc proc "$root/proc"
  mount -t sysfs sys "$root/sys"
  mount --bind /dev "$root/dev"
  mount -t devpts devpts "$root/dev/pts" 2>/dev/null || true
  printf "#!/bin/sh\nexit 101\n" >"$root/usr/sbin/policy-rc.d"; chmod +x "$root/usr/sbin/policy-rc.d"
  DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends "$@"
  printf "MODULES=list\n" >"$root/etc/initramfs-tools/conf.d/hostctl-vm"
  printf "virtio_pci\nvirtio_blk\next4\n" >>"$root/etc/initramfs-tools/modules"
  chroot "$root" update-initramfs -u -k all
  rm -f "$root/usr/sbin/policy-rc.d"
' _ "$root" $(pkgs apt) >"$work/apt.log" 2>&1 || { tail -n 30 "$work/apt.log" >&2; echo "apt-get in the chroot failed (log above)" >&2; exit 1; }
echo "packages installed: $((SECONDS - start)) s" >&2

# The guest's configuration: static address on qemu's user network, root on /dev/vda,
# a user for the D-Bus refusal test, Nix with flakes and the daemon, nothing that would
# slow the boot down or wake up during a test.
echo hostctl-vm >"$root/etc/hostname"
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' >"$root/etc/fstab"
mkdir -p "$root/etc/systemd/network"
cat >"$root/etc/systemd/network/10-qemu.network" <<'NET'
[Match]
Name=en* eth*
[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
LinkLocalAddressing=no
IPv6AcceptRA=no
NET
ln -sf /lib/systemd/system/systemd-networkd.service "$root/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
  systemd-networkd-wait-online.service getty@tty1.service; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
mkdir -p "$root/etc/nix"
cat >"$root/etc/nix/nix.conf" <<'NIX'
experimental-features = nix-command flakes
substituters =
sandbox = false
NIX
chroot "$root" systemctl enable nix-daemon.socket ssh.service
chroot "$root" useradd --create-home --shell /bin/sh tester
chroot "$root" passwd -d root >/dev/null
install -m 0755 "$here/guest-init.sh" "$root/sbin/hostctl-vm-init"
# One ssh host key, made here: generating all of them at first boot takes ~15 s under TCG.
# The image is for tests only; every guest booted from it has the same host key.
rm -f "$root"/etc/ssh/ssh_host_*
ssh-keygen -q -t ed25519 -N "" -C hostctl-vm -f "$root/etc/ssh/ssh_host_ed25519_key"
printf 'HostKey /etc/ssh/ssh_host_ed25519_key\nUseDNS no\n' >"$root/etc/ssh/sshd_config.d/hostctl-vm.conf"
# Debian's qemu-user-static registers every emulator at boot (systemd-binfmt); in the guests
# only the agent may register, so the binfmt tests see the agent's work and nothing else.
rm -f "$root"/usr/lib/binfmt.d/qemu-*.conf
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*

mkdir -p "$work/out"
cp "$(readlink -f "$root/vmlinuz")" "$work/out/vmlinuz"
cp "$(readlink -f "$root/initrd.img")" "$work/out/initrd.img"
# The UEFI guests mount their ESP on /boot, which hides Debian's kernel there: /vmlinuz and
# /initrd.img (what the test systems' `kernel` and `initrd` name) become the files.
cp --remove-destination "$work/out/vmlinuz" "$root/vmlinuz"
cp --remove-destination "$work/out/initrd.img" "$root/initrd.img"
esp_image "$work/out/esp.img" "$root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$work/out"
# Room for the store paths the tests import; a sparse file, so unused space costs nothing.
used=$(du -sm "$root" | cut -f1)
mkfs.ext4 -q -F -L hostctl-vm -d "$root" "$work/out/root.img" "$((used + 3072))M"
rm -rf "$root"
mv "$work/out" "$image"
echo "guest image built in $((SECONDS - start)) s: $image" >&2
echo "$image" >&3
