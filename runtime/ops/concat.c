/* Concat along any axis, up to SL_MAX_INPUTS inputs.
 *
 * Each input k is viewed as [outer, A_k * inner]: outer the product of the
 * dims before the axis, inner of those after.  The output row o is the
 * concatenation of every input's row o, so each (o, k) pair is one
 * independent contiguous copy.
 */
#include <string.h>

#include "../common.h"
#include "opcheck.h"
#include "ops.h"

/* Copies longer than this are split so both cores share one big copy
 * (e.g. two skip tensors with N = 1 concatenated along C). */
#define CONCAT_BLOCK ((int64_t)1 << 16)

static int norm_axis(int axis, int ndim)
{
    return axis < 0 ? axis + ndim : axis;
}

/* y [outer, sum_k A_k, inner] = concat_k x[k] [outer, A_k, inner] */
void concat_forward(float *y, const float *const *x, const Shape *const *xs,
                    int n_in, const ConcatParams *p)
{
    CHECK(n_in >= 1 && n_in <= SL_MAX_INPUTS);
    int axis = norm_axis(p->axis, xs[0]->ndim);
    int64_t outer = 1, inner = 1, row = 0;
    int64_t len[SL_MAX_INPUTS], off[SL_MAX_INPUTS];
    for (int i = 0; i < axis; i++)
        outer *= xs[0]->d[i];
    for (int i = axis + 1; i < xs[0]->ndim; i++)
        inner *= xs[0]->d[i];
    for (int k = 0; k < n_in; k++) {
        len[k] = xs[k]->d[axis] * inner;
        off[k] = row;
        row += len[k];
    }
    /* An input its producer already wrote at its place in y (the
     * planner's in-place Concat, outer == 1 only) is not copied: memcpy
     * onto itself is undefined. */
    for (int k = 0; k < n_in; k++)
        if (outer == 1 && x[k] == y + off[k]) len[k] = 0;
    int64_t max_len = 0;
    for (int k = 0; k < n_in; k++)
        max_len = len[k] > max_len ? len[k] : max_len;
    if (max_len == 0) return;
    int64_t blocks = (max_len + CONCAT_BLOCK - 1) / CONCAT_BLOCK;
    int64_t tasks = outer * n_in * blocks;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t b = t % blocks, ok = t / blocks;
        int k = (int)(ok % n_in);
        int64_t o = ok / n_in;
        int64_t start = b * CONCAT_BLOCK;
        if (start >= len[k]) continue;
        int64_t m =
            len[k] - start < CONCAT_BLOCK ? len[k] - start : CONCAT_BLOCK;
        memcpy(y + o * row + off[k] + start, x[k] + o * len[k] + start,
               (size_t)m * sizeof(float));
    }
}

/* ---- op-table hooks ---- */

int concat_infer(const Graph *g, const Node *n, Shape *out)
{
    int rc = op_check_inputs(g, n, "Concat", 1, SL_MAX_INPUTS);
    if (rc) return rc;
    const Shape *s0 = op_in_shape(g, n, 0);
    int axis = n->p.concat.axis;
    if (axis < -s0->ndim || axis >= s0->ndim) {
        sl_error("node '%s' (Concat): axis %d is out of range for inputs "
                 "of rank %d",
                 op_node_name(n), axis, s0->ndim);
        return ERR_SHAPE;
    }
    axis = norm_axis(axis, s0->ndim);
    *out = *s0;
    for (int k = 1; k < n->n_in; k++) {
        const Shape *s = op_in_shape(g, n, k);
        int ok = s->ndim == s0->ndim;
        for (int i = 0; ok && i < s->ndim; i++)
            if (i != axis && s->d[i] != s0->d[i]) ok = 0;
        if (!ok) {
            char b0[96], bk[96];
            sl_error("node '%s' (Concat): input %d has shape %s, which "
                     "differs from input 0 %s outside axis %d",
                     op_node_name(n), k, shape_str(s, bk, sizeof bk),
                     shape_str(s0, b0, sizeof b0), axis);
            return ERR_SHAPE;
        }
        out->d[axis] += s->d[axis];
    }
    if (op_numel(out) > OP_MAX_NUMEL) {
        sl_error("node '%s' (Concat): output is too large", op_node_name(n));
        return ERR_SHAPE;
    }
    return 0;
}
int64_t concat_flops(const Graph *g, const Node *n)
{
    (void)g;
    (void)n;
    return 0;
}
size_t concat_scratch(const Graph *g, const Node *n)
{
    (void)g;
    (void)n;
    return 0;
}
void concat_node_forward(const Graph *g, const Node *n, float *out,
                         const float *const *in, float *scratch)
{
    (void)scratch;
    const Shape *xs[SL_MAX_INPUTS];
    for (int k = 0; k < n->n_in; k++)
        xs[k] = op_in_shape(g, n, k);
    concat_forward(out, in, xs, n->n_in, &n->p.concat);
}
