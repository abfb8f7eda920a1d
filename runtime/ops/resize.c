/* Resize (ONNX opset 11-18, also Upsample) over 1 to 3 spatial dims:
 * nearest and linear (bi/trilinear) interpolation.
 *
 * Shapes: x [N, C, in...], y [N, C, out...]; N and C pass through.  Both
 * kernels pad the spatial dims on the left to three (in = out = 1), so one
 * D, H, W loop nest serves 1D, 2D and 3D.
 *
 * Per spatial dim, with scale = out / in (graph.h), the source coordinate
 * of output index o is (ONNX coordinate_transformation_mode):
 *   half_pixel          (o + 0.5) / scale - 0.5
 *   pytorch_half_pixel  out > 1 ? (o + 0.5) / scale - 0.5 : 0
 *   align_corners       out > 1 ? o * (in - 1) / (out - 1) : 0
 *   asymmetric          o / scale
 * Nearest rounds it (nearest_mode) and clamps the index to [0, in - 1].
 * Linear clamps the coordinate to [0, in - 1] and blends the two
 * neighbours, as ONNX Runtime and PyTorch's F.interpolate do.  PyTorch's
 * mode='nearest' is asymmetric + floor; bilinear/trilinear with
 * align_corners=False is half_pixel (pytorch_half_pixel), with True
 * align_corners.
 */
#include <math.h>

#include "opcheck.h"
#include "ops.h"
#include "resize_geom.h"

/* Output columns whose source indices and weights are tabulated at once
 * (stack: 256 x 20 bytes), reused for a block of RESIZE_ROWS rows. */
#define RESIZE_TILE 256
#define RESIZE_ROWS 16

typedef struct {
    int64_t in[3], out[3];
    int64_t planes; /* N * C */
} ResizeGeom;

static void resize_geom(ResizeGeom *q, const Shape *xs, const Shape *ys,
                        int nsp)
{
    int lead = 3 - nsp;
    for (int i = 0; i < 3; i++) {
        int j = i - lead;
        q->in[i] = j >= 0 ? xs->d[2 + j] : 1;
        q->out[i] = j >= 0 ? ys->d[2 + j] : 1;
    }
    q->planes = xs->d[0] * xs->d[1];
}

/* Tap tables for output columns [w0, w0 + nw) of dim 2 (W). */
typedef struct {
    int64_t i0[RESIZE_TILE], i1[RESIZE_TILE];
    float w[RESIZE_TILE];
} TapTile;

static void fill_tile(TapTile *t, const ResizeGeom *q, const ResizeParams *p,
                      int64_t w0, int64_t nw)
{
    for (int64_t k = 0; k < nw; k++) {
        double s = resize_src_coord(w0 + k, q->in[2], q->out[2], p->coord);
        if (p->mode == RESIZE_NEAREST) {
            t->i0[k] = t->i1[k] =
                resize_nearest_index(s, q->in[2], p->nearest);
            t->w[k] = 0.0f;
        } else {
            resize_linear_taps(s, q->in[2], &t->i0[k], &t->i1[k], &t->w[k]);
        }
    }
}

/* y [nw] = lerp of row r [in W] at the tile's taps */
static void lerp_row(float *y, const float *r, const TapTile *t, int64_t nw)
{
    for (int64_t k = 0; k < nw; k++)
        y[k] = r[t->i0[k]] * (1.0f - t->w[k]) + r[t->i1[k]] * t->w[k];
}

/* y [nw] = y * (1 - b) + b * lerp(r) */
static void lerp_row_blend(float *y, const float *r, const TapTile *t,
                           int64_t nw, float b)
{
    for (int64_t k = 0; k < nw; k++)
        y[k] = y[k] * (1.0f - b) +
               b * (r[t->i0[k]] * (1.0f - t->w[k]) + r[t->i1[k]] * t->w[k]);
}

/* One output row tile: y [nw] from plane xp [in D, in H, in W] at output
 * (od, oh).  Weights equal to 0 skip their rows, which leaves the value
 * bit-identical (x * 1 + 0 * v == x for finite v). */
static void resize_row(float *y, const float *xp, const ResizeGeom *q,
                       const ResizeParams *p, const TapTile *t, int64_t nw,
                       int64_t od, int64_t oh)
{
    double sd = resize_src_coord(od, q->in[0], q->out[0], p->coord);
    double sh = resize_src_coord(oh, q->in[1], q->out[1], p->coord);
    int64_t rs = q->in[2], ps = q->in[1] * q->in[2];
    if (p->mode == RESIZE_NEAREST) {
        int64_t id = resize_nearest_index(sd, q->in[0], p->nearest);
        int64_t ih = resize_nearest_index(sh, q->in[1], p->nearest);
        const float *r = xp + id * ps + ih * rs;
        for (int64_t k = 0; k < nw; k++)
            y[k] = r[t->i0[k]];
        return;
    }
    int64_t d0, d1, h0, h1;
    float wd, wh;
    resize_linear_taps(sd, q->in[0], &d0, &d1, &wd);
    resize_linear_taps(sh, q->in[1], &h0, &h1, &wh);
    lerp_row(y, xp + d0 * ps + h0 * rs, t, nw);
    if (wh != 0.0f) lerp_row_blend(y, xp + d0 * ps + h1 * rs, t, nw, wh);
    if (wd != 0.0f) {
        float tmp[RESIZE_TILE];
        lerp_row(tmp, xp + d1 * ps + h0 * rs, t, nw);
        if (wh != 0.0f)
            lerp_row_blend(tmp, xp + d1 * ps + h1 * rs, t, nw, wh);
        for (int64_t k = 0; k < nw; k++)
            y[k] = y[k] * (1.0f - wd) + wd * tmp[k];
    }
}

/* y [N,C,out...] = resize(x [N,C,in...]) */
void resize_forward(float *y, const float *x, const Shape *xs,
                    const Shape *ys, const ResizeParams *p)
{
    ResizeGeom q;
    resize_geom(&q, xs, ys, p->nsp);
    int64_t rows = q.out[0] * q.out[1];
    int64_t blocks = (rows + RESIZE_ROWS - 1) / RESIZE_ROWS;
    int64_t in_plane = q.in[0] * q.in[1] * q.in[2];
#pragma omp parallel for schedule(static)
    for (int64_t tb = 0; tb < q.planes * blocks; tb++) {
        int64_t pl = tb / blocks, r0 = (tb % blocks) * RESIZE_ROWS;
        int64_t r1 = r0 + RESIZE_ROWS < rows ? r0 + RESIZE_ROWS : rows;
        const float *xp = x + pl * in_plane;
        TapTile t;
        for (int64_t w0 = 0; w0 < q.out[2]; w0 += RESIZE_TILE) {
            int64_t nw =
                q.out[2] - w0 < RESIZE_TILE ? q.out[2] - w0 : RESIZE_TILE;
            fill_tile(&t, &q, p, w0, nw);
            for (int64_t r = r0; r < r1; r++)
                resize_row(y + (pl * rows + r) * q.out[2] + w0, xp, &q, p, &t,
                           nw, r / q.out[1], r % q.out[1]);
        }
    }
}

/* Naive twin: each output voxel on its own, linear as a sum over the 8
 * corners with product weights in double. */
void resize_forward_ref(float *y, const float *x, const Shape *xs,
                        const Shape *ys, const ResizeParams *p)
{
    ResizeGeom q;
    resize_geom(&q, xs, ys, p->nsp);
    int64_t k = 0;
    for (int64_t pl = 0; pl < q.planes; pl++)
        for (int64_t od = 0; od < q.out[0]; od++)
            for (int64_t oh = 0; oh < q.out[1]; oh++)
                for (int64_t ow = 0; ow < q.out[2]; ow++, k++) {
                    int64_t o[3] = {od, oh, ow}, i0[3], i1[3];
                    double w[3];
                    for (int i = 0; i < 3; i++) {
                        double s = resize_src_coord(o[i], q.in[i], q.out[i],
                                                    p->coord);
                        if (p->mode == RESIZE_NEAREST) {
                            i0[i] = i1[i] =
                                resize_nearest_index(s, q.in[i], p->nearest);
                            w[i] = 0;
                        } else {
                            float wf;
                            resize_linear_taps(s, q.in[i], &i0[i], &i1[i],
                                               &wf);
                            w[i] = (double)wf;
                        }
                    }
                    double v = 0;
                    for (int c = 0; c < 8; c++) {
                        double wt = 1;
                        int64_t id[3];
                        for (int i = 0; i < 3; i++) {
                            int hi = (c >> (2 - i)) & 1;
                            id[i] = hi ? i1[i] : i0[i];
                            wt *= hi ? w[i] : 1 - w[i];
                        }
                        if (wt == 0) continue;
                        v +=
                            wt *
                            (double)
                                x[((pl * q.in[0] + id[0]) * q.in[1] + id[1]) *
                                      q.in[2] +
                                  id[2]];
                    }
                    y[k] = (float)v;
                }
}

/* ---- op-table hooks ---- */

int resize_infer(const Graph *g, const Node *n, Shape *out)
{
    int rc = op_check_inputs(g, n, "Resize", 1, 2);
    if (rc) return rc;
    const Shape *xs = op_in_shape(g, n, 0);
    const ResizeParams *p = &n->p.resize;
    if (p->nsp < 1 || p->nsp > 3 || xs->ndim != 2 + p->nsp) {
        sl_error("node '%s' (Resize): input has rank %d but the resize has "
                 "%d spatial dims; expected [N, C, spatial...]",
                 op_node_name(n), xs->ndim, p->nsp);
        return ERR_SHAPE;
    }
    if ((unsigned)p->mode > RESIZE_LINEAR ||
        (unsigned)p->coord > COORD_ASYMMETRIC ||
        (unsigned)p->nearest > NEAREST_CEIL) {
        sl_error("node '%s' (Resize): unknown mode %d, coordinate mode %d "
                 "or nearest mode %d; the model file is corrupted",
                 op_node_name(n), (int)p->mode, (int)p->coord,
                 (int)p->nearest);
        return ERR_SHAPE;
    }
    *out = *xs;
    if (n->n_in == 2) {
        const Shape *rs = op_in_shape(g, n, 1);
        if (rs->ndim < p->nsp) {
            sl_error("node '%s' (Resize): size reference has rank %d, "
                     "fewer than the %d spatial dims",
                     op_node_name(n), rs->ndim, p->nsp);
            return ERR_SHAPE;
        }
        for (int i = 0; i < p->nsp; i++)
            out->d[2 + i] = rs->d[rs->ndim - p->nsp + i];
    } else {
        for (int i = 0; i < p->nsp; i++) {
            double s = p->scale[i];
            double o = floor((double)xs->d[2 + i] * s + 1e-6);
            if (!(s > 0) || !isfinite(s) || !(o >= 1) ||
                o > (double)OP_MAX_NUMEL) {
                sl_error("node '%s' (Resize): scale %g along spatial dim "
                         "%d gives an empty or too large output from size "
                         "%lld",
                         op_node_name(n), s, i, (long long)xs->d[2 + i]);
                return ERR_SHAPE;
            }
            out->d[2 + i] = (int64_t)o;
        }
    }
    int64_t k = 1;
    for (int i = 0; i < out->ndim; i++) {
        if (out->d[i] > OP_MAX_NUMEL / k) {
            sl_error("node '%s' (Resize): output is too large",
                     op_node_name(n));
            return ERR_SHAPE;
        }
        k *= out->d[i];
    }
    return 0;
}
/* Linear: 2^nsp taps, a multiply and an add each; nearest is a copy. */
int64_t resize_flops(const Graph *g, const Node *n)
{
    int nsp = n->p.resize.nsp;
    if (n->p.resize.mode != RESIZE_LINEAR || nsp < 1 || nsp > 3) return 0;
    return ((int64_t)2 << nsp) * op_numel(&g->values[n->out].shape);
}
size_t resize_scratch(const Graph *g, const Node *n)
{
    (void)g;
    (void)n;
    return 0;
}
void resize_node_forward(const Graph *g, const Node *n, float *out,
                         const float *const *in, float *scratch)
{
    (void)scratch;
    resize_forward(out, in[0], op_in_shape(g, n, 0), &g->values[n->out].shape,
                   &n->p.resize);
}
