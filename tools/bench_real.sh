#!/bin/sh
# Real-data benchmark (issue 5): baseline vs --no-prune control vs Sauron
# on the brain-MRI datasets, and our runtime vs ONNX Runtime and PyTorch
# on whole held-out volumes, all measured in this run.
#
#   BUILD=build [QUICK=1] [TASKS="brain anatomy brain3d"] [EXTRA="paper best"]
#       sh tools/bench_real.sh
#
# Every step writes into $REAL (default $BUILD/real) and is skipped when its
# output is already there, so a long run can be resumed and a rerun only
# re-measures.  Tasks: brain = Dataset001_BrainExtraction and anatomy =
# Dataset002_Anatomy (2D, 1 mm), brain3d = Dataset003_BrainExtraction2mm
# (3D: Dataset001 at 2 mm, tools/downsample_dataset.py).  Steps per task:
#   data      tools/make_datasets.py (deterministic, ~1 min), then for
#             brain3d tools/downsample_dataset.py (~2 min)
#   baseline  tools/train_baseline.py, PyTorch on BASELINE_THREADS threads
#             (brain 400, anatomy 2400 iterations; 20 to 80 min); brain3d:
#             tools/train_baseline3d.sh, our trainer from a random
#             initialisation (200 iterations of one 64^3 patch, the first
#             stage alone: BASELINE3D_EPOCHS, BASELINE3D_ITERS and
#             BASELINE3D_FT_EPOCHS set its EPOCHS, ITERS, FT_EPOCHS; the
#             script's own defaults train the converged one); or a copy of
#             $BASELINE_BRAIN / $BASELINE_ANATOMY / $BASELINE_BRAIN3D
#   sauron    sauron-compress with the recipe below (SAURON_FLAGS)
#   control   the same fine-tune with --no-prune (same length, seed, lr)
#   paper, best (only the rows named in EXTRA): the same fine-tune with
#             PAPER_FLAGS (the published schedule) and BEST_FLAGS (run b5,
#             the best 2D brain recipe of docs/SAURON_RESULTS.md)
#   eval      segment + sauron-eval on every imagesTs case
#   speed     one held-out volume, median of RUNS runs each: our segment on
#             the Sauron and the baseline model, ONNX Runtime
#             (tools/ort_segment.js) on the baseline ONNX and on the Sauron
#             model exported to ONNX, PyTorch (tools/torch_segment.py) on
#             both; each peer at every batch in PEER_BATCHES (default "1 4")
#             and its faster kept; label maps checked against ours
#   plot      tools/plot_run.py on the Sauron run (channels, FLOPs, s/epoch)
# QUICK=1 (make bench-quick) trains nothing: brain only, the shipped
# models/default.sslim as the Sauron model, the cached baseline if a full
# run left one, otherwise the baseline architecture with untrained weights
# (speed and memory only; its accuracy row is then left out).  QUICK
# runs 2D tasks only.  The peers slice 2D models only: brain3d measures
# our segment (sliding window) alone.
set -eu
BUILD=${BUILD:-build}
REAL=${REAL:-$BUILD/real}
T=${THREADS:-2}
BT=${BASELINE_THREADS:-2}
if [ -n "${QUICK:-}" ]; then TASKS=${TASKS:-brain}; RUNS=${RUNS:-2}; else
    TASKS=${TASKS:-brain anatomy}; RUNS=${RUNS:-3}; fi
PEER_BATCHES=${PEER_BATCHES:-1 4}
# The recipe of the shipped model (models/README.md): the default command
# (the budget schedule's defaults, no tuning flag) at this length, on a
# baseline trained with the head-only normalisation and field-of-view
# augmentation (BASELINE_FLAGS).  EPOCHS, when given, sets the length of
# every task (tests/test_bench_real.c runs seconds-long fine-tunes);
# otherwise brain3d runs 100 iterations of one 64^3 patch (half its
# baseline's training; a 3D step costs several 2D ones here).
EPOCHS_SET=${EPOCHS:+1}
EPOCHS=${EPOCHS:-"--epochs 20 --iters-per-epoch 20"}
EPOCHS_3D=${EPOCHS_3D:-"--epochs 10 --iters-per-epoch 10"}
NORM=${NORM:-zscore-fg}
SAURON_FLAGS=${SAURON_FLAGS:-}
EXTRA=${EXTRA:-}
PAPER_FLAGS=${PAPER_FLAGS:---schedule paper}
BEST_FLAGS=${BEST_FLAGS:---lambda 1.0 --tau-max 0.6 --prune-every 10 --prune-guard 0.02 --max-dice-drop 0.01}
BASELINE_FLAGS=${BASELINE_FLAGS:---normalize $NORM --fov-aug 0.67}
# Per task: both 2D baselines were trained without augmentation
# (tools/train_baseline.py), and fine-tuning them with our default
# augmentation moves them off their input distribution: anatomy lost 7 Dice
# points in the first epoch (val mean Dice 0.913 -> 0.842 over 20
# iterations; --no-augment: 0.909, then 0.912 after 2 epochs; lr 5e-5 with
# augmentation: 0.903, then 0.899); brain (zscore-fg + fov baseline) lost
# one point and doubled HD95 in 20 iterations (held-out 0.9617 / 13.9 mm;
# --no-augment 0.9726 / 5.3 mm; docs/SAURON_RESULTS.md).  The brain3d
# baseline was trained by our trainer with its augmentation: kept.
task_flags() { case $1 in anatomy | brain) echo "--no-augment" ;; *) echo "" ;; esac; }
is3d() { [ "$1" = brain3d ]; }
# the FLOPs column: one padded slice of the 181x217x181 grid (2D), one
# patch (brain3d: the model's input, tools/train_baseline3d.sh's PATCH)
shape_of() { if is3d "$1"; then echo 1,1,64,64,64; else echo 1,1,224,192; fi; }
length_of() { if is3d "$1" && [ -z "$EPOCHS_SET" ]; then echo "$EPOCHS_3D"; else echo "$EPOCHS"; fi; }
common_of() { # batch: one 64^3 patch in 3D, as tools/train_baseline3d.sh
    b=4; is3d "$1" && b=1
    echo "--batch $b --threads $T --seed 1 --lr 2e-4 --val-fraction 0.1 --normalize $NORM"
}

die() { echo "error: bench_real: $*" >&2; exit 1; }
say() { echo "bench_real: $*" >&2; }
for b in sauron-compress segment sauron-eval sauron-inspect; do
    [ -x "$BUILD/bin/$b" ] || die "$BUILD/bin/$b missing; run 'make BUILD=$BUILD' first"
done
for f in ort_segment.js torch_segment.py plot_run.py; do
    [ -f "tools/$f" ] || die "tools/$f missing (run from the repository root)"
done
[ -d "$BUILD/node/node_modules/onnxruntime-node" ] ||
    die "onnxruntime-node missing in $BUILD/node; run 'BUILD=$BUILD sh tools/deps.sh bench'"
export ORT_NODE_PATH="$BUILD/node"
# both sides wait as our programs do by themselves (exec_reexec_passive_wait)
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}" GOMP_SPINCOUNT="${GOMP_SPINCOUNT:-1000}"
TIME=/usr/bin/time
[ -x $TIME ] || die "/usr/bin/time missing (Debian package 'time')"
mkdir -p "$REAL"

# ---- data ----
DATA=$REAL/data
dataset_of() { case $1 in brain) echo "$DATA/Dataset001_BrainExtraction" ;;
    anatomy) echo "$DATA/Dataset002_Anatomy" ;;
    brain3d) echo "$DATA/Dataset003_BrainExtraction2mm" ;; *) die "unknown task '$1'" ;; esac; }
for x in $EXTRA; do
    case $x in paper | best) ;; *) die "EXTRA: unknown row '$x' (give paper and/or best)" ;; esac
done
for task in $TASKS; do
    dataset_of "$task" >/dev/null
    [ -n "${QUICK:-}" ] && is3d "$task" && die "QUICK runs 2D tasks only; drop $task from TASKS"
done
# made when a requested task's dataset is missing (make_datasets.py makes
# the two 1 mm ones, brain3d is Dataset001 at 2 mm)
for task in $TASKS; do
    ds=$(dataset_of "$task")
    [ -f "$ds/dataset.json" ] && continue
    src=$(dataset_of brain)
    if ! is3d "$task" || [ ! -f "$src/dataset.json" ]; then
        say "making the datasets in $DATA"
        /usr/bin/python3 tools/make_datasets.py "$DATA" >&2 || die "tools/make_datasets.py failed"
    fi
    if is3d "$task"; then
        say "making $ds (2 mm) from $src"
        /usr/bin/python3 tools/downsample_dataset.py "$src" "$ds" --factor 2 --force >&2 ||
            die "tools/downsample_dataset.py failed"
    fi
done
iters_of() { case $1 in brain) echo 400 ;; *) echo 2400 ;; esac; }

# number of classes and their names from dataset.json
classes_of() {
    /usr/bin/python3 -c 'import json,sys; l=json.load(open(sys.argv[1]))["labels"]; print(len(l), " ".join(sorted(l, key=l.get)[1:]))' "$1/dataset.json"
}
# the value after the word "key" anywhere in a file of "key value ..." lines, or n/a
field() { awk -v k="$1" '{for (i = 1; i < NF; i++) if ($i == k) {print $(i + 1); f = 1; exit}} END {if (!f) print "n/a"}' "$2"; }
median() { sort -g | awk '{v[NR] = $1} END {if (!NR) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
dims_of() { /usr/bin/python3 -c 'import sys, nibabel; print("x".join(str(n) for n in nibabel.load(sys.argv[1]).shape[:3]))' "$1"; }
peak_mb() { awk -F: '/Maximum resident set size/ {printf "%.1f\n", $2 / 1024}' "$1"; }
wall_ms() { awk '/Elapsed \(wall clock\)/ {n = split($NF, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; printf "%.0f\n", s * 1000}' "$1"; }
inspect() { # model -> "params flops"
    "$BUILD/bin/sauron-inspect" "$1" --shape "$SHAPE" |
        awk '/^total:/ {for (i = 1; i <= NF; i++) {if ($(i + 1) == "parameters,") p = $i; if ($(i + 1) == "FLOPs") f = $i}} END {print p, f}'
}

compress() { # name dataset baseline out flags... (skipped when out exists)
    name=$1; ds=$2; base=$3; out=$4; shift 4
    [ -f "$out" ] && { say "$name: cached $out"; return 0; }
    say "$name: sauron-compress $LENGTH $COMMON $*"
    $TIME -f "%e s wall" -o "${out%.sslim}.time" "$BUILD/bin/sauron-compress" "$base" "$out" \
        --data "$ds" $LENGTH $COMMON --run-dir "${out%.sslim}.run" --force "$@" \
        2>"${out%.sslim}.log" >/dev/null ||
        die "$name failed: $(tail -1 "${out%.sslim}.log") (log: ${out%.sslim}.log)"
}

status=0
for task in $TASKS; do
    ds=$(dataset_of "$task")
    W=$REAL/$task
    mkdir -p "$W"
    set -- $(classes_of "$ds"); K=$1; shift; names="$*"
    SHAPE=$(shape_of "$task")
    LENGTH=$(length_of "$task")
    COMMON=$(common_of "$task")

    # ---- models ----
    trained=1
    if [ ! -f "$W/baseline.onnx" ]; then
        eval "given=\${BASELINE_$(echo "$task" | tr a-z A-Z):-}"
        if [ -n "$given" ]; then
            cp "$given" "$W/baseline.onnx.tmp" && mv "$W/baseline.onnx.tmp" "$W/baseline.onnx"
            echo "copied from $given" >"$W/baseline.log"
        elif [ -n "${QUICK:-}" ]; then
            trained=0
            [ -f "$W/untrained.onnx" ] ||
                /usr/bin/python3 tools/train_baseline.py "$ds" "$W/untrained.onnx" --iters 0 \
                    --max-test 1 2>"$W/untrained.log" || die "exporting the baseline architecture failed ($W/untrained.log)"
        elif is3d "$task"; then
            say "$task: training the 3D baseline with our trainer (tools/train_baseline3d.sh; long)"
            BUILD=$BUILD THREADS=$BT NORM=$NORM EPOCHS=${BASELINE3D_EPOCHS:-10} ITERS=${BASELINE3D_ITERS:-20} \
                FT_EPOCHS=${BASELINE3D_FT_EPOCHS:-0} PATCH=64 sh tools/train_baseline3d.sh "$ds" "$W/baseline.onnx" \
                2>"$W/baseline.log" || die "tools/train_baseline3d.sh failed ($W/baseline.log)"
        else
            it=$(iters_of "$task")
            say "$task: training the PyTorch baseline ($it iterations, $BT threads; long)"
            /usr/bin/python3 tools/train_baseline.py "$ds" "$W/baseline.onnx" --iters "$it" \
                --threads "$BT" $BASELINE_FLAGS 2>"$W/baseline.log" || die "tools/train_baseline.py failed ($W/baseline.log)"
        fi
    fi
    base_onnx=$W/baseline.onnx
    [ $trained = 1 ] || base_onnx=$W/untrained.onnx
    "$BUILD/bin/sauron-compress" --no-finetune "$base_onnx" "$W/baseline.sslim" --normalize "$NORM" --force >/dev/null 2>&1 ||
        die "converting $base_onnx failed"
    if [ -n "${QUICK:-}" ]; then
        cp models/default.sslim "$W/sauron.sslim"
        rm -rf "$W/sauron.run"
        models="sauron"
        [ $trained = 1 ] && models="baseline sauron"
    else
        compress sauron "$ds" "$base_onnx" "$W/sauron.sslim" $SAURON_FLAGS $(task_flags "$task")
        compress control "$ds" "$base_onnx" "$W/control.sslim" --no-prune $(task_flags "$task")
        models="baseline control sauron"
        for x in $EXTRA; do
            case $x in
            paper) compress paper "$ds" "$base_onnx" "$W/paper.sslim" $PAPER_FLAGS $(task_flags "$task") ;;
            best) compress best "$ds" "$base_onnx" "$W/best.sslim" $BEST_FLAGS $(task_flags "$task") ;;
            esac
            models="$models $x"
        done
    fi
    "$BUILD/bin/sauron-compress" --no-finetune "$W/sauron.sslim" "$W/sauron.onnx" --force >/dev/null 2>&1 ||
        die "exporting $W/sauron.sslim to ONNX failed"

    # ---- accuracy on every held-out case ----
    rows=""
    for m in $models; do
        mkdir -p "$W/pred/$m"
        for img in "$ds"/imagesTs/*_0000.nii.gz; do
            c=$(basename "$img" _0000.nii.gz)
            [ -f "$W/pred/$m/$c.csv" ] && continue
            "$BUILD/bin/segment" -q -m "$W/$m.sslim" -o "$W/pred/$m/$c.nii.gz" --threads "$T" \
                --force "$img" || die "segment failed on $img with $W/$m.sslim"
            "$BUILD/bin/sauron-eval" "$W/pred/$m/$c.nii.gz" "$ds/labelsTs/$c.nii.gz" --classes "$K" \
                --csv "$W/pred/$m/$c.csv.tmp" --force >/dev/null || die "sauron-eval failed on $c"
            mv "$W/pred/$m/$c.csv.tmp" "$W/pred/$m/$c.csv"
        done
        # mean over cases of Dice per class, mean Dice and mean HD95
        acc=$(cat "$W/pred/$m"/*.csv | awk -F, '$1 != "class" {n[$1]++; d[$1] += $2; h[$1] += ($3 == "inf" ? 1e9 : $3)}
            END {for (k = 1; k in n; k++) printf "%.4f ", d[k] / n[k];
                 printf "%.4f %.2f", d["mean"] / n["mean"], h["mean"] / n["mean"]}')
        rows="$rows$m $(inspect "$W/$m.sslim") $acc
"
    done
    base_size=$(inspect "$W/baseline.sslim")
    base_params=${base_size% *}
    base_flops=${base_size#* }
    {
        echo
        echo "== $task: accuracy on the held-out cases ($(ls "$ds"/imagesTs/*_0000.nii.gz | wc -l) variations of one subject) =="
        printf '%-9s %10s %7s %9s %7s' model params "-%" GFLOPs "-%"
        for n in $names; do printf ' %8.8s' "$n"; done
        printf ' %8s %8s\n' "Dice" "HD95 mm"
        printf '%s' "$rows" | awk -v bp="$base_params" -v bf="$base_flops" -v k="$K" '
            NF {printf "%-9s %10d %6.1f%% %9.3f %6.1f%%", $1, $2, 100 * (1 - $2 / bp), $3 / 1e9, 100 * (1 - $3 / bf)
                for (i = 4; i < 4 + k - 1; i++) printf " %8s", $i
                printf " %8s %8s\n", $(3 + k), $(4 + k)}'
        unit=slice; is3d "$task" && unit=patch
        echo "GFLOPs per ${SHAPE#1,1,} $unit (sauron-inspect); Dice per class and HD95 (mm) averaged over cases (sauron-eval)"
    } | tee "$W/accuracy.txt"
    [ $trained = 1 ] || echo "baseline: untrained weights (QUICK, no cached baseline): speed and memory only" | tee -a "$W/accuracy.txt"

    # ---- speed and memory on one held-out volume ----
    vol=$(ls "$ds"/imagesTs/*_0000.nii.gz | head -1)
    srows=""
    # the peers segment 2D models slice by slice only
    peers="ort torch"
    is3d "$task" && peers=""
    for m in sauron baseline; do
        ref=$W/speed.ours.$m.nii.gz
        ms=""
        for r in $(seq "$RUNS"); do
            $TIME -v -o "$W/speed.ours.$m.time" "$BUILD/bin/segment" -q -m "$W/$m.sslim" -o "$ref" \
                --threads "$T" --force "$vol" || die "segment failed on $vol"
            ms="$ms$(wall_ms "$W/speed.ours.$m.time")
"
        done
        srows="${srows}ours $m $(printf '%s' "$ms" | median) $(peak_mb "$W/speed.ours.$m.time") - 1 auto
"
        onnx=$W/$m.onnx
        # the baseline through our converter, so that its ONNX carries the
        # normalisation the peers must apply (sauron.normalize metadata)
        if [ $m = baseline ] && [ -n "$peers" ]; then
            onnx=$W/baseline.meta.onnx
            "$BUILD/bin/sauron-compress" --no-finetune "$W/baseline.sslim" "$onnx" --force \
                >/dev/null 2>&1 || die "exporting $W/baseline.sslim to ONNX failed"
        fi
        # each peer at every batch in PEER_BATCHES; its fastest is the row
        for peer in $peers; do
            out=$W/speed.$peer.$m.txt
            best=""
            for pb in $PEER_BATCHES; do
                o=$W/speed.$peer.$m.b$pb.txt
                if [ $peer = ort ]; then
                    node tools/ort_segment.js "$onnx" "$vol" "$W/speed.$peer.$m.nii.gz" --threads "$T" \
                        --batch "$pb" --repeat "$RUNS" --force --check "$ref" >"$o" || die "ort_segment failed on $onnx"
                else
                    /usr/bin/python3 tools/torch_segment.py "$onnx" "$vol" "$W/speed.$peer.$m.nii.gz" \
                        --threads "$T" --batch "$pb" --repeat "$RUNS" --force --check "$ref" >"$o" ||
                        die "torch_segment failed on $onnx"
                fi
                if [ -z "$best" ] || awk -v a="$(field volume_ms "$o")" -v b="$(field volume_ms "$best")" \
                    'BEGIN {exit !(a + 0 < b + 0)}'; then best=$o; fi
            done
            cp "$best" "$out"
            pb=${best##*.b}; pb=${pb%.txt}
            srows="$srows$peer $m $(field volume_ms "$out") $(field peak_rss_mb "$out") $(field base_rss_mb "$out") $(field agree "$out") $pb
"
        done
    done
    {
        echo
        echo "== $task: one held-out volume ($(basename "$vol"), $(dims_of "$vol")), $T threads, median of $RUNS runs =="
        printf '%-6s %-9s %5s %10s %12s %9s %12s %10s %10s\n' engine model batch "volume ms" "vs ORT base" "peak MB" "vs ORT same" "base MB" "agree"
        printf '%s' "$srows" | awk '
            NF {e[NR] = $1; m[NR] = $2; ms[NR] = $3; mb[NR] = $4; b[NR] = $5; a[NR] = $6; bt[NR] = $7; n = NR
                if ($1 == "ort") {ortms[$2] = $3; ortmb[$2] = $4}}
            function r(x, y) {return (x + 0 > 0 && y + 0 > 0) ? sprintf("%.2fx", y / x) : "n/a"}
            END {for (i = 1; i <= n; i++)
                printf "%-6s %-9s %5s %10s %12s %9s %12s %10s %10s\n", e[i], m[i], bt[i], ms[i], r(ms[i], ortms["baseline"]),
                    mb[i], r(mb[i], ortmb[m[i]]), b[i], (e[i] == "ours") ? "ref" : a[i]}'
        echo "volume ms: read NIfTI, load model, normalise, every slice, argmax, write labels (ours: process wall;"
        echo "peers: in-process, interpreter start-up excluded). vs ORT base = speed-up over ONNX Runtime on the baseline;"
        echo "vs ORT same = ORT's peak memory / ours on the same model (ours > 1x = we use less). peak = max RSS of the"
        echo "process; base MB = the interpreter before the model (node, python+torch). agree = voxels equal to our labels."
        if [ -n "$peers" ]; then
            echo "batch: slices per run; each peer ran at batches $PEER_BATCHES and its faster is shown; ours chooses (segment --help)."
        else
            echo "3D model: our sliding window only; ONNX Runtime and PyTorch not run (tools/ort_segment.js and"
            echo "tools/torch_segment.py segment 2D models slice by slice)."
        fi
    } | tee "$W/speed.txt"
    # the goals of issue 5, from the two tables above
    # (the FLOPs cut is the table's own column, not recomputed from its
    # rounded GFLOPs, so that both say the same number)
    awk '$1 == "baseline" {bd = $(NF - 1)} $1 == "sauron" {sd = $(NF - 1); sc = $5 + 0}
        END {if (bd == "" || sd == "") exit
             printf "goal FLOPs: %.1f%% fewer (goal >= 90%%) with mean Dice %.4f vs %.4f (%+.2f points; goal >= -1)\n",
                 sc, sd, bd, 100 * (sd - bd)}' "$W/accuracy.txt" | tee -a "$W/speed.txt"
    [ -z "$peers" ] || printf '%s' "$srows" | awk '
        $1 == "ours" && $2 == "sauron" {o = $3; om = $4} $1 == "ort" {t[$2] = $3; tm[$2] = $4}
        END {printf "goal speed: ours on the Sauron model is %.1fx faster than ORT on the baseline (goal >= 10x) and %.2fx faster than ORT on the Sauron model (goal > 1x)\n", t["baseline"] / o, t["sauron"] / o
             printf "goal memory: ours %.0f MB vs ORT %.0f MB peak on the Sauron model (goal: below)\n", om, tm["sauron"]}' |
        tee -a "$W/speed.txt"
    printf '%s' "$srows" | awk '$1 != "ours" && $6 + 0 < 0.999 {bad = 1} END {exit bad}' ||
        { echo "error: bench_real: $task: a peer's labels differ from ours on more than 0.1% of the voxels ($W/speed.txt)" >&2; status=1; }

    # ---- the Sauron run: seconds per epoch, channels, FLOPs ----
    if [ -d "$W/sauron.run" ]; then
        echo
        echo "== $task: the Sauron run ($(cat "$W/sauron.time" 2>/dev/null || echo "time n/a")) =="
        /usr/bin/python3 tools/plot_run.py "$W/sauron.run" "$W/sauron_run.png" --title "Sauron on $task" --force ||
            die "tools/plot_run.py failed on $W/sauron.run"
        echo "plot: $W/sauron_run.png"
        [ -f "$W/control.time" ] && echo "control (--no-prune, same length): $(cat "$W/control.time")"
        for x in $EXTRA; do
            if [ -f "$W/$x.time" ]; then echo "$x (same length): $(cat "$W/$x.time")"; fi
        done
    fi
done
exit $status
