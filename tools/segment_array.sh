#!/bin/sh
#SBATCH --job-name=segment
#SBATCH --cpus-per-task=4
#SBATCH --mem=2G
# A backlog of scans over a Slurm job array: each array task segments its
# share (every COUNT-th scan of the name-sorted list) in one `segment`
# process, so the model is read once per task.  Run from the folder that
# holds SCANS_DIR, with `segment` on PATH on every node:
#   sbatch --array=0-49 tools/segment_array.sh SCANS_DIR OUT_DIR [MODEL.sslim]
# The array must be contiguous (no :step).  A task fails (exit 123) when
# any of its cases failed; the others are written all the same, and each
# failed case is one "error: case k/n ..." line in that task's log.
set -eu
if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    echo "usage: sbatch --array=0-N $0 SCANS_DIR OUT_DIR [MODEL.sslim]" >&2
    exit 2
fi
task=${SLURM_ARRAY_TASK_ID:?not in a job array: submit with sbatch --array=0-N}
count=${SLURM_ARRAY_TASK_COUNT:?not in a job array: submit with sbatch --array=0-N}
first=${SLURM_ARRAY_TASK_MIN:-0}
find "$1" -maxdepth 1 -type f \( -name '*.nii.gz' -o -name '*.nii' \) ! -name '.*' |
    LC_ALL=C sort |
    awk -v n="$count" -v i="$((task - first))" '(NR - 1) % n == i' |
    xargs -r -d '\n' segment ${3:+-m "$3"} --threads "${SLURM_CPUS_PER_TASK:-1}" -o "$2/"
