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
 * Speed with precision: within a block of MOMENT_BLOCK elements, 8 float
 * lanes (two 4-float vectors) each sum 32 terms; the lane sums are then
 * added to the double totals in lane order, so the order is fixed and
 * the float error is bounded by 32 terms: at most 32 * 2^-24 = 2e-6
 * relative on the sum of squares (positive terms), typically ~sqrt(32)
 * times less, and the double totals do not grow with S.  The all-double
 * loop this replaces cost 5x the normalising pass. */
#define MOMENT_BLOCK 256
#define MOMENT_PILOT 64
typedef struct {
    double shift, sum, sumsq;
    int64_t count;
} Moments;

static void moments_add(Moments *m, const float *x, int64_t S)
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
    const vf4 k = vf4_set1(kf);
    int64_t i = 0;
    while (i + 2 * VF_W <= S) {
        int64_t end = i + MOMENT_BLOCK < S ? i + MOMENT_BLOCK : S;
        vf4 s0 = vf4_set1(0.0f), s1 = s0, q0 = s0, q1 = s0;
        for (; i + 2 * VF_W <= end; i += 2 * VF_W) {
            vf4 d0 = vf4_load(x + i) - k, d1 = vf4_load(x + i + VF_W) - k;
            s0 += d0;
            s1 += d1;
            q0 += d0 * d0;
            q1 += d1 * d1;
        }
        for (int l = 0; l < VF_W; l++) {
            m->sum += (double)s0[l];
            m->sumsq += (double)q0[l];
        }
        for (int l = 0; l < VF_W; l++) {
            m->sum += (double)s1[l];
            m->sumsq += (double)q1[l];
        }
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

/* y [S] = act((x [S] - k) * a + b); y may equal x. */
static void affine_act(float *y, const float *x, int64_t S, Affine f,
                       const PostAct *act)
{
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
#pragma omp parallel for schedule(static) if (N * C * S > FUSED_PAR_MIN)
    for (int64_t nc = 0; nc < N * C; nc++) {
        int64_t c = nc % C;
        const float *xp = x + nc * S;
        Moments m = {0, 0, 0, 0};
        moments_add(&m, xp, S);
        double mean, var;
        moments_get(&m, &mean, &var);
        double a = (double)scale[c] / sqrt(var + (double)p->eps);
        affine_act(y + nc * S, xp, S, affine_from(mean, a, (double)bias[c]),
                   act);
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
    if (p->use_batch_stats) {
        /* One thread owns channel c for every n: statistics and output. */
#pragma omp parallel for schedule(static) if (N * C * S > FUSED_PAR_MIN)
        for (int64_t c = 0; c < C; c++) {
            Moments m = {0, 0, 0, 0};
            for (int64_t n = 0; n < N; n++)
                moments_add(&m, x + (n * C + c) * S, S);
            double mu, v;
            moments_get(&m, &mu, &v);
            double a = (double)scale[c] / sqrt(v + (double)p->eps);
            Affine f = affine_from(mu, a, (double)bias[c]);
            for (int64_t n = 0; n < N; n++)
                affine_act(y + (n * C + c) * S, x + (n * C + c) * S, S, f,
                           act);
        }
        return;
    }
#pragma omp parallel for schedule(static) if (N * C * S > FUSED_PAR_MIN)
    for (int64_t nc = 0; nc < N * C; nc++) {
        int64_t c = nc % C;
        double a = (double)scale[c] / sqrt((double)var[c] + (double)p->eps);
        affine_act(y + nc * S, x + nc * S, S,
                   affine_from((double)mean[c], a, (double)bias[c]), act);
    }
}
