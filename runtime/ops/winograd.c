/* Winograd minimal filtering (Lavin and Gray, "Fast algorithms for
 * convolutional neural networks", 2016): F(2,3) along each convolved dim,
 * or F(4,3) along H and W with a convolved D dim's 3 taps summed
 * directly (below).
 *
 * Dimension letters: N batch, IC/OC channels, D H W spatial (padded to 3
 * dims, conv_geom.h), T tiles, E transform elements.
 *
 * Along one dim, 2 outputs of a 3-tap filter g over 4 inputs d are
 *   y = A^T [ (G g) .* (B^T d) ]
 * with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],
 *      G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1],
 *      A^T = [1 1 1 0; 0 1 -1 -1],
 * and the 2D/3D forms apply these along each dim: a tile of 2x2 (2x2x2)
 * outputs needs 16 (64) products per channel pair instead of 36 (216).
 * F(4,3) takes 4 outputs from 6 inputs (matrices at WINO_BT6 below and
 * wino_g4): a 4x4 tile needs 36 products instead of 144.  Summed over
 * input channels, the products of transform element e are one GEMM per
 * element:
 *   M[e][OC, T] = U[e][OC, IC] * V[e][IC, T],
 * U the transformed weights (once, at wino_create), V the transformed
 * input tiles.  The outputs are A^T M A plus the bias.
 *
 * Rounding.  F(2,3)'s entries are 0, +-1/2, +-1, so V, U and the output
 * transform add a few roundings of values of the output's size
 * (tests/test_winograd.c: at most ~2x the direct path's error).  F(4,3)
 * also interpolates at +-2, with entries up to 8 (and 1/6, 1/24 in G):
 * its error is larger, up to ~40x the direct path's on those tests, still
 * below 1e-4 of the output scale they check.
 *
 * 3x3x3 layers with F(4x4,3x3): a full F(4,3) cube would need 216
 * elements per tile, and transforms that cost more than they save at the
 * 16-32 channels of a 3D U-Net's large levels.  Instead each output plane
 * takes F(4x4,3x3) in-plane and sums D's 3 taps inside the GEMMs: the
 * inner size becomes 3 * IC (input plane z-1+kz for tap kz), 36 x 3
 * products per 16 outputs against 27 x 16 direct.  Each input plane is
 * transformed once per chunk of output planes (run_chunk_d), so the input
 * transforms cost about what they cost in 2D.
 *
 * Work is cut into chunks of tiles (a multiple of the micro-kernel's NR
 * columns): one thread transforms a chunk's input tiles straight into
 * the GEMM's packed panel layout ([E][panel][IC][NR]), runs the E GEMMs
 * on the existing micro-kernels with U prepacked ([E][OC/MR][IC][MR]),
 * and applies the output transform while the chunk is in its cache.
 * Every output depends only on its own tile (the micro-kernels sum each
 * column in a fixed order, gemm_prepacked_serial), so the chunk size and
 * the thread that runs a chunk change nothing: results are bit-identical
 * for any thread count.
 */
#include "winograd.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../common.h"
#include "conv_geom.h"
#include "gemm_core.h"
#include "vecmath.h"

#if SL_ISA_X86
#include <immintrin.h>
#endif

/* Widest micro-kernel column count (gemm.c: 8, 16 or 32). */
#define WINO_NR_MAX 32
/* Per-thread chunk budget: V and M of a chunk in 256 Ki floats (1 MiB,
 * this machine's L2 per core), so the output transform reads M from L2. */
#define WINO_CHUNK_FLOATS (256 * 1024)

struct WinoConv {
    ConvGeom g;
    int m;            /* outputs per tile along H and W: 2 or 4 */
    int ti[3], to[3]; /* input / output tile extent per dim: m+2/m or 1/1 */
    int nt[3];        /* tiles per dim */
    int ne, nrow;     /* transform elements, input rows per tile */
    int kd;           /* D taps summed in the GEMMs (3: F(4x4,3x3) of a
                         3x3x3 layer, D direct; else 1) */
    int kk;           /* the GEMMs' inner size: kd * IC */
    int64_t ntile;    /* tiles per sample */
    GemmIsa isa;
    int mr, nr, ocp; /* micro-kernel tile, OC rounded up to mr */
    int lanes;       /* vector width of the transforms: 4, 8 or 16 */
    int ntc;  /* tiles per chunk (kd = 3: per plane), a multiple of nr */
    int nzc;  /* kd = 3: output planes per chunk */
    float *u; /* [E][ocp/mr][KK][mr] */
};

static int geom_eligible(const ConvGeom *g)
{
    if (g->group != 1 || g->k[1] != 3 || g->k[2] != 3) return 0;
    if (g->k[0] != 3 && !(g->k[0] == 1 && g->pad[0] == 0)) return 0;
    for (int i = 0; i < 3; i++)
        if (g->s[i] != 1 || g->d[i] != 1) return 0;
    return 1;
}

int wino_eligible(const Shape *xs, const Shape *ys, const ConvParams *p)
{
    if (p->nsp < 2) return 0;
    ConvGeom g;
    conv_geom_fill(&g, xs, ys, p);
    return geom_eligible(&g);
}

/* Tiles of F(m,3) along H and W, and along D F(2,3) (m = 2) or, for
 * m = 4, one output plane per tile with D's 3 taps summed in the GEMMs
 * (kd = 3). */
static void tile_geom(WinoConv *wc, int m)
{
    const ConvGeom *g = &wc->g;
    wc->m = m;
    wc->ne = 1;
    wc->ntile = 1;
    wc->kd = m == 4 ? g->k[0] : 1;
    wc->kk = wc->kd * g->ic;
    for (int i = 0; i < 3; i++) {
        int w = g->k[i] == 3 && !(i == 0 && m == 4), mi = i == 0 ? 2 : m;
        wc->ti[i] = w ? mi + 2 : 1;
        wc->to[i] = w ? mi : 1;
        wc->nt[i] = w ? (g->out[i] + mi - 1) / mi : g->out[i];
        wc->ne *= wc->ti[i];
        wc->ntile *= wc->nt[i];
    }
    wc->nrow = wc->ti[0] * wc->ti[1];
}

/* ---- cost model ----
 *
 * Work per output, in multiply-adds of the GEMM micro-kernel:
 *   direct:   taps * IC * OC
 *   F(m,3):   (E * IC * OCp + transform * (IC + OC) + per_tile) / outputs
 * per tile (OCp: OC rounded up to the kernel's MR rows, which the
 * Winograd GEMMs compute in full).  The F(2,3) transform and per-tile
 * costs are fitted to instruction counts of one layer run direct and
 * Winograd (callgrind, 1 thread, AVX2 kernels: valgrind has no AVX-512),
 * 2D 8..128 channels on 32^2..128^2, 3D 8..32 channels on 24^3: the 3D
 * transforms touch 64 elements per channel and tile in three passes,
 * hence the larger constants.  F(4x4,3x3)'s are fitted to the ratio of
 * its time to F(2x2,3x3)'s on 14 2D layers (4 to 256 channels, 24x40 to
 * 256x256; `make bench-conv`, 1 thread, best of 15): 0.62 to 0.86, the
 * GEMMs (36 products per 16 outputs instead of 16 per 4) gaining most
 * with many channels; its transforms cost about 4x F(2x2,3x3)'s per
 * tile, and the constant is set where the measured direct/F(4x4)
 * crossings fall: 900 put them at 20->13 and 16->16 channels (direct by
 * a few percent) on an Intel Xeon; on the 2-core AMD EPYC (Zen 5) direct
 * runs closer to the FMA peak, yet F(4x4) took 0.68-0.93 of direct's time
 * on the shipped model's largest layer, 14->21 at 224x192, in five
 * `bench_conv` runs (2026-12-07), which 900 gave to
 * direct; 800 gives it F(4x4), and of the table's rows it moves only
 * 16->16 at 128x128 (a tie there).
 * A layer also needs WINO_MIN_TILES tiles: below that the setup (the
 * weight transform is per plan, but the chunk loop is per run) does not
 * pay and the few chunks would leave threads idle.  The rule depends on the
 * shapes and the ISA only, never on timings (a probe would make plans depend
 * on the machine's load) and never on the thread count (so --threads 1 and 2
 * give the same bits). */
#define WINO_TRANSFORM_2D 210
#define WINO_PER_TILE_2D 250
#define WINO_TRANSFORM_4X4 800
#define WINO_PER_TILE_4X4 250
#define WINO_TRANSFORM_3D 1600
#define WINO_PER_TILE_3D 1700
#define WINO_MIN_TILES 64
/* The constants above are in MACs of the AVX-512 micro-kernel.  The AVX2
 * one does half as many per cycle (`bench-kernels --filter "2d
 * 128->128"`, 1 thread, 2-core AMD EPYC: 92.6 against 166.6-184.9
 * GFLOP/s), while the transforms, bound by loads, stores and shuffles,
 * take about the same time on both: with AVX2 a transform costs half as
 * many of its MACs.  `SL_GEMM_ISA=avx2 make bench-conv` (2026-12-07,
 * two runs): F(4x4,3x3) took 0.50-0.64 of direct's time on 20->13 and
 * 13->9 at 224x192, 16->16 at 128x128, 7->32 at 56x48 and 5->7 on
 * 16x48x48, layers the unscaled constants gave to direct; with them
 * halved the picks are the fastest algorithm on 19 of the 20 rows (not
 * 32->32 at 40x24, whose 60 F(4x4) tiles are below WINO_MIN_TILES). */
#define WINO_AVX2_SCALE 0.5

/* Cost per output of F(m,3) on g, or -1 where the layer has too few
 * tiles for it. */
static double wino_cost(const ConvGeom *g, int m, GemmIsa isa)
{
    int mr, nr;
    gemm_kernel_dims(isa, &mr, &nr);
    const double scale = isa == GEMM_ISA_AVX2 ? WINO_AVX2_SCALE : 1.0;
    WinoConv wc;
    wc.g = *g;
    tile_geom(&wc, m);
    if ((double)wc.ntile * g->n < WINO_MIN_TILES) return -1;
    const int d3 = wc.ti[0] == 4;
    double ic = g->icg, oc = g->ocg, ocp = (g->ocg + mr - 1) / mr * mr;
    double outs = (double)wc.to[0] * wc.to[1] * wc.to[2];
    /* kd = 3: the GEMMs sum D's 3 taps, each input plane is transformed
     * once per chunk of output planes plus 2 per chunk (taken at 8
     * planes: 1.25 per output plane), and a panel's nr lanes hold tiles
     * of one plane only, so small planes leave lanes idle. */
    double kd = wc.kd, kin = wc.kd == 3 ? 1.25 : 1.0, idle = 1.0;
    if (wc.kd == 3) {
        double t2 = (double)wc.nt[1] * wc.nt[2];
        idle = ceil(t2 / nr) * nr / t2;
    }
    double tr = d3       ? WINO_TRANSFORM_3D
                : m == 4 ? WINO_TRANSFORM_4X4
                         : WINO_TRANSFORM_2D;
    double pt = d3       ? WINO_PER_TILE_3D
                : m == 4 ? WINO_PER_TILE_4X4
                         : WINO_PER_TILE_2D;
    return ((double)wc.ne * kd * ic * ocp +
            ((kin * ic + oc) * tr + pt) * scale) /
           outs * idle;
}

static ConvAlgo cost_model(const ConvGeom *g)
{
    const GemmIsa isa = gemm_isa_best();
    double direct = (double)g->k_sp * g->icg * g->ocg;
    double w2 = wino_cost(g, 2, isa);
    double w4 = wino_cost(g, 4, isa);
    ConvAlgo best = CONV_ALGO_DIRECT;
    if (w2 >= 0 && w2 < direct) {
        best = CONV_ALGO_WINOGRAD;
        direct = w2;
    }
    if (w4 >= 0 && w4 < direct) best = CONV_ALGO_WINOGRAD4;
    return best;
}

int conv_algo_choose(const Shape *xs, const Shape *ys, const ConvParams *p,
                     ConvAlgo *algo)
{
    const char *env = getenv("SL_CONV_ALGO");
    *algo = CONV_ALGO_DIRECT;
    if (env && strcmp(env, "direct") && strcmp(env, "winograd") &&
        strcmp(env, "winograd4") && strcmp(env, "auto")) {
        sl_error("SL_CONV_ALGO=%s is not a convolution algorithm; set it "
                 "to direct, winograd, winograd4 or auto, or unset it",
                 env);
        return ERR_ARG;
    }
    if (!wino_eligible(xs, ys, p) || (env && !strcmp(env, "direct")))
        return 0;
    ConvGeom g;
    conv_geom_fill(&g, xs, ys, p);
    if (env && !strcmp(env, "winograd")) {
        *algo = CONV_ALGO_WINOGRAD;
        return 0;
    }
    if (env && !strcmp(env, "winograd4")) {
        *algo = CONV_ALGO_WINOGRAD4;
        return 0;
    }
    *algo = cost_model(&g);
    return 0;
}

/* ---- weights ---- */

/* G of F(2,3) and of F(4,3) (interpolation points 0, +-1, +-2; Lavin
 * and Gray), rows of 3 taps. */
static const double wino_g2[4][3] = {
    {1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
static const double wino_g4[6][3] = {{1.0 / 4, 0, 0},
                                     {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                     {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                     {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                     {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                     {0, 0, 1}};

/* G[a][i] along a dim with tile extent ti (1: an unconvolved dim). */
static double g_at(int ti, int a, int i)
{
    return ti == 1 ? 1.0 : ti == 4 ? wino_g2[a][i] : wino_g4[a][i];
}

/* u [E][ocp/mr][KK][mr] = G g G^T (per transformed dim) of w
 * [OC,IC,K...], in double, rounded once; rows past OC are zero.  Row
 * kz * IC + ic of KK holds input channel ic at D tap kz (kd = 3) or
 * summed over D's taps (kd = 1). */
static void weights_transform(WinoConv *wc, const float *w)
{
    const ConvGeom *g = &wc->g;
    const int IC = g->ic, OC = g->oc, mr = wc->mr, KK = wc->kk;
    const int *ti = wc->ti, *k = g->k;
    memset(wc->u, 0, (size_t)wc->ne * wc->ocp * KK * sizeof(float));
    for (int oc = 0; oc < OC; oc++)
        for (int kic = 0; kic < KK; kic++) {
            const int ic = kic % IC, kz = kic / IC;
            const float *kw = w + ((size_t)oc * IC + ic) * (size_t)g->k_sp;
            const int i0 = wc->kd == 1 ? 0 : kz;
            const int i1 = wc->kd == 1 ? k[0] : kz + 1;
            for (int a = 0; a < ti[0]; a++)
                for (int bb = 0; bb < ti[1]; bb++)
                    for (int c = 0; c < ti[2]; c++) {
                        double s = 0;
                        for (int i = i0; i < i1; i++)
                            for (int j = 0; j < k[1]; j++)
                                for (int l = 0; l < k[2]; l++)
                                    s +=
                                        g_at(ti[0], a, i) *
                                        g_at(ti[1], bb, j) *
                                        g_at(ti[2], c, l) *
                                        (double)kw[(i * k[1] + j) * k[2] + l];
                        int e = (a * ti[1] + bb) * ti[2] + c;
                        wc->u[(((size_t)e * (wc->ocp / mr) + oc / mr) * KK +
                               kic) *
                                  mr +
                              oc % mr] = (float)s;
                    }
        }
}

static size_t round16(size_t n)
{
    return (n + 15) / 16 * 16;
}

/* V of a chunk: [E][ntc/nr][KK][nr], or with kd = 3 [E][ntc/nr][nzc +
 * 2][IC][nr] (the chunk's input planes, each transformed once). */
static size_t v_floats(const WinoConv *wc)
{
    size_t k =
        wc->kd == 3 ? (size_t)(wc->nzc + 2) * wc->g.ic : (size_t)wc->kk;
    return round16((size_t)wc->ne * k * wc->ntc);
}

/* Per-thread scratch: V, then M [E][ocp][ntc]. */
static size_t per_thread(const WinoConv *wc)
{
    return v_floats(wc) + round16((size_t)wc->ne * wc->ocp * wc->ntc);
}

static int procs(void)
{
    int p = omp_get_num_procs();
    return p > 0 ? p : 1;
}

int wino_create(WinoConv **out, const float *w, const Shape *xs,
                const Shape *ys, const ConvParams *p, ConvAlgo algo,
                int n_threads, const char *name)
{
    const int m = algo == CONV_ALGO_WINOGRAD4 ? 4 : 2;
    *out = NULL;
    WinoConv *wc = sl_calloc(1, sizeof *wc);
    if (!wc) goto nomem;
    conv_geom_fill(&wc->g, xs, ys, p);
    CHECK(geom_eligible(&wc->g));
    CHECK(m == 2 || m == 4);
    tile_geom(wc, m);
    wc->isa = gemm_isa_best();
    gemm_kernel_dims(wc->isa, &wc->mr, &wc->nr);
    CHECK(wc->nr <= WINO_NR_MAX);
    /* the widest transforms the GEMM's ISA has (portable 4-lane ones for
     * the scalar micro-kernel, so SL_GEMM_ISA=scalar tests them) */
    wc->lanes = wc->isa == GEMM_ISA_AVX512 ? 16
                : wc->isa == GEMM_ISA_AVX2 ? 8
                                           : 4;
    CHECK(wc->nr % wc->lanes == 0);
    wc->ocp = (wc->g.oc + wc->mr - 1) / wc->mr * wc->mr;
    /* Chunk: as many panels as the budget holds, but at most a quarter
     * of each thread's share, so dynamic scheduling can balance. */
    int64_t panels = ((int64_t)wc->ntile + wc->nr - 1) / wc->nr * wc->g.n;
    int64_t per_panel = (int64_t)wc->ne * (wc->kk + wc->ocp) * wc->nr;
    int64_t np = WINO_CHUNK_FLOATS / per_panel;
    int64_t share = panels / (4 * (int64_t)(n_threads > 0 ? n_threads : 1));
    if (np > share) np = share;
    if (np > (wc->ntile + wc->nr - 1) / wc->nr)
        np = (wc->ntile + wc->nr - 1) / wc->nr;
    if (np < 1) np = 1;
    wc->ntc = (int)np * wc->nr;
    if (wc->kd == 3) {
        /* One panel of a plane's tiles over nzc output planes: V holds
         * nzc + 2 input planes, transformed once each (reading 2 planes
         * twice per chunk), and stays within 4x the budget; the GEMMs of
         * one output plane read 3 of them.  At least 4 chunks per
         * thread, as above. */
        const int64_t ppp =
            (int64_t)(wc->nt[1] * wc->nt[2] + wc->nr - 1) / wc->nr;
        const int64_t slot = (int64_t)wc->ne * wc->g.ic * wc->nr;
        int64_t nz = 4 * (int64_t)WINO_CHUNK_FLOATS / slot - 2;
        int64_t want = 4 * (int64_t)(n_threads > 0 ? n_threads : 1);
        int64_t per_nz = ppp * wc->g.n; /* chunks per plane range */
        int64_t nzmax =
            per_nz >= want ? wc->g.out[0] : wc->g.out[0] * per_nz / want;
        if (nz > nzmax) nz = nzmax;
        if (nz > wc->g.out[0]) nz = wc->g.out[0];
        if (nz < 1) nz = 1;
        wc->ntc = wc->nr;
        wc->nzc = (int)nz;
    }
    wc->u = sl_alloc((size_t)wc->ne * wc->ocp * wc->kk * sizeof(float));
    if (!wc->u) goto nomem;
    weights_transform(wc, w);
    *out = wc;
    return SL_OK;
nomem:
    sl_error("node '%s' (Conv): out of memory for its Winograd weights; "
             "set SL_CONV_ALGO=direct or use a machine with more memory",
             name);
    wino_free(wc);
    return ERR_NOMEM;
}

size_t wino_weight_bytes(const WinoConv *wc)
{
    return (size_t)wc->ne * wc->ocp * wc->kk * sizeof(float);
}

void wino_free(WinoConv *wc)
{
    if (!wc) return;
    sl_free(wc->u);
    sl_free(wc);
}

size_t wino_scratch_floats(const WinoConv *wc)
{
    /* +16: the caller's buffer may not be 64-byte aligned. */
    return (size_t)procs() * per_thread(wc) + 16;
}

/* ---- tiles ---- */

/* Lanes l0 .. l0+len of a panel: tiles along one row of tiles. */
typedef struct {
    int l0, len;
    int tz, ty, tx0;
} TileRun;

/* Split panel lanes [0, nv) starting at tile t into runs along rows. */
static int tile_runs(const WinoConv *wc, int64_t t, int nv, TileRun *runs)
{
    const int ntx = wc->nt[2], nty = wc->nt[1];
    int tx = (int)(t % ntx), ty = (int)(t / ntx % nty);
    int tz = (int)(t / ((int64_t)ntx * nty));
    int n = 0;
    for (int l = 0; l < nv;) {
        int len = ntx - tx < nv - l ? ntx - tx : nv - l;
        runs[n++] = (TileRun){l, len, tz, ty, tx};
        l += len;
        tx = 0;
        if (++ty == nty) {
            ty = 0;
            tz++;
        }
    }
    return n;
}

/* Four lanes at a time (vecmath.h; nr is a multiple of 8).  Plain loops
 * over a run-time lane count stay scalar at -O2, and the transforms then
 * cost more than the GEMMs they feed. */
#if defined(__clang__)
#define VF4_SHUF(a, b, i, j, k, l) __builtin_shufflevector(a, b, i, j, k, l)
#else
#define VF4_SHUF(a, b, i, j, k, l) __builtin_shuffle(a, b, (vi4){i, j, k, l})
#endif

/* F(4,3) along one dim, on vectors (vf4 or vf16) or floats, the same
 * operations in the same order for every width (so the same bits):
 *   B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0;
 *          0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
 *   A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
 * a[0..5] in, r[0..5] / q[0..3] out (not aliasing a). */
#define WINO_BT6(a, r)                                                       \
    do {                                                                     \
        r[0] = (a[0] * 4.0f - a[2] * 5.0f) + a[4];                           \
        r[1] = (a[3] + a[4]) - (a[1] + a[2]) * 4.0f;                         \
        r[2] = (a[4] - a[3]) + (a[1] - a[2]) * 4.0f;                         \
        r[3] = (a[4] - a[2]) + (a[3] - a[1]) * 2.0f;                         \
        r[4] = (a[4] - a[2]) - (a[3] - a[1]) * 2.0f;                         \
        r[5] = (a[1] * 4.0f - a[3] * 5.0f) + a[5];                           \
    } while (0)
#define WINO_AT6(a, q)                                                       \
    do {                                                                     \
        q[0] = (a[0] + (a[1] + a[2])) + (a[3] + a[4]);                       \
        q[1] = (a[1] - a[2]) + (a[3] - a[4]) * 2.0f;                         \
        q[2] = (a[1] + a[2]) + (a[3] + a[4]) * 4.0f;                         \
        q[3] = ((a[1] - a[2]) + (a[3] - a[4]) * 8.0f) + a[5];                \
    } while (0)

/* The transforms along H and D, on vectors of 4, 8 (AVX2) or 16
 * (AVX-512) lanes: the same adds and subtracts lane by lane at every
 * width, so the same bits (4-lane bt4 and at4 alone were a tenth of the
 * shipped model's CPU time, as much as a third of its Winograd GEMMs).
 * Each width is one instance of these functions, compiled for its ISA;
 * vectors stay inside them (passing them would change the calling
 * convention, -Wpsabi).  nr is a multiple of the width.
 *   bt4: dst rows 0..3 (dstride apart) <- B^T of F(2,3) across src rows
 *        0..3 (sstride apart); dst may equal src.
 *   at4: o0, o1 <- A^T of F(2,3) across rows r, r + s, r + 2s, r + 3s.
 *   bt6, at6: the same for F(4,3) (6 rows in; 6 rows, or 4 outputs,
 *        out); dst must not overlap src. */
#define WINO_LANE_FNS(W, VT, TGT)                                            \
    TGT static void bt4_##W(float *dst, size_t dstride, const float *src,    \
                            size_t sstride, int nr)                          \
    {                                                                        \
        for (int l = 0; l < nr; l += W) {                                    \
            VT a[4];                                                         \
            _Pragma("GCC unroll 6") for (int i = 0; i < 4; i++)              \
                memcpy(&a[i], src + i * sstride + l, sizeof(VT));            \
            VT r[4] = {a[0] - a[2], a[1] + a[2], a[2] - a[1], a[1] - a[3]};  \
            _Pragma("GCC unroll 6") for (int i = 0; i < 4; i++)              \
                memcpy(dst + i * dstride + l, &r[i], sizeof(VT));            \
        }                                                                    \
    }                                                                        \
    TGT static void at4_##W(float *o0, float *o1, const float *r, size_t s,  \
                            int nr)                                          \
    {                                                                        \
        for (int l = 0; l < nr; l += W) {                                    \
            VT a[4];                                                         \
            _Pragma("GCC unroll 6") for (int i = 0; i < 4; i++)              \
                memcpy(&a[i], r + i * s + l, sizeof(VT));                    \
            VT q0 = a[0] + a[1] + a[2], q1 = a[1] - a[2] - a[3];             \
            memcpy(o0 + l, &q0, sizeof(VT));                                 \
            memcpy(o1 + l, &q1, sizeof(VT));                                 \
        }                                                                    \
    }                                                                        \
    TGT static void bt6_##W(float *dst, size_t dstride, const float *src,    \
                            size_t sstride, int nr)                          \
    {                                                                        \
        for (int l = 0; l < nr; l += W) {                                    \
            VT a[6], r[6];                                                   \
            _Pragma("GCC unroll 6") for (int i = 0; i < 6; i++)              \
                memcpy(&a[i], src + i * sstride + l, sizeof(VT));            \
            WINO_BT6(a, r);                                                  \
            _Pragma("GCC unroll 6") for (int i = 0; i < 6; i++)              \
                memcpy(dst + i * dstride + l, &r[i], sizeof(VT));            \
        }                                                                    \
    }                                                                        \
    TGT static void at6_##W(float *const o[4], const float *r, size_t s,     \
                            int nr)                                          \
    {                                                                        \
        for (int l = 0; l < nr; l += W) {                                    \
            VT a[6], q[4];                                                   \
            _Pragma("GCC unroll 6") for (int i = 0; i < 6; i++)              \
                memcpy(&a[i], r + i * s + l, sizeof(VT));                    \
            WINO_AT6(a, q);                                                  \
            _Pragma("GCC unroll 6") for (int i = 0; i < 4; i++)              \
                memcpy(o[i] + l, &q[i], sizeof(VT));                         \
        }                                                                    \
    }

#define WINO_NO_TARGET
WINO_LANE_FNS(4, vf4, WINO_NO_TARGET)
#if SL_ISA_X86
typedef float vf16 __attribute__((vector_size(64)));
WINO_LANE_FNS(8, vf8, __attribute__((target("avx2"))))
WINO_LANE_FNS(16, vf16, __attribute__((target("avx512f"))))
/* lanes: 4, 8 or 16 (wc->lanes) */
#define WINO_DISPATCH(fn, lanes, ...)                                        \
    do {                                                                     \
        if ((lanes) == 16)                                                   \
            fn##_16(__VA_ARGS__);                                            \
        else if ((lanes) == 8)                                               \
            fn##_8(__VA_ARGS__);                                             \
        else                                                                 \
            fn##_4(__VA_ARGS__);                                             \
    } while (0)

/* B^T of F(4,3) along W for n <= 16 consecutive tiles of a row xr
 * [0, iw): tile i reads xr[ws + 4i .. ws + 4i + 5], zero outside the
 * row, and d[c*nr + i] (i < n) gets its element c.  The four phases
 * xr[ws + 4i + k] come from two rounds of two-source shuffles, the fifth
 * and sixth inputs are phases 0 and 1 one tile on; then WINO_BT6, lane
 * by lane, as in row_bt6's 4-tile path and row_in's zeros (the same
 * bits).  Runs that touch a border, or hold fewer than 16 tiles, take
 * masked loads and stores instead of the scalar path.  (An 8-tile
 * version for AVX2, with its cross-lane shuffles, did not beat the
 * 4-tile steps on bench-conv, so AVX2 keeps those.) */
#if defined(__clang__)
#define WINO_SHUF(VI, a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define WINO_SHUF(VI, a, b, ...) __builtin_shuffle(a, b, (VI){__VA_ARGS__})
#endif
typedef int32_t vi16 __attribute__((vector_size(64)));
__attribute__((target("avx512f"))) static void
row_bt6_16(float *restrict d, int nr, const float *xr, int ws, int iw, int n)
{
    vf16 v[4], a[6], r[6];
    const int full = n == 16 && ws >= 0 && ws + 66 <= iw;
    for (int i = 0; i < 4; i++) {
        const int b = ws + 16 * i;
        if (full) {
            memcpy(&v[i], xr + b, sizeof(vf16));
            continue;
        }
        /* lanes [lo, hi) lie inside the row; the address of lane 0 may
         * not (masked-off lanes are not read) */
        int lo = b < 0 ? -b : 0, hi = iw - b < 16 ? iw - b : 16;
        __mmask16 m = 0;
        if (lo < 16 && hi > lo)
            m = (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
        v[i] = (vf16)_mm512_maskz_loadu_ps(
            m, (const void *)((uintptr_t)xr + (intptr_t)b * 4));
    }
    /* u[0]: phases 0 | 1 of tiles 0..7, u[1]: 2 | 3; u[2], u[3]: 8..15 */
    vf16 u[4];
    for (int h = 0; h < 2; h++) {
        u[2 * h] = WINO_SHUF(vi16, v[2 * h], v[2 * h + 1], 0, 4, 8, 12, 16,
                             20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29);
        u[2 * h + 1] =
            WINO_SHUF(vi16, v[2 * h], v[2 * h + 1], 2, 6, 10, 14, 18, 22, 26,
                      30, 3, 7, 11, 15, 19, 23, 27, 31);
    }
    for (int k = 0; k < 2; k++) {
        a[2 * k] = WINO_SHUF(vi16, u[k], u[2 + k], 0, 1, 2, 3, 4, 5, 6, 7, 16,
                             17, 18, 19, 20, 21, 22, 23);
        a[2 * k + 1] = WINO_SHUF(vi16, u[k], u[2 + k], 8, 9, 10, 11, 12, 13,
                                 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    }
    const int b4 = ws + 64;
    vf16 e4 = {b4 >= 0 && b4 < iw ? xr[b4] : 0.0f};
    vf16 e5 = {b4 + 1 >= 0 && b4 + 1 < iw ? xr[b4 + 1] : 0.0f};
    a[4] = WINO_SHUF(vi16, a[0], e4, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
                     13, 14, 15, 16);
    a[5] = WINO_SHUF(vi16, a[1], e5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
                     13, 14, 15, 16);
    WINO_BT6(a, r);
    if (n == 16) {
        for (int c = 0; c < 6; c++)
            memcpy(d + (size_t)c * nr, &r[c], sizeof(vf16));
        return;
    }
    const __mmask16 sm = (__mmask16)((1u << n) - 1);
    for (int c = 0; c < 6; c++)
        _mm512_mask_storeu_ps(d + (size_t)c * nr, sm, (__m512)r[c]);
}

#else
#define WINO_DISPATCH(fn, lanes, ...)                                        \
    do {                                                                     \
        (void)(lanes);                                                       \
        fn##_4(__VA_ARGS__);                                                 \
    } while (0)
#endif

static void bt4(float *dst, size_t dstride, const float *src, size_t sstride,
                int nr, int lanes)
{
    WINO_DISPATCH(bt4, lanes, dst, dstride, src, sstride, nr);
}

static void at4(float *o0, float *o1, const float *r, size_t s, int nr,
                int lanes)
{
    WINO_DISPATCH(at4, lanes, o0, o1, r, s, nr);
}

static void bt6(float *dst, size_t dstride, const float *src, size_t sstride,
                int nr, int lanes)
{
    WINO_DISPATCH(bt6, lanes, dst, dstride, src, sstride, nr);
}

static void at6(float *const o[4], const float *r, size_t s, int nr,
                int lanes)
{
    WINO_DISPATCH(at6, lanes, o, r, s, nr);
}

/* A row of len tiles whose tile t reads the inputs ix0 + step*t ..
 * + width-1: the tiles [*lo, *hi) read only inside [0, iw), and [*lo,
 * *vhi) are those the 4-tile vector loops take (at least 4 of them, or
 * none); the rest take the scalar path, which reads zeros outside. */
static void inside_tiles(int ix0, int step, int width, int len, int iw,
                         int *lo, int *vhi)
{
    int tlo = ix0 >= 0 ? 0 : (step - 1 - ix0) / step;
    int thi = iw - width - ix0 >= 0 ? (iw - width - ix0) / step + 1 : 0;
    if (tlo > len) tlo = len;
    if (thi > len) thi = len;
    if (thi < tlo) thi = tlo;
    *lo = tlo;
    *vhi = thi - tlo >= 4 ? thi : tlo;
}

/* Input c of tile t of a row (zero outside [0, iw)). */
static float row_in(const float *xr, int ix0, int step, int t, int c, int iw)
{
    int ix = ix0 + step * t + c;
    return ix >= 0 && ix < iw ? xr[ix] : 0.0f;
}

/* d[c*nr + t], c < 4, t < len: B^T of the 4 inputs xr[ix0 + 2t ..
 * ix0 + 2t + 3] (zero outside [0, iw)), i.e. one input row of len
 * tiles transformed along W. */
static void row_bt(float *restrict d, int nr, const float *xr, int ix0,
                   int len, int iw)
{
    int lo, vhi;
    inside_tiles(ix0, 2, 4, len, iw, &lo, &vhi);
    for (int t = 0; t < len; t++) {
        if (t == lo && lo < vhi) {
            for (; t < vhi; t += 4) {
                /* The last step ends at vhi, redoing up to 3 tiles
                 * (same values) instead of a scalar remainder. */
                if (t + 4 > vhi) t = vhi - 4;
                const float *s = xr + ix0 + 2 * t;
                vf4 a = vf4_load(s), b = vf4_load(s + 4);
                vf4 c = vf4_load(s + 2), e = vf4_load(s + 6);
                vf4 d0 = VF4_SHUF(a, b, 0, 2, 4, 6);
                vf4 d1 = VF4_SHUF(a, b, 1, 3, 5, 7);
                vf4 d2 = VF4_SHUF(c, e, 0, 2, 4, 6);
                vf4 d3 = VF4_SHUF(c, e, 1, 3, 5, 7);
                vf4_store(d + t, d0 - d2);
                vf4_store(d + nr + t, d1 + d2);
                vf4_store(d + 2 * nr + t, d2 - d1);
                vf4_store(d + 3 * nr + t, d1 - d3);
            }
            t = vhi - 1;
            continue;
        }
        float v[4];
        for (int c = 0; c < 4; c++)
            v[c] = row_in(xr, ix0, 2, t, c, iw);
        d[t] = v[0] - v[2];
        d[nr + t] = v[1] + v[2];
        d[2 * nr + t] = v[2] - v[1];
        d[3 * nr + t] = v[1] - v[3];
    }
}

/* d[c*nr + t], c < 6, t < len: B^T of the 6 inputs xr[ix0 + 4t ..
 * ix0 + 4t + 5] (zero outside [0, iw)), one input row of len tiles
 * transformed along W. */
static void row_bt6(float *restrict d, int nr, const float *xr, int ix0,
                    int len, int iw, int lanes)
{
#if SL_ISA_X86
    /* With AVX-512 every tile of the run, 16 at a time. */
    if (lanes == 16) {
        for (int t = 0; t < len; t += 16)
            row_bt6_16(d + t, nr, xr, ix0 + 4 * t, iw,
                       len - t < 16 ? len - t : 16);
        return;
    }
#else
    (void)lanes;
#endif
    int lo, vhi;
    inside_tiles(ix0, 4, 6, len, iw, &lo, &vhi);
    for (int t = 0; t < len; t++) {
        if (t == lo && lo < vhi) {
            for (; t < vhi; t += 4) {
                if (t + 4 > vhi) t = vhi - 4; /* as in row_bt */
                /* rows q[i]: inputs 0..3 of tile t+i; the 4x4 transpose
                 * gives inputs 0..3 of the four tiles, and q[1..4]'s first
                 * two (q[4]: s[16], s[17], the last inputs read) inputs
                 * 4 and 5 */
                const float *s = xr + ix0 + 4 * t;
                vf4 q0 = vf4_load(s), q1 = vf4_load(s + 4);
                vf4 q2 = vf4_load(s + 8), q3 = vf4_load(s + 12);
                vf4 q4 = {s[16], s[17], 0.0f, 0.0f};
                vf4 u0 = VF4_SHUF(q0, q1, 0, 4, 1, 5);
                vf4 u1 = VF4_SHUF(q0, q1, 2, 6, 3, 7);
                vf4 u2 = VF4_SHUF(q2, q3, 0, 4, 1, 5);
                vf4 u3 = VF4_SHUF(q2, q3, 2, 6, 3, 7);
                vf4 w0 = VF4_SHUF(q1, q2, 0, 4, 1, 5);
                vf4 w1 = VF4_SHUF(q3, q4, 0, 4, 1, 5);
                vf4 a[6] = {VF4_SHUF(u0, u2, 0, 1, 4, 5),
                            VF4_SHUF(u0, u2, 2, 3, 6, 7),
                            VF4_SHUF(u1, u3, 0, 1, 4, 5),
                            VF4_SHUF(u1, u3, 2, 3, 6, 7),
                            VF4_SHUF(w0, w1, 0, 1, 4, 5),
                            VF4_SHUF(w0, w1, 2, 3, 6, 7)};
                vf4 r[6];
                WINO_BT6(a, r);
#pragma GCC unroll 6
                for (int c = 0; c < 6; c++)
                    vf4_store(d + c * nr + t, r[c]);
            }
            t = vhi - 1;
            continue;
        }
        float a[6], r[6];
#pragma GCC unroll 6
        for (int c = 0; c < 6; c++)
            a[c] = row_in(xr, ix0, 4, t, c, iw);
        WINO_BT6(a, r);
#pragma GCC unroll 6
        for (int c = 0; c < 6; c++)
            d[c * nr + t] = r[c];
    }
}

/* V rows of channel ic for one panel: dst + e * estride (nr lanes) for
 * each transform element e; the runs' input tiles of xc [D, H, W]
 * (channel ic) shifted kz planes along D (D tap kz, kd = 3), lanes
 * from nv on zero.  dt: [E][nr] work space. */
static void input_tiles(const WinoConv *wc, float *dst, size_t estride,
                        float *restrict dt, const float *xc, int kz,
                        const TileRun *runs, int nrun, int nv)
{
    const ConvGeom *g = &wc->g;
    const int nr = wc->nr, IH = g->in[1], IW = g->in[2];
    const int th = wc->ti[1], tw = wc->ti[2]; /* 4 or 6 */
    /* Each input row of a tile transformed along W first. */
    for (int q = 0; q < nrun; q++) {
        const TileRun *r = &runs[q];
        const int ix0 = r->tx0 * wc->to[2] - g->pad[2];
        for (int rz = 0; rz < wc->ti[0]; rz++)
            for (int ry = 0; ry < th; ry++) {
                int iz = r->tz * wc->to[0] - g->pad[0] + rz + kz;
                int iy = r->ty * wc->to[1] - g->pad[1] + ry;
                float *d = dt + (size_t)((rz * th + ry) * tw) * nr + r->l0;
                if (iz < 0 || iz >= g->in[0] || iy < 0 || iy >= IH) {
                    for (int c = 0; c < tw; c++)
                        memset(d + (size_t)c * nr, 0,
                               (size_t)r->len * sizeof(float));
                    continue;
                }
                if (wc->m == 4)
                    row_bt6(d, nr, xc + ((size_t)iz * IH + iy) * IW, ix0,
                            r->len, IW, wc->lanes);
                else
                    row_bt(d, nr, xc + ((size_t)iz * IH + iy) * IW, ix0,
                           r->len, IW);
            }
    }
    if (nv < nr)
        for (int e = 0; e < wc->ne; e++)
            memset(dt + (size_t)e * nr + nv, 0,
                   (size_t)(nr - nv) * sizeof(float));
    const size_t n = (size_t)nr;
    const int lanes = wc->lanes;
    if (wc->m == 4) { /* then B^T of F(4,3) along H, writing V */
        for (int c = 0; c < 6; c++)
            bt6(dst + c * estride, 6 * estride, dt + c * n, 6 * n, nr, lanes);
        return;
    }
    /* Then B^T along H (and D); the last pass writes V. */
    if (wc->ti[0] == 1) {
        for (int c = 0; c < 4; c++)
            bt4(dst + c * estride, 4 * estride, dt + c * n, 4 * n, nr, lanes);
        return;
    }
    for (int rz = 0; rz < 4; rz++)
        for (int c = 0; c < 4; c++) {
            float *p = dt + (size_t)(rz * 16 + c) * n;
            bt4(p, 4 * n, p, 4 * n, nr, lanes);
        }
    for (int ry = 0; ry < 4; ry++)
        for (int c = 0; c < 4; c++) {
            size_t e = (size_t)ry * 4 + c;
            bt4(dst + e * estride, 16 * estride, dt + e * n, 16 * n, nr,
                lanes);
        }
}

/* yr[2t], yr[2t+1] = bias + o0[t], o1[t] for t < len, the second only
 * while 2t+1 < ow (ow counted from yr). */
static void store_pairs(float *yr, const float *o0, const float *o1,
                        float bias, int len, int ow)
{
    const vf4 bv = vf4_set1(bias);
    int t = 0;
    for (; t + 4 <= len && 2 * t + 8 <= ow; t += 4) {
        vf4 a = vf4_load(o0 + t), b = vf4_load(o1 + t);
        vf4_store(yr + 2 * t, bv + VF4_SHUF(a, b, 0, 4, 1, 5));
        vf4_store(yr + 2 * t + 4, bv + VF4_SHUF(a, b, 2, 6, 3, 7));
    }
    for (; t < len; t++) {
        yr[2 * t] = bias + o0[t];
        if (2 * t + 1 < ow) yr[2 * t + 1] = bias + o1[t];
    }
}

/* y of channel oc (yc [D, H, W]) for one panel's runs: A^T m A + bias,
 * m [E] rows of nr lanes, row e at m + e * mstride. */
static void output_tiles(const WinoConv *wc, float *yc, const float *m,
                         size_t mstride, float bias, const TileRun *runs,
                         int nrun)
{
    const ConvGeom *g = &wc->g;
    const int OD = g->out[0], OH = g->out[1], OW = g->out[2];
    float t1[16][2][WINO_NR_MAX];   /* [rz*4+ry][x] */
    float t2[4][2][2][WINO_NR_MAX]; /* [rz][y][x] */
    float t3[2][2][2][WINO_NR_MAX]; /* [z][y][x] */
    const int nr = wc->nr, lanes = wc->lanes;
    const size_t n2 = 2 * WINO_NR_MAX;
    for (int row = 0; row < wc->nrow; row++)
        at4(t1[row][0], t1[row][1], m + (size_t)(row * 4) * mstride, mstride,
            nr, lanes);
    float(*out)[2][2][WINO_NR_MAX] = wc->ti[0] == 4 ? t3 : t2;
    for (int rz = 0; rz < wc->ti[0]; rz++)
        for (int x = 0; x < 2; x++)
            at4(t2[rz][0][x], t2[rz][1][x], t1[rz * 4][x], n2, nr, lanes);
    if (wc->ti[0] == 4)
        for (int y = 0; y < 2; y++)
            for (int x = 0; x < 2; x++)
                at4(t3[0][y][x], t3[1][y][x], t2[0][y][x], 2 * n2, nr, lanes);
    for (int q = 0; q < nrun; q++) {
        const TileRun *r = &runs[q];
        for (int a = 0; a < wc->to[0]; a++) {
            int oz = r->tz * wc->to[0] + a;
            if (oz >= OD) continue;
            for (int y = 0; y < 2; y++) {
                int oy = r->ty * 2 + y;
                if (oy >= OH) continue;
                int ox = r->tx0 * 2;
                store_pairs(yc + ((size_t)oz * OH + oy) * OW + ox,
                            out[a][y][0] + r->l0, out[a][y][1] + r->l0, bias,
                            r->len, OW - ox);
            }
        }
    }
}

/* ---- F(4x4,3x3) tiles (no convolved D dim: a plane at a time) ---- */

/* yr[4t + x] = bias + o[x][t] for t < len, while 4t + x < ow. */
static void store_quads(float *yr, float *const o[4], float bias, int len,
                        int ow)
{
    const vf4 bv = vf4_set1(bias);
    int t = 0;
    for (; t + 4 <= len && 4 * t + 16 <= ow; t += 4) {
        vf4 a = vf4_load(o[0] + t), b = vf4_load(o[1] + t);
        vf4 c = vf4_load(o[2] + t), e = vf4_load(o[3] + t);
        vf4 u0 = VF4_SHUF(a, b, 0, 4, 1, 5), u1 = VF4_SHUF(a, b, 2, 6, 3, 7);
        vf4 u2 = VF4_SHUF(c, e, 0, 4, 1, 5), u3 = VF4_SHUF(c, e, 2, 6, 3, 7);
        vf4_store(yr + 4 * t, bv + VF4_SHUF(u0, u2, 0, 1, 4, 5));
        vf4_store(yr + 4 * t + 4, bv + VF4_SHUF(u0, u2, 2, 3, 6, 7));
        vf4_store(yr + 4 * t + 8, bv + VF4_SHUF(u1, u3, 0, 1, 4, 5));
        vf4_store(yr + 4 * t + 12, bv + VF4_SHUF(u1, u3, 2, 3, 6, 7));
    }
    for (; t < len; t++)
        for (int x = 0; x < 4 && 4 * t + x < ow; x++)
            yr[4 * t + x] = bias + o[x][t];
}

/* output_tiles for F(4x4,3x3). */
static void output_tiles4(const WinoConv *wc, float *yc, const float *m,
                          size_t mstride, float bias, const TileRun *runs,
                          int nrun)
{
    const ConvGeom *g = &wc->g;
    const int OH = g->out[1], OW = g->out[2];
    float t1[6][4][WINO_NR_MAX]; /* [ry][x] */
    float t2[4][4][WINO_NR_MAX]; /* [y][x] */
    const int nr = wc->nr, lanes = wc->lanes;
    for (int ry = 0; ry < 6; ry++) {
        float *const o[4] = {t1[ry][0], t1[ry][1], t1[ry][2], t1[ry][3]};
        at6(o, m + (size_t)(ry * 6) * mstride, mstride, nr, lanes);
    }
    for (int x = 0; x < 4; x++) {
        float *const o[4] = {t2[0][x], t2[1][x], t2[2][x], t2[3][x]};
        at6(o, t1[0][x], 4 * WINO_NR_MAX, nr, lanes);
    }
    for (int q = 0; q < nrun; q++) {
        const TileRun *r = &runs[q];
        for (int y = 0; y < 4; y++) {
            int oy = r->ty * 4 + y;
            if (oy >= OH) continue;
            int ox = r->tx0 * 4;
            float *const o[4] = {t2[y][0] + r->l0, t2[y][1] + r->l0,
                                 t2[y][2] + r->l0, t2[y][3] + r->l0};
            store_quads(yc + ((size_t)r->tz * OH + oy) * OW + ox, o, bias,
                        r->len, OW - ox);
        }
    }
}

/* One chunk of sample n: tiles t0 .. t0 + ntc (those below ntile). */
static void run_chunk(const WinoConv *wc, float *y, const float *x,
                      const float *b, int n, int64_t t0, float *v, float *mb)
{
    const ConvGeom *g = &wc->g;
    const int nr = wc->nr, ntc = wc->ntc, IC = g->ic, KK = wc->kk;
    const float *xn = x + (size_t)n * IC * (size_t)g->in_sp;
    float *yn = y + (size_t)n * g->oc * (size_t)g->out_sp;
    float dt[64 * WINO_NR_MAX];
    TileRun runs[WINO_NR_MAX];
    for (int p = 0; p < ntc / nr; p++) {
        int64_t tp = t0 + (int64_t)p * nr;
        int nv = tp >= wc->ntile       ? 0
                 : wc->ntile - tp < nr ? (int)(wc->ntile - tp)
                                       : nr;
        int nrun = tile_runs(wc, tp, nv, runs);
        for (int kic = 0; kic < KK; kic++)
            input_tiles(wc, v + ((size_t)p * KK + kic) * nr, (size_t)ntc * KK,
                        dt, xn + (size_t)(kic % IC) * (size_t)g->in_sp,
                        kic / IC, runs, nrun, nv);
    }
    const size_t ustride = (size_t)wc->ocp * KK;
    for (int e = 0; e < wc->ne; e++)
        gemm_prepacked_serial(wc->isa, mb + (size_t)e * wc->ocp * ntc, ntc,
                              wc->u + e * ustride, v + (size_t)e * ntc * KK,
                              wc->ocp, ntc, KK);
    for (int p = 0; p < ntc / nr; p++) {
        int64_t tp = t0 + (int64_t)p * nr;
        if (tp >= wc->ntile) break;
        int nv = wc->ntile - tp < nr ? (int)(wc->ntile - tp) : nr;
        int nrun = tile_runs(wc, tp, nv, runs);
        for (int oc = 0; oc < g->oc; oc++)
            (wc->m == 4 ? output_tiles4 : output_tiles)(
                wc, yn + (size_t)oc * (size_t)g->out_sp,
                mb + (size_t)oc * ntc + (size_t)p * nr, (size_t)wc->ocp * ntc,
                b ? b[oc] : 0.0f, runs, nrun);
    }
}

/* F(4x4,3x3) of a 3x3x3 layer (kd = 3), chunk c of sample n: one
 * panel of a plane's tiles (tiles p*nr .. of each plane) over output
 * planes z0 .. z0 + nzc.  Input plane z0 - pad + s goes to slot s of
 * V [E][nzc + 2][IC][nr], transformed once; the GEMM operand of output
 * plane oz (K index kz * IC + ic: D tap kz, channel ic) is then slots
 * oz - z0 .. oz - z0 + 2, contiguous: a [3 IC][nr] panel. */
static void run_chunk_d(const WinoConv *wc, float *y, const float *x,
                        const float *b, int n, int64_t p, int z0, float *v,
                        float *mb)
{
    const ConvGeom *g = &wc->g;
    const int nr = wc->nr, IC = g->ic, OD = g->out[0];
    const int nzc = z0 + wc->nzc <= OD ? wc->nzc : OD - z0;
    const int64_t t2 = (int64_t)wc->nt[1] * wc->nt[2];
    const float *xn = x + (size_t)n * IC * (size_t)g->in_sp;
    float *yn = y + (size_t)n * g->oc * (size_t)g->out_sp;
    const size_t estride = (size_t)(wc->nzc + 2) * IC * nr;
    float dt[64 * WINO_NR_MAX];
    TileRun runs[WINO_NR_MAX];
    int64_t tp = p * nr;
    int nv = t2 - tp < nr ? (int)(t2 - tp) : nr;
    int nrun = tile_runs(wc, tp, nv, runs);
    /* tz = z0 and D shift s: input plane z0 - pad + s */
    for (int q = 0; q < nrun; q++)
        runs[q].tz = z0;
    for (int sl = 0; sl < nzc + 2; sl++)
        for (int ic = 0; ic < IC; ic++)
            input_tiles(wc, v + ((size_t)sl * IC + ic) * nr, estride, dt,
                        xn + (size_t)ic * (size_t)g->in_sp, sl, runs, nrun,
                        nv);
    const size_t ustride = (size_t)wc->ocp * wc->kk;
    for (int oz = z0; oz < z0 + nzc; oz++) {
        const float *vz = v + (size_t)(oz - z0) * IC * nr;
        for (int e = 0; e < wc->ne; e++)
            gemm_prepacked_serial(wc->isa, mb + (size_t)e * wc->ocp * nr, nr,
                                  wc->u + e * ustride, vz + e * estride,
                                  wc->ocp, nr, wc->kk);
        for (int q = 0; q < nrun; q++)
            runs[q].tz = oz;
        for (int oc = 0; oc < g->oc; oc++)
            output_tiles4(wc, yn + (size_t)oc * (size_t)g->out_sp,
                          mb + (size_t)oc * nr, (size_t)wc->ocp * nr,
                          b ? b[oc] : 0.0f, runs, nrun);
    }
}

void wino_forward(float *y, const float *x, const float *b,
                  const WinoConv *wc, float *scratch)
{
    /* Chunks per sample: runs of ntc tiles, or with kd = 3 one panel of
     * a plane's tiles times a range of nzc output planes. */
    const int64_t ppp =
        ((int64_t)wc->nt[1] * wc->nt[2] + wc->nr - 1) / wc->nr;
    const int64_t nzr =
        wc->kd == 3 ? (wc->g.out[0] + wc->nzc - 1) / wc->nzc : 1;
    const int64_t cps =
        wc->kd == 3 ? ppp * nzr : (wc->ntile + wc->ntc - 1) / wc->ntc;
    const int64_t nchunk = cps * wc->g.n;
    const size_t per = per_thread(wc);
    float *base = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    int nthr = gemm_max_threads();
    if (nthr > procs()) nthr = procs();
    if (nthr > nchunk) nthr = (int)nchunk;
#pragma omp parallel num_threads(nthr)
    {
        float *v = base + (size_t)omp_get_thread_num() * per;
        float *mb = v + v_floats(wc);
#pragma omp for schedule(dynamic, 1)
        for (int64_t c = 0; c < nchunk; c++) {
            const int n = (int)(c / cps);
            const int64_t k = c % cps;
            if (wc->kd == 3)
                run_chunk_d(wc, y, x, b, n, k % ppp, (int)(k / ppp) * wc->nzc,
                            v, mb);
            else
                run_chunk(wc, y, x, b, n, k * wc->ntc, v, mb);
        }
    }
}
