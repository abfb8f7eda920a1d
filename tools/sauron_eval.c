/* sauron-eval: Dice and HD95 per class between a predicted and a reference
 * label map on the same NIfTI grid.
 *
 * Definitions (stated in --help too):
 *  - classes 1..N-1 are scored; 0 is background.  N = --classes, or the
 *    largest label in either file + 1.
 *  - Dice = 2|P and G| / (|P| + |G|).
 *  - boundary of a mask = its voxels with at least one 6-neighbour outside
 *    the mask (the volume's edge counts as outside).
 *  - HD95 = 95th percentile (linear interpolation between order
 *    statistics, as numpy.percentile) of the pooled distances from every
 *    boundary voxel of P to the nearest boundary voxel of G and from every
 *    boundary voxel of G to the nearest of P, in mm (voxel centres scaled
 *    by pixdim; anisotropic spacing is exact).
 *  - both masks empty: Dice 1, HD95 0.  Exactly one empty: Dice 0, HD95
 *    undefined: "inf" in the table and CSV, null in JSON; a mean over
 *    classes containing it is inf/null too.
 *
 * Distances come from an exact Euclidean distance transform (Felzenszwalb
 * and Huttenlocher's lower envelope of parabolas, one pass per axis, in
 * mm^2) restricted to the bounding box of both boundaries: every site and
 * every query lies inside it, so cropping changes no distance.
 *
 * Links the runtime only (NIfTI reading); header geometry comes straight
 * from libnifti because the runtime's NiftiGeom is opaque.
 */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nifti2_io.h>
#include <omp.h>

#include "runtime/cliopt.h"
#include "runtime/common.h"
#include "runtime/nifti_io.h"
#include "runtime/volume.h"

#define MAX_CLASSES 32767        /* labels are read as int16-range integers */
#define INF_D ((double)INFINITY) /* INFINITY is a float constant */

typedef struct {
    int64_t dim[3];   /* nx, ny, nz */
    double sp[3];     /* voxel size in mm along i, j, k */
    double aff[4][4]; /* voxel -> world (sform, else qform, else pixdim) */
    int16_t *lab;     /* [nz][ny][nx], owned */
} LabelMap;

typedef struct {
    int cls;
    double dice;
    double hd95; /* mm; infinite when exactly one mask is empty */
    int64_t n_gt, n_pred;
} ClassScore;

/* ---- reading ---- */

/* Effective voxel-to-world matrix, the way readers resolve it. */
static void effective_affine(const nifti_image *h, double aff[4][4])
{
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) {
            if (h->sform_code > 0)
                aff[r][c] = h->sto_xyz.m[r][c];
            else if (h->qform_code > 0)
                aff[r][c] = h->qto_xyz.m[r][c];
            else
                aff[r][c] = r == c ? (r < 3 ? h->pixdim[r + 1] : 1.0) : 0.0;
        }
}

static int read_labels(const char *path, LabelMap *m)
{
    Volume v = {0};
    nifti_image *h = NULL;
    int rc = SL_OK;
    memset(m, 0, sizeof *m);
    if (strchr(path, ',')) {
        sl_error("'%s': file names containing ',' are not supported; "
                 "rename the file",
                 path);
        return ERR_ARG;
    }
    rc = nio_read(path, &v, NULL);
    if (rc) goto fail;
    if (v.n_mod != 1) {
        sl_error("'%s' has %d volumes; a label map must be one 3D volume",
                 path, v.n_mod);
        rc = ERR_SHAPE;
        goto fail;
    }
    nifti_set_debug_level(0);
    h = nifti_image_read(path, 0);
    if (!h) {
        sl_error("cannot read the header of '%s'", path);
        rc = ERR_IO;
        goto fail;
    }
    for (int d = 0; d < 3; d++) {
        m->dim[d] = v.dim[d];
        m->sp[d] = fabs(h->pixdim[d + 1]);
        if (!(m->sp[d] > 0.0) || !isfinite(m->sp[d])) {
            sl_error("'%s' has voxel size pixdim[%d] = %g; fix the header "
                     "(it must be a positive size in mm)",
                     path, d + 1, h->pixdim[d + 1]);
            rc = ERR_FORMAT;
            goto fail;
        }
    }
    effective_affine(h, m->aff);
    int64_t n = volume_voxels(&v);
    m->lab = sl_alloc((size_t)n * sizeof *m->lab);
    if (!m->lab) {
        sl_error("out of memory for the labels of '%s'", path);
        rc = ERR_NOMEM;
        goto fail;
    }
    for (int64_t i = 0; i < n; i++) {
        float x = v.data[i];
        float r = rintf(x);
        /* 1e-3: label maps stored as float or scaled ints round-trip far
         * closer than that; anything further off is not a label map */
        if (!(fabsf(x - r) <= 1e-3f) || r < 0.0f || r > (float)MAX_CLASSES) {
            sl_error("'%s' voxel %lld has value %g: not a label map "
                     "(labels must be integers 0..%d)",
                     path, (long long)i, (double)x, MAX_CLASSES);
            rc = ERR_FORMAT;
            goto fail;
        }
        m->lab[i] = (int16_t)r;
    }
fail:
    if (rc) {
        sl_free(m->lab);
        m->lab = NULL;
    }
    if (h) nifti_image_free(h);
    volume_free(&v);
    return rc;
}

static int same_grid(const LabelMap *a, const char *pa, const LabelMap *b,
                     const char *pb)
{
    char what[160] = "";
    if (a->dim[0] != b->dim[0] || a->dim[1] != b->dim[1] ||
        a->dim[2] != b->dim[2]) {
        snprintf(
            what, sizeof what, "dimensions %lldx%lldx%lld vs %lldx%lldx%lld",
            (long long)a->dim[0], (long long)a->dim[1], (long long)a->dim[2],
            (long long)b->dim[0], (long long)b->dim[1], (long long)b->dim[2]);
    } else {
        for (int d = 0; d < 3 && !what[0]; d++)
            if (fabs(a->sp[d] - b->sp[d]) > 1e-5 * (a->sp[d] + b->sp[d]))
                snprintf(what, sizeof what, "voxel size pixdim[%d] %g vs %g",
                         d + 1, a->sp[d], b->sp[d]);
        /* 1e-4 mm: float32 header storage rounds world offsets of a few
         * hundred mm to ~1e-5; a real misregistration is far larger */
        for (int r = 0; r < 3 && !what[0]; r++)
            for (int c = 0; c < 4 && !what[0]; c++)
                if (fabs(a->aff[r][c] - b->aff[r][c]) > 1e-4)
                    snprintf(
                        what, sizeof what,
                        "voxel-to-world matrix (row %d col %d: %g vs %g)", r,
                        c, a->aff[r][c], b->aff[r][c]);
    }
    if (!what[0]) return SL_OK;
    sl_error("'%s' and '%s' are not on the same grid: %s; resample the "
             "prediction to the reference grid first",
             pa, pb, what);
    return ERR_SHAPE;
}

/* ---- distances ---- */

/* One axis of the exact squared EDT (Felzenszwalb-Huttenlocher).
 * f [n]: squared distance so far (INF_D = no site on this line yet);
 * d [n]: result; v [n], z [n+1]: scratch.  Sites sit at q*sp mm. */
static void edt_line(double *d, const double *f, int64_t n, double sp,
                     int64_t *v, double *z)
{
    int64_t k = -1;
    for (int64_t q = 0; q < n; q++) {
        if (f[q] == INF_D) continue;
        double xq = (double)q * sp, s = -INF_D;
        /* pop parabolas that the one from q hides; z[0] = -inf keeps the
         * first */
        while (k >= 0) {
            double xv = (double)v[k] * sp;
            s = ((f[q] + xq * xq) - (f[v[k]] + xv * xv)) / (2.0 * (xq - xv));
            if (s > z[k]) break;
            k--;
        }
        k++;
        v[k] = q;
        z[k] = k == 0 ? -INF_D : s;
        z[k + 1] = INF_D;
    }
    if (k < 0) {
        for (int64_t q = 0; q < n; q++)
            d[q] = INF_D;
        return;
    }
    int64_t j = 0;
    for (int64_t q = 0; q < n; q++) {
        double xq = (double)q * sp;
        while (z[j + 1] < xq)
            j++;
        double dx = xq - (double)v[j] * sp;
        d[q] = dx * dx + f[v[j]];
    }
}

/* In-place squared EDT of g [b2][b1][b0] (0 at sites, INF_D elsewhere),
 * spacing sp[3] along axes 0..2.  Lines are independent: one thread per
 * line, each with its own scratch, so the result is thread-count free. */
static int edt3(double *g, const int64_t b[3], const double sp[3])
{
    int nth = omp_get_max_threads();
    int64_t nmax = b[0] > b[1] ? b[0] : b[1];
    if (b[2] > nmax) nmax = b[2];
    /* per thread: f, d, z (n+1 each) doubles and v (n) int64 */
    size_t per = (size_t)(4 * nmax + 2);
    double *scratch = sl_calloc((size_t)nth * per, sizeof(double));
    if (!scratch) {
        sl_error("out of memory for the distance transform (%lld lines)",
                 (long long)nmax);
        return ERR_NOMEM;
    }
    int64_t stride[3] = {1, b[0], b[0] * b[1]};
    for (int ax = 0; ax < 3; ax++) {
        int64_t n = b[ax], st = stride[ax];
        int64_t lines = b[0] * b[1] * b[2] / n;
        int64_t a1 = ax == 0 ? 1 : 0; /* the two other axes, fastest first */
        int64_t a2 = ax == 2 ? 1 : 2;
#pragma omp parallel for schedule(static)
        for (int64_t l = 0; l < lines; l++) {
            double *f = scratch + (size_t)omp_get_thread_num() * per;
            double *d = f + nmax;
            double *z = d + nmax;
            int64_t *v = (int64_t *)(void *)(z + nmax + 1);
            int64_t base =
                (l % b[a1]) * stride[a1] + (l / b[a1]) * stride[a2];
            for (int64_t q = 0; q < n; q++)
                f[q] = g[base + q * st];
            edt_line(d, f, n, sp[ax], v, z);
            for (int64_t q = 0; q < n; q++)
                g[base + q * st] = d[q];
        }
    }
    sl_free(scratch);
    return SL_OK;
}

static int is_boundary(const uint8_t *m, const int64_t dim[3], int64_t x,
                       int64_t y, int64_t z)
{
    int64_t nx = dim[0], ny = dim[1], nz = dim[2];
    int64_t i = (z * ny + y) * nx + x;
    if (!m[i]) return 0;
    if (x == 0 || y == 0 || z == 0 || x == nx - 1 || y == ny - 1 ||
        z == nz - 1)
        return 1;
    return !m[i - 1] || !m[i + 1] || !m[i - nx] || !m[i + nx] ||
           !m[i - nx * ny] || !m[i + nx * ny];
}

/* HD95 in mm between masks p and g [nz][ny][nx] (both non-empty). */
static int hd95(const uint8_t *p, const uint8_t *g, const int64_t dim[3],
                const double sp[3], double *out)
{
    double *grid = NULL, *dist = NULL;
    int rc = SL_OK;
    int64_t lo[3] = {dim[0], dim[1], dim[2]}, hi[3] = {-1, -1, -1};
    int64_t nb = 0;
    for (int64_t z = 0; z < dim[2]; z++)
        for (int64_t y = 0; y < dim[1]; y++)
            for (int64_t x = 0; x < dim[0]; x++)
                if (is_boundary(p, dim, x, y, z) ||
                    is_boundary(g, dim, x, y, z)) {
                    int64_t c[3] = {x, y, z};
                    for (int d = 0; d < 3; d++) {
                        if (c[d] < lo[d]) lo[d] = c[d];
                        if (c[d] > hi[d]) hi[d] = c[d];
                    }
                    nb += is_boundary(p, dim, x, y, z) +
                          is_boundary(g, dim, x, y, z);
                }
    CHECK(nb > 0);
    int64_t b[3] = {hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1};
    size_t cells = (size_t)(b[0] * b[1] * b[2]);
    grid = sl_alloc(cells * sizeof *grid);
    dist = sl_alloc((size_t)nb * sizeof *dist);
    if (!grid || !dist) {
        sl_error("out of memory for HD95 (%zu voxels in the bounding box)",
                 cells);
        rc = ERR_NOMEM;
        goto fail;
    }
    int64_t nd = 0;
    for (int pass = 0; pass < 2; pass++) {
        const uint8_t *site = pass == 0 ? g : p;  /* distances to this */
        const uint8_t *query = pass == 0 ? p : g; /* from this boundary */
        for (int64_t z = 0; z < b[2]; z++)
            for (int64_t y = 0; y < b[1]; y++)
                for (int64_t x = 0; x < b[0]; x++)
                    grid[(z * b[1] + y) * b[0] + x] =
                        is_boundary(site, dim, x + lo[0], y + lo[1],
                                    z + lo[2])
                            ? 0.0
                            : INF_D;
        rc = edt3(grid, b, sp);
        if (rc) goto fail;
        for (int64_t z = 0; z < b[2]; z++)
            for (int64_t y = 0; y < b[1]; y++)
                for (int64_t x = 0; x < b[0]; x++)
                    if (is_boundary(query, dim, x + lo[0], y + lo[1],
                                    z + lo[2]))
                        dist[nd++] = sqrt(grid[(z * b[1] + y) * b[0] + x]);
    }
    CHECK(nd == nb);
    sl_sort_doubles(dist, (size_t)nd);
    double pos = 0.95 * (double)(nd - 1);
    int64_t i0 = (int64_t)floor(pos);
    int64_t i1 = i0 + 1 < nd ? i0 + 1 : i0;
    *out = dist[i0] + (pos - (double)i0) * (dist[i1] - dist[i0]);
fail:
    sl_free(grid);
    sl_free(dist);
    return rc;
}

static int score_class(const LabelMap *pr, const LabelMap *gt, int cls,
                       uint8_t *pm, uint8_t *gm, ClassScore *s)
{
    int64_t n = pr->dim[0] * pr->dim[1] * pr->dim[2], inter = 0;
    s->cls = cls;
    s->n_gt = s->n_pred = 0;
    for (int64_t i = 0; i < n; i++) {
        pm[i] = pr->lab[i] == cls;
        gm[i] = gt->lab[i] == cls;
        s->n_pred += pm[i];
        s->n_gt += gm[i];
        inter += pm[i] & gm[i];
    }
    if (s->n_pred == 0 && s->n_gt == 0) {
        s->dice = 1.0;
        s->hd95 = 0.0;
        return SL_OK;
    }
    s->dice = 2.0 * (double)inter / (double)(s->n_pred + s->n_gt);
    if (s->n_pred == 0 || s->n_gt == 0) {
        s->hd95 = INF_D;
        return SL_OK;
    }
    return hd95(pm, gm, pr->dim, pr->sp, &s->hd95);
}

/* ---- output ---- */

/* Append printf output to a growing buffer (buf, len, cap). */
typedef struct {
    char *p;
    size_t len, cap;
    int failed;
} Text;

static void text_add(Text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void text_add(Text *t, const char *fmt, ...)
{
    if (t->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = t->cap - t->len;
        int k = vsnprintf(t->p ? t->p + t->len : NULL, room, fmt, ap);
        va_end(ap);
        if (k < 0) {
            t->failed = 1;
            return;
        }
        if ((size_t)k < room) {
            t->len += (size_t)k;
            return;
        }
        size_t cap = (t->cap + (size_t)k + 1) * 2;
        char *q = sl_realloc(t->p, cap);
        if (!q) {
            t->failed = 1;
            return;
        }
        t->p = q;
        t->cap = cap;
    }
}

/* %.17g keeps doubles exact for tests and scripts; inf/null per format. */
static void add_num(Text *t, double x, int json)
{
    if (isinf(x))
        text_add(t, "%s", json ? "null" : "inf");
    else
        text_add(t, "%.17g", x);
}

static void add_json_string(Text *t, const char *s)
{
    text_add(t, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            text_add(t, "\\%c", c);
        else if (c < 0x20)
            text_add(t, "\\u%04x", c);
        else
            text_add(t, "%c", c);
    }
    text_add(t, "\"");
}

static void means(const ClassScore *s, int n, double *dice, double *hd)
{
    *dice = 0.0;
    *hd = 0.0;
    for (int i = 0; i < n; i++) {
        *dice += s[i].dice / n;
        *hd += s[i].hd95 / n; /* inf stays inf */
    }
}

static void format_csv(Text *t, const ClassScore *s, int n)
{
    text_add(t, "class,dice,hd95_mm,gt_voxels,pred_voxels\n");
    for (int i = 0; i < n; i++) {
        text_add(t, "%d,", s[i].cls);
        add_num(t, s[i].dice, 0);
        text_add(t, ",");
        add_num(t, s[i].hd95, 0);
        text_add(t, ",%lld,%lld\n", (long long)s[i].n_gt,
                 (long long)s[i].n_pred);
    }
    double md, mh;
    means(s, n, &md, &mh);
    text_add(t, "mean,");
    add_num(t, md, 0);
    text_add(t, ",");
    add_num(t, mh, 0);
    text_add(t, ",,\n");
}

static void format_json(Text *t, const ClassScore *s, int n, const char *pred,
                        const char *gt, const double sp[3])
{
    text_add(t, "{\n  \"pred\": ");
    add_json_string(t, pred);
    text_add(t, ",\n  \"gt\": ");
    add_json_string(t, gt);
    text_add(t, ",\n  \"spacing_mm\": [%.17g, %.17g, %.17g],\n", sp[0], sp[1],
             sp[2]);
    text_add(t, "  \"hd95_definition\": \"95th percentile of pooled "
                "symmetric boundary distances; null if exactly one mask is "
                "empty\",\n  \"classes\": [\n");
    for (int i = 0; i < n; i++) {
        text_add(t, "    {\"class\": %d, \"dice\": ", s[i].cls);
        add_num(t, s[i].dice, 1);
        text_add(t, ", \"hd95_mm\": ");
        add_num(t, s[i].hd95, 1);
        text_add(t, ", \"gt_voxels\": %lld, \"pred_voxels\": %lld}%s\n",
                 (long long)s[i].n_gt, (long long)s[i].n_pred,
                 i + 1 < n ? "," : "");
    }
    double md, mh;
    means(s, n, &md, &mh);
    text_add(t, "  ],\n  \"mean_dice\": ");
    add_num(t, md, 1);
    text_add(t, ",\n  \"mean_hd95_mm\": ");
    add_num(t, mh, 1);
    text_add(t, "\n}\n");
}

static int write_text(const char *path, const Text *t, int force)
{
    if (t->failed) {
        sl_error("out of memory formatting '%s'", path);
        return ERR_NOMEM;
    }
    return sl_write_file_atomic(path, t->p, t->len, force);
}

/* ---- main ---- */

typedef struct {
    const char *pred, *gt, *csv, *json;
    int classes; /* 0 = from the data */
    int force;
} Args;

static const CliOpt eval_opts[] = {
    {.name = "classes",
     .type = CLI_INT,
     .lo = 2,
     .hi = MAX_CLASSES + 1,
     .metavar = "N",
     .off = offsetof(Args, classes),
     .help = "score classes 1..N-1 (default: largest label + 1)"},
    {.name = "csv",
     .type = CLI_STRING,
     .metavar = "OUT.csv",
     .off = offsetof(Args, csv),
     .help = "also write the table as CSV"},
    {.name = "json",
     .type = CLI_STRING,
     .metavar = "OUT.json",
     .off = offsetof(Args, json),
     .help = "also write the table as JSON"},
    {.name = "force",
     .type = CLI_FLAG,
     .off = offsetof(Args, force),
     .help = "overwrite --csv/--json outputs if they exist"},
};

static const CliGroup eval_groups[] = {
    {NULL, eval_opts, sizeof eval_opts / sizeof *eval_opts, 0},
};

static const CliSpec eval_cli = {
    .prog = "sauron-eval",
    .version = "sauron-eval (sauron)",
    .summary = "Dice and HD95 between two label maps",
    .synopsis = "PRED.nii.gz GT.nii.gz [--classes N] [--csv OUT.csv] "
                "[--json OUT.json] [--force]",
    .description =
        "Dice and HD95 (mm) per class between two label maps on the\n"
        "same grid (dims, pixdim and voxel-to-world matrix must match).\n"
        "Classes 1..N-1 are scored.  HD95: 95th percentile (numpy-style\n"
        "linear interpolation) of the pooled symmetric distances between\n"
        "the boundary voxels (6-neighbourhood) of the two masks, using\n"
        "pixdim spacing.  Both masks empty: Dice 1, HD95 0.  One empty:\n"
        "Dice 0, HD95 inf (null in JSON).  Prints a table on stdout;\n"
        "--csv/--json also write it to files (refusing to overwrite\n"
        "without --force).",
    .groups = eval_groups,
    .n_groups = 1,
    .notes = "Exit status: 0 on success, 1 on failure, 2 for a usage "
             "error.",
};

/* 0 ok, CLI_HELP/VERSION/MAN (printed), or ERR_ARG / ERR_NOMEM. */
static int parse_args(int argc, char **argv, Args *a)
{
    memset(a, 0, sizeof *a);
    char **pos = sl_calloc((size_t)argc + 1, sizeof *pos);
    int npos = 0, rc = ERR_NOMEM;
    if (!pos) {
        sl_error("out of memory");
        return rc;
    }
    rc = cli_parse(&eval_cli, argc, argv, a, pos, &npos);
    if (rc == CLI_HELP) cli_help(&eval_cli, stdout);
    if (rc == CLI_VERSION) printf("%s\n", eval_cli.version);
    if (rc == CLI_MAN) cli_man(&eval_cli, stdout);
    if (rc) goto done;
    rc = ERR_ARG;
    if (npos > 2)
        sl_error("unexpected argument '%s'; see sauron-eval --help", pos[2]);
    else if (npos < 2)
        sl_error("need PRED.nii.gz and GT.nii.gz; see sauron-eval --help");
    else
        rc = SL_OK;
    a->pred = npos > 0 ? pos[0] : NULL;
    a->gt = npos > 1 ? pos[1] : NULL;
done:
    sl_free(pos);
    return rc;
}

static int run(const Args *a)
{
    LabelMap pr = {0}, gt = {0};
    uint8_t *pm = NULL, *gm = NULL;
    ClassScore *sc = NULL;
    Text csv = {0}, json = {0};
    const char *outs[2] = {a->csv, a->json};
    for (int k = 0; k < 2; k++)
        if (outs[k] && (sl_same_file(outs[k], a->pred) ||
                        sl_same_file(outs[k], a->gt))) {
            sl_error("output '%s' is an input label map; choose another "
                     "output path",
                     outs[k]);
            return ERR_ARG;
        }
    int rc = read_labels(a->pred, &pr);
    if (rc) goto fail;
    rc = read_labels(a->gt, &gt);
    if (rc) goto fail;
    rc = same_grid(&pr, a->pred, &gt, a->gt);
    if (rc) goto fail;
    int64_t n = pr.dim[0] * pr.dim[1] * pr.dim[2];
    int maxlab = 0;
    for (int64_t i = 0; i < n; i++) {
        if (pr.lab[i] > maxlab) maxlab = pr.lab[i];
        if (gt.lab[i] > maxlab) maxlab = gt.lab[i];
    }
    int nc = a->classes ? a->classes : (maxlab + 1 > 2 ? maxlab + 1 : 2);
    if (maxlab >= nc) {
        sl_error("label %d found but --classes is %d; pass a larger "
                 "--classes",
                 maxlab, nc);
        rc = ERR_ARG;
        goto fail;
    }
    pm = sl_alloc((size_t)n);
    gm = sl_alloc((size_t)n);
    sc = sl_calloc((size_t)nc, sizeof *sc);
    if (!pm || !gm || !sc) {
        sl_error("out of memory for %lld-voxel masks", (long long)n);
        rc = ERR_NOMEM;
        goto fail;
    }
    for (int c = 1; c < nc; c++) {
        rc = score_class(&pr, &gt, c, pm, gm, &sc[c - 1]);
        if (rc) goto fail;
    }
    format_csv(&csv, sc, nc - 1);
    if (csv.failed) {
        sl_error("out of memory formatting the results");
        rc = ERR_NOMEM;
        goto fail;
    }
    fwrite(csv.p, 1, csv.len, stdout);
    if (a->csv) {
        rc = write_text(a->csv, &csv, a->force);
        if (rc) goto fail;
    }
    if (a->json) {
        format_json(&json, sc, nc - 1, a->pred, a->gt, pr.sp);
        rc = write_text(a->json, &json, a->force);
        if (rc) goto fail;
    }
fail:
    sl_free(csv.p);
    sl_free(json.p);
    sl_free(sc);
    sl_free(pm);
    sl_free(gm);
    sl_free(pr.lab);
    sl_free(gt.lab);
    return rc;
}

int main(int argc, char **argv)
{
    Args a;
    int rc = parse_args(argc, argv, &a);
    if (rc > 0) return 0;
    if (rc) return 2;
    return run(&a) ? 1 : 0;
}
