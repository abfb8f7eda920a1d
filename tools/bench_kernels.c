/* bench-kernels: GFLOP/s of the convolution kernels on representative
 * layers of a dense 2D nnU-Net (input 1x1x256x256), a 3D one (patch
 * 96^3), and pruned small-channel layers, with 1 and 2 threads (or
 * --threads N for the second column).  Each number is the best of
 * several runs.  Not part of `make test`.
 *
 * usage: bench-kernels [--quick] [--threads N] [--filter SUBSTRING]
 *                      [--cputime]
 * --cputime times by process CPU time instead of wall clock: on a shared,
 * busy machine the 1-thread column then stays meaningful (the 2-thread
 * one then counts both threads' time, spinning included).
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/common.h"
#include "runtime/ops/gemm_core.h"
#include "runtime/ops/ops.h"

typedef struct {
    const char *name;
    int transpose, nsp, ic, oc, in, k, s, pad;
} Layer;

static const Layer layers[] = {
    /* 2D nnU-Net, features 32..320, 256x256 input */
    {"2d first 1->32 3x3 @256", 0, 2, 1, 32, 256, 3, 1, 1},
    {"2d 32->32 3x3 @256", 0, 2, 32, 32, 256, 3, 1, 1},
    {"2d 32->64 3x3 s2 @256", 0, 2, 32, 64, 256, 3, 2, 1},
    {"2d 64->64 3x3 @128", 0, 2, 64, 64, 128, 3, 1, 1},
    {"2d 128->128 3x3 @64", 0, 2, 128, 128, 64, 3, 1, 1},
    {"2d 256->256 3x3 @32", 0, 2, 256, 256, 32, 3, 1, 1},
    {"2d 320->320 3x3 @16", 0, 2, 320, 320, 16, 3, 1, 1},
    {"2d 320->320 3x3 @8", 0, 2, 320, 320, 8, 3, 1, 1},
    {"2d 64->32 convT 2x2 s2 @128", 1, 2, 64, 32, 128, 2, 2, 0},
    {"2d 320->256 convT 2x2 s2 @16", 1, 2, 320, 256, 16, 2, 2, 0},
    {"2d head 32->3 1x1 @256", 0, 2, 32, 3, 256, 1, 1, 0},
    /* pruned */
    {"2d pruned 4->4 3x3 @256", 0, 2, 4, 4, 256, 3, 1, 1},
    {"2d pruned 8->8 3x3 @256", 0, 2, 8, 8, 256, 3, 1, 1},
    {"2d pruned 12->20 3x3 @128", 0, 2, 12, 20, 128, 3, 1, 1},
    /* 3D nnU-Net, patch 96^3 */
    {"3d first 1->16 3x3x3 @96", 0, 3, 1, 16, 96, 3, 1, 1},
    {"3d 16->16 3x3x3 @96", 0, 3, 16, 16, 96, 3, 1, 1},
    {"3d 32->32 3x3x3 @48", 0, 3, 32, 32, 48, 3, 1, 1},
    {"3d 64->64 3x3x3 @24", 0, 3, 64, 64, 24, 3, 1, 1},
    {"3d 128->128 3x3x3 @12", 0, 3, 128, 128, 12, 3, 1, 1},
    {"3d 320->320 3x3x3 @6", 0, 3, 320, 320, 6, 3, 1, 1},
    {"3d 16->32 3x3x3 s2 @96", 0, 3, 16, 32, 96, 3, 2, 1},
    {"3d 32->16 convT 2x2x2 s2 @48", 1, 3, 32, 16, 48, 2, 2, 0},
    {"3d pruned 8->8 3x3x3 @96", 0, 3, 8, 8, 96, 3, 1, 1},
};

static void layer_shapes(const Layer *l, Shape *xs, Shape *ws, Shape *ys,
                         ConvParams *p)
{
    memset(p, 0, sizeof *p);
    p->nsp = l->nsp;
    p->group = 1;
    xs->ndim = ws->ndim = ys->ndim = l->nsp + 2;
    xs->d[0] = ys->d[0] = 1;
    xs->d[1] = l->ic;
    ys->d[1] = l->oc;
    ws->d[0] = l->transpose ? l->ic : l->oc;
    ws->d[1] = l->transpose ? l->oc : l->ic;
    for (int i = 0; i < l->nsp; i++) {
        p->kernel[i] = l->k;
        p->stride[i] = l->s;
        p->dilation[i] = 1;
        p->pad_lo[i] = p->pad_hi[i] = l->pad;
        xs->d[2 + i] = l->in;
        ws->d[2 + i] = l->k;
        ys->d[2 + i] = l->transpose ? l->s * (l->in - 1) + l->k - 2 * l->pad
                                    : (l->in + 2 * l->pad - l->k) / l->s + 1;
    }
}

static double layer_flops(const Layer *l, const Shape *xs, const Shape *ys)
{
    double f = 2.0 * l->ic * l->oc;
    const Shape *sp = l->transpose ? xs : ys; /* MACs actually performed */
    for (int i = 0; i < l->nsp; i++)
        f *= (double)sp->d[2 + i] * l->k;
    return f;
}

/* Best seconds over runs (at least 2, until ~budget seconds). */
static double now(int cputime)
{
    if (!cputime) return sl_now();
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double time_layer(int cputime, const Layer *l, float *y,
                         const float *x, const float *w, const float *b,
                         const Shape *xs, const Shape *ys,
                         const ConvParams *p, float *scratch, double budget)
{
    double best = 1e30, spent = 0;
    for (int r = 0; r < 20 && (r < 2 || spent < budget); r++) {
        double t0 = now(cputime);
        if (l->transpose)
            conv_transpose_forward(y, x, w, b, xs, ys, p, scratch);
        else
            conv_forward(y, x, w, b, xs, ys, p, scratch);
        double t = now(cputime) - t0;
        spent += t;
        if (r > 0 && t < best) best = t; /* run 0 warms caches and pages */
    }
    return best;
}

int main(int argc, char **argv)
{
    int quick = 0, threads2 = 2, cputime = 0;
    const char *filter = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--cputime"))
            cputime = 1;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads2 = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--filter") && i + 1 < argc)
            filter = argv[++i];
        else {
            fprintf(stderr, "usage: bench-kernels [--quick] [--threads N] "
                            "[--filter SUBSTRING] [--cputime]\n");
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    if (threads2 < 1) threads2 = 1;
    printf("micro-kernel: %s; GFLOP/s, best of runs (%s time)\n",
           gemm_isa_name(gemm_isa_best()), cputime ? "CPU" : "wall");
    printf("%-32s %9s %9s %9s %10s\n", "layer", "GFLOP", "1 thr",
           threads2 == 2 ? "2 thr" : "N thr", "scratch MB");
    double tot_f = 0, tot_t[2] = {0, 0};
    for (size_t li = 0; li < sizeof layers / sizeof layers[0]; li++) {
        const Layer *l = &layers[li];
        if (filter && !strstr(l->name, filter)) continue;
        Shape xs, ws, ys;
        ConvParams p;
        layer_shapes(l, &xs, &ws, &ys, &p);
        size_t nx = (size_t)shape_numel(&xs), nw = (size_t)shape_numel(&ws);
        size_t ny = (size_t)shape_numel(&ys);
        size_t ns = l->transpose ? conv_transpose_scratch_floats(&xs, &ys, &p)
                                 : conv_scratch_floats(&xs, &ys, &p);
        float *x = sl_alloc(nx * 4), *w = sl_alloc(nw * 4);
        float *b = sl_alloc((size_t)l->oc * 4), *y = sl_alloc(ny * 4);
        float *scratch = sl_alloc((ns ? ns : 1) * 4);
        if (!x || !w || !b || !y || !scratch) {
            fprintf(stderr, "error: out of memory for layer %s\n", l->name);
            return 1;
        }
        for (size_t i = 0; i < nx; i++)
            x[i] = (float)(i % 17) * 0.05f - 0.4f;
        for (size_t i = 0; i < nw; i++)
            w[i] = (float)(i % 13) * 0.01f - 0.06f;
        for (int i = 0; i < l->oc; i++)
            b[i] = 0.1f;
        double f = layer_flops(l, &xs, &ys), t[2];
        for (int ti = 0; ti < 2; ti++) {
            omp_set_num_threads(ti == 0 ? 1 : threads2);
            t[ti] = time_layer(cputime, l, y, x, w, b, &xs, &ys, &p, scratch,
                               quick ? 0.1 : 0.6);
            tot_t[ti] += t[ti];
        }
        tot_f += f;
        printf("%-32s %9.3f %9.1f %9.1f %10.1f\n", l->name, f * 1e-9,
               f / t[0] * 1e-9, f / t[1] * 1e-9, (double)ns * 4e-6);
        fflush(stdout);
        sl_free(x);
        sl_free(w);
        sl_free(b);
        sl_free(y);
        sl_free(scratch);
    }
    if (tot_f > 0)
        printf("%-32s %9.3f %9.1f %9.1f\n", "all listed (time-weighted)",
               tot_f * 1e-9, tot_f / tot_t[0] * 1e-9,
               tot_f / tot_t[1] * 1e-9);
    return 0;
}
