/* Liveness-based placement of activations in one arena (see plan.h). */
#include "plan.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

typedef struct {
    size_t size;
    size_t offset;
    int first, last; /* of a root: over the buffers placed inside it too */
    int parent;      /* buffer this one is placed inside, or -1 (a root) */
    size_t delta;    /* bytes from the parent's start */
} Buffer;

int plan_op_inplace(OpType op)
{
    return op == OP_RELU || op == OP_LEAKY_RELU || op == OP_SIGMOID ||
           op == OP_IDENTITY;
}

/* Ops whose kernels accept y == x at level PLAN_INPLACE_ALL: every
 * element is read before it (or anything after it) is written.  Their
 * other inputs must be weights. */
static int op_inplace_level(const Graph *g, const Node *n, int level)
{
    level &= PLAN_INPLACE_MASK;
    if (level >= PLAN_INPLACE_ELEMWISE && plan_op_inplace(n->op))
        return n->n_in == 1;
    if (level < PLAN_INPLACE_ALL) return 0;
    if (n->op != OP_INSTANCE_NORM && n->op != OP_BATCH_NORM &&
        n->op != OP_SOFTMAX)
        return 0;
    for (int k = 1; k < n->n_in; k++)
        if (!g->values[n->in[k]].data) return 0;
    return 1;
}

void plan_free(Plan *p)
{
    sl_free(p->offset);
    sl_free(p->bytes);
    sl_free(p->first);
    sl_free(p->last);
    sl_free(p->buffer);
    sl_free(p->within);
    memset(p, 0, sizeof *p);
}

/* Largest first; ties by earlier start, then id, so the plan is the same
 * on every platform (qsort is not stable). */
static int cmp_buffers(const void *a, const void *b, const Buffer *bufs)
{
    const Buffer *x = &bufs[*(const int *)a], *y = &bufs[*(const int *)b];
    if (x->size != y->size) return x->size > y->size ? -1 : 1;
    if (x->first != y->first) return x->first < y->first ? -1 : 1;
    return *(const int *)a - *(const int *)b;
}

/* qsort has no context argument in C11: a small insertion sort keeps the
 * comparison reentrant, and graphs have at most a few hundred buffers. */
static void sort_ids(int *ids, int n, const Buffer *bufs)
{
    for (int i = 1; i < n; i++) {
        int v = ids[i], j = i;
        while (j > 0 && cmp_buffers(&ids[j - 1], &v, bufs) > 0) {
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = v;
    }
}

static int overlap_time(const Buffer *a, const Buffer *b)
{
    return a->first <= b->last && b->first <= a->last;
}

/* Place buffer `b` at the best-fitting gap among placed[] (ids already
 * given offsets).  live[] is scratch for ids, sorted by offset. */
static void place(Buffer *bufs, int b, const int *placed, int n_placed,
                  int *live)
{
    int nl = 0;
    for (int i = 0; i < n_placed; i++)
        if (overlap_time(&bufs[placed[i]], &bufs[b])) live[nl++] = placed[i];
    /* Sort the conflicting buffers by offset (insertion sort, small n). */
    for (int i = 1; i < nl; i++) {
        int v = live[i], j = i;
        while (j > 0 && bufs[live[j - 1]].offset > bufs[v].offset) {
            live[j] = live[j - 1];
            j--;
        }
        live[j] = v;
    }
    size_t best = PLAN_NONE, best_gap = PLAN_NONE, cur = 0;
    for (int i = 0; i < nl; i++) {
        const Buffer *o = &bufs[live[i]];
        if (o->offset > cur) {
            size_t gap = o->offset - cur;
            if (gap >= bufs[b].size && gap < best_gap) {
                best = cur;
                best_gap = gap;
            }
        }
        size_t end = o->offset + o->size;
        if (end > cur) cur = end;
    }
    bufs[b].offset = best != PLAN_NONE ? best : cur;
}

/* Places every root buffer (largest first, smallest fitting gap);
 * returns the peak.  ids, live: scratch for nb ids. */
static size_t place_all(Buffer *bufs, int nb, int *ids, int *live)
{
    int nr = 0;
    for (int b = 0; b < nb; b++)
        if (bufs[b].parent < 0) ids[nr++] = b;
    sort_ids(ids, nr, bufs);
    size_t peak = 0;
    for (int i = 0; i < nr; i++) {
        place(bufs, ids[i], ids, i, live);
        size_t end = bufs[ids[i]].offset + bufs[ids[i]].size;
        if (end > peak) peak = end;
    }
    return peak;
}

static int root_of(const Buffer *bufs, int b)
{
    while (bufs[b].parent >= 0)
        b = bufs[b].parent;
    return b;
}

/* Whether input k of Concat node c (output o) may be written in place,
 * into its slice of o's buffer: an activation whose buffer holds nothing
 * read after the Concat (so nothing written into o later, an in-place
 * consumer of o included, can clobber what it still needs), of the same
 * size throughout (an in-place chain), not the graph input, not already
 * placed inside another buffer, and given to the Concat once. */
static int alias_ok(const Graph *g, const Plan *p, const Buffer *bufs, int c,
                    int k)
{
    const Node *n = &g->nodes[c];
    int v = n->in[k], bv = p->buffer[v], bo = p->buffer[n->out];
    if (bv < 0 || bo < 0 || bv == bo || bufs[bv].parent >= 0) return 0;
    if (bufs[bv].last > c + 1 || root_of(bufs, bo) == bv) return 0;
    if (p->buffer[g->input] == bv) return 0;
    for (int j = 0; j < n->n_in; j++)
        if (j != k && n->in[j] == v) return 0;
    int64_t ne = shape_numel(&g->values[v].shape);
    for (int w = 0; w < g->n_values; w++)
        if (p->buffer[w] == bv && shape_numel(&g->values[w].shape) != ne)
            return 0;
    return 1;
}

/* Concat without copies: an input placed at its slice of the Concat's
 * buffer is written there by its producer, and the Concat has nothing
 * to copy for it.  Only where every input is one contiguous block of
 * the output: all dims before the axis are 1 (a channel Concat of a
 * batch of one; with N > 1 each input would be N blocks, and every
 * kernel writing or reading it would need a batch stride).  The slice's
 * buffer then lives inside the Concat's from its first write on, which
 * can raise the peak (a skip tensor reserves its share of the
 * concatenated buffer from the encoder on), so each input is taken
 * greedily, in node order, only if the peak does not grow.  Returns the
 * peak; p->within and p->n_aliased say what was taken. */
static size_t alias_concats(const Graph *g, Plan *p, Buffer *bufs, int nb,
                            int *ids, int *live, size_t peak)
{
    for (int c = 0; c < g->n_nodes; c++) {
        const Node *n = &g->nodes[c];
        if (n->op != OP_CONCAT) continue;
        const Shape *os = &g->values[n->out].shape;
        int axis = n->p.concat.axis < 0 ? n->p.concat.axis + os->ndim
                                        : n->p.concat.axis;
        int64_t outer = 1;
        for (int i = 0; i < axis; i++)
            outer *= os->d[i];
        if (outer != 1) continue;
        size_t delta = 0;
        for (int k = 0; k < n->n_in; k++) {
            int v = n->in[k];
            size_t here = delta;
            delta += (size_t)shape_numel(&g->values[v].shape) * sizeof(float);
            if (!alias_ok(g, p, bufs, c, k)) continue;
            int bv = p->buffer[v], rt = root_of(bufs, p->buffer[n->out]);
            Buffer saved = bufs[rt];
            bufs[bv].parent = p->buffer[n->out];
            bufs[bv].delta = here;
            if (bufs[bv].first < bufs[rt].first)
                bufs[rt].first = bufs[bv].first;
            if (bufs[bv].last > bufs[rt].last) bufs[rt].last = bufs[bv].last;
            size_t np = place_all(bufs, nb, ids, live);
            if (np <= peak) {
                peak = np;
                p->n_aliased++;
                for (int w = 0; w < g->n_values; w++)
                    if (p->buffer[w] == bv) p->within[w] = n->out;
                continue;
            }
            bufs[rt] = saved;
            bufs[bv].parent = -1;
            bufs[bv].delta = 0;
        }
    }
    /* the offsets of the last accepted placement (a rejected trial may
     * have moved buffers) */
    return place_all(bufs, nb, ids, live);
}

int plan_create(const Graph *g, int inplace, Plan *p)
{
    Buffer *bufs = NULL;
    int *ids = NULL, *live = NULL;
    int rc = ERR_NOMEM;
    int nv = g->n_values, nn = g->n_nodes;
    memset(p, 0, sizeof *p);
    p->n_values = nv;
    size_t n1 = (size_t)nv + 1;
    p->offset = sl_calloc(n1, sizeof *p->offset);
    p->bytes = sl_calloc(n1, sizeof *p->bytes);
    p->first = sl_calloc(n1, sizeof *p->first);
    p->last = sl_calloc(n1, sizeof *p->last);
    p->buffer = sl_calloc(n1, sizeof *p->buffer);
    p->within = sl_calloc(n1, sizeof *p->within);
    bufs = sl_calloc(n1, sizeof *bufs);
    ids = sl_calloc(n1, sizeof *ids);
    live = sl_calloc(n1, sizeof *live);
    if (!p->offset || !p->bytes || !p->first || !p->last || !p->buffer ||
        !p->within || !bufs || !ids || !live) {
        sl_error("out of memory planning activation buffers");
        goto fail;
    }
    rc = ERR_SHAPE;
    /* Which values live in the arena, their sizes and lifetimes. */
    for (int v = 0; v < nv; v++) {
        p->offset[v] = PLAN_NONE;
        p->first[v] = p->last[v] = -1;
        p->buffer[v] = -1;
        p->within[v] = -1;
        const Value *val = &g->values[v];
        if (val->data) continue;
        int def = v == g->input        ? 0
                  : val->producer >= 0 ? val->producer + 1
                                       : -1;
        if (def < 0) continue;
        int64_t ne = shape_numel(&val->shape);
        size_t bytes;
        if (ne < 0 || sl_mul_size((size_t)ne, sizeof(float), &bytes) ||
            bytes > SIZE_MAX / 4) {
            sl_error("activation '%s' is too large to plan; use a smaller "
                     "input",
                     val->name);
            goto fail;
        }
        p->bytes[v] = (bytes + PLAN_ALIGN - 1) & ~(size_t)(PLAN_ALIGN - 1);
        p->first[v] = p->last[v] = def;
    }
    for (int i = 0; i < nn; i++) {
        const Node *n = &g->nodes[i];
        for (int k = 0; k < n->n_in; k++)
            if (p->first[n->in[k]] >= 0 && p->last[n->in[k]] < i + 1)
                p->last[n->in[k]] = i + 1;
    }
    for (int k = 0; k < g->n_outputs; k++)
        if (p->first[g->outputs[k]] >= 0) p->last[g->outputs[k]] = nn + 1;

    /* Buffers: one per value, except in-place outputs that take over the
     * buffer of their dying input (in node order, so chains of activations
     * all collapse into the first buffer). */
    int nb = 0;
    if (p->first[g->input] >= 0) p->buffer[g->input] = nb++;
    for (int i = 0; i < nn; i++) {
        const Node *n = &g->nodes[i];
        int o = n->out, x = n->in[0];
        if (op_inplace_level(g, n, inplace) && p->buffer[x] >= 0 &&
            p->last[x] == i + 1 && p->bytes[x] == p->bytes[o]) {
            p->buffer[o] = p->buffer[x];
            p->n_inplace++;
        } else {
            p->buffer[o] = nb++;
        }
    }
    for (int b = 0; b < nb; b++) {
        bufs[b].size = 0;
        bufs[b].first = nn + 2;
        bufs[b].last = -1;
        bufs[b].parent = -1;
        bufs[b].delta = 0;
    }
    size_t total = 0;
    for (int v = 0; v < nv; v++) {
        int b = p->buffer[v];
        if (b < 0) continue;
        if (p->bytes[v] > bufs[b].size) bufs[b].size = p->bytes[v];
        if (p->first[v] < bufs[b].first) bufs[b].first = p->first[v];
        if (p->last[v] > bufs[b].last) bufs[b].last = p->last[v];
        if (total > SIZE_MAX / 2 - p->bytes[v]) {
            sl_error("activations are too large to plan; use a smaller "
                     "input");
            goto fail;
        }
        total += p->bytes[v];
    }
    size_t peak = place_all(bufs, nb, ids, live);
    if (inplace & PLAN_ALIAS_CONCAT)
        peak = alias_concats(g, p, bufs, nb, ids, live, peak);
    for (int v = 0; v < nv; v++) {
        int b = p->buffer[v];
        if (b < 0) continue;
        size_t off = 0;
        for (; bufs[b].parent >= 0; b = bufs[b].parent)
            off += bufs[b].delta;
        p->offset[v] = bufs[b].offset + off;
    }
    p->n_buffers = nb;
    p->arena_bytes = peak;
    p->unplanned_bytes = total;
    rc = SL_OK;
fail:
    sl_free(bufs);
    sl_free(ids);
    sl_free(live);
    if (rc) plan_free(p);
    return rc;
}
