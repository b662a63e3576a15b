#!/usr/bin/env bash
# Installs what the VM lane needs on a fresh Debian 12 machine, if missing: qemu (the
# x86_64 system emulator and qemu-img), debootstrap (the guest image), e2fsprogs
# (mkfs.ext4 -d), binutils (objcopy strips the agent for the guest), an ssh client.
# Installs only as root; otherwise says what is missing.
set -euo pipefail
need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
command -v mkfs.ext4 >/dev/null 2>&1 || [ -x /usr/sbin/mkfs.ext4 ] || need+=(e2fsprogs)
command -v objcopy >/dev/null 2>&1 || need+=(binutils)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing: ${need[*]} (install them, e.g. sudo apt-get install -y --no-install-recommends ${need[*]})" >&2
    exit 1
  fi
  echo "installing ${need[*]} with apt-get" >&2
  apt-get update -qq
  # --no-install-recommends: qemu's recommendations are a desktop's worth of packages.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
