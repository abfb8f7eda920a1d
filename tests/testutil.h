/* Helpers shared by the test programs (cmocka). */
#ifndef SL_TESTUTIL_H
#define SL_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "runtime/graph.h"

/* Deterministic PRNG (splitmix64) so every test draws the same numbers. */
typedef struct {
    uint64_t s;
} TestRng;
uint64_t trng_next(TestRng *r);
float trng_uniform(TestRng *r, float lo, float hi); /* [lo, hi) */
void trng_fill(TestRng *r, float *x, size_t n, float lo, float hi);

/* |a-b| <= atol + rtol*|b| for all i; on failure prints max abs/rel error
 * and the first bad index with `what`, and returns 0. */
int allclose(const float *a, const float *b, size_t n, double atol,
             double rtol, const char *what);
#define assert_allclose(a, b, n, atol, rtol)                                 \
    assert_true(allclose((a), (b), (n), (atol), (rtol), #a " vs " #b))

/* Path of a committed fixture: tests/fixtures/<name>. */
const char *fixture_path(const char *name, char *buf, size_t len);
/* The build folder the tests run against: $SL_BUILD, default build. */
const char *test_build_dir(void);
/* Path of a built binary: $SL_BUILD/bin/<name> (default build/). */
const char *bin_path(const char *name, char *buf, size_t len);
/* A fresh temporary directory for this test program (created once). */
const char *test_tmpdir(void);

/* "<test_tmpdir()>/<name>" in one of 16 rotating static buffers: valid
 * until 16 more calls (copy it to keep it longer). */
const char *test_tmp_path(const char *name);

/* Run a shell command; capture stderr (first line, up to len) and return
 * the exit status (or -1). */
int run_cmd(const char *cmd, char *err_line, size_t len);

/* Whole small file as a NUL-terminated string (free()), or NULL if it
 * cannot be read; fails the calling test when out of memory. */
char *slurp_text(const char *path);
/* 1 if both files exist and hold the same bytes. */
int files_equal(const char *a, const char *b);
/* 1 if a line of the text file starts with `prefix` (0 if unreadable). */
int file_has_line_starting(const char *path, const char *prefix);
void sleep_ms(long ms);

/* Tensor fixture file (written by tools/make_fixtures.py):
 *   "SLTENSOR" (8 bytes), u32 version = 1, u32 ndim, ndim x i64 dims,
 *   then numel float32, all little-endian.
 * Returns a malloc'd array (free()) and fills dims/ndim, or NULL with a
 * message on stderr. */
float *load_tensor(const char *path, int64_t *dims, int *ndim);
/* Write x (the product of dims floats) as such a file.  Returns 0, or -1
 * with a message on stderr. */
int save_tensor(const char *path, const float *x, const int64_t *dims,
                int ndim);

/* ONNX Runtime as a test peer: tools/ort_run.js (run from the repository
 * root, as make test-run does) with node and onnxruntime-node from
 * $SL_BUILD/node or build/node (`sh tools/deps.sh test` installs it). */

/* 1 if the ONNX Runtime checks should run.  When ORT is missing: 0 if
 * SL_NO_ORT=1 asks to skip them (one line on stderr; the rest of the
 * calling test still counts), otherwise a line saying how to install it
 * and a cmocka failure of the calling test. */
int ort_available(void);
/* The folder holding onnxruntime-node ($SL_BUILD/node, else build/node), for
 * ORT_NODE_PATH of other node tools; NULL when node or the package is
 * missing. */
const char *ort_dir(void);

/* Run `model` once on the SLTENSOR file `input`, writing graph output k
 * to outputs[k] for k < n_out.  Call after ort_available() returned 1.
 * Returns ort_run.js's exit status (0: ok; -1: ORT not found), its first
 * stderr line in err (up to len). */
int ort_run_model(const char *model, const char *input,
                  const char *const *outputs, int n_out, char *err,
                  size_t len);

/* Compare an ORT output file with ours [dims]: same dims, and
 * |ort - ours| <= rel_tol * max|ours| everywhere (the output scale, as
 * docs/DESIGN.md states the ONNX Runtime criterion).  Prints the max
 * difference labelled `what`, and allclose's report on a mismatch.
 * Returns 1 if close, 0 if not (or the file is unreadable). */
int ort_output_close(const char *path, const float *ours, const int64_t *dims,
                     int ndim, double rel_tol, const char *what);

/* cmocka-asserts that every field of two ModelMeta is equal (names,
 * normalisation, dims/axis/patch/order, source name and sha256, notes). */
void assert_meta_equal(const ModelMeta *a, const ModelMeta *b);

/* cmocka-asserts that a label map keeps its input's header geometry: dims
 * 1-3, pixdim 1-3, qform/sform codes and matrices (exactly: both sides
 * store the same float32 or double parameters), and xyz_units too when
 * check_units. */
void assert_same_nifti_geometry(const char *in, const char *out,
                                int check_units);

#endif
