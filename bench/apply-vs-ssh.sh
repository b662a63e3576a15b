#!/usr/bin/env bash
# bench/apply-vs-ssh.sh [N]: `hostctl apply` side by side with the way a user deploys
# without a fleet tool (nix copy --to ssh://root@host, then nix-env --set and
# switch-to-configuration over ssh), on the same N simulated hosts (default 10), each
# running a real agent and a real sshd in its own namespaces. Prints a Markdown table
# with the ratio. Needs root (namespaces), Nix, sshd (openssh-server).
#
# The work is in tests/src/bin/bench-ssh.rs; figures are in docs/PERFORMANCE.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export NIX_CONFIG=$'experimental-features = nix-command flakes\nsubstituters =\n'
exec cargo run --quiet --release -p hostctl-tests --bin bench-ssh "${1:-10}"
