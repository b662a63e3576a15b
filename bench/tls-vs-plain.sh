#!/usr/bin/env bash
# bench/tls-vs-plain.sh: issue 14's performance check, TLS agent API against the plain-HTTP
# build, side by side in one run. Each round runs `bench-apply` and `bench-scale` of one
# build, then of the other (A B, then B A the next round, so neither build always goes
# first), so whatever else loads the machine hits both alike; the medians over the rounds
# are printed per metric with the ratio TLS / plain, and the load average before and after.
#
#   bench/tls-vs-plain.sh PLAIN_DIR TLS_DIR     as root (simulated hosts need namespaces)
#
# PLAIN_DIR and TLS_DIR each hold one build's `hostctl`, `hostctl-agent`, `bench-apply` and
# `bench-scale` (each build's own benchmarks: the TLS one pins its agents' identities).
# Copy them out of the target dirs first, so a rebuild cannot change a binary mid-run.
# ROUNDS (3), APPLY_N (10) and SCALE_N (500) set the sizes; BENCHES ("apply scale") which
# benchmarks run (one `bench-scale 500` of a debug build takes ~15 min on a loaded 2-core
# machine, so its rounds may have to be run apart). Nothing is asserted: the figures
# go into docs/PERFORMANCE.md by hand. SUMMARY_OF=DIR prints the table again from the raw
# outputs of an earlier (or interrupted) run in DIR, over the rounds it completed.
set -euo pipefail

plain=${1:?usage: bench/tls-vs-plain.sh PLAIN_DIR TLS_DIR}
tls=${2:?usage: bench/tls-vs-plain.sh PLAIN_DIR TLS_DIR}
rounds=${ROUNDS:-3}
apply_n=${APPLY_N:-10}
scale_n=${SCALE_N:-500}
for dir in "$plain" "$tls"; do
    for bin in hostctl hostctl-agent bench-apply bench-scale; do
        [[ -x $dir/$bin ]] || { echo "tls-vs-plain: $dir/$bin: not an executable" >&2; exit 2; }
    done
done
export NIX_CONFIG=$'experimental-features = nix-command flakes\nsubstituters =\n'
out=${SUMMARY_OF:-$(mktemp -d /tmp/tls-vs-plain.XXXXXX)}
echo "raw outputs in $out"

# The value of the first table row whose first cell starts with $2, in file $1: the
# ${3:-1}th number of its second cell (seconds, or a ratio).
cell() {
    [[ -f $1 ]] || return 0
    awk -F'|' -v what="$2" -v nth="${3:-1}" 'index($2, " " what) == 1 {
        rest = $3
        for (i = 1; i <= nth; i++) {
            if (!match(rest, /[0-9]+(\.[0-9]+)?/)) exit
            value = substr(rest, RSTART, RLENGTH); rest = substr(rest, RSTART + RLENGTH)
        }
        print value; exit
    }' "$1"
}

# Runs one build's two benchmarks for round $2; $1 is plain or tls.
run_build() {
    local name=$1 round=$2 dir
    dir=$([[ $1 == plain ]] && echo "$plain" || echo "$tls")
    echo "round $round: $name (load $(cut -d' ' -f1-3 /proc/loadavg))"
    if [[ " ${BENCHES:-apply scale} " == *" apply "* ]]; then
        HOSTCTL_BIN_DIR=$dir "$dir/bench-apply" "$apply_n" >"$out/$name-apply-$round.md" 2>"$out/$name-apply-$round.log"
    fi
    if [[ " ${BENCHES:-apply scale} " == *" scale "* ]]; then
        HOSTCTL_BIN_DIR=$dir "$dir/bench-scale" "$scale_n" >"$out/$name-scale-$round.md" 2>"$out/$name-scale-$round.log"
    fi
}

if [[ -z ${SUMMARY_OF:-} ]]; then
    cut -d' ' -f1-3 /proc/loadavg >"$out/load-before"
    date -u '+%Y-%m-%d %H:%M UTC' >"$out/start"
    for ((round = 1; round <= rounds; round++)); do
        if ((round % 2)); then order=(plain tls); else order=(tls plain); fi
        for name in "${order[@]}"; do run_build "$name" "$round"; done
    done
    cut -d' ' -f1-3 /proc/loadavg >"$out/load-after"
fi
if [[ -n ${SUMMARY_OF:-} ]]; then
    # The rounds that have begun (an interrupted round's missing figures are left out).
    rounds=$(find "$out" -name '*-*-*.md' | sed 's/.*-\([0-9]*\)\.md$/\1/' | sort -n | tail -n 1)
fi
load_before=$(cat "$out/load-before")
load_after=$(cat "$out/load-after" 2>/dev/null || echo "n/a (interrupted)")
start=$(cat "$out/start")

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# metric label, benchmark (apply/scale), row prefix
metrics=(
    "bench-apply $apply_n: apply, all hosts in one batch|apply|\`hostctl apply\`, all hosts in one batch"
    "bench-apply $apply_n: apply --batch 1, one host after another|apply|\`hostctl apply --batch 1\`"
    "bench-apply $apply_n: deploy phase, all hosts in parallel|apply|deploy phase"
    "bench-apply $apply_n: CPU s of the controller (with its Nix) in the parallel apply|apply|CPU during the parallel apply|1"
    "bench-apply $apply_n: CPU s of the agents (with their Nix) in the parallel apply|apply|CPU during the parallel apply|2"
    "bench-scale $scale_n: first apply|scale|\`hostctl apply\`, first"
    "bench-scale $scale_n: no-op apply (evaluation cache)|scale|\`hostctl apply\` again"
    "bench-scale $scale_n: no-op apply, --no-eval-cache|scale|\`hostctl --no-eval-cache apply\`"
    "bench-scale $scale_n: status|scale|\`hostctl status\`"
)
echo
echo "Measured $start to $(date -u '+%H:%M UTC') by \`bench/tls-vs-plain.sh\`, $rounds rounds (plain first in odd rounds, TLS first in even ones);"
echo "load average (1, 5, 15 min) before: $load_before; after: $load_after."
echo
echo "| metric (s, median of $rounds) | plain HTTP | TLS | TLS / plain | plain runs | TLS runs |"
echo "| --- | ---: | ---: | ---: | --- | --- |"
for metric in "${metrics[@]}"; do
    IFS='|' read -r label bench prefix nth <<<"$metric"
    declare -A med=() runs=()
    for name in plain tls; do
        values=()
        for ((round = 1; round <= rounds; round++)); do
            values+=("$(cell "$out/$name-$bench-$round.md" "$prefix" "${nth:-1}")")
        done
        runs[$name]=$(IFS=' '; echo "${values[*]}")
        med[$name]=$(printf '%s\n' "${values[@]}" | { grep -E '^[0-9]' || true; } | median)
    done
    ratio=$(awk -v a="${med[plain]}" -v b="${med[tls]}" 'BEGIN { if (a + 0 > 0 && b ~ /^[0-9]/) printf "%.2f", b / a; else print "n/a" }')
    echo "| $label | ${med[plain]} | ${med[tls]} | $ratio | ${runs[plain]} | ${runs[tls]} |"
done
echo
for name in plain tls; do
    echo "$name, first apply's host results (bench-scale, per round): $(for f in "$out/$name-scale-"*.md; do [[ -f $f ]] || continue; awk -F'|' 'index($2, " `hostctl apply`, first") == 1 { gsub(/^ +| +$/, "", $5); printf "[%s] ", $5 }' "$f"; done)"
done
for name in plain tls; do
    echo "$name, TCP connections per host (bench-scale, per round): $(cat "$out/$name-scale-"*.md 2>/dev/null | grep 'TCP connections' | grep -oE '[0-9.]+\.$' | tr '\n' ' ')"
done
