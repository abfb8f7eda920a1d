#!/bin/sh
# Benchmark: our runtime (sauron-run) against ONNX Runtime (onnxruntime-node)
# on the same ONNX models, same input, same machine, same run, 2 threads.
#
#   BUILD=build [QUICK=1] [RUNS=n] sh tools/bench.sh    (make bench / bench-quick)
#
# Needs the built programs in $BUILD/bin, /usr/bin/python3 with torch (to
# export the models, once, into $BUILD/bench), node and npm (onnxruntime-node
# is installed into $BUILD/node on first use; --ignore-scripts: the CPU
# binaries ship inside the npm package).  Latency is the median over the
# runs, the first included on both sides (sauron-run has no warm-up); peak memory is the process's maximum resident set
# (GNU time), so ORT's figure includes node itself (its baseline is shown).
# Also checks that our output equals ORT's within 1e-4 of the output scale.
set -eu
BUILD=${BUILD:-build}
OUT=$BUILD/bench
NODE_DIR=$BUILD/node
ORT_VERSION=1.30.0
THREADS=2
if [ -n "${QUICK:-}" ]; then R2=${RUNS:-5}; R3=${RUNS:-3}; else R2=${RUNS:-20}; R3=${RUNS:-10}; fi

die() { echo "error: bench: $*" >&2; exit 1; }
for b in sauron-compress sauron-run; do
    [ -x "$BUILD/bin/$b" ] || die "$BUILD/bin/$b missing; run 'make BUILD=$BUILD' first"
done
command -v node >/dev/null || die "node missing; run 'sh tools/deps.sh bench'"
TIME=""
[ -x /usr/bin/time ] && TIME=/usr/bin/time

mkdir -p "$OUT"
/usr/bin/python3 tools/make_bench_models.py "$OUT" ||
    die "exporting the benchmark models failed (needs python3-torch, python3-onnx)"

if [ ! -d "$NODE_DIR/node_modules/onnxruntime-node" ]; then
    command -v npm >/dev/null || die "npm missing; run 'sh tools/deps.sh bench'"
    mkdir -p "$NODE_DIR"
    [ -f "$NODE_DIR/package.json" ] ||
        echo '{"name":"sauron-bench-peer","private":true}' >"$NODE_DIR/package.json"
    echo "bench: installing onnxruntime-node@$ORT_VERSION into $NODE_DIR" >&2
    (cd "$NODE_DIR" && npm install --ignore-scripts --no-audit --no-fund \
        "onnxruntime-node@$ORT_VERSION" >&2) || die "npm install onnxruntime-node failed"
fi
export ORT_NODE_PATH="$NODE_DIR"

# the PyTorch fixtures the tests compare against must also be ORT's answers
echo "bench: ONNX Runtime vs the committed PyTorch fixtures" >&2
node tools/bench_ort.js --fixtures tests/fixtures/torch >"$OUT/fixtures_ort.txt" ||
    { cat "$OUT/fixtures_ort.txt" >&2; die "ONNX Runtime disagrees with a PyTorch fixture"; }
fixtures_line="fixtures: ONNX Runtime equals PyTorch on $(grep -c ' ok$' "$OUT/fixtures_ort.txt") outputs, max |diff| $(awk '{print $4}' "$OUT/fixtures_ort.txt" | sort -g | tail -1)"

# peak RSS in MB from a GNU time -v log, or "n/a"
peak_mb() {
    awk -F: '/Maximum resident set size/ {printf "%.1f", $2 / 1024; f = 1} END {if (!f) printf "n/a"}' "$1"
}
timed() { # log cmd...
    log=$1; shift
    if [ -n "$TIME" ]; then $TIME -v -o "$log" "$@"; else : >"$log"; "$@"; fi
}
# value after "key" on the first line that starts with it (or n/a)
field() { awk -v k="$1" '$1 == k {print $2; f = 1; exit} END {if (!f) print "n/a"}' "$2"; }

rows=""
status=0
# slim2d: a 2D nnU-Net with Sauron-pruned channel counts (4..16), where
# per-op overheads, not FLOPs, decide the latency (more runs: it is fast)
for m in bench2d slim2d bench3d; do
    shape=$(cat "$OUT/$m.shape")
    case $m in bench2d) runs=$R2 ;; slim2d) runs=$((R2 * 5)) ;; *) runs=$R3 ;; esac
    echo "bench: $m ($shape), $runs runs" >&2
    "$BUILD/bin/sauron-compress" --no-finetune "$OUT/$m.onnx" "$OUT/$m.sslim" --force >&2 ||
        die "sauron-compress failed on $OUT/$m.onnx"
    timed "$OUT/$m.ours.time" "$BUILD/bin/sauron-run" "$OUT/$m.sslim" --input "$OUT/$m.in.bin" \
        --shape "$shape" --repeat "$runs" --threads $THREADS --output "$OUT/$m.ours.bin" --force \
        >"$OUT/$m.ours.txt" || die "sauron-run failed on $OUT/$m.sslim"
    timed "$OUT/$m.ort.time" node tools/bench_ort.js "$OUT/$m.onnx" "$OUT/$m.in.bin" "$shape" \
        --runs "$runs" --threads $THREADS --compare "$OUT/$m.ours.bin" \
        >"$OUT/$m.ort.txt" || die "ONNX Runtime failed on $OUT/$m.onnx"
    ours_ms=$(awk '/median/ {for (i = 1; i <= NF; i++) if ($i ~ /^[0-9.]+$/) {print $i; exit}}' "$OUT/$m.ours.txt")
    [ -n "$ours_ms" ] || ours_ms=n/a
    ours_mb=$(peak_mb "$OUT/$m.ours.time")
    ort_ms=$(field ort_ms "$OUT/$m.ort.txt")
    ort_mb=$(peak_mb "$OUT/$m.ort.time")
    [ "$ort_mb" = n/a ] && ort_mb=$(field ort_peak_mb "$OUT/$m.ort.txt")
    node_mb=$(field ort_base_mb "$OUT/$m.ort.txt")
    diff=$(field max_abs_diff "$OUT/$m.ort.txt")
    scale=$(awk '$1 == "max_abs_diff" {print $4}' "$OUT/$m.ort.txt")
    ok=$(awk -v d="$diff" -v s="$scale" 'BEGIN {print (d != "n/a" && d + 0 <= 1e-4 * s) ? "ok" : "MISMATCH"}')
    [ "$ok" = ok ] || status=1
    rows="$rows$m $ours_ms $ort_ms $ours_mb $ort_mb $node_mb $diff $ok
"
done

printf '\n%-8s %10s %10s %8s %10s %10s %8s %12s\n' model "ours ms" "ORT ms" ratio \
    "ours MB" "ORT MB" ratio "max |diff|"
printf '%s' "$rows" | awk '
function ratio(a, b) { return (a + 0 > 0 && b + 0 > 0) ? sprintf("%.2f", a / b) : "n/a" }
NF { printf "%-8s %10s %10s %8s %10s %10s %8s %12s %s\n", $1, $2, $3, ratio($2, $3),
         $4, $5, ratio($4, $5), $7, $8; node = $6 }
END { printf "threads %d; latency: median over all runs, the first included on both " \
             "sides; peak = max RSS of the process (ORT includes " \
             "node, %s MB before the session); other load on the machine skews both\n", \
             '"$THREADS"', node }'
echo "$fixtures_line"

# ---- training step: bench-train vs PyTorch (tools/bench_train_torch.py) ----
# Forward, CE + Dice, backward and Adam on one random batch, the same
# architecture (tools/make_bench_models.py) and batch on both sides, 2
# threads, both runs one after the other in this run.  Both sides use
# OMP_WAIT_POLICY=passive unless it is set (PyTorch's CPU kernels use the
# same libgomp; see exec_reexec_passive_wait).  Peak = the process's max
# RSS (PyTorch's includes the torch library itself).
if [ -n "${QUICK:-}" ]; then TS=${TRAIN_STEPS:-2}; else TS=${TRAIN_STEPS:-5}; fi
[ -x "$BUILD/bin/bench-train" ] || make --no-print-directory BUILD="$BUILD" "$BUILD/bin/bench-train" >&2 ||
    die "building $BUILD/bin/bench-train failed"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
trows=""
for spec in bench2d:4,1,256,256 bench3d:1,1,96,96,96; do
    m=${spec%%:*}; shape=${spec#*:}
    echo "bench: training step $m ($shape), $TS steps + 1 warm-up each side" >&2
    "$BUILD/bin/bench-train" "$OUT/$m.onnx" --shape "$shape" --steps "$TS" --threads $THREADS \
        >"$OUT/$m.train.ours.txt" || die "bench-train failed on $OUT/$m.onnx"
    /usr/bin/python3 tools/bench_train_torch.py "$m" --shape "$shape" --steps "$TS" \
        --threads $THREADS >"$OUT/$m.train.torch.txt" || die "PyTorch training step failed on $m"
    f=$OUT/$m.train
    trows="$trows$m $shape $(field step_ms "$f.ours.txt") $(field step_ms "$f.torch.txt") \
$(field peak_mb "$f.ours.txt") $(field peak_mb "$f.torch.txt") $(field step_cpu_ms "$f.ours.txt") \
$(field step_cpu_ms "$f.torch.txt")
"
done
printf '\n%-8s %-14s %10s %10s %6s %9s %9s %6s %12s\n' train batch "ours ms" "torch ms" ratio \
    "ours MB" "torch MB" ratio "cpu ms o/t"
printf '%s' "$trows" | awk '
function ratio(a, b) { return (a + 0 > 0 && b + 0 > 0) ? sprintf("%.2f", a / b) : "n/a" }
NF { printf "%-8s %-14s %10s %10s %6s %9s %9s %6s %6s/%s\n", $1, $2, $3, $4, ratio($3, $4),
         $5, $6, ratio($5, $6), $7, $8 }
END { printf "threads %d; training step = forward + CE/Dice + backward + Adam, median " \
             "over '"$TS"' steps after 1 warm-up; OMP_WAIT_POLICY=%s on both sides; " \
             "cpu = process CPU time per step\n", '"$THREADS"', "'"$OMP_WAIT_POLICY"'" }'
exit $status
