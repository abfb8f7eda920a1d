/* Portable 4-float vectors (GCC/Clang vector extensions) for the
 * elementwise, normalisation and softmax kernels.
 *
 * Why not plain loops: gcc at -O2 will not if-convert `x >= 0 ? x : a*x`
 * (an ordered compare may trap on NaN), so such a loop stays scalar with
 * a branch per element; and expf() is a library call per element.  These
 * helpers state the select and the exp explicitly.  Four lanes: the
 * width of SSE2, which every x86-64 has (wider vectors without -mavx
 * would change the calling convention of these helpers, -Wpsabi).
 *
 * Loads and stores go through memcpy: no alignment is assumed.
 */
#ifndef SL_VECMATH_H
#define SL_VECMATH_H

#include <stdint.h>
#include <string.h>

#define VF_W 4
typedef float vf4 __attribute__((vector_size(16)));
typedef int32_t vi4 __attribute__((vector_size(16)));

static inline vf4 vf4_load(const float *p)
{
    vf4 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void vf4_store(float *p, vf4 v)
{
    memcpy(p, &v, sizeof v);
}

static inline vf4 vf4_set1(float s)
{
    return (vf4){s, s, s, s};
}

/* m ? a : b per lane, m from a vector compare (all ones or all zeros). */
static inline vf4 vf4_select(vi4 m, vf4 a, vf4 b)
{
    return (vf4)((m & (vi4)a) | (~m & (vi4)b));
}

/* Relu as max(v, 0) with the scalar rule v > 0 ? v : 0 (NaN -> 0). */
static inline vf4 vf4_relu(vf4 v)
{
    return vf4_select(v > vf4_set1(0.0f), v, vf4_set1(0.0f));
}

/* LeakyRelu: v >= 0 ? v : alpha * v (NaN -> NaN). */
static inline vf4 vf4_leaky(vf4 v, float alpha)
{
    return vf4_select(v >= vf4_set1(0.0f), v, v * alpha);
}

static inline float sf_relu(float v)
{
    return v > 0.0f ? v : 0.0f;
}
static inline float sf_leaky(float v, float alpha)
{
    return v >= 0.0f ? v : alpha * v;
}

/* exp(x) for x <= 0 (softmax after subtracting the maximum).
 *
 * x = n ln2 + r with n = round(x / ln2), |r| <= ln2 / 2, ln2 split in a
 * high part exact in float and a low part (Cody-Waite), so r is exact to
 * ~1 ulp; exp(r) by its Taylor polynomial of degree 7 (truncation error
 * r^8/8! < 6e-9 relative); 2^n by building the exponent bits.  Measured
 * against exp() in double over [-87, 0]: max relative error 9.5e-8
 * (1.6 ulp); tests/test_fused.c checks < 2e-7 on a sweep.  x < -87 gives 0
 * (the true value is below 2^-125, negligible next to the softmax maximum's
 * exp(0) = 1).  NaN gives NaN.  Positive x is not supported. */
static inline vf4 vf4_exp_neg(vf4 x)
{
    const vf4 log2e = vf4_set1(1.44269504088896341f);
    const vf4 ln2_hi = vf4_set1(0.693145751953125f); /* 12 bits, exact */
    const vf4 ln2_lo = vf4_set1(1.42860682030941723e-6f);
    const vf4 round = vf4_set1(12582912.0f); /* 1.5 * 2^23 */
    vi4 tiny = x < vf4_set1(-87.0f);
    vf4 xc = vf4_select(tiny, vf4_set1(-87.0f), x);
    /* adding and subtracting 1.5 * 2^23 rounds to the nearest integer */
    vf4 n = (xc * log2e + round) - round;
    vf4 r = (xc - n * ln2_hi) - n * ln2_lo;
    vf4 p = vf4_set1(1.0f / 5040.0f) + r * (1.0f / 40320.0f);
    p = vf4_set1(1.0f / 720.0f) + r * p;
    p = vf4_set1(1.0f / 120.0f) + r * p;
    p = vf4_set1(1.0f / 24.0f) + r * p;
    p = vf4_set1(1.0f / 6.0f) + r * p;
    p = vf4_set1(0.5f) + r * p;
    p = vf4_set1(1.0f) + r * p;
    p = vf4_set1(1.0f) + r * p;
    vi4 e = (__builtin_convertvector(n, vi4) + 127) << 23;
    vf4 y = p * (vf4)e;
    return vf4_select(tiny & (x == x), vf4_set1(0.0f), y);
}

#endif
