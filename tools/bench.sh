#!/bin/sh
# Benchmark: our runtime (sauron-run) against ONNX Runtime (onnxruntime-node)
# on the same ONNX models, same input, same machine, same run, 2 threads.
#
#   BUILD=build [QUICK=1] [RUNS=n] [ROUNDS=n] [BENCH_TRAIN=0] [VOL_BASELINE=base.sslim] sh tools/bench.sh
#       (make bench / bench-quick; RUNS=1 ROUNDS=1 BENCH_TRAIN=0 checks that it runs)
#
# Needs the built programs in $BUILD/bin, /usr/bin/python3 with torch (to
# export the models, once, into $BUILD/bench), node and npm (onnxruntime-node
# is installed into $BUILD/node on first use; --ignore-scripts: the CPU
# binaries ship inside the npm package).  Latency is the median over the
# runs, the first included on both sides (sauron-run has no warm-up); peak memory is the process's maximum resident set
# (GNU time), so ORT's figure includes node itself (its baseline is shown).
# Also checks that our output equals ORT's within 1e-4 of the output scale.
#
# Rounds: the speed of a shared 2-core VM drifts by up to 1.4x within
# minutes, more than the margins measured here, so each model (and the
# whole volume) runs ROUNDS times, ours and the peer back to back in each
# round, and a ratio is the median of the rounds' own ratios (its range
# is printed beside it); a time is the median of the rounds' medians.
set -eu
BUILD=${BUILD:-build}
OUT=$BUILD/bench
NODE_DIR=$BUILD/node
ORT_VERSION=1.30.0
THREADS=2
if [ -n "${QUICK:-}" ]; then R2=${RUNS:-5}; R3=${RUNS:-3}; ROUNDS=${ROUNDS:-3}; else
    R2=${RUNS:-20}; R3=${RUNS:-10}; ROUNDS=${ROUNDS:-5}; fi

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
# value after the word "key" anywhere (ort_segment.js's one-line results)
kv() { awk -v k="$1" '{for (i = 1; i < NF; i++) if ($i == k) {print $(i + 1); f = 1; exit}} END {if (!f) print "n/a"}' "$2"; }

rows=""
status=0
# ours: sauron-run on $OUT/$1.sslim, output and logs $OUT/$1.$4.*; the rest
# of the arguments are environment assignments (SL_CONV_ALGO, SL_GEMM_ISA;
# any the caller exported are dropped so that each line means one thing)
ours() { # model shape runs tag [VAR=value ...]
    m_=$1; shape_=$2; runs_=$3; tag_=$4; shift 4
    timed "$OUT/$m_.$tag_.time" env -u SL_CONV_ALGO -u SL_GEMM_ISA "$@" \
        "$BUILD/bin/sauron-run" "$OUT/$m_.sslim" --input "$OUT/$m_.in.bin" \
        --shape "$shape_" --repeat "$runs_" --threads $THREADS --output "$OUT/$m_.$tag_.bin" --force \
        >"$OUT/$m_.$tag_.txt" || die "sauron-run ($tag_: $*) failed on $OUT/$m_.sslim"
}
# median ms from sauron-run's "median X ms" line (or n/a)
ours_ms() { awk '$1 == "median" {print $2; f = 1} END {if (!f) print "n/a"}' "$1"; }
# over a file of one line per round: the median of column $1 (or of the
# ratio $1 / $2 of two columns) and, for ratios, "median min-max"
col_median() {
    awk -v a="$1" -v b="${2:-}" '{x = $a; if (b != "") x = ($a + 0 > 0 && $b + 0 > 0) ? $a / $b : "n/a"
        if (x != "n/a") print x}' "$3" | sort -g | awk -v r="${2:+range}" '{v[NR] = $1}
        END {if (!NR) {print "n/a"; exit}
             m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
             if (r == "") print m; else printf "%.2f %.2f-%.2f\n", m, v[1], v[NR]}'
}

# Issue 13's goals for ours (auto) / ONNX Runtime, per model.
goal_of() { case $1 in bench2d) echo 0.6 ;; slim2d) echo 0.33 ;; bench3d) echo 0.35 ;; slim3d) echo 0.2 ;; *) echo - ;; esac; }

# bench2d/bench3d: dense nnU-Nets; slim2d/slim3d: the same shapes with
# Sauron-pruned channel counts (4..16), where per-op overheads, not FLOPs,
# decide the latency (more runs: they are fast).  Each round runs ours
# with the per-layer algorithm choice (SL_CONV_ALGO=auto, the default),
# ours with every convolution direct, and ONNX Runtime, one after the
# other; $OUT/$m.rounds keeps one line per round: auto, direct, ORT and
# (bench2d) AVX2 milliseconds.
for m in bench2d slim2d bench3d slim3d; do
    shape=$(cat "$OUT/$m.shape")
    case $m in bench2d) runs=$R2 ;; slim2d) runs=$((R2 * 5)) ;; slim3d) runs=$((R3 * 3)) ;; *) runs=$R3 ;; esac
    [ -n "${RUNS:-}" ] && runs=$RUNS
    echo "bench: $m ($shape), $runs runs" >&2
    "$BUILD/bin/sauron-compress" --no-finetune "$OUT/$m.onnx" "$OUT/$m.sslim" --force >&2 ||
        die "sauron-compress failed on $OUT/$m.onnx"
    : >"$OUT/$m.rounds"
    for round in $(seq "$ROUNDS"); do
        ours "$m" "$shape" "$runs" ours SL_CONV_ALGO=auto
        ours "$m" "$shape" "$runs" direct SL_CONV_ALGO=direct
        # the AVX2 kernels on the same machine (issue 13: both paths first class)
        [ $m = bench2d ] && ours "$m" "$shape" "$runs" avx2 SL_CONV_ALGO=auto SL_GEMM_ISA=avx2
        timed "$OUT/$m.ort.time" node tools/bench_ort.js "$OUT/$m.onnx" "$OUT/$m.in.bin" "$shape" \
            --runs "$runs" --threads $THREADS --compare "$OUT/$m.ours.bin" \
            >"$OUT/$m.ort.txt" || die "ONNX Runtime failed on $OUT/$m.onnx"
        a2=n/a
        [ $m = bench2d ] && a2=$(ours_ms "$OUT/$m.avx2.txt")
        echo "$(ours_ms "$OUT/$m.ours.txt") $(ours_ms "$OUT/$m.direct.txt") $(field ort_ms "$OUT/$m.ort.txt") $a2" \
            >>"$OUT/$m.rounds"
    done
    ours_ms=$(col_median 1 "" "$OUT/$m.rounds")
    direct_ms=$(col_median 2 "" "$OUT/$m.rounds")
    ours_mb=$(peak_mb "$OUT/$m.ours.time")
    ort_ms=$(col_median 3 "" "$OUT/$m.rounds")
    ratio=$(col_median 1 3 "$OUT/$m.rounds")
    ort_mb=$(peak_mb "$OUT/$m.ort.time")
    [ "$ort_mb" = n/a ] && ort_mb=$(field ort_peak_mb "$OUT/$m.ort.txt")
    node_mb=$(field ort_base_mb "$OUT/$m.ort.txt")
    diff=$(field max_abs_diff "$OUT/$m.ort.txt")
    scale=$(awk '$1 == "max_abs_diff" {print $4}' "$OUT/$m.ort.txt")
    ok=$(awk -v d="$diff" -v s="$scale" 'BEGIN {print (d != "n/a" && d + 0 <= 1e-4 * s) ? "ok" : "MISMATCH"}')
    [ "$ok" = ok ] || status=1
    rows="$rows$m $ours_ms $direct_ms $ort_ms $(goal_of $m) $ours_mb $ort_mb $node_mb $diff $ok $ratio
"
done
avx2_ms=$(col_median 4 "" "$OUT/bench2d.rounds")
avx2_ratio=$(col_median 4 1 "$OUT/bench2d.rounds")
avx512=no
grep -qw avx512f /proc/cpuinfo 2>/dev/null && avx512=yes

# ---- one whole volume: the shipped model on the Colin27 T1 ----
# segment (the whole process: read, load, normalise, every slice, argmax,
# write; GNU time) against tools/ort_segment.js running the same model
# exported to ONNX (the same normalisation and slicing re-implemented in
# JavaScript; its time is the pipeline inside node, node's start-up
# excluded; the faster of batch 1 and 4 is kept).  The Colin27 T1 is on
# the default model's grid (RAS, 1 mm), so segment neither reorients nor
# resamples it and ort_segment.js, which never does, runs the same slices.
# ort_volume NAME TAG [ort_segment.js flags]: $OUT/NAME.onnx on the scan at
# 1 and 4 slices per run, $VR runs each; prints the faster report's path
# ($OUT/TAG.bN.txt).
ort_volume() {
    name=$1 tag=$2; shift 2
    obest=""
    for pb in 1 4; do
        o=$OUT/$tag.b$pb.txt
        node tools/ort_segment.js "$OUT/$name.onnx" "$VOL_SCAN" "$OUT/$tag.nii.gz" --threads $THREADS \
            --batch $pb --repeat "$VR" --force "$@" >"$o" ||
            die "tools/ort_segment.js failed on $OUT/$name.onnx"
        if [ -z "$obest" ] || awk -v a="$(kv volume_ms "$o")" -v b="$(kv volume_ms "$obest")" \
            'BEGIN {exit !(a + 0 < b + 0)}'; then obest=$o; fi
    done
    echo "$obest"
}
VOL_SCAN=${VOL_SCAN:-/usr/share/mricron/templates/ch2.nii.gz}
VOL_MODEL=${VOL_MODEL:-models/default.sslim}
if [ -n "${QUICK:-}" ]; then VR=${RUNS:-1}; else VR=${RUNS:-3}; fi
vol_line=""
base_line=""
# VOL_BASELINE=base.sslim (the unpruned model the shipped one came from,
# with its normalisation, e.g. `sauron-compress --no-finetune base.onnx
# base.sslim --normalize zscore-fg`): ONNX Runtime on it, same scan, same
# rounds, for issue 10's "ours on the slim model >= 8x faster than ONNX
# Runtime on the baseline".  The baseline is not committed (20 MB).
[ -z "${VOL_BASELINE:-}" ] || [ -f "$VOL_BASELINE" ] || die "VOL_BASELINE=$VOL_BASELINE: no such file"
if [ -f "$VOL_SCAN" ] && [ -f "$VOL_MODEL" ]; then
    echo "bench: whole volume, $VOL_MODEL on $VOL_SCAN, $ROUNDS rounds of $VR runs each" >&2
    "$BUILD/bin/sauron-compress" --no-finetune "$VOL_MODEL" "$OUT/vol_model.onnx" --force >&2 ||
        die "sauron-compress failed exporting $VOL_MODEL to ONNX"
    [ -z "${VOL_BASELINE:-}" ] || "$BUILD/bin/sauron-compress" --no-finetune "$VOL_BASELINE" \
        "$OUT/vol_base.onnx" --force >&2 || die "sauron-compress failed exporting $VOL_BASELINE to ONNX"
    # one line per round: ours, ORT on the model, ORT on VOL_BASELINE (ms)
    : >"$OUT/vol.rounds"
    for round in $(seq "$ROUNDS"); do
        : >"$OUT/vol.ours.ms"
        for r in $(seq "$VR"); do
            timed "$OUT/vol.ours.$r.time" "$BUILD/bin/segment" -q --force --threads $THREADS \
                -m "$VOL_MODEL" -o "$OUT/vol.ours.nii.gz" "$VOL_SCAN" || die "segment failed on $VOL_SCAN"
            awk '/Elapsed \(wall clock\)/ {n = split($NF, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; printf "%.0f\n", s * 1000}' \
                "$OUT/vol.ours.$r.time" >>"$OUT/vol.ours.ms"
        done
        best=$(ort_volume vol_model vol.ort --check "$OUT/vol.ours.nii.gz")
        base_ms=n/a
        if [ -n "${VOL_BASELINE:-}" ]; then
            echo "bench: round $round, ONNX Runtime on the baseline $VOL_BASELINE" >&2
            bbest=$(ort_volume vol_base vol.ortbase)
            base_ms=$(kv volume_ms "$bbest")
        fi
        echo "$(col_median 1 "" "$OUT/vol.ours.ms") $(kv volume_ms "$best") $base_ms" >>"$OUT/vol.rounds"
    done
    vol_mb=$(peak_mb "$OUT/vol.ours.1.time")
    vol_ort_mb=$(kv peak_rss_mb "$best")
    vol_agree=$(kv agree "$best")
    vol_differ=$(awk '$1 == "agree" {print $4 " of " $6}' "$best")
    awk -v a="$vol_agree" 'BEGIN {exit !(a != "" && a + 0 >= 0.999)}' || {
        echo "error: bench: ONNX Runtime's label map differs from ours on more than 0.1% of the voxels ($best)" >&2
        status=1; }
    vol_line="volume $(basename "$VOL_MODEL") $(col_median 1 "" "$OUT/vol.rounds") $(col_median 2 "" "$OUT/vol.rounds") $vol_mb $vol_ort_mb $(basename "$best" .txt | sed 's/.*\.b/batch /') differ=$vol_differ $(col_median 1 2 "$OUT/vol.rounds")"
    [ -z "${VOL_BASELINE:-}" ] ||
        base_line="$(col_median 3 "" "$OUT/vol.rounds") $(basename "$bbest" .txt | sed 's/.*\.b/batch /') $(col_median 3 1 "$OUT/vol.rounds")"
else
    echo "bench: $VOL_SCAN or $VOL_MODEL missing: no whole-volume line" >&2
fi

printf '\n%-8s %10s %10s %10s %8s %-11s %-16s %8s %8s %7s %12s\n' model "ours ms" "direct ms" "ORT ms" \
    "ours/ORT" "range" "goal" "ours MB" "ORT MB" "MB o/O" "max |diff|"
printf '%s' "$rows" | awk '
function ratio(a, b) { return (a + 0 > 0 && b + 0 > 0) ? sprintf("%.2f", a / b) : "n/a" }
function verdict(r, g) { return (r == "n/a" || g == "-") ? "" : (r + 0 <= g + 0 ? "met" : "NOT met") }
NF { printf "%-8s %10s %10s %10s %8s %-11s %-16s %8s %8s %7s %12s %s\n", $1, $2, $3, $4,
         $11, $12, "<= " $5 " " verdict($11, $5), $6, $7, ratio($6, $7), $9, $10; node = $8 }
END { printf "threads %d; ours = sauron-run, per-layer algorithm choice (SL_CONV_ALGO=auto); " \
             "direct = SL_CONV_ALGO=direct; goal = issue 13 (ours/ORT); '"$ROUNDS"' rounds, ours and " \
             "ORT back to back in each: times are medians of the rounds (each the median of its runs, " \
             "the first included on both sides), ours/ORT the median of the per-round ratios and " \
             "range their min-max; peak = max RSS of the process (ORT includes " \
             "node, %s MB before the session); other load on the machine skews both\n", \
             '"$THREADS"', node }'
printf '%s\n' "$avx2_ms $avx2_ratio" | awk -v x="$avx512" '{
    v = $2 == "n/a" ? "" : ($2 + 0 <= 1.3 ? " met" : " NOT met")
    if (x == "yes")
        printf "bench2d AVX2 kernels (SL_GEMM_ISA=avx2): %s ms; AVX2 / AVX-512 = %s (rounds %s)%s (goal <= 1.3)\n", $1, $2, $3, v
    else
        printf "bench2d SL_GEMM_ISA=avx2: %s ms; this CPU has no AVX-512, so ours above is AVX2 too (ratio %s)\n", $1, $2 }'
if [ -n "$vol_line" ]; then
    printf '%s\n' "$vol_line" | awk '{
        v = $12 == "n/a" ? "" : ($12 + 0 <= 0.5 ? " met" : " NOT met")
        s = ($3 + 0 > 0) ? ($3 + 0 < 3000 ? " met" : " NOT met") : ""
        printf "volume   %s on Colin27 (181 slices): ours %s ms, ORT %s ms (%s %s), ours/ORT %s (rounds %s)%s (goal <= 0.5); " \
               "ours under 3 s:%s; peak ours %s MB, ORT %s MB (node included); labels differ on %s voxels\n",
               $2, $3, $4, $7, $8, $12, $13, v, s, $5, $6, substr($9, 8) " " $10 " " $11 }'
    echo "volume: $ROUNDS rounds; ours = segment process wall time (median of $VR per round), ORT = tools/ort_segment.js pipeline inside node (start-up excluded); times are medians of the rounds, ratios the median of the rounds' own"
fi
if [ -n "$base_line" ]; then
    printf '%s %s\n' "$vol_line" "$base_line" | awk -v b="$(basename "$VOL_BASELINE")" '{
        v = $17 == "n/a" ? "" : ($17 + 0 >= 8 ? " met" : " NOT met")
        printf "volume   ORT on the baseline %s: %s ms (%s %s); ours on %s %s ms: %sx faster (rounds %s)%s (issue 10 goal >= 8x)\n",
               b, $14, $15, $16, $2, $3, $17, $18, v }'
fi
echo "$fixtures_line"

[ "${BENCH_TRAIN:-1}" = 0 ] && exit $status
# ---- training step: bench-train vs PyTorch (tools/bench_train_torch.py) ----
# Forward, CE + Dice, backward and Adam on one random batch, the same
# architecture (tools/make_bench_models.py) and batch on both sides, 2
# threads, both runs one after the other in this run.  Both sides use
# OMP_WAIT_POLICY=passive with GOMP_SPINCOUNT=1000 unless set (PyTorch's
# CPU kernels use the same libgomp; see exec_reexec_passive_wait).  Peak = the process's max
# RSS (PyTorch's includes the torch library itself).
if [ -n "${QUICK:-}" ]; then TS=${TRAIN_STEPS:-2}; else TS=${TRAIN_STEPS:-5}; fi
[ -x "$BUILD/bin/bench-train" ] || make --no-print-directory BUILD="$BUILD" "$BUILD/bin/bench-train" >&2 ||
    die "building $BUILD/bin/bench-train failed"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}" GOMP_SPINCOUNT="${GOMP_SPINCOUNT:-1000}"
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
             "over '"$TS"' steps after 1 warm-up; OMP_WAIT_POLICY=%s GOMP_SPINCOUNT=%s on both sides; " \
             "cpu = process CPU time per step\n", '"$THREADS"', "'"$OMP_WAIT_POLICY"'", "'"$GOMP_SPINCOUNT"'" }'
exit $status
