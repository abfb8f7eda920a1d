/* A trainable parameter as the training executor exposes it and the
 * optimiser consumes it.  Kept in its own header so optim.h does not
 * depend on the executor. */
#ifndef SL_TRAIN_PARAMS_H
#define SL_TRAIN_PARAMS_H

#include <stdint.h>

#include "runtime/graph.h"

typedef struct {
    int value;     /* graph value index (key of all per-parameter state) */
    Shape shape;   /* the value's shape */
    int64_t numel; /* shape_numel(&shape) */
    float *data;   /* g->values[value].data: borrowed from the Graph */
    float *grad;   /* d loss / d data, numel floats, owned by the executor */
} TrainParam;

#endif
