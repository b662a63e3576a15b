#!/usr/bin/env bash
# bench/eval.sh: how long `hostctl eval` takes, and how much memory it needs, against
# what a user has without hostctl (one `nix eval ... .drvPath` per host, one after another).
# Every hostctl run passes --no-eval-cache: this measures the evaluation pool itself
# (bench/incremental.sh measures the cache and incremental evaluation).
#
#   bench/eval.sh                           synthetic fleets (examples/fleet's shape), N = 1 10 50
#   NIXPKGS=/path/to/nixpkgs bench/eval.sh  plus real NixOS hosts (nixos/lib/eval-config.nix), N = 1 10 20
#
# Environment (all optional):
#   HOSTCTL=/path       hostctl binary to measure (default: `cargo build --release -p hostctl`)
#   NIXPKGS=/path       a nixpkgs checkout (tested with 20.09) for the real-host fleets
#   SIZES="1 10 50"     synthetic fleet sizes
#   REAL_SIZES="1 10 20"  real fleet sizes (each real host costs ~2.5 s and ~0.6 GB)
#   JOBS1_SIZES="50"    synthetic sizes that also get a `hostctl --eval-jobs 1` row
#   REAL_JOBS1_SIZES="" real sizes that also get a `hostctl --eval-jobs 1` row
#   VENDORED_SIZES=""   real fleets with nixpkgs copied into the repository and an
#                       uncommitted change (every nix process copies the tree to the store)
#   RUNS=3              timed runs per row (after one untimed warm-up run)
#   DOC=docs/PERFORMANCE.md  file whose results block is replaced; DOC= (empty) to skip
#   QUIET_WAIT=120      before each timed run, wait up to this many seconds for the rest of
#                       the machine to be idle (other processes' CPU is reported per row)
#   EXTRA_RUNS=3        a timed run during which other processes used more than
#                       max(0.5 s, 5% of its wall time) of CPU is discarded and run again,
#                       at most this many times per row
#
# Prints a Markdown table on stdout (progress goes to stderr) and writes the same table
# between the "bench/eval.sh results" markers of $DOC (appended if the markers are missing).
# See docs/PERFORMANCE.md for what each column means.

set -euo pipefail
export LC_ALL=C # '.' as the decimal point in $EPOCHREALTIME, sort and awk

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export NIX_CONFIG=$'experimental-features = nix-command flakes\nsubstituters =\n'

SIZES=${SIZES-"1 10 50"}
REAL_SIZES=${REAL_SIZES-"1 10 20"}
JOBS1_SIZES=${JOBS1_SIZES-"50"}
REAL_JOBS1_SIZES=${REAL_JOBS1_SIZES-""}
VENDORED_SIZES=${VENDORED_SIZES-""}
RUNS=${RUNS:-3}
DOC=${DOC-"$root/docs/PERFORMANCE.md"}
NIXPKGS=${NIXPKGS:-}
SAMPLE_INTERVAL=0.05
QUIET_WAIT=${QUIET_WAIT:-120}
EXTRA_RUNS=${EXTRA_RUNS:-3}
BEGIN_MARK='<!-- BEGIN bench/eval.sh results: generated, do not edit by hand -->'
END_MARK='<!-- END bench/eval.sh results -->'

log() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# Set-up and clean-up

work=$(mktemp -d "${TMPDIR:-/tmp}/hostctl-bench.XXXXXX")
# Nix's per-user caches (fetcher cache, eval cache) private to this run: other Nix jobs on
# the machine then neither share nor lock them (Nix 2.8 waits up to an hour for a busy
# SQLite database), and every fleet starts from the same state.
export XDG_CACHE_HOME=$work/cache
bg_pids=()
cleanup() {
    local pid
    for pid in "${bg_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v nix >/dev/null || die "nix is not on PATH"
command -v git >/dev/null || die "git is not on PATH"
if [[ ! -x /usr/bin/time ]]; then
    [[ $(id -u) == 0 ]] || die "GNU time (/usr/bin/time) is missing: apt-get install time"
    log "installing GNU time"
    apt-get install -y -qq time >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
fi
/usr/bin/time -f %M true 2>/dev/null || die "/usr/bin/time is not GNU time (needs -f %M)"
command -v jq >/dev/null || die "jq is missing (apt-get install jq)"

if [[ -n ${HOSTCTL:-} ]]; then
    hostctl=$HOSTCTL
    [[ -x $hostctl ]] || die "no hostctl binary at $hostctl"
    hostctl_desc="\`$hostctl\` ($("$hostctl" --version))"
else
    log "building hostctl (release)"
    rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$root" diff --quiet HEAD -- Cargo.lock controller nix schemas 2>/dev/null ||
        rev="$rev + uncommitted changes"
    (cd "$root" && cargo build --release -q -p hostctl) >&2
    hostctl=${CARGO_TARGET_DIR:-$root/target}/release/hostctl
    hostctl_desc="release build of $rev"
fi

if [[ -n $NIXPKGS ]]; then
    NIXPKGS=$(cd "$NIXPKGS" && pwd)
    [[ -f $NIXPKGS/nixos/lib/eval-config.nix ]] || die "NIXPKGS=$NIXPKGS has no nixos/lib/eval-config.nix"
fi

# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

# make_synthetic DIR N: a copy of examples/fleet with hosts h001..hN, each shaped like
# web1.nix with its own motd (so its own toplevel), committed to a fresh git repo.
make_synthetic() {
    local dir=$1 n=$2 i name
    mkdir -p "$dir"
    cp -r "$root/examples/fleet/." "$dir"
    rm -f "$dir"/hosts/*.nix
    {
        inventory_header
        for ((i = 1; i <= n; i++)); do
            name=$(printf 'h%03d' "$i")
            printf '{\n  system = "x86_64-linux";\n  roles = [ "nginx" ];\n  motd = "%s: synthetic bench host %d";\n}\n' \
                "$name" "$i" >"$dir/hosts/$name.nix"
            inventory_host "$i" "$name"
        done
    } >"$dir/fleet.yaml"
    git -C "$dir" init -q
    git -C "$dir" add -A
    # Nix 2.8 reads locked relative `path:` inputs only from the store: copy them there
    # once. flake.lock stays byte-identical (checked below).
    (cd "$dir" && nix flake update 2>/dev/null)
    cmp -s "$dir/flake.lock" "$root/examples/fleet/flake.lock" ||
        die "nix flake update changed flake.lock in the synthetic fleet"
    git -C "$dir" add -A
    git_commit "$dir" "synthetic fleet of $n hosts"
}

# ---------------------------------------------------------------------------------------
# Measuring

# Only runs whose warm-up took at least this long (s) report the sampled total RSS: shorter
# ones are over before enough samples are taken (each synthetic nix eval lives ~20 ms).
MIN_SAMPLED_RUN=1

# tree_peak_kb PID: the largest sum of RSS (KiB) over PID and all its descendants seen
# while PID runs, sampled every $SAMPLE_INTERVAL s. Peaks shorter than that can be missed.
tree_peak_kb() {
    local root_pid=$1 max=0 sum
    while kill -0 "$root_pid" 2>/dev/null; do
        sum=$(ps -e -o pid=,ppid=,rss= | awk -v r="$root_pid" '
            { parent[$1] = $2; rss[$1] = $3 }
            END {
                for (p in parent) {
                    q = p
                    while (q != r && (q in parent) && q > 1) q = parent[q]
                    if (q == r) s += rss[p]
                }
                print s + 0
            }')
        ((sum > max)) && max=$sum
        sleep "$SAMPLE_INTERVAL"
    done
    echo "$max"
}

# busy_ticks: CPU time the whole machine has spent busy (user, nice, system, irq, softirq),
# in clock ticks, from /proc/stat.
busy_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; }
clk_tck=$(getconf CLK_TCK)

# wait_quiet: waits (at most $QUIET_WAIT s) until the machine spends under 10% of one core
# on other work over one second, so that other jobs disturb the timed runs less.
wait_quiet() {
    local deadline=$((SECONDS + QUIET_WAIT)) b0 b1 said=""
    while :; do
        b0=$(busy_ticks)
        sleep 1
        b1=$(busy_ticks)
        (((b1 - b0) * 10 < clk_tck)) && return 0
        if ((SECONDS >= deadline)); then
            log "machine still busy after ${QUIET_WAIT}s of waiting; measuring anyway"
            return 0
        fi
        [[ -n $said ]] || { log "waiting for other processes to go idle"; said=1; }
    done
}

# median of the numbers on stdin
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

rows=()

# warm_up OUT -- argv...: one untimed run of hostctl eval before a fleet's timed runs. It
# fills what every later command reuses: Nix's fetcher cache for the fleet's commit, the
# .drv files in the store, the page cache. RUST_LOG=info makes hostctl log its pool size
# (stderr goes to $work/warmup.txt); the sum of RSS over its process tree is sampled
# meanwhile and left in $tree_total (MiB, or n/a for runs too short to sample).
warm_up() {
    local out=$1 pid spid t0 t1
    shift 2
    t0=$EPOCHREALTIME
    RUST_LOG=info "$@" >"$out" 2>"$work/warmup.txt" &
    pid=$!
    tree_peak_kb "$pid" >"$work/tree.txt" &
    spid=$!
    bg_pids+=("$pid" "$spid")
    wait "$pid" || { cat "$work/warmup.txt" >&2; die "warm-up failed: $*"; }
    t1=$EPOCHREALTIME
    wait "$spid"
    bg_pids=()
    tree_total=$(awk -v t0="$t0" -v t1="$t1" -v min="$MIN_SAMPLED_RUN" \
        '{ if (t1 - t0 >= min) printf "%.0f", $1 / 1024; else print "n/a" }' "$work/tree.txt")
}

# measure FLEET N LABEL POOL TOTAL OUT -- argv...: $RUNS runs under GNU time; the first
# run's stdout is kept in OUT (correctness check). Runs disturbed by other processes are
# discarded and repeated (see EXTRA_RUNS). Appends one table row; TOTAL is the sampled
# whole-tree peak to show, or n/a.
measure() {
    local fleet=$1 n=$2 label=$3 pool=$4 total=$5 out=$6
    shift 7
    local tf=$work/time.txt err=$work/stderr.txt i t0 t1 b0 b1 walls=() rss=0 cpus=() others=() w m u s o
    local discarded=0
    for ((i = 1; i <= RUNS; i++)); do
        wait_quiet
        b0=$(busy_ticks)
        t0=$EPOCHREALTIME
        /usr/bin/time -f '%e %M %U %S' -o "$tf" "$@" >"$work/stdout.txt" 2>"$err" ||
            { cat "$err" >&2; die "$label failed (run $i)"; }
        t1=$EPOCHREALTIME
        b1=$(busy_ticks)
        ((i == 1)) && cp "$work/stdout.txt" "$out"
        read -r w m u s <"$tf"
        # GNU time's %e has 10 ms steps: too coarse for the synthetic fleets.
        w=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
        # CPU the rest of the machine used meanwhile: busy time minus the command's own.
        o=$(awk -v b="$((b1 - b0))" -v hz="$clk_tck" -v u="$u" -v s="$s" \
            'BEGIN { o = b / hz - u - s; printf "%.2f", o < 0 ? 0 : o }')
        log "$fleet N=$n: $label: run $i: ${w}s, max RSS ${m} KiB, other processes ${o} CPU s"
        if ((discarded < EXTRA_RUNS)) && awk -v o="$o" -v w="$w" 'BEGIN { exit !(o > 0.5 && o > 0.05 * w) }'; then
            discarded=$((discarded + 1))
            log "  discarded: other processes were busy; running it again"
            i=$((i - 1))
            continue
        fi
        walls+=("$w")
        cpus+=("$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')")
        others+=("$o")
        ((m > rss)) && rss=$m
    done
    local wall lo hi cpu other
    other=$(printf '%s\n' "${others[@]}" | sort -g | tail -n1)
    ((discarded == 0)) || other="$other ($discarded discarded)"
    wall=$(printf '%s\n' "${walls[@]}" | median)
    lo=$(printf '%s\n' "${walls[@]}" | sort -g | head -n1)
    hi=$(printf '%s\n' "${walls[@]}" | sort -g | tail -n1)
    cpu=$(printf '%s\n' "${cpus[@]}" | median)
    rows+=("$(awk -v f="$fleet" -v n="$n" -v l="$label" -v p="$pool" -v w="$wall" -v lo="$lo" -v hi="$hi" \
        -v c="$cpu" -v m="$rss" -v t="$total" -v o="$other" 'BEGIN {
            printf "| %s | %d | %s | %s | %.3f | %.3f–%.3f | %.3f | %.2f | %.0f | %s | %s |", f, n, l, p, w, lo, hi, w / n, c, m / 1024, t, o
        }')")
}

# host_drvs FILE FORMAT: "host drv" lines, sorted, from a command's output.
host_drvs() {
    case $2 in
        hostctl) jq -r '.hosts | to_entries[] | "\(.key) \(.value.result) \(.value.drv_path)"' "$1" |
            awk '$2 != "evaluated" { print "host " $1 ": " $2 > "/dev/stderr"; bad = 1 } { print $1, $3 } END { exit bad }' ;;
        lines) tr -d '"' <"$1" ;;
        object) jq -r 'to_entries[] | "\(.key) \(.value)"' "$1" ;;
    esac | sort
}

# bench_fleet KIND N DIR HOST_PREFIX JOBS1_SIZES: the rows for one fleet.
bench_fleet() {
    local kind=$1 n=$2 dir=$3 prefix=$4 jobs1=$5 hosts=() i
    for ((i = 1; i <= n; i++)); do hosts+=("$(printf '%s%03d' "$prefix" "$i")"); done

    log "$kind N=$n: warm-up (hostctl eval)"
    warm_up "$work/warmup.json" -- "$hostctl" --json --no-eval-cache --fleet "$dir/fleet.yaml" eval
    local workers
    workers=$(grep -o 'workers=[0-9]*' "$work/warmup.txt" | head -n1 | cut -d= -f2)

    # hostctl, default pool (cores and free memory decide its size).
    measure "$kind" "$n" "hostctl eval" "${workers:-?}" "$tree_total" "$work/hostctl.json" -- \
        "$hostctl" --json --no-eval-cache --fleet "$dir/fleet.yaml" eval

    if [[ " $jobs1 " == *" $n "* ]]; then
        measure "$kind" "$n" "hostctl eval --eval-jobs 1" 1 n/a "$work/hostctl1.json" -- \
            "$hostctl" --json --no-eval-cache --eval-jobs 1 --fleet "$dir/fleet.yaml" eval
    fi

    # Without hostctl: one nix eval per host, one after another.
    # shellcheck disable=SC2016 # expanded by the inner bash
    measure "$kind" "$n" "nix eval per host, sequential" 1 n/a "$work/seq.txt" -- \
        bash -c 'flake=$1; shift; for h; do
                     printf "%s " "$h"
                     nix eval --json "$flake#nixosConfigurations.$h.config.system.build.toplevel.drvPath"
                     echo
                 done' bench-sequential "$dir" "${hosts[@]}"

    # For comparison: every host in one evaluator (what hostctl deliberately does not do).
    measure "$kind" "$n" "one nix eval for all hosts" 1 n/a "$work/one.json" -- \
        nix eval --json "$dir#nixosConfigurations" \
        --apply 'cs: builtins.mapAttrs (name: c: c.config.system.build.toplevel.drvPath) cs'

    # All must agree host by host, and every host must have its own toplevel.
    host_drvs "$work/hostctl.json" hostctl >"$work/a.txt" || die "hostctl eval failed for some host ($kind N=$n)"
    host_drvs "$work/seq.txt" lines >"$work/b.txt"
    host_drvs "$work/one.json" object >"$work/c.txt"
    diff "$work/a.txt" "$work/b.txt" >&2 || die "hostctl and sequential nix eval disagree ($kind N=$n)"
    diff "$work/a.txt" "$work/c.txt" >&2 || die "hostctl and the single nix eval disagree ($kind N=$n)"
    [[ $(wc -l <"$work/a.txt") == "$n" ]] || die "expected $n hosts ($kind N=$n)"
    [[ $(cut -d' ' -f2 "$work/a.txt" | sort -u | wc -l) == "$n" ]] || die "toplevels are not distinct ($kind N=$n)"
}

# ---------------------------------------------------------------------------------------

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for n in $SIZES; do
    log "synthetic fleet, $n hosts"
    make_synthetic "$work/synthetic-$n" "$n"
    bench_fleet synthetic "$n" "$work/synthetic-$n" h "$JOBS1_SIZES"
done

if [[ -n $NIXPKGS ]]; then
    for n in $REAL_SIZES; do
        log "real NixOS fleet ($NIXPKGS), $n hosts"
        make_real "$work/real-$n" "$n"
        bench_fleet real "$n" "$work/real-$n" r "$REAL_JOBS1_SIZES"
    done
    for n in $VENDORED_SIZES; do
        log "real NixOS fleet, nixpkgs inside the repository, uncommitted change, $n hosts"
        make_real "$work/vendored-$n" "$n" vendored
        bench_fleet "real, nixpkgs in repo, dirty tree" "$n" "$work/vendored-$n" r ""
    done
else
    log "NIXPKGS is not set: real NixOS hosts skipped"
fi

# ---------------------------------------------------------------------------------------
# Report

load_end=$(cut -d' ' -f1-3 /proc/loadavg)
mem=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
nixpkgs_desc="not measured (NIXPKGS unset)"
if [[ -n $NIXPKGS ]]; then
    nixpkgs_desc="$(cat "$NIXPKGS/.version" 2>/dev/null || echo unknown) from \`$NIXPKGS\`"
fi

{
    echo "$BEGIN_MARK"
    echo
    echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') by \`bench/eval.sh\` on: $(nproc) cores ($cpu_model), $mem RAM,"
    echo "$(nix --version), Linux $(uname -r), hostctl $hostctl_desc; real hosts: nixpkgs $nixpkgs_desc."
    echo "Each fleet was first evaluated once by \`hostctl eval\`, untimed, to warm the caches every row"
    echo "reuses (Nix's fetcher cache for the fleet's commit, the .drv files in the store, the page"
    echo "cache); then each row ran $RUNS times. Load average (1, 5, 15 min) at the start: $load_start; at the end: $load_end."
    echo "Columns: see \"What the columns mean\" in docs/PERFORMANCE.md."
    echo
    echo "| fleet | hosts | command | pool | wall s (median) | wall s (min–max) | wall s per host | CPU s (user+sys) | peak RSS, largest process (MiB) | peak RSS, all processes at once (MiB, sampled) | other processes' CPU s (worst kept run) |"
    echo "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    printf '%s\n' "${rows[@]}"
    echo
    echo "$END_MARK"
} >"$work/block.md"

cat "$work/block.md"

if [[ -n $DOC ]]; then
    if [[ -f $DOC ]] && grep -qF "$BEGIN_MARK" "$DOC"; then
        awk -v begin="$BEGIN_MARK" -v end="$END_MARK" -v block="$work/block.md" '
            $0 == begin { while ((getline line < block) > 0) print line; skip = 1; next }
            $0 == end { skip = 0; next }
            !skip { print }' "$DOC" >"$work/doc.md"
        cat "$work/doc.md" >"$DOC"
    else
        mkdir -p "$(dirname "$DOC")"
        { [[ -s $DOC ]] && echo; cat "$work/block.md"; } >>"$DOC"
    fi
    log "results written to $DOC"
fi
