/* Channel dependencies of a graph: where Sauron may remove channels.
 *
 * A prunable point is the last tensor of a chain
 *   Conv | ConvTranspose  ->  [InstanceNorm | BatchNorm]  ->  [Relu |
 * LeakyRelu] in which every intermediate tensor has exactly one consumer (the
 * next node of the chain).  Channel c of the point is output filter c of the
 * chain's convolution, so removing it removes one filter.
 *
 * From each point its channels are followed forward through Concat (the
 * channels move to an offset: the sum of the channel counts of the Concat
 * inputs before it, in the graph's order), through channel-preserving ops
 * (Resize input 0, MaxPool, AveragePool, Relu, LeakyRelu, Sigmoid,
 * Identity, InstanceNorm and BatchNorm, whose per-channel parameters are
 * then sliced too) and through Add, up to the uses that must be edited
 * when a channel goes: a Conv or ConvTranspose that reads the channels
 * (input channels sliced at the offset) or a graph output (which makes the
 * point not prunable).
 *
 * Add ties its inputs channel by channel: points whose channels meet in an
 * Add form one group and must lose the same channels, or none.  A group
 * with any member not prunable is not prunable as a whole.
 *
 * Not prunable, with a reason: class heads (a point whose channels are a
 * whole graph output, possibly through Softmax/Sigmoid/Resize; every
 * deep-supervision head), grouped convolutions (group > 1) as producer or
 * consumer, points that reach a graph output any other way or a Softmax
 * (it couples channels), Concat along another axis, Add with a weight
 * operand or with misaligned channels, weights shared by several nodes,
 * single-channel points.
 *
 * Channel counts come from the weights (no shape inference needed).
 * Point numbering follows node order, so it stays the same after surgery
 * (which changes sizes, not structure): re-run sauron_find_groups after
 * each surgery to get the new channel counts and offsets.
 */
#ifndef SL_SAURON_GROUPS_H
#define SL_SAURON_GROUPS_H

#include <stdio.h>

#include "runtime/graph.h"

typedef enum {
    PRUNE_USE_CONV,    /* Conv input channels: W [OC, IC/g, K...] axis 1 */
    PRUNE_USE_CONV_T,  /* ConvTranspose input channels: W [IC, ...] axis 0 */
    PRUNE_USE_NORM,    /* norm on the path: scale/bias (/mean/var) axis 0 */
    PRUNE_USE_OUTPUT,  /* graph output `output` (blocks pruning) */
    PRUNE_USE_SOFTMAX, /* Softmax over channels (blocks pruning) */
} PruneUseKind;

typedef struct {
    PruneUseKind kind;
    int node;   /* consumer node index; -1 for PRUNE_USE_OUTPUT */
    int output; /* graph output index for PRUNE_USE_OUTPUT, else -1 */
    int offset; /* where the point's channel 0 sits in that input (or
                   output) along the channel axis */
} PruneUse;

#define PRUNE_REASON_LEN 160

typedef struct {
    int value;    /* the point's tensor (graph value index) */
    int conv;     /* producer Conv / ConvTranspose node */
    int norm;     /* norm node of the chain, or -1 */
    int act;      /* activation node of the chain, or -1 */
    int channels; /* current channel count (= producer's filters) */
    int n_uses;
    PruneUse *uses; /* owned */
    int group;      /* group id in [0, n_groups); Add-tied points share it */
    int prunable;   /* 0: see reason */
    int head;       /* 1 if a class head (never pruned) */
    char reason[PRUNE_REASON_LEN]; /* why not prunable ("" if prunable) */
} PrunePoint;

typedef struct {
    int n_points;
    PrunePoint *points; /* owned, in node order of the producers */
    int n_groups;
} PruneGroups;

/* Analyse g, a graph that passed graph_validate (weights must be present;
 * activation shapes are not needed).
 * out is overwritten (call sauron_groups_free on a previous result
 * first).  Returns 0, ERR_NOMEM, or ERR_FORMAT for a graph whose channel
 * counts do not add up (message names the node).  A graph without any
 * prunable point is not an error: every point then has its reason. */
int sauron_find_groups(const Graph *g, PruneGroups *out);
void sauron_groups_free(PruneGroups *pg);

/* Number of prunable points. */
int sauron_groups_prunable(const PruneGroups *pg);

/* Human-readable listing (sauron-inspect --groups): each point with its
 * channels, producer/norm/activation nodes, uses with offsets, group id,
 * or why it is excluded; then a summary line. */
void sauron_groups_print(FILE *f, const Graph *g, const PruneGroups *pg);

#endif
