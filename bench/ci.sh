#!/usr/bin/env bash
# bench/ci.sh: the CI-sized benchmarks, so regressions show up in every CI log. Small
# synthetic fleets, debug builds (CI already built them for the tests), figures printed as
# Markdown tables; nothing is asserted (speed is judged by reading, not by timed tests).
#
#   bench/ci.sh          as root (simulated hosts need namespaces)
#
# The full-size runs and their figures are in docs/PERFORMANCE.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export NIX_CONFIG=$'experimental-features = nix-command flakes\nsubstituters =\n'

run() {
    echo
    echo "## $*"
    cargo run --quiet -p hostctl-tests --bin "$@"
}

run bench-scale 20  # N loopback agents: apply, no-op apply, status; controller RSS
run bench-apply 3   # transfer vs nix copy, parallel vs one by one
run bench-ssh 3     # hostctl apply vs nix copy + ssh on the same simulated hosts
