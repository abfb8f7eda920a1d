/* ModelMeta <-> ONNX metadata_props (see onnx_meta.h for the keys). */
#include "onnx_meta.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/common.h"
#include "runtime/orient.h"

#define META_VERSION "1"
/* Sanity bounds against corrupted or hostile files. */
#define META_MAX_CLASSES 65536
#define META_MAX_MODALITIES 1024
#define META_MAX_PATCH 65536

/* ---- encode ---- */

typedef struct {
    MetaProp *p;
    int n, cap;
    int fail;
} PropList;

static void prop_add(PropList *l, const char *key, const char *value)
{
    if (l->fail) return;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 32;
        MetaProp *np = sl_realloc(l->p, (size_t)cap * sizeof *np);
        if (!np) {
            l->fail = 1;
            return;
        }
        l->p = np;
        l->cap = cap;
    }
    MetaProp *e = &l->p[l->n];
    e->key = sl_strdup(key);
    e->value = sl_strdup(value);
    l->n++; /* counted even on failure so props_free frees the half */
    if (!e->key || !e->value) l->fail = 1;
}

static void prop_addf(PropList *l, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void prop_addf(PropList *l, const char *key, const char *fmt, ...)
{
    char buf[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    prop_add(l, key, buf);
}

void onnx_meta_props_free(MetaProp *props, int n)
{
    for (int k = 0; props && k < n; k++) {
        sl_free(props[k].key);
        sl_free(props[k].value);
    }
    sl_free(props);
}

int onnx_meta_encode(const ModelMeta *m, MetaProp **props, int *n)
{
    PropList l = {0};
    char key[64], buf[128];
    *props = NULL;
    *n = 0;
    if (m->n_classes < 1 || m->n_modalities < 1 || !m->class_names ||
        !m->modality_names || !m->normalize)
        return 0;
    prop_add(&l, "sauron.meta_version", META_VERSION);
    prop_addf(&l, "sauron.n_classes", "%d", m->n_classes);
    for (int k = 0; k < m->n_classes; k++) {
        snprintf(key, sizeof key, "sauron.class.%d", k);
        prop_add(&l, key, m->class_names[k] ? m->class_names[k] : "");
    }
    prop_addf(&l, "sauron.n_modalities", "%d", m->n_modalities);
    for (int k = 0; k < m->n_modalities; k++) {
        snprintf(key, sizeof key, "sauron.modality.%d", k);
        prop_add(&l, key, m->modality_names[k] ? m->modality_names[k] : "");
        const Normalize *z = &m->normalize[k];
        snprintf(key, sizeof key, "sauron.normalize.%d", k);
        if (z->kind == NORMALIZE_CT)
            prop_addf(&l, key, "ct:%.9g,%.9g", (double)z->lo, (double)z->hi);
        else if (z->kind == NORMALIZE_ZSCORE_FG &&
                 (z->hi != 1.0f || z->lo != 0.0f))
            prop_addf(&l, key, "zscore-fg:%.9g,%.9g", (double)z->hi,
                      (double)z->lo);
        else if (z->kind == NORMALIZE_ZSCORE_FG)
            prop_add(&l, key, "zscore-fg");
        else
            prop_add(&l, key, z->kind == NORMALIZE_NONE ? "none" : "zscore");
    }
    prop_addf(&l, "sauron.dims", "%d", m->dims);
    prop_addf(&l, "sauron.axis", "%d", m->axis);
    prop_addf(&l, "sauron.patch", "%d,%d,%d", m->patch[0], m->patch[1],
              m->patch[2]);
    prop_add(&l, "sauron.order",
             m->order == ORDER_NIBABEL ? "nibabel" : "nnunet");
    /* optional: only a model that knows its training grid */
    if (m->orientation[0]) prop_add(&l, "sauron.orientation", m->orientation);
    if (m->spacing[0] != 0.0 || m->spacing[1] != 0.0 || m->spacing[2] != 0.0)
        prop_addf(&l, "sauron.spacing", "%.17g,%.17g,%.17g", m->spacing[0],
                  m->spacing[1], m->spacing[2]);
    for (int k = 0; k < 32; k++)
        snprintf(buf + 2 * k, 3, "%02x", m->source_sha256[k]);
    prop_add(&l, "sauron.source_sha256", buf);
    if (m->source_name) prop_add(&l, "sauron.source_name", m->source_name);
    if (m->notes) prop_add(&l, "sauron.notes", m->notes);
    if (l.fail) {
        onnx_meta_props_free(l.p, l.n);
        sl_error("out of memory encoding the model metadata");
        return ERR_NOMEM;
    }
    *props = l.p;
    *n = l.n;
    return 0;
}

/* ---- decode ---- */

static const char *prop_get(const Onnx__ModelProto *mp, const char *key)
{
    for (size_t k = 0; k < mp->n_metadata_props; k++) {
        const Onnx__StringStringEntryProto *e = mp->metadata_props[k];
        if (e && e->key && !strcmp(e->key, key))
            return e->value ? e->value : "";
    }
    return NULL;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    if (!s || !*s) return -1;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int parse_normalize(const char *s, Normalize *z)
{
    memset(z, 0, sizeof *z);
    if (!s) return -1;
    if (!strcmp(s, "zscore")) {
        z->kind = NORMALIZE_ZSCORE;
        return 0;
    }
    if (!strncmp(s, "zscore-fg", 9)) {
        z->kind = NORMALIZE_ZSCORE_FG;
        z->hi = 1.0f;
        if (!s[9]) return 0;
        if (s[9] != ':') return -1;
        char *end;
        errno = 0;
        float g = strtof(s + 10, &end);
        if (errno || end == s + 10 || *end != ',' || !(g > 0.0f && g < 1e6f))
            return -1;
        const char *o = end + 1;
        float off = strtof(o, &end);
        if (errno || end == o || *end || !(fabsf(off) < 1e6f)) return -1;
        z->hi = g;
        z->lo = off;
        return 0;
    }
    if (!strcmp(s, "none")) {
        z->kind = NORMALIZE_NONE;
        return 0;
    }
    if (strncmp(s, "ct:", 3)) return -1;
    char *end;
    errno = 0;
    float lo = strtof(s + 3, &end);
    if (errno || end == s + 3 || *end != ',') return -1;
    const char *h = end + 1;
    float hi = strtof(h, &end);
    if (errno || end == h || *end || !isfinite(lo) || !isfinite(hi) ||
        !(lo < hi))
        return -1;
    z->kind = NORMALIZE_CT;
    z->lo = lo;
    z->hi = hi;
    return 0;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A string property that must be present: duplicated into *out. */
static int get_str(const Onnx__ModelProto *mp, const char *key, char **out)
{
    const char *v = prop_get(mp, key);
    if (!v) return ERR_FORMAT;
    *out = sl_strdup(v);
    return *out ? 0 : ERR_NOMEM;
}

int onnx_meta_decode(const Onnx__ModelProto *mp, const char *path, Graph *g)
{
    ModelMeta m;
    const char *bad = NULL, *v;
    char key[64];
    long x;
    int rc = ERR_FORMAT;
    memset(&m, 0, sizeof m);
    if (!prop_get(mp, "sauron.meta_version")) return 0;
    const Shape *in = &g->values[g->input].shape;
    const Shape *out = &g->values[g->outputs[0]].shape;
    if (strcmp(prop_get(mp, "sauron.meta_version"), META_VERSION)) {
        bad = "sauron.meta_version (re-export with this sauron-compress)";
        goto fail;
    }
    if (parse_long(prop_get(mp, "sauron.n_classes"), 1, META_MAX_CLASSES,
                   &x)) {
        bad = "sauron.n_classes";
        goto fail;
    }
    m.n_classes = (int)x;
    if (parse_long(prop_get(mp, "sauron.n_modalities"), 1,
                   META_MAX_MODALITIES, &x)) {
        bad = "sauron.n_modalities";
        goto fail;
    }
    m.n_modalities = (int)x;
    if (parse_long(prop_get(mp, "sauron.dims"), 1, 3, &x)) {
        bad = "sauron.dims";
        goto fail;
    }
    m.dims = (int)x;
    /* Metadata of another output or input layout (e.g. --output chose a
     * head with other channels): describes a different network; keep
     * what the importer found. */
    if (out->ndim < 2 || m.n_classes != out->d[1] || in->ndim < 3 ||
        m.n_modalities != in->d[1] || m.dims != in->ndim - 2)
        return 0;
    m.class_names = sl_calloc((size_t)m.n_classes, sizeof(char *));
    m.modality_names = sl_calloc((size_t)m.n_modalities, sizeof(char *));
    m.normalize = sl_calloc((size_t)m.n_modalities, sizeof *m.normalize);
    rc = ERR_NOMEM;
    if (!m.class_names || !m.modality_names || !m.normalize) goto fail;
    bad = key;
    for (int k = 0; k < m.n_classes; k++) {
        snprintf(key, sizeof key, "sauron.class.%d", k);
        if ((rc = get_str(mp, key, &m.class_names[k]))) goto fail;
    }
    for (int k = 0; k < m.n_modalities; k++) {
        snprintf(key, sizeof key, "sauron.modality.%d", k);
        if ((rc = get_str(mp, key, &m.modality_names[k]))) goto fail;
        snprintf(key, sizeof key, "sauron.normalize.%d", k);
        if (parse_normalize(prop_get(mp, key), &m.normalize[k])) goto fail;
    }
    rc = ERR_FORMAT;
    if (parse_long(prop_get(mp, "sauron.axis"), 0, 2, &x)) {
        bad = "sauron.axis";
        goto fail;
    }
    m.axis = (int)x;
    v = prop_get(mp, "sauron.patch");
    {
        int n = -1;
        if (!v ||
            sscanf(v, "%d,%d,%d%n", &m.patch[0], &m.patch[1], &m.patch[2],
                   &n) != 3 ||
            n < 0 || v[n] || m.patch[0] < 0 || m.patch[1] < 0 ||
            m.patch[2] < 0 || m.patch[0] > META_MAX_PATCH ||
            m.patch[1] > META_MAX_PATCH || m.patch[2] > META_MAX_PATCH) {
            bad = "sauron.patch";
            goto fail;
        }
    }
    v = prop_get(mp, "sauron.order");
    if (v && !strcmp(v, "nnunet"))
        m.order = ORDER_NNUNET;
    else if (v && !strcmp(v, "nibabel"))
        m.order = ORDER_NIBABEL;
    else {
        bad = "sauron.order";
        goto fail;
    }
    if ((v = prop_get(mp, "sauron.orientation"))) {
        int w[3], sg[3];
        if (orient_parse(v, w, sg)) {
            bad = "sauron.orientation";
            goto fail;
        }
        memcpy(m.orientation, v, 3);
    }
    if ((v = prop_get(mp, "sauron.spacing"))) {
        int n = -1;
        double *sp = m.spacing;
        if (sscanf(v, "%lf,%lf,%lf%n", &sp[0], &sp[1], &sp[2], &n) != 3 ||
            n < 0 || v[n] || !(sp[0] >= 0 && sp[0] <= 1000) ||
            !(sp[1] >= 0 && sp[1] <= 1000) ||
            !(sp[2] >= 0 && sp[2] <= 1000)) {
            bad = "sauron.spacing";
            goto fail;
        }
    }
    v = prop_get(mp, "sauron.source_sha256");
    if (!v || strlen(v) != 64) {
        bad = "sauron.source_sha256";
        goto fail;
    }
    for (int k = 0; k < 32; k++) {
        int hi = hex_digit(v[2 * k]), lo = hex_digit(v[2 * k + 1]);
        if (hi < 0 || lo < 0) {
            bad = "sauron.source_sha256";
            goto fail;
        }
        m.source_sha256[k] = (uint8_t)(hi << 4 | lo);
    }
    rc = ERR_NOMEM;
    if ((v = prop_get(mp, "sauron.source_name")) &&
        !(m.source_name = sl_strdup(v)))
        goto fail;
    if ((v = prop_get(mp, "sauron.notes")) && !(m.notes = sl_strdup(v)))
        goto fail;
    meta_free(&g->meta);
    g->meta = m;
    return 0;
fail:
    if (rc == ERR_NOMEM)
        sl_error("out of memory reading the metadata of '%s'", path);
    else
        sl_error("'%s': metadata property %s is missing or malformed; "
                 "re-export the model or remove its sauron.* "
                 "metadata_props",
                 path, bad);
    meta_free(&m);
    return rc == ERR_NOMEM ? ERR_NOMEM : ERR_FORMAT;
}
