/* Slice/patch sampling with foreground oversampling (see sampler.h).
 *
 * Dimension letters: B batch, C channels, S0 S1 S2 the case size and
 * P0 P1 P2 the patch size, both in tensor order. */
#include "sampler.h"

#include <math.h>
#include <string.h>

#include "runtime/common.h"

/* The cap keeps one batch buffer well inside a 64-bit size and far above
 * any real patch (4 x 4 x 256^3 floats is 1 GiB). */
#define SAMPLER_MAX_BATCH_FLOATS ((int64_t)1 << 32)

void sampler_defaults(SamplerOptions *o, int dims)
{
    memset(o, 0, sizeof *o);
    o->batch = 2;
    o->patch[0] = 1;
    o->fg_rate = SAMPLER_DEFAULT_FG_RATE;
    augment_defaults(&o->aug, dims);
}

/* Field-of-view and crop options: range, 2D only, and a fit table that
 * covers the largest window; sets Wmax and Pmax. */
static int fov_check(Sampler *s, const SamplerOptions *o, int dims)
{
    const FovOptions *f = &o->fov;
    if (dims != 2) {
        sl_error("field-of-view and crop augmentation are for 2D models (a "
                 "3D patch is already a crop); drop --fov-aug and "
                 "--crop-aug");
        return ERR_ARG;
    }
    if (!(f->p >= 0.0 && f->p <= 1.0 && f->crop >= 0.0 && f->crop <= 1.0)) {
        sl_error("field-of-view augmentation %g, crop augmentation %g: give "
                 "fractions in [0, 1]",
                 f->p, f->crop);
        return ERR_ARG;
    }
    /* 1e-12: fractions that add up to 1 in decimal (0.7 + 0.3) may round
     * just above it */
    if (f->p + f->crop > 1.0 + 1e-12) {
        sl_error("--fov-aug %g plus --crop-aug %g is more than 1 (they are "
                 "fractions of the same batches); lower one of them",
                 f->p, f->crop);
        return ERR_ARG;
    }
    if (f->p > 0 && !(f->lo > 0.0 && f->lo <= f->hi && f->hi <= 4.0)) {
        sl_error("field-of-view augmentation: p %g, window %g to %g times "
                 "the slice; give p in [0, 1] and 0 < lo <= hi <= 4",
                 f->p, f->lo, f->hi);
        return ERR_ARG;
    }
    if (f->crop > 0 && !(f->margin >= 0 && f->margin <= 4096)) {
        sl_error("crop augmentation: margin %d voxels; give 0 to 4096",
                 f->margin);
        return ERR_ARG;
    }
    for (int t = 1; t < 3; t++) {
        int64_t w = f->p > 0 ? (int64_t)llround(f->hi * (double)s->S[t]) : 1;
        if (f->crop > 0 && s->S[t] + 2 * f->margin > w)
            w = s->S[t] + 2 * f->margin;
        s->Wmax[t] = w < 1 ? 1 : w;
        if (!f->fit[t] || f->n_fit[t] <= s->Wmax[t]) {
            sl_error("field-of-view augmentation: no network size is known "
                     "for windows of %lld voxels along axis %d",
                     (long long)s->Wmax[t], t);
            return ERR_ARG;
        }
        /* fit is non-decreasing: the largest window has the largest
         * patch */
        int64_t pf = f->fit[t][s->Wmax[t]];
        if (pf < s->Wmax[t]) {
            sl_error("field-of-view augmentation: the size table maps %lld "
                     "to %lld, smaller than the window",
                     (long long)s->Wmax[t], (long long)pf);
            return ERR_ARG;
        }
        if (pf > s->Pmax[t]) s->Pmax[t] = pf;
    }
    int64_t n =
        (int64_t)o->batch * s->ds->n_modalities * s->Pmax[1] * s->Pmax[2];
    if (n > SAMPLER_MAX_BATCH_FLOATS) {
        sl_error("a batch of %d slices of up to %lldx%lld is too large; "
                 "lower --batch",
                 o->batch, (long long)s->Pmax[1], (long long)s->Pmax[2]);
        return ERR_ARG;
    }
    return 0;
}

int sampler_init(Sampler *s, const Dataset *ds, const int *cases, int n_cases,
                 const SamplerOptions *o)
{
    memset(s, 0, sizeof *s);
    int dims = ds->layout.dims;
    s->ds = ds;
    if (!ds->cases) {
        sl_error("sampler: the dataset '%s' is not loaded (call "
                 "dataset_load first)",
                 ds->dir);
        return ERR_ARG;
    }
    if (o->batch < 1) {
        sl_error("batch size %d: give --batch 1 or more", o->batch);
        return ERR_ARG;
    }
    if (n_cases < 1) {
        sl_error("no cases to sample from in dataset '%s'; add cases or "
                 "lower the validation fraction",
                 ds->dir);
        return ERR_ARG;
    }
    int64_t n = (int64_t)o->batch * ds->n_modalities;
    for (int t = 0; t < 3; t++) {
        if (o->patch[t] < 1 || o->patch[t] > 65536 ||
            (dims == 2 && t == 0 && o->patch[0] != 1)) {
            sl_error("patch size %lldx%lldx%lld is out of range for a %dD "
                     "model (2D: 1xHxW); give sizes from 1 to 65536",
                     (long long)o->patch[0], (long long)o->patch[1],
                     (long long)o->patch[2], dims);
            return ERR_ARG;
        }
        n *= o->patch[t];
        if (n > SAMPLER_MAX_BATCH_FLOATS) {
            sl_error("a batch of %d patches of %lldx%lldx%lld is too large; "
                     "lower --batch or the patch size",
                     o->batch, (long long)o->patch[0], (long long)o->patch[1],
                     (long long)o->patch[2]);
            return ERR_ARG;
        }
    }
    if (!(o->fg_rate >= 0.0 && o->fg_rate <= 1.0)) {
        sl_error("foreground oversampling rate %g: give a value in [0, 1]",
                 o->fg_rate);
        return ERR_ARG;
    }
    for (int i = 0; i < n_cases; i++)
        CHECK(cases[i] >= 0 && cases[i] < ds->n_cases);
    for (int t = 0; t < 3; t++) {
        s->S[t] = 1;
        for (int i = 0; i < n_cases; i++)
            if (ds->cases[cases[i]].S[t] > s->S[t])
                s->S[t] = ds->cases[cases[i]].S[t];
        s->Wmax[t] = s->S[t];
        s->Pmax[t] = o->patch[t];
    }
    if ((o->fov.p > 0 || o->fov.crop > 0) && fov_check(s, o, dims))
        return ERR_ARG;
    if (!(s->cases = sl_alloc(sizeof(int) * (size_t)n_cases))) {
        sl_error("out of memory");
        return ERR_NOMEM;
    }
    memcpy(s->cases, cases, sizeof(int) * (size_t)n_cases);
    s->n_cases = n_cases;
    s->o = *o;
    return 0;
}

void sampler_free(Sampler *s)
{
    if (!s) return;
    sl_free(s->cases);
    memset(s, 0, sizeof *s);
}

int batch_alloc(Batch *b, const Sampler *s)
{
    memset(b, 0, sizeof *b);
    b->B = s->o.batch;
    b->C = s->ds->n_modalities;
    b->dims = s->ds->layout.dims;
    memcpy(b->P, s->o.patch, sizeof b->P);
    b->k = -1;
    b->cap = s->Pmax[0] * s->Pmax[1] * s->Pmax[2];
    size_t vox = (size_t)b->cap * (size_t)b->B;
    b->x = sl_alloc(sizeof(float) * vox * (size_t)b->C);
    b->y = sl_alloc(vox);
    b->case_idx = sl_calloc((size_t)b->B, sizeof(int));
    b->forced = sl_calloc((size_t)b->B, sizeof(int));
    int fov = s->o.fov.p > 0 || s->o.fov.crop > 0, bad_win = 0;
    if (fov) {
        size_t wv = (size_t)(s->Wmax[1] * s->Wmax[2]);
        b->win = sl_alloc(sizeof(float) * wv * (size_t)b->C);
        b->winl = sl_alloc(wv);
        bad_win = !b->win || !b->winl;
    }
    if (!b->x || !b->y || !b->case_idx || !b->forced || bad_win) {
        sl_error("out of memory for a batch of %d patches", b->B);
        batch_free(b);
        return ERR_NOMEM;
    }
    return 0;
}

void batch_free(Batch *b)
{
    if (!b) return;
    sl_free(b->x);
    sl_free(b->y);
    sl_free(b->case_idx);
    sl_free(b->forced);
    sl_free(b->win);
    sl_free(b->winl);
    memset(b, 0, sizeof *b);
}

void batch_input_shape(const Batch *b, Shape *out)
{
    memset(out, 0, sizeof *out);
    out->d[0] = b->B;
    out->d[1] = b->C;
    if (b->dims == 2) {
        out->ndim = 4;
        out->d[2] = b->P[1];
        out->d[3] = b->P[2];
    } else {
        out->ndim = 5;
        for (int t = 0; t < 3; t++)
            out->d[2 + t] = b->P[t];
    }
}

/* Is global sample g one of the forced-foreground ones? */
static int is_forced(int64_t g, double rate)
{
    return ceil((double)(g + 1) * rate) > ceil((double)g * rate);
}

/* Patch offset (lowest corner in the case) for one axis. */
static int64_t clamp_off(int64_t off, int64_t S, int64_t P)
{
    int64_t lo = S - P < 0 ? S - P : 0, hi = S - P > 0 ? S - P : 0;
    return off < lo ? lo : off > hi ? hi : off;
}

/* Choose the patch offset in case c: centred on a foreground voxel if
 * forced (and the case has any), else random.  Returns 1 if centred on
 * foreground. */
static int place(const DataCase *c, const int64_t P[3], int forced, Rng *r,
                 int64_t off[3])
{
    if (forced) {
        int present[DATA_MAX_CLASSES], np = 0;
        for (int k = 1; k < c->n_classes; k++)
            if (c->fg_start[k + 1] > c->fg_start[k]) present[np++] = k;
        if (np > 0) {
            int k = present[rng_below(r, np)];
            int64_t nl = c->fg_start[k + 1] - c->fg_start[k];
            int64_t v = c->fg_loc[c->fg_start[k] + rng_below(r, nl)];
            int64_t vt[3] = {v / (c->S[1] * c->S[2]), v / c->S[2] % c->S[1],
                             v % c->S[2]};
            for (int t = 0; t < 3; t++)
                off[t] = clamp_off(vt[t] - P[t] / 2, c->S[t], P[t]);
            return 1;
        }
    }
    for (int t = 0; t < 3; t++) {
        int64_t lo = clamp_off(INT64_MIN / 2, c->S[t], P[t]);
        int64_t hi = clamp_off(INT64_MAX / 2, c->S[t], P[t]);
        off[t] = lo + rng_below(r, hi - lo + 1);
    }
    return 0;
}

/* Case of a sample: the first draw of its stream r. */
static int pick_case(const Sampler *s, Rng *r)
{
    return s->cases[rng_below(r, s->n_cases)];
}

/* c's labelled box (the whole case when the box was never set). */
static void case_box(const DataCase *c, int64_t lo[3], int64_t hi[3])
{
    int ok = 1;
    for (int t = 0; t < 3; t++)
        ok &= c->box_lo[t] >= 0 && c->box_lo[t] < c->box_hi[t] &&
              c->box_hi[t] <= c->S[t];
    for (int t = 0; t < 3; t++) {
        lo[t] = ok ? c->box_lo[t] : 0;
        hi[t] = ok ? c->box_hi[t] : c->S[t];
    }
}

/* How batch k sees its slices, from the batch stream (seed, k, B) so the
 * samples' own streams are unchanged.  Field of view: its window in W
 * (W[0] = 1).  Crop: W and the low margins m0 of sample 0's window.
 * Whole slices: W and m0 untouched. */
static BatchView batch_view(const Sampler *s, int64_t k, int B, int64_t W[3],
                            int64_t m0[3])
{
    const FovOptions *f = &s->o.fov;
    if (!(f->p > 0 || f->crop > 0)) return VIEW_WHOLE;
    Rng r;
    rng_seed(&r, s->o.seed, (uint64_t)k, (uint64_t)B);
    double u = rng_uniform(&r);
    W[0] = 1;
    if (u < f->p) {
        for (int t = 1; t < 3; t++) {
            int64_t w = (int64_t)llround(rng_range(&r, f->lo, f->hi) *
                                         (double)s->S[t]);
            W[t] = w < 1 ? 1 : w > s->Wmax[t] ? s->Wmax[t] : w;
        }
        return VIEW_FOV;
    }
    if (!(u < f->p + f->crop)) return VIEW_WHOLE;
    Rng r0;
    rng_seed(&r0, s->o.seed, (uint64_t)k, 0);
    int64_t lo[3], hi[3];
    case_box(&s->ds->cases[pick_case(s, &r0)], lo, hi);
    m0[0] = 0;
    for (int t = 1; t < 3; t++) {
        m0[t] = rng_below(&r, f->margin + 1);
        W[t] = hi[t] - lo[t] + m0[t] + rng_below(&r, f->margin + 1);
        CHECK(W[t] <= s->Wmax[t]);
    }
    return VIEW_CROP;
}

/* Slice k0 of case c seen through a window of W[1] x W[2] whose lowest
 * corner sits at org (slice coordinates, may lie outside the slice):
 * the slice's voxels where they overlap, the case's air elsewhere. */
static void copy_window(const DataCase *c, int C, int64_t k0,
                        const int64_t W[3], const int64_t org[3], float *win,
                        uint8_t *winl)
{
    int64_t src[3] = {0, 0, 0}, dst[3] = {0, 0, 0}, n[3] = {1, 1, 1};
    for (int t = 1; t < 3; t++) {
        src[t] = org[t] > 0 ? org[t] : 0;
        dst[t] = src[t] - org[t];
        int64_t e = org[t] + W[t] < c->S[t] ? org[t] + W[t] : c->S[t];
        n[t] = e > src[t] ? e - src[t] : 0;
    }
    int64_t wv = W[1] * W[2], sv = c->S[1] * c->S[2];
    memset(winl, 0, (size_t)wv);
    for (int m = 0; m < C; m++) {
        float *w = win + (size_t)m * (size_t)wv;
        const float *x =
            c->image +
            ((size_t)m * (size_t)c->S[0] + (size_t)k0) * (size_t)sv;
        float air = c->air ? c->air[m] : 0.0f;
        for (int64_t i = 0; i < wv; i++)
            w[i] = air;
        for (int64_t a = 0; a < n[1]; a++)
            memcpy(w + (dst[1] + a) * W[2] + dst[2],
                   x + (src[1] + a) * c->S[2] + src[2],
                   sizeof(float) * (size_t)n[2]);
    }
    const uint8_t *l = c->label + (size_t)k0 * (size_t)sv;
    for (int64_t a = 0; a < n[1]; a++)
        memcpy(winl + (dst[1] + a) * W[2] + dst[2],
               l + (src[1] + a) * c->S[2] + src[2], (size_t)n[2]);
}

/* Field of view: the window cuts the slice where the slice is larger,
 * and is air around it where smaller, each at a random offset. */
static void cut_window(const DataCase *c, int C, int64_t k0,
                       const int64_t W[3], Rng *r, float *win, uint8_t *winl)
{
    int64_t org[3] = {0, 0, 0};
    for (int t = 1; t < 3; t++) {
        int64_t S = c->S[t], d = S > W[t] ? S - W[t] : W[t] - S;
        int64_t o = rng_below(r, d + 1);
        org[t] = S > W[t] ? o : -o;
    }
    copy_window(c, C, k0, W, org, win, winl);
}

/* floor(x / 2) for either sign */
static int64_t half_floor(int64_t x)
{
    return x >= 0 ? x / 2 : -((1 - x) / 2);
}

/* Crop: sample 0's window starts m0 before its case's box; the others'
 * windows of the same size are centred on their own case's box. */
static void crop_window(const DataCase *c, int C, int64_t k0,
                        const int64_t W[3], const int64_t *m0, float *win,
                        uint8_t *winl)
{
    int64_t lo[3], hi[3], org[3] = {0, 0, 0};
    case_box(c, lo, hi);
    for (int t = 1; t < 3; t++)
        org[t] =
            m0 ? lo[t] - m0[t] : lo[t] + half_floor(hi[t] - lo[t] - W[t]);
    copy_window(c, C, k0, W, org, win, winl);
}

void sampler_fill(const Sampler *s, int64_t k, Batch *b)
{
    const Dataset *ds = s->ds;
    const SamplerOptions *o = &s->o;
    CHECK(b->B == o->batch && b->C == ds->n_modalities);
    int64_t W[3] = {1, 1, 1}, m0[3] = {0, 0, 0};
    BatchView view = batch_view(s, k, b->B, W, m0);
    b->view = view;
    b->P[0] = o->patch[0];
    for (int t = 1; t < 3; t++)
        b->P[t] = view != VIEW_WHOLE ? o->fov.fit[t][W[t]] : o->patch[t];
    int64_t pvox = b->P[0] * b->P[1] * b->P[2];
    CHECK(pvox <= b->cap);
    for (int i = 0; i < b->B; i++) {
        Rng r;
        rng_seed(&r, o->seed, (uint64_t)k, (uint64_t)i);
        int ci = pick_case(s, &r);
        const DataCase *c = &ds->cases[ci];
        int forced = is_forced(k * b->B + i, o->fg_rate);
        int64_t off[3];
        const float *img = c->image;
        const uint8_t *lab = c->label;
        const int64_t *S = c->S;
        if (view != VIEW_WHOLE) {
            /* the whole slice as the "patch" picks the slice only */
            int64_t whole[3] = {1, c->S[1], c->S[2]};
            b->forced[i] = place(c, whole, forced, &r, off);
            if (view == VIEW_FOV)
                cut_window(c, b->C, off[0], W, &r, b->win, b->winl);
            else
                crop_window(c, b->C, off[0], W, i ? NULL : m0, b->win,
                            b->winl);
            img = b->win;
            lab = b->winl;
            S = W;
            off[0] = 0;
            for (int t = 1; t < 3; t++)
                off[t] = W[t] - b->P[t] + rng_below(&r, b->P[t] - W[t] + 1);
        } else {
            b->forced[i] = place(c, b->P, forced, &r, off);
        }
        b->case_idx[i] = ci;
        double centre[3];
        for (int t = 0; t < 3; t++)
            centre[t] = (double)off[t] + 0.5 * (double)(b->P[t] - 1);
        AugXform xf;
        augment_draw_xform(&o->aug, b->dims, &r, &xf);
        float *x = b->x + (size_t)i * (size_t)(b->C * pvox);
        augment_resample(x, b->y + (size_t)i * (size_t)pvox, img, lab, b->C,
                         S, b->P, centre, &xf);
        augment_intensity(x, b->C, pvox, &o->aug, &r);
    }
    b->k = k;
}
