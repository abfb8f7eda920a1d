/* Overlay pictures (runtime/overlay.c, segment --overlay).
 *
 * A phantom whose intensity is its world x coordinate, with a labelled
 * cube off-centre, rendered from every one of the 48 storages of the same
 * grid (voxel axes permuted and flipped, affine columns to match): the
 * pictures must be byte-identical, and the cube's colour must land on the
 * pixel rows and columns the radiological layout puts it at (worked out
 * by hand below from the world coordinates).  Halfway ties are exercised
 * by the cube's centroid (13.5 along i) and by an anisotropic grid whose
 * 2 mm axis is sampled every 1 mm.  Then the PNG writer (decoded back
 * with libpng, same bytes from both storages, no clobber without
 * --force) and segment --overlay as a user runs it, one case and a batch.
 */
#include <math.h>
#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/batch.h"
#include "runtime/common.h"
#include "runtime/nifti_io.h"
#include "runtime/overlay.h"
#include "tests/batchcheck.h"
#include "tests/phantomscan.h"
#include "tests/testutil.h"

enum { NX = 20, NY = 16, NZ = 12 };
/* The cube: i 12..15, j 3..6, k 7..9 (class 1). */
static int in_cube(int i, int j, int k)
{
    return i >= 12 && i <= 15 && j >= 3 && j <= 6 && k >= 7 && k <= 9;
}

typedef struct {
    Volume v;
    int16_t *labels;
    double aff[3][4];
} Scene;

/* The reference storage: spacing sp, origin (-10, 5, 2), axes along
 * world x, y, z. */
static void make_scene(Scene *s, const double sp[3])
{
    assert_int_equal(volume_alloc(&s->v, NX, NY, NZ, 1), 0);
    s->labels = sl_calloc((size_t)NX * NY * NZ, sizeof(int16_t));
    assert_non_null(s->labels);
    memset(s->aff, 0, sizeof s->aff);
    const double t[3] = {-10, 5, 2};
    for (int r = 0; r < 3; r++) {
        s->aff[r][r] = sp[r];
        s->aff[r][3] = t[r];
    }
    size_t o = 0;
    for (int k = 0; k < NZ; k++)
        for (int j = 0; j < NY; j++)
            for (int i = 0; i < NX; i++, o++) {
                s->v.data[o] = (float)(i * sp[0]);
                s->labels[o] = (int16_t)(in_cube(i, j, k) ? 1 : 0);
            }
}

static void free_scene(Scene *s)
{
    volume_free(&s->v);
    sl_free(s->labels);
}

/* Store s again with new axis a taken from old axis perm[a], reversed
 * when bit a of flips is set; affine columns (and origin) to match, so
 * every voxel keeps its world position. */
static void restore(Scene *d, const Scene *s, const int perm[3], int flips)
{
    int64_t n[3];
    for (int a = 0; a < 3; a++)
        n[a] = s->v.dim[perm[a]];
    assert_int_equal(volume_alloc(&d->v, n[0], n[1], n[2], 1), 0);
    d->labels = sl_calloc((size_t)NX * NY * NZ, sizeof(int16_t));
    assert_non_null(d->labels);
    for (int r = 0; r < 3; r++) {
        d->aff[r][3] = s->aff[r][3];
        for (int a = 0; a < 3; a++) {
            double col = s->aff[r][perm[a]];
            int f = flips >> a & 1;
            d->aff[r][a] = f ? -col : col;
            if (f) d->aff[r][3] += col * (double)(n[a] - 1);
        }
    }
    int64_t q[3];
    size_t o = 0;
    for (q[2] = 0; q[2] < n[2]; q[2]++)
        for (q[1] = 0; q[1] < n[1]; q[1]++)
            for (q[0] = 0; q[0] < n[0]; q[0]++, o++) {
                int64_t old[3];
                for (int a = 0; a < 3; a++)
                    old[perm[a]] = flips >> a & 1 ? n[a] - 1 - q[a] : q[a];
                size_t so = (size_t)((old[2] * NY + old[1]) * NX + old[0]);
                d->v.data[o] = s->v.data[so];
                d->labels[o] = s->labels[so];
            }
}

static const int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};

static const uint8_t *px(const OverlayImage *img, int p, int r, int c)
{
    const OverlayPanel *pn = &img->panel[p];
    assert_true(r >= 0 && r < pn->h && c >= 0 && c < pn->w);
    return img->rgb + ((size_t)(pn->y0 + r) * (size_t)img->width +
                       (size_t)(pn->x0 + c)) *
                          3;
}

static int is_grey(const uint8_t *p)
{
    return p[0] == p[1] && p[1] == p[2];
}

/* Pixel (r, c) of panel p shows class 1: opaque on the cube's outline,
 * blended inside, grey outside the rectangle [r0,r1] x [c0,c1]. */
static void assert_cube(const OverlayImage *img, int p, int r0, int r1,
                        int c0, int c1)
{
    uint8_t red[3];
    overlay_class_colour(1, red);
    const OverlayPanel *pn = &img->panel[p];
    for (int r = 0; r < pn->h; r++)
        for (int c = 0; c < pn->w; c++) {
            const uint8_t *q = px(img, p, r, c);
            int inside = r >= r0 && r <= r1 && c >= c0 && c <= c1;
            int edge = inside && (r == r0 || r == r1 || c == c0 || c == c1);
            if (!inside) {
                if (!is_grey(q))
                    fail_msg("panel %d pixel (%d, %d) is coloured, the cube "
                             "is at rows %d..%d cols %d..%d",
                             p, r, c, r0, r1, c0, c1);
            } else if (edge) {
                assert_memory_equal(q, red, 3);
            } else {
                /* blended: red over grey at OVERLAY_ALPHA */
                assert_true(q[0] > q[1] && q[1] == q[2]);
            }
        }
}

/* The hand-worked layout of the isotropic 1 mm phantom. */
static void test_pixels_at_known_points(void **state)
{
    (void)state;
    Scene s;
    make_scene(&s, (const double[3]){1, 1, 1});
    OverlayImage img;
    assert_int_equal(overlay_render(&img, &s.v, s.labels, s.aff, "phantom"),
                     0);
    /* Centroid: i mean 13.5 and j mean 4.5 are halfway: the voxel with
     * the smaller world coordinate wins (13, 4); k mean 8. */
    assert_int_equal(img.centre[0], 13);
    assert_int_equal(img.centre[1], 4);
    assert_int_equal(img.centre[2], 8);
    assert_true(img.step == 1.0);
    /* Axial (z plane): col c is x = 9 - c, i = 19 - c; row r is
     * y = 20 - r, j = 15 - r.  Coronal: cols as axial; row r is
     * z = 13 - r, k = 11 - r.  Sagittal: col c is j = 15 - c, rows as
     * coronal. */
    assert_int_equal(img.panel[OVERLAY_AXIAL].w, NX);
    assert_int_equal(img.panel[OVERLAY_AXIAL].h, NY);
    assert_int_equal(img.panel[OVERLAY_CORONAL].w, NX);
    assert_int_equal(img.panel[OVERLAY_CORONAL].h, NZ);
    assert_int_equal(img.panel[OVERLAY_SAGITTAL].w, NY);
    assert_int_equal(img.panel[OVERLAY_SAGITTAL].h, NZ);
    assert_cube(&img, OVERLAY_AXIAL, 15 - 6, 15 - 3, 19 - 15, 19 - 12);
    assert_cube(&img, OVERLAY_CORONAL, 11 - 9, 11 - 7, 19 - 15, 19 - 12);
    assert_cube(&img, OVERLAY_SAGITTAL, 11 - 9, 11 - 7, 15 - 6, 15 - 3);
    /* Intensity is world x: the patient's right (high x) is bright and on
     * the left of the axial and coronal panels; the window spans it. */
    const uint8_t *left = px(&img, OVERLAY_AXIAL, 0, 0),
                  *right = px(&img, OVERLAY_AXIAL, 0, NX - 1);
    assert_int_equal(left[0], 255);
    assert_int_equal(right[0], 0);
    for (int c = 1; c < NX; c++)
        assert_true(px(&img, OVERLAY_CORONAL, 0, c)[0] <
                    px(&img, OVERLAY_CORONAL, 0, c - 1)[0]);
    overlay_free(&img);
    free_scene(&s);
}

/* Store s again (any grid size: the scene's own). */
static void restore_any(Scene *d, const Scene *s, const int perm[3],
                        int flips)
{
    int64_t n[3];
    for (int a = 0; a < 3; a++)
        n[a] = s->v.dim[perm[a]];
    size_t nv = (size_t)(n[0] * n[1] * n[2]);
    assert_int_equal(volume_alloc(&d->v, n[0], n[1], n[2], 1), 0);
    d->labels = sl_calloc(nv, sizeof(int16_t));
    assert_non_null(d->labels);
    for (int r = 0; r < 3; r++) {
        d->aff[r][3] = s->aff[r][3];
        for (int a = 0; a < 3; a++) {
            double col = s->aff[r][perm[a]];
            int f = flips >> a & 1;
            d->aff[r][a] = f ? -col : col;
            if (f) d->aff[r][3] += col * (double)(n[a] - 1);
        }
    }
    int64_t q[3];
    size_t o = 0;
    const int64_t *sd = s->v.dim;
    for (q[2] = 0; q[2] < n[2]; q[2]++)
        for (q[1] = 0; q[1] < n[1]; q[1]++)
            for (q[0] = 0; q[0] < n[0]; q[0]++, o++) {
                int64_t old[3];
                for (int a = 0; a < 3; a++)
                    old[perm[a]] = flips >> a & 1 ? n[a] - 1 - q[a] : q[a];
                size_t so =
                    (size_t)((old[2] * sd[1] + old[1]) * sd[0] + old[0]);
                d->v.data[o] = s->v.data[so];
                d->labels[o] = s->labels[so];
            }
}

/* The real Colin27 T1 (Debian's mricron-data) and a copy stored as a
 * sagittal stack by tools/restore_nifti.py (nibabel): read back through
 * nio_read, the copy's voxels are the original's moved as the script
 * says, and with the same labels moved along, the two pictures are
 * byte-identical.  Labels: two intensity classes (a stand-in for a
 * segmentation, so the check does not depend on the model).  Both PNGs
 * are left in the test folder to look at. */
static void test_colin27_two_storages(void **state)
{
    (void)state;
    const char *ch2 = "/usr/share/mricron/templates/ch2.nii.gz";
    if (!sl_file_exists(ch2))
        fail_msg("%s is missing: install Debian's mricron-data "
                 "(tools/deps.sh test)",
                 ch2);
    char perm_path[600];
    snprintf(perm_path, sizeof perm_path, "%s",
             test_tmp_path("ov_ch2_perm.nii.gz"));
    BcRun r = bc_sh("/usr/bin/python3 tools/restore_nifti.py '%s' '%s' "
                    "--perm 2,0,1 --flip 0,1,1",
                    ch2, perm_path);
    if (r.status != 0) fail_msg("tools/restore_nifti.py: %s", r.err_first);
    bc_free(&r);
    Scene s, d, want;
    NiftiGeom *g = NULL;
    assert_int_equal(nio_read(ch2, &s.v, &g), 0);
    nio_geom_affine(g, s.aff);
    nio_geom_free(g);
    size_t nv = (size_t)volume_voxels(&s.v);
    s.labels = sl_calloc(nv, sizeof(int16_t));
    assert_non_null(s.labels);
    for (size_t o = 0; o < nv; o++)
        s.labels[o] = (int16_t)(s.v.data[o] > 110  ? 2
                                : s.v.data[o] > 70 ? 1
                                                   : 0);
    static const int perm[3] = {2, 0, 1};
    restore_any(&want, &s, perm, 6 /* flip new axes 1 and 2 */);
    assert_int_equal(nio_read(perm_path, &d.v, &g), 0);
    nio_geom_affine(g, d.aff);
    nio_geom_free(g);
    for (int a = 0; a < 3; a++)
        assert_int_equal(d.v.dim[a], want.v.dim[a]);
    assert_memory_equal(d.v.data, want.v.data, nv * sizeof(float));
    for (int rr = 0; rr < 3; rr++)
        for (int c = 0; c < 4; c++)
            assert_true(fabs(d.aff[rr][c] - want.aff[rr][c]) < 1e-4);
    d.labels = want.labels;
    want.labels = NULL;
    OverlayImage ia, ib;
    assert_int_equal(overlay_render(&ia, &s.v, s.labels, s.aff, ch2), 0);
    assert_int_equal(overlay_render(&ib, &d.v, d.labels, d.aff, perm_path),
                     0);
    assert_int_equal(overlay_write_png(test_tmp_path("ov_ch2.png"), &ia, 1),
                     0);
    assert_int_equal(
        overlay_write_png(test_tmp_path("ov_ch2_perm.png"), &ib, 1), 0);
    assert_int_equal(ia.width, ib.width);
    assert_int_equal(ia.height, ib.height);
    assert_memory_equal(ia.rgb, ib.rgb,
                        (size_t)ia.width * (size_t)ia.height * 3);
    overlay_free(&ia);
    overlay_free(&ib);
    free_scene(&s);
    free_scene(&d);
    free_scene(&want);
}

/* Every storage of the same head gives the same picture, byte for byte:
 * isotropic, and anisotropic (0.5 x 1 x 2 mm: the 2 mm axis is sampled
 * every 0.5 mm, so most samples fall halfway between voxels). */
static void test_48_storages_one_picture(void **state)
{
    (void)state;
    static const double spacings[2][3] = {{1, 1, 1}, {0.5, 1, 2}};
    for (int sp = 0; sp < 2; sp++) {
        Scene s;
        make_scene(&s, spacings[sp]);
        OverlayImage ref;
        assert_int_equal(overlay_render(&ref, &s.v, s.labels, s.aff, "ref"),
                         0);
        int n_coloured = 0;
        for (size_t b = 0; b < (size_t)ref.width * (size_t)ref.height; b++)
            n_coloured += !is_grey(ref.rgb + 3 * b);
        assert_true(n_coloured > 30); /* the cube is on the picture */
        for (int p = 0; p < 6; p++)
            for (int f = 0; f < 8; f++) {
                Scene d;
                restore(&d, &s, perms[p], f);
                OverlayImage img;
                assert_int_equal(
                    overlay_render(&img, &d.v, d.labels, d.aff, "copy"), 0);
                if (img.width != ref.width || img.height != ref.height ||
                    memcmp(img.rgb, ref.rgb,
                           (size_t)img.width * (size_t)img.height * 3))
                    fail_msg("spacing %d: storage perm %d%d%d flips %d "
                             "gives another picture",
                             sp, perms[p][0], perms[p][1], perms[p][2], f);
                overlay_free(&img);
                free_scene(&d);
            }
        overlay_free(&ref);
        free_scene(&s);
    }
}

/* Decode a PNG with libpng into rgb (malloc'd). */
static void read_png(const char *path, int *w, int *h, uint8_t **rgb)
{
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    assert_true(png_image_begin_read_from_file(&im, path));
    im.format = PNG_FORMAT_RGB;
    *w = (int)im.width;
    *h = (int)im.height;
    *rgb = malloc(PNG_IMAGE_SIZE(im));
    assert_non_null(*rgb);
    assert_true(png_image_finish_read(&im, NULL, *rgb, 0, NULL));
}

static void test_png_written(void **state)
{
    (void)state;
    Scene s, d;
    make_scene(&s, (const double[3]){1, 1, 1});
    restore(&d, &s, perms[3], 5);
    char a[600], b[600];
    snprintf(a, sizeof a, "%s", test_tmp_path("ov_a.png"));
    snprintf(b, sizeof b, "%s", test_tmp_path("ov_b.png"));
    remove(a);
    remove(b);
    OverlayImage ia, ib;
    assert_int_equal(overlay_render(&ia, &s.v, s.labels, s.aff, "a"), 0);
    assert_int_equal(overlay_render(&ib, &d.v, d.labels, d.aff, "b"), 0);
    assert_int_equal(overlay_write_png(a, &ia, 0), 0);
    assert_int_equal(overlay_write_png(b, &ib, 0), 0);
    assert_true(files_equal(a, b));
    int w, h;
    uint8_t *rgb;
    read_png(a, &w, &h, &rgb);
    assert_int_equal(w, ia.width);
    assert_int_equal(h, ia.height);
    assert_memory_equal(rgb, ia.rgb, (size_t)w * (size_t)h * 3);
    free(rgb);
    /* no clobber without --force; .png only */
    sl_error_quiet(1);
    assert_int_equal(overlay_write_png(a, &ia, 0), ERR_EXISTS);
    assert_int_equal(overlay_write_png(test_tmp_path("ov.jpg"), &ia, 1),
                     ERR_ARG);
    sl_error_quiet(0);
    assert_int_equal(overlay_write_png(a, &ia, 1), 0);
    overlay_free(&ia);
    overlay_free(&ib);
    free_scene(&s);
    free_scene(&d);
}

/* segment --overlay as a user runs it: one case writes the named PNG,
 * refuses to clobber it, and a batch writes one PNG per case into a
 * folder; a .png name for a batch is refused before any case runs. */
static void test_segment_overlay_cli(void **state)
{
    (void)state;
    char dir[600];
    snprintf(dir, sizeof dir, "%s", test_tmp_path("ov_cli"));
    bc_fresh_dir(dir);
    for (int i = 0; i < 2; i++) {
        char path[700];
        snprintf(path, sizeof path, "%s/s%d.nii.gz", dir, i);
        assert_int_equal(
            phantom_write(path, 24, 32, 6, DT_FLOAT32, (uint64_t)(7 + i)), 0);
    }
    const char *seg = bc_segment_bin(), *model = bc_model();
    BcRun r = bc_sh("'%s' -q -m '%s' --overlay '%s/one.png' '%s/s0.nii.gz'",
                    seg, model, dir, dir);
    assert_int_equal(r.status, 0);
    bc_free(&r);
    char png[700];
    snprintf(png, sizeof png, "%s/one.png", dir);
    int w, h;
    uint8_t *rgb;
    read_png(png, &w, &h, &rgb);
    assert_true(w > 3 * 24 && h > 24);
    free(rgb);
    r = bc_sh("'%s' -q -m '%s' --force --overlay '%s/one.png' "
              "-o '%s/x_seg.nii.gz' '%s/s0.nii.gz'",
              seg, model, dir, dir, dir);
    assert_int_equal(r.status, 0);
    bc_free(&r);
    r = bc_sh("'%s' -q -m '%s' --overlay '%s/one.png' -o '%s/y_seg.nii.gz' "
              "'%s/s0.nii.gz'",
              seg, model, dir, dir, dir);
    assert_int_equal(r.status, 1);
    assert_int_equal(r.err_lines, 1);
    assert_non_null(strstr(r.err_first, "one.png' exists"));
    bc_free(&r);
    r = bc_sh("'%s' -m '%s' -o '%s/out' --overlay '%s/pics' '%s/s0.nii.gz' "
              "'%s/s1.nii.gz'",
              seg, model, dir, dir, dir, dir);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "pics/s1_overlay.png"));
    bc_free(&r);
    for (int i = 0; i < 2; i++) {
        snprintf(png, sizeof png, "%s/pics/s%d_overlay.png", dir, i);
        read_png(png, &w, &h, &rgb);
        free(rgb);
    }
    r = bc_sh("'%s' -m '%s' -o '%s/out2' --overlay '%s/p.png' "
              "'%s/s0.nii.gz' '%s/s1.nii.gz'",
              seg, model, dir, dir, dir, dir);
    assert_int_equal(r.status, 2);
    assert_int_equal(r.err_lines, 1);
    assert_non_null(strstr(r.err_first, "takes one scan"));
    bc_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pixels_at_known_points),
        cmocka_unit_test(test_48_storages_one_picture),
        cmocka_unit_test(test_png_written),
        cmocka_unit_test(test_colin27_two_storages),
        cmocka_unit_test(test_segment_overlay_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
