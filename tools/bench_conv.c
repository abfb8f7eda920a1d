/* Times each convolution algorithm on 2D 3x3 and 3D 3x3x3 layers (stride
 * 1, pad 1): direct, Winograd F(2x2,3x3) (3D: F(2x2x2,3x3x3)) and
 * F(4x4,3x3) (3D: in-plane, D's taps summed in the GEMMs), best of 15
 * runs on one thread, and prints the algorithm the cost model picks for
 * the layer (winograd.c).  The layers: the shipped model's largest
 * (after Sauron: odd channel counts), dense nnU-Net levels, pruned-style
 * ones, and the levels of a dense 3D U-Net on fewer planes than a 96^3
 * patch (the cost per output does not depend on D).
 *
 *   make bench-conv          (SL_GEMM_ISA=avx2 for the AVX2 kernels)
 *   build/bench/bench_conv IC,OC,H,W[,D] ...   (those layers instead)
 *
 * Used to fit and check winograd.c's F(4x4,3x3) cost constants; run it on
 * an otherwise idle machine. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/common.h"
#include "runtime/ops/ops.h"
#include "runtime/ops/winograd.h"

static double best_ms(ConvAlgo algo, const float *x, float *y, const float *w,
                      const float *b, const Shape *xs, const Shape *ys,
                      const ConvParams *p)
{
    WinoConv *wc = NULL;
    size_t ns;
    if (algo != CONV_ALGO_DIRECT) {
        if (wino_create(&wc, w, xs, ys, p, algo, 1, "bench")) exit(1);
        ns = wino_scratch_floats(wc);
    } else {
        ns = conv_scratch_floats(xs, ys, p);
    }
    float *s = sl_alloc(ns * sizeof(float));
    if (!s) exit(1);
    double best = 1e30;
    for (int r = 0; r < 15; r++) {
        double t = omp_get_wtime();
        if (wc)
            wino_forward(y, x, b, wc, s);
        else
            conv_forward(y, x, w, b, xs, ys, p, s);
        t = omp_get_wtime() - t;
        if (t < best) best = t;
    }
    sl_free(s);
    wino_free(wc);
    return best * 1e3;
}

int main(int argc, char **argv)
{
    /* IC, OC, H, W, D (0: a 2D layer) */
    static int layers[][5] = {
        {35, 58, 112, 96, 0},  {58, 40, 112, 96, 0},  {32, 38, 56, 48, 0},
        {7, 32, 56, 48, 0},    {20, 13, 224, 192, 0}, {13, 9, 224, 192, 0},
        {32, 32, 256, 256, 0}, {64, 64, 128, 128, 0}, {128, 128, 64, 64, 0},
        {256, 256, 32, 32, 0}, {4, 6, 128, 128, 0},   {8, 8, 128, 128, 0},
        {16, 16, 128, 128, 0}, {32, 32, 40, 24, 0},   {16, 16, 96, 96, 8},
        {32, 32, 48, 48, 16},  {64, 64, 24, 24, 24},  {128, 128, 12, 12, 12},
        {8, 8, 96, 96, 8},     {5, 7, 48, 48, 16}};
    static const char *name[] = {"direct", "F(2x2)", "F(4x4)"};
    size_t nl = sizeof layers / sizeof layers[0];
    if (argc > 1) { /* the layers given, in place of the table */
        if ((size_t)(argc - 1) > nl) {
            fprintf(stderr, "bench_conv: at most %zu layers\n", nl);
            return 2;
        }
        nl = (size_t)(argc - 1);
        for (size_t i = 0; i < nl; i++) {
            int *l = layers[i];
            l[4] = 0;
            if (sscanf(argv[i + 1], "%d,%d,%d,%d,%d", &l[0], &l[1], &l[2],
                       &l[3], &l[4]) < 4 ||
                l[0] < 1 || l[1] < 1 || l[2] < 1 || l[3] < 1 || l[4] < 0) {
                fprintf(stderr,
                        "bench_conv: '%s': expected IC,OC,H,W or "
                        "IC,OC,H,W,D (positive integers)\n",
                        argv[i + 1]);
                return 2;
            }
        }
    }
    omp_set_num_threads(1);
    printf("%-18s %9s %9s %9s  %-7s  F4/F2  picked\n", "layer", "direct",
           "F(2x2)", "F(4x4)", "best");
    for (size_t i = 0; i < nl; i++) {
        int IC = layers[i][0], OC = layers[i][1], H = layers[i][2],
            W = layers[i][3], D = layers[i][4];
        Shape xs = {4, {1, IC, H, W}}, ys = {4, {1, OC, H, W}};
        if (D) {
            xs = (Shape){5, {1, IC, D, H, W}};
            ys = (Shape){5, {1, OC, D, H, W}};
        }
        ConvParams p;
        memset(&p, 0, sizeof p);
        p.nsp = D ? 3 : 2;
        p.group = 1;
        for (int d = 0; d < p.nsp; d++) {
            p.kernel[d] = 3;
            p.stride[d] = p.dilation[d] = 1;
            p.pad_lo[d] = p.pad_hi[d] = 1;
        }
        size_t dd = D ? (size_t)D : 1, taps = D ? 27 : 9;
        size_t nx = (size_t)IC * H * W * dd, ny = (size_t)OC * H * W * dd,
               nw = (size_t)OC * IC * taps;
        float *x = sl_alloc(nx * sizeof(float)),
              *y = sl_alloc(ny * sizeof(float)),
              *w = sl_alloc(nw * sizeof(float)),
              *b = sl_alloc((size_t)OC * sizeof(float));
        if (!x || !y || !w || !b) return 1;
        /* real-valued data (random bytes would hold denormals, which
         * slow every path) */
        for (size_t k = 0; k < nx; k++)
            x[k] = (float)(k * 7919 % 1000) / 1000.0f - 0.5f;
        for (size_t k = 0; k < nw; k++)
            w[k] = (float)(k * 104729 % 1000) / 1000.0f - 0.5f;
        for (int k = 0; k < OC; k++)
            b[k] = 0.1f;
        double t[3];
        for (int a = 0; a < 3; a++)
            t[a] = best_ms((ConvAlgo)a, x, y, w, b, &xs, &ys, &p);
        int best = 0;
        for (int a = 1; a < 3; a++)
            if (t[a] < t[best]) best = a;
        ConvAlgo pick;
        if (conv_algo_choose(&xs, &ys, &p, &pick)) return 1;
        char l[32];
        if (D)
            snprintf(l, sizeof l, "%d->%d %dx%dx%d", IC, OC, D, H, W);
        else
            snprintf(l, sizeof l, "%d->%d %dx%d", IC, OC, H, W);
        printf("%-18s %9.3f %9.3f %9.3f  %-7s  %5.2f  %s\n", l, t[0], t[1],
               t[2], name[best], t[2] / t[1], name[pick]);
        sl_free(x);
        sl_free(y);
        sl_free(w);
        sl_free(b);
    }
    return 0;
}
