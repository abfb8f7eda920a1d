#!/bin/sh
# Held-out accuracy of one model: segment every imagesTs case of an
# nnU-Net-layout dataset and score it against labelsTs with sauron-eval.
#   sh tools/heldout_dice.sh MODEL.sslim DATASET [WORK_DIR]
# Prints one line per case (Dice per class, mean, HD95) and the mean over
# cases; predictions go to WORK_DIR (default: a temporary folder, removed).
# BUILD (default build) holds segment and sauron-eval; THREADS (default 2).
set -eu
[ $# -ge 2 ] || { echo "usage: sh tools/heldout_dice.sh MODEL DATASET [WORK_DIR]" >&2; exit 2; }
model=$1; ds=$2; BUILD=${BUILD:-build}; T=${THREADS:-2}
die() { echo "error: heldout_dice: $*" >&2; exit 1; }
[ -f "$model" ] || die "no model '$model'"
[ -d "$ds/imagesTs" ] && [ -d "$ds/labelsTs" ] || die "'$ds' has no imagesTs/ and labelsTs/; give a dataset made by tools/make_datasets.py"
for b in segment sauron-eval; do
    [ -x "$BUILD/bin/$b" ] || die "$BUILD/bin/$b missing; run 'make BUILD=$BUILD' first"
done
K=$(/usr/bin/python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["labels"]))' "$ds/dataset.json") ||
    die "cannot read the class count from $ds/dataset.json"
if [ $# -ge 3 ]; then W=$3; mkdir -p "$W"; else W=$(mktemp -d); trap 'rm -rf "$W"' EXIT; fi
n=0
for img in "$ds"/imagesTs/*_0000.nii.gz; do
    [ -f "$img" ] || die "no imagesTs/*_0000.nii.gz in '$ds'"
    c=$(basename "$img" _0000.nii.gz)
    "$BUILD/bin/segment" -q -m "$model" -o "$W/$c.nii.gz" --threads "$T" --force "$img" ||
        die "segment failed on $img"
    "$BUILD/bin/sauron-eval" "$W/$c.nii.gz" "$ds/labelsTs/$c.nii.gz" --classes "$K" \
        --csv "$W/$c.csv" --force >/dev/null || die "sauron-eval failed on $c"
    awk -F, -v c="$c" '$1 == "mean" {printf "%s: mean Dice %.4f, HD95 %.2f mm\n", c, $2, $3}' "$W/$c.csv"
    n=$((n + 1))
done
cat "$W"/*.csv | awk -F, -v n="$n" -v m="$model" '$1 == "mean" {d += $2; h += ($3 == "inf" ? 1e9 : $3)}
    END {printf "%s: held-out mean Dice %.4f, HD95 %.2f mm over %d cases\n", m, d / n, h / n, n}'
