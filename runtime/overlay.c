/* Overlay pictures (see overlay.h).
 *
 * NIfTI world space is RAS+: +x points to the patient's Right, +y
 * Anterior, +z Superior.  Every panel runs
 * from the high end of its world axes to the low end, which puts R on
 * the left (radiological), A and S at the top, and A on the left of the
 * sagittal panel.
 */
#include "overlay.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "font5x7.h"

/* Colours of classes 1, 2, ... (repeating): saturated hues that stay
 * distinct from each other and from grey when blended at OVERLAY_ALPHA. */
static const uint8_t palette[][3] = {
    {255, 40, 40},   {40, 220, 40},   {60, 120, 255}, {255, 220, 0},
    {0, 220, 220},   {255, 0, 255},   {255, 140, 0},  {160, 80, 255},
    {140, 255, 140}, {255, 150, 180},
};
#define N_PALETTE (int)(sizeof palette / sizeof palette[0])

static const char convention[] = "RADIOLOGICAL: PATIENT RIGHT ON IMAGE LEFT";
static const char *const panel_name[OVERLAY_PANELS] = {"AXIAL", "CORONAL",
                                                       "SAGITTAL"};
/* World axes of each panel: plane normal, columns, rows (0 x, 1 y, 2 z);
 * columns and rows run from the high world coordinate to the low one. */
static const int panel_axes[OVERLAY_PANELS][3] = {
    {2, 0, 1}, /* axial: columns R->L, rows A->P */
    {1, 0, 2}, /* coronal: columns R->L, rows S->I */
    {0, 1, 2}, /* sagittal: columns A->P, rows S->I */
};
/* Direction letters: left, right, top, bottom edge of each panel. */
static const char panel_letters[OVERLAY_PANELS][4] = {
    {'R', 'L', 'A', 'P'}, {'R', 'L', 'S', 'I'}, {'A', 'P', 'S', 'I'}};

/* Font scale, margins (pixels). */
enum {
    FS = 2,
    GLYPH_W = FONT_W * FS,
    GLYPH_H = FONT_H * FS,
    MARGIN = GLYPH_H + 8,
    TITLE_H = GLYPH_H + 8
};
static const uint8_t background[3] = {32, 32, 40};
static const uint8_t ink[3] = {255, 255, 255};
/* Percentile window and histogram resolution. */
#define P_LO 0.005
#define P_HI 0.995
enum { N_BINS = 4096 };

void overlay_class_colour(int c, uint8_t rgb[3])
{
    const uint8_t *p = palette[(c > 0 ? c - 1 : 0) % N_PALETTE];
    memcpy(rgb, p, 3);
}

void overlay_free(OverlayImage *img)
{
    sl_free(img->rgb);
    memset(img, 0, sizeof *img);
}

/* Round a voxel index; an index within 1e-6 of halfway goes to the voxel
 * with the smaller world coordinate (up = 1 when the index grows with
 * it), so flipping a storage axis does not change the voxel chosen. */
static int64_t round_index(double u, int up)
{
    double fl = floor(u);
    if (fabs(u - fl - 0.5) < 1e-6) return (int64_t)(up ? fl : fl + 1);
    return (int64_t)floor(u + 0.5);
}

/* 3x3 inverse by cofactors; 0 or -1 when (nearly) singular. */
static int invert3(double a[3][4], double b[3][3])
{
    double det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) -
                 a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0]) +
                 a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
    if (!(fabs(det) > 1e-12)) return -1;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 3; c++) {
            int r1 = (c + 1) % 3, r2 = (c + 2) % 3;
            int c1 = (r + 1) % 3, c2 = (r + 2) % 3;
            b[r][c] = (a[r1][c1] * a[r2][c2] - a[r1][c2] * a[r2][c1]) / det;
        }
    return 0;
}

/* Grey window [lo, hi] of modality 0 from the percentile histogram. */
static void grey_window(const Volume *v, double *lo, double *hi)
{
    int64_t n = volume_voxels(v), n_fin = 0;
    double mn = INFINITY, mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        double x = v->data[i];
        if (!isfinite(x)) continue;
        n_fin++;
        if (x < mn) mn = x;
        if (x > mx) mx = x;
    }
    if (n_fin == 0 || !(mx > mn)) {
        *lo = n_fin ? mn : 0;
        *hi = *lo + 1;
        return;
    }
    int64_t hist[N_BINS] = {0};
    double scale = (N_BINS - 1) / (mx - mn);
    for (int64_t i = 0; i < n; i++) {
        double x = v->data[i];
        if (isfinite(x)) hist[(int)((x - mn) * scale)]++;
    }
    int64_t want_lo = (int64_t)(P_LO * (double)n_fin),
            want_hi = (int64_t)(P_HI * (double)n_fin);
    int64_t cum = 0;
    int b_lo = -1, b_hi = N_BINS - 1;
    for (int b = 0; b < N_BINS; b++) {
        cum += hist[b];
        if (b_lo < 0 && cum > want_lo) b_lo = b;
        if (cum > want_hi) {
            b_hi = b;
            break;
        }
    }
    *lo = mn + b_lo / scale;
    *hi = mn + (b_hi + 1) / scale;
    if (*hi > mx) *hi = mx;
    if (!(*hi > *lo)) *hi = *lo + (mx - mn) / N_BINS;
}

static void put_pixel(OverlayImage *img, int x, int y, const uint8_t c[3])
{
    if (x < 0 || y < 0 || x >= img->width || y >= img->height) return;
    memcpy(img->rgb + ((size_t)y * (size_t)img->width + (size_t)x) * 3, c, 3);
}

/* Text at (x, y), each font pixel drawn as a scale x scale square. */
static void draw_text(OverlayImage *img, int x, int y, const char *s,
                      int scale)
{
    for (; *s; s++, x += (FONT_W + 1) * scale) {
        const uint8_t *g = font5x7_glyph(*s);
        if (!g) continue;
        for (int r = 0; r < FONT_H * scale; r++)
            for (int c = 0; c < FONT_W * scale; c++)
                if (g[r / scale] >> (FONT_W - 1 - c / scale) & 1)
                    put_pixel(img, x + c, y + r, ink);
    }
}

static int text_width(const char *s, int scale)
{
    return ((int)strlen(s) * (FONT_W + 1) - 1) * scale;
}

typedef struct {
    const Volume *v;
    const int16_t *labels;
    double a[3][4], inv[3][3];
    int up[3];          /* index grows with its dominant world axis */
    double world_hi[3]; /* high corner of the voxel-centre bounding box */
    double centre[3];   /* world position of img->centre */
    double glo, ghi;    /* grey window */
} Scene;

/* Grey level and label of the voxel nearest world point p; label -1 and
 * grey 0 outside the scan. */
static void sample(const Scene *s, const double p[3], uint8_t *grey,
                   int *label)
{
    double d[3] = {p[0] - s->a[0][3], p[1] - s->a[1][3], p[2] - s->a[2][3]};
    int64_t idx[3];
    for (int r = 0; r < 3; r++) {
        double u =
            s->inv[r][0] * d[0] + s->inv[r][1] * d[1] + s->inv[r][2] * d[2];
        idx[r] = round_index(u, s->up[r]);
        if (idx[r] < 0 || idx[r] >= s->v->dim[r]) {
            *grey = 0;
            *label = -1;
            return;
        }
    }
    size_t o =
        (size_t)((idx[2] * s->v->dim[1] + idx[1]) * s->v->dim[0] + idx[0]);
    double x = s->v->data[o];
    double g = isfinite(x) ? (x - s->glo) / (s->ghi - s->glo) : 0;
    g = g < 0 ? 0 : g > 1 ? 1 : g;
    *grey = (uint8_t)(g * 255 + 0.5);
    *label = s->labels[o];
}

/* Resample panel p into img (grey, labels blended, outlines). */
static int draw_panel(OverlayImage *img, const Scene *s, int p)
{
    const OverlayPanel *pn = &img->panel[p];
    const int *ax = panel_axes[p];
    size_t n = (size_t)pn->w * (size_t)pn->h;
    int *lab = sl_alloc(n * sizeof *lab);
    uint8_t *grey = sl_alloc(n);
    if (!lab || !grey) {
        sl_free(lab);
        sl_free(grey);
        return ERR_NOMEM;
    }
    for (int r = 0; r < pn->h; r++)
        for (int c = 0; c < pn->w; c++) {
            double w[3];
            w[ax[0]] = s->centre[ax[0]];
            w[ax[1]] = s->world_hi[ax[1]] - c * img->step;
            w[ax[2]] = s->world_hi[ax[2]] - r * img->step;
            size_t o = (size_t)r * (size_t)pn->w + (size_t)c;
            sample(s, w, &grey[o], &lab[o]);
        }
    for (int r = 0; r < pn->h; r++)
        for (int c = 0; c < pn->w; c++) {
            size_t o = (size_t)r * (size_t)pn->w + (size_t)c;
            uint8_t px[3] = {grey[o], grey[o], grey[o]};
            int l = lab[o];
            if (l > 0) {
                uint8_t col[3];
                overlay_class_colour(l, col);
                int edge = (c > 0 && lab[o - 1] != l) ||
                           (c + 1 < pn->w && lab[o + 1] != l) ||
                           (r > 0 && lab[o - (size_t)pn->w] != l) ||
                           (r + 1 < pn->h && lab[o + (size_t)pn->w] != l);
                for (int k = 0; k < 3; k++)
                    px[k] = edge
                                ? col[k]
                                : (uint8_t)((grey[o] * (256 - OVERLAY_ALPHA) +
                                             col[k] * OVERLAY_ALPHA + 128) >>
                                            8);
            }
            put_pixel(img, pn->x0 + c, pn->y0 + r, px);
        }
    sl_free(lab);
    sl_free(grey);
    return 0;
}

int overlay_render(OverlayImage *img, const Volume *v, const int16_t *labels,
                   double aff[3][4], const char *what)
{
    memset(img, 0, sizeof *img);
    Scene s = {.v = v, .labels = labels};
    memcpy(s.a, aff, sizeof s.a);
    if (invert3(s.a, s.inv)) {
        sl_error("the voxel-to-world affine of '%s' is singular; fix its "
                 "qform/sform, or drop --overlay",
                 what);
        return ERR_ARG;
    }
    /* Pixel side: the smallest voxel spacing; the dominant world axis of
     * each voxel axis decides its halfway rounding. */
    double step = INFINITY, lo[3], ext = 0;
    for (int c = 0; c < 3; c++) {
        double len = sqrt(s.a[0][c] * s.a[0][c] + s.a[1][c] * s.a[1][c] +
                          s.a[2][c] * s.a[2][c]);
        if (len < step) step = len;
        int dom = 0;
        for (int r = 1; r < 3; r++)
            if (fabs(s.a[r][c]) > fabs(s.a[dom][c])) dom = r;
        s.up[c] = s.a[dom][c] > 0;
    }
    for (int r = 0; r < 3; r++) {
        lo[r] = s.world_hi[r] = s.a[r][3];
        for (int c = 0; c < 3; c++) {
            double e = s.a[r][c] * (double)(v->dim[c] - 1);
            if (e < 0)
                lo[r] += e;
            else
                s.world_hi[r] += e;
        }
        if (s.world_hi[r] - lo[r] > ext) ext = s.world_hi[r] - lo[r];
    }
    if (ext / step > OVERLAY_MAX_PANEL - 1)
        step = ext / (OVERLAY_MAX_PANEL - 1);
    img->step = step;
    int size[3];
    for (int r = 0; r < 3; r++)
        size[r] = (int)floor((s.world_hi[r] - lo[r]) / step + 1e-6) + 1;

    /* Centre: the mean index of the labelled voxels (exact integer sums,
     * so the storage order does not change it), else the grid centre. */
    int64_t sum[3] = {0, 0, 0}, cnt = 0;
    for (int64_t k = 0, o = 0; k < v->dim[2]; k++)
        for (int64_t j = 0; j < v->dim[1]; j++)
            for (int64_t i = 0; i < v->dim[0]; i++, o++)
                if (labels[o] > 0) {
                    sum[0] += i;
                    sum[1] += j;
                    sum[2] += k;
                    cnt++;
                }
    for (int c = 0; c < 3; c++) {
        double m =
            cnt ? (double)sum[c] / (double)cnt : (double)(v->dim[c] - 1) / 2;
        img->centre[c] = round_index(m, s.up[c]);
    }
    for (int r = 0; r < 3; r++)
        s.centre[r] = s.a[r][3] + s.a[r][0] * (double)img->centre[0] +
                      s.a[r][1] * (double)img->centre[1] +
                      s.a[r][2] * (double)img->centre[2];
    grey_window(v, &s.glo, &s.ghi);

    /* Layout: a title strip, then the panels in a row, each inside a
     * margin that holds its direction letters. */
    int x = 0, hmax = 0;
    for (int p = 0; p < OVERLAY_PANELS; p++) {
        OverlayPanel *pn = &img->panel[p];
        pn->w = size[panel_axes[p][1]];
        pn->h = size[panel_axes[p][2]];
        pn->x0 = x + MARGIN;
        pn->y0 = TITLE_H + MARGIN;
        x += pn->w + 2 * MARGIN;
        if (pn->h > hmax) hmax = pn->h;
    }
    img->width = x > text_width(convention, FS) + 8
                     ? x
                     : text_width(convention, FS) + 8;
    img->height = TITLE_H + hmax + 2 * MARGIN;
    size_t bytes = (size_t)img->width * (size_t)img->height * 3;
    img->rgb = sl_alloc(bytes);
    if (!img->rgb) {
        sl_error("out of memory for the overlay picture of '%s'", what);
        return ERR_NOMEM;
    }
    for (size_t b = 0; b < bytes; b += 3)
        memcpy(img->rgb + b, background, 3);
    draw_text(img, 4, 4, convention, FS);
    for (int p = 0; p < OVERLAY_PANELS; p++) {
        if (draw_panel(img, &s, p)) {
            overlay_free(img);
            sl_error("out of memory for the overlay picture of '%s'", what);
            return ERR_NOMEM;
        }
        const OverlayPanel *pn = &img->panel[p];
        const char *L = panel_letters[p];
        char one[2] = {0, 0};
        int mid_y = pn->y0 + pn->h / 2 - GLYPH_H / 2,
            mid_x = pn->x0 + pn->w / 2 - GLYPH_W / 2;
        one[0] = L[0];
        draw_text(img, pn->x0 - MARGIN / 2 - GLYPH_W / 2, mid_y, one, FS);
        one[0] = L[1];
        draw_text(img, pn->x0 + pn->w + MARGIN / 2 - GLYPH_W / 2, mid_y, one,
                  FS);
        one[0] = L[2];
        draw_text(img, mid_x, pn->y0 - MARGIN / 2 - GLYPH_H / 2, one, FS);
        one[0] = L[3];
        draw_text(img, mid_x, pn->y0 + pn->h + MARGIN / 2 - GLYPH_H / 2, one,
                  FS);
        /* The panel's name, small, in its top-left margin when it fits
         * beside the top letter. */
        if (text_width(panel_name[p], 1) + GLYPH_W < pn->w / 2)
            draw_text(img, pn->x0, pn->y0 - MARGIN / 2 - FONT_H / 2,
                      panel_name[p], 1);
    }
    return 0;
}

/* libpng reports errors by longjmp; the caller prints the one line. */
static void png_fail(png_structp png, png_const_charp msg)
{
    (void)msg;
    png_longjmp(png, 1);
}

static void png_quiet(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

static int png_to_file(FILE *f, const OverlayImage *img)
{
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL,
                                              png_fail, png_quiet);
    if (!png) return -1;
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)img->width, (png_uint_32)img->height,
                 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < img->height; y++)
        png_write_row(png, img->rgb + (size_t)y * (size_t)img->width * 3);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}

int overlay_write_png(const char *path, const OverlayImage *img, int force)
{
    size_t n = strlen(path);
    if (n < 4 || strcmp(path + n - 4, ".png")) {
        sl_error("overlay '%s' must end in .png", path);
        return ERR_ARG;
    }
    if (!force && sl_file_exists(path)) {
        sl_error("output '%s' exists; pass --force to overwrite it", path);
        return ERR_EXISTS;
    }
    char *tmp = sl_tmp_path(path);
    if (!tmp) {
        sl_error("out of memory writing '%s'", path);
        return ERR_NOMEM;
    }
    int rc = ERR_IO;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        sl_error("cannot create '%s': %s; check the folder exists and is "
                 "writable",
                 tmp, strerror(errno));
        goto done;
    }
    int bad = png_to_file(f, img);
    bad |= fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad) {
        sl_error("cannot write '%s'; check free disk space", tmp);
        unlink(tmp);
        goto done;
    }
    if (rename(tmp, path) != 0) {
        sl_error("cannot rename '%s' to '%s': %s", tmp, path,
                 strerror(errno));
        unlink(tmp);
        goto done;
    }
    rc = 0;
done:
    sl_free(tmp);
    return rc;
}
