#!/usr/bin/env bash
# bench/fuzz.sh: runs hostctl's cargo-fuzz targets (fuzz/fuzz_targets/) for a bounded time
# each and prints per target: runs, execs/s, coverage and features, corpus size, crashes.
# Not part of CI (tests/tests/fuzz_regressions.rs runs the seeds and kept crashes there).
#
#   bench/fuzz.sh                         every target, FUZZ_SECONDS (default 60) each
#   bench/fuzz.sh webhook flake_lock      only these targets
#   FUZZ_SECONDS=180 bench/fuzz.sh        longer runs
#
# One libFuzzer process per target, one after another (one core). Needs rustup (a nightly
# toolchain is installed if missing) and installs cargo-fuzz if missing. Corpora grow in
# fuzz/corpus/<target>/ from fuzz/seeds/<target>/ and fuzz/regressions/<target>/; crashes
# to fuzz/artifacts/<target>/, each run's libFuzzer log to fuzz/artifacts/logs/<target>.log
# (both gitignored). Keep a crash as
# fuzz/regressions/<target>/<name> once it is fixed: the regression test then runs it.
#
# FUZZ_SANITIZER (default `none`): hostctl forbids unsafe code, so AddressSanitizer finds
# little in it and halves the speed; `address` builds with it. Debug assertions (integer
# overflow checks) are always on.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${FUZZ_SECONDS:-60}
sanitizer=${FUZZ_SANITIZER:-none}
export PATH="$HOME/.cargo/bin:$PATH"

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

# One build for all targets: they share every dependency.
cargo +nightly fuzz build --debug-assertions --sanitizer "$sanitizer"

summary=()
for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t artifacts=fuzz/artifacts/$t
    mkdir -p "$corpus" "$artifacts"
    inputs=("$corpus" "fuzz/seeds/$t")
    [ -d "fuzz/regressions/$t" ] && inputs+=("fuzz/regressions/$t")
    # Not in $artifacts: cargo-fuzz names the newest file there as the failing input.
    mkdir -p fuzz/artifacts/logs
    log=fuzz/artifacts/logs/$t.log
    before=$(find "$artifacts" -maxdepth 1 -type f | wc -l)
    echo "== $t: ${seconds}s" >&2
    status=0
    cargo +nightly fuzz run --debug-assertions --sanitizer "$sanitizer" "$t" "${inputs[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
    after=$(find "$artifacts" -maxdepth 1 -type f | wc -l)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$last")
    crashes=$((after - before))
    if [ "$status" -ne 0 ]; then
        grep -E 'panicked at|^SUMMARY|Test unit written to' "$log" | head -5 >&2 || true
        [ "$crashes" -eq 0 ] && crashes="exit $status"
    fi
    summary+=("| $t | $seconds | ${runs:-?} | ${speed:-?} | ${cov:-?} | ${ft:-?} | ${corp:-?} | $crashes |")
done

echo
echo "| target | seconds | runs | execs/s | cov | ft | corpus | crashes |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
printf '%s\n' "${summary[@]}"
