/* Optimisers (PyTorch semantics), learning-rate schedule, gradient
 * clipping, and per-parameter state keyed by graph value index.
 *
 * Adam (torch.optim.Adam, not AdamW: weight decay is L2 added to the
 * gradient):
 *   g = grad + wd * w;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
 *   w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 *   defaults lr 1e-3, betas 0.9 / 0.999, eps 1e-8, wd 1e-5 (Sauron's).
 * SGD with Nesterov momentum (torch.optim.SGD, dampening 0):
 *   g = grad + wd * w;  buf = g at the first step, else mu buf + g;
 *   w -= lr * (g + mu buf)       (without nesterov: w -= lr * buf)
 *   defaults lr 1e-2, mu 0.99, wd 3e-5 (nnU-Net's).
 * Step counts are per parameter, as PyTorch keeps them.
 *
 * State: per parameter value index, arrays shaped like the parameter
 * (Adam m and v; SGD momentum buffer) and the step count.  It is created
 * at a parameter's first step.  Pruning surgery slices it with the same
 * TensorSlice list it applies to the weights (optim_slice_all); a state
 * whose shape no longer matches its parameter is an error (ERR_SHAPE)
 * rather than a silent reset.
 *
 * All updates are elementwise in float32 as PyTorch's single-tensor path;
 * results do not depend on the thread count.
 */
#ifndef SL_TRAIN_OPTIM_H
#define SL_TRAIN_OPTIM_H

#include <stdint.h>

#include "compressor/train/params.h"
#include "compressor/train/slice.h"

typedef enum { OPTIM_ADAM, OPTIM_SGD } OptimKind;

typedef struct {
    OptimKind kind;
    float lr;                /* base learning rate (before the schedule) */
    float weight_decay;      /* L2 coefficient added to the gradient */
    float beta1, beta2, eps; /* Adam */
    float momentum;          /* SGD */
    int nesterov;            /* SGD */
} OptimOptions;

/* Defaults listed above for the given kind. */
void optim_options_default(OptimOptions *o, OptimKind kind);

/* Iterations up to which a fine-tuning run takes Adam's full default rate. */
#define OPTIM_ADAM_FULL_RATE_ITERS 1000

/* The default learning rate of a fine-tuning run of `iters` iterations.
 * Adam: 1e-3 up to OPTIM_ADAM_FULL_RATE_ITERS iterations, then
 * 1e-3 x OPTIM_ADAM_FULL_RATE_ITERS / iters.  SGD: 1e-2 at any length. */
float optim_default_lr(OptimKind kind, long long iters);

typedef struct {
    int value;   /* graph value index */
    Shape shape; /* the parameter's shape when last stepped or sliced */
    int64_t numel;
    int64_t step; /* steps taken */
    float *m;     /* Adam first moment, or SGD momentum buffer */
    float *v;     /* Adam second moment (NULL for SGD) */
} OptimState;

typedef struct Optim Optim;

/* Returns 0 or ERR_NOMEM / ERR_ARG (bad options), with a message. */
int optim_create(const OptimOptions *o, Optim **out);
void optim_free(Optim *opt);
const OptimOptions *optim_options(const Optim *opt);

/* One update of every parameter with learning rate lr (from
 * optim_poly_lr): reads p[i].grad, writes p[i].data.  Returns 0,
 * ERR_NOMEM (new state) or ERR_SHAPE (state shape differs from the
 * parameter's: slice the state when pruning), with a message. */
int optim_step(Optim *opt, const TrainParam *p, int n, float lr);

/* Slice the state of ts->value (if it has any) like the weight; applies
 * ts to m and v.  optim_slice_all applies a whole surgery list in order.
 * Returns 0 or ERR_ARG (bad slice; message). */
int optim_slice(Optim *opt, const TensorSlice *ts);
int optim_slice_all(Optim *opt, const TensorSlice *ts, int n);
/* Graph value indices changed (surgery compacted the value table):
 * new_index[old] is the new index or -1 to drop that state. */
void optim_remap(Optim *opt, const int *new_index, int n_old);

/* State access (checkpoints, tests): count, i-th entry, or by value. */
int optim_n_states(const Optim *opt);
OptimState *optim_state(Optim *opt, int i);
OptimState *optim_find(Optim *opt, int value);

/* Polynomial decay: base * (1 - epoch / epochs)^0.9 (epoch 0-based; 0 at
 * or past the end). */
float optim_poly_lr(float base, int epoch, int epochs);

/* Global L2 norm of all gradients (double, fixed order); if max_norm > 0
 * and the norm exceeds it, scale every gradient by max_norm / (norm +
 * 1e-6), as torch.nn.utils.clip_grad_norm_.  Returns the norm before
 * clipping (NaN/inf passes through so the caller can stop the run). */
double optim_clip_grad_norm(TrainParam *p, int n, double max_norm);

#endif
