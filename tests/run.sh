#!/usr/bin/env bash
# The test command: installs what is missing (Nix 2.8 from Debian, a private Nix 2.26
# for the Nix-layer tests), then runs every test of the workspace.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash tests/support/prereqs.sh --test
export HOSTCTL_NIX_TRIXIE="${HOSTCTL_NIX_TRIXIE:-/opt/hostctl-nix-trixie}"
exec cargo test --workspace "$@"
