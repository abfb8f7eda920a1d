#!/bin/sh
# Reproduce the runs in docs/SAURON_RESULTS.md (phantom task).
#   sh tools/sauron_experiments.sh [BUILD_DIR] [OUT_DIR]
# Needs /usr/bin/python3 with numpy, nibabel (and torch only to remake the
# starting model, which is committed).
set -e
B=${1:-build}
OUT=${2:-/tmp/sauron_experiments}
DS=$OUT/Dataset910_SauronPhantom
MODEL=tests/fixtures/sauron/phantom_unet.onnx
mkdir -p "$OUT"
[ -d "$DS" ] || /usr/bin/python3 tools/make_phantom.py "$DS" --cases 8 \
    --test 2 --size 32,32,16
COMMON="--data $DS --batch 8 --threads 2 --seed 1 --force"
run() { # name, flags...
    name=$1; shift
    "$B/bin/sauron-compress" "$MODEL" "$OUT/$name.sslim" $COMMON "$@" \
        --run-dir "$OUT/$name.run" 2>"$OUT/$name.log" >/dev/null
    grep -E "FLOPs|Dice|written" "$OUT/$name.run/sauron_summary.txt" \
        2>/dev/null | sed "s/^/$name: /" || tail -1 "$OUT/$name.log"
}
run np8 --no-prune --epochs 8 --iters-per-epoch 15
run t045_e8 --epochs 8 --iters-per-epoch 15 --tau-max 0.45 \
    --keep-head-input --max-dice-drop 0.02 --lambda 1.0
run t040_e10 --epochs 10 --iters-per-epoch 20 --tau-max 0.4 \
    --max-dice-drop 0.02
