/* Executor: shape inference, one planned arena, nodes run in order. */
#include "exec.h"

#include <omp.h>
#include <string.h>

#include "common.h"
#include "ops/ops.h"
#include "plan.h"

struct Executor {
    Graph *g;
    Shape in_shape; /* the shape this executor was planned for */
    Plan plan;
    uint8_t *arena; /* plan.arena_bytes, 64-byte aligned */
    float *scratch; /* scratch_floats, shared by all nodes in turn */
    size_t scratch_floats;
    int n_threads;
    Shape out_shape[SL_MAX_OUTPUTS];
};

int exec_create(Graph *g, const Shape *input, int n_threads, Executor **out)
{
    Executor *e = NULL;
    int rc;
    *out = NULL;
    if ((rc = graph_validate(g, "model"))) goto fail;
    if ((rc = graph_infer_shapes(g, input))) goto fail;
    rc = ERR_NOMEM;
    e = sl_calloc(1, sizeof *e);
    if (!e) {
        sl_error("out of memory creating the executor");
        goto fail;
    }
    e->g = g;
    e->in_shape = *input;
    e->n_threads = n_threads > 0 ? n_threads : omp_get_num_procs();
    if ((rc = plan_create(g, 1, &e->plan))) goto fail;
    /* Scratch needs can grow with the thread count (per-thread GEMM
     * panels), so size it under the thread count exec_run will use. */
    size_t sc = 0;
    int saved_threads = omp_get_max_threads();
    omp_set_num_threads(e->n_threads);
    for (int i = 0; i < g->n_nodes; i++) {
        const Node *n = &g->nodes[i];
        if (!op_table[n->op].scratch) continue;
        size_t s = op_table[n->op].scratch(g, n);
        if (s > sc) sc = s;
    }
    omp_set_num_threads(saved_threads);
    e->scratch_floats = sc;
    rc = ERR_NOMEM;
    size_t sc_bytes;
    if (sl_mul_size(sc, sizeof(float), &sc_bytes) ||
        e->plan.arena_bytes > SIZE_MAX - sc_bytes) {
        sl_error("input shape needs more memory than can be addressed; use "
                 "a smaller input or patch size");
        goto fail;
    }
    e->arena = sl_alloc(e->plan.arena_bytes);
    e->scratch = sc ? sl_alloc(sc_bytes) : NULL;
    if (!e->arena || (sc && !e->scratch)) {
        sl_error("out of memory allocating %.1f MB of activations; use a "
                 "smaller input or patch size",
                 (double)(e->plan.arena_bytes + sc_bytes) / 1048576.0);
        goto fail;
    }
    for (int k = 0; k < g->n_outputs; k++)
        e->out_shape[k] = g->values[g->outputs[k]].shape;
    *out = e;
    return SL_OK;
fail:
    exec_free(e);
    return rc;
}

void exec_free(Executor *e)
{
    if (!e) return;
    plan_free(&e->plan);
    sl_free(e->arena);
    sl_free(e->scratch);
    sl_free(e);
}

/* Where value v lives during a run: its weight data or its arena slot. */
static float *value_ptr(const Executor *e, int v)
{
    const Value *val = &e->g->values[v];
    if (val->data) return val->data;
    CHECK(e->plan.offset[v] != PLAN_NONE);
    return (float *)(void *)(e->arena + e->plan.offset[v]);
}

int exec_run(Executor *e, const float *input, const float **outputs)
{
    Graph *g = e->g;
    /* Another executor or a size probe may have re-inferred the graph for
     * a different input; kernels read shapes from the graph. */
    if (!shape_equal(&g->values[g->input].shape, &e->in_shape)) {
        int rc = graph_infer_shapes(g, &e->in_shape);
        if (rc) return rc;
    }
    int saved_threads = omp_get_max_threads();
    omp_set_num_threads(e->n_threads);
    float *x = value_ptr(e, g->input);
    memcpy(x, input, (size_t)shape_numel(&e->in_shape) * sizeof(float));
    for (int i = 0; i < g->n_nodes; i++) {
        const Node *n = &g->nodes[i];
        const float *in[SL_MAX_INPUTS];
        for (int k = 0; k < n->n_in; k++)
            in[k] = value_ptr(e, n->in[k]);
        float *y = value_ptr(e, n->out);
        /* An in-place Identity has nothing to do (and memcpy onto itself
         * is undefined). */
        if (n->op == OP_IDENTITY && y == in[0]) continue;
        op_table[n->op].forward(g, n, y, in, e->scratch);
    }
    omp_set_num_threads(saved_threads);
    for (int k = 0; k < g->n_outputs; k++)
        outputs[k] = value_ptr(e, g->outputs[k]);
    return SL_OK;
}

const Shape *exec_output_shape(const Executor *e, int k)
{
    if (k < 0 || k >= e->g->n_outputs) return NULL;
    return &e->out_shape[k];
}

size_t exec_arena_bytes(const Executor *e)
{
    return e->plan.arena_bytes + e->scratch_floats * sizeof(float);
}

size_t exec_unplanned_bytes(const Executor *e)
{
    return e->plan.unplanned_bytes;
}
