/* Concat and Add backwards.
 *
 * Concat: y [..., sum of the inputs' axis dims, ...]; seen as
 * [outer, row] with each input i owning a contiguous block of each row.
 * Add: y = a + b, b broadcast (numpy rules) to a's shape.
 */
#include "compressor/grad/grad.h"

#include "runtime/common.h"

/* dx[i] [xs[i]]; dy [ys].  y = concat(x[0..n_in-1], axis).  Accumulates. */
void concat_backward(float *const *dx, const float *dy,
                     const Shape *const *xs, int n_in, const ConcatParams *p)
{
    CHECK(n_in >= 1 && p->axis >= 0 && p->axis < xs[0]->ndim);
    int64_t outer = 1, row = 0;
    for (int d = 0; d < p->axis; d++)
        outer *= xs[0]->d[d];
    for (int i = 0; i < n_in; i++)
        row += shape_numel(xs[i]) / outer;
    int64_t off = 0;
    for (int i = 0; i < n_in; i++) {
        int64_t blk = shape_numel(xs[i]) / outer;
        float *d = dx[i];
        if (d) {
#pragma omp parallel for schedule(static)
            for (int64_t o = 0; o < outer; o++) {
                const float *src = dy + o * row + off;
                float *dst = d + o * blk;
                for (int64_t j = 0; j < blk; j++)
                    dst[j] += src[j];
            }
        }
        off += blk;
    }
}

/* da, dy [as]; db [bs].  y = a + b.  Accumulates. */
void add_backward(float *da, float *db, const float *dy, const Shape *as,
                  const Shape *bs)
{
    const int64_t na = shape_numel(as), nb = shape_numel(bs);
    if (da) {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < na; i++)
            da[i] += dy[i];
    }
    if (!db) return;
    if (nb == na) { /* same shape: nothing is broadcast */
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < nb; i++)
            db[i] += dy[i];
        return;
    }
    /* b's dims aligned to a's trailing dims, leading ones added.  Dims
     * where b is 1 and a is not are summed ("reduced"); the others index
     * both.  stride[] are a's strides. */
    CHECK(bs->ndim <= as->ndim);
    const int nd = as->ndim, lead = as->ndim - bs->ndim;
    int64_t stride[SL_MAX_DIMS], bdim[SL_MAX_DIMS];
    int red[SL_MAX_DIMS], n_red = 0;
    int64_t n_sum = 1;
    int64_t st = 1;
    for (int d = nd - 1; d >= 0; d--) {
        stride[d] = st;
        st *= as->d[d];
    }
    for (int d = 0; d < nd; d++) {
        bdim[d] = d < lead ? 1 : bs->d[d - lead];
        CHECK(bdim[d] == as->d[d] || bdim[d] == 1);
        if (bdim[d] != as->d[d]) {
            red[n_red++] = d;
            n_sum *= as->d[d];
        }
    }
    /* each thread owns whole elements of db; each sums in a's order */
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < nb; j++) {
        int64_t base = 0, rem = j;
        for (int d = nd - 1; d >= 0; d--) {
            base += (rem % bdim[d]) * stride[d];
            rem /= bdim[d];
        }
        double s = 0;
        for (int64_t r = 0; r < n_sum; r++) {
            int64_t off = base, q = r;
            for (int k = n_red - 1; k >= 0; k--) {
                off += (q % as->d[red[k]]) * stride[red[k]];
                q /= as->d[red[k]];
            }
            s += (double)dy[off];
        }
        db[j] += (float)s;
    }
}
