# Sourced by tools/train_baseline2d.sh and tools/train_baseline3d.sh, the
# baselines our own trainer trains from a random initialisation: their
# argument checks and the choice between a new run and a resumed one.
#   in:  NAME (the caller's name), BUILD, FRESH, the caller's "$@"
#        (DATASET OUT.onnx)
#   out: die(), ds, out, run (OUT.run), init (OUT.init.onnx) and mode:
#        --resume when OUT.run holds a checkpoint and the initial model
#        exists (and FRESH is unset), else --force, and the caller then
#        writes $init.
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
if [ -z "${FRESH:-}" ] && [ -f "$run/checkpoint.sslck" ] && [ -f "$init" ]; then
    echo "$NAME: resuming the run in $run" >&2
    mode=--resume
else
    mode=--force
fi
