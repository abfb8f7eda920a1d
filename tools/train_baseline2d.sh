#!/bin/sh
# Train a 2D baseline of the real-data benchmark with our own trainer:
# tools/train_baseline.py's U-Net (5 levels, 32 to 256 features), seeded
# and randomly initialised (--init-only), trained from scratch by
# sauron-compress --no-prune and written as ONNX with the metadata
# segment needs, so that it is compressed like the PyTorch baselines.
#
#   BUILD=build sh tools/train_baseline2d.sh DATASET OUT.onnx
#
# Why not PyTorch: our training step is about 3x faster on this machine
# class (BENCHMARKS.md, "Training"), and the 2400 iterations the anatomy
# baseline needs took 86 min in tools/train_baseline.py on 2 threads.
# The data flags are the ones the brain baselines were trained with: no
# geometric augmentation, other fields of view (--fov-aug 0.5) and crops
# around the labels (--crop-aug 0.3); compress the result with the same
# three flags.  sauron-compress keeps a checkpoint in OUT.run: rerunning
# the same command after a crash or a kill resumes the run (--resume);
# FRESH=1 starts again.  Knobs (environment): EPOCHS, ITERS (per epoch),
# BATCH, LR, THREADS, SEED, NORM, and FT_EPOCHS, FT_ITERS for a second
# stage (tools/baseline_common.sh).  The defaults: 2400 iterations of
# batch 4 from scratch at 1e-3, as the PyTorch anatomy baseline
# (OUT.stage1.onnx), then 20 x 250 of fine-tuning with the same data
# flags (OUT).  On the anatomy task the second stage raised held-out
# Dice from 0.9360 to 0.9461 (run Anp, BENCHMARKS.md "Anatomy"); its
# validation Dice still rose by 0.001 over its last 5 epochs.
set -eu
BUILD=${BUILD:-build}
EPOCHS=${EPOCHS:-12}
ITERS=${ITERS:-200}
FT_EPOCHS=${FT_EPOCHS:-20}
BATCH=${BATCH:-4}
LR=${LR:-1e-3}
THREADS=${THREADS:-2}
SEED=${SEED:-1}
NORM=${NORM:-zscore-fg}
NAME=train_baseline2d
. "$(dirname "$0")/baseline_common.sh"
if [ "$skip1" = 0 ]; then
    if [ "$mode" = --force ]; then
        /usr/bin/python3 tools/train_baseline.py "$ds" "$init" --init-only --seed "$SEED" \
            --normalize "$NORM" || die "tools/train_baseline.py --init-only failed"
    fi
    # --val-fraction 0.1: two of the 20 training cases, as the other baselines
    "$BUILD/bin/sauron-compress" "$init" "$first" --data "$ds" --no-prune $AS_TRAINED --normalize "$NORM" \
        --no-augment --fov-aug 0.5 --crop-aug 0.3 \
        --epochs "$EPOCHS" --iters-per-epoch "$ITERS" --batch "$BATCH" --lr "$LR" \
        --threads "$THREADS" --seed "$SEED" --val-fraction 0.1 --run-dir "$run" $mode ||
        die "sauron-compress failed (run folder $run)"
fi
finetune_stage --normalize "$NORM" --no-augment --fov-aug 0.5 --crop-aug 0.3
