#!/usr/bin/env bash
# Runs hostctl on the example fleet: lint it, evaluate every host, build every host.
# Works on a temporary copy in its own git repository (flakes see only tracked files),
# removed at exit, so nothing in this checkout changes.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash tests/support/prereqs.sh
cargo build --quiet -p hostctl
hostctl="$root/target/debug/hostctl"

work=$(mktemp -d -t hostctl-example.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -r examples/fleet "$work/fleet"
cd "$work/fleet"
git init -q -b main
git add -A
git -c user.name=hostctl -c user.email=hostctl@example.invalid commit -q -m "example fleet"

export NIX_CONFIG="${NIX_CONFIG:-}
substituters =
extra-platforms = aarch64-linux"
# extra-platforms: arm1 is an aarch64-linux host. Its example builders are /bin/sh
# scripts, so once Nix accepts the platform they run here natively; a real aarch64
# system needs binfmt emulation (hostctl-agent's `binfmt` section) or an aarch64 builder.

# The committed flake.lock is Nix 2.8's. Nix 2.8 reads its relative `path:` inputs only
# from the store, and `nix flake update` puts them there (the lock stays byte-identical);
# current Nix writes those inputs differently and rewrites the lock. Commit either way.
nix --extra-experimental-features 'nix-command flakes' flake update 2>/dev/null
git -c user.name=hostctl -c user.email=hostctl@example.invalid commit -q -am "lock for $(nix --version)" || true

set -x
"$hostctl" check
"$hostctl" eval
"$hostctl" build
"$hostctl" --json build --on @web
