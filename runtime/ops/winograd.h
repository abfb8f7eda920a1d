/* Winograd convolution: F(2x2,3x3) or F(4x4,3x3) for 2D 3x3 layers, and
 * F(2x2x2,3x3x3) or F(4x4,3x3) in-plane with D's 3 taps summed in the
 * GEMMs for 3D 3x3x3 ones (a 1x3x3 layer of a 3D model runs as a 2D one
 * on each plane).  Stride 1, dilation 1, one group, any zero padding.
 *
 * A WinoConv is made once per layer and input shape (the executor does it
 * at exec_create): it holds the transformed weights, so later changes to
 * the weight tensor are not seen.  wino_forward computes what
 * conv_forward computes (bias included), within float rounding of the
 * transforms (see winograd.c for the bound), and bit-identical for any
 * thread count.
 */
#ifndef SL_WINOGRAD_H
#define SL_WINOGRAD_H

#include <stddef.h>

#include "../graph.h"

typedef struct WinoConv WinoConv;

/* WINOGRAD: F(2,3) per convolved dim; WINOGRAD4: F(4x4,3x3) along H and
 * W (a convolved D dim: its 3 taps summed in the GEMMs). */
typedef enum {
    CONV_ALGO_DIRECT,
    CONV_ALGO_WINOGRAD,
    CONV_ALGO_WINOGRAD4
} ConvAlgo;

/* 1 if the layer x [N,IC,in...] -> y [N,OC,out...] can run as Winograd. */
int wino_eligible(const Shape *xs, const Shape *ys, const ConvParams *p);

/* How the executor runs this layer: the cost model of winograd.c,
 * overridden by the environment variable
 * SL_CONV_ALGO=direct|winograd|winograd4|auto (winograd: F(2,3) on every
 * eligible layer; winograd4: F(4x4,3x3) on every eligible layer).
 * Deterministic: a function of the shapes, the CPU's GEMM kernel
 * (SL_GEMM_ISA) and the variable, not of the thread count (outputs stay
 * bit-identical across thread counts). Returns 0 and sets *algo, or ERR_ARG
 * (message printed) when the variable holds anything else. */
int conv_algo_choose(const Shape *xs, const Shape *ys, const ConvParams *p,
                     ConvAlgo *algo);

/* Transform w [OC,IC,K...] for an eligible layer (wino_eligible) run as
 * algo (WINOGRAD or WINOGRAD4) with n_threads threads.  Returns 0, or
 * ERR_NOMEM (message printed, naming `name`).  *out is owned by the caller:
 * wino_free. */
int wino_create(WinoConv **out, const float *w, const Shape *xs,
                const Shape *ys, const ConvParams *p, ConvAlgo algo,
                int n_threads, const char *name);
void wino_free(WinoConv *wc);
/* Bytes of its transformed weights. */
size_t wino_weight_bytes(const WinoConv *wc);

/* Scratch floats wino_forward needs (valid under any thread count). */
size_t wino_scratch_floats(const WinoConv *wc);

/* y [N,OC,out...] = conv(x [N,IC,in...]) + b [OC] (b may be NULL) for the
 * shapes wc was made for; scratch: wino_scratch_floats(wc). */
void wino_forward(float *y, const float *x, const float *b,
                  const WinoConv *wc, float *scratch);

#endif
