/* Training checkpoints: everything a run needs to continue after a crash,
 * at an epoch boundary, in one checksummed file written atomically.
 *
 * File (little-endian):
 *   "SLCKPT\r\n" (8 bytes), u32 major = 1, u32 minor = 1,
 *   then sections until the end: u32 tag, u64 size, size bytes, u32 CRC-32
 *   of the payload.  Tags (four ASCII letters as a little-endian u32):
 *     SETT  settings text ("key=value" lines) a resume must match
 *     CNTR  i32 epochs done, i32 best epoch (-1: none)
 *     HIST  u32 count, then per epoch the EpochStats fields in the order
 *           of the struct (doubles as IEEE bits, n_classes and n_columns
 *           entries of the arrays only); the trainer stores 0 in the
 *           wall-clock fields (seconds, step_seconds, data_wait), so two
 *           runs of the same settings write the same bytes: the times
 *           are in RUN/epochs.csv
 *     TUNE  (minor 1) n_hist doubles: each epoch's val_dice_tuned, after
 *           HIST; without it they read as NaN
 *     OPTM  u32 count, then per state: u32 name length, name (the graph
 *           value's name: value indices are not stored), u32 ndim,
 *           ndim x i64 dims, i64 step, u32 has_v, numel floats m, then v
 *     GRPH  the network (.sslim bytes, sslim_encode)
 *     BEST  the network marked best (.sslim), optional
 *     HOOK  the hooks' blob, optional
 *   Unknown tags are an error (ERR_FORMAT), as are truncation, a bad CRC,
 *   sizes beyond the file, and a missing SETT/CNTR/HIST/GRPH section.
 *
 * Optimiser state is matched to parameters by value name on restore, so
 * a checkpoint never depends on the order in which a decoder numbers
 * values.
 */
#ifndef SL_TRAIN_CHECKPOINT_H
#define SL_TRAIN_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "compressor/train/optim.h"
#include "compressor/train/trainer.h"
#include "runtime/graph.h"

#define CKPT_MAJOR 1
#define CKPT_MINOR 1

typedef struct {
    char *name; /* graph value name (owned) */
    Shape shape;
    int64_t numel;
    int64_t step;
    float *m; /* numel floats (owned) */
    float *v; /* numel floats or NULL (owned) */
} CkptOptState;

typedef struct {
    char *settings; /* owned, NUL-terminated */
    int epoch;      /* epochs completed */
    int best_epoch; /* -1: none */
    int n_hist;
    EpochStats *hist; /* owned */
    int have_tune;    /* reading: a TUNE section was seen */
    int n_opt;
    CkptOptState *opt; /* owned */
    uint8_t *graph;    /* .sslim bytes (owned) */
    size_t graph_n;
    uint8_t *best; /* .sslim bytes or NULL (owned) */
    size_t best_n;
    uint8_t *hook; /* hooks' blob or NULL (owned) */
    size_t hook_n;
} Checkpoint;

/* Copy the optimiser's state into c->opt (names from g).  0 or ERR_NOMEM. */
int ckpt_capture_optim(Checkpoint *c, Optim *opt, const Graph *g);
/* Restore c->opt into opt for the parameters p[0..n) of g: creates the
 * states (optim_step with lr 0, which leaves weights unchanged) and
 * overwrites m, v and step.  ERR_FORMAT (naming `what`) if a state names
 * no parameter or its shape differs. */
int ckpt_restore_optim(const Checkpoint *c, Optim *opt, const Graph *g,
                       const TrainParam *p, int n, const char *what);

/* Encode and write atomically (replacing an older file).  0, ERR_NOMEM,
 * ERR_IO. */
int ckpt_write(const char *path, const Checkpoint *c);
/* Read and check; c is zeroed first and freed on failure.  ERR_IO (no
 * file), ERR_FORMAT, ERR_NOMEM. */
int ckpt_read(const char *path, Checkpoint *c);
void ckpt_free(Checkpoint *c);

/* First differing setting between two "key=value" texts, as one phrase
 * into buf ("epochs=3 in the run folder, epochs=4 now"); returns 0 when
 * they agree, 1 otherwise. */
int ckpt_settings_diff(const char *saved, const char *now, char *buf,
                       size_t len);

#endif
