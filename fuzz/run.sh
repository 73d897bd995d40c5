#!/usr/bin/env bash
# Builds every cargo-fuzz target and runs each for a bounded time (see fuzz/README.md).
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     default: 30 s, all targets
#
# Exits non-zero if any target crashes, times out, or fails to build; prints a summary
# (runs, execs/s, coverage) either way. Checked-in seeds (fuzz/seeds/<target>) are read;
# what the fuzzer adds goes to fuzz/corpus/<target> (git-ignored), crashes to
# fuzz/artifacts/<target>, logs to fuzz/target/fuzz-logs.
set -euo pipefail

secs="${1:-30}"
shift || true
case "$secs" in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
    ;;
esac
cd "$(dirname "$0")"

# cargo-fuzz passes -Z flags (sanitizer, coverage instrumentation) to rustc; on a stable
# toolchain RUSTC_BOOTSTRAP=1 lets it. Harmless on nightly.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --version 0.13.2 --locked
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

logs=target/fuzz-logs
mkdir -p "$logs"

# The default profile: optimised, with debug assertions and overflow checks, AddressSanitizer.
# `cargo fuzz run` below uses the same options, so it does not rebuild.
echo "== building ${#targets[@]} targets (log: fuzz/$logs/build.log)"
: >"$logs/build.log"
for t in "${targets[@]}"; do
    if ! timeout 1800 cargo fuzz build "$t" >>"$logs/build.log" 2>&1; then
        tail -40 "$logs/build.log"
        echo "FAIL: building $t"
        exit 1
    fi
done

failed=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    echo "== $t: ${secs}s"
    rc=0
    # -max_total_time bounds the fuzzing; the outer timeout bounds everything else.
    timeout --kill-after=10 $((secs + 120)) \
        cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$logs/$t.log" 2>&1 || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$t.log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$logs/$t.log" | tail -1 || true)
    corp=$(find "corpus/$t" -type f | wc -l)
    if [ "$rc" -eq 0 ]; then
        status=ok
    else
        status="FAIL(rc=$rc)"
        failed=1
        grep -E "panicked at|^thread|ERROR: |SUMMARY|Test unit written" "$logs/$t.log" | head -8 || true
        echo "   log: fuzz/$logs/$t.log"
    fi
    summary+=("$(printf '%-18s %-10s %12s %10s  %-22s %6s' "$t" "$status" "${runs:--}" "${eps:--}" "${cov:--}" "$corp")")
done

echo
printf '%-18s %-10s %12s %10s  %-22s %6s\n' target status runs execs/s coverage corpus
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
    echo "FAIL: at least one target crashed or timed out; reproduce with"
    echo "  RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>"
    exit 1
fi
echo "all ${#targets[@]} targets ran ${secs}s each without a crash"
