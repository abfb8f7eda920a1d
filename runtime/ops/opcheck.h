/* Checks shared by the shape-inference functions of the op files (h2's
 * kernels).  Not a public API: only the op files in runtime/ops include it.
 *
 * Every check reports one line with sl_error() naming the node and returns
 * ERR_SHAPE, so an infer function can simply `return` its result.
 */
#ifndef SL_OPCHECK_H
#define SL_OPCHECK_H

#include "../common.h"
#include "../graph.h"

/* Largest element count we accept for one tensor: keeps every index
 * computation inside int64_t and rejects absurd declared sizes early. */
#define OP_MAX_NUMEL ((int64_t)1 << 40)

static inline const char *op_node_name(const Node *n)
{
    return n->name && n->name[0] ? n->name : "(unnamed)";
}

static inline const Shape *op_in_shape(const Graph *g, const Node *n, int i)
{
    return &g->values[n->in[i]].shape;
}

static inline int64_t op_numel(const Shape *s)
{
    int64_t k = 1;
    for (int i = 0; i < s->ndim; i++)
        k *= s->d[i];
    return k;
}

/* Input count in [lo, hi], value indices in range, every input shape of
 * rank 1..SL_MAX_DIMS with dims >= 1 and a bounded element count. */
static inline int op_check_inputs(const Graph *g, const Node *n,
                                  const char *op, int lo, int hi)
{
    if (n->n_in < lo || n->n_in > hi) {
        sl_error("node '%s' (%s): has %d inputs, expected %d..%d; "
                 "re-export the model",
                 op_node_name(n), op, n->n_in, lo, hi);
        return ERR_SHAPE;
    }
    for (int i = 0; i < n->n_in; i++) {
        if (n->in[i] < 0 || n->in[i] >= g->n_values) {
            sl_error("node '%s' (%s): input %d refers to value %d, which "
                     "does not exist; the model file is corrupted",
                     op_node_name(n), op, i, n->in[i]);
            return ERR_SHAPE;
        }
        const Shape *s = op_in_shape(g, n, i);
        if (s->ndim < 1 || s->ndim > SL_MAX_DIMS) {
            sl_error("node '%s' (%s): input %d has rank %d, expected "
                     "1..%d",
                     op_node_name(n), op, i, s->ndim, SL_MAX_DIMS);
            return ERR_SHAPE;
        }
        int64_t k = 1;
        for (int j = 0; j < s->ndim; j++) {
            if (s->d[j] < 1 || s->d[j] > OP_MAX_NUMEL / k) {
                sl_error("node '%s' (%s): input %d has dim %d of size "
                         "%lld (empty or too large)",
                         op_node_name(n), op, i, j, (long long)s->d[j]);
                return ERR_SHAPE;
            }
            k *= s->d[j];
        }
    }
    return 0;
}

#endif
