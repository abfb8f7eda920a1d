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

int sampler_init(Sampler *s, const Dataset *ds, const int *cases, int n_cases,
                 const SamplerOptions *o)
{
    memset(s, 0, sizeof *s);
    int dims = ds->layout.dims;
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
    if (!(s->cases = sl_alloc(sizeof(int) * (size_t)n_cases))) {
        sl_error("out of memory");
        return ERR_NOMEM;
    }
    memcpy(s->cases, cases, sizeof(int) * (size_t)n_cases);
    s->n_cases = n_cases;
    s->ds = ds;
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
    size_t vox = (size_t)(b->P[0] * b->P[1] * b->P[2]) * (size_t)b->B;
    b->x = sl_alloc(sizeof(float) * vox * (size_t)b->C);
    b->y = sl_alloc(vox);
    b->case_idx = sl_calloc((size_t)b->B, sizeof(int));
    b->forced = sl_calloc((size_t)b->B, sizeof(int));
    if (!b->x || !b->y || !b->case_idx || !b->forced) {
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

void sampler_fill(const Sampler *s, int64_t k, Batch *b)
{
    const Dataset *ds = s->ds;
    const SamplerOptions *o = &s->o;
    CHECK(b->B == o->batch && b->C == ds->n_modalities);
    int64_t pvox = b->P[0] * b->P[1] * b->P[2];
    for (int i = 0; i < b->B; i++) {
        Rng r;
        rng_seed(&r, o->seed, (uint64_t)k, (uint64_t)i);
        int ci = s->cases[rng_below(&r, s->n_cases)];
        const DataCase *c = &ds->cases[ci];
        int forced = is_forced(k * b->B + i, o->fg_rate);
        int64_t off[3];
        b->forced[i] = place(c, b->P, forced, &r, off);
        b->case_idx[i] = ci;
        double centre[3];
        for (int t = 0; t < 3; t++)
            centre[t] = (double)off[t] + 0.5 * (double)(b->P[t] - 1);
        AugXform xf;
        augment_draw_xform(&o->aug, b->dims, &r, &xf);
        float *x = b->x + (size_t)i * (size_t)(b->C * pvox);
        augment_resample(x, b->y + (size_t)i * (size_t)pvox, c->image,
                         c->label, b->C, c->S, b->P, centre, &xf);
        augment_intensity(x, b->C, pvox, &o->aug, &r);
    }
    b->k = k;
}
