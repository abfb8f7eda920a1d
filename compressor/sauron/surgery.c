/* Pruning surgery: plan every slice, check it, then apply them all. */
#include "compressor/sauron/surgery.h"

#include <string.h>

#include "runtime/common.h"

/* One weight axis to shrink: mask[i] = 1 removes index i. */
typedef struct {
    int value, axis, len;
    unsigned char *mask;
} Edit;

typedef struct {
    Graph *g;
    Edit *edits;
    int n_edits, cap_edits;
} Plan;

static void plan_free(Plan *pl)
{
    for (int k = 0; k < pl->n_edits; k++)
        sl_free(pl->edits[k].mask);
    sl_free(pl->edits);
}

/* Mark channels `rm` (mask of n_ch) of a point at `offset` along `axis` of
 * weight `value`. */
static int plan_mark(Plan *pl, int value, int axis, int offset,
                     const unsigned char *rm, int n_ch, const char *node)
{
    const Value *v = &pl->g->values[value];
    if (!v->data || axis >= v->shape.ndim ||
        offset + n_ch > v->shape.d[axis]) {
        sl_error("pruning surgery: weight '%s' of '%s' does not have "
                 "channels %d..%d along axis %d; the channel analysis is "
                 "stale, re-run sauron_find_groups",
                 v->name, node, offset, offset + n_ch - 1, axis);
        return ERR_FORMAT;
    }
    Edit *e = NULL;
    for (int k = 0; k < pl->n_edits && !e; k++)
        if (pl->edits[k].value == value && pl->edits[k].axis == axis)
            e = &pl->edits[k];
    if (!e) {
        if (pl->n_edits == pl->cap_edits) {
            int nc = pl->cap_edits ? 2 * pl->cap_edits : 16;
            Edit *ne = sl_realloc(pl->edits, (size_t)nc * sizeof *ne);
            if (!ne) return ERR_NOMEM;
            pl->edits = ne;
            pl->cap_edits = nc;
        }
        e = &pl->edits[pl->n_edits];
        e->value = value;
        e->axis = axis;
        e->len = (int)v->shape.d[axis];
        e->mask = sl_calloc((size_t)e->len, 1);
        if (!e->mask) return ERR_NOMEM;
        pl->n_edits++;
    }
    for (int c = 0; c < n_ch; c++)
        if (rm[c]) e->mask[offset + c] = 1;
    return 0;
}

/* Producer, chain norm and uses of one point. */
static int plan_point(Plan *pl, const PrunePoint *pt, const unsigned char *rm)
{
    const Graph *g = pl->g;
    const Node *cv = &g->nodes[pt->conv];
    int rc = plan_mark(pl, cv->in[1], cv->op == OP_CONV ? 0 : 1, 0, rm,
                       pt->channels, cv->name);
    if (!rc && cv->n_in == 3)
        rc = plan_mark(pl, cv->in[2], 0, 0, rm, pt->channels, cv->name);
    if (pt->norm >= 0) {
        const Node *nm = &g->nodes[pt->norm];
        for (int j = 1; !rc && j < nm->n_in; j++)
            rc = plan_mark(pl, nm->in[j], 0, 0, rm, pt->channels, nm->name);
    }
    for (int k = 0; !rc && k < pt->n_uses; k++) {
        const PruneUse *u = &pt->uses[k];
        if (u->kind != PRUNE_USE_CONV && u->kind != PRUNE_USE_CONV_T &&
            u->kind != PRUNE_USE_NORM)
            continue;
        const Node *nd = &g->nodes[u->node];
        if (u->kind == PRUNE_USE_NORM) {
            for (int j = 1; !rc && j < nd->n_in; j++)
                rc = plan_mark(pl, nd->in[j], 0, u->offset, rm, pt->channels,
                               nd->name);
        } else {
            rc = plan_mark(pl, nd->in[1], u->kind == PRUNE_USE_CONV ? 1 : 0,
                           u->offset, rm, pt->channels, nd->name);
        }
    }
    return rc;
}

/* Check one request and turn it into a removal mask. */
static int request_mask(const Graph *g, const PruneGroups *pg,
                        const PruneRequest *r, unsigned char *rm)
{
    const PrunePoint *pt = &pg->points[r->point];
    const Node *cv = &g->nodes[pt->conv];
    const Shape *w = &g->values[cv->in[1]].shape;
    int have = (int)(cv->op == OP_CONV ? w->d[0] : w->d[1]);
    if (have != pt->channels) {
        sl_error("pruning surgery: point %d ('%s') has %d channels, the "
                 "analysis says %d; re-run sauron_find_groups after surgery",
                 r->point, cv->name, have, pt->channels);
        return ERR_FORMAT;
    }
    if (!pt->prunable) {
        sl_error("pruning surgery: point %d ('%s') is not prunable: %s",
                 r->point, cv->name, pt->reason);
        return ERR_ARG;
    }
    if (r->n_remove < 0 || r->n_remove >= pt->channels ||
        (r->n_remove > 0 && !r->remove)) {
        sl_error("pruning surgery: cannot remove %d of the %d channels of "
                 "point %d ('%s'); at least one channel must stay",
                 r->n_remove, pt->channels, r->point, cv->name);
        return ERR_ARG;
    }
    memset(rm, 0, (size_t)pt->channels);
    for (int k = 0; k < r->n_remove; k++) {
        int c = r->remove[k];
        if (c < 0 || c >= pt->channels || rm[c]) {
            sl_error("pruning surgery: channel %d of point %d ('%s') is out "
                     "of range [0,%d) or listed twice",
                     c, r->point, cv->name, pt->channels);
            return ERR_ARG;
        }
        rm[c] = 1;
    }
    return 0;
}

/* Slices from the plan, in one allocation (records, then keep arrays). */
static int plan_slices(const Plan *pl, TensorSlice **out, int *n_out)
{
    size_t n_keep = 0;
    int n = 0;
    for (int k = 0; k < pl->n_edits; k++) {
        int kept = 0;
        for (int i = 0; i < pl->edits[k].len; i++)
            kept += !pl->edits[k].mask[i];
        if (kept < pl->edits[k].len) n++;
        n_keep += (size_t)kept;
    }
    *out = NULL;
    *n_out = 0;
    if (n == 0) return 0;
    TensorSlice *ts = sl_alloc((size_t)n * sizeof *ts + n_keep * sizeof(int));
    if (!ts) return ERR_NOMEM;
    int *keep = (int *)(void *)(ts + n);
    for (int k = 0, s = 0; k < pl->n_edits; k++) {
        const Edit *e = &pl->edits[k];
        int kept = 0;
        for (int i = 0; i < e->len; i++)
            if (!e->mask[i]) keep[kept++] = i;
        if (kept == e->len) continue;
        ts[s++] = (TensorSlice){e->value, e->axis, kept, keep};
        keep += kept;
    }
    *out = ts;
    *n_out = n;
    return 0;
}

static int edit_cmp_ok(const Edit *a, const Edit *b)
{
    return a->value < b->value ||
           (a->value == b->value && a->axis <= b->axis);
}

/* Order edits by (value, axis) so a weight's axis-0 slice comes first. */
static void sort_edits(Plan *pl)
{
    for (int i = 1; i < pl->n_edits; i++) {
        Edit e = pl->edits[i];
        int j = i;
        while (j > 0 && !edit_cmp_ok(&pl->edits[j - 1], &e)) {
            pl->edits[j] = pl->edits[j - 1];
            j--;
        }
        pl->edits[j] = e;
    }
}

int sauron_prune_batch(Graph *g, const PruneGroups *pg,
                       const PruneRequest *req, int n_req,
                       TensorSlice **slices, int *n_slices)
{
    Plan pl = {g, NULL, 0, 0};
    TensorSlice *ts = NULL;
    int n_ts = 0, rc = 0;
    size_t total = 0;
    int *gmask_of =
        NULL; /* group -> offset into masks of its first request */
    unsigned char *masks = NULL, *rm = NULL;
    if (slices) *slices = NULL;
    if (n_slices) *n_slices = 0;
    for (int r = 0; r < n_req; r++) {
        if (req[r].point < 0 || req[r].point >= pg->n_points) {
            sl_error("pruning surgery: point %d does not exist (the model "
                     "has %d points)",
                     req[r].point, pg->n_points);
            return ERR_ARG;
        }
        total += (size_t)pg->points[req[r].point].channels;
    }
    masks = sl_alloc(total + 1);
    gmask_of = sl_alloc(((size_t)pg->n_groups + 1) * sizeof(int));
    if (!masks || !gmask_of) {
        rc = ERR_NOMEM;
        goto fail;
    }
    for (int k = 0; k < pg->n_groups; k++)
        gmask_of[k] = -1;
    /* one mask per group: the first request; later ones must agree */
    for (int r = 0, off = 0; r < n_req; r++) {
        const PrunePoint *pt = &pg->points[req[r].point];
        rm = masks + off;
        if ((rc = request_mask(g, pg, &req[r], rm))) goto fail;
        if (pt->group < 0 || pt->group >= pg->n_groups) {
            rc = ERR_FORMAT;
            sl_error("pruning surgery: point %d has no valid group; re-run "
                     "sauron_find_groups",
                     req[r].point);
            goto fail;
        }
        int *first = &gmask_of[pt->group];
        if (*first < 0) {
            *first = off;
        } else if (memcmp(masks + *first, rm, (size_t)pt->channels)) {
            rc = ERR_ARG;
            sl_error("pruning surgery: point %d is tied by Add to another "
                     "requested point but names other channels; tied points "
                     "lose the same channels",
                     req[r].point);
            goto fail;
        }
        off += pt->channels;
    }
    for (int p = 0; p < pg->n_points; p++) {
        const PrunePoint *pt = &pg->points[p];
        if (pt->group < 0 || pt->group >= pg->n_groups ||
            gmask_of[pt->group] < 0)
            continue;
        if ((rc = plan_point(&pl, pt, masks + gmask_of[pt->group])))
            goto fail;
    }
    sort_edits(&pl);
    if ((rc = plan_slices(&pl, &ts, &n_ts))) goto fail;
    for (int s = 0; s < n_ts; s++)
        if ((rc = tensor_slice_check(&g->values[ts[s].value].shape, &ts[s],
                                     g->values[ts[s].value].name)))
            goto fail;
    /* from here nothing can fail: the graph changes all at once */
    for (int s = 0; s < n_ts; s++) {
        Value *v = &g->values[ts[s].value];
        rc = tensor_slice_apply(&v->data, &v->shape, &ts[s]);
        CHECK(rc == 0);
    }
    plan_free(&pl);
    sl_free(masks);
    sl_free(gmask_of);
    if (slices)
        *slices = ts;
    else
        sl_free(ts);
    if (n_slices) *n_slices = n_ts;
    return 0;
fail:
    if (rc == ERR_NOMEM)
        sl_error("pruning surgery: out of memory; free memory and retry");
    plan_free(&pl);
    sl_free(masks);
    sl_free(gmask_of);
    sl_free(ts);
    return rc;
}

int sauron_prune(Graph *g, const PruneGroups *pg, int point,
                 const int *remove, int n_remove, TensorSlice **slices,
                 int *n_slices)
{
    PruneRequest r = {point, n_remove, remove};
    return sauron_prune_batch(g, pg, &r, 1, slices, n_slices);
}
