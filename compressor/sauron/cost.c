/* FLOPs per channel and the FLOPs-aware pruning rules (cost.h). */
#include <math.h>
#include <string.h>

#include "compressor/sauron/cost.h"
#include "runtime/common.h"

static const char *const rule_names[] = {"none", "tau", "guard", "all"};

int sauron_cost_rule_parse(const char *s)
{
    for (int k = 0; k < 4; k++)
        if (!strcmp(s, rule_names[k])) return k;
    return -1;
}

const char *sauron_cost_rule_name(int rule)
{
    return rule >= 0 && rule < 4 ? rule_names[rule] : "?";
}

/* FLOPs of g for in1, quietly (-1 on a shape error). */
static int64_t flops_of(Graph *g, const Shape *in1)
{
    int q = sl_error_is_quiet();
    sl_error_quiet(1);
    int rc = graph_infer_shapes(g, in1);
    sl_error_quiet(q);
    return rc ? -1 : graph_flops(g);
}

int sauron_channel_flops(const Graph *g, const PruneGroups *pg, int k,
                         const Shape *in1, int64_t *f)
{
    *f = 0;
    const PrunePoint *pt = &pg->points[k];
    if (!pt->prunable || pt->channels <= 1) return 0;
    Graph c;
    graph_init(&c);
    int rc = ERR_NOMEM;
    if (graph_clone(&c, g)) {
        sl_error("out of memory measuring what a channel costs");
        goto done;
    }
    int64_t before = flops_of(&c, in1);
    /* the last channel: any one costs the same (linear in the count) */
    int last = pt->channels - 1;
    rc = sauron_prune(&c, pg, k, &last, 1, NULL, NULL);
    if (rc) goto done;
    int64_t after = flops_of(&c, in1);
    if (before < 0 || after < 0) {
        sl_error("cannot infer the shapes of the network at the calibration "
                 "size while measuring FLOPs per channel");
        rc = ERR_SHAPE;
        goto done;
    }
    *f = before - after;
    rc = 0;
done:
    graph_free(&c);
    return rc;
}

void sauron_cost_scales(double *s, const int64_t *f, int n)
{
    double logsum = 0;
    int used = 0;
    for (int i = 0; i < n; i++)
        if (f[i] > 0) {
            logsum += log((double)f[i]);
            used++;
        }
    double lg = used ? logsum / used : 0.0;
    for (int i = 0; i < n; i++)
        s[i] = f[i] > 0 ? exp(0.5 * (log((double)f[i]) - lg)) : 1.0;
}

void sauron_cost_order(int *order, const double *saved, int n)
{
    /* insertion sort: stable, n is the number of layers */
    for (int i = 0; i < n; i++) {
        int j = i;
        for (; j > 0 && saved[order[j - 1]] < saved[i]; j--)
            order[j] = order[j - 1];
        order[j] = i;
    }
}
