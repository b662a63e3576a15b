#!/usr/bin/env bash
# Runs hostctl on the example fleet: lint it, evaluate every host, build every host.
# The fleet lives in this repository's git tree, so Nix sees exactly what is committed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash tests/support/prereqs.sh
cargo build --quiet -p hostctl
hostctl=(target/debug/hostctl --fleet examples/fleet/fleet.yaml)
export NIX_CONFIG="${NIX_CONFIG:-}
substituters =
extra-platforms = aarch64-linux"
# extra-platforms: arm1 is an aarch64-linux host. Its example builders are /bin/sh
# scripts, so once Nix accepts the platform they run here natively; a real aarch64
# system needs binfmt emulation (hostctl-agent's `binfmt` section) or an aarch64 builder.

# Nix 2.8 reads locked relative `path:` inputs only from the store; on a store that has
# never seen them, `nix flake update` puts them there (flake.lock stays byte-identical).
if ! (cd examples/fleet && nix --extra-experimental-features 'nix-command flakes' flake metadata --no-update-lock-file >/dev/null 2>&1 \
      && "$root/${hostctl[0]}" --fleet fleet.yaml eval --on web1 >/dev/null 2>&1); then
  (cd examples/fleet && nix --extra-experimental-features 'nix-command flakes' flake update 2>/dev/null)
  git diff --quiet -- examples/fleet/flake.lock || { echo "flake.lock changed unexpectedly" >&2; exit 1; }
fi

set -x
"${hostctl[@]}" check
"${hostctl[@]}" eval
"${hostctl[@]}" build
"${hostctl[@]}" --json build --on @web
