# Sourced by tools/train_baseline2d.sh and tools/train_baseline3d.sh, the
# baselines our own trainer trains from a random initialisation: their
# argument checks and the choice between a new run and a resumed one.
#   in:  NAME (the caller's name), BUILD, FRESH, the caller's "$@"
#        (DATASET OUT.onnx)
#   out: die(), ds, out, run (OUT.run), init (OUT.init.onnx), first
#        (where the first stage writes: OUT, or OUT.stage1.onnx when
#        FT_EPOCHS > 0), skip1 (1 when that stage finished in an earlier
#        call) and mode: --resume when OUT.run holds a checkpoint and the
#        initial model exists (and FRESH is unset), else --force, and the
#        caller then writes $init; finetune_stage.
die() { echo "error: $NAME: $*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: sh tools/$NAME.sh DATASET OUT.onnx"
ds=$1; out=$2
case $out in *.onnx) ;; *) die "the output '$out' must end in .onnx (bench_real.sh compresses it)" ;; esac
[ -f "$ds/dataset.json" ] ||
    die "$ds has no dataset.json; make it with tools/make_datasets.py (2 mm: tools/downsample_dataset.py)"
[ -x "$BUILD/bin/sauron-compress" ] || die "$BUILD/bin/sauron-compress missing; run 'make BUILD=$BUILD' first"
[ -f "$out" ] && [ -z "${FRESH:-}" ] && die "$out exists; remove it or give FRESH=1 to train again"
run=${out%.onnx}.run
init=${out%.onnx}.init.onnx
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
# Baselines are written as trained, as the PyTorch ones and the
# documented baselines (Anp, D3np): sauron-compress would otherwise fold
# class biases tuned on its validation cases into them (--tune-decision,
# on by default for any class count since 2026-12-07).
AS_TRAINED="--tune-decision off"
FT_EPOCHS=${FT_EPOCHS:-0}
FT_ITERS=${FT_ITERS:-250}
case $FT_EPOCHS in *[!0-9]* | '') die "FT_EPOCHS must be a whole number (0: no second stage), not '$FT_EPOCHS'" ;; esac
first=$out
[ "$FT_EPOCHS" -gt 0 ] && first=${out%.onnx}.stage1.onnx
skip1=0
[ "$first" != "$out" ] && [ -f "$first" ] && [ -z "${FRESH:-}" ] && skip1=1
if [ -z "${FRESH:-}" ] && [ -f "$run/checkpoint.sslck" ] && [ -f "$init" ]; then
    echo "$NAME: resuming the run in $run" >&2
    mode=--resume
else
    mode=--force
fi

# The second stage, when FT_EPOCHS > 0: the first stage's model ($first)
# fine-tuned FT_EPOCHS x FT_ITERS more iterations with sauron-compress's
# defaults (--no-prune; batch 2, Adam at its length-scaled rate, a fifth
# of the cases for validation) plus the caller's flags, written to OUT;
# run folder OUT.ft.run, resumed as the first.  Why: the first stage's
# short, fast-rate run is not converged; the --no-prune control of a
# compress run gained 1.1 points of held-out Dice on it in 3D
# (BENCHMARKS.md, "Brain extraction in 3D"), so a compressed model was
# judged against a reference fine-tuning alone beats.
finetune_stage() { # flags...
    [ "$FT_EPOCHS" -gt 0 ] || return 0
    ftrun=${out%.onnx}.ft.run
    ftmode=--force
    if [ -z "${FRESH:-}" ] && [ -f "$ftrun/checkpoint.sslck" ]; then
        echo "$NAME: resuming the second stage in $ftrun" >&2
        ftmode=--resume
    fi
    "$BUILD/bin/sauron-compress" "$first" "$out" --data "$ds" --no-prune $AS_TRAINED "$@" \
        --epochs "$FT_EPOCHS" --iters-per-epoch "$FT_ITERS" \
        --threads "$THREADS" --seed "$SEED" --run-dir "$ftrun" $ftmode ||
        die "sauron-compress failed in the second stage (run folder $ftrun)"
}
