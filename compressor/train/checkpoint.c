/* Training checkpoints: encoding, checked decoding, optimiser capture. */
#include "compressor/train/checkpoint.h"

#include <stdio.h>
#include <string.h>

#include "runtime/bytes.h"
#include "runtime/common.h"

#define TAG(a, b, c, d)                                                      \
    ((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 |              \
     (uint32_t)(d) << 24)
#define TAG_SETT TAG('S', 'E', 'T', 'T')
#define TAG_CNTR TAG('C', 'N', 'T', 'R')
#define TAG_HIST TAG('H', 'I', 'S', 'T')
#define TAG_OPTM TAG('O', 'P', 'T', 'M')
#define TAG_GRPH TAG('G', 'R', 'P', 'H')
#define TAG_BEST TAG('B', 'E', 'S', 'T')
#define TAG_HOOK TAG('H', 'O', 'O', 'K')
/* Since minor version 1: each epoch's val_dice_tuned, after HIST.  A
 * checkpoint without it reads them as NaN (not tuned). */
#define TAG_TUNE TAG('T', 'U', 'N', 'E')

static const uint8_t ckpt_magic[8] = {'S', 'L', 'C',  'K',
                                      'P', 'T', '\r', '\n'};

/* Section header now, size and CRC patched by sec_end. */
static size_t sec_begin(ByteWriter *b, uint32_t tag)
{
    bw_u32(b, tag);
    bw_u64(b, 0);
    return b->n;
}
static void sec_end(ByteWriter *b, size_t start)
{
    bw_put_u64_at(b, start - 8, (uint64_t)(b->n - start));
    bw_u32(b, bw_crc32(b, start));
}

static void put_stats(ByteWriter *b, const EpochStats *s)
{
    bw_u32(b, (uint32_t)s->epoch);
    bw_f64(b, s->lr);
    bw_f64(b, s->train_loss);
    bw_f64(b, s->train_extra);
    bw_f64(b, s->val_loss);
    bw_u32(b, (uint32_t)s->n_classes);
    for (int k = 0; k < s->n_classes; k++)
        bw_f64(b, s->val_dice[k]);
    bw_f64(b, s->val_dice_mean);
    bw_f64(b, s->seconds);
    bw_f64(b, s->step_seconds);
    bw_f64(b, s->data_wait);
    bw_u64(b, (uint64_t)s->flops);
    bw_u64(b, (uint64_t)s->params);
    bw_u32(b, (uint32_t)s->n_columns);
    for (int k = 0; k < s->n_columns; k++)
        bw_f64(b, s->columns[k]);
}

int ckpt_write(const char *path, const Checkpoint *c)
{
    ByteWriter b = {0};
    size_t s;
    int rc;
    bw_bytes(&b, ckpt_magic, 8);
    bw_u32(&b, CKPT_MAJOR);
    bw_u32(&b, CKPT_MINOR);
    s = sec_begin(&b, TAG_SETT);
    bw_bytes(&b, c->settings, strlen(c->settings));
    sec_end(&b, s);
    s = sec_begin(&b, TAG_CNTR);
    bw_u32(&b, (uint32_t)c->epoch);
    bw_u32(&b, (uint32_t)c->best_epoch);
    sec_end(&b, s);
    s = sec_begin(&b, TAG_HIST);
    bw_u32(&b, (uint32_t)c->n_hist);
    for (int i = 0; i < c->n_hist; i++)
        put_stats(&b, &c->hist[i]);
    sec_end(&b, s);
    s = sec_begin(&b, TAG_TUNE);
    for (int i = 0; i < c->n_hist; i++)
        bw_f64(&b, c->hist[i].val_dice_tuned);
    sec_end(&b, s);
    s = sec_begin(&b, TAG_OPTM);
    bw_u32(&b, (uint32_t)c->n_opt);
    for (int i = 0; i < c->n_opt; i++) {
        const CkptOptState *o = &c->opt[i];
        bw_str(&b, o->name);
        bw_u32(&b, (uint32_t)o->shape.ndim);
        for (int d = 0; d < o->shape.ndim; d++)
            bw_u64(&b, (uint64_t)o->shape.d[d]);
        bw_u64(&b, (uint64_t)o->step);
        bw_u32(&b, o->v != NULL);
        bw_f32s(&b, o->m, (size_t)o->numel);
        if (o->v) bw_f32s(&b, o->v, (size_t)o->numel);
    }
    sec_end(&b, s);
    s = sec_begin(&b, TAG_GRPH);
    bw_bytes(&b, c->graph, c->graph_n);
    sec_end(&b, s);
    if (c->best) {
        s = sec_begin(&b, TAG_BEST);
        bw_bytes(&b, c->best, c->best_n);
        sec_end(&b, s);
    }
    if (c->hook) {
        s = sec_begin(&b, TAG_HOOK);
        bw_bytes(&b, c->hook, c->hook_n);
        sec_end(&b, s);
    }
    if (b.err) {
        sl_error("out of memory encoding checkpoint '%s'", path);
        rc = ERR_NOMEM;
        goto fail;
    }
    rc = sl_write_file_atomic(path, b.p, b.n, 1);
fail:
    sl_free(b.p);
    return rc;
}

/* ---- reading ---- */

static void get_stats(ByteReader *c, EpochStats *s)
{
    memset(s, 0, sizeof *s);
    s->epoch = (int)br_u32(c);
    s->lr = br_f64(c);
    s->train_loss = br_f64(c);
    s->train_extra = br_f64(c);
    s->val_loss = br_f64(c);
    uint32_t nc = br_u32(c);
    if (nc > DATA_MAX_CLASSES) br_fail(c, ERR_FORMAT);
    s->n_classes = c->err ? 0 : (int)nc;
    for (int k = 0; k < s->n_classes; k++)
        s->val_dice[k] = br_f64(c);
    s->val_dice_mean = br_f64(c);
    s->val_dice_tuned = (double)NAN; /* TAG_TUNE, when present */
    s->seconds = br_f64(c);
    s->step_seconds = br_f64(c);
    s->data_wait = br_f64(c);
    s->flops = (int64_t)br_u64(c);
    s->params = (int64_t)br_u64(c);
    uint32_t ncol = br_u32(c);
    if (ncol > TRAINER_MAX_COLUMNS) br_fail(c, ERR_FORMAT);
    s->n_columns = c->err ? 0 : (int)ncol;
    for (int k = 0; k < s->n_columns; k++)
        s->columns[k] = br_f64(c);
}

static uint8_t *dup_bytes(const uint8_t *src, size_t n)
{
    uint8_t *q = sl_alloc(n ? n : 1);
    if (q && n) memcpy(q, src, n);
    return q;
}

static int read_optm(ByteReader *c, Checkpoint *ck)
{
    uint32_t n = br_u32(c);
    /* Each state takes at least 24 bytes: bounds the allocation. */
    if (c->err || n > (c->n - c->pos) / 24) return ERR_FORMAT;
    ck->opt = sl_calloc(n ? n : 1, sizeof *ck->opt);
    if (!ck->opt) return ERR_NOMEM;
    ck->n_opt = (int)n;
    for (uint32_t i = 0; i < n; i++) {
        CkptOptState *o = &ck->opt[i];
        o->name = br_str(c, BYTES_NULL_STR - 1);
        if (!o->name) return c->err ? c->err : ERR_FORMAT;
        uint32_t nd = br_u32(c);
        if (c->err || nd < 1 || nd > SL_MAX_DIMS) return ERR_FORMAT;
        o->shape.ndim = (int)nd;
        int64_t numel = 1;
        for (uint32_t d = 0; d < nd; d++) {
            int64_t v = (int64_t)br_u64(c);
            if (v < 1 || v > (int64_t)(c->n / 4) || numel > (int64_t)c->n / v)
                return ERR_FORMAT;
            o->shape.d[d] = v;
            numel *= v;
        }
        o->numel = numel;
        o->step = (int64_t)br_u64(c);
        uint32_t has_v = br_u32(c);
        if (c->err || has_v > 1) return ERR_FORMAT;
        for (int which = 0; which <= (int)has_v; which++) {
            if ((uint64_t)numel > br_left(c) / 4) return ERR_FORMAT;
            float *dst = sl_alloc((size_t)numel * 4);
            if (!dst) return ERR_NOMEM;
            if (which)
                o->v = dst;
            else
                o->m = dst;
            br_f32s(c, dst, (size_t)numel);
        }
    }
    return br_finish(c);
}

static int read_section(Checkpoint *ck, uint32_t tag, const uint8_t *p,
                        size_t n)
{
    ByteReader c;
    br_init(&c, p, n);
    int rc = 0;
    switch (tag) {
    case TAG_SETT:
        if (ck->settings) return ERR_FORMAT;
        ck->settings = sl_alloc(n + 1);
        if (!ck->settings) return ERR_NOMEM;
        memcpy(ck->settings, p, n);
        ck->settings[n] = '\0';
        return memchr(p, 0, n) ? ERR_FORMAT : 0;
    case TAG_CNTR:
        ck->epoch = (int)br_u32(&c);
        ck->best_epoch = (int)br_u32(&c);
        return br_finish(&c) || ck->epoch < 0 ? ERR_FORMAT : 0;
    case TAG_HIST: {
        if (ck->hist) return ERR_FORMAT;
        uint32_t h = br_u32(&c);
        if (c.err || h < 1 || h > n / 64) return ERR_FORMAT;
        ck->hist = sl_calloc(h, sizeof *ck->hist);
        if (!ck->hist) return ERR_NOMEM;
        ck->n_hist = (int)h;
        for (uint32_t i = 0; i < h; i++)
            get_stats(&c, &ck->hist[i]);
        return br_finish(&c);
    }
    case TAG_TUNE:
        if (!ck->hist || ck->have_tune || n != (size_t)ck->n_hist * 8)
            return ERR_FORMAT;
        ck->have_tune = 1;
        for (int i = 0; i < ck->n_hist; i++)
            ck->hist[i].val_dice_tuned = br_f64(&c);
        return br_finish(&c);
    case TAG_OPTM:
        if (ck->opt) return ERR_FORMAT;
        rc = read_optm(&c, ck);
        return c.err ? c.err : rc;
    case TAG_GRPH:
        if (ck->graph) return ERR_FORMAT;
        ck->graph = dup_bytes(p, n);
        ck->graph_n = n;
        return ck->graph ? 0 : ERR_NOMEM;
    case TAG_BEST:
        if (ck->best) return ERR_FORMAT;
        ck->best = dup_bytes(p, n);
        ck->best_n = n;
        return ck->best ? 0 : ERR_NOMEM;
    case TAG_HOOK:
        if (ck->hook) return ERR_FORMAT;
        ck->hook = dup_bytes(p, n);
        ck->hook_n = n;
        return ck->hook ? 0 : ERR_NOMEM;
    default:
        return ERR_FORMAT;
    }
}

int ckpt_read(const char *path, Checkpoint *ck)
{
    uint8_t *data = NULL;
    size_t size = 0;
    int rc;
    memset(ck, 0, sizeof *ck);
    ck->best_epoch = -1;
    rc = sl_read_file(path, &data, &size);
    if (rc) goto fail;
    ByteReader c;
    br_init(&c, data, size);
    const uint8_t *magic = br_bytes(&c, 8);
    if (size < 8 && (!size || !memcmp(data, ckpt_magic, size))) {
        /* empty or cut inside the magic: a write that never finished */
        sl_error("checkpoint '%s' is truncated (%zu bytes); start again "
                 "without --resume (or from an older copy)",
                 path, size);
        rc = ERR_FORMAT;
        goto fail;
    }
    if (!magic || memcmp(magic, ckpt_magic, 8)) {
        sl_error("'%s' is not a training checkpoint; start again without "
                 "--resume in another --run-dir, or remove that folder",
                 path);
        rc = ERR_FORMAT;
        goto fail;
    }
    uint32_t major = br_u32(&c);
    (void)br_u32(&c);
    if (c.err || major != CKPT_MAJOR) {
        sl_error("checkpoint '%s' has version %u (this build reads %d); "
                 "start a new run without --resume",
                 path, (unsigned)major, CKPT_MAJOR);
        rc = ERR_FORMAT;
        goto fail;
    }
    int have_cntr = 0;
    while (c.pos < c.n) {
        uint32_t tag = br_u32(&c);
        uint64_t n = br_u64(&c);
        const uint8_t *p = c.err || n > c.n - c.pos ? NULL : br_bytes(&c, n);
        uint32_t crc = br_u32(&c);
        if (!p || c.err) {
            sl_error("checkpoint '%s' is truncated; start again without "
                     "--resume (or from an older copy)",
                     path);
            rc = ERR_FORMAT;
            goto fail;
        }
        if (crc != sl_crc32(0, p, n)) {
            sl_error("checkpoint '%s' is corrupted (checksum mismatch); "
                     "start again without --resume",
                     path);
            rc = ERR_FORMAT;
            goto fail;
        }
        have_cntr |= tag == TAG_CNTR;
        rc = read_section(ck, tag, p, n);
        if (rc) {
            if (rc == ERR_FORMAT)
                sl_error("checkpoint '%s': malformed section '%.4s'; start "
                         "again without --resume",
                         path, (const char *)&p[-12]);
            else
                sl_error("out of memory reading checkpoint '%s'", path);
            goto fail;
        }
    }
    if (!ck->settings || !have_cntr || !ck->hist || !ck->graph) {
        sl_error("checkpoint '%s' lacks a required section; start again "
                 "without --resume",
                 path);
        rc = ERR_FORMAT;
        goto fail;
    }
    sl_free(data);
    return 0;
fail:
    sl_free(data);
    ckpt_free(ck);
    return rc;
}

void ckpt_free(Checkpoint *c)
{
    if (!c) return;
    sl_free(c->settings);
    sl_free(c->hist);
    for (int i = 0; c->opt && i < c->n_opt; i++) {
        sl_free(c->opt[i].name);
        sl_free(c->opt[i].m);
        sl_free(c->opt[i].v);
    }
    sl_free(c->opt);
    sl_free(c->graph);
    sl_free(c->best);
    sl_free(c->hook);
    memset(c, 0, sizeof *c);
    c->best_epoch = -1;
}

int ckpt_capture_optim(Checkpoint *c, Optim *opt, const Graph *g)
{
    int n = optim_n_states(opt);
    c->opt = sl_calloc(n ? (size_t)n : 1, sizeof *c->opt);
    if (!c->opt) goto fail;
    c->n_opt = n;
    for (int i = 0; i < n; i++) {
        const OptimState *s = optim_state(opt, i);
        CkptOptState *o = &c->opt[i];
        CHECK(s->value >= 0 && s->value < g->n_values);
        o->name = sl_strdup(g->values[s->value].name);
        o->shape = s->shape;
        o->numel = s->numel;
        o->step = s->step;
        o->m = sl_alloc((size_t)s->numel * 4);
        if (!o->name || !o->m) goto fail;
        memcpy(o->m, s->m, (size_t)s->numel * 4);
        if (s->v) {
            o->v = sl_alloc((size_t)s->numel * 4);
            if (!o->v) goto fail;
            memcpy(o->v, s->v, (size_t)s->numel * 4);
        }
    }
    return 0;
fail:
    sl_error("out of memory saving the optimiser state");
    return ERR_NOMEM;
}

int ckpt_restore_optim(const Checkpoint *c, Optim *opt, const Graph *g,
                       const TrainParam *p, int n, const char *what)
{
    int rc = 0;
    float **grad = NULL;
    TrainParam *zp = NULL;
    if (c->n_opt == 0) return 0;
    /* Parameters whose state the checkpoint holds, with zero gradients:
     * one optim_step at lr 0 creates their state without moving them
     * (w -= 0 * u leaves every finite w as it is). */
    zp = sl_calloc((size_t)c->n_opt, sizeof *zp);
    grad = sl_calloc((size_t)c->n_opt, sizeof *grad);
    if (!zp || !grad) goto nomem;
    for (int i = 0; i < c->n_opt; i++) {
        const CkptOptState *o = &c->opt[i];
        int v = graph_find_value(g, o->name), k;
        for (k = 0; k < n && p[k].value != v; k++)
            ;
        if (v < 0 || k == n || !shape_equal(&p[k].shape, &o->shape)) {
            sl_error("checkpoint '%s': optimiser state for '%s' matches no "
                     "parameter of the saved network; start again without "
                     "--resume",
                     what, o->name);
            rc = ERR_FORMAT;
            goto fail;
        }
        zp[i] = p[k];
        grad[i] = sl_calloc((size_t)o->numel, sizeof(float));
        if (!grad[i]) goto nomem;
        zp[i].grad = grad[i];
    }
    rc = optim_step(opt, zp, c->n_opt, 0.0f);
    if (rc) goto fail;
    for (int i = 0; i < c->n_opt; i++) {
        const CkptOptState *o = &c->opt[i];
        OptimState *s = optim_find(opt, zp[i].value);
        CHECK(s && s->numel == o->numel);
        if ((s->v == NULL) != (o->v == NULL)) {
            sl_error("checkpoint '%s' was made with another optimiser; use "
                     "the same --optimizer or start again without --resume",
                     what);
            rc = ERR_FORMAT;
            goto fail;
        }
        s->step = o->step;
        memcpy(s->m, o->m, (size_t)o->numel * 4);
        if (o->v) memcpy(s->v, o->v, (size_t)o->numel * 4);
    }
fail:
    for (int i = 0; grad && i < c->n_opt; i++)
        sl_free(grad[i]);
    sl_free(grad);
    sl_free(zp);
    return rc;
nomem:
    sl_error("out of memory restoring the optimiser state");
    rc = ERR_NOMEM;
    goto fail;
}

/* Value of key in a "key=value" text, as pointer and length; NULL if
 * absent. */
static const char *setting_find(const char *text, const char *key,
                                size_t klen, size_t *vlen)
{
    for (const char *l = text; l && *l;) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l) : strlen(l);
        if (len > klen && !strncmp(l, key, klen) && l[klen] == '=') {
            *vlen = len - klen - 1;
            return l + klen + 1;
        }
        l = e ? e + 1 : NULL;
    }
    return NULL;
}

/* Keys recorded by later versions than the first; a run folder without
 * one resumes with any value, since what it ran with is unknown (keys
 * that are written only when an option is on, as fov_aug, need none). */
static const char *const RECORDED_LATER[] = {"tune_decision"};

static int recorded_later(const char *key, size_t klen)
{
    for (size_t i = 0; i < sizeof RECORDED_LATER / sizeof *RECORDED_LATER;
         i++)
        if (strlen(RECORDED_LATER[i]) == klen &&
            !strncmp(RECORDED_LATER[i], key, klen))
            return 1;
    return 0;
}

/* Compare every key of a against b; 1 and the phrase at the first
 * difference (a_is_saved says which text is the run folder's). */
static int diff_one_way(const char *a, const char *b, int a_is_saved,
                        char *buf, size_t len)
{
    for (const char *l = a; l && *l;) {
        const char *e = strchr(l, '\n');
        size_t n = e ? (size_t)(e - l) : strlen(l);
        const char *eq = memchr(l, '=', n);
        if (eq) {
            size_t klen = (size_t)(eq - l), avl = n - klen - 1, bvl = 0;
            const char *bv = setting_find(b, l, klen, &bvl);
            int unknown = !bv && !a_is_saved && recorded_later(l, klen);
            if (!unknown && (!bv || bvl != avl || strncmp(bv, eq + 1, avl))) {
                const char *sv = a_is_saved ? eq + 1 : bv;
                const char *nv = a_is_saved ? bv : eq + 1;
                int sl = (int)(a_is_saved ? avl : bvl);
                int nl = (int)(a_is_saved ? bvl : avl);
                snprintf(buf, len,
                         "%.*s=%.*s in the run folder, %.*s=%.*s now",
                         (int)klen, l, sv ? sl : 6, sv ? sv : "(none)",
                         (int)klen, l, nv ? nl : 6, nv ? nv : "(none)");
                return 1;
            }
        }
        l = e ? e + 1 : NULL;
    }
    return 0;
}

int ckpt_settings_diff(const char *saved, const char *now, char *buf,
                       size_t len)
{
    if (len) buf[0] = '\0';
    if (diff_one_way(saved, now, 1, buf, len)) return 1;
    return diff_one_way(now, saved, 0, buf, len);
}
