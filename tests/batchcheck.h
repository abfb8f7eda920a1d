/* Helpers shared by the tests that run `segment` over many scans as a
 * user would (test_batch, test_soak, test_dicom): a shell command with its
 * whole stdout and stderr captured, absolute paths of the built programs,
 * the small test model, and the one-scan reference run.  Paths are
 * relative to the repository root, where the tests run. */
#ifndef SL_TEST_BATCHCHECK_H
#define SL_TEST_BATCHCHECK_H

#include <stddef.h>

#include "testutil.h"

typedef struct {
    int status;    /* exit status; -1 if it did not exit normally */
    int err_lines; /* non-empty stderr lines */
    char err_first[1024];
    char *out; /* whole stdout (free with bc_free) */
    char *err; /* whole stderr (free with bc_free) */
} BcRun;

/* Run a shell command (printf format) with stdout and stderr captured. */
BcRun bc_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void bc_free(BcRun *r);
/* Number of lines of text starting with prefix. */
int bc_count_lines(const char *text, const char *prefix);
/* Absolute path of a path relative to the repository root. */
void bc_abs_path(const char *rel, char *buf, size_t len);
/* Absolute path of the built segment (static buffer). */
const char *bc_segment_bin(void);
/* The e2e2d fixture compressed to a model (z-score, 2D slices along k,
 * classes background,fg) in the test folder, made once. */
const char *bc_model(void);
/* The first line of README.md containing `needle` (free()), or fail. */
char *bc_readme_line(const char *needle);
/* The folder of the built programs (absolute; static buffer), to put on
 * PATH when running a documented command line verbatim. */
const char *bc_bin_dir(void);
/* rm -rf dir, then mkdir -p dir. */
void bc_fresh_dir(const char *dir);
/* Fails the test unless `out` is byte-identical to the label map of a
 * one-scan run `segment -q --threads 2 -m bc_model() -o REF scan`
 * (run under nice -n 19). */
void bc_assert_same_as_single(const char *scan, const char *out);

#endif
