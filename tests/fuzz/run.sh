#!/bin/sh
# Run each fuzz target for $SECONDS seconds, one after the other, at nice 19.
# Usage: BUILD=build-fuzz SECONDS=60 [CPU=N] sh tests/fuzz/run.sh sslim nifti ...
# With CPU=N, each target runs again and again ($SECONDS of wall time per
# run) until its runs together have used N seconds of CPU (user + sys):
# on a shared machine a nice-19 fuzzer gets what the others leave, so a
# wall-time budget says little about the work done.
# Each target reads its committed corpus (tests/fuzz/corpus/T) and crash
# inputs (tests/fuzz/crashes/T) and adds what it finds to $BUILD/fuzz/corpus-T
# (kept between runs, not committed).  Crashing inputs land in
# $BUILD/fuzz/crash-T-*; copy them to tests/fuzz/crashes/T once fixed.
# Prints one line per run (time, executions, coverage) and exits 1 if
# any target found a crash, leak, timeout or out-of-memory.
BUILD=${BUILD:-build-fuzz}
SECONDS_EACH=${SECONDS:-60}
CPU_GOAL=${CPU:-0}
# The NIfTI, ONNX and dataset targets write each input to files: on tmpfs
# that costs no disk writes.
[ -d /dev/shm ] && [ -w /dev/shm ] && export TMPDIR=/dev/shm
bad=""
for t in "$@"; do
    bin="$BUILD/fuzz/fuzz_$t"
    work="$BUILD/fuzz/corpus-$t"
    log="$BUILD/fuzz/$t.log"
    mkdir -p "$work" "tests/fuzz/crashes/$t"
    total=0
    run=0
    while :; do
        run=$((run + 1))
        # -timeout 10: a parser must never take seconds on one input;
        # -rss_limit_mb/-malloc_limit_mb 2048: no input may make a reader
        # ask for gigabytes; -detect_leaks=1: a refused input frees what
        # it took.
        /usr/bin/time -f "%U %S" -o "$BUILD/fuzz/$t.cpu" \
        nice -n 19 "$bin" -max_total_time="$SECONDS_EACH" -timeout=10 \
            -rss_limit_mb=2048 -malloc_limit_mb=2048 -detect_leaks=1 \
            -print_final_stats=1 -artifact_prefix="$BUILD/fuzz/crash-$t-" \
            "$work" "tests/fuzz/corpus/$t" "tests/fuzz/crashes/$t" >"$log" 2>&1
        rc=$?
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        secs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$log" | tail -1)
        cpu=$(awk '{printf "%.0f", $1 + $2}' "$BUILD/fuzz/$t.cpu" 2>/dev/null)
        total=$((total + ${cpu:-0}))
        cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | sed -n 's/.*\(cov: [0-9]*\).*\(ft: [0-9]*\).*/\1 \2/p')
        if [ $rc -ne 0 ]; then
            bad="$bad $t"
            echo "fuzz $t: FAILED (exit $rc) after ${execs:-?} executions; see $log:"
            grep -E 'ERROR|SUMMARY|Test unit written' "$log" | head -5
            break
        fi
        echo "fuzz $t: ${secs:-$SECONDS_EACH} s wall, ${cpu:-?} s CPU" \
             "(total $total), ${execs:-?} executions, $cov, 0 crashes"
        [ "$total" -lt "$CPU_GOAL" ] || break
    done
done
[ -z "$bad" ] || { echo "fuzz: findings in:$bad"; exit 1; }
