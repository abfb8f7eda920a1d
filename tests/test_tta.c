/* Test-time mirroring (segment --tta; runtime/mirror.c).
 *
 * The tree sum is checked against its written-out formula, bit for bit.
 * Then small random convolution models (2D slicing along k, and 3D with
 * the scan exactly one window, an odd patch so the Gaussian weights are
 * symmetric too) segment a scan that is mirror-symmetric along every
 * axis the network mirrors: with --tta the probabilities must be exactly
 * mirror-symmetric (mirror.h says why that is exact, not approximate);
 * without it they are not (the random kernels are lopsided), which shows
 * the check can fail.  --tta gives the same bytes on 1 and 2 threads.
 * A model that records a training grid mirrors on that grid: the same
 * head stored in two orientations gets the same labels in world space.
 * Last, segment --tta from the command line, one case and a batch.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/common.h"
#include "runtime/exec.h"
#include "runtime/graph.h"
#include "runtime/mirror.h"
#include "runtime/segment.h"
#include "runtime/segment_scan.h"
#include "runtime/volume.h"
#include "tests/batchcheck.h"
#include "tests/graphbuild.h"
#include "tests/phantomscan.h"
#include "tests/segmodel.h"
#include "tests/testutil.h"

static void test_tree_sum_exact(void **state)
{
    (void)state;
    enum { N = 37 };
    Mirror m;
    assert_int_equal(mirror_init(&m, 3, 5, N, 2), 0);
    float p[8][N], want[N], got[N];
    TestRng r = {11};
    for (int k = 0; k < 8; k++)
        trng_fill(&r, p[k], N, 0.0f, 1.0f);
    for (int i = 0; i < N; i++)
        want[i] = (((p[0][i] + p[1][i]) + (p[2][i] + p[3][i])) +
                   ((p[4][i] + p[5][i]) + (p[6][i] + p[7][i]))) *
                  0.125f;
    for (int rep = 0; rep < 2; rep++) { /* the tree resets after a mean */
        for (int k = 0; k < 8; k++) {
            memcpy(m.cur, p[k], sizeof p[k]);
            mirror_push(&m);
        }
        mirror_mean(&m, got);
        assert_memory_equal(got, want, sizeof want);
    }
    mirror_free(&m);
}

/* mirror_flip reverses the box only and is its own inverse. */
static void test_flip_box(void **state)
{
    (void)state;
    const int64_t pad[3] = {3, 4, 6}, box[3] = {2, 3, 5};
    enum { NBC = 2, N = NBC * 3 * 4 * 6 };
    float a[N], b[N], c[N];
    for (int i = 0; i < N; i++)
        a[i] = (float)i;
    for (int mask = 0; mask < 8; mask++) {
        mirror_flip(b, a, NBC, pad, box, mask, 2);
        for (int n = 0; n < NBC; n++)
            for (int z = 0; z < 3; z++)
                for (int y = 0; y < 4; y++)
                    for (int x = 0; x < 6; x++) {
                        int sz = (mask & 1) && z < 2 ? 1 - z : z;
                        int sy = (mask & 2) && y < 3 ? 2 - y : y;
                        int sx = (mask & 4) && x < 5 ? 4 - x : x;
                        assert_true(b[((n * 3 + z) * 4 + y) * 6 + x] ==
                                    a[((n * 3 + sz) * 4 + sy) * 6 + sx]);
                    }
        mirror_flip(c, b, NBC, pad, box, mask, 1);
        assert_memory_equal(c, a, sizeof a);
    }
}

/* input -> Conv 3^nsp (2 classes, random lopsided weights, pad 1) ->
 * Relu -> Conv 3^nsp -> logits (no softmax: segment applies it). */
static void build_mirror_model(Graph *g, int nsp, const int patch[3])
{
    graph_init(g);
    int64_t d[5] = {1, 1, 1, 1, 1};
    g->input = seg_add_value(g, "input", 2 + nsp, d, NULL);
    TestRng r = {5};
    int taps = nsp == 3 ? 27 : 9;
    int prev = g->input, cin = 1;
    const int couts[2] = {4, 2};
    for (int l = 0; l < 2; l++) {
        int co = couts[l];
        float *w = sl_alloc(sizeof(float) * (size_t)(co * cin * taps));
        float *b = sl_alloc(sizeof(float) * (size_t)co);
        assert_non_null(w);
        assert_non_null(b);
        trng_fill(&r, w, (size_t)(co * cin * taps), -1.0f, 1.0f);
        trng_fill(&r, b, (size_t)co, -0.2f, 0.2f);
        char nm[4][16];
        snprintf(nm[0], 16, "w%d", l);
        snprintf(nm[1], 16, "b%d", l);
        snprintf(nm[2], 16, "y%d", l);
        snprintf(nm[3], 16, "conv%d", l);
        int64_t wd[5] = {co, cin, 3, 3, 3}, bd[1] = {co};
        int wv = seg_add_value(g, nm[0], 2 + nsp, wd, w);
        int bv = seg_add_value(g, nm[1], 1, bd, b);
        int out = seg_add_value(g, nm[2], 2 + nsp, d, NULL);
        Node n;
        memset(&n, 0, sizeof n);
        n.op = OP_CONV;
        n.name = (char *)(uintptr_t)nm[3];
        n.n_in = 3;
        n.in[0] = prev;
        n.in[1] = wv;
        n.in[2] = bv;
        n.out = out;
        n.p.conv.nsp = nsp;
        n.p.conv.group = 1;
        for (int t = 0; t < nsp; t++) {
            n.p.conv.kernel[t] = 3;
            n.p.conv.stride[t] = 1;
            n.p.conv.dilation[t] = 1;
            n.p.conv.pad_lo[t] = n.p.conv.pad_hi[t] = 1;
        }
        assert_true(graph_add_node(g, &n) >= 0);
        prev = out;
        if (l == 0) {
            int rv = seg_add_value(g, "relu0", 2 + nsp, d, NULL);
            memset(&n, 0, sizeof n);
            n.op = OP_RELU;
            n.name = (char *)(uintptr_t) "relu";
            n.n_in = 1;
            n.in[0] = prev;
            n.out = rv;
            assert_true(graph_add_node(g, &n) >= 0);
            prev = rv;
        }
        cin = co;
    }
    g->outputs[0] = prev;
    g->n_outputs = 1;
    ModelMeta *m = &g->meta;
    m->n_classes = 2;
    m->class_names = sl_calloc(2, sizeof(char *));
    m->class_names[0] = seg_strdup("background");
    m->class_names[1] = seg_strdup("fg");
    m->n_modalities = 1;
    m->modality_names = sl_calloc(1, sizeof(char *));
    m->modality_names[0] = seg_strdup("t1");
    m->normalize = sl_calloc(1, sizeof(Normalize));
    m->normalize[0].kind = NORMALIZE_ZSCORE;
    m->dims = nsp;
    m->axis = 2;
    m->order = ORDER_NNUNET;
    for (int t = 0; t < 3; t++)
        m->patch[t] = patch[t];
    m->source_name = seg_strdup("test_tta.c");
    assert_int_equal(graph_validate(g, "test model"), 0);
}

/* Symmetric under i -> nx-1-i, j -> ny-1-j, k -> nz-1-k: the noise is a
 * function of the distances to the nearest faces. */
static void symmetric_scan(Volume *v, int64_t nx, int64_t ny, int64_t nz)
{
    assert_int_equal(volume_alloc(v, nx, ny, nz, 1), 0);
    size_t o = 0;
    for (int64_t k = 0; k < nz; k++)
        for (int64_t j = 0; j < ny; j++)
            for (int64_t i = 0; i < nx; i++, o++) {
                int64_t a = i < nx - 1 - i ? i : nx - 1 - i;
                int64_t b = j < ny - 1 - j ? j : ny - 1 - j;
                int64_t c = k < nz - 1 - k ? k : nz - 1 - k;
                uint64_t h =
                    (uint64_t)(a * 73856093 ^ b * 19349663 ^ c * 83492791) *
                    0x9E3779B97F4A7C15ull;
                v->data[o] = (float)(h >> 40) / (float)(1u << 24);
            }
}

/* Voxels whose probability differs from its mirror image along axis a
 * (0 i, 1 j, 2 k). */
static long asymmetric(const float *p, const int64_t n[3], int nc, int a)
{
    long bad = 0;
    size_t o = 0;
    for (int c = 0; c < nc; c++)
        for (int64_t k = 0; k < n[2]; k++)
            for (int64_t j = 0; j < n[1]; j++)
                for (int64_t i = 0; i < n[0]; i++, o++) {
                    int64_t q[3] = {i, j, k};
                    q[a] = n[a] - 1 - q[a];
                    size_t m =
                        (size_t)(((c * n[2] + q[2]) * n[1] + q[1]) * n[0] +
                                 q[0]);
                    bad += p[o] != p[m];
                }
    return bad;
}

static void check_symmetry(int nsp, const int patch[3], const int64_t n[3])
{
    Graph g;
    build_mirror_model(&g, nsp, patch);
    Volume v;
    symmetric_scan(&v, n[0], n[1], n[2]);
    size_t nv = (size_t)volume_voxels(&v);
    float *p[3];
    int16_t *lab[3];
    for (int r = 0; r < 3; r++) {
        p[r] = sl_alloc(sizeof(float) * nv * 2);
        lab[r] = sl_alloc(sizeof(int16_t) * nv);
        assert_non_null(p[r]);
        assert_non_null(lab[r]);
        /* run 0: no tta; 1: tta, 1 thread; 2: tta, 2 threads */
        SegmentOptions o = {.n_threads = r == 2 ? 2 : 1, .tta = r > 0};
        assert_int_equal(segment_volume(&g, &v, &o, lab[r], p[r]), 0);
    }
    int n_axes = nsp == 3 ? 3 : 2;
    long without = 0;
    for (int a = 0; a < n_axes; a++) {
        long with = asymmetric(p[1], n, 2, a);
        without += asymmetric(p[0], n, 2, a);
        if (with)
            fail_msg("%dD --tta: %ld probabilities differ from their "
                     "mirror image along axis %d",
                     nsp, with, a);
    }
    fprintf(stderr,
            "%dD: without --tta %ld asymmetric probabilities, "
            "with --tta 0\n",
            nsp, without);
    assert_true(without > 0);
    assert_memory_equal(p[1], p[2], sizeof(float) * nv * 2);
    assert_memory_equal(lab[1], lab[2], sizeof(int16_t) * nv);
    for (int r = 0; r < 3; r++) {
        sl_free(p[r]);
        sl_free(lab[r]);
    }
    volume_free(&v);
    graph_free(&g);
}

static void test_symmetric_2d(void **state)
{
    (void)state;
    check_symmetry(2, (const int[3]){0, 0, 0}, (const int64_t[3]){13, 10, 3});
}

static void test_symmetric_3d(void **state)
{
    (void)state;
    /* One window covering the scan, odd sides: the Gaussian weights are
     * symmetric as well. */
    check_symmetry(3, (const int[3]){7, 9, 11}, (const int64_t[3]){11, 9, 7});
}

/* A head-like phantom (bright ellipsoid, darker core, noise) on a
 * 14 x 12 x 10 grid at 1 x 1.5 x 2 mm, RAS. */
static void head(Volume *v, Affine *a)
{
    TestRng r = {3};
    assert_int_equal(volume_alloc(v, 14, 12, 10, 1), 0);
    for (int64_t k = 0; k < 10; k++)
        for (int64_t j = 0; j < 12; j++)
            for (int64_t i = 0; i < 14; i++) {
                double x = (double)(i - 6) / 5.0, y = (double)(j - 5) / 4.5,
                       z = (double)(k - 4) / 3.5;
                double e = x * x + y * y + z * z;
                float val = e < 1.0 ? (e < 0.3 ? 60.0f : 100.0f) : 5.0f;
                v->data[(k * 12 + j) * 14 + i] =
                    val + trng_uniform(&r, -4, 4);
            }
    Affine d = {{{1.0, 0, 0, -7}, {0, 1.5, 0, -8}, {0, 0, 2.0, -9}}};
    *a = d;
}

/* The head stored sagittally: stored axis 0 is canonical k, axis 1 is
 * canonical j, axis 2 is canonical i reversed; the affine's columns
 * follow, so every voxel keeps its world position. */
static void store_sagittal(const Volume *c, const Affine *ca, Volume *s,
                           Affine *sa)
{
    int64_t nx = c->dim[0], ny = c->dim[1], nz = c->dim[2];
    assert_int_equal(volume_alloc(s, nz, ny, nx, 1), 0);
    for (int64_t k = 0; k < nx; k++)
        for (int64_t j = 0; j < ny; j++)
            for (int64_t i = 0; i < nz; i++)
                s->data[(k * ny + j) * nz + i] =
                    c->data[(i * ny + j) * nx + (nx - 1 - k)];
    memset(sa, 0, sizeof *sa);
    for (int r = 0; r < 3; r++) {
        sa->m[r][0] = ca->m[r][2];
        sa->m[r][1] = ca->m[r][1];
        sa->m[r][2] = -ca->m[r][0];
        sa->m[r][3] = ca->m[r][3] + ca->m[r][0] * (double)(nx - 1);
    }
}

/* Labels of the head through segment_scan (on the model's grid), stored
 * canonically (sagittal = 0) or sagittally, in canonical voxel order. */
static int16_t *head_labels(Segmenter *s, int sagittal)
{
    Volume c, v;
    Affine ca, va;
    head(&c, &ca);
    int64_t nx = c.dim[0], ny = c.dim[1], nz = c.dim[2];
    size_t nv = (size_t)volume_voxels(&c);
    if (sagittal) {
        store_sagittal(&c, &ca, &v, &va);
        volume_free(&c);
    } else {
        v = c;
        va = ca;
    }
    int16_t *lab = NULL;
    assert_int_equal(segment_scan(s, &v, &va, &lab, NULL), 0);
    if (!sagittal) return lab;
    int16_t *can = sl_alloc(nv * sizeof *can);
    assert_non_null(can);
    for (int64_t k = 0; k < nx; k++)
        for (int64_t j = 0; j < ny; j++)
            for (int64_t i = 0; i < nz; i++)
                can[(i * ny + j) * nx + (nx - 1 - k)] =
                    lab[(k * ny + j) * nz + i];
    sl_free(lab);
    return can;
}

/* A 2D and a 3D model that record a training orientation and spacing
 * (neither the scan's): the scan is reoriented and resampled, mirrored
 * there, and the averaged scores are mapped back.  Both storages give the
 * same labels, and --tta changes some of them (else it was not applied on
 * this path). */
static void test_model_grid_two_storages(void **state)
{
    (void)state;
    for (int nsp = 2; nsp <= 3; nsp++) {
        Graph g;
        assert_int_equal(build_unet(&g, nsp, 1, 4, 2, 0, 7), 0);
        if (nsp == 3) g.meta.patch[0] = g.meta.patch[1] = g.meta.patch[2] = 8;
        snprintf(g.meta.orientation, sizeof g.meta.orientation, "PIR");
        for (int t = 0; t < 3; t++)
            g.meta.spacing[t] = 1.25;
        int16_t *lab[2][2]; /* [tta][sagittal] */
        for (int tta = 0; tta < 2; tta++) {
            SegmentOptions o = {.n_threads = 2, .tta = tta};
            Segmenter *s = NULL;
            assert_int_equal(segmenter_create(&g, &o, &s), 0);
            for (int sag = 0; sag < 2; sag++)
                lab[tta][sag] = head_labels(s, sag);
            segmenter_free(s);
        }
        size_t nv = 14 * 12 * 10, changed = 0, ones = 0;
        for (size_t i = 0; i < nv; i++) {
            changed += lab[0][0][i] != lab[1][0][i];
            ones += lab[1][0][i] == 1;
        }
        fprintf(stderr,
                "%dD model grid: --tta changed %zu of %zu labels, "
                "%zu labelled 1\n",
                nsp, changed, nv, ones);
        assert_memory_equal(lab[0][0], lab[0][1], nv * sizeof(int16_t));
        assert_memory_equal(lab[1][0], lab[1][1], nv * sizeof(int16_t));
        assert_true(changed > 0);
        for (int i = 0; i < 4; i++)
            sl_free(lab[i / 2][i % 2]);
        graph_free(&g);
    }
}

/* segment --tta as a user runs it. */
static void test_cli_tta(void **state)
{
    (void)state;
    char dir[600];
    snprintf(dir, sizeof dir, "%s", test_tmp_path("tta_cli"));
    bc_fresh_dir(dir);
    char scan[700];
    snprintf(scan, sizeof scan, "%s/s.nii.gz", dir);
    assert_int_equal(phantom_write(scan, 24, 32, 6, DT_FLOAT32, 3), 0);
    /* one case on 2 threads, one on 1 thread, and a batch of two cases
     * (a copy of the scan): the same label maps */
    BcRun r =
        bc_sh("'%s' -q --tta -m '%s' -o '%s/a_seg.nii.gz' '%s' && "
              "'%s' -q --tta --threads 1 -m '%s' -o '%s/b_seg.nii.gz' "
              "'%s' && cmp '%s/a_seg.nii.gz' '%s/b_seg.nii.gz' && "
              "cp '%s' '%s/t.nii.gz' && "
              "'%s' -q --tta -m '%s' -o '%s/batch/' '%s' '%s/t.nii.gz' "
              "&& cmp '%s/a_seg.nii.gz' '%s/batch/s_seg.nii.gz' && "
              "cmp '%s/a_seg.nii.gz' '%s/batch/t_seg.nii.gz'",
              bc_segment_bin(), bc_model(), dir, scan, bc_segment_bin(),
              bc_model(), dir, scan, dir, dir, scan, dir, bc_segment_bin(),
              bc_model(), dir, scan, dir, dir, dir, dir, dir);
    if (r.status != 0) fail_msg("segment --tta: %s", r.err_first);
    bc_free(&r);
    /* --help and the man page list it */
    r = bc_sh("'%s' --help | grep -q -- '--tta' && "
              "'%s' --man | grep -q 'tta'",
              bc_segment_bin(), bc_segment_bin());
    assert_int_equal(r.status, 0);
    bc_free(&r);
}

int main(int argc, char **argv)
{
    (void)argc;
    /* Many small segmentations in-process: idle OpenMP threads must not
     * spin on a busy machine (exec.h; the 3D model-grid case took 107 s
     * at load 8 on 2 cores with spinning threads). */
    exec_reexec_passive_wait(argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tree_sum_exact),
        cmocka_unit_test(test_flip_box),
        cmocka_unit_test(test_symmetric_2d),
        cmocka_unit_test(test_symmetric_3d),
        cmocka_unit_test(test_model_grid_two_storages),
        cmocka_unit_test(test_cli_tta),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
