/* Training executor: keeps what the backward reads, one grad buffer per
 * activation and trainable parameter, nodes forward then backward in
 * reverse order (see train_exec.h for the protocol). */
#include "compressor/train/train_exec.h"

#include <omp.h>
#include <string.h>

#include "compressor/train/backward.h"
#include "runtime/common.h"
#include "runtime/ops/ops.h"
#include "runtime/plan.h"

struct TrainExec {
    Graph *g;
    Shape in_shape;
    int n_threads;
    int n_values;  /* g->n_values at creation */
    Shape *shape;  /* per value: shape for this input */
    float **buf;   /* per value: activation buffer (aliases for in-place) */
    uint8_t *own;  /* per value: buf[v] allocated by us (not an alias) */
    uint8_t *gone; /* per value: overwritten in place by a consumer */
    float **grad;  /* per value: gradient buffer or NULL */
    int64_t *grad_numel;
    float **saved; /* per node: training-forward state for the backward */
    float *scratch;
    size_t scratch_floats;
    TrainParam *params;
    int n_params;
    size_t bytes;
    int forward_done;
};

static float *value_ptr(const TrainExec *t, int v)
{
    float *d = t->g->values[v].data;
    return d ? d : t->buf[v];
}

static float *alloc_floats(TrainExec *t, int64_t n)
{
    size_t bytes;
    if (n < 0 || sl_mul_size((size_t)n, sizeof(float), &bytes)) return NULL;
    t->bytes += bytes;
    return sl_alloc(bytes ? bytes : sizeof(float));
}

/* Node n may write its output over its input 0 when that input is an
 * activation nobody else reads, not a graph output, and read by no
 * backward (neither its producer's nor n's). */
static int can_run_inplace(const Graph *g, const Node *n, const int *uses)
{
    if (!plan_op_inplace(n->op)) return 0;
    int x = n->in[0];
    const Value *xv = &g->values[x];
    if (xv->data || xv->producer < 0 || uses[x] != 1) return 0;
    for (int k = 0; k < g->n_outputs; k++)
        if (g->outputs[k] == x) return 0;
    if (backward_needs(n) & BWD_NEEDS_IN(0)) return 0;
    if (backward_needs(&g->nodes[xv->producer]) & BWD_NEEDS_OUT) return 0;
    return 1;
}

void train_exec_free(TrainExec *t)
{
    if (!t) return;
    for (int v = 0; v < t->n_values; v++) {
        if (t->buf && t->own && t->own[v]) sl_free(t->buf[v]);
        if (t->grad) sl_free(t->grad[v]);
    }
    for (int i = 0; t->saved && i < t->g->n_nodes; i++)
        sl_free(t->saved[i]);
    sl_free(t->shape);
    sl_free(t->buf);
    sl_free(t->own);
    sl_free(t->gone);
    sl_free(t->grad);
    sl_free(t->grad_numel);
    sl_free(t->saved);
    sl_free(t->scratch);
    sl_free(t->params);
    sl_free(t);
}

/* Scratch for the larger of every node's forward and backward need, under
 * the thread count the step will run with (gemm packing grows with it). */
static size_t scratch_need(const TrainExec *t)
{
    const Graph *g = t->g;
    size_t sc = 0;
    int saved_threads = omp_get_max_threads();
    omp_set_num_threads(t->n_threads);
    for (int i = 0; i < g->n_nodes; i++) {
        const Node *n = &g->nodes[i];
        size_t f =
            op_table[n->op].scratch ? op_table[n->op].scratch(g, n) : 0;
        size_t b = backward_table[n->op].scratch
                       ? backward_table[n->op].scratch(g, n)
                       : 0;
        if (f > sc) sc = f;
        if (b > sc) sc = b;
    }
    omp_set_num_threads(saved_threads);
    return sc;
}

/* Which values are trainable: weights in a parameter slot of some node. */
static int collect_params(TrainExec *t)
{
    const Graph *g = t->g;
    uint8_t *mark = sl_calloc((size_t)g->n_values, 1);
    if (!mark) return ERR_NOMEM;
    int count = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const Node *n = &g->nodes[i];
        for (int k = 0; k < n->n_in; k++) {
            int v = n->in[k];
            if (g->values[v].data && backward_param_slot(n, k) && !mark[v]) {
                mark[v] = 1;
                count++;
            }
        }
    }
    t->params = sl_calloc((size_t)(count ? count : 1), sizeof *t->params);
    if (!t->params) {
        sl_free(mark);
        return ERR_NOMEM;
    }
    for (int v = 0; v < g->n_values; v++) {
        if (!mark[v]) continue;
        TrainParam *p = &t->params[t->n_params++];
        p->value = v;
        p->shape = g->values[v].shape;
        p->numel = shape_numel(&p->shape);
        p->data = g->values[v].data;
        p->grad = NULL; /* filled once grads exist */
    }
    sl_free(mark);
    return 0;
}

int train_exec_create(Graph *g, const Shape *input, int n_threads,
                      TrainExec **out)
{
    TrainExec *t = NULL;
    int *uses = NULL;
    int rc;
    *out = NULL;
    if ((rc = graph_validate(g, "model"))) goto fail;
    if ((rc = graph_infer_shapes(g, input))) goto fail;
    for (int i = 0; i < g->n_nodes; i++)
        if ((rc = backward_check_node(g, &g->nodes[i]))) goto fail;
    rc = ERR_NOMEM;
    t = sl_calloc(1, sizeof *t);
    if (!t) goto oom;
    t->g = g;
    t->in_shape = *input;
    t->n_threads = n_threads > 0 ? n_threads : omp_get_num_procs();
    t->n_values = g->n_values;
    size_t nv = (size_t)g->n_values;
    t->shape = sl_calloc(nv, sizeof *t->shape);
    t->buf = sl_calloc(nv, sizeof *t->buf);
    t->own = sl_calloc(nv, 1);
    t->gone = sl_calloc(nv, 1);
    t->grad = sl_calloc(nv, sizeof *t->grad);
    t->grad_numel = sl_calloc(nv, sizeof *t->grad_numel);
    t->saved =
        sl_calloc((size_t)(g->n_nodes ? g->n_nodes : 1), sizeof *t->saved);
    uses = sl_calloc(nv, sizeof *uses);
    if (!t->shape || !t->buf || !t->own || !t->gone || !t->grad ||
        !t->grad_numel || !t->saved || !uses)
        goto oom;
    for (int v = 0; v < g->n_values; v++)
        t->shape[v] = g->values[v].shape;
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_in; k++)
            uses[g->nodes[i].in[k]]++;
    if ((rc = collect_params(t))) goto oom;
    rc = ERR_NOMEM;

    /* activations: the graph input, then node outputs (own or in place) */
    t->buf[g->input] = alloc_floats(t, shape_numel(&t->shape[g->input]));
    t->own[g->input] = 1;
    if (!t->buf[g->input]) goto oom;
    for (int i = 0; i < g->n_nodes; i++) {
        const Node *n = &g->nodes[i];
        if (can_run_inplace(g, n, uses)) {
            t->buf[n->out] = t->buf[n->in[0]];
            t->gone[n->in[0]] = 1;
        } else {
            t->buf[n->out] = alloc_floats(t, shape_numel(&t->shape[n->out]));
            t->own[n->out] = 1;
            if (!t->buf[n->out]) goto oom;
        }
        size_t sv = backward_table[n->op].saved
                        ? backward_table[n->op].saved(g, n)
                        : 0;
        if (sv) {
            t->saved[i] = alloc_floats(t, (int64_t)sv);
            if (!t->saved[i]) goto oom;
        }
    }
    /* gradients: every produced activation and every parameter */
    for (int v = 0; v < g->n_values; v++) {
        const Value *val = &g->values[v];
        if (!val->data && val->producer < 0) continue;
        if (val->data) continue; /* parameters below */
        t->grad_numel[v] = shape_numel(&t->shape[v]);
        t->grad[v] = alloc_floats(t, t->grad_numel[v]);
        if (!t->grad[v]) goto oom;
    }
    for (int i = 0; i < t->n_params; i++) {
        TrainParam *p = &t->params[i];
        t->grad_numel[p->value] = p->numel;
        t->grad[p->value] = alloc_floats(t, p->numel);
        if (!t->grad[p->value]) goto oom;
        p->grad = t->grad[p->value];
    }
    t->scratch_floats = scratch_need(t);
    if (t->scratch_floats) {
        t->scratch = alloc_floats(t, (int64_t)t->scratch_floats);
        if (!t->scratch) goto oom;
    }
    sl_free(uses);
    train_zero_grads(t);
    *out = t;
    return SL_OK;
oom:
    if (rc == ERR_NOMEM)
        sl_error("out of memory creating the training executor (%.1f MB so "
                 "far); use a smaller batch or patch size",
                 t ? (double)t->bytes / 1048576.0 : 0.0);
fail:
    sl_free(uses);
    train_exec_free(t);
    return rc;
}

void train_zero_grads(TrainExec *t)
{
    int saved_threads = omp_get_max_threads();
    omp_set_num_threads(t->n_threads);
    for (int v = 0; v < t->n_values; v++) {
        float *gr = t->grad[v];
        if (!gr) continue;
        const int64_t count = t->grad_numel[v];
        const int64_t chunk = 1 << 16;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < count; i += chunk) {
            int64_t len = count - i < chunk ? count - i : chunk;
            memset(gr + i, 0, (size_t)len * sizeof *gr);
        }
    }
    omp_set_num_threads(saved_threads);
}

/* Another executor (or a size probe) may have re-inferred the graph for a
 * different input: kernels read shapes from the graph. */
static int ensure_shapes(TrainExec *t)
{
    Graph *g = t->g;
    if (g->n_values != t->n_values) {
        sl_error("training executor: the graph changed (%d values, planned "
                 "for %d); create a new executor after surgery",
                 g->n_values, t->n_values);
        return ERR_ARG;
    }
    if (!shape_equal(&g->values[g->input].shape, &t->in_shape))
        return graph_infer_shapes(g, &t->in_shape);
    return 0;
}

int train_forward(TrainExec *t, const float *input)
{
    Graph *g = t->g;
    int rc = ensure_shapes(t);
    if (rc) return rc;
    int saved_threads = omp_get_max_threads();
    omp_set_num_threads(t->n_threads);
    memcpy(t->buf[g->input], input,
           (size_t)shape_numel(&t->in_shape) * sizeof(float));
    for (int i = 0; i < g->n_nodes; i++) {
        const Node *n = &g->nodes[i];
        float *in[SL_MAX_INPUTS];
        for (int k = 0; k < n->n_in; k++)
            in[k] = value_ptr(t, n->in[k]);
        float *y = value_ptr(t, n->out);
        if (backward_table[n->op].forward) {
            backward_table[n->op].forward(g, n, y, in, t->saved[i],
                                          t->scratch);
            continue;
        }
        /* an in-place Identity has nothing to do */
        if (n->op == OP_IDENTITY && y == in[0]) continue;
        const float *cin[SL_MAX_INPUTS];
        for (int k = 0; k < n->n_in; k++)
            cin[k] = in[k];
        op_table[n->op].forward(g, n, y, cin, t->scratch);
    }
    omp_set_num_threads(saved_threads);
    t->forward_done = 1;
    return 0;
}

int train_backward(TrainExec *t)
{
    Graph *g = t->g;
    if (!t->forward_done) {
        sl_error("training executor: train_backward called before "
                 "train_forward");
        return ERR_ARG;
    }
    int rc = ensure_shapes(t);
    if (rc) return rc;
    int saved_threads = omp_get_max_threads();
    omp_set_num_threads(t->n_threads);
    for (int i = g->n_nodes - 1; i >= 0; i--) {
        const Node *n = &g->nodes[i];
        float *din[SL_MAX_INPUTS];
        const float *in[SL_MAX_INPUTS];
        int any = 0;
        for (int k = 0; k < n->n_in; k++) {
            din[k] = t->grad[n->in[k]];
            in[k] = value_ptr(t, n->in[k]);
            any |= din[k] != NULL;
        }
        if (!any) continue;
        backward_table[n->op].backward(g, n, din, t->grad[n->out],
                                       value_ptr(t, n->out), in, t->saved[i],
                                       t->scratch);
    }
    omp_set_num_threads(saved_threads);
    return 0;
}

int train_n_params(const TrainExec *t)
{
    return t->n_params;
}

TrainParam *train_params(TrainExec *t)
{
    return t->params;
}

float *train_value(TrainExec *t, int v)
{
    if (v < 0 || v >= t->n_values || t->gone[v]) return NULL;
    return value_ptr(t, v);
}

float *train_grad(TrainExec *t, int v)
{
    if (v < 0 || v >= t->n_values) return NULL;
    return t->grad[v];
}

const Shape *train_shape(const TrainExec *t, int v)
{
    if (v < 0 || v >= t->n_values) return NULL;
    return &t->shape[v];
}

const Graph *train_graph(const TrainExec *t)
{
    return t->g;
}

size_t train_bytes(const TrainExec *t)
{
    return t->bytes;
}
