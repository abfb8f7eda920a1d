/* Sauron's distances: delta_opt (forward and exact backward) and
 * delta_prune, for one prunable point.  Definitions and tie/guard rules are
 * in distance.h.
 *
 * Dimension letters: N batch, C channels, D H W spatial (a 1D or 2D map is
 * padded on the left to three dims of size 1, kernel 1), S = D*H*W,
 * Q = pooled positions, K = elements per pooling window.
 *
 * Work happens on pooled maps: because pooling is linear and windows
 * average, pool(nrm_c) = (pool(F_c) - m) / R, so the normalised full-size
 * map is never formed; the backward needs only the pooled maps too, since
 * the gradient is constant over a window (see sauron_opt_backward).
 */
#include <math.h>

#include "compressor/sauron/distance.h"
#include "runtime/common.h"

/* Rows of pooled positions that the dp_0 reduction handles per task:
 * 256 doubles of accumulator stay in L1 and give enough tasks for 2-64
 * threads on typical maps. */
#define DP0_BLOCK 256

typedef struct {
    int64_t n, c;   /* N, C */
    int64_t sz[3];  /* D, H, W */
    int64_t out[3]; /* pooled D, H, W */
    int k[3];       /* pooling kernel = stride per dim */
    int64_t S, Q;   /* spatial and pooled sizes */
    int K;          /* k[0] * k[1] * k[2] */
} DistGeom;

static void dist_geom(DistGeom *g, const Shape *fs, int sf)
{
    int nsp = fs->ndim - 2, lead = 3 - nsp;
    g->n = fs->d[0];
    g->c = fs->d[1];
    g->S = 1;
    g->Q = 1;
    g->K = 1;
    for (int i = 0; i < 3; i++) {
        int j = i - lead;
        g->sz[i] = j >= 0 ? fs->d[2 + j] : 1;
        /* a dim smaller than sf is pooled whole (kernel = its size) */
        g->k[i] = g->sz[i] < sf ? (int)g->sz[i] : sf;
        g->out[i] = g->sz[i] / g->k[i];
        g->S *= g->sz[i];
        g->Q *= g->out[i];
        g->K *= g->k[i];
    }
}

int sauron_dist_check(const Shape *fs, int sf, const char *what)
{
    if (sf < 1) {
        sl_error("Sauron distance at %s: pool factor sf = %d must be >= 1 "
                 "(use --sf 1 or more)",
                 what, sf);
        return ERR_ARG;
    }
    if (fs->ndim < 3 || fs->ndim > 5) {
        sl_error("Sauron distance at %s: activation has %d dims, expected "
                 "[N,C,sp...] with 1 to 3 spatial dims",
                 what, fs->ndim);
        return ERR_SHAPE;
    }
    for (int i = 0; i < fs->ndim; i++)
        if (fs->d[i] < 1) {
            sl_error("Sauron distance at %s: dim %d is %lld; every dim "
                     "must be positive",
                     what, i, (long long)fs->d[i]);
            return ERR_SHAPE;
        }
    return 0;
}

int64_t sauron_pooled_size(const Shape *fs, int sf)
{
    DistGeom g;
    dist_geom(&g, fs, sf);
    return g.Q;
}

static size_t round64(size_t b)
{
    return (b + 63) & ~(size_t)63;
}

size_t sauron_opt_saved_bytes(const Shape *fs, int sf)
{
    DistGeom g;
    dist_geom(&g, fs, sf);
    size_t nc = (size_t)(g.n * g.c);
    return round64(nc * (size_t)g.Q * sizeof(float)) +
           2 * round64(nc * sizeof(float)) +
           2 * round64(nc * sizeof(int64_t));
}

void sauron_opt_saved_carve(SauronOptSaved *sv, void *buf, const Shape *fs,
                            int sf)
{
    DistGeom g;
    dist_geom(&g, fs, sf);
    size_t nc = (size_t)(g.n * g.c);
    char *p = buf;
    sv->pooled = (float *)(void *)p;
    p += round64(nc * (size_t)g.Q * sizeof(float));
    sv->dist = (float *)(void *)p;
    p += round64(nc * sizeof(float));
    sv->range = (float *)(void *)p;
    p += round64(nc * sizeof(float));
    sv->argmin = (int64_t *)(void *)p;
    p += round64(nc * sizeof(int64_t));
    sv->argmax = (int64_t *)(void *)p;
}

/* dst [Q] = window means of src [S] (the remainder of each dim dropped). */
static void pool_map(float *restrict dst, const float *restrict src,
                     const DistGeom *g)
{
    const int64_t H = g->sz[1], W = g->sz[2];
    const int64_t PH = g->out[1], PW = g->out[2];
    const int kd = g->k[0], kh = g->k[1], kw = g->k[2];
    const float inv = 1.0f / (float)g->K;
    for (int64_t od = 0; od < g->out[0]; od++)
        for (int64_t oh = 0; oh < PH; oh++) {
            float *row = dst + (od * PH + oh) * PW;
            for (int64_t ow = 0; ow < PW; ow++)
                row[ow] = 0.0f;
            for (int a = 0; a < kd; a++)
                for (int b = 0; b < kh; b++) {
                    const float *s =
                        src + ((od * kd + a) * H + oh * kh + b) * W;
                    for (int64_t ow = 0; ow < PW; ow++)
                        for (int j = 0; j < kw; j++)
                            row[ow] += s[ow * kw + j];
                }
            for (int64_t ow = 0; ow < PW; ow++)
                row[ow] *= inv;
        }
}

/* dst [S] += a * (x[q] - y[q]) for every element of window q (y may be
 * NULL: 0); the dropped remainder gets nothing. */
static void scatter_map(float *restrict dst, const float *restrict x,
                        const float *restrict y, float a, const DistGeom *g)
{
    const int64_t H = g->sz[1], W = g->sz[2];
    const int64_t PH = g->out[1], PW = g->out[2];
    const int kd = g->k[0], kh = g->k[1], kw = g->k[2];
    for (int64_t od = 0; od < g->out[0]; od++)
        for (int64_t oh = 0; oh < PH; oh++) {
            int64_t q0 = (od * PH + oh) * PW;
            for (int a2 = 0; a2 < kd; a2++)
                for (int b = 0; b < kh; b++) {
                    float *s = dst + ((od * kd + a2) * H + oh * kh + b) * W;
                    for (int64_t ow = 0; ow < PW; ow++) {
                        float v = a * (x[q0 + ow] - (y ? y[q0 + ow] : 0.0f));
                        for (int j = 0; j < kw; j++)
                            s[ow * kw + j] += v;
                    }
                }
        }
}

/* Minimum and maximum of x [S] and the FIRST index of each (ties go to
 * the earliest element).  Lane-wise min/max over blocks of MM_LANES
 * elements vectorise; the indices then come from a scan that stops at the
 * first match, about half a pass on average. */
#define MM_LANES 16
static void min_max_first(const float *restrict x, int64_t S, float *mn_out,
                          float *mx_out, int64_t *imn, int64_t *imx)
{
    float lmn[MM_LANES], lmx[MM_LANES];
    for (int j = 0; j < MM_LANES; j++)
        lmn[j] = lmx[j] = x[0];
    int64_t s = 0;
    for (; s + MM_LANES <= S; s += MM_LANES)
        for (int j = 0; j < MM_LANES; j++) {
            float v = x[s + j];
            lmn[j] = v < lmn[j] ? v : lmn[j];
            lmx[j] = v > lmx[j] ? v : lmx[j];
        }
    float mn = lmn[0], mx = lmx[0];
    for (int j = 1; j < MM_LANES; j++) {
        mn = lmn[j] < mn ? lmn[j] : mn;
        mx = lmx[j] > mx ? lmx[j] : mx;
    }
    for (; s < S; s++) {
        mn = x[s] < mn ? x[s] : mn;
        mx = x[s] > mx ? x[s] : mx;
    }
    int64_t i = 0;
    while (i < S - 1 && !(x[i] == mn)) /* stops at S-1 if mn is NaN */
        i++;
    *imn = i;
    i = 0;
    while (i < S - 1 && !(x[i] == mx))
        i++;
    *imx = i;
    *mn_out = mn;
    *mx_out = mx;
}

/* sqrt(mean_q (a[q] - b[q])^2) in double, fixed order. */
static double rms_diff(const float *a, const float *b, int64_t Q)
{
    double acc = 0.0;
    for (int64_t q = 0; q < Q; q++) {
        double t = (double)a[q] - (double)b[q];
        acc += t * t;
    }
    return sqrt(acc / (double)Q);
}

/* Forward.  F [N,C,S]; saves sv->pooled [N,C,Q] (p_c), sv->dist [N,C],
 * sv->range [N,C] (0 = constant), sv->argmin/argmax [N,C] (first index). */
double sauron_opt_forward(SauronOptSaved *sv, const float *F, const Shape *fs,
                          int sf)
{
    DistGeom g;
    dist_geom(&g, fs, sf);
    const int64_t NC = g.n * g.c, S = g.S, Q = g.Q, C = g.c;

#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < NC; t++) {
        const float *x = F + t * S;
        float *p = sv->pooled + t * Q;
        float mn, mx;
        int64_t imn, imx;
        min_max_first(x, S, &mn, &mx, &imn, &imx);
        sv->argmin[t] = imn;
        sv->argmax[t] = imx;
        float R = mx - mn;
        float big = fmaxf(1.0f, fmaxf(fabsf(mn), fabsf(mx)));
        if (!(R > SAURON_RANGE_EPS * big)) { /* constant channel: nrm = 0 */
            sv->range[t] = 0.0f;
            for (int64_t q = 0; q < Q; q++)
                p[q] = 0.0f;
            continue;
        }
        sv->range[t] = R;
        pool_map(p, x, &g);
        for (int64_t q = 0; q < Q; q++)
            p[q] = (p[q] - mn) / R;
    }

#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < NC; t++) {
        int64_t c = t % C;
        const float *p0 = sv->pooled + (t - c) * Q;
        sv->dist[t] =
            c == 0 ? 0.0f : (float)rms_diff(p0, sv->pooled + t * Q, Q);
    }

    if (C < 2) return 0.0;
    double sum = 0.0; /* serial: the same order for any thread count */
    for (int64_t t = 0; t < NC; t++)
        if (t % C != 0) sum += (double)sv->dist[t];
    return sum / (double)(g.n * (C - 1));
}

size_t sauron_opt_backward_scratch_floats(const Shape *fs, int sf)
{
    DistGeom g;
    dist_geom(&g, fs, sf);
    return (size_t)(g.n * g.Q);
}

/* d(scale * term)/d p_c = coef_c * (p_c - p_0) for c >= 1 with
 * coef_c = scale / (N (C-1)) / (d_c Q), and 0 when d_c = 0 (the guard). */
static double opt_coef(float d, double w, int64_t Q)
{
    return d > 0.0f ? w / ((double)d * (double)Q) : 0.0;
}

/* Backward of term = mean_{n, c>=1} d_c with d_c = sqrt(mean_q (p_0 -
 * p_c)^2), p_c = (pool(F_c) - m_c) / R_c.  Shapes: dF [N,C,S] (accumulates),
 * sv as saved by the forward, scratch [N,Q] holds dp_0.
 *
 *   dp_c = coef_c (p_c - p_0) (c >= 1),   dp_0 = -sum_{c>=1} dp_c;
 *   nrm(s) = (F(s) - m) / R gets dnrm(s) = dp(q(s)) / K inside windows;
 *   dF(s)      += dnrm(s) / R
 *   dF(argmin) += sum_s dnrm(s) (nrm(s) - 1) / R = sum_q dp (p - 1) / R
 *   dF(argmax) -= sum_s dnrm(s) nrm(s) / R       = sum_q dp p / R
 * (the window sums of nrm are K p, so pooled maps suffice). */
void sauron_opt_backward(float *dF, const SauronOptSaved *sv, const Shape *fs,
                         int sf, float scale, float *scratch)
{
    DistGeom g;
    dist_geom(&g, fs, sf);
    const int64_t N = g.n, C = g.c, S = g.S, Q = g.Q;
    if (C < 2) return;
    const double w = (double)scale / (double)(N * (C - 1));
    const int64_t nblk = (Q + DP0_BLOCK - 1) / DP0_BLOCK;

    /* dp_0 per sample, parallel over blocks of q; per q the sum runs over
     * c = 1..C-1 in order whatever the thread count. */
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < N * nblk; t++) {
        int64_t n = t / nblk, q0 = (t % nblk) * DP0_BLOCK;
        int64_t len = Q - q0 < DP0_BLOCK ? Q - q0 : DP0_BLOCK;
        const float *p0 = sv->pooled + n * C * Q + q0;
        double acc[DP0_BLOCK];
        for (int64_t i = 0; i < len; i++)
            acc[i] = 0.0;
        for (int64_t c = 1; c < C; c++) {
            double coef = opt_coef(sv->dist[n * C + c], w, Q);
            if (coef == 0.0) continue;
            const float *pc = sv->pooled + (n * C + c) * Q + q0;
            for (int64_t i = 0; i < len; i++)
                acc[i] -= coef * ((double)pc[i] - (double)p0[i]);
        }
        for (int64_t i = 0; i < len; i++)
            scratch[n * Q + q0 + i] = (float)acc[i];
    }

#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < N * C; t++) {
        int64_t c = t % C;
        float R = sv->range[t];
        if (R == 0.0f) continue; /* constant channel: no gradient */
        const float *p = sv->pooled + t * Q;
        const float *p0 = sv->pooled + (t - c) * Q;
        const float *x; /* dp = a * (x - y) */
        const float *y;
        double a;
        if (c == 0) {
            x = scratch + (t / C) * Q;
            y = NULL;
            a = 1.0;
        } else {
            a = opt_coef(sv->dist[t], w, Q);
            if (a == 0.0) continue;
            x = p;
            y = p0;
        }
        double smin = 0.0, smax = 0.0;
        for (int64_t q = 0; q < Q; q++) {
            float dp = (float)a * (x[q] - (y ? y[q] : 0.0f));
            smin += (double)dp * ((double)p[q] - 1.0);
            smax += (double)dp * (double)p[q];
        }
        float *d = dF + t * S;
        scatter_map(d, x, y, (float)(a / ((double)g.K * (double)R)), &g);
        d[sv->argmin[t]] += (float)(smin / (double)R);
        d[sv->argmax[t]] -= (float)(smax / (double)R);
    }
}

int sauron_draw_reference(uint64_t *rng_state, int C)
{
    CHECK(C >= 1);
    uint64_t bound = (uint64_t)C;
    uint64_t floor_ = (0 - bound) % bound; /* 2^64 mod C: reject below */
    for (;;) {
        uint64_t z = (*rng_state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        if (z >= floor_) return (int)(z % bound);
    }
}

size_t sauron_prune_scratch_floats(const Shape *fs, int sf)
{
    DistGeom g;
    dist_geom(&g, fs, sf);
    return (size_t)(g.n * g.c * g.Q + g.n * g.c);
}

/* delta_prune.  F [N,C,S] raw; e [C] (overwrites); scratch: pooled raw
 * maps [N,C,Q] then per-sample distances [N,C]. */
void sauron_prune_distance(float *e, const float *F, const Shape *fs, int sf,
                           int r, float *scratch)
{
    DistGeom g;
    dist_geom(&g, fs, sf);
    const int64_t N = g.n, C = g.c, S = g.S, Q = g.Q, NC = N * C;
    CHECK(r >= 0 && r < C);
    float *pooled = scratch, *er = scratch + NC * Q;

#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < NC; t++)
        pool_map(pooled + t * Q, F + t * S, &g);

#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < NC; t++) {
        int64_t n = t / C;
        er[t] = (float)rms_diff(pooled + (n * C + r) * Q, pooled + t * Q, Q);
    }

    for (int64_t n = 0; n < N; n++) { /* serial, fixed order */
        double mx = 0.0;
        for (int64_t c = 0; c < C; c++)
            if ((double)er[n * C + c] > mx) mx = (double)er[n * C + c];
        for (int64_t c = 0; c < C; c++)
            er[n * C + c] =
                (float)((double)er[n * C + c] / (mx + SAURON_PRUNE_EPS));
    }
    for (int64_t c = 0; c < C; c++) {
        double acc = 0.0;
        for (int64_t n = 0; n < N; n++)
            acc += (double)er[n * C + c];
        e[c] = (float)(acc / (double)N);
    }
}

int sauron_prune_candidates(int *out, const float *e, int C, int r, float tau)
{
    int k = 0;
    for (int c = 0; c < C; c++)
        if (c != r && e[c] < tau) out[k++] = c;
    return k;
}

/* a before b: smaller score, then smaller index; NaN after any number */
static int cand_before(float sa, int ia, float sb, int ib)
{
    if (isnan(sa) || isnan(sb)) return isnan(sb) && (!isnan(sa) || ia < ib);
    return sa < sb || (sa == sb && ia < ib);
}

void sauron_sort_candidates(int *ids, float *score, int n)
{
    /* insertion sort: n is one layer's channels, and the order must not
     * depend on a library sort's stability */
    for (int i = 1; i < n; i++) {
        int id = ids[i], j = i;
        float sc = score[i];
        while (j > 0 && cand_before(sc, id, score[j - 1], ids[j - 1])) {
            ids[j] = ids[j - 1];
            score[j] = score[j - 1];
            j--;
        }
        ids[j] = id;
        score[j] = sc;
    }
}
