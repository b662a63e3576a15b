#!/usr/bin/env bash
# bench/incremental.sh: what incremental evaluation costs and saves.
#
#   bench/incremental.sh                          the example fleet's 4 hosts
#   NIXPKGS=/path/to/nixpkgs bench/incremental.sh plus a fleet of real NixOS hosts
#
# Measures, side by side in one run:
#   1. tracing: one host's `nix eval` (hostctl's exact argv) plain, under hostctl's
#      strace wrapper, and under the former one that also traced lookups, per host;
#   2. recording: `hostctl eval` of the whole fleet with an empty cache (every evaluation
#      traced, checked against git, its closure searched, recorded) against
#      `hostctl --no-eval-cache eval` (plain evaluations, nothing recorded);
#   3. incremental: after a commit that changes one host's file, `hostctl eval` (the
#      other hosts reused) against `hostctl --no-eval-cache eval` (every host evaluated),
#      with how many hosts each evaluated (from hostctl's log) and a check that both
#      give the same .drv for every host.
#
# Environment (all optional):
#   HOSTCTL=/path       hostctl binary (default: `cargo build --release -p hostctl`)
#   NIXPKGS=/path       a nixpkgs checkout (tested with 20.09) for the real fleet
#   REAL_HOSTS=20       real fleet size
#   RUNS=3              timed runs per row (median, min and max are printed)
#
# Prints a Markdown table on stdout; progress goes to stderr.

set -euo pipefail
export LC_ALL=C
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export NIX_CONFIG=$'experimental-features = nix-command flakes\nsubstituters =\n'
RUNS=${RUNS:-3}
REAL_HOSTS=${REAL_HOSTS:-20}
NIXPKGS=${NIXPKGS:-}

log() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/hostctl-bench-inc.XXXXXX")
# Nix's caches and hostctl's evaluation cache private to this run.
export XDG_CACHE_HOME=$work/cache HOSTCTL_CACHE_DIR=$work/hostctl-cache
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

for tool in nix git jq strace; do command -v "$tool" >/dev/null || die "$tool is not on PATH"; done
if [[ -n ${HOSTCTL:-} ]]; then
    hostctl=$HOSTCTL
else
    log "building hostctl (release)"
    (cd "$root" && cargo build --release -q -p hostctl) >&2
    hostctl=${CARGO_TARGET_DIR:-$root/target}/release/hostctl
fi

commit() { git -C "$1" -c user.name=bench -c user.email=bench@localhost -c commit.gpgsign=false commit -qam "$2"; }

# make_example DIR: a copy of examples/fleet, committed.
make_example() {
    cp -r "$root/examples/fleet" "$1"
    git -C "$1" init -q
    git -C "$1" add -A
    (cd "$1" && nix flake update 2>/dev/null)
    git -C "$1" add -A
    commit "$1" "example fleet"
}

# make_real DIR N: the real NixOS fleet of bench/eval.sh.
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

# seconds CMD...: wall seconds of one run (stdout to $work/out.txt, stderr to $work/err.txt).
seconds() {
    local t0=$EPOCHREALTIME
    "$@" >"$work/out.txt" 2>"$work/err.txt" || { cat "$work/err.txt" >&2; die "failed: $*"; }
    awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f\n", b - a }'
}

# stats: "median (min–max)" of the numbers on stdin.
stats() { sort -g | awk '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f (%.2f–%.2f)", m, v[1], v[NR] }'; }

rows=()
row() { rows+=("| $1 | $2 | $3 | $4 |"); }

# The strace wrapper hostctl puts in front of `nix eval`, its call list read from
# controller/src/evaltrace.rs (TRACED: opens and listings, no lookups); and, for
# comparison, the wrapper before that (`%file`: every lookup stops the evaluator too).
traced=$(sed -n '/^pub const TRACED/,/";$/p' "$root/controller/src/evaltrace.rs" | tr -d '\n\\ ' | sed 's/^[^"]*"\([^"]*\)".*/\1/')
[[ $traced == open,* ]] || die "cannot read TRACED from controller/src/evaltrace.rs"
seccomp=(--seccomp-bpf)
strace -f --seccomp-bpf -q -o /dev/null true 2>/dev/null || seccomp=()
tracer=(strace -f "${seccomp[@]}" -q -y -e signal=none -e "trace=$traced" -o "$work/trace")
full_tracer=(strace -f "${seccomp[@]}" -q -y -e signal=none -e trace=%file,getdents,getdents64,fchdir -o "$work/full-trace")
apply='t: { drv = t.drvPath; out = t.outPath; system = t.system or null; }'

# bench_tracing FLEET_DIR LABEL HOSTS...: per host, plain vs traced nix eval (and under
# the former `%file` wrapper).
bench_tracing() {
    local dir=$1 label=$2 h i plain traced full
    shift 2
    for h in "$@"; do
        local nix=(nix --extra-experimental-features 'nix-command flakes' eval --json --no-update-lock-file
            "$dir#nixosConfigurations.$h.config.system.build.toplevel" --apply "$apply")
        "${nix[@]}" >/dev/null 2>&1 # warm: the .drv files exist, the source is in the store
        plain=() traced=() full=()
        for ((i = 0; i < RUNS; i++)); do
            plain+=("$(seconds "${nix[@]}")")
            traced+=("$(seconds "${tracer[@]}" -- "${nix[@]}")")
            full+=("$(seconds "${full_tracer[@]}" -- "${nix[@]}")")
        done
        row "$label" "nix eval of $h, plain / traced / \`%file\` traced (before)" \
            "$(printf '%s\n' "${plain[@]}" | stats) / $(printf '%s\n' "${traced[@]}" | stats) / $(printf '%s\n' "${full[@]}" | stats)" \
            "trace: $(wc -l <"$work/trace") lines, $(($(stat -c %s "$work/trace") / 1024)) KiB (before: $(wc -l <"$work/full-trace") lines)"
        log "$label $h: plain ${plain[*]}, traced ${traced[*]}, %file-traced ${full[*]}"
    done
}

# evaluated: how many hosts the last hostctl run evaluated (0 if it evaluated none).
evaluated() { grep -o 'evaluating hosts=[0-9]*' "$work/err.txt" | head -n1 | cut -d= -f2 | grep . || echo 0; }

# bench_fleet DIR LABEL HOST_FILE: rows 2 and 3 for one fleet; HOST_FILE is changed.
bench_fleet() {
    local dir=$1 label=$2 file=$3 i plain=() recorded=() incremental=() full=() n_inc n_full
    local h=(--fleet "$dir/fleet.yaml" --json)
    RUST_LOG=info seconds "$hostctl" "${h[@]}" --no-eval-cache eval >/dev/null # warm
    for ((i = 0; i < RUNS; i++)); do
        plain+=("$(RUST_LOG=info seconds "$hostctl" "${h[@]}" --no-eval-cache eval)")
        rm -rf "$HOSTCTL_CACHE_DIR"
        recorded+=("$(RUST_LOG=info seconds "$hostctl" "${h[@]}" eval)")
    done
    local n
    n=$(jq '.hosts | length' "$work/out.txt")
    [[ $(ls "$HOSTCTL_CACHE_DIR"/eval/*.reads.json | wc -l) == "$n" ]] || die "$label: not every host was recorded"
    row "$label" "\`hostctl eval\` of $n hosts: --no-eval-cache / empty cache (traced, recorded)" \
        "$(printf '%s\n' "${plain[@]}" | stats) / $(printf '%s\n' "${recorded[@]}" | stats)" "every host evaluated in both"
    for ((i = 0; i < RUNS; i++)); do
        sed -i "s/motd = \"/motd = \"change $i, /" "$dir/$file"
        commit "$dir" "change $file ($i)"
        incremental+=("$(RUST_LOG=info seconds "$hostctl" "${h[@]}" eval)")
        n_inc=$(evaluated)
        jq -S '.hosts | map_values(.drv_path)' "$work/out.txt" >"$work/inc.json"
        full+=("$(RUST_LOG=info seconds "$hostctl" "${h[@]}" --no-eval-cache eval)")
        n_full=$(evaluated)
        jq -S '.hosts | map_values(.drv_path)' "$work/out.txt" | cmp -s - "$work/inc.json" ||
            die "$label: incremental and full evaluation disagree"
        log "$label: commit $i: incremental ${incremental[-1]}s ($n_inc evaluated), full ${full[-1]}s ($n_full)"
    done
    row "$label" "after a commit changing $file: \`hostctl eval\` / \`hostctl --no-eval-cache eval\`" \
        "$(printf '%s\n' "${incremental[@]}" | stats) / $(printf '%s\n' "${full[@]}" | stats)" \
        "hosts evaluated: $n_inc / $n_full; same .drv for every host"
}

log "example fleet"
make_example "$work/example"
bench_tracing "$work/example" "example (4 hosts)" arm1 db1 web1 web2
bench_fleet "$work/example" "example (4 hosts)" hosts/web1.nix

if [[ -n $NIXPKGS ]]; then
    NIXPKGS=$(cd "$NIXPKGS" && pwd)
    log "real NixOS fleet of $REAL_HOSTS hosts ($NIXPKGS)"
    make_real "$work/real" "$REAL_HOSTS"
    bench_tracing "$work/real" "real ($REAL_HOSTS hosts)" r001 r002
    bench_fleet "$work/real" "real ($REAL_HOSTS hosts)" hosts/r001.nix
else
    log "NIXPKGS is not set: real NixOS hosts skipped"
fi

echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') by \`bench/incremental.sh\` on $(nproc) cores, $(nix --version), $(strace -V | head -n1);"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg). Seconds are wall time, median (min–max) of $RUNS runs."
echo
echo "| fleet | what | seconds | notes |"
echo "| --- | --- | ---: | --- |"
printf '%s\n' "${rows[@]}"
