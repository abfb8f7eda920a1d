/* What a channel costs: FLOPs-aware pruning rules (--cost-rule).
 *
 * Sauron's distances say which feature maps are redundant, not what they
 * cost.  A channel of a full-resolution layer costs (at equal fan-in)
 * 4^l times one of a layer l levels deeper in 2D, so a rule that treats
 * every layer alike removes the deep layers' parameters long before the
 * shallow layers' FLOPs.  The rules here put the cost into the decision:
 *
 *   f_k   FLOPs one channel of point k's group costs: the graph's FLOPs
 *         (one sample) minus the FLOPs with one channel of that group
 *         removed (its filter, its norm and activation entries, and the
 *         input channel of every consumer).  Convolution FLOPs are linear
 *         in each channel count, so this is exact for every channel of
 *         the group, not an estimate.
 *
 *   SAURON_COST_TAU   ("tau"): point k prunes with threshold
 *         tau_k * s_k, s_k = sqrt(f_k / G), G the geometric mean of f over
 *         the groups with more than one channel, capped at 1 (distances
 *         lie in [0, 1]).  Layers whose channels cost more than the
 *         typical one prune at a higher threshold, the cheap ones at a
 *         lower one; the product of the s_k is 1, so the ladder keeps its
 *         meaning "on average".  sqrt: in a 2D U-Net f halves per level
 *         (a quarter of the pixels, twice the fan-in), so the full- and
 *         the deepest layer of a 5-level net get s = 2 and 1/2 (a linear
 *         scale would give 4 and 1/4 and send the full-resolution layers
 *         past any sensible threshold at tau 0.3).
 *
 *   SAURON_COST_GUARD ("guard"): the pruning guard (--prune-guard) tries
 *         the step's removals in order of the FLOPs they save, largest
 *         first (ties: point order), instead of point order.  The guard
 *         bounds the step's total change of the calibration segmentation,
 *         so the removals tried first get the tolerance: this spends it
 *         where it buys the most FLOPs.  No effect without the guard.
 *
 *   SAURON_COST_ALL   ("all"): both.
 *
 * The paper schedule never uses them (--schedule paper stays as
 * published: pruner_config_check refuses the combination).
 */
#ifndef SL_SAURON_COST_H
#define SL_SAURON_COST_H

#include <stdint.h>

#include "compressor/sauron/groups.h"
#include "compressor/sauron/surgery.h"
#include "runtime/graph.h"

typedef enum {
    SAURON_COST_NONE = 0, /* default: Sauron as published */
    SAURON_COST_TAU = 1,
    SAURON_COST_GUARD = 2,
    SAURON_COST_ALL = 3, /* TAU | GUARD */
} SauronCostRule;

/* "none", "tau", "guard", "all" -> rule; -1 if unknown. */
int sauron_cost_rule_parse(const char *s);
const char *sauron_cost_rule_name(int rule);

/* f = FLOPs per channel of point k's group for input shape in1 (batch 1):
 * flops(g) - flops(g with one channel of k's group removed), computed on
 * a copy (g is not changed, its shapes included).  *f = 0 for a point
 * with one channel or not prunable.  Returns 0, ERR_NOMEM, or a surgery /
 * shape error code (message printed). */
int sauron_channel_flops(const Graph *g, const PruneGroups *pg, int k,
                         const Shape *in1, int64_t *f);

/* s[i] = sqrt(f[i] / G) with G the geometric mean of the positive f[i];
 * s[i] = 1 where f[i] <= 0 (nothing to scale).  The caller caps
 * tau * s[i] at 1.  n >= 0. */
void sauron_cost_scales(double *s, const int64_t *f, int n);

/* order[0..n) = indices of the n requests sorted by saved[i] descending,
 * ties by index (stable).  saved[i] = FLOPs request i saves. */
void sauron_cost_order(int *order, const double *saved, int n);

#endif
