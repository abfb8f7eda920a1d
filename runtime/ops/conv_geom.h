/* Convolution geometry with every spatial rank padded to 3 dims (missing
 * leading dims have size 1, kernel 1, stride 1, no pad), so the 1D, 2D and
 * 3D cases share one code path.  Used by conv.c and conv_transpose.c, and
 * by their backwards in compressor/grad/ (im2col/col2im), so forward and
 * backward read one description of the geometry. */
#ifndef SL_CONV_GEOM_H
#define SL_CONV_GEOM_H

#include <stdint.h>

#include "../common.h"
#include "../graph.h"

typedef struct {
    int n, ic, oc, group, icg, ocg;
    int in[3], out[3], k[3], s[3], d[3], pad[3], opad[3];
    int64_t in_sp, out_sp, k_sp; /* products over the 3 dims */
} ConvGeom;

/* xs [N,IC,in...] and ys [N,OC,out...]; p->nsp == xs->ndim - 2 (checked
 * by shape inference, so an internal invariant here). */
static inline void conv_geom_fill(ConvGeom *g, const Shape *xs,
                                  const Shape *ys, const ConvParams *p)
{
    CHECK(p->nsp >= 1 && p->nsp <= 3 && xs->ndim == p->nsp + 2 &&
          ys->ndim == xs->ndim && p->group >= 1);
    g->n = (int)xs->d[0];
    g->ic = (int)xs->d[1];
    g->oc = (int)ys->d[1];
    g->group = p->group;
    g->icg = g->ic / p->group;
    g->ocg = g->oc / p->group;
    int off = 3 - p->nsp;
    for (int i = 0; i < 3; i++) {
        int j = i - off; /* index into the params, < 0 for padding dims */
        g->in[i] = j < 0 ? 1 : (int)xs->d[2 + j];
        g->out[i] = j < 0 ? 1 : (int)ys->d[2 + j];
        g->k[i] = j < 0 ? 1 : p->kernel[j];
        g->s[i] = j < 0 ? 1 : p->stride[j];
        g->d[i] = j < 0 ? 1 : p->dilation[j];
        g->pad[i] = j < 0 ? 0 : p->pad_lo[j];
        g->opad[i] = j < 0 ? 0 : p->out_pad[j];
    }
    g->in_sp = (int64_t)g->in[0] * g->in[1] * g->in[2];
    g->out_sp = (int64_t)g->out[0] * g->out[1] * g->out[2];
    g->k_sp = (int64_t)g->k[0] * g->k[1] * g->k[2];
}

/* Shape-inference checks shared by Conv (transpose = 0) and ConvTranspose
 * (defined in conv.c): input count, ranks, attribute ranges, kernel equal
 * to the weight's spatial dims, bias length.  0 or ERR_SHAPE (message
 * printed, naming the node). */
int conv_check_common(const Graph *g, const Node *n, int transpose);
/* The GEMMs index with int: 0, or ERR_SHAPE if any of the per-sample
 * GEMM sizes a, b, c exceeds 2^30. */
int conv_check_int_range(const Node *n, const char *opname, int64_t a,
                         int64_t b, int64_t c);

#endif
