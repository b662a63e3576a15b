#!/usr/bin/env bash
# Installs what hostctl's example and tests need on a fresh Debian machine, if missing:
# git, Nix (Debian's nix-bin), a C compiler, iproute2 and python3 (simulated hosts).
# With --test, also the private Nix 2.26 the Nix-layer tests run against. Installs
# only as root; otherwise says what is missing.
set -euo pipefail

need=()
command -v git >/dev/null 2>&1 || need+=(git)
command -v nix >/dev/null 2>&1 || need+=(nix-bin)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v ip >/dev/null 2>&1 || need+=(iproute2)          # simulated hosts (network namespaces)
command -v python3 >/dev/null 2>&1 || need+=(python3)      # a stand-in server in the harness tests
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config) # git2's https feature finds OpenSSL with it
[ -e /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing: ${need[*]} (install them, e.g. sudo apt-get install -y ${need[*]})" >&2
    exit 1
  fi
  echo "installing ${need[*]} with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ "${1:-}" = --test ]; then
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  bash "$here/install-nix-trixie.sh" "${HOSTCTL_NIX_TRIXIE:-/opt/hostctl-nix-trixie}" >&2
fi
