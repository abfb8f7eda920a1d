/* The validation split: a fixed, seeded choice of training cases held out
 * for validation, recorded in the run folder.
 *
 * n_val = round(n_cases * val_frac), at least 1 and at most n_cases - 1
 * when n_cases >= 2 and val_frac > 0; a single case gives no validation
 * set (n_val = 0) and val_frac = 0 turns validation off.  The choice is
 * the first n_val entries of a seeded Fisher-Yates permutation, so the
 * same (n_cases, val_frac, seed) always gives the same split; both lists
 * are sorted ascending.  The test set (imagesTs) is never part of it.
 */
#ifndef SL_DATA_SPLIT_H
#define SL_DATA_SPLIT_H

#include <stdint.h>

#include "compressor/data/dataset.h"

#define SPLIT_DEFAULT_VAL_FRAC 0.2

typedef struct {
    uint64_t seed;
    double val_frac;
    int n_train, n_val;
    int *train; /* [n_train] case indices into Dataset.case_names (owned) */
    int *val;   /* [n_val] (owned) */
} DataSplit;

/* 0, ERR_ARG (val_frac outside [0, 1) or n_cases < 1), ERR_NOMEM. */
int split_make(DataSplit *sp, int n_cases, double val_frac, uint64_t seed);

/* The validation cases named by the user (--val-cases), the other cases of
 * ds training; sp->val_frac is their share, sp->seed is informative.
 * ERR_ARG with one line if a name is not a case of ds, is given twice, or
 * the names leave no case to train on; ERR_NOMEM. */
int split_from_names(DataSplit *sp, const Dataset *ds, char *const *names,
                     int n_names, uint64_t seed);

/* Write DIR/split.json:
 *   {"seed": S, "val_fraction": F, "train": ["case", ...],
 *    "val": ["case", ...]}
 * atomically (temporary + rename), replacing an older one.  0 or
 * ERR_IO/ERR_NOMEM. */
int split_write(const DataSplit *sp, const Dataset *ds, const char *dir);

/* Read a split written by split_write back (e.g. on --resume), mapping
 * names to ds's case indices.  ERR_FORMAT if a case is unknown, listed
 * twice, or the file is malformed. */
int split_read(DataSplit *sp, const Dataset *ds, const char *path);

void split_free(DataSplit *sp);

#endif
