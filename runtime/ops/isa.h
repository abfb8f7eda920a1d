/* ISA guards: the one place that says which instruction sets a kernel may
 * use.  The runtime builds on any C11 compiler with OpenMP (x86-64,
 * aarch64, ...); x86 intrinsics compile only where SL_ISA_X86 is 1.
 *
 * The pattern every kernel file with intrinsics follows:
 *
 *   #include "isa.h"
 *   #if SL_ISA_X86
 *   #include <immintrin.h>
 *   __attribute__((target("avx2,fma"))) static void k_avx2(...) { ... }
 *   #else
 *   static void k_avx2(...) { ... the same result, plain C ... }  (only
 *                       where a call site needs the name; else nothing)
 *   #endif
 *
 * and chooses at run time: an x86 kernel runs only if SL_ISA_X86 and the
 * CPU has the extension (gemm_isa_best(), vec_use_avx2(), both built on
 * __builtin_cpu_supports, which exists only on x86).  Every kernel keeps
 * its portable scalar (or vecmath.h 4-lane) path, which is what other
 * architectures run, and the tests compare the two on x86.  Never use
 * -march/-mavx flags: the build must stay runnable on any CPU of the
 * architecture.
 *
 * To add a kernel for another ISA (NEON, SVE), add its SL_ISA_ macro here
 * and follow the same pattern.
 */
#ifndef SL_ISA_H
#define SL_ISA_H

#if defined(__x86_64__) && defined(__GNUC__)
#define SL_ISA_X86 1
#else
#define SL_ISA_X86 0
#endif

#endif
