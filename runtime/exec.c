/* Executor: shape inference, one planned arena, nodes run in order.
 *
 * At creation the executor also decides how each node runs:
 *  - a normalisation (InstanceNorm, BatchNorm) whose only consumer is a
 *    Relu or LeakyRelu, planned in the same buffer, runs both as one
 *    fused pass (fused.c) and the activation node is skipped;
 *  - a Conv with constant weights runs direct (its op-table forward) or
 *    as Winograd (winograd.c), as conv_algo_choose decides from its
 *    shapes (not the thread count); Winograd weights are transformed here,
 *    once, and freed with the executor;
 *  - a Concat whose inputs the plan placed in its output (their producers
 *    write them there) is skipped; one with some inputs placed so copies
 *    the others only (concat.c);
 *  - everything else runs its op-table forward.
 * Fused results are bit-identical to the unfused kernels (see fused.c),
 * so fusion changes no output; Winograd changes outputs by float
 * rounding only (winograd.c), the same for any thread count.
 *
 * Thread count: n_threads as given, or all cores (omp_get_num_procs())
 * when n_threads <= 0.  On a machine busy with other work, idle libgomp
 * threads spinning at barriers made all cores much slower than one
 * thread; exec_reexec_passive_wait (called first in main, see exec.h
 * for why it re-executes) selects the passive wait policy.  Results do not
 * depend on the thread count (every kernel reduces in a fixed order).
 */
#include "exec.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "ops/ops.h"
#include "ops/winograd.h"
#include "plan.h"

typedef enum {
    RUN_OP,       /* op_table forward */
    RUN_SKIP,     /* nothing: fused into an earlier node, or a Concat
                     whose inputs were written in place */
    RUN_NORM_ACT, /* normalisation + the activation after it */
    RUN_WINOGRAD, /* Conv through its Winograd transform (winograd.c) */
} RunKind;

struct Executor {
    Graph *g;
    Shape in_shape; /* the shape this executor was planned for */
    Plan plan;
    uint8_t *arena; /* plan.arena_bytes, 64-byte aligned */
    float *scratch; /* scratch_floats, shared by all nodes in turn */
    size_t scratch_floats;
    int n_threads;
    Shape out_shape[SL_MAX_OUTPUTS];
    uint8_t *run;    /* per node: RunKind */
    PostAct *post;   /* per node: the activation a RUN_NORM_ACT applies */
    WinoConv **wino; /* per node: transformed weights of a RUN_WINOGRAD */
    int skip_out_softmax; /* node index of output 0's Softmax, or -1 */
    int skipping;         /* exec_set_skip_softmax state */
    int profiling;
    double *prof;      /* per node: seconds, summed over profiled runs */
    char (*label)[40]; /* per node: what ran ("" if skipped) */
};

/* Consumers of each value (graph outputs count as one). */
static int *count_uses(const Graph *g)
{
    int *uses = sl_calloc((size_t)g->n_values + 1, sizeof *uses);
    if (!uses) return NULL;
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_in; k++)
            uses[g->nodes[i].in[k]]++;
    for (int k = 0; k < g->n_outputs; k++)
        uses[g->outputs[k]]++;
    return uses;
}

/* Choose how each node runs (see the top of the file). */
static void plan_fusions(Executor *e, const int *uses)
{
    const Graph *g = e->g;
    const Plan *p = &e->plan;
    for (int i = 0; i < g->n_nodes; i++) {
        e->run[i] = RUN_OP;
        snprintf(e->label[i], sizeof e->label[i], "%s",
                 op_name(g->nodes[i].op));
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const Node *n = &g->nodes[i];
        if (n->op != OP_INSTANCE_NORM && n->op != OP_BATCH_NORM) continue;
        if (uses[n->out] != 1 || e->run[i] != RUN_OP) continue;
        /* the single consumer: the next reader of n->out */
        int j = -1;
        for (int t = i + 1; t < g->n_nodes && j < 0; t++)
            for (int k = 0; k < g->nodes[t].n_in; k++)
                if (g->nodes[t].in[k] == n->out) j = t;
        if (j < 0) continue;
        const Node *a = &g->nodes[j];
        if (a->op != OP_RELU && a->op != OP_LEAKY_RELU) continue;
        /* Same buffer: writing the activation's output at step i is
         * writing n's own output, which is live from step i on. */
        if (p->buffer[n->out] < 0 || p->buffer[n->out] != p->buffer[a->out])
            continue;
        e->run[i] = RUN_NORM_ACT;
        e->post[i].op = a->op;
        e->post[i].alpha = a->op == OP_LEAKY_RELU ? a->p.act.alpha : 0.0f;
        e->run[j] = RUN_SKIP;
        snprintf(e->label[i], sizeof e->label[i], "%s+%s", op_name(n->op),
                 op_name(a->op));
        e->label[j][0] = '\0';
    }
}

/* A Concat whose inputs were all written in place by their producers
 * (plan.h, PLAN_ALIAS_CONCAT) has nothing left to do. */
static void plan_concats(Executor *e)
{
    const Graph *g = e->g;
    for (int i = 0; i < g->n_nodes; i++) {
        const Node *n = &g->nodes[i];
        if (n->op != OP_CONCAT) continue;
        int all = 1;
        for (int k = 0; k < n->n_in; k++)
            if (e->plan.within[n->in[k]] != n->out) all = 0;
        if (!all) continue;
        e->run[i] = RUN_SKIP;
        snprintf(e->label[i], sizeof e->label[i], "%s/in-place",
                 op_name(n->op));
    }
}

/* Direct or Winograd for each Conv (see the top of the file); labels
 * say which ran ("Conv/direct", "Conv/winograd" for F(2,3),
 * "Conv/winograd4" for F(4x4,3x3)).  release: free each
 * weight read by nothing but the Winograd layer that just transformed it
 * (exec_create_lean). */
static int plan_convs(Executor *e, const int *uses, int release)
{
    Graph *g = e->g;
    for (int i = 0; i < g->n_nodes; i++) {
        const Node *n = &g->nodes[i];
        if (n->op != OP_CONV || e->run[i] != RUN_OP) continue;
        const Shape *xs = &g->values[n->in[0]].shape;
        const Shape *ys = &g->values[n->out].shape;
        const float *w = g->values[n->in[1]].data;
        ConvAlgo algo = CONV_ALGO_DIRECT;
        int rc = conv_algo_choose(xs, ys, &n->p.conv, &algo);
        if (rc) return rc;
        if (!w) algo = CONV_ALGO_DIRECT; /* weights computed at run time */
        if (algo != CONV_ALGO_DIRECT) {
            rc = wino_create(&e->wino[i], w, xs, ys, &n->p.conv, algo,
                             e->n_threads, n->name);
            if (rc) return rc;
            e->run[i] = RUN_WINOGRAD;
            if (release && uses[n->in[1]] == 1) {
                sl_free(g->values[n->in[1]].data);
                g->values[n->in[1]].data = NULL;
            }
        }
        snprintf(e->label[i], sizeof e->label[i], "%s/%s", op_name(n->op),
                 algo == CONV_ALGO_WINOGRAD    ? "winograd"
                 : algo == CONV_ALGO_WINOGRAD4 ? "winograd4"
                                               : "direct");
    }
    return 0;
}

static int create(Graph *g, const Shape *input, int n_threads, int release,
                  Executor **out)
{
    Executor *e = NULL;
    int *uses = NULL;
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
    if (e->n_threads < 1) e->n_threads = 1;
    e->skip_out_softmax = -1;
    if ((rc = plan_create(g, PLAN_INPLACE_ALL | PLAN_ALIAS_CONCAT, &e->plan)))
        goto fail;
    rc = ERR_NOMEM;
    size_t nn = (size_t)g->n_nodes + 1;
    e->run = sl_calloc(nn, sizeof *e->run);
    e->post = sl_calloc(nn, sizeof *e->post);
    e->prof = sl_calloc(nn, sizeof *e->prof);
    e->label = sl_calloc(nn, sizeof *e->label);
    e->wino = sl_calloc(nn, sizeof *e->wino);
    uses = count_uses(g);
    if (!e->run || !e->post || !e->prof || !e->label || !e->wino || !uses) {
        sl_error("out of memory creating the executor");
        goto fail;
    }
    plan_fusions(e, uses);
    plan_concats(e);
    if ((rc = plan_convs(e, uses, release))) goto fail;
    rc = ERR_NOMEM;
    /* Scratch needs can grow with the thread count (per-thread GEMM
     * panels), so size it under the thread count exec_run will use. */
    size_t sc = 0;
    int saved_threads = omp_get_max_threads();
    omp_set_num_threads(e->n_threads);
    for (int i = 0; i < g->n_nodes; i++) {
        const Node *n = &g->nodes[i];
        if (!op_table[n->op].scratch) continue;
        size_t s = e->wino[i] ? wino_scratch_floats(e->wino[i])
                              : op_table[n->op].scratch(g, n);
        if (s > sc) sc = s;
    }
    omp_set_num_threads(saved_threads);
    e->scratch_floats = sc;
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
    /* Output 0 from a channel Softmax computed in place over its logits:
     * skippable on request (exec_set_skip_softmax). */
    int prod = g->n_outputs > 0 ? g->values[g->outputs[0]].producer : -1;
    if (prod >= 0) {
        const Node *n = &g->nodes[prod];
        const Shape *os = &g->values[n->out].shape;
        if (n->op == OP_SOFTMAX && !n->p.softmax.flatten && os->ndim >= 2 &&
            (n->p.softmax.axis == 1 || n->p.softmax.axis == 1 - os->ndim) &&
            e->run[prod] == RUN_OP && e->plan.buffer[n->out] >= 0 &&
            e->plan.buffer[n->in[0]] == e->plan.buffer[n->out])
            e->skip_out_softmax = prod;
    }
    sl_free(uses);
    *out = e;
    return SL_OK;
fail:
    sl_free(uses);
    exec_free(e);
    return rc;
}

int exec_create(Graph *g, const Shape *input, int n_threads, Executor **out)
{
    return create(g, input, n_threads, 0, out);
}

int exec_create_lean(Graph *g, const Shape *input, int n_threads,
                     Executor **out)
{
    return create(g, input, n_threads, 1, out);
}

size_t exec_weight_bytes(const Executor *e)
{
    size_t b = 0;
    for (int i = 0; i < e->g->n_nodes; i++)
        if (e->wino[i]) b += wino_weight_bytes(e->wino[i]);
    return b;
}

void exec_free(Executor *e)
{
    if (!e) return;
    plan_free(&e->plan);
    if (e->wino)
        for (int i = 0; i < e->g->n_nodes; i++)
            wino_free(e->wino[i]);
    sl_free(e->wino);
    sl_free(e->arena);
    sl_free(e->scratch);
    sl_free(e->run);
    sl_free(e->post);
    sl_free(e->prof);
    sl_free(e->label);
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

static void run_node(Executor *e, int i, float *y, const float *const *in)
{
    const Graph *g = e->g;
    const Node *n = &g->nodes[i];
    if (e->run[i] == RUN_NORM_ACT) {
        const Shape *xs = &g->values[n->in[0]].shape;
        if (n->op == OP_INSTANCE_NORM)
            instance_norm_act_forward(y, in[0], in[1], in[2], xs, &n->p.norm,
                                      &e->post[i]);
        else
            batch_norm_act_forward(y, in[0], in[1], in[2], in[3], in[4], xs,
                                   &n->p.norm, &e->post[i]);
        return;
    }
    if (e->run[i] == RUN_WINOGRAD) {
        wino_forward(y, in[0], n->n_in > 2 ? in[2] : NULL, e->wino[i],
                     e->scratch);
        return;
    }
    op_table[n->op].forward(g, n, y, in, e->scratch);
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
        if (e->run[i] == RUN_SKIP) continue;
        if (e->skipping && i == e->skip_out_softmax) continue;
        const float *in[SL_MAX_INPUTS];
        for (int k = 0; k < n->n_in; k++)
            /* a Winograd layer reads its transformed weights, not these
             * (which exec_create_lean may have freed) */
            in[k] = e->run[i] == RUN_WINOGRAD && k == 1
                        ? NULL
                        : value_ptr(e, n->in[k]);
        float *y = value_ptr(e, n->out);
        /* An in-place Identity has nothing to do (and memcpy onto itself
         * is undefined). */
        if (n->op == OP_IDENTITY && y == in[0]) continue;
        if (e->profiling) {
            double t0 = sl_now();
            run_node(e, i, y, in);
            e->prof[i] += sl_now() - t0;
        } else {
            run_node(e, i, y, in);
        }
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

int exec_set_skip_softmax(Executor *e, int skip)
{
    e->skipping = skip && e->skip_out_softmax >= 0;
    return e->skipping;
}

void exec_profile(Executor *e, int on)
{
    if (on && !e->profiling)
        memset(e->prof, 0, sizeof *e->prof * (size_t)e->g->n_nodes);
    e->profiling = on;
}

double exec_node_seconds(const Executor *e, int i)
{
    return i >= 0 && i < e->g->n_nodes ? e->prof[i] : 0.0;
}

const char *exec_node_label(const Executor *e, int i)
{
    if (i < 0 || i >= e->g->n_nodes) return "";
    return e->label[i];
}

void exec_reexec_passive_wait(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") || !argv || !argv[0]) return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1)) return;
    if (!getenv("GOMP_SPINCOUNT") &&
        setenv("GOMP_SPINCOUNT", EXEC_SPIN_COUNT, 1))
        return;
    execv("/proc/self/exe", argv);
    /* not possible here: carry on with libgomp's default policy */
}
