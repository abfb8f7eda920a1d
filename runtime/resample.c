/* Scan <-> model grid resampling: see resample.h.
 *
 * Both directions parallelise over the slowest voxel axis of what they
 * write (each thread writes its own planes or rows) and interpolate each
 * voxel in a fixed order, so results do not depend on the thread count. */
#include "resample.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "common.h"
#include "ops/isa.h"
#include "ops/vecmath.h"
#include "orient.h"
#if SL_ISA_X86
#include <immintrin.h>
#endif

static int threads(int n)
{
    return n > 0 ? n : omp_get_num_procs();
}

/* Clamp a voxel coordinate to [0, n-1] and split it into a base index
 * and the weight of the next voxel (0 on the last voxel, so a clamped or
 * integer coordinate reads one voxel only). */
static void split_coord(double x, int64_t n, int64_t *i0, double *f)
{
    if (x < 0.0) x = 0.0;
    if (x > (double)(n - 1)) x = (double)(n - 1);
    /* x >= 0 here, so truncation is floor (and needs no libm call) */
    *i0 = (int64_t)x;
    *f = x - (double)*i0;
    if (*i0 >= n - 1) {
        *i0 = n - 1;
        *f = 0.0;
    }
}

/* A map that is a signed permutation plus an integer shift (a scan
 * stored in another axis order at the model's spacing): coordinate r =
 * sign[r] * x[src[r]] + off[r].  Both directions then index voxels
 * directly, with the results the interpolating paths give for such maps
 * (one voxel with weight 1), at a fraction of their cost. */
typedef struct {
    int src[3], sign[3];
    int64_t off[3];
} Perm;

static int exact_perm(const Affine *a, Perm *p)
{
    int used[3] = {0};
    for (int r = 0; r < 3; r++) {
        p->src[r] = -1;
        for (int c = 0; c < 3; c++) {
            double v = a->m[r][c];
            if (fabs(fabs(v) - 1.0) <= 1e-9 && p->src[r] < 0 && !used[c]) {
                p->src[r] = c;
                p->sign[r] = v > 0 ? 1 : -1;
            } else if (fabs(v) > 1e-9) {
                return 0;
            }
        }
        if (p->src[r] < 0) return 0;
        used[p->src[r]] = 1;
        double t = orient_snap(a->m[r][3]);
        if (t != nearbyint(t) || fabs(t) > 1e15) return 0;
        p->off[r] = (int64_t)t;
    }
    return 1;
}

/* Coordinate r of voxel (i, j, k) under a map whose row r is `row`,
 * snapped: every path that locates a voxel (resampling, back-mapping and
 * its plane keys) evaluates it this way, so they agree to the bit. */
static double map_coord(const double row[4], int64_t i, int64_t j, int64_t k)
{
    return orient_snap(row[0] * (double)i + row[1] * (double)j +
                       row[2] * (double)k + row[3]);
}

/* ---- scan -> model grid ---- */

/* Trilinear sample of the (already normalised) modality plane src
 * [nz][ny][nx] at voxel coordinates p (snapped).  Weights that are 0 are
 * skipped, so an integer position returns the voxel itself.  Corner c
 * takes the upper voxel along axis a when bit a of c is set; its weight
 * is the product of the three axis weights in axis order. */
static float sample(const float *src, const int64_t d[3], const double p[3],
                    float fill)
{
    int64_t i0[3];
    double f[3];
    for (int a = 0; a < 3; a++) {
        if (p[a] < -0.5 || p[a] > (double)d[a] - 0.5) return fill;
        split_coord(p[a], d[a], &i0[a], &f[a]);
    }
    const double wx[2] = {1.0 - f[0], f[0]}, wy[2] = {1.0 - f[1], f[1]},
                 wz[2] = {1.0 - f[2], f[2]};
    const size_t sy = (size_t)d[0], sz = (size_t)(d[0] * d[1]);
    const float *base = src + (size_t)((i0[2] * d[1] + i0[1]) * d[0] + i0[0]);
    double acc = 0.0;
#pragma GCC unroll 8
    for (int c = 0; c < 8; c++) {
        int hx = c & 1, hy = c >> 1 & 1, hz = c >> 2 & 1;
        double w = wx[hx] * wy[hy] * wz[hz];
        if (w == 0.0) continue;
        float v = base[(size_t)hx + (size_t)hy * sy + (size_t)hz * sz];
        acc += w * (double)v;
    }
    return (float)acc;
}

#if SL_ISA_X86
/* orient_snap on 4 lanes, the same operations in the same order. */
__attribute__((target("avx2"))) static __m256d snap4(__m256d x)
{
    const __m256d sign = _mm256_set1_pd(-0.0),
                  big = _mm256_set1_pd(6755399441055744.0);
    __m256d r = _mm256_sub_pd(_mm256_add_pd(x, big), big);
    r = _mm256_or_pd(_mm256_andnot_pd(sign, r), _mm256_and_pd(sign, x));
    __m256d near = _mm256_cmp_pd(_mm256_andnot_pd(sign, _mm256_sub_pd(x, r)),
                                 _mm256_set1_pd(ORIENT_SNAP), _CMP_LE_OQ);
    __m256d small =
        _mm256_cmp_pd(_mm256_andnot_pd(sign, x),
                      _mm256_set1_pd(2251799813685248.0), _CMP_LT_OQ);
    return _mm256_blendv_pd(x, r, _mm256_and_pd(near, small));
}

/* A 4 x 64-bit lane mask as 4 x 32-bit (the low half of each lane). */
__attribute__((target("avx2"))) static __m128i mask4(__m256d m)
{
    return _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(
        _mm256_castpd_si256(m), _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0)));
}

/* map_coord of voxels (i..i+3, j, k) for iv = {i, .., i+3}, bit for bit. */
__attribute__((target("avx2"))) static __m256d
map_coord4(const double row[4], __m256d iv, int64_t j, int64_t k)
{
    __m256d p = _mm256_add_pd(_mm256_mul_pd(_mm256_set1_pd(row[0]), iv),
                              _mm256_set1_pd(row[1] * (double)j));
    p = _mm256_add_pd(p, _mm256_set1_pd(row[2] * (double)k));
    return snap4(_mm256_add_pd(p, _mm256_set1_pd(row[3])));
}

/* Voxels [0, n - n % 4) of model row (j, k): sample() on four voxels at
 * a time, bit for bit.  The lanes do sample()'s operations in its order
 * (positions by map_coord's sums, clamps, weights (wx * wy) * wz, the
 * corners added 0..7, no fused multiply-add); a corner whose weight is 0
 * reads a voxel inside the volume instead of being skipped and adds an
 * exact +0, which leaves the sum as sample() has it.  Needs fewer than
 * 2^31 source voxels (32-bit gather indices).  Returns the voxels done. */
__attribute__((target("avx2"))) static int64_t
sample_row_avx2(float *row, int64_t n, const float *src, const int64_t d[3],
                const double (*m)[4], int64_t j, int64_t k, float fill)
{
    const __m256d zero = _mm256_setzero_pd(), one = _mm256_set1_pd(1.0);
    const __m128i sy = _mm_set1_epi32((int)d[0]),
                  sz = _mm_set1_epi32((int)(d[0] * d[1]));
    __m256d top[3], lim[3];
    for (int r = 0; r < 3; r++) {
        top[r] = _mm256_set1_pd((double)(d[r] - 1));
        lim[r] = _mm256_set1_pd((double)d[r] - 0.5);
    }
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m256d iv = _mm256_set_pd((double)(i + 3), (double)(i + 2),
                                   (double)(i + 1), (double)i);
        __m256d in = _mm256_castsi256_pd(_mm256_set1_epi64x(-1));
        __m256d f[3];
        __m128i i0[3];
#pragma GCC unroll 3
        for (int r = 0; r < 3; r++) {
            __m256d p = map_coord4(m[r], iv, j, k);
            in = _mm256_and_pd(
                in, _mm256_cmp_pd(p, _mm256_set1_pd(-0.5), _CMP_GE_OQ));
            in = _mm256_and_pd(in, _mm256_cmp_pd(p, lim[r], _CMP_LE_OQ));
            /* clamped to [0, d-1]: the truncation is the floor, and the
             * last voxel's weight f is 0 by itself */
            __m256d x = _mm256_min_pd(_mm256_max_pd(p, zero), top[r]);
            i0[r] = _mm256_cvttpd_epi32(x);
            f[r] = _mm256_sub_pd(x, _mm256_cvtepi32_pd(i0[r]));
        }
        if (_mm256_testz_pd(in, in)) { /* all four outside */
            _mm_storeu_ps(row + i, _mm_set1_ps(fill));
            continue;
        }
        __m256d wx[2] = {_mm256_sub_pd(one, f[0]), f[0]},
                wy[2] = {_mm256_sub_pd(one, f[1]), f[1]},
                wz[2] = {_mm256_sub_pd(one, f[2]), f[2]};
        /* Four voxels on one source row (a slightly turned grid: the
         * usual case) read their corners as 4-float runs, not gathers:
         * the lanes share y0 and z0, their x0 are consecutive, and the
         * upper neighbours along all three axes lie inside the volume
         * (a corner of weight 0 is then read from there: any value,
         * masked to +0 as in the gather path). */
        __m128i x00 = _mm_shuffle_epi32(i0[0], 0);
        __m128i same = _mm_and_si128(
            _mm_and_si128(
                _mm_cmpeq_epi32(i0[1], _mm_shuffle_epi32(i0[1], 0)),
                _mm_cmpeq_epi32(i0[2], _mm_shuffle_epi32(i0[2], 0))),
            _mm_cmpeq_epi32(i0[0],
                            _mm_add_epi32(x00, _mm_setr_epi32(0, 1, 2, 3))));
        int x0 = _mm_cvtsi128_si32(i0[0]), y0 = _mm_cvtsi128_si32(i0[1]),
            z0 = _mm_cvtsi128_si32(i0[2]);
        const float *run = NULL;
        if (_mm_movemask_epi8(same) == 0xffff && x0 + 4 < d[0] &&
            y0 + 1 < d[1] && z0 + 1 < d[2])
            run = src +
                  ((size_t)z0 * (size_t)d[1] + (size_t)y0) * (size_t)d[0] +
                  (size_t)x0;
        /* otherwise the gathers' indices: the upper voxel's offset along
         * each axis is 0 where its weight is 0 (it may lie past the edge) */
        __m128i at = _mm_setzero_si128(), ox = at, oy = at, oz = at;
        if (!run) {
            __m128i up[3];
            for (int r = 0; r < 3; r++)
                up[r] = _mm256_cvtpd_epi32(_mm256_and_pd(
                    _mm256_cmp_pd(f[r], zero, _CMP_NEQ_UQ), one));
            at = _mm_add_epi32(
                _mm_mullo_epi32(
                    _mm_add_epi32(
                        _mm_mullo_epi32(i0[2], _mm_set1_epi32((int)d[1])),
                        i0[1]),
                    sy),
                i0[0]);
            ox = up[0];
            oy = _mm_mullo_epi32(up[1], sy);
            oz = _mm_mullo_epi32(up[2], sz);
        }
        __m256d acc = zero;
#pragma GCC unroll 8
        for (int c = 0; c < 8; c++) {
            int hx = c & 1, hy = c >> 1 & 1, hz = c >> 2 & 1;
            __m256d w = _mm256_mul_pd(_mm256_mul_pd(wx[hx], wy[hy]), wz[hz]);
            __m256d v;
            if (run) {
                v = _mm256_cvtps_pd(
                    _mm_loadu_ps(run + hx + (size_t)hy * (size_t)d[0] +
                                 (size_t)hz * (size_t)d[0] * (size_t)d[1]));
            } else {
                __m128i idx = at;
                if (hx) idx = _mm_add_epi32(idx, ox);
                if (hy) idx = _mm_add_epi32(idx, oy);
                if (hz) idx = _mm_add_epi32(idx, oz);
                v = _mm256_cvtps_pd(_mm_i32gather_ps(src, idx, 4));
            }
            __m256d t = _mm256_and_pd(_mm256_mul_pd(w, v),
                                      _mm256_cmp_pd(w, zero, _CMP_NEQ_UQ));
            acc = _mm256_add_pd(acc, t);
        }
        __m128 out = _mm256_cvtpd_ps(acc);
        out = _mm_blendv_ps(_mm_set1_ps(fill), out,
                            _mm_castsi128_ps(mask4(in)));
        _mm_storeu_ps(row + i, out);
    }
    return i;
}
#else
static int64_t sample_row_avx2(float *row, int64_t n, const float *src,
                               const int64_t d[3], const double (*m)[4],
                               int64_t j, int64_t k, float fill)
{
    (void)row, (void)n, (void)src, (void)d, (void)m, (void)j, (void)k,
        (void)fill;
    return 0;
}
#endif

void resample_volume(Volume *dst, Volume *src, const NormAffine *na,
                     const Affine *map, int n_threads)
{
    const double(*m)[4] = map->m;
    int64_t snv = volume_voxels(src), dnv = volume_voxels(dst);
    for (int c = 0; c < src->n_mod; c++) {
        float *s = src->data + (size_t)c * (size_t)snv;
        float mn = s[0];
        for (int64_t i = 1; i < snv; i++)
            if (s[i] < mn) mn = s[i];
        float fill = norm_apply(&na[c], mn);
        /* normalise once in place (the caller is done with the raw
         * scan): trilinear sampling then reads each voxel up to 8 times
         * without clamping and scaling it each time; the values are the
         * ones norm_apply gives, so the result is unchanged */
        const NormAffine nc = na[c];
#pragma omp parallel for num_threads(threads(n_threads)) schedule(static)
        for (int64_t i = 0; i < snv; i++)
            s[i] = norm_apply(&nc, s[i]);
        float *o = dst->data + (size_t)c * (size_t)dnv;
        const int64_t *dd = dst->dim;
        Perm pm;
        if (exact_perm(map, &pm)) {
            const int64_t *sd = src->dim;
#pragma omp parallel for num_threads(threads(n_threads)) schedule(static)
            for (int64_t k = 0; k < dd[2]; k++)
                for (int64_t j = 0; j < dd[1]; j++) {
                    float *row = o + (size_t)((k * dd[1] + j) * dd[0]);
                    for (int64_t i = 0; i < dd[0]; i++) {
                        int64_t q[3] = {i, j, k}, p[3];
                        int in = 1;
                        for (int r = 0; r < 3; r++) {
                            p[r] = pm.sign[r] * q[pm.src[r]] + pm.off[r];
                            in &= p[r] >= 0 && p[r] < sd[r];
                        }
                        row[i] = in ? s[(p[2] * sd[1] + p[1]) * sd[0] + p[0]]
                                    : fill;
                    }
                }
            continue;
        }
        const int avx2 = vec_use_avx2() && snv < INT32_MAX;
#pragma omp parallel for num_threads(threads(n_threads)) schedule(static)
        for (int64_t k = 0; k < dd[2]; k++)
            for (int64_t j = 0; j < dd[1]; j++) {
                float *row = o + (size_t)((k * dd[1] + j) * dd[0]);
                int64_t i0 = avx2 ? sample_row_avx2(row, dd[0], s, src->dim,
                                                    m, j, k, fill)
                                  : 0;
                for (int64_t i = i0; i < dd[0]; i++) {
                    double p[3];
                    for (int r = 0; r < 3; r++)
                        p[r] = map_coord(m[r], i, j, k);
                    row[i] = sample(s, src->dim, p, fill);
                }
            }
    }
}

/* ---- model grid -> scan ---- */

struct BackMap {
    int64_t sdim[3], mdim[3];
    Affine map;
    int a0, u, w; /* plane axis; in-plane model axes (u < w) */
    int nc, nt;
    int exact; /* map is a Perm: label_plane_exact */
    Perm perm;
    int16_t *labels;
    float *probs;
    size_t plane;   /* mdim[u] * mdim[w] */
    float *ring;    /* [2][nc][plane]: planes z-1 and z, slot z & 1 */
    int16_t *lring; /* [2][plane]: argmax of each ring voxel, -1 if every
                       score is NaN (label_voxel's shortcut); NULL for
                       exact maps and when probs are asked for */
    int avx2;       /* label_run_avx2 for the shortcut (needs lring) */
    int64_t next;   /* next plane expected */
    int64_t done;   /* scan voxels labelled */
};

int backmap_create(const int64_t scan_dim[3], const int64_t model_dim[3],
                   const Affine *m, int a0, int nc, int16_t *labels,
                   float *probs, int n_threads, BackMap **out)
{
    *out = NULL;
    BackMap *b = sl_calloc(1, sizeof *b);
    if (!b) goto nomem;
    memcpy(b->sdim, scan_dim, sizeof b->sdim);
    memcpy(b->mdim, model_dim, sizeof b->mdim);
    b->map = *m;
    /* the index path needs every scan voxel inside the model grid (true
     * of orient_model_grid's grids; checked on the box corners) */
    b->exact = exact_perm(m, &b->perm);
    for (int c = 0; b->exact && c < 8; c++)
        for (int r = 0; r < 3; r++) {
            int64_t x =
                (c >> b->perm.src[r] & 1) ? scan_dim[b->perm.src[r]] - 1 : 0;
            int64_t q = b->perm.sign[r] * x + b->perm.off[r];
            if (q < 0 || q >= model_dim[r]) b->exact = 0;
        }
    b->a0 = a0;
    b->u = a0 == 0 ? 1 : 0;
    b->w = a0 == 2 ? 1 : 2;
    b->nc = nc;
    b->nt = threads(n_threads);
    b->labels = labels;
    b->probs = probs;
    b->plane = (size_t)(model_dim[b->u] * model_dim[b->w]);
    b->ring = sl_calloc(2 * (size_t)nc * b->plane, sizeof(float));
    if (!b->ring) goto nomem;
    if (!b->exact && !probs) { /* label_voxel's shortcut only */
        /* one spare element for label_run_avx2's 32-bit reads */
        b->lring = sl_calloc(2 * b->plane + 1, sizeof(int16_t));
        if (!b->lring) goto nomem;
        b->avx2 = vec_use_avx2() && 2 * b->plane < INT32_MAX;
    }
    *out = b;
    return 0;
nomem:
    backmap_free(b);
    sl_error("out of memory for the score planes of the model grid");
    return ERR_NOMEM;
}

void backmap_free(BackMap *b)
{
    if (!b) return;
    sl_free(b->ring);
    sl_free(b->lring);
    sl_free(b);
}

int64_t backmap_done(const BackMap *b)
{
    return b->done;
}

/* ceil of z >= 0 without a libm call */
static int64_t ceil_pos(double z)
{
    int64_t t = (int64_t)z;
    return t + ((double)t < z);
}

/* The plane (along a0) whose arrival labels a voxel at a0-coordinate z:
 * the upper of the two it interpolates between. */
static int64_t plane_key(double z, int64_t n)
{
    if (z < 0.0) z = 0.0;
    if (z > (double)(n - 1)) z = (double)(n - 1);
    return ceil_pos(z);
}

/* Bilinear weights of an in-plane position: base (u0, w0) and the
 * weights of its 4 neighbours (00, u+1, w+1, both); a neighbour whose
 * weight is 0 is never read (it may lie past the plane's edge). */
typedef struct {
    size_t at, nu;
    double w00, w10, w01, w11;
    int hu, hw; /* fu != 0, fw != 0 */
} Bilin;

static Bilin bilin(const BackMap *b, const double q[3])
{
    int64_t u0, w0;
    double fu, fw;
    split_coord(q[b->u], b->mdim[b->u], &u0, &fu);
    split_coord(q[b->w], b->mdim[b->w], &w0, &fw);
    Bilin l;
    l.nu = (size_t)b->mdim[b->u];
    l.at = (size_t)w0 * l.nu + (size_t)u0;
    l.w00 = (1.0 - fu) * (1.0 - fw);
    l.w10 = fu * (1.0 - fw);
    l.w01 = (1.0 - fu) * fw;
    l.w11 = fu * fw;
    l.hu = fu != 0.0;
    l.hw = fw != 0.0;
    return l;
}

/* Bilinear read of class c of ring plane `slot`. */
static double plane_read(const BackMap *b, int slot, int c, const Bilin *l)
{
    const float *p = b->ring +
                     ((size_t)slot * (size_t)b->nc + (size_t)c) * b->plane +
                     l->at;
    double acc = l->w00 * (double)p[0];
    if (l->hu) acc += l->w10 * (double)p[1];
    if (l->hw) {
        acc += l->w01 * (double)p[l->nu];
        if (l->hu) acc += l->w11 * (double)p[l->nu + 1];
    }
    return acc;
}

/* The common argmax of the model voxels an interpolation at l reads
 * (ring plane `slot` and, if two, the other one), or -1 if they differ. Every
 * weight is >= 0 and the classes share them, and rounded products and
 * sums are monotonic, so where class c is the largest score at every
 * corner it is the largest interpolated score as well: the argmax
 * without interpolating (probabilities are not asked for).  Only an
 * interpolated tie with a lower class, which needs the corners' strict
 * differences to vanish in double rounding, could go the other way. */
static int corner_label(const BackMap *b, const Bilin *l, int slot, int two)
{
    int c = b->lring[(size_t)slot * b->plane + l->at];
    if (c < 0) return -1;
    for (int s = 0; s <= two; s++) {
        const int16_t *a = b->lring + (size_t)(slot ^ s) * b->plane + l->at;
        if (a[0] != c || (l->hu && a[1] != c) ||
            (l->hw && (a[l->nu] != c || (l->hu && a[l->nu + 1] != c))))
            return -1;
    }
    return c;
}

/* Label scan voxel (i, j, k) at model position q (snapped); its key is
 * the plane just stored. */
static void label_voxel(const BackMap *b, const double q[3], size_t vox)
{
    int64_t n0 = b->mdim[b->a0];
    double z = q[b->a0];
    if (z < 0.0) z = 0.0;
    if (z > (double)(n0 - 1)) z = (double)(n0 - 1);
    int64_t key = ceil_pos(z);
    double wl = (double)key - z; /* weight of plane key-1 */
    Bilin l = bilin(b, q);
    if (b->lring) {
        int c = corner_label(b, &l, (int)(key & 1), wl != 0.0);
        if (c >= 0) {
            b->labels[vox] = (int16_t)c;
            return;
        }
    }
    size_t nvox = (size_t)(b->sdim[0] * b->sdim[1] * b->sdim[2]);
    int best = -1;
    double bv = 0.0;
    for (int c = 0; c < b->nc; c++) {
        double s = plane_read(b, (int)(key & 1), c, &l);
        if (wl != 0.0)
            s = (1.0 - wl) * s +
                wl * plane_read(b, (int)((key - 1) & 1), c, &l);
        if (b->probs) b->probs[(size_t)c * nvox + vox] = (float)s;
        if (s == s && (best < 0 || s > bv)) {
            best = c;
            bv = s;
        }
    }
    b->labels[vox] = (int16_t)(best < 0 ? 0 : best);
}

/* label_plane for a Perm map: the voxels of plane z and their model
 * voxels by index; the argmax of the plane's scores (what label_voxel
 * gives at integer positions). */
static void label_plane_exact(BackMap *b, int64_t z)
{
    const int64_t *d = b->sdim;
    const Perm *pm = &b->perm;
    int64_t nu = b->mdim[b->u];
    size_t nvox = (size_t)(d[0] * d[1] * d[2]);
    const float *slot = b->ring + (size_t)(z & 1) * (size_t)b->nc * b->plane;
    int a0 = b->a0, u = b->u, w = b->w;
    int64_t done = 0;
#pragma omp parallel for num_threads(b->nt) schedule(static) \
    reduction(+ : done)
    for (int64_t k = 0; k < d[2]; k++)
        for (int64_t j = 0; j < d[1]; j++) {
            int64_t q0[3], step[3];
            int64_t p0[3] = {0, j, k};
            for (int r = 0; r < 3; r++) {
                q0[r] = pm->sign[r] * p0[pm->src[r]] + pm->off[r];
                step[r] = pm->src[r] == 0 ? pm->sign[r] : 0;
            }
            int64_t ilo = 0, ihi = d[0] - 1;
            if (step[a0] == 0) {
                if (q0[a0] != z) continue;
            } else {
                ilo = ihi = (z - q0[a0]) * step[a0]; /* step is +-1 */
                if (ilo < 0 || ilo >= d[0]) continue;
            }
            for (int64_t i = ilo; i <= ihi; i++) {
                int64_t qu = q0[u] + i * step[u], qw = q0[w] + i * step[w];
                size_t vox = (size_t)((k * d[1] + j) * d[0] + i);
                size_t at = (size_t)(qw * nu + qu);
                int best = -1;
                float bv = 0.0f;
                for (int c = 0; c < b->nc; c++) {
                    float s = slot[(size_t)c * b->plane + at];
                    if (b->probs) b->probs[(size_t)c * nvox + vox] = s;
                    if (s == s && (best < 0 || s > bv)) {
                        best = c;
                        bv = s;
                    }
                }
                b->labels[vox] = (int16_t)(best < 0 ? 0 : best);
                done++;
            }
        }
    b->done += done;
}

/* The key of scan voxel (i, j, k): r0 is the map's row of the plane
 * axis (map_coord, as label_plane's q). */
static int64_t row_key(const double *r0, int64_t i, int64_t j, int64_t k,
                       int64_t n0)
{
    return plane_key(map_coord(r0, i, j, k), n0);
}

/* The run of plane z in [lo, hi] of a row whose keys rise (up) or fall
 * with i and include z: its first index (last = 0) or its last. */
static int64_t run_edge(const double *r0, int64_t lo, int64_t hi, int64_t j,
                        int64_t k, int64_t n0, int64_t z, int up, int last)
{
    /* ahead(i): true up to some index, false after it.  First index:
     * the key has not reached z (key < z rising, > z falling), and the
     * edge is the first i where ahead fails.  Last index: the key has
     * not passed z, and the edge is the last i where ahead holds. */
    while (lo < hi) {
        int64_t mid = last ? lo + (hi - lo + 1) / 2 : lo + (hi - lo) / 2;
        int64_t key = row_key(r0, mid, j, k, n0);
        int ahead =
            last ? (up ? key <= z : key >= z) : (up ? key < z : key > z);
        if (last) {
            if (ahead)
                lo = mid;
            else
                hi = mid - 1;
        } else {
            if (ahead)
                lo = mid + 1;
            else
                hi = mid;
        }
    }
    return lo;
}

#if SL_ISA_X86
/* Four consecutive 16-bit labels, widened to 32 bits. */
__attribute__((target("avx2"))) static __m128i run4(const int16_t *p)
{
    return _mm_cvtepi16_epi32(
        _mm_loadl_epi64((const __m128i *)(const void *)p));
}

/* Scan voxels first.. of row (j, k), four at a time, while 4 remain:
 * label_voxel's shortcut on four lanes (the same positions, plane key,
 * bilinear base and corner argmax test, bit for bit); a lane whose
 * corners disagree goes through label_voxel itself.  Needs the label
 * ring (b->lring).  Returns the first voxel not labelled. */
__attribute__((target("avx2"))) static int64_t
label_run_avx2(const BackMap *b, int64_t first, int64_t last, int64_t j,
               int64_t k)
{
    const double(*M)[4] = b->map.m;
    const int a0 = b->a0, u = b->u, w = b->w;
    const int64_t *d = b->sdim;
    const __m256d zero = _mm256_setzero_pd();
    __m256d top[3];
    for (int r = 0; r < 3; r++)
        top[r] = _mm256_set1_pd((double)(b->mdim[r] - 1));
    const __m128i nu = _mm_set1_epi32((int)b->mdim[u]),
                  plane = _mm_set1_epi32((int)b->plane),
                  one = _mm_set1_epi32(1), all1 = _mm_set1_epi32(-1);
    /* 32-bit gathers of 16-bit labels: each reads its label and the
     * next one (the ring has one spare element at its end) */
    const int *ring = (const int *)(const void *)b->lring;
    int64_t i = first;
    for (; i + 3 <= last; i += 4) {
        __m256d iv = _mm256_set_pd((double)(i + 3), (double)(i + 2),
                                   (double)(i + 1), (double)i);
        __m256d q[3];
#pragma GCC unroll 3
        for (int r = 0; r < 3; r++)
            q[r] = map_coord4(M[r], iv, j, k);
        /* the key ceil(z) of the clamped plane coordinate, and whether
         * plane key-1 has a weight */
        __m256d z = _mm256_min_pd(_mm256_max_pd(q[a0], zero), top[a0]);
        __m128i t = _mm256_cvttpd_epi32(z);
        __m128i key = _mm_sub_epi32(
            t, mask4(_mm256_cmp_pd(_mm256_cvtepi32_pd(t), z, _CMP_LT_OQ)));
        __m128i two = mask4(_mm256_cmp_pd(
            _mm256_sub_pd(_mm256_cvtepi32_pd(key), z), zero, _CMP_NEQ_UQ));
        /* bilinear base and which neighbours have a weight */
        __m256d xu = _mm256_min_pd(_mm256_max_pd(q[u], zero), top[u]),
                xw = _mm256_min_pd(_mm256_max_pd(q[w], zero), top[w]);
        __m128i u0 = _mm256_cvttpd_epi32(xu), w0 = _mm256_cvttpd_epi32(xw);
        __m128i hu = mask4(
                    _mm256_cmp_pd(_mm256_sub_pd(xu, _mm256_cvtepi32_pd(u0)),
                                  zero, _CMP_NEQ_UQ)),
                hw = mask4(
                    _mm256_cmp_pd(_mm256_sub_pd(xw, _mm256_cvtepi32_pd(w0)),
                                  zero, _CMP_NEQ_UQ));
        __m128i c, ok;
        /* Four voxels on one row of one model plane (the same key and
         * w0, consecutive u0, neighbours inside the plane: most of a
         * slightly turned grid) read their corner labels as runs of 4;
         * a corner without weight then holds any label and is masked
         * out.  The others gather, with such corners read at offset 0. */
        int U0 = _mm_cvtsi128_si32(u0), W0 = _mm_cvtsi128_si32(w0),
            K0 = _mm_cvtsi128_si32(key);
        __m128i same = _mm_and_si128(
            _mm_and_si128(_mm_cmpeq_epi32(key, _mm_shuffle_epi32(key, 0)),
                          _mm_cmpeq_epi32(w0, _mm_shuffle_epi32(w0, 0))),
            _mm_cmpeq_epi32(u0, _mm_add_epi32(_mm_shuffle_epi32(u0, 0),
                                              _mm_setr_epi32(0, 1, 2, 3))));
        if (_mm_movemask_epi8(same) == 0xffff && U0 + 4 < b->mdim[u] &&
            W0 + 1 < b->mdim[w]) {
            const int64_t nu1 = b->mdim[u];
            const int16_t *pl[2] = {b->lring + (size_t)(K0 & 1) * b->plane +
                                        (size_t)((int64_t)W0 * nu1 + U0),
                                    b->lring +
                                        (size_t)((K0 - 1) & 1) * b->plane +
                                        (size_t)((int64_t)W0 * nu1 + U0)};
            c = run4(pl[0]);
            ok = _mm_cmpgt_epi32(c, _mm_set1_epi32(-1));
            __m128i huw = _mm_and_si128(hu, hw);
            for (int pi = 0; pi < 2; pi++) {
                const int16_t *p = pl[pi];
                __m128i m = _mm_and_si128(
                    _mm_cmpeq_epi32(run4(p), c),
                    _mm_or_si128(_mm_cmpeq_epi32(run4(p + 1), c),
                                 _mm_andnot_si128(hu, all1)));
                m = _mm_and_si128(
                    m, _mm_or_si128(_mm_cmpeq_epi32(run4(p + nu1), c),
                                    _mm_andnot_si128(hw, all1)));
                m = _mm_and_si128(
                    m, _mm_or_si128(_mm_cmpeq_epi32(run4(p + nu1 + 1), c),
                                    _mm_andnot_si128(huw, all1)));
                /* the other plane counts only where it has a weight */
                if (pi) m = _mm_or_si128(m, _mm_andnot_si128(two, all1));
                ok = _mm_and_si128(ok, m);
            }
        } else {
            __m128i at = _mm_add_epi32(_mm_mullo_epi32(w0, nu), u0);
            __m128i slot = _mm_mullo_epi32(_mm_and_si128(key, one), plane);
            /* the other plane, or this one again where it has no weight */
            __m128i other = _mm_mullo_epi32(
                _mm_and_si128(_mm_andnot_si128(key, one), one), plane);
            other = _mm_blendv_epi8(slot, other, two);
            __m128i o10 = _mm_and_si128(hu, one), o01 = _mm_and_si128(hw, nu);
            __m128i offs[4] = {_mm_setzero_si128(), o10, o01,
                               _mm_add_epi32(o10, o01)};
            c = _mm_srai_epi32(
                _mm_slli_epi32(
                    _mm_i32gather_epi32(ring, _mm_add_epi32(slot, at), 2),
                    16),
                16);
            ok = _mm_cmpgt_epi32(c, _mm_set1_epi32(-1));
#pragma GCC unroll 8
            for (int n = 1; n < 8; n++) {
                __m128i idx = _mm_add_epi32(
                    _mm_add_epi32(n < 4 ? slot : other, at), offs[n & 3]);
                __m128i v = _mm_srai_epi32(
                    _mm_slli_epi32(_mm_i32gather_epi32(ring, idx, 2), 16),
                    16);
                ok = _mm_and_si128(ok, _mm_cmpeq_epi32(v, c));
            }
        }
        int lab[4];
        _mm_storeu_si128((__m128i *)(void *)lab,
                         _mm_blendv_epi8(_mm_set1_epi32(-1), c, ok));
        for (int l = 0; l < 4; l++) {
            size_t vox = (size_t)((k * d[1] + j) * d[0] + i + l);
            if (lab[l] >= 0) {
                b->labels[vox] = (int16_t)lab[l];
            } else {
                double p[3];
                for (int r = 0; r < 3; r++)
                    p[r] = map_coord(M[r], i + l, j, k);
                label_voxel(b, p, vox);
            }
        }
    }
    return i;
}
#else
static int64_t label_run_avx2(const BackMap *b, int64_t first, int64_t last,
                              int64_t j, int64_t k)
{
    (void)b, (void)last, (void)j, (void)k;
    return first;
}
#endif

/* Label every scan voxel whose key is plane z. */
static void label_plane(BackMap *b, int64_t z)
{
    if (b->exact) {
        label_plane_exact(b, z);
        return;
    }
    const BackMap *cb = b;
    const int64_t *d = b->sdim;
    int64_t n0 = b->mdim[b->a0];
    const double(*M)[4] = cb->map.m;
    const double *r0 = M[b->a0];
    /* a0-coordinates whose key can be z, widened past the snapping. */
    double zlo = z == 0 ? -(double)INFINITY : (double)z - 1.0 - 1e-3;
    double zhi = z == n0 - 1 ? (double)INFINITY : (double)z + 1e-3;
    int64_t done = 0;
#pragma omp parallel for num_threads(b->nt) schedule(static) \
    reduction(+ : done)
    for (int64_t k = 0; k < d[2]; k++)
        for (int64_t j = 0; j < d[1]; j++) {
            double zb = r0[1] * (double)j + r0[2] * (double)k + r0[3];
            int64_t ilo = 0, ihi = d[0] - 1;
            /* rows are visited for every plane: reject the row from its
             * z-range alone, so the cost per plane is one test per row
             * plus the voxels that belong to the plane */
            double za = zb, zz = zb + r0[0] * (double)(d[0] - 1);
            /* plain comparisons: fmin/fmax are library calls here, and
             * this test runs once per row and plane; nothing is NaN */
            double zmin = za < zz ? za : zz, zmax = za < zz ? zz : za;
            if (zmax < zlo || zmin > zhi) continue;
            if (fabs(r0[0]) > 1e-12) {
                double x1 = (zlo - zb) / r0[0], x2 = (zhi - zb) / r0[0];
                double lo = (x1 < x2 ? x1 : x2) - 1.0,
                       hi = (x1 < x2 ? x2 : x1) + 1.0;
                if (hi < 0.0 || lo > (double)(d[0] - 1)) continue;
                if (lo > 0.0) ilo = (int64_t)floor(lo);
                if (hi < (double)(d[0] - 1)) ihi = (int64_t)ceil(hi);
            }
            /* key(i) is monotonic along the row (a linear function of
             * i, rounded, snapped, clamped and ceiled: each step is), so
             * plane z's voxels are one run, found by bisection instead
             * of computing every voxel of [ilo, ihi] and dropping those
             * of the neighbouring planes */
            int64_t ka = row_key(r0, ilo, j, k, n0),
                    kb = row_key(r0, ihi, j, k, n0);
            int up = ka <= kb;
            if (z < (up ? ka : kb) || z > (up ? kb : ka)) continue;
            int64_t first = run_edge(r0, ilo, ihi, j, k, n0, z, up, 0);
            int64_t last = run_edge(r0, ilo, ihi, j, k, n0, z, up, 1);
            int64_t i0 =
                cb->avx2 ? label_run_avx2(cb, first, last, j, k) : first;
            for (int64_t i = i0; i <= last; i++) {
                double q[3];
                for (int r = 0; r < 3; r++)
                    q[r] = map_coord(M[r], i, j, k);
                label_voxel(b, q, (size_t)((k * d[1] + j) * d[0] + i));
            }
            done += last - first + 1;
        }
    b->done += done;
}

/* lab[at] = the argmax over the classes of ring plane slot at each
 * voxel, first maximum, NaN skipped (-1 if all are NaN): as label_voxel
 * picks among interpolated scores.  Four voxels at a time (the same
 * comparisons lane by lane), the rest one by one. */
static void ring_argmax(const BackMap *b, const float *slot, int16_t *lab)
{
    const size_t plane = b->plane;
    size_t at = 0;
    for (; at + 4 <= plane; at += 4) {
        vi4 best = {-1, -1, -1, -1};
        vf4 bv = vf4_set1(0.0f);
        for (int c = 0; c < b->nc; c++) {
            vf4 v = vf4_load(slot + (size_t)c * plane + at);
            vi4 take = (v == v) & ((best < 0) | (v > bv));
            best = (take & (vi4){c, c, c, c}) | (~take & best);
            bv = vf4_select(take, v, bv);
        }
        for (int l = 0; l < 4; l++)
            lab[at + (size_t)l] = (int16_t)best[l];
    }
    for (; at < plane; at++) {
        int best = -1;
        float bv = 0.0f;
        for (int c = 0; c < b->nc; c++) {
            float v = slot[(size_t)c * plane + at];
            if (v == v && (best < 0 || v > bv)) {
                best = c;
                bv = v;
            }
        }
        lab[at] = (int16_t)best;
    }
}

void backmap_planes(void *ctx, const float *scores, const float *wsum, int nc,
                    const int ax[3], const int64_t off[3],
                    const int64_t box[3], const int64_t pad[3])
{
    BackMap *b = ctx;
    CHECK(nc == b->nc && ax[0] == b->a0 && off[0] == b->next);
    size_t cstride = (size_t)(pad[0] * pad[1] * pad[2]);
    int64_t nu = b->mdim[b->u];
    for (int64_t x0 = 0; x0 < box[0]; x0++) {
        int64_t z = off[0] + x0;
        float *slot = b->ring + (size_t)(z & 1) * (size_t)nc * b->plane;
        for (int64_t x1 = 0; x1 < box[1]; x1++) {
            int64_t q[3];
            q[ax[1]] = off[1] + x1;
            q[ax[2]] = off[2];
            size_t src = (size_t)((x0 * pad[1] + x1) * pad[2]);
            if (ax[2] == b->u && !wsum) {
                /* a row of the slice is a row of the plane (2D models
                 * slicing the model grid in its own order): copies */
                size_t dst = (size_t)(q[b->w] * nu + q[b->u]);
                for (int c = 0; c < nc; c++)
                    memcpy(slot + (size_t)c * b->plane + dst,
                           scores + (size_t)c * cstride + src,
                           (size_t)box[2] * sizeof(float));
                continue;
            }
            for (int64_t x2 = 0; x2 < box[2]; x2++) {
                q[ax[2]] = off[2] + x2;
                size_t dst = (size_t)(q[b->w] * nu + q[b->u]);
                float ws = wsum ? wsum[src + (size_t)x2] : 1.0f;
                for (int c = 0; c < nc; c++) {
                    float v = scores[(size_t)c * cstride + src + (size_t)x2];
                    slot[(size_t)c * b->plane + dst] = wsum ? v / ws : v;
                }
            }
        }
        if (b->lring)
            ring_argmax(b, slot, b->lring + (size_t)(z & 1) * b->plane);
        label_plane(b, z);
        b->next = z + 1;
    }
}
