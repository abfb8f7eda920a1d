/* Channel dependency analysis: prunable points, their uses, Add groups. */
#include "compressor/sauron/groups.h"

#include <stdarg.h>
#include <string.h>

#include "runtime/common.h"
#include "runtime/ops/ops.h"

/* Where a channel of an activation comes from: channel c of point p, or
 * p = -1 when it does not come from a prunable point (graph input, Softmax
 * output, a Concat along another axis...). */
typedef struct {
    int p, c;
} Origin;

/* Working state of one analysis; freed by analysis_free. */
typedef struct {
    const Graph *g;
    int rank;       /* activation rank (from the graph input) */
    int *ch;        /* [n_values] channel count of each activation */
    int *use_start; /* [n_values + 1] CSR of consumers */
    int *use_list;  /* node * SL_MAX_INPUTS + input slot */
    int *wuses;     /* [n_values] number of node inputs reading a value */
    int *point_of;  /* [n_values] point whose chain holds the value, or -1 */
    int *org_off;   /* [n_values] offset into org, or -1 */
    Origin *org;
    int *parent; /* union-find over points */
    PruneGroups *pg;
} Analysis;

static void analysis_free(Analysis *a)
{
    sl_free(a->ch);
    sl_free(a->use_start);
    sl_free(a->use_list);
    sl_free(a->wuses);
    sl_free(a->point_of);
    sl_free(a->org_off);
    sl_free(a->org);
    sl_free(a->parent);
}

/* Record why point p cannot be pruned; the first reason is kept. */
static void exclude(PrunePoint *pt, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void exclude(PrunePoint *pt, const char *fmt, ...)
{
    if (!pt->prunable) return;
    pt->prunable = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pt->reason, sizeof pt->reason, fmt, ap);
    va_end(ap);
}

static int is_channel_axis(const Analysis *a, int axis)
{
    return axis == 1 || axis == 1 - a->rank;
}

static int is_passthrough(OpType op)
{
    return op == OP_RELU || op == OP_LEAKY_RELU || op == OP_SIGMOID ||
           op == OP_MAX_POOL || op == OP_AVG_POOL || op == OP_RESIZE ||
           op == OP_IDENTITY;
}

/* Consumers per value (CSR) and weight use counts. */
static int build_uses(Analysis *a)
{
    const Graph *g = a->g;
    int nv = g->n_values;
    a->use_start = sl_calloc((size_t)nv + 1, sizeof(int));
    a->wuses = sl_calloc((size_t)nv, sizeof(int));
    a->use_list =
        sl_calloc((size_t)g->n_nodes * SL_MAX_INPUTS + 1, sizeof(int));
    if (!a->use_start || !a->wuses || !a->use_list) return ERR_NOMEM;
    for (int i = 0; i < g->n_nodes; i++)
        for (int j = 0; j < g->nodes[i].n_in; j++) {
            int v = g->nodes[i].in[j];
            a->use_start[v + 1]++;
            a->wuses[v]++;
        }
    for (int v = 0; v < nv; v++)
        a->use_start[v + 1] += a->use_start[v];
    int *fill = sl_calloc((size_t)nv, sizeof(int));
    if (!fill) return ERR_NOMEM;
    for (int i = 0; i < g->n_nodes; i++)
        for (int j = 0; j < g->nodes[i].n_in; j++) {
            int v = g->nodes[i].in[j];
            a->use_list[a->use_start[v] + fill[v]++] = i * SL_MAX_INPUTS + j;
        }
    sl_free(fill);
    return 0;
}

static int n_consumers(const Analysis *a, int v)
{
    int k = a->use_start[v + 1] - a->use_start[v];
    for (int o = 0; o < a->g->n_outputs; o++)
        if (a->g->outputs[o] == v) k++;
    return k;
}

/* Single consumer node of v (reading it as input 0), or -1. */
static int sole_consumer(const Analysis *a, int v)
{
    if (n_consumers(a, v) != 1 || a->use_start[v + 1] == a->use_start[v])
        return -1;
    int u = a->use_list[a->use_start[v]];
    return u % SL_MAX_INPUTS == 0 ? u / SL_MAX_INPUTS : -1;
}

/* Channel count of every activation from the weights, in node order. */
static int infer_channels(Analysis *a)
{
    const Graph *g = a->g;
    a->ch = sl_calloc((size_t)g->n_values, sizeof(int));
    if (!a->ch) return ERR_NOMEM;
    const Shape *is = &g->values[g->input].shape;
    a->ch[g->input] = is->ndim >= 2 ? (int)is->d[1] : 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const Node *n = &g->nodes[i];
        int c = a->ch[n->in[0]], want = -1;
        if (n->op == OP_CONV || n->op == OP_CONV_TRANSPOSE) {
            const Shape *w = &g->values[n->in[1]].shape;
            int grp = n->p.conv.group > 0 ? n->p.conv.group : 1;
            if (n->op == OP_CONV) {
                want = (int)w->d[1] * grp;
                c = (int)w->d[0];
            } else {
                want = (int)w->d[0];
                c = (int)w->d[1] * grp;
            }
        } else if (n->op == OP_CONCAT &&
                   is_channel_axis(a, n->p.concat.axis)) {
            c = 0;
            for (int j = 0; j < n->n_in; j++)
                c += a->ch[n->in[j]];
        } else if (n->op == OP_ADD) {
            int c1 = a->ch[n->in[1]];
            if (g->values[n->in[0]].data || (c1 > c && c != 1)) c = c1;
        } else if (n->op == OP_INSTANCE_NORM || n->op == OP_BATCH_NORM) {
            want = (int)shape_numel(&g->values[n->in[1]].shape);
        }
        int have = a->ch[n->in[0]];
        if (want >= 0 && have > 0 && have != want) {
            sl_error("node '%s': expects %d input channels but receives %d; "
                     "the model is inconsistent, re-export it",
                     n->name, want, have);
            return ERR_FORMAT;
        }
        a->ch[n->out] = c;
    }
    return 0;
}

/* Points: one per Conv/ConvTranspose, extended over a sole norm and a sole
 * activation. */
static int find_points(Analysis *a)
{
    const Graph *g = a->g;
    PruneGroups *pg = a->pg;
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++)
        n += g->nodes[i].op == OP_CONV || g->nodes[i].op == OP_CONV_TRANSPOSE;
    pg->points = sl_calloc((size_t)n + 1, sizeof(PrunePoint));
    a->point_of = sl_alloc((size_t)g->n_values * sizeof(int) + 1);
    if (!pg->points || !a->point_of) return ERR_NOMEM;
    for (int v = 0; v < g->n_values; v++)
        a->point_of[v] = -1;
    for (int i = 0; i < g->n_nodes; i++) {
        const Node *nd = &g->nodes[i];
        if (nd->op != OP_CONV && nd->op != OP_CONV_TRANSPOSE) continue;
        int p = pg->n_points++;
        PrunePoint *pt = &pg->points[p];
        pt->conv = i;
        pt->norm = pt->act = -1;
        pt->prunable = 1;
        int v = nd->out, next = sole_consumer(a, v);
        a->point_of[v] = p;
        if (next >= 0 && (g->nodes[next].op == OP_INSTANCE_NORM ||
                          g->nodes[next].op == OP_BATCH_NORM)) {
            pt->norm = next;
            v = g->nodes[next].out;
            a->point_of[v] = p;
            next = sole_consumer(a, v);
        }
        if (next >= 0 && (g->nodes[next].op == OP_RELU ||
                          g->nodes[next].op == OP_LEAKY_RELU)) {
            pt->act = next;
            v = g->nodes[next].out;
            a->point_of[v] = p;
        }
        pt->value = v;
        pt->channels = a->ch[nd->out];
    }
    return 0;
}

/* ---- union-find over points ---- */

static int uf_find(int *parent, int x)
{
    while (parent[x] != x) {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    return x;
}

static void uf_union(int *parent, int x, int y)
{
    x = uf_find(parent, x);
    y = uf_find(parent, y);
    if (x != y) parent[x > y ? x : y] = x < y ? x : y;
}

/* Exclude every point appearing in the origin list of value v. */
static void exclude_origins(Analysis *a, int v, const char *why,
                            const char *node)
{
    if (a->org_off[v] < 0) return;
    const Origin *o = &a->org[a->org_off[v]];
    for (int k = 0; k < a->ch[v]; k++)
        if (o[k].p >= 0)
            exclude(&a->pg->points[o[k].p], "%s '%s'", why, node);
}

/* Add node n: tie the points meeting channel by channel. */
static void tie_add(Analysis *a, const Node *n)
{
    const Graph *g = a->g;
    PrunePoint *pts = a->pg->points;
    int x = n->in[0], y = n->in[1];
    if (g->values[x].data || g->values[y].data) {
        exclude_origins(a, x, "adds a weight in Add", n->name);
        exclude_origins(a, y, "adds a weight in Add", n->name);
        return;
    }
    if (a->ch[x] != a->ch[y] || a->org_off[x] < 0 || a->org_off[y] < 0) {
        exclude_origins(a, x, "broadcast over channels in Add", n->name);
        exclude_origins(a, y, "broadcast over channels in Add", n->name);
        return;
    }
    const Origin *ox = &a->org[a->org_off[x]], *oy = &a->org[a->org_off[y]];
    for (int k = 0; k < a->ch[x]; k++) {
        Origin p = ox[k], q = oy[k];
        if (p.p >= 0 && q.p >= 0 && p.c == q.c) {
            uf_union(a->parent, p.p, q.p);
        } else if (p.p >= 0 && q.p >= 0) {
            exclude(&pts[p.p],
                    "Add '%s' sums its channel %d with channel %d "
                    "of another point",
                    n->name, p.c, q.c);
            exclude(&pts[q.p],
                    "Add '%s' sums its channel %d with channel %d "
                    "of another point",
                    n->name, q.c, p.c);
        } else if (p.p >= 0 || q.p >= 0) {
            exclude(&pts[p.p >= 0 ? p.p : q.p],
                    "Add '%s' ties it to channels "
                    "that no prunable point produces",
                    n->name);
        }
    }
}

/* Channel origins of every activation, in node order; Add ties. */
static int propagate_origins(Analysis *a)
{
    const Graph *g = a->g;
    size_t total = 0;
    a->org_off = sl_alloc((size_t)g->n_values * sizeof(int) + 1);
    if (!a->org_off) return ERR_NOMEM;
    for (int v = 0; v < g->n_values; v++) {
        a->org_off[v] = -1;
        if (!g->values[v].data && a->ch[v] > 0) {
            a->org_off[v] = (int)total;
            total += (size_t)a->ch[v];
        }
    }
    a->org = sl_calloc(total + 1, sizeof(Origin));
    if (!a->org) return ERR_NOMEM;
    for (size_t k = 0; k < total; k++)
        a->org[k].p = -1;
    for (int i = 0; i < g->n_nodes; i++) {
        const Node *n = &g->nodes[i];
        int out = n->out;
        if (a->org_off[out] < 0) continue;
        Origin *o = &a->org[a->org_off[out]];
        int p = a->point_of[out];
        if (p >= 0) {
            for (int k = 0; k < a->ch[out]; k++)
                o[k] = (Origin){p, k};
            continue;
        }
        if (n->op == OP_ADD) tie_add(a, n);
        int src = n->in[0];
        if (n->op == OP_ADD && a->ch[n->in[1]] == a->ch[out] &&
            (a->org_off[src] < 0 || a->ch[src] != a->ch[out]))
            src = n->in[1];
        if (n->op == OP_CONCAT && is_channel_axis(a, n->p.concat.axis)) {
            int off = 0;
            for (int j = 0; j < n->n_in; j++) {
                int v = n->in[j];
                if (a->org_off[v] >= 0 && off + a->ch[v] <= a->ch[out])
                    memcpy(o + off, &a->org[a->org_off[v]],
                           (size_t)a->ch[v] * sizeof(Origin));
                off += a->ch[v];
            }
        } else if ((is_passthrough(n->op) || n->op == OP_ADD ||
                    n->op == OP_INSTANCE_NORM || n->op == OP_BATCH_NORM) &&
                   a->org_off[src] >= 0 && a->ch[src] == a->ch[out]) {
            memcpy(o, &a->org[a->org_off[src]],
                   (size_t)a->ch[out] * sizeof(Origin));
        }
    }
    return 0;
}

/* ---- tracing the uses of one point ---- */

typedef struct {
    int value, offset;
} Visit;

static int add_use(PrunePoint *pt, int *cap, PruneUse u)
{
    for (int k = 0; k < pt->n_uses; k++)
        if (pt->uses[k].kind == u.kind && pt->uses[k].node == u.node &&
            pt->uses[k].output == u.output && pt->uses[k].offset == u.offset)
            return 0;
    if (pt->n_uses == *cap) {
        int nc = *cap ? 2 * *cap : 8;
        PruneUse *nu = sl_realloc(pt->uses, (size_t)nc * sizeof *nu);
        if (!nu) return ERR_NOMEM;
        pt->uses = nu;
        *cap = nc;
    }
    pt->uses[pt->n_uses++] = u;
    return 0;
}

static int push_visit(Visit **st, int *n, int *cap, Visit **seen, int *ns,
                      int *cap_seen, Visit v)
{
    for (int k = 0; k < *ns; k++)
        if ((*seen)[k].value == v.value && (*seen)[k].offset == v.offset)
            return 0;
    if (*ns == *cap_seen) {
        int nc = *cap_seen ? 2 * *cap_seen : 16;
        Visit *s = sl_realloc(*seen, (size_t)nc * sizeof *s);
        if (!s) return ERR_NOMEM;
        *seen = s;
        *cap_seen = nc;
    }
    (*seen)[(*ns)++] = v;
    if (*n == *cap) {
        int nc = *cap ? 2 * *cap : 16;
        Visit *s = sl_realloc(*st, (size_t)nc * sizeof *s);
        if (!s) return ERR_NOMEM;
        *st = s;
        *cap = nc;
    }
    (*st)[(*n)++] = v;
    return 0;
}

/* Follow point p's channels to every use (depth first over (value,
 * offset) pairs, each visited once). */
static int trace_point(Analysis *a, int p)
{
    const Graph *g = a->g;
    PrunePoint *pt = &a->pg->points[p];
    Visit *st = NULL, *seen = NULL;
    int n = 0, cap = 0, ns = 0, cap_seen = 0, cap_uses = 0, rc = 0;
    rc = push_visit(&st, &n, &cap, &seen, &ns, &cap_seen,
                    (Visit){pt->value, 0});
    while (!rc && n > 0) {
        Visit cur = st[--n];
        for (int o = 0; !rc && o < g->n_outputs; o++)
            if (g->outputs[o] == cur.value)
                rc = add_use(pt, &cap_uses,
                             (PruneUse){PRUNE_USE_OUTPUT, -1, o, cur.offset});
        for (int k = a->use_start[cur.value];
             !rc && k < a->use_start[cur.value + 1]; k++) {
            int ni = a->use_list[k] / SL_MAX_INPUTS;
            int slot = a->use_list[k] % SL_MAX_INPUTS;
            const Node *nd = &g->nodes[ni];
            PruneUse u = {PRUNE_USE_CONV, ni, -1, cur.offset};
            Visit next = {nd->out, cur.offset};
            int follow = 0;
            switch (nd->op) {
            case OP_CONV:
            case OP_CONV_TRANSPOSE:
                if (slot != 0) break;
                if (nd->op == OP_CONV_TRANSPOSE) u.kind = PRUNE_USE_CONV_T;
                if (nd->p.conv.group > 1)
                    exclude(pt, "feeds grouped convolution '%s' (group %d)",
                            nd->name, nd->p.conv.group);
                rc = add_use(pt, &cap_uses, u);
                break;
            case OP_INSTANCE_NORM:
            case OP_BATCH_NORM:
                if (slot != 0) break;
                u.kind = PRUNE_USE_NORM;
                rc = add_use(pt, &cap_uses, u);
                follow = 1;
                break;
            case OP_SOFTMAX:
                u.kind = PRUNE_USE_SOFTMAX;
                exclude(pt, "Softmax '%s' couples its channels", nd->name);
                rc = add_use(pt, &cap_uses, u);
                break;
            case OP_CONCAT:
                if (!is_channel_axis(a, nd->p.concat.axis)) {
                    exclude(pt, "concatenated along axis %d in '%s'",
                            nd->p.concat.axis, nd->name);
                    break;
                }
                for (int j = 0, off = 0; !rc && j < nd->n_in; j++) {
                    if (nd->in[j] == cur.value) {
                        next.offset = cur.offset + off;
                        rc = push_visit(&st, &n, &cap, &seen, &ns, &cap_seen,
                                        next);
                    }
                    off += a->ch[nd->in[j]];
                }
                break;
            case OP_ADD:
                follow = 1;
                break;
            default:
                follow = is_passthrough(nd->op) && slot == 0;
                break;
            }
            if (!rc && follow)
                rc = push_visit(&st, &n, &cap, &seen, &ns, &cap_seen, next);
        }
    }
    sl_free(st);
    sl_free(seen);
    return rc;
}

/* Graph output reached from v through Softmax/Sigmoid/Resize/Identity
 * only, or -1: such a point is a class head. */
static int head_output(const Analysis *a, int v, int depth)
{
    const Graph *g = a->g;
    for (int o = 0; o < g->n_outputs; o++)
        if (g->outputs[o] == v) return o;
    if (depth > g->n_nodes) return -1;
    for (int k = a->use_start[v]; k < a->use_start[v + 1]; k++) {
        int ni = a->use_list[k] / SL_MAX_INPUTS;
        OpType op = g->nodes[ni].op;
        if (a->use_list[k] % SL_MAX_INPUTS != 0) continue;
        if (op == OP_SOFTMAX || op == OP_SIGMOID || op == OP_RESIZE ||
            op == OP_IDENTITY) {
            int o = head_output(a, g->nodes[ni].out, depth + 1);
            if (o >= 0) return o;
        }
    }
    return -1;
}

/* Reasons that come from the point itself and its weights. */
static void check_point(Analysis *a, int p)
{
    const Graph *g = a->g;
    PrunePoint *pt = &a->pg->points[p];
    const Node *cv = &g->nodes[pt->conv];
    int o = head_output(a, pt->value, 0);
    int classes = g->meta.n_classes;
    if (o >= 0 && pt->channels == a->ch[g->outputs[o]] &&
        (classes <= 0 || classes == pt->channels)) {
        pt->head = 1;
        pt->prunable = 1; /* the head reason replaces any earlier one */
        exclude(pt, "class head (%d classes) of output '%s'", pt->channels,
                g->values[g->outputs[o]].name);
    }
    if (cv->p.conv.group > 1)
        exclude(pt, "grouped convolution (group %d)", cv->p.conv.group);
    if (pt->channels < 2) exclude(pt, "a single channel");
    for (int k = 0; k < pt->n_uses; k++)
        if (pt->uses[k].kind == PRUNE_USE_OUTPUT)
            exclude(pt, "reaches graph output '%s' at channel offset %d",
                    g->values[g->outputs[pt->uses[k].output]].name,
                    pt->uses[k].offset);
    /* every weight surgery would edit must belong to one node only */
    int nodes[3] = {pt->conv, pt->norm, -1};
    for (int k = -1; k < pt->n_uses; k++) {
        if (k >= 0) {
            if (pt->uses[k].node < 0) continue;
            nodes[0] = pt->uses[k].node;
            nodes[1] = -1;
        }
        for (int m = 0; m < 2; m++) {
            if (nodes[m] < 0) continue;
            const Node *nd = &g->nodes[nodes[m]];
            for (int j = 1; j < nd->n_in; j++)
                if (a->wuses[nd->in[j]] > 1)
                    exclude(pt,
                            "weight '%s' of '%s' is shared with another "
                            "node",
                            g->values[nd->in[j]].name, nd->name);
        }
    }
}

/* Group ids from the union-find; a group is prunable only if all of its
 * members are and they have the same channel count. */
static void form_groups(Analysis *a)
{
    PruneGroups *pg = a->pg;
    int np = pg->n_points;
    for (int p = 0; p < np; p++)
        pg->points[p].group = -1;
    for (int p = 0; p < np; p++) {
        int r = uf_find(a->parent, p);
        if (pg->points[r].group < 0) pg->points[r].group = pg->n_groups++;
        pg->points[p].group = pg->points[r].group;
    }
    for (int p = 0; p < np; p++) {
        PrunePoint *pt = &pg->points[p];
        for (int q = 0; q < np; q++) {
            const PrunePoint *o = &pg->points[q];
            if (q == p || o->group != pt->group) continue;
            if (!o->prunable && o->reason[0] && strncmp(o->reason, "tied", 4))
                exclude(pt, "tied by Add to point %d, which is not prunable",
                        q);
            else if (o->channels != pt->channels)
                exclude(pt, "tied by Add to point %d with %d channels", q,
                        o->channels);
        }
    }
}

int sauron_find_groups(const Graph *g, PruneGroups *out)
{
    Analysis a;
    memset(&a, 0, sizeof a);
    memset(out, 0, sizeof *out);
    a.g = g;
    a.pg = out;
    if (g->input < 0 || g->input >= g->n_values) {
        sl_error("channel analysis: the graph has no input; validate it "
                 "first (graph_validate)");
        return ERR_FORMAT;
    }
    a.rank = g->values[g->input].shape.ndim >= 3
                 ? g->values[g->input].shape.ndim
                 : 4;
    int rc = build_uses(&a);
    if (!rc) rc = infer_channels(&a);
    if (!rc) rc = find_points(&a);
    if (rc) goto fail;
    a.parent = sl_alloc((size_t)out->n_points * sizeof(int) + 1);
    if (!a.parent) {
        rc = ERR_NOMEM;
        goto fail;
    }
    for (int p = 0; p < out->n_points; p++)
        a.parent[p] = p;
    rc = propagate_origins(&a);
    for (int p = 0; !rc && p < out->n_points; p++)
        rc = trace_point(&a, p);
    if (rc) goto fail;
    for (int p = 0; p < out->n_points; p++)
        check_point(&a, p);
    form_groups(&a);
    analysis_free(&a);
    return 0;
fail:
    if (rc == ERR_NOMEM)
        sl_error("channel analysis: out of memory; free memory and retry");
    analysis_free(&a);
    sauron_groups_free(out);
    return rc;
}

void sauron_groups_free(PruneGroups *pg)
{
    if (!pg) return;
    for (int p = 0; pg->points && p < pg->n_points; p++)
        sl_free(pg->points[p].uses);
    sl_free(pg->points);
    memset(pg, 0, sizeof *pg);
}

int sauron_groups_prunable(const PruneGroups *pg)
{
    int n = 0;
    for (int p = 0; p < pg->n_points; p++)
        n += pg->points[p].prunable;
    return n;
}

static const char *use_kind_name(PruneUseKind k)
{
    switch (k) {
    case PRUNE_USE_CONV:
        return "conv input";
    case PRUNE_USE_CONV_T:
        return "convT input";
    case PRUNE_USE_NORM:
        return "norm";
    case PRUNE_USE_OUTPUT:
        return "output";
    case PRUNE_USE_SOFTMAX:
        return "softmax";
    }
    return "?";
}

void sauron_groups_print(FILE *f, const Graph *g, const PruneGroups *pg)
{
    int channels = 0, prunable_ch = 0;
    for (int p = 0; p < pg->n_points; p++) {
        const PrunePoint *pt = &pg->points[p];
        channels += pt->channels;
        if (pt->prunable) prunable_ch += pt->channels;
        int tied = 0;
        for (int q = 0; q < pg->n_points; q++)
            tied += pg->points[q].group == pt->group;
        fprintf(f, "point %d  %s  %d channels  group %d%s\n", p,
                g->values[pt->value].name, pt->channels, pt->group,
                tied > 1 ? " (tied by Add)" : "");
        fprintf(f, "  producer %s '%s'", op_name(g->nodes[pt->conv].op),
                g->nodes[pt->conv].name);
        if (pt->norm >= 0)
            fprintf(f, ", norm %s '%s'", op_name(g->nodes[pt->norm].op),
                    g->nodes[pt->norm].name);
        if (pt->act >= 0)
            fprintf(f, ", act %s '%s'", op_name(g->nodes[pt->act].op),
                    g->nodes[pt->act].name);
        fprintf(f, "\n");
        for (int k = 0; k < pt->n_uses; k++) {
            const PruneUse *u = &pt->uses[k];
            const char *nm = u->node >= 0
                                 ? g->nodes[u->node].name
                                 : g->values[g->outputs[u->output]].name;
            fprintf(f, "  use: %-11s '%s' at channel offset %d\n",
                    use_kind_name(u->kind), nm, u->offset);
        }
        if (pt->prunable)
            fprintf(f, "  prunable\n");
        else
            fprintf(f, "  not prunable: %s\n", pt->reason);
    }
    fprintf(f,
            "%d points (%d prunable) in %d groups; %d of %d channels "
            "prunable\n",
            pg->n_points, sauron_groups_prunable(pg), pg->n_groups,
            prunable_ch, channels);
}
