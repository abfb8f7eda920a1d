/* Checks shared by the benchmark-peer tests: test_peer (ONNX Runtime,
 * tools/ort_segment.js) and test_torch_segment (PyTorch,
 * tools/torch_segment.py).  Both run our `segment` and a peer on the same
 * small synthetic scans with models/default.sslim (the peer on its ONNX
 * export) and compare label maps up to near-ties, the peer's `--check`
 * line and the output geometry.  The tolerances stay in the tests, next to
 * the comments that justify them.  Paths are relative to the repository
 * root, where the tests run.
 */
#ifndef SL_TEST_PEERCHECK_H
#define SL_TEST_PEERCHECK_H

#include <stddef.h>
#include <stdint.h>

#include <nifti2_io.h>

#include "testutil.h"

#define PEER_MODEL "models/default.sslim"

/* PEER_MODEL with its training grid cleared (sauron-compress
 * --no-finetune --orientation none --spacing none), made once per test
 * program in the temporary folder: the peers run each scan on its own
 * grid (no reorientation, no resampling), so segment is compared with
 * them on the same terms; tests/test_orient.c covers the grid. */
const char *peer_model(void);

/* A synthetic scan: nx x ny x nz voxels whose intensity at (i, j, k) is
 * intensity(i, j, k, rng), drawn in x-fastest order from a TestRng seeded
 * with `seed`. */
typedef struct {
    int nx, ny, nz;
    float (*intensity)(int i, int j, int k, TestRng *rng);
    uint64_t seed;
} PeerPhantom;

/* The phantom as a NIfTI file at `path`: float32 when slope is 0, else
 * int16 stored as (value - inter) / slope with those scl_slope and
 * scl_inter; geometry of niftifixture.h (oblique qform, other sform). */
void peer_write_scan(const char *path, const PeerPhantom *ph, double slope,
                     double inter);

/* Path of peer_model() exported to ONNX (sauron-compress --no-finetune),
 * made once per test program in the temporary folder. */
const char *peer_default_onnx(void);

/* Temporary files of one scan NAME: NAME.nii.gz, NAME_ours.nii.gz (our
 * label map), NAME_probs.nii.gz (our class probabilities). */
typedef struct {
    char scan[512], ours[512], probs[512];
} PeerScan;

/* Fill s for `name`, write the phantom there and run
 * `segment -q --threads 1 -m peer_model() --probabilities` on it; fails the
 * calling test if segment fails. */
void peer_segment(PeerScan *s, const char *name, const PeerPhantom *ph,
                  double slope, double inter);

/* Run a peer command (its stdout redirected by the caller); returns the
 * exit status, the first stderr line in err (up to len) and the number of
 * stderr lines in *lines. */
int peer_run(const char *cmd, char *err, size_t len, int *lines);

/* The first two lines of a peer's stdout (empty strings when missing). */
void peer_read_lines(const char *path, char *l1, char *l2, size_t len);

/* Parse the `--check` line "agree A differ D of N": N must be nv and A,
 * printed with 8 decimals, (nv - D) / nv.  Fails naming `what` when the
 * line is missing. */
void peer_parse_check(const char *what, const char *line, long nv,
                      double *agree, long *differ);

/* nifti_image_read(path, data), failing the test on NULL. */
nifti_image *peer_read(const char *path, int data);
/* segment's --probabilities file: float32, 2 classes x nv voxels. */
nifti_image *peer_read_probs(const char *path, long nv);

/* Label of voxel i of a uint8 or int16 label map (fails otherwise). */
int peer_label_at(const nifti_image *nim, size_t i);

/* Voxels where label maps a and b differ, each reported on stderr; each
 * must be a near-tie of `probs` (segment's probabilities, [2][nv]):
 * |p1 - p0| <= tie_margin, else the test fails. */
long peer_count_differ(const char *what, const nifti_image *a,
                       const nifti_image *b, const float *probs, long nv,
                       double tie_margin);

/* A non-trivial two-class map: at least min_voxels voxels labelled 1 and
 * at least min_voxels others.  Returns the count labelled 1. */
long peer_assert_two_classes(const char *what, const nifti_image *map,
                             long nv, long min_voxels);

/* Output o has the grid, voxel size and both transforms of input in. */
void peer_assert_same_geometry(const nifti_image *in, const nifti_image *o);

/* Runs a peer with ARGS, stdout into out_txt (NULL: dropped); returns
 * the exit status, the first stderr line in err (up to len) and the
 * number of stderr lines in *lines. */
typedef int (*PeerTool)(const char *args, const char *out_txt, char *err,
                        size_t len, int *lines);

/* Non-zero exit with exactly one stderr line, starting with `prefix`. */
void peer_assert_one_error(int st, int lines, const char *err,
                           const char *prefix);

/* A missing scan: `tool` fails with one `prefix` line and writes no
 * output. */
void peer_check_missing_input(PeerTool tool, const char *prefix);

/* An output that exists without --force: `tool` on `scan` (the phantom,
 * written here) fails with one `prefix` line naming --force and leaves
 * the file at `exists` alone. */
void peer_check_no_clobber(PeerTool tool, const char *prefix,
                           const PeerPhantom *ph, const char *scan,
                           const char *exists);

#endif
