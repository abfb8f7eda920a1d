/* Executor: shape inference, one planned arena, nodes run in order.
 *
 * At creation the executor also decides how each node runs:
 *  - a normalisation (InstanceNorm, BatchNorm) whose only consumer is a
 *    Relu or LeakyRelu, planned in the same buffer, runs both as one
 *    fused pass (fused.c) and the activation node is skipped;
 *  - everything else runs its op-table forward.
 * Fused results are bit-identical to the unfused kernels (see fused.c),
 * so none of this changes an output.
 *
 * Thread count.  An explicit n_threads is used as given.  With "all
 * cores" (n_threads <= 0) the executor picks the count by measuring: on a
 * machine busy with other work, a team of all cores is much slower than
 * one thread, because libgomp's workers spin-wait at every barrier while
 * the thread they wait for is descheduled (2D slim U-Net, 2 cores, load
 * 6: 100 ms per run with 2 threads vs 7 ms with 1, see the commit log).
 * The wait policy cannot be changed once libgomp has started, so the
 * executor times runs with all cores, half of them, ..., one, keeps the
 * fastest, and now and then retries another count, so it follows the
 * load.  The first run only warms up (page faults in the arena, thread
 * creation) with one thread and is not timed.  Retries back off: the gap
 * doubles (AUTO_GAP_MIN to AUTO_GAP_MAX runs) each time a retry loses,
 * since on a busy machine a run with all cores can cost ten times more;
 * and a run with more threads than the fastest count is not even tried
 * while the 1-minute load average says the cores it needs are busy with
 * other work (the try is then counted as lost).
 * Results do not depend on the thread count (every kernel reduces in a fixed
 * order), so this changes only the time.
 */
/* getloadavg() is a BSD extension of glibc's stdlib.h */
#define _DEFAULT_SOURCE 1
#include "exec.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "ops/ops.h"
#include "plan.h"

/* Candidate thread counts for "all cores": P, P/2, ..., 1. */
#define AUTO_MAX_CAND 8
/* Runs between retries of a count other than the fastest. */
#define AUTO_GAP_MIN 16
#define AUTO_GAP_MAX 1024

typedef struct {
    int n;                      /* candidates (0: fixed thread count) */
    int threads[AUTO_MAX_CAND]; /* descending */
    double sec[AUTO_MAX_CAND];  /* latest wall time of a run with each */
    int best;                   /* index of the fastest */
    long runs;                  /* runs so far, the warm-up included */
    long next_retry;            /* run index of the next retry */
    long gap;                   /* current retry gap */
    int retries;                /* retries so far (which count is next) */
} AutoThreads;

typedef enum {
    RUN_OP,       /* op_table forward */
    RUN_SKIP,     /* nothing: fused into an earlier node, or in-place
                     Identity */
    RUN_NORM_ACT, /* normalisation + the activation after it */
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
    uint8_t *run;  /* per node: RunKind */
    PostAct *post; /* per node: the activation a RUN_NORM_ACT applies */
    int skip_out_softmax; /* node index of output 0's Softmax, or -1 */
    int skipping;         /* exec_set_skip_softmax state */
    AutoThreads autot;
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

int exec_create(Graph *g, const Shape *input, int n_threads, Executor **out)
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
    if (n_threads <= 0 && e->n_threads > 1)
        for (int t = e->n_threads; t >= 1 && e->autot.n < AUTO_MAX_CAND;
             t /= 2)
            e->autot.threads[e->autot.n++] = t;
    e->skip_out_softmax = -1;
    if ((rc = plan_create(g, PLAN_INPLACE_ALL, &e->plan))) goto fail;
    rc = ERR_NOMEM;
    size_t nn = (size_t)g->n_nodes + 1;
    e->run = sl_calloc(nn, sizeof *e->run);
    e->post = sl_calloc(nn, sizeof *e->post);
    e->prof = sl_calloc(nn, sizeof *e->prof);
    e->label = sl_calloc(nn, sizeof *e->label);
    uses = count_uses(g);
    if (!e->run || !e->post || !e->prof || !e->label || !uses) {
        sl_error("out of memory creating the executor");
        goto fail;
    }
    plan_fusions(e, uses);
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

void exec_free(Executor *e)
{
    if (!e) return;
    plan_free(&e->plan);
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
    op_table[n->op].forward(g, n, y, in, e->scratch);
}

/* May a run use t_new threads while this process runs t_now?  Not when
 * the load average, less our own threads, leaves fewer than t_new cores
 * idle.  Unknown load: yes. */
static int load_allows(int t_new, int t_now)
{
    double l[1];
    if (getloadavg(l, 1) < 1) return 1;
    double others = l[0] - (double)t_now;
    return others <= (double)(omp_get_num_procs() - t_new) + 0.5;
}

/* Which candidate the next run uses: one thread to warm up, each
 * candidate once, then the fastest, with retries of the others in turn
 * at run next_retry.  A try the load average rules out is recorded as
 * lost (infinite time) and the fastest runs instead. */
static int auto_pick(AutoThreads *a)
{
    int idx;
    if (a->runs == 0) return a->n - 1;
    if (a->runs <= a->n)
        idx = (int)a->runs - 1;
    else if (a->runs == a->next_retry)
        idx = (a->best + 1 + a->retries % (a->n - 1)) % a->n;
    else
        return a->best;
    int now = a->runs <= a->n ? 1 : a->threads[a->best];
    if (a->threads[idx] > now && !load_allows(a->threads[idx], now)) {
        a->sec[idx] = HUGE_VAL;
        return a->runs <= a->n ? a->n - 1 : a->best;
    }
    return idx;
}

/* Record the wall time of run a->runs, which used candidate idx (or,
 * when auto_pick ruled a try out, the fallback it returned: the time
 * then belongs to that one). */
static void auto_record(AutoThreads *a, int idx, double sec)
{
    long r = a->runs++;
    if (r == 0) return; /* warm-up */
    a->sec[idx] = sec;
    if (r < a->n) return;
    int old = a->best;
    a->best = 0;
    for (int i = 1; i < a->n; i++)
        if (a->sec[i] < a->sec[a->best]) a->best = i;
    if (r == a->n) {
        a->gap = AUTO_GAP_MIN;
    } else if (r == a->next_retry) {
        a->retries++;
        if (a->best == old)
            a->gap = a->gap * 2 < AUTO_GAP_MAX ? a->gap * 2 : AUTO_GAP_MAX;
        else
            a->gap = AUTO_GAP_MIN;
    } else {
        return;
    }
    a->next_retry = r + a->gap;
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
    int pick = e->autot.n ? auto_pick(&e->autot) : -1;
    double t_start = sl_now();
    omp_set_num_threads(pick >= 0 ? e->autot.threads[pick] : e->n_threads);
    float *x = value_ptr(e, g->input);
    memcpy(x, input, (size_t)shape_numel(&e->in_shape) * sizeof(float));
    for (int i = 0; i < g->n_nodes; i++) {
        const Node *n = &g->nodes[i];
        if (e->run[i] == RUN_SKIP) continue;
        if (e->skipping && i == e->skip_out_softmax) continue;
        const float *in[SL_MAX_INPUTS];
        for (int k = 0; k < n->n_in; k++)
            in[k] = value_ptr(e, n->in[k]);
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
    if (pick >= 0) auto_record(&e->autot, pick, sl_now() - t_start);
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
    execv("/proc/self/exe", argv);
    /* not possible here: carry on with libgomp's default policy */
}
