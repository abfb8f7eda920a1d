/* InstanceNormalization and BatchNormalization forward.
 *
 * Dimension letters: N batch, C channels, S = product of the spatial dims
 * (a tensor [N, C, spatial...] is viewed as [N, C, S]).
 *
 * The optimised kernels are in fused.c (statistics in double, each by a
 * single thread in index order: results do not depend on the number of
 * threads); this file holds the references and the op-table hooks.
 */
#include <math.h>

#include "opcheck.h"
#include "ops.h"

static void norm_dims(const Shape *xs, int64_t *N, int64_t *C, int64_t *S)
{
    *N = xs->d[0];
    *C = xs->ndim > 1 ? xs->d[1] : 1;
    *S = 1;
    for (int i = 2; i < xs->ndim; i++)
        *S *= xs->d[i];
}

/* The fast kernels live in fused.c, shared with the fused
 * normalisation + activation the executor runs. */
static const PostAct no_act = {OP_IDENTITY, 0.0f};

/* y, x [N,C,S]; scale, bias [C] */
void instance_norm_forward(float *y, const float *x, const float *scale,
                           const float *bias, const Shape *xs,
                           const NormParams *p)
{
    instance_norm_act_forward(y, x, scale, bias, xs, p, &no_act);
}

/* Same contract; two passes in double per element, no shortcuts. */
void instance_norm_forward_ref(float *y, const float *x, const float *scale,
                               const float *bias, const Shape *xs,
                               const NormParams *p)
{
    int64_t N, C, S;
    norm_dims(xs, &N, &C, &S);
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) {
            const float *xp = x + (n * C + c) * S;
            float *yp = y + (n * C + c) * S;
            double sum = 0;
            for (int64_t i = 0; i < S; i++)
                sum += (double)xp[i];
            double mean = sum / (double)S;
            double ss = 0;
            for (int64_t i = 0; i < S; i++)
                ss += ((double)xp[i] - mean) * ((double)xp[i] - mean);
            double sd = sqrt(ss / (double)S + (double)p->eps);
            for (int64_t i = 0; i < S; i++)
                yp[i] =
                    (float)(((double)xp[i] - mean) / sd * (double)scale[c] +
                            (double)bias[c]);
        }
}

/* y, x [N,C,S]; scale, bias, mean, var [C] */
void batch_norm_forward(float *y, const float *x, const float *scale,
                        const float *bias, const float *mean,
                        const float *var, const Shape *xs,
                        const NormParams *p)
{
    batch_norm_act_forward(y, x, scale, bias, mean, var, xs, p, &no_act);
}

void batch_norm_forward_ref(float *y, const float *x, const float *scale,
                            const float *bias, const float *mean,
                            const float *var, const Shape *xs,
                            const NormParams *p)
{
    int64_t N, C, S;
    norm_dims(xs, &N, &C, &S);
    for (int64_t c = 0; c < C; c++) {
        double mu = (double)mean[c], v = (double)var[c];
        if (p->use_batch_stats) {
            double sum = 0, ss = 0;
            for (int64_t n = 0; n < N; n++)
                for (int64_t i = 0; i < S; i++)
                    sum += (double)x[(n * C + c) * S + i];
            mu = sum / (double)(N * S);
            for (int64_t n = 0; n < N; n++)
                for (int64_t i = 0; i < S; i++) {
                    double d = (double)x[(n * C + c) * S + i] - mu;
                    ss += d * d;
                }
            v = ss / (double)(N * S);
        }
        double sd = sqrt(v + (double)p->eps);
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < S; i++) {
                int64_t k = (n * C + c) * S + i;
                y[k] = (float)(((double)x[k] - mu) / sd * (double)scale[c] +
                               (double)bias[c]);
            }
    }
}

/* ---- op-table hooks ---- */

/* X [N,C,...] and n_params per-channel tensors of C elements each. */
static int norm_infer(const Graph *g, const Node *n, Shape *out,
                      const char *op, int n_params, int min_rank)
{
    int rc = op_check_inputs(g, n, op, 1 + n_params, 1 + n_params);
    if (rc) return rc;
    const Shape *xs = op_in_shape(g, n, 0);
    if (xs->ndim < min_rank) {
        sl_error("node '%s' (%s): input has rank %d, expected at least %d "
                 "([N, C, spatial...])",
                 op_node_name(n), op, xs->ndim, min_rank);
        return ERR_SHAPE;
    }
    for (int i = 1; i <= n_params; i++) {
        const Shape *ps = op_in_shape(g, n, i);
        if (op_numel(ps) != xs->d[1]) {
            sl_error("node '%s' (%s): parameter input %d has %lld "
                     "elements but the input has %lld channels",
                     op_node_name(n), op, i, (long long)op_numel(ps),
                     (long long)xs->d[1]);
            return ERR_SHAPE;
        }
    }
    if (!(n->p.norm.eps >= 0.0f) || !isfinite(n->p.norm.eps)) {
        sl_error("node '%s' (%s): epsilon %g is negative or not finite",
                 op_node_name(n), op, (double)n->p.norm.eps);
        return ERR_SHAPE;
    }
    *out = *xs;
    return 0;
}

int instance_norm_infer(const Graph *g, const Node *n, Shape *out)
{
    return norm_infer(g, n, out, "InstanceNormalization", 2, 3);
}
/* Statistics 3 per element (subtract, add, square-add), affine 2. */
int64_t instance_norm_flops(const Graph *g, const Node *n)
{
    return 5 * op_numel(op_in_shape(g, n, 0));
}
size_t instance_norm_scratch(const Graph *g, const Node *n)
{
    (void)g;
    (void)n;
    return 0;
}
void instance_norm_node_forward(const Graph *g, const Node *n, float *out,
                                const float *const *in, float *scratch)
{
    (void)scratch;
    instance_norm_forward(out, in[0], in[1], in[2], op_in_shape(g, n, 0),
                          &n->p.norm);
}

int batch_norm_infer(const Graph *g, const Node *n, Shape *out)
{
    return norm_infer(g, n, out, "BatchNormalization", 4, 2);
}
int64_t batch_norm_flops(const Graph *g, const Node *n)
{
    int64_t k = op_numel(op_in_shape(g, n, 0));
    return (n->p.norm.use_batch_stats ? 5 : 2) * k;
}
size_t batch_norm_scratch(const Graph *g, const Node *n)
{
    (void)g;
    (void)n;
    return 0;
}
void batch_norm_node_forward(const Graph *g, const Node *n, float *out,
                             const float *const *in, float *scratch)
{
    (void)scratch;
    batch_norm_forward(out, in[0], in[1], in[2], in[3], in[4],
                       op_in_shape(g, n, 0), &n->p.norm);
}
