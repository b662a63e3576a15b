#!/usr/bin/env bash
# Installs what hostctl's example and tests need on a fresh Debian machine, if missing:
# git, Nix (Debian's nix-bin), a C compiler, iproute2 and python3 (simulated hosts).
# With --test, also what the tests use (dbus, qemu-user-static, an aarch64 cross
# compiler, sshd, strace, openssl) and the private Nix 2.26 the Nix-layer tests run against. Installs
# only as root; otherwise says what is missing. With --vm, what the VM lane
# (tests/vm/run.sh) needs instead: qemu (the x86_64 system emulator and qemu-img),
# debootstrap (the guest image), e2fsprogs (mkfs.ext4 -d), binutils (objcopy strips the
# agent for the guests), an ssh client, OVMF, sfdisk, dosfstools and mtools (the UEFI
# guests' firmware and ESP); without their recommendations (a desktop's worth
# of packages for qemu).
set -euo pipefail

need=()
command -v git >/dev/null 2>&1 || need+=(git)
command -v nix >/dev/null 2>&1 || need+=(nix-bin)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v ip >/dev/null 2>&1 || need+=(iproute2)          # simulated hosts (network namespaces)
command -v python3 >/dev/null 2>&1 || need+=(python3)      # a stand-in server in the harness tests
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config) # git2's https feature finds OpenSSL with it
[ -e /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
if [ "${1:-}" = --test ]; then
  command -v dbus-daemon >/dev/null 2>&1 || need+=(dbus)                    # D-Bus tests: a private bus
  command -v dbus-send >/dev/null 2>&1 || need+=(dbus-bin)                  # D-Bus tests: calls as another user
  command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static) # binfmt tests
  command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
  command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server) # pull over ssh://
  command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
  command -v gpg >/dev/null 2>&1 || need+=(gnupg)                         # OpenPGP-signed commits (commit_signatures.rs)
  command -v strace >/dev/null 2>&1 || need+=(strace)                      # incremental evaluation traces nix eval
  command -v openssl >/dev/null 2>&1 || need+=(openssl)                    # certificates for https health checks
fi
recommends=()
if [ "${1:-}" = --vm ]; then
  need=()
  recommends=(--no-install-recommends)
  command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
  command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
  command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
  command -v mkfs.ext4 >/dev/null 2>&1 || [ -x /usr/sbin/mkfs.ext4 ] || need+=(e2fsprogs)
  command -v objcopy >/dev/null 2>&1 || need+=(binutils)
  command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
  # The UEFI guests: their firmware, and their ESP (a GPT image with a FAT partition,
  # written without a loop mount).
  [ -e /usr/share/OVMF/OVMF_CODE_4M.fd ] || need+=(ovmf)
  command -v sfdisk >/dev/null 2>&1 || [ -x /usr/sbin/sfdisk ] || need+=(fdisk)
  command -v mkfs.fat >/dev/null 2>&1 || [ -x /usr/sbin/mkfs.fat ] || need+=(dosfstools)
  command -v mcopy >/dev/null 2>&1 || need+=(mtools)
fi
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing: ${need[*]} (install them, e.g. sudo apt-get install -y ${need[*]})" >&2
    exit 1
  fi
  echo "installing ${need[*]} with apt-get" >&2
  apt-get update -qq
  # No service may start on install (openssh-server would start the host's sshd): the
  # tests start their own daemons, on their own ports, and stop them.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${recommends[@]}" "${need[@]}" >/dev/null
  # A qemu-utils newer than bookworm's (these machines may come with a backport) conflicts
  # with bookworm's qemu-system-x86, and apt resolves that by removing it: qemu-img is then
  # gone, so it is installed again, now bookworm's.
  if [ "${1:-}" = --vm ] && ! command -v qemu-img >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${recommends[@]}" qemu-utils >/dev/null
  fi
  [ "$created_policy" = 1 ] && rm -f "$policy"
fi

if [ "${1:-}" = --test ]; then
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  bash "$here/install-nix-trixie.sh" "${HOSTCTL_NIX_TRIXIE:-/opt/hostctl-nix-trixie}" >&2
fi
