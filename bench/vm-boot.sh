#!/usr/bin/env bash
# bench/vm-boot.sh [N [uefi|resume]]: N times (default 3), a fresh VM lane guest (with `uefi`, the
# UEFI variant: OVMF and systemd-boot; with `resume`, resumed from the lane's saved template
# guest, tests/src/vm/resume.rs) from power-on to its
# agent answering, then a reboot of it to its agent answering again. Same image and
# accelerator choice as tests/vm/run.sh. Prints a Markdown table (docs/VM-LANE.md has
# the figures); asserts nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=tests/vm/lane.sh
. tests/vm/lane.sh
cargo run --quiet -p hostctl-tests --bin bench-vm-boot -- "${1:-3}" ${2:+"$2"}
