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
#include <stdlib.h>
#include <string.h>

#include "isa.h"

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
 * exp(0) = 1).  NaN gives NaN.  Positive x is not supported.
 *
 * One body for every vector width (the 8-lane AVX2 copy below): each
 * lane does the same IEEE operations in the same order, so the result
 * does not depend on the width or the CPU.  Scalar operands broadcast. */
#define SL_DEFINE_EXP_NEG(NAME, VF, VI)                                      \
    static inline VF NAME(VF x)                                              \
    {                                                                        \
        const float round = 12582912.0f; /* 1.5 * 2^23 */                    \
        VF zero = {0}, lo = zero - 87.0f;                                    \
        VI tiny = x < lo;                                                    \
        VF xc = (VF)((tiny & (VI)lo) | (~tiny & (VI)x));                     \
        /* adding and subtracting 1.5 * 2^23 rounds to the nearest int */    \
        VF n = (xc * 1.44269504088896341f + round) - round;                  \
        /* ln2 = 0.693145751953125 (12 bits, exact) + 1.4286068203e-6 */     \
        VF r = (xc - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;  \
        VF p = (1.0f / 5040.0f) + r * (1.0f / 40320.0f);                     \
        p = (1.0f / 720.0f) + r * p;                                         \
        p = (1.0f / 120.0f) + r * p;                                         \
        p = (1.0f / 24.0f) + r * p;                                          \
        p = (1.0f / 6.0f) + r * p;                                           \
        p = 0.5f + r * p;                                                    \
        p = 1.0f + r * p;                                                    \
        p = 1.0f + r * p;                                                    \
        VI e = (__builtin_convertvector(n, VI) + 127) << 23;                 \
        VF y = p * (VF)e;                                                    \
        VI zap = tiny & (x == x); /* below the range, not NaN: 0 */          \
        return (VF)(~zap & (VI)y);                                           \
    }

SL_DEFINE_EXP_NEG(vf4_exp_neg, vf4, vi4)

/* 8-float vectors for functions compiled for AVX2 (target attribute,
 * chosen at run time with __builtin_cpu_supports("avx2")).  Everything
 * using vf8 must itself be target("avx2"), or the calling convention of
 * these helpers would change (-Wpsabi). */
#if SL_ISA_X86
#define SL_HAVE_VF8 1
#pragma GCC push_options
#pragma GCC target("avx2")
typedef float vf8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));
static inline vf8 vf8_load(const float *p)
{
    vf8 v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void vf8_store(float *p, vf8 v)
{
    memcpy(p, &v, sizeof v);
}
static inline vf8 vf8_set1(float s)
{
    return (vf8){s, s, s, s, s, s, s, s};
}
static inline vf8 vf8_select(vi8 m, vf8 a, vf8 b)
{
    return (vf8)((m & (vi8)a) | (~m & (vi8)b));
}
static inline vf8 vf8_relu(vf8 v)
{
    return vf8_select(v > vf8_set1(0.0f), v, vf8_set1(0.0f));
}
static inline vf8 vf8_leaky(vf8 v, float alpha)
{
    return vf8_select(v >= vf8_set1(0.0f), v, v * alpha);
}
SL_DEFINE_EXP_NEG(vf8_exp_neg, vf8, vi8)
#pragma GCC pop_options
#endif

/* Nonzero if the 8-lane AVX2 loops may run.  They give the same bits as
 * the 4-lane ones; SL_VEC_ISA=sse forces the 4-lane path so that tests
 * can check that on an AVX2 machine. */
static inline int vec_use_avx2(void)
{
#ifdef SL_HAVE_VF8
    const char *cap = getenv("SL_VEC_ISA");
    if (cap && !strcmp(cap, "sse")) return 0;
    return __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

#endif
