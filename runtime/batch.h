/* Batches: segment many cases with one model load.
 *
 * A case is one scan spec as nio_read takes it (a path, or modality files
 * joined by commas).  The cases are the scans named on the command line,
 * then the .nii/.nii.gz files of an input folder in byte order of their
 * names (one file per case).  Each case's output goes beside its scan
 * (<scan>_seg.nii.gz), or to the one file given with -o (one case only),
 * or into an output folder as <scan>_seg.nii.gz.
 *
 * The model is read once by the caller; one Segmenter serves every case,
 * so executors (buffer plan and arena) are reused across cases of the
 * same slice or patch shape.  A failed case (unreadable or corrupt file,
 * existing output without --force, wrong modality count, out of memory)
 * prints one line naming it and the run goes on with the next; the
 * caller turns a non-zero failure count into a non-zero exit.
 */
#ifndef SL_BATCH_H
#define SL_BATCH_H

#include "graph.h"
#include "segment.h"

typedef struct {
    char **cases;   /* [n] scan specs (owned copies) */
    char **outputs; /* [n] label map paths (owned) */
    int n;
    int batch_mode;    /* several cases, an input folder or an output folder:
                        * per-case times and a summary line are printed */
    const char *probs; /* --probabilities FILE (one case only), borrowed */
    char **overlays;   /* [n] overlay PNG paths (owned), or NULL: none */
    /* (st_dev, st_ino) of every input file of every case, sorted, so an
     * output that is an input is refused in O(log n) per case */
    unsigned long long *input_ids;
    int n_input_ids;
} SegBatch;

/* Build the case list and outputs.  scans: [n_scans] specs from the
 * command line (may be 0 when input_dir is given); input_dir: a folder of
 * scans or NULL; out: -o (a .nii/.nii.gz file for one case, or a folder:
 * an existing one, one ending in '/', or any other name when there are
 * several cases or an input folder; a missing folder is created) or NULL;
 * probs: --probabilities FILE or NULL (one case only).  Refuses with one
 * line (ERR_ARG, ERR_IO, ERR_NOMEM) when there is no case, when two cases
 * would write the same output, when -o FILE or --probabilities is given
 * several cases, or when the output folder is the input folder.  Free
 * with segbatch_free (also after a failure). */
int segbatch_plan(SegBatch *b, char *const *scans, int n_scans,
                  const char *input_dir, const char *out, const char *probs);
void segbatch_free(SegBatch *b);

/* Ask for overlay pictures (runtime/overlay.h), after segbatch_plan.
 * One case: `overlay` is the PNG (a name ending in .png), or a folder.
 * Several cases: a folder (existing, or created) that receives
 * <scan>_overlay.png per case.  Refuses (ERR_ARG, one line) a .png name
 * for several cases, a name that is neither, two cases with one picture
 * name; ERR_IO when the folder cannot be created. */
int segbatch_set_overlay(SegBatch *b, const char *overlay);

typedef struct {
    int force;           /* replace existing outputs (never inputs) */
    uint64_t max_memory; /* bytes a case's voxels and outputs may take
                          * (0: nio_default_max_memory()); a case above
                          * it fails with one line */
    int quiet;           /* no per-case lines, no summary */
    int show_progress;   /* progress line per slice batch/window on stderr */
    SegmentOptions seg;  /* threads, batch; progress fields are set here */
} SegBatchOptions;

typedef struct {
    int n_ok, n_failed;
    double seconds;  /* wall time of all cases */
    int n_executors; /* executors created (one per distinct input shape,
                      * reused across cases) */
} SegBatchResult;

/* Segment every case of b with model g.  Per case, unless quiet: one
 * stdout line "SCAN -> OUTPUT" (batch mode: prefixed "[k/n]" and followed
 * by the case's wall time), flushed at once so a log can be followed;
 * then, in batch mode, one summary line.  A failed case prints one line on
 * stderr naming it and counts in r->n_failed.  Returns 0, or a negative
 * code when no case could run (the model's metadata is unusable). */
int segbatch_run(const SegBatch *b, Graph *g, const SegBatchOptions *o,
                 SegBatchResult *r);

#endif
