/* Augmentation: one affine resampling per sample (crop, flips, rotation,
 * scaling together) plus noise and gamma (see augment.h).
 *
 * Dimension letters: C channels; S0 S1 S2 the case size and P0 P1 P2 the
 * patch size, both in tensor order. */
#include "augment.h"

#include <math.h>
#include <string.h>

#include "runtime/common.h"

#define PI 3.14159265358979323846

void augment_defaults(AugmentOptions *o, int dims)
{
    memset(o, 0, sizeof *o);
    o->enabled = 1;
    o->p_flip = 0.5;
    o->p_rotate = 0.2;
    o->max_angle = dims == 2 ? PI : 30.0 * PI / 180.0;
    o->p_scale = 0.2;
    o->scale_lo = 0.7;
    o->scale_hi = 1.4;
    o->p_noise = 0.1;
    o->noise_sigma_max = 0.1;
    o->p_gamma_invert = 0.1;
    o->p_gamma = 0.3;
    o->gamma_lo = 0.7;
    o->gamma_hi = 1.5;
}

void augment_off(AugmentOptions *o)
{
    memset(o, 0, sizeof *o);
}

void augment_identity(AugXform *t)
{
    memset(t, 0, sizeof *t);
    for (int i = 0; i < 3; i++)
        t->A[i][i] = 1.0;
}

/* t = t * (rotation by a about tensor axis `axis`) */
static void rotate_about(AugXform *t, int axis, double a)
{
    int u = (axis + 1) % 3, v = (axis + 2) % 3;
    double R[3][3] = {{0}}, M[3][3];
    R[axis][axis] = 1.0;
    R[u][u] = cos(a);
    R[u][v] = -sin(a);
    R[v][u] = sin(a);
    R[v][v] = cos(a);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            double s = 0.0;
            for (int k = 0; k < 3; k++)
                s += t->A[i][k] * R[k][j];
            M[i][j] = s;
        }
    memcpy(t->A, M, sizeof M);
}

void augment_draw_xform(const AugmentOptions *o, int dims, Rng *r,
                        AugXform *t)
{
    augment_identity(t);
    if (!o->enabled) return;
    int first = dims == 2 ? 1 : 0; /* 2D: axis 0 is the slice index */
    double flip[3] = {1.0, 1.0, 1.0};
    for (int a = first; a < 3; a++)
        if (rng_uniform(r) < o->p_flip) flip[a] = -1.0;
    if (rng_uniform(r) < o->p_rotate) {
        if (dims == 2) {
            rotate_about(t, 0, rng_range(r, -o->max_angle, o->max_angle));
        } else {
            for (int a = 0; a < 3; a++)
                rotate_about(t, a, rng_range(r, -o->max_angle, o->max_angle));
        }
    }
    double s = 1.0;
    if (rng_uniform(r) < o->p_scale)
        s = rng_range(r, o->scale_lo, o->scale_hi);
    /* A = s R F: flip the output axis first, then rotate and scale. */
    for (int i = first; i < 3; i++)
        for (int j = first; j < 3; j++)
            t->A[i][j] *= s * flip[j];
}

/* floor() for source coordinates (|v| far below 2^62: the case and
 * patch sizes are bounded by the sampler): the baseline x86-64 target
 * has no rounding instruction, so libm's floor is a call per tap. */
static inline double fast_floor(double v)
{
    double t = (double)(int64_t)v;
    return t > v ? t - 1.0 : t;
}

/* Range [*lo, *hi] of o2 in [0, P2) for which p + d * o2 lies in
 * [0, S) along one axis (d in {-1, 0, 1}); empty if *lo > *hi. */
static void clip_line(int64_t p, int64_t d, int64_t S, int64_t *lo,
                      int64_t *hi)
{
    int64_t a, b;
    if (d == 0) {
        if (p < 0 || p >= S) *hi = -1;
        return;
    }
    if (d > 0) {
        a = -p;
        b = S - 1 - p;
    } else {
        a = p - (S - 1);
        b = p;
    }
    if (a > *lo) *lo = a;
    if (b < *hi) *hi = b;
}

/* Exact path: every source coordinate is an integer (A has entries in
 * {-1, 0, 1} and the start point is integral), so the patch is a copy
 * with an index permutation; outside voxels read 0.  Along an output
 * row the source moves by a constant stride, so each row is clipped
 * once and copied. */
static void resample_integral(float *x, uint8_t *y, const float *img,
                              const uint8_t *lab, int C, const int64_t S[3],
                              const int64_t P[3], const int64_t b[3],
                              int64_t A[3][3])
{
    int64_t vol = S[0] * S[1] * S[2], pvol = P[0] * P[1] * P[2];
    int64_t step = (A[0][2] * S[1] + A[1][2]) * S[2] + A[2][2];
    for (int64_t o0 = 0; o0 < P[0]; o0++)
        for (int64_t o1 = 0; o1 < P[1]; o1++) {
            int64_t q0 = (o0 * P[1] + o1) * P[2], p[3];
            int64_t lo = 0, hi = P[2] - 1;
            for (int r = 0; r < 3; r++) {
                p[r] = b[r] + A[r][0] * o0 + A[r][1] * o1;
                clip_line(p[r], A[r][2], S[r], &lo, &hi);
            }
            if (lo > hi)
                lo = hi = P[2]; /* whole row outside */
            else
                hi++; /* [lo, hi) */
            int64_t src = (p[0] * S[1] + p[1]) * S[2] + p[2];
            for (int c = 0; c < C; c++) {
                float *xr = x + c * pvol + q0;
                const float *sr = img + c * vol + src;
                for (int64_t o2 = 0; o2 < lo; o2++)
                    xr[o2] = 0.0f;
                for (int64_t o2 = lo; o2 < hi; o2++)
                    xr[o2] = sr[o2 * step];
                for (int64_t o2 = hi; o2 < P[2]; o2++)
                    xr[o2] = 0.0f;
            }
            if (!y) continue;
            uint8_t *yr = y + q0;
            for (int64_t o2 = 0; o2 < P[2]; o2++)
                yr[o2] =
                    o2 >= lo && o2 < hi && lab ? lab[src + o2 * step] : 0;
        }
}

/* Linear taps of source point p: up to 8 (offset, weight) pairs inside
 * the case; a zero fraction drops the upper tap, so 2D (axis 0
 * integral) costs 4.  Returns the count. */
static int linear_taps(const double p[3], const int64_t S[3], int64_t off[8],
                       double wt[8])
{
    int nt = 0;
    double f0 = fast_floor(p[0]), f1 = fast_floor(p[1]),
           f2 = fast_floor(p[2]);
    double w0 = p[0] - f0, w1 = p[1] - f1, w2 = p[2] - f2;
    for (int d0 = 0; d0 <= (w0 > 0.0); d0++) {
        double i0 = f0 + d0;
        if (i0 < 0.0 || i0 >= (double)S[0]) continue;
        double a0 = d0 ? w0 : 1.0 - w0;
        for (int d1 = 0; d1 <= (w1 > 0.0); d1++) {
            double i1 = f1 + d1;
            if (i1 < 0.0 || i1 >= (double)S[1]) continue;
            double a1 = a0 * (d1 ? w1 : 1.0 - w1);
            for (int d2 = 0; d2 <= (w2 > 0.0); d2++) {
                double i2 = f2 + d2;
                if (i2 < 0.0 || i2 >= (double)S[2]) continue;
                off[nt] =
                    ((int64_t)i0 * S[1] + (int64_t)i1) * S[2] + (int64_t)i2;
                wt[nt++] = a1 * (d2 ? w2 : 1.0 - w2);
            }
        }
    }
    return nt;
}

void augment_resample(float *x, uint8_t *y, const float *img,
                      const uint8_t *lab, int C, const int64_t S[3],
                      const int64_t P[3], const double c[3],
                      const AugXform *t)
{
    const double(*A)[3] = t->A;
    double h[3], b[3];
    for (int r = 0; r < 3; r++)
        h[r] = 0.5 * (double)(P[r] - 1);
    int integral = 1;
    int64_t Ai[3][3], bi[3];
    for (int r = 0; r < 3; r++) {
        b[r] = c[r] - A[r][0] * h[0] - A[r][1] * h[1] - A[r][2] * h[2];
        integral &= b[r] == floor(b[r]) && fabs(b[r]) < 1e15;
        bi[r] = integral ? (int64_t)b[r] : 0;
        for (int k = 0; k < 3; k++) {
            integral &= A[r][k] == 0.0 || A[r][k] == 1.0 || A[r][k] == -1.0;
            Ai[r][k] = (int64_t)A[r][k];
        }
    }
    if (integral) {
        resample_integral(x, y, img, lab, C, S, P, bi, Ai);
        return;
    }
    int64_t vol = S[0] * S[1] * S[2], pvol = P[0] * P[1] * P[2];
    int64_t s1 = S[2], s0 = S[1] * S[2];
    for (int64_t o0 = 0; o0 < P[0]; o0++)
        for (int64_t o1 = 0; o1 < P[1]; o1++) {
            int64_t q0 = (o0 * P[1] + o1) * P[2];
            double row[3];
            for (int r = 0; r < 3; r++)
                row[r] = b[r] + A[r][0] * (double)o0 + A[r][1] * (double)o1;
            for (int64_t o2 = 0; o2 < P[2]; o2++) {
                double p[3];
                for (int r = 0; r < 3; r++)
                    p[r] = row[r] + A[r][2] * (double)o2;
                if (y) {
                    int64_t n[3];
                    int in = 1;
                    for (int r = 0; r < 3; r++) {
                        double f = fast_floor(p[r] + 0.5);
                        in &= f >= 0.0 && f < (double)S[r];
                        n[r] = in ? (int64_t)f : 0;
                    }
                    y[q0 + o2] =
                        in && lab ? lab[n[0] * s0 + n[1] * s1 + n[2]] : 0;
                }
                double f0 = fast_floor(p[0]), f1 = fast_floor(p[1]),
                       f2 = fast_floor(p[2]);
                double w0 = p[0] - f0, w1 = p[1] - f1, w2 = p[2] - f2;
                /* Interior fast path: all taps inside; axis 0 integral
                 * (every 2D sample) needs only the 4 taps of its plane. */
                if (f0 >= 0.0 && f0 + (w0 > 0.0) < (double)S[0] &&
                    f1 >= 0.0 && f1 + 1.0 < (double)S[1] && f2 >= 0.0 &&
                    f2 + 1.0 < (double)S[2]) {
                    int64_t base =
                        (int64_t)f0 * s0 + (int64_t)f1 * s1 + (int64_t)f2;
                    double a00 = (1.0 - w1) * (1.0 - w2),
                           a01 = (1.0 - w1) * w2;
                    double a10 = w1 * (1.0 - w2), a11 = w1 * w2;
                    for (int ch = 0; ch < C; ch++) {
                        const float *q = img + ch * vol + base;
                        double v = a00 * (double)q[0] + a01 * (double)q[1] +
                                   a10 * (double)q[s1] +
                                   a11 * (double)q[s1 + 1];
                        if (w0 > 0.0) {
                            q += s0;
                            double u =
                                a00 * (double)q[0] + a01 * (double)q[1] +
                                a10 * (double)q[s1] + a11 * (double)q[s1 + 1];
                            v = (1.0 - w0) * v + w0 * u;
                        }
                        x[ch * pvol + q0 + o2] = (float)v;
                    }
                    continue;
                }
                int64_t off[8];
                double wt[8];
                int nt = linear_taps(p, S, off, wt);
                for (int ch = 0; ch < C; ch++) {
                    const float *src = img + ch * vol;
                    double v = 0.0;
                    for (int k = 0; k < nt; k++)
                        v += wt[k] * (double)src[off[k]];
                    x[ch * pvol + q0 + o2] = (float)v;
                }
            }
        }
}

/* Gamma on x[0..n) (one channel): rescale to [0, 1] by min/max, power,
 * back; then restore the original mean and std (retain_stats). */
static void gamma_channel(float *x, int64_t n, double gamma, int invert)
{
    double sgn = invert ? -1.0 : 1.0;
    double s = 0.0, ss = 0.0, mn = INFINITY, mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        double v = sgn * (double)x[i];
        s += v;
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
    }
    double mean = s / (double)n;
    for (int64_t i = 0; i < n; i++) {
        double d = sgn * (double)x[i] - mean;
        ss += d * d;
    }
    double sd = sqrt(ss / (double)n);
    double range = mx - mn + 1e-7; /* batchgenerators' epsilon */
    double s2 = 0.0, ss2 = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double v = sgn * (double)x[i];
        v = pow((v - mn) / range, gamma) * range + mn;
        x[i] = (float)v;
        s2 += v;
    }
    double mean2 = s2 / (double)n;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)x[i] - mean2;
        ss2 += d * d;
    }
    double sd2 = sqrt(ss2 / (double)n);
    double k = sd / (sd2 + 1e-8);
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(sgn * (((double)x[i] - mean2) * k + mean));
}

static double draw_gamma(const AugmentOptions *o, Rng *r)
{
    if (rng_uniform(r) < 0.5 && o->gamma_lo < 1.0)
        return rng_range(r, o->gamma_lo, 1.0);
    double lo = o->gamma_lo > 1.0 ? o->gamma_lo : 1.0;
    return rng_range(r, lo, o->gamma_hi);
}

void augment_intensity(float *x, int C, int64_t n, const AugmentOptions *o,
                       Rng *r)
{
    if (!o->enabled || n < 1) return;
    if (rng_uniform(r) < o->p_noise) {
        double sigma = rng_range(r, 0.0, o->noise_sigma_max);
        for (int64_t i = 0; i < (int64_t)C * n; i++)
            x[i] += (float)(sigma * rng_normal(r));
    }
    if (rng_uniform(r) < o->p_gamma_invert)
        for (int c = 0; c < C; c++)
            gamma_channel(x + c * n, n, draw_gamma(o, r), 1);
    if (rng_uniform(r) < o->p_gamma)
        for (int c = 0; c < C; c++)
            gamma_channel(x + c * n, n, draw_gamma(o, r), 0);
}
