/* MaxPool and AveragePool over 1 to 3 spatial dims (ONNX / PyTorch
 * semantics).
 *
 * Shapes: x [N, C, in...], y [N, C, out...] with nsp spatial dims.  Both
 * kernels pad the spatial dims on the left to three (size 1, kernel 1), so
 * one D, H, W loop nest serves 1D, 2D and 3D.
 *
 * Output size per dim (ext = dilation * (K - 1) + 1):
 *   floor or ceil((in + pad_lo + pad_hi - ext) / stride) + 1,
 * and with ceil_mode the last window must start inside the input or the
 * left padding, else it is dropped (the rule PyTorch and ONNX share).
 *
 * AveragePool divisor (PyTorch): with count_include_pad, the window size
 * clipped to the padded input [-pad_lo, in + pad_hi); without, the number
 * of input elements the window covers.
 */
#include <math.h>

#include "opcheck.h"
#include "ops.h"

/* Pool geometry padded to three spatial dims: index 0 = D, 1 = H, 2 = W. */
typedef struct {
    int64_t in[3], out[3];
    int k[3], s[3], dil[3], pl[3], ph[3];
    int64_t planes; /* N * C */
} PoolGeom;

static void pool_geom(PoolGeom *q, const Shape *xs, const Shape *ys,
                      const PoolParams *p, int use_dilation)
{
    int lead = 3 - p->nsp;
    for (int i = 0; i < 3; i++) {
        int j = i - lead; /* index among the model's spatial dims */
        q->in[i] = j >= 0 ? xs->d[2 + j] : 1;
        q->out[i] = j >= 0 ? ys->d[2 + j] : 1;
        q->k[i] = j >= 0 ? p->kernel[j] : 1;
        q->s[i] = j >= 0 ? p->stride[j] : 1;
        /* dilation 0 means "not given": 1 */
        q->dil[i] =
            j >= 0 && use_dilation && p->dilation[j] > 1 ? p->dilation[j] : 1;
        q->pl[i] = j >= 0 ? p->pad_lo[j] : 0;
        q->ph[i] = j >= 0 ? p->pad_hi[j] : 0;
    }
    q->planes = xs->d[0] * xs->d[1];
}

/* Window of output o along one dim: taps t in [t0, t1) fall inside the
 * input at positions start + t * dil. */
static void window(const PoolGeom *q, int i, int64_t o, int64_t *start,
                   int *t0, int *t1)
{
    int64_t st = o * q->s[i] - q->pl[i];
    int d = q->dil[i];
    int lo = 0, hi = q->k[i];
    int64_t last = q->in[i] - 1 - st; /* last tap t: st + t*d <= in - 1 */
    if (d == 1) {                     /* the common case, no division */
        if (st < 0) lo = (int)-st;
        if (last + 1 < hi) hi = last < 0 ? 0 : (int)(last + 1);
    } else {
        if (st < 0) lo = (int)((-st + d - 1) / d);
        if (last < 0)
            hi = 0;
        else if (last / d + 1 < hi)
            hi = (int)(last / d + 1);
    }
    if (lo > hi) lo = hi;
    *start = st;
    *t0 = lo;
    *t1 = hi;
}

/* y [N,C,out...] = max over each window of x [N,C,in...]; a window with no
 * input element gives -inf (as PyTorch). */
void max_pool_forward(float *y, const float *x, const Shape *xs,
                      const Shape *ys, const PoolParams *p)
{
    PoolGeom q;
    pool_geom(&q, xs, ys, p, 1);
    int64_t in_plane = q.in[0] * q.in[1] * q.in[2];
    int64_t rows = q.out[0] * q.out[1];
#pragma omp parallel for schedule(static)
    for (int64_t pr = 0; pr < q.planes * rows; pr++) {
        int64_t pl = pr / rows, r = pr % rows;
        int64_t od = r / q.out[1], oh = r % q.out[1];
        const float *xp = x + pl * in_plane;
        float *yp = y + pr * q.out[2];
        int64_t sd, sh;
        int d0, d1, h0, h1;
        window(&q, 0, od, &sd, &d0, &d1);
        window(&q, 1, oh, &sh, &h0, &h1);
        for (int64_t ow = 0; ow < q.out[2]; ow++) {
            int64_t sw;
            int w0, w1;
            window(&q, 2, ow, &sw, &w0, &w1);
            float m = -INFINITY;
            for (int a = d0; a < d1; a++) {
                const float *xd =
                    xp + (sd + (int64_t)a * q.dil[0]) * q.in[1] * q.in[2];
                for (int b = h0; b < h1; b++) {
                    const float *xh =
                        xd + (sh + (int64_t)b * q.dil[1]) * q.in[2] + sw;
                    for (int c = w0; c < w1; c++) {
                        float v = xh[(int64_t)c * q.dil[2]];
                        m = v > m ? v : m;
                    }
                }
            }
            yp[ow] = m;
        }
    }
}

/* Divisor along one dim for count_include_pad: window clipped to the
 * padded extent only. */
static int64_t padded_count(const PoolGeom *q, int i, int64_t st)
{
    int64_t end = st + q->k[i];
    if (end > q->in[i] + q->ph[i]) end = q->in[i] + q->ph[i];
    return end - st;
}

/* y [N,C,out...] = mean over each window of x [N,C,in...] */
void avg_pool_forward(float *y, const float *x, const Shape *xs,
                      const Shape *ys, const PoolParams *p)
{
    PoolGeom q;
    pool_geom(&q, xs, ys, p, 0);
    int64_t in_plane = q.in[0] * q.in[1] * q.in[2];
    int64_t rows = q.out[0] * q.out[1];
#pragma omp parallel for schedule(static)
    for (int64_t pr = 0; pr < q.planes * rows; pr++) {
        int64_t pl = pr / rows, r = pr % rows;
        int64_t od = r / q.out[1], oh = r % q.out[1];
        const float *xp = x + pl * in_plane;
        float *yp = y + pr * q.out[2];
        int64_t sd, sh;
        int d0, d1, h0, h1;
        window(&q, 0, od, &sd, &d0, &d1);
        window(&q, 1, oh, &sh, &h0, &h1);
        int64_t cnt_dh =
            p->count_include_pad
                ? padded_count(&q, 0, sd) * padded_count(&q, 1, sh)
                : (int64_t)(d1 - d0) * (h1 - h0);
        for (int64_t ow = 0; ow < q.out[2]; ow++) {
            int64_t sw;
            int w0, w1;
            window(&q, 2, ow, &sw, &w0, &w1);
            float s = 0.0f;
            for (int a = d0; a < d1; a++) {
                const float *xd = xp + (sd + a) * q.in[1] * q.in[2];
                for (int b = h0; b < h1; b++) {
                    const float *xh = xd + (sh + b) * q.in[2] + sw;
                    for (int c = w0; c < w1; c++)
                        s += xh[c];
                }
            }
            int64_t cnt =
                cnt_dh * (p->count_include_pad ? padded_count(&q, 2, sw)
                                               : (int64_t)(w1 - w0));
            yp[ow] = cnt > 0 ? s / (float)cnt : 0.0f;
        }
    }
}

/* Naive twins: every tap of every window, bounds-checked one by one. */
static void pool_ref(float *y, const float *x, const Shape *xs,
                     const Shape *ys, const PoolParams *p, int is_max)
{
    PoolGeom q;
    pool_geom(&q, xs, ys, p, is_max);
    for (int64_t pl = 0; pl < q.planes; pl++)
        for (int64_t od = 0; od < q.out[0]; od++)
            for (int64_t oh = 0; oh < q.out[1]; oh++)
                for (int64_t ow = 0; ow < q.out[2]; ow++) {
                    int64_t o[3] = {od, oh, ow}, st[3];
                    for (int i = 0; i < 3; i++)
                        st[i] = o[i] * q.s[i] - q.pl[i];
                    double m = -INFINITY, s = 0;
                    int64_t n_in = 0, n_pad = 1;
                    for (int i = 0; i < 3; i++) {
                        int64_t e = st[i] + q.k[i];
                        if (e > q.in[i] + q.ph[i]) e = q.in[i] + q.ph[i];
                        n_pad *= e - st[i];
                    }
                    for (int a = 0; a < q.k[0]; a++)
                        for (int b = 0; b < q.k[1]; b++)
                            for (int c = 0; c < q.k[2]; c++) {
                                int64_t id = st[0] + (int64_t)a * q.dil[0];
                                int64_t ih = st[1] + (int64_t)b * q.dil[1];
                                int64_t iw = st[2] + (int64_t)c * q.dil[2];
                                if (id < 0 || id >= q.in[0] || ih < 0 ||
                                    ih >= q.in[1] || iw < 0 || iw >= q.in[2])
                                    continue;
                                double v = (double)
                                    x[((pl * q.in[0] + id) * q.in[1] + ih) *
                                          q.in[2] +
                                      iw];
                                if (v > m) m = v;
                                s += v;
                                n_in++;
                            }
                    int64_t k =
                        ((pl * q.out[0] + od) * q.out[1] + oh) * q.out[2] +
                        ow;
                    if (is_max) {
                        y[k] = (float)m;
                    } else {
                        int64_t cnt = p->count_include_pad ? n_pad : n_in;
                        y[k] = cnt > 0 ? (float)(s / (double)cnt) : 0.0f;
                    }
                }
}

void max_pool_forward_ref(float *y, const float *x, const Shape *xs,
                          const Shape *ys, const PoolParams *p)
{
    pool_ref(y, x, xs, ys, p, 1);
}

void avg_pool_forward_ref(float *y, const float *x, const Shape *xs,
                          const Shape *ys, const PoolParams *p)
{
    pool_ref(y, x, xs, ys, p, 0);
}

/* ---- op-table hooks ---- */

static int pool_infer(const Graph *g, const Node *n, Shape *out,
                      const char *op, int is_max)
{
    int rc = op_check_inputs(g, n, op, 1, 1);
    if (rc) return rc;
    const Shape *xs = op_in_shape(g, n, 0);
    const PoolParams *p = &n->p.pool;
    if (p->nsp < 1 || p->nsp > 3 || xs->ndim != 2 + p->nsp) {
        sl_error("node '%s' (%s): input has rank %d but the pool has %d "
                 "spatial dims; expected [N, C, spatial...]",
                 op_node_name(n), op, xs->ndim, p->nsp);
        return ERR_SHAPE;
    }
    *out = *xs;
    for (int i = 0; i < p->nsp; i++) {
        int dil = p->dilation[i] == 0 ? 1 : p->dilation[i];
        if (!is_max && dil != 1) {
            sl_error("node '%s' (%s): dilation %d is not supported for "
                     "average pooling",
                     op_node_name(n), op, p->dilation[i]);
            return ERR_SHAPE;
        }
        if (p->kernel[i] < 1 || p->stride[i] < 1 || dil < 1 ||
            p->kernel[i] > 4096 || dil > 4096 || p->stride[i] > 4096) {
            sl_error("node '%s' (%s): kernel %d, stride %d, dilation %d "
                     "along spatial dim %d: each must be in 1..4096",
                     op_node_name(n), op, p->kernel[i], p->stride[i], dil, i);
            return ERR_SHAPE;
        }
        int64_t ext = (int64_t)dil * (p->kernel[i] - 1) + 1;
        if (p->pad_lo[i] < 0 || p->pad_hi[i] < 0 || p->pad_lo[i] >= ext ||
            p->pad_hi[i] >= ext) {
            sl_error("node '%s' (%s): pads %d,%d along spatial dim %d must "
                     "be >= 0 and smaller than the kernel extent %lld",
                     op_node_name(n), op, p->pad_lo[i], p->pad_hi[i], i,
                     (long long)ext);
            return ERR_SHAPE;
        }
        int64_t in = xs->d[2 + i];
        int64_t span = in + p->pad_lo[i] + p->pad_hi[i] - ext;
        if (span < 0) {
            sl_error("node '%s' (%s): spatial dim %d of size %lld is "
                     "smaller than the kernel extent %lld; use a larger "
                     "input",
                     op_node_name(n), op, i, (long long)in, (long long)ext);
            return ERR_SHAPE;
        }
        int64_t o =
            (p->ceil_mode ? span + p->stride[i] - 1 : span) / p->stride[i] +
            1;
        if (p->ceil_mode && (o - 1) * p->stride[i] >= in + p->pad_lo[i]) o--;
        out->d[2 + i] = o;
    }
    return 0;
}

static int64_t pool_flops(const Graph *g, const Node *n)
{
    int64_t k = 1;
    for (int i = 0; i < n->p.pool.nsp && i < 3; i++)
        k *= n->p.pool.kernel[i];
    return k * op_numel(&g->values[n->out].shape);
}

int max_pool_infer(const Graph *g, const Node *n, Shape *out)
{
    return pool_infer(g, n, out, "MaxPool", 1);
}
int64_t max_pool_flops(const Graph *g, const Node *n)
{
    return pool_flops(g, n);
}
size_t max_pool_scratch(const Graph *g, const Node *n)
{
    (void)g;
    (void)n;
    return 0;
}
void max_pool_node_forward(const Graph *g, const Node *n, float *out,
                           const float *const *in, float *scratch)
{
    (void)scratch;
    max_pool_forward(out, in[0], op_in_shape(g, n, 0),
                     &g->values[n->out].shape, &n->p.pool);
}

int avg_pool_infer(const Graph *g, const Node *n, Shape *out)
{
    return pool_infer(g, n, out, "AveragePool", 0);
}
int64_t avg_pool_flops(const Graph *g, const Node *n)
{
    return pool_flops(g, n);
}
size_t avg_pool_scratch(const Graph *g, const Node *n)
{
    (void)g;
    (void)n;
    return 0;
}
void avg_pool_node_forward(const Graph *g, const Node *n, float *out,
                           const float *const *in, float *scratch)
{
    (void)scratch;
    avg_pool_forward(out, in[0], op_in_shape(g, n, 0),
                     &g->values[n->out].shape, &n->p.pool);
}
