/* Training checkpoints: encoding, checked decoding, optimiser capture. */
#include "compressor/train/checkpoint.h"

#include <stdio.h>
#include <string.h>

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

static const uint8_t ckpt_magic[8] = {'S', 'L', 'C',  'K',
                                      'P', 'T', '\r', '\n'};

/* ---- a growable output buffer; a failed append sets err and sticks ---- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int err;
} Buf;

static uint8_t *buf_grow(Buf *b, size_t add)
{
    if (b->err) return NULL;
    if (add > SIZE_MAX / 2 - b->n) {
        b->err = ERR_NOMEM;
        return NULL;
    }
    if (b->n + add > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + add)
            cap *= 2;
        uint8_t *q = sl_realloc(b->p, cap);
        if (!q) {
            b->err = ERR_NOMEM;
            return NULL;
        }
        b->p = q;
        b->cap = cap;
    }
    uint8_t *at = b->p + b->n;
    b->n += add;
    return at;
}

static void put_bytes(Buf *b, const void *src, size_t n)
{
    uint8_t *at = buf_grow(b, n);
    if (at && n) memcpy(at, src, n);
}
static void put32(Buf *b, uint32_t v)
{
    uint8_t *at = buf_grow(b, 4);
    if (at) sl_wr32(at, v);
}
static void put64(Buf *b, uint64_t v)
{
    uint8_t *at = buf_grow(b, 8);
    if (at) sl_wr64(at, v);
}
static void put_f64(Buf *b, double x)
{
    uint64_t u;
    memcpy(&u, &x, 8);
    put64(b, u);
}
static void put_floats(Buf *b, const float *x, int64_t n)
{
    uint8_t *at = buf_grow(b, (size_t)n * 4);
    for (int64_t i = 0; at && i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        sl_wr32(at + 4 * i, u);
    }
}

/* Section header now, size and CRC patched by sec_end. */
static size_t sec_begin(Buf *b, uint32_t tag)
{
    put32(b, tag);
    put64(b, 0);
    return b->n;
}
static void sec_end(Buf *b, size_t start)
{
    if (b->err) return;
    size_t size = b->n - start;
    sl_wr64(b->p + start - 8, (uint64_t)size);
    put32(b, sl_crc32(0, b->p + start, size));
}

static void put_stats(Buf *b, const EpochStats *s)
{
    put32(b, (uint32_t)s->epoch);
    put_f64(b, s->lr);
    put_f64(b, s->train_loss);
    put_f64(b, s->train_extra);
    put_f64(b, s->val_loss);
    put32(b, (uint32_t)s->n_classes);
    for (int k = 0; k < s->n_classes; k++)
        put_f64(b, s->val_dice[k]);
    put_f64(b, s->val_dice_mean);
    put_f64(b, s->seconds);
    put_f64(b, s->step_seconds);
    put_f64(b, s->data_wait);
    put64(b, (uint64_t)s->flops);
    put64(b, (uint64_t)s->params);
    put32(b, (uint32_t)s->n_columns);
    for (int k = 0; k < s->n_columns; k++)
        put_f64(b, s->columns[k]);
}

int ckpt_write(const char *path, const Checkpoint *c)
{
    Buf b = {0};
    size_t s;
    int rc;
    put_bytes(&b, ckpt_magic, 8);
    put32(&b, CKPT_MAJOR);
    put32(&b, CKPT_MINOR);
    s = sec_begin(&b, TAG_SETT);
    put_bytes(&b, c->settings, strlen(c->settings));
    sec_end(&b, s);
    s = sec_begin(&b, TAG_CNTR);
    put32(&b, (uint32_t)c->epoch);
    put32(&b, (uint32_t)c->best_epoch);
    sec_end(&b, s);
    s = sec_begin(&b, TAG_HIST);
    put32(&b, (uint32_t)c->n_hist);
    for (int i = 0; i < c->n_hist; i++)
        put_stats(&b, &c->hist[i]);
    sec_end(&b, s);
    s = sec_begin(&b, TAG_OPTM);
    put32(&b, (uint32_t)c->n_opt);
    for (int i = 0; i < c->n_opt; i++) {
        const CkptOptState *o = &c->opt[i];
        put32(&b, (uint32_t)strlen(o->name));
        put_bytes(&b, o->name, strlen(o->name));
        put32(&b, (uint32_t)o->shape.ndim);
        for (int d = 0; d < o->shape.ndim; d++)
            put64(&b, (uint64_t)o->shape.d[d]);
        put64(&b, (uint64_t)o->step);
        put32(&b, o->v != NULL);
        put_floats(&b, o->m, o->numel);
        if (o->v) put_floats(&b, o->v, o->numel);
    }
    sec_end(&b, s);
    s = sec_begin(&b, TAG_GRPH);
    put_bytes(&b, c->graph, c->graph_n);
    sec_end(&b, s);
    if (c->best) {
        s = sec_begin(&b, TAG_BEST);
        put_bytes(&b, c->best, c->best_n);
        sec_end(&b, s);
    }
    if (c->hook) {
        s = sec_begin(&b, TAG_HOOK);
        put_bytes(&b, c->hook, c->hook_n);
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

/* ---- reading: a cursor that fails once and stays failed ---- */

typedef struct {
    const uint8_t *p;
    size_t n, at;
    int bad;
} Cur;

static const uint8_t *take(Cur *c, size_t n)
{
    if (c->bad || n > c->n - c->at) {
        c->bad = 1;
        return NULL;
    }
    const uint8_t *q = c->p + c->at;
    c->at += n;
    return q;
}
static uint32_t get32(Cur *c)
{
    const uint8_t *q = take(c, 4);
    return q ? sl_rd32(q) : 0;
}
static uint64_t get64(Cur *c)
{
    const uint8_t *q = take(c, 8);
    return q ? sl_rd64(q) : 0;
}
static double get_f64(Cur *c)
{
    uint64_t u = get64(c);
    double x;
    memcpy(&x, &u, 8);
    return x;
}

static void get_stats(Cur *c, EpochStats *s)
{
    memset(s, 0, sizeof *s);
    s->epoch = (int)get32(c);
    s->lr = get_f64(c);
    s->train_loss = get_f64(c);
    s->train_extra = get_f64(c);
    s->val_loss = get_f64(c);
    uint32_t nc = get32(c);
    if (nc > DATA_MAX_CLASSES) c->bad = 1;
    s->n_classes = c->bad ? 0 : (int)nc;
    for (int k = 0; k < s->n_classes; k++)
        s->val_dice[k] = get_f64(c);
    s->val_dice_mean = get_f64(c);
    s->seconds = get_f64(c);
    s->step_seconds = get_f64(c);
    s->data_wait = get_f64(c);
    s->flops = (int64_t)get64(c);
    s->params = (int64_t)get64(c);
    uint32_t ncol = get32(c);
    if (ncol > TRAINER_MAX_COLUMNS) c->bad = 1;
    s->n_columns = c->bad ? 0 : (int)ncol;
    for (int k = 0; k < s->n_columns; k++)
        s->columns[k] = get_f64(c);
}

static uint8_t *dup_bytes(const uint8_t *src, size_t n)
{
    uint8_t *q = sl_alloc(n ? n : 1);
    if (q && n) memcpy(q, src, n);
    return q;
}

static int read_optm(Cur *c, Checkpoint *ck)
{
    uint32_t n = get32(c);
    /* Each state takes at least 24 bytes: bounds the allocation. */
    if (c->bad || n > (c->n - c->at) / 24) return ERR_FORMAT;
    ck->opt = sl_calloc(n ? n : 1, sizeof *ck->opt);
    if (!ck->opt) return ERR_NOMEM;
    ck->n_opt = (int)n;
    for (uint32_t i = 0; i < n; i++) {
        CkptOptState *o = &ck->opt[i];
        uint32_t len = get32(c);
        const uint8_t *name = take(c, len);
        if (!name) return ERR_FORMAT;
        o->name = sl_alloc((size_t)len + 1);
        if (!o->name) return ERR_NOMEM;
        memcpy(o->name, name, len);
        o->name[len] = '\0';
        uint32_t nd = get32(c);
        if (c->bad || nd < 1 || nd > SL_MAX_DIMS) return ERR_FORMAT;
        o->shape.ndim = (int)nd;
        int64_t numel = 1;
        for (uint32_t d = 0; d < nd; d++) {
            int64_t v = (int64_t)get64(c);
            if (v < 1 || v > (int64_t)(c->n / 4) || numel > (int64_t)c->n / v)
                return ERR_FORMAT;
            o->shape.d[d] = v;
            numel *= v;
        }
        o->numel = numel;
        o->step = (int64_t)get64(c);
        uint32_t has_v = get32(c);
        if (c->bad || has_v > 1) return ERR_FORMAT;
        for (int which = 0; which <= (int)has_v; which++) {
            const uint8_t *q = take(c, (size_t)numel * 4);
            if (!q) return ERR_FORMAT;
            float *dst = sl_alloc((size_t)numel * 4);
            if (!dst) return ERR_NOMEM;
            if (which)
                o->v = dst;
            else
                o->m = dst;
            for (int64_t k = 0; k < numel; k++) {
                uint32_t u = sl_rd32(q + 4 * k);
                memcpy(&dst[k], &u, 4);
            }
        }
    }
    return c->at == c->n ? 0 : ERR_FORMAT;
}

static int read_section(Checkpoint *ck, uint32_t tag, const uint8_t *p,
                        size_t n)
{
    Cur c = {p, n, 0, 0};
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
        ck->epoch = (int)get32(&c);
        ck->best_epoch = (int)get32(&c);
        return c.bad || c.at != n || ck->epoch < 0 ? ERR_FORMAT : 0;
    case TAG_HIST: {
        if (ck->hist) return ERR_FORMAT;
        uint32_t h = get32(&c);
        if (c.bad || h < 1 || h > n / 64) return ERR_FORMAT;
        ck->hist = sl_calloc(h, sizeof *ck->hist);
        if (!ck->hist) return ERR_NOMEM;
        ck->n_hist = (int)h;
        for (uint32_t i = 0; i < h; i++)
            get_stats(&c, &ck->hist[i]);
        return c.bad || c.at != n ? ERR_FORMAT : 0;
    }
    case TAG_OPTM:
        if (ck->opt) return ERR_FORMAT;
        rc = read_optm(&c, ck);
        return c.bad ? ERR_FORMAT : rc;
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
    Cur c = {data, size, 0, 0};
    const uint8_t *magic = take(&c, 8);
    if (!magic || memcmp(magic, ckpt_magic, 8)) {
        sl_error("'%s' is not a training checkpoint; remove the run folder "
                 "or choose another --run-dir",
                 path);
        rc = ERR_FORMAT;
        goto fail;
    }
    uint32_t major = get32(&c);
    (void)get32(&c);
    if (c.bad || major != CKPT_MAJOR) {
        sl_error("checkpoint '%s' has version %u (this build reads %d); "
                 "start a new run without --resume",
                 path, (unsigned)major, CKPT_MAJOR);
        rc = ERR_FORMAT;
        goto fail;
    }
    int have_cntr = 0;
    while (c.at < c.n) {
        uint32_t tag = get32(&c);
        uint64_t n = get64(&c);
        const uint8_t *p = c.bad || n > c.n - c.at ? NULL : take(&c, n);
        uint32_t crc = get32(&c);
        if (!p || c.bad) {
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
            if (!bv || bvl != avl || strncmp(bv, eq + 1, avl)) {
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
