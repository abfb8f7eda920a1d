/* Pruning surgery: physically remove channels of prunable points.
 *
 * Removing channel c of a point (compressor/sauron/groups.h) edits
 *   - the producer: Conv W [OC, IC/g, K...] axis 0, or ConvTranspose
 *     W [IC, OC, K...] axis 1 (group 1), and its bias [OC];
 *   - the chain's norm: scale and bias [C] (BatchNorm also running mean
 *     and variance);
 *   - every use at its channel offset: Conv W axis 1, ConvTranspose W
 *     axis 0, the per-channel parameters of norms on the way.
 * Points tied by Add (same group) lose the same channels together.  A
 * point never goes below one channel.
 *
 * The edits are returned as TensorSlice records (compressor/train/slice.h)
 * in the order they were applied, so that the caller can apply exactly
 * the same slices to optimiser state and gradients keyed by value index.
 * A weight sliced along two axes (a Conv that is a producer and a use)
 * gets two records, axis 0 first.
 *
 * All checks and allocations happen before the first edit: on any error
 * the graph is unchanged.  After surgery the activation shapes are stale:
 * the caller re-runs graph_infer_shapes, and sauron_find_groups for the
 * new channel counts and offsets (point numbering is unchanged).
 */
#ifndef SL_SAURON_SURGERY_H
#define SL_SAURON_SURGERY_H

#include "compressor/sauron/groups.h"
#include "compressor/train/slice.h"
#include "runtime/graph.h"

typedef struct {
    int point;         /* index into pg->points */
    int n_remove;      /* 0 .. channels - 1 */
    const int *remove; /* distinct channel indices of that point, any order */
} PruneRequest;

/* Apply several requests at once.  pg must describe g as it is now (from
 * sauron_find_groups on the current graph).  A request on a tied point
 * applies to its whole group; two requests on one group must name the
 * same channels.
 *
 * slices/n_slices (either may be NULL if not wanted): on success
 * *slices is one allocation holding the records and their keep[] arrays
 * (free with sl_free(*slices)), NULL when nothing was removed.
 *
 * Returns 0, ERR_ARG (point not prunable: message gives the reason;
 * channel index out of range or repeated; would remove every channel;
 * conflicting requests on one group), ERR_FORMAT (pg does not match g:
 * re-run sauron_find_groups), ERR_NOMEM.  On error g is unchanged. */
int sauron_prune_batch(Graph *g, const PruneGroups *pg,
                       const PruneRequest *req, int n_req,
                       TensorSlice **slices, int *n_slices);

/* One point (and its Add group). */
int sauron_prune(Graph *g, const PruneGroups *pg, int point,
                 const int *remove, int n_remove, TensorSlice **slices,
                 int *n_slices);

#endif
