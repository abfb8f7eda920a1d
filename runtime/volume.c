/* Volume bookkeeping: normalisation, axis mapping, gather/scatter of
 * padded boxes, softmax over classes, Gaussian map, window placement.
 *
 * Everything here runs on one thread in a fixed order: these passes are
 * memory-bound and cheap next to the network, and a fixed order keeps the
 * statistics (and so the labels) independent of the thread count. */
#include "volume.h"

#include <math.h>
#include <string.h>

#include "common.h"

int volume_alloc(Volume *v, int64_t nx, int64_t ny, int64_t nz, int n_mod)
{
    memset(v, 0, sizeof *v);
    size_t n = 1;
    if (nx < 1 || ny < 1 || nz < 1 || n_mod < 1 ||
        sl_mul_size(n, (size_t)nx, &n) || sl_mul_size(n, (size_t)ny, &n) ||
        sl_mul_size(n, (size_t)nz, &n) || sl_mul_size(n, (size_t)n_mod, &n) ||
        n > (size_t)INT64_MAX / 4) {
        sl_error("volume of %lld x %lld x %lld x %d voxels is out of range",
                 (long long)nx, (long long)ny, (long long)nz, n_mod);
        return ERR_SHAPE;
    }
    v->data = sl_calloc(n, sizeof(float));
    if (!v->data) {
        sl_error("out of memory for a volume of %zu voxels", n);
        return ERR_NOMEM;
    }
    v->dim[0] = nx;
    v->dim[1] = ny;
    v->dim[2] = nz;
    v->n_mod = n_mod;
    return 0;
}

void volume_free(Volume *v)
{
    if (!v) return;
    sl_free(v->data);
    memset(v, 0, sizeof *v);
}

int64_t volume_voxels(const Volume *v)
{
    return v->dim[0] * v->dim[1] * v->dim[2];
}

int volume_norm_affine(const Volume *v, int m, const Normalize *n,
                       NormAffine *out)
{
    out->lo = -INFINITY;
    out->hi = INFINITY;
    out->shift = 0.0;
    out->scale = 1.0;
    out->fill = 0.0;
    if (!n || n->kind == NORMALIZE_NONE) return 0;
    if (n->kind == NORMALIZE_CT) {
        if (!(n->hi > n->lo)) {
            sl_error("CT normalisation window [%g, %g] is empty; the model "
                     "metadata is wrong, re-export it with sauron-compress",
                     (double)n->lo, (double)n->hi);
            return ERR_ARG;
        }
        /* (v - lo) / (hi - lo) * 2 - 1  ==  (v - mid) * 2 / (hi - lo) */
        out->lo = n->lo;
        out->hi = n->hi;
        out->fill = n->lo;
        out->shift = 0.5 * ((double)n->lo + (double)n->hi);
        out->scale = 2.0 / ((double)n->hi - (double)n->lo);
        return 0;
    }
    if (n->kind == NORMALIZE_ZSCORE_FG && !(n->hi > 0.0f)) {
        sl_error("zscore-fg gain %g is not positive; the model metadata is "
                 "wrong, re-export it with sauron-compress",
                 (double)n->hi);
        return ERR_ARG;
    }
    if (n->kind != NORMALIZE_ZSCORE && n->kind != NORMALIZE_ZSCORE_FG) {
        sl_error("unknown normalisation kind %d in the model metadata; "
                 "re-export it with sauron-compress",
                 (int)n->kind);
        return ERR_ARG;
    }
    int64_t nv = volume_voxels(v);
    const float *x = v->data + (size_t)m * (size_t)nv;
    /* zscore-fg: statistics over the voxels at or above the threshold
     * (the head); -inf keeps them all */
    double thr = n->kind == NORMALIZE_ZSCORE_FG ? volume_otsu_threshold(x, nv)
                                                : -(double)INFINITY;
    /* Two passes in double: the mean first, then squared deviations, so a
     * large offset (CT, raw scanner units) does not cancel out. */
    double s = 0.0, mn = INFINITY;
    int64_t cnt = 0;
    for (int64_t i = 0; i < nv; i++) {
        double xi = (double)x[i];
        if (!isfinite(xi)) continue;
        if (xi < mn) mn = xi;
        if (xi >= thr) {
            s += xi;
            cnt++;
        }
    }
    if (cnt == 0) {
        sl_error("modality %d of the scan has no finite voxel (every one "
                 "is NaN or infinite); check the scan",
                 m + 1);
        return ERR_FORMAT;
    }
    out->fill = mn;
    double mean = s / (double)cnt;
    double ss = 0.0;
    for (int64_t i = 0; i < nv; i++)
        if (isfinite(x[i]) && (double)x[i] >= thr) {
            double d = (double)x[i] - mean;
            ss += d * d;
        }
    double sd = sqrt(ss / (double)cnt);
    out->shift = mean;
    out->scale = 1.0 / (sd > 1e-8 ? sd : 1e-8);
    if (n->kind == NORMALIZE_ZSCORE_FG) {
        /* (v - mean) / sd * gain + offset
         *   == (v - (mean - offset * sd / gain)) * (gain / sd) */
        double gain = (double)n->hi, offset = (double)n->lo;
        out->shift = mean - offset / (out->scale * gain);
        out->scale *= gain;
    }
    return 0;
}

double volume_otsu_threshold(const float *x, int64_t n)
{
    /* plain comparisons and casts: fmin, fmax and floor are library
     * calls at -O2, and this scans the whole scan on one thread before
     * any slice runs */
    double mn = (double)INFINITY, mx = -(double)INFINITY;
    for (int64_t i = 0; i < n; i++) {
        double xi = (double)x[i];
        if (!isfinite(xi)) continue;
        if (xi < mn) mn = xi;
        if (xi > mx) mx = xi;
    }
    if (!(mx > mn)) return -(double)INFINITY;
    double h[VOLUME_OTSU_BINS] = {0};
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) continue;
        /* b >= 0 here, where truncation is floor */
        double b = ((double)x[i] - mn) / (mx - mn) * VOLUME_OTSU_BINS;
        int k = b > VOLUME_OTSU_BINS - 1 ? VOLUME_OTSU_BINS - 1 : (int)b;
        h[k] += 1.0;
    }
    double tot = 0.0, tot_m = 0.0;
    for (int k = 0; k < VOLUME_OTSU_BINS; k++) {
        tot += h[k];
        tot_m += (double)k * h[k];
    }
    double c0 = 0.0, m0 = 0.0, best = -1.0;
    int bt = 1;
    for (int t = 1; t < VOLUME_OTSU_BINS; t++) {
        c0 += h[t - 1];
        m0 += (double)(t - 1) * h[t - 1];
        double c1 = tot - c0;
        if (c0 <= 0.0 || c1 <= 0.0) continue;
        double d = m0 / c0 - (tot_m - m0) / c1;
        double var = (c0 / tot) * (c1 / tot) * d * d;
        if (var > best) {
            best = var;
            bt = t;
        }
    }
    return mn + (double)bt * (mx - mn) / VOLUME_OTSU_BINS;
}

int volume_normalize(Volume *v, const Normalize *norms)
{
    int64_t nv = volume_voxels(v);
    for (int m = 0; m < v->n_mod; m++) {
        NormAffine a;
        int rc = volume_norm_affine(v, m, norms ? &norms[m] : NULL, &a);
        if (rc) return rc;
        float *x = v->data + (size_t)m * (size_t)nv;
        for (int64_t i = 0; i < nv; i++)
            x[i] = norm_apply(&a, x[i]);
    }
    return 0;
}

int64_t volume_count_nonfinite(const Volume *v, int m)
{
    int64_t nv = volume_voxels(v), bad = 0;
    const float *x = v->data + (m < 0 ? 0 : (size_t)m * (size_t)nv);
    int64_t n = m < 0 ? nv * v->n_mod : nv;
    for (int64_t i = 0; i < n; i++)
        bad += !isfinite(x[i]);
    return bad;
}

int volume_axes(VoxelOrder order, int dims, int axis, int ax[3])
{
    if (order != ORDER_NNUNET && order != ORDER_NIBABEL) {
        sl_error("unknown voxel order %d in the model metadata; re-export "
                 "it with sauron-compress",
                 (int)order);
        return ERR_ARG;
    }
    if (dims == 3) {
        int nn[3] = {2, 1, 0}, nb[3] = {0, 1, 2};
        memcpy(ax, order == ORDER_NNUNET ? nn : nb, sizeof nn);
        return 0;
    }
    if (dims != 2 || axis < 0 || axis > 2) {
        sl_error("model metadata has dims=%d axis=%d; expected dims 2 (axis "
                 "0..2) or 3; re-export it with sauron-compress",
                 dims, axis);
        return ERR_ARG;
    }
    ax[0] = axis;
    /* The two remaining NIfTI axes, ascending. */
    int a = axis == 0 ? 1 : 0;
    int b = axis == 2 ? 1 : 2;
    if (order == ORDER_NNUNET) {
        ax[1] = b;
        ax[2] = a;
    } else {
        ax[1] = a;
        ax[2] = b;
    }
    return 0;
}

/* Element strides of tensor axes t = 0..2 in a [.][nz][ny][nx] array. */
static void axis_strides(const int64_t dim[3], const int ax[3], int64_t s[3])
{
    int64_t st[3] = {1, dim[0], dim[0] * dim[1]};
    for (int t = 0; t < 3; t++)
        s[t] = st[ax[t]];
}

/* dst [C, pad0, pad1, pad2]; v->data [C][nz][ny][nx]. */
void volume_gather(float *dst, const Volume *v, const NormAffine *norms,
                   const int ax[3], const int64_t off[3],
                   const int64_t box[3], const int64_t pad[3])
{
    int64_t s[3];
    axis_strides(v->dim, ax, s);
    int64_t nv = volume_voxels(v);
    int64_t base = off[0] * s[0] + off[1] * s[1] + off[2] * s[2];
    int64_t plane = pad[1] * pad[2];
    for (int c = 0; c < v->n_mod; c++) {
        const float *src = v->data + (size_t)c * (size_t)nv + base;
        float *d = dst + (size_t)c * (size_t)(pad[0] * plane);
        memset(d, 0, sizeof(float) * (size_t)(pad[0] * plane));
        for (int64_t x0 = 0; x0 < box[0]; x0++)
            for (int64_t x1 = 0; x1 < box[1]; x1++) {
                const float *sr = src + x0 * s[0] + x1 * s[1];
                float *dr = d + x0 * plane + x1 * pad[2];
                if (norms)
                    for (int64_t x2 = 0; x2 < box[2]; x2++)
                        dr[x2] = norm_apply(&norms[c], sr[x2 * s[2]]);
                else
                    for (int64_t x2 = 0; x2 < box[2]; x2++)
                        dr[x2] = sr[x2 * s[2]];
            }
    }
}

/* scores [nc, pad0, pad1, pad2]; labels [nz][ny][nx]. */
void volume_argmax_scatter(int16_t *labels, const int64_t dim[3],
                           const float *scores, int nc, const int ax[3],
                           const int64_t off[3], const int64_t box[3],
                           const int64_t pad[3])
{
    int64_t s[3];
    axis_strides(dim, ax, s);
    int64_t base = off[0] * s[0] + off[1] * s[1] + off[2] * s[2];
    size_t cstride = (size_t)(pad[0] * pad[1] * pad[2]);
    for (int64_t x0 = 0; x0 < box[0]; x0++)
        for (int64_t x1 = 0; x1 < box[1]; x1++) {
            const float *sr = scores + (x0 * pad[1] + x1) * pad[2];
            int16_t *lr = labels + base + x0 * s[0] + x1 * s[1];
            for (int64_t x2 = 0; x2 < box[2]; x2++) {
                int best = -1;
                float bv = 0.0f;
                for (int c = 0; c < nc; c++) {
                    float sv = sr[(size_t)c * cstride + (size_t)x2];
                    if (sv == sv && (best < 0 || sv > bv)) {
                        best = c;
                        bv = sv;
                    }
                }
                lr[x2 * s[2]] = (int16_t)(best < 0 ? 0 : best);
            }
        }
}

/* p [nc, pad0, pad1, pad2], wsum [pad0, pad1, pad2] or NULL;
 * probs [nc][nz][ny][nx]. */
void volume_probs_scatter(float *probs, const int64_t dim[3], const float *p,
                          const float *wsum, int nc, const int ax[3],
                          const int64_t off[3], const int64_t box[3],
                          const int64_t pad[3])
{
    int64_t s[3];
    axis_strides(dim, ax, s);
    int64_t base = off[0] * s[0] + off[1] * s[1] + off[2] * s[2];
    size_t cstride = (size_t)(pad[0] * pad[1] * pad[2]);
    size_t vstride = (size_t)(dim[0] * dim[1] * dim[2]);
    for (int c = 0; c < nc; c++)
        for (int64_t x0 = 0; x0 < box[0]; x0++)
            for (int64_t x1 = 0; x1 < box[1]; x1++) {
                size_t r = (size_t)((x0 * pad[1] + x1) * pad[2]);
                const float *pr = p + (size_t)c * cstride + r;
                const float *wr = wsum ? wsum + r : NULL;
                float *o = probs + (size_t)c * vstride +
                           (size_t)(base + x0 * s[0] + x1 * s[1]);
                for (int64_t x2 = 0; x2 < box[2]; x2++)
                    o[x2 * s[2]] = wr ? pr[x2] / wr[x2] : pr[x2];
            }
}

/* x [nb][nc][sp] */
void softmax_classes(float *x, int64_t nb, int nc, int64_t sp)
{
    for (int64_t b = 0; b < nb; b++) {
        float *xb = x + (size_t)b * (size_t)nc * (size_t)sp;
        for (int64_t v = 0; v < sp; v++) {
            float mx = xb[v];
            for (int c = 1; c < nc; c++)
                if (xb[(size_t)c * (size_t)sp + (size_t)v] > mx)
                    mx = xb[(size_t)c * (size_t)sp + (size_t)v];
            double sum = 0.0;
            for (int c = 0; c < nc; c++) {
                float *e = &xb[(size_t)c * (size_t)sp + (size_t)v];
                *e = expf(*e - mx);
                sum += (double)*e;
            }
            float inv = (float)(1.0 / sum);
            for (int c = 0; c < nc; c++)
                xb[(size_t)c * (size_t)sp + (size_t)v] *= inv;
        }
    }
}

/* w [p0, p1, p2] */
void gaussian_map(float *w, const int64_t p[3])
{
    int64_t n = p[0] * p[1] * p[2];
    int64_t idx = 0;
    for (int64_t a = 0; a < p[0]; a++)
        for (int64_t b = 0; b < p[1]; b++)
            for (int64_t c = 0; c < p[2]; c++) {
                int64_t x[3] = {a, b, c};
                double e = 0.0;
                for (int t = 0; t < 3; t++) {
                    double sigma = (double)p[t] / 8.0;
                    double d = (double)(x[t] - p[t] / 2);
                    e += d * d / (2.0 * sigma * sigma);
                }
                w[idx++] = (float)exp(-e);
            }
    /* exp(0) = 1 at the centre already; clamp zeros (underflow) to the
     * smallest positive weight so every voxel is covered. */
    float mn = 1.0f;
    for (int64_t i = 0; i < n; i++)
        if (w[i] > 0.0f && w[i] < mn) mn = w[i];
    for (int64_t i = 0; i < n; i++)
        if (!(w[i] > 0.0f)) w[i] = mn;
}

int window_starts(int64_t size, int64_t patch, double step_frac,
                  int64_t *starts, int max)
{
    if (size <= patch || max < 2) {
        if (max > 0) starts[0] = 0;
        return 1;
    }
    double target = (double)patch * step_frac;
    if (target < 1.0) target = 1.0;
    int64_t n = (int64_t)ceil((double)(size - patch) / target) + 1;
    if (n > max) n = max;
    double step = (double)(size - patch) / (double)(n - 1);
    for (int64_t i = 0; i < n; i++)
        starts[i] = (int64_t)nearbyint(step * (double)i);
    return (int)n;
}
