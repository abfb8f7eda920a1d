#!/bin/sh
# Run every test program, sum cmocka's counts, fail if any test failed.
# Usage: BUILD=build sh tests/run_all.sh test_a test_b ...
# SL_RUNNER, if set, is a command each test program runs under (make
# check-arm64: qemu-aarch64 with its options).
BUILD=${BUILD:-build}
export SL_BUILD="$BUILD"
passed=0; failed=0; bad=""
for t in "$@"; do
    out=$(${SL_RUNNER:-} "$BUILD/tests/$t" 2>&1); rc=$?
    p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
    f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
    passed=$((passed + p)); failed=$((failed + f))
    if [ $rc -ne 0 ] || [ "$f" -ne 0 ]; then
        bad="$bad $t"
        printf '%s\n' "$out" | grep -E '^\[  (FAILED|ERROR) |FAIL|error|ERROR|Sanitizer|runtime error' | head -40
        echo "FAIL $t (exit $rc)"
    else
        echo "ok   $t ($p passed)"
    fi
done
echo "tests: $passed passed, $failed failed"
[ -z "$bad" ] || { echo "failing programs:$bad"; exit 1; }
