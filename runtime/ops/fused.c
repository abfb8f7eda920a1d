/* Normalisation fused with the activation that follows it.
 *
 * Dimension letters: N batch, C channels, S = product of the spatial dims
 * (a tensor [N, C, spatial...] is viewed as [N, C, S]).
 *
 * A U-Net block is Conv -> InstanceNorm -> LeakyRelu.  Run one op at a
 * time, the normalisation reads its input twice (statistics, then the
 * affine map) and writes it once, and the activation reads and writes it
 * once more.  Fused, the activation is applied as the affine map stores
 * each element: one read and one write less per element, and the
 * executor runs one node instead of two.
 *
 * The unfused kernels (instance_norm_forward, batch_norm_forward in
 * norm.c) call these with no activation, so fused and unfused results
 * are bit-identical: same statistics, same float arithmetic, and the
 * activation is exact.
 *
 * Statistics are accumulated in double, each plane (or channel) by one
 * thread in index order, so results do not depend on the thread count.
 */
#include <math.h>

#include "ops.h"
#include "vecmath.h"

/* Below this many elements a parallel region costs more than it saves
 * (statistics and the affine map: ~10 ns per element and thread). */
#define FUSED_PAR_MIN 16384

static void norm_dims(const Shape *xs, int64_t *N, int64_t *C, int64_t *S)
{
    *N = xs->d[0];
    *C = xs->ndim > 1 ? xs->d[1] : 1;
    *S = 1;
    for (int i = 2; i < xs->ndim; i++)
        *S *= xs->d[i];
}

/* Running sums of x [S] shifted by k, the mean of the first (up to)
 * MOMENT_PILOT elements rounded to float: the shift keeps
 * sum((x-k)^2) - sum(x-k)^2/S free of cancellation when |mean| >> std,
 * and with k within a fraction of a std of the mean, the float lane sums
 * below lose nothing to cancellation either.
 *
 * Speed with precision: within a block of MOMENT_BLOCK elements, 16
 * float lanes each sum 16 terms; the lane sums are then added to the
 * double totals in lane order, so the order is fixed and the float error
 * is bounded by 16 terms: at most 16 * 2^-24 = 1e-6 relative on the sum
 * of squares (positive terms), typically ~4 times less, and the double
 * totals do not grow with S.  The all-double loop this replaces cost 5x
 * the normalising pass.  Lane j always sums the elements j, j + 16, ...
 * of the block, with four 4-float vectors or two 8-float (AVX2) ones:
 * the same bits either way. */
#define MOMENT_BLOCK 256
#define MOMENT_LANES 16
#define MOMENT_PILOT 64
typedef struct {
    double shift, sum, sumsq;
    int64_t count;
} Moments;

/* ls, lq [MOMENT_LANES] = lane sums of d and d^2, d = x [n] - k, lane j
 * over elements j + MOMENT_LANES * t; n a multiple of MOMENT_LANES. */
static void lane_sums(float *ls, float *lq, const float *x, int64_t n,
                      float k)
{
    const vf4 kv = vf4_set1(k), z = vf4_set1(0.0f);
    vf4 s0 = z, s1 = z, s2 = z, s3 = z, q0 = z, q1 = z, q2 = z, q3 = z;
    for (int64_t i = 0; i < n; i += MOMENT_LANES) {
        vf4 d0 = vf4_load(x + i) - kv, d1 = vf4_load(x + i + 4) - kv;
        vf4 d2 = vf4_load(x + i + 8) - kv, d3 = vf4_load(x + i + 12) - kv;
        s0 += d0;
        s1 += d1;
        s2 += d2;
        s3 += d3;
        q0 += d0 * d0;
        q1 += d1 * d1;
        q2 += d2 * d2;
        q3 += d3 * d3;
    }
    vf4_store(ls, s0);
    vf4_store(ls + 4, s1);
    vf4_store(ls + 8, s2);
    vf4_store(ls + 12, s3);
    vf4_store(lq, q0);
    vf4_store(lq + 4, q1);
    vf4_store(lq + 8, q2);
    vf4_store(lq + 12, q3);
}

#ifdef SL_HAVE_VF8
__attribute__((target("avx2"))) static void
lane_sums_avx2(float *ls, float *lq, const float *x, int64_t n, float k)
{
    const vf8 kv = vf8_set1(k), z = vf8_set1(0.0f);
    vf8 s0 = z, s1 = z, q0 = z, q1 = z;
    for (int64_t i = 0; i < n; i += MOMENT_LANES) {
        vf8 d0 = vf8_load(x + i) - kv, d1 = vf8_load(x + i + 8) - kv;
        s0 += d0;
        s1 += d1;
        q0 += d0 * d0;
        q1 += d1 * d1;
    }
    vf8_store(ls, s0);
    vf8_store(ls + 8, s1);
    vf8_store(lq, q0);
    vf8_store(lq + 8, q1);
}
#endif

static void moments_add(Moments *m, const float *x, int64_t S, int avx2)
{
    if (S <= 0) return;
    if (m->count == 0) {
        int64_t np = S < MOMENT_PILOT ? S : MOMENT_PILOT;
        double pilot = 0;
        for (int64_t i = 0; i < np; i++)
            pilot += (double)x[i];
        m->shift = (double)(float)(pilot / (double)np);
    }
    const float kf = (float)m->shift;
    int64_t i = 0;
    while (i + MOMENT_LANES <= S) {
        int64_t n = S - i < MOMENT_BLOCK ? S - i : MOMENT_BLOCK;
        n -= n % MOMENT_LANES;
        float ls[MOMENT_LANES], lq[MOMENT_LANES];
#ifdef SL_HAVE_VF8
        if (avx2)
            lane_sums_avx2(ls, lq, x + i, n, kf);
        else
#endif
            lane_sums(ls, lq, x + i, n, kf);
        (void)avx2;
        for (int l = 0; l < MOMENT_LANES; l++) {
            m->sum += (double)ls[l];
            m->sumsq += (double)lq[l];
        }
        i += n;
    }
    for (; i < S; i++) {
        double d = (double)(x[i] - kf);
        m->sum += d;
        m->sumsq += d * d;
    }
    m->count += S;
}

/* Population mean and variance (>= 0). */
static void moments_get(const Moments *m, double *mean, double *var)
{
    double n = (double)m->count;
    double ms = m->sum / n;
    *mean = m->shift + ms;
    *var = m->sumsq / n - ms * ms;
    if (*var < 0) *var = 0;
}

/* y = (x - mean) * a + bias as float arithmetic that does not cancel:
 * y = (x - k) * af + bf with k = mean rounded to float, af = a rounded,
 * bf = bias + (k - mean) * a in double, rounded.  When |mean| >> std,
 * x - k is exact (Sterbenz: x within a factor 2 of k), so the result
 * carries a few float roundings of the output, not of the input's
 * magnitude; the double form this replaces cost two conversions per
 * element. */
typedef struct {
    float k, a, b;
} Affine;

static Affine affine_from(double mean, double a, double bias)
{
    Affine f;
    f.k = (float)mean;
    f.a = (float)a;
    f.b = (float)(bias + ((double)f.k - mean) * a);
    return f;
}

#ifdef SL_HAVE_VF8
/* The 8-lane part of affine_act: returns how many leading elements it
 * did (a multiple of 8); the 4-lane and scalar code finish the rest with
 * the same per-element operations. */
__attribute__((target("avx2"))) static int64_t
affine_act_avx2(float *y, const float *x, int64_t S, Affine f,
                const PostAct *act)
{
    const vf8 k = vf8_set1(f.k), a = vf8_set1(f.a), b = vf8_set1(f.b);
    const float alpha = act->alpha;
    int64_t i = 0;
    switch (act->op) {
    case OP_RELU:
        for (; i + 8 <= S; i += 8)
            vf8_store(y + i, vf8_relu((vf8_load(x + i) - k) * a + b));
        break;
    case OP_LEAKY_RELU:
        for (; i + 8 <= S; i += 8)
            vf8_store(y + i, vf8_leaky((vf8_load(x + i) - k) * a + b, alpha));
        break;
    default:
        for (; i + 8 <= S; i += 8)
            vf8_store(y + i, (vf8_load(x + i) - k) * a + b);
        break;
    }
    return i;
}
#endif

/* y [S] = act((x [S] - k) * a + b); y may equal x. */
static void affine_act(float *y, const float *x, int64_t S, Affine f,
                       const PostAct *act, int avx2)
{
#ifdef SL_HAVE_VF8
    if (avx2) {
        int64_t done = affine_act_avx2(y, x, S, f, act);
        y += done;
        x += done;
        S -= done;
    }
#endif
    (void)avx2;
    const vf4 k = vf4_set1(f.k), a = vf4_set1(f.a), b = vf4_set1(f.b);
    const float alpha = act->alpha;
    int64_t i = 0;
    /* One loop per activation: the select stays out of the inner loop. */
    switch (act->op) {
    case OP_RELU:
        for (; i + VF_W <= S; i += VF_W)
            vf4_store(y + i, vf4_relu((vf4_load(x + i) - k) * a + b));
        for (; i < S; i++)
            y[i] = sf_relu((x[i] - f.k) * f.a + f.b);
        break;
    case OP_LEAKY_RELU:
        for (; i + VF_W <= S; i += VF_W)
            vf4_store(y + i, vf4_leaky((vf4_load(x + i) - k) * a + b, alpha));
        for (; i < S; i++)
            y[i] = sf_leaky((x[i] - f.k) * f.a + f.b, alpha);
        break;
    default:
        for (; i + VF_W <= S; i += VF_W)
            vf4_store(y + i, (vf4_load(x + i) - k) * a + b);
        for (; i < S; i++)
            y[i] = (x[i] - f.k) * f.a + f.b;
        break;
    }
}

/* y, x [N,C,S]; scale, bias [C] */
void instance_norm_act_forward(float *y, const float *x, const float *scale,
                               const float *bias, const Shape *xs,
                               const NormParams *p, const PostAct *act)
{
    int64_t N, C, S;
    norm_dims(xs, &N, &C, &S);
    const int avx2 = vec_use_avx2();
#pragma omp parallel for schedule(static) if (N * C * S > FUSED_PAR_MIN)
    for (int64_t nc = 0; nc < N * C; nc++) {
        int64_t c = nc % C;
        const float *xp = x + nc * S;
        Moments m = {0, 0, 0, 0};
        moments_add(&m, xp, S, avx2);
        double mean, var;
        moments_get(&m, &mean, &var);
        double a = (double)scale[c] / sqrt(var + (double)p->eps);
        affine_act(y + nc * S, xp, S, affine_from(mean, a, (double)bias[c]),
                   act, avx2);
    }
}

/* y, x [N,C,S]; scale, bias, mean, var [C].  With use_batch_stats, mean
 * and var are ignored and computed over N and S per channel. */
void batch_norm_act_forward(float *y, const float *x, const float *scale,
                            const float *bias, const float *mean,
                            const float *var, const Shape *xs,
                            const NormParams *p, const PostAct *act)
{
    int64_t N, C, S;
    norm_dims(xs, &N, &C, &S);
    const int avx2 = vec_use_avx2();
    if (p->use_batch_stats) {
        /* One thread owns channel c for every n: statistics and output. */
#pragma omp parallel for schedule(static) if (N * C * S > FUSED_PAR_MIN)
        for (int64_t c = 0; c < C; c++) {
            Moments m = {0, 0, 0, 0};
            for (int64_t n = 0; n < N; n++)
                moments_add(&m, x + (n * C + c) * S, S, avx2);
            double mu, v;
            moments_get(&m, &mu, &v);
            double a = (double)scale[c] / sqrt(v + (double)p->eps);
            Affine f = affine_from(mu, a, (double)bias[c]);
            for (int64_t n = 0; n < N; n++)
                affine_act(y + (n * C + c) * S, x + (n * C + c) * S, S, f,
                           act, avx2);
        }
        return;
    }
#pragma omp parallel for schedule(static) if (N * C * S > FUSED_PAR_MIN)
    for (int64_t nc = 0; nc < N * C; nc++) {
        int64_t c = nc % C;
        double a = (double)scale[c] / sqrt((double)var[c] + (double)p->eps);
        affine_act(y + nc * S, x + nc * S, S,
                   affine_from((double)mean[c], a, (double)bias[c]), act,
                   avx2);
    }
}
