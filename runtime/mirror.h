/* Test-time mirroring (segment --tta), as nnU-Net does it: the network
 * also sees its input flipped along each spatial axis and every
 * combination of them (4 passes for a 2D model, 8 for a 3D one); each
 * pass's softmax probabilities are flipped back and the passes are
 * averaged.
 *
 * Only the box (the scan's voxels inside a padded slice or window) is
 * flipped; the padding stays where it is, so a scan that is symmetric
 * gives the network exactly the same input for a pass and its mirror.
 * The passes are summed pairwise in a binary tree over the pass number
 * ((p0 + p1) + (p2 + p3), ...), and the pass number is the bit mask of
 * flipped axes: mirroring the input permutes the passes by an exclusive
 * or, which only swaps operands inside the tree, and float addition is
 * commutative.  So a mirror-symmetric scan gives exactly mirror-symmetric
 * probabilities (tested), and the result does not depend on the thread
 * count.  The mean is the sum times 1/n_pass, a power of two (exact).
 */
#ifndef SL_MIRROR_H
#define SL_MIRROR_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int n_axes;         /* mirrored axes: 2 (2D model) or 3 (3D) */
    int first_axis;     /* tensor spatial axis of mask bit 0: 1 in 2D (the
                         * slice axis 0 has size 1), 0 in 3D */
    int n_pass;         /* 1 << n_axes */
    int n_threads;      /* OpenMP threads of the flips and sums */
    size_t n_in, n_out; /* floats of one network input / output */
    float *xf;          /* [n_in] the flipped input */
    float *cur;         /* [n_out] this pass's probabilities, flipped back */
    float *lvl[4];      /* [n_axes + 1][n_out] partial sums of the tree */
    int have[4];        /* lvl[i] holds a partial sum of 1 << i passes */
} Mirror;

/* Buffers for inputs of n_in floats and outputs of n_out floats;
 * n_threads <= 0: all cores.  0 or ERR_NOMEM (message printed). */
int mirror_init(Mirror *m, int n_axes, size_t n_in, size_t n_out,
                int n_threads);
void mirror_free(Mirror *m);

/* dst = src [nbc][pad0][pad1][pad2] with the box (the region
 * [0, box[t]) of each axis) reversed along tensor spatial axis t for
 * each bit t of mask; the rest copied.  dst and src must not overlap.
 * The result does not depend on n_threads (each thread its own rows). */
void mirror_flip(float *dst, const float *src, int64_t nbc,
                 const int64_t pad[3], const int64_t box[3], int mask,
                 int n_threads);

/* Add m->cur to the tree (pass order). */
void mirror_push(Mirror *m);
/* out [n_out] = the mean of the n_pass pushed passes; resets the tree. */
void mirror_mean(Mirror *m, float *out);

#endif
