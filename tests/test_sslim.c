/* sslim.c: round trip, and rejection of every kind of bad file without a
 * crash or a leak (run under ASan by make asan). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/common.h"
#include "runtime/exec.h"
#include "runtime/graph.h"
#include "runtime/sslim.h"
#include "tests/graphbuild.h"
#include "tests/testutil.h"

static void expect_same_graph(const Graph *a, const Graph *b)
{
    assert_int_equal(a->n_values, b->n_values);
    assert_int_equal(a->n_nodes, b->n_nodes);
    for (int i = 0; i < a->n_values; i++) {
        const Value *x = &a->values[i], *y = &b->values[i];
        assert_string_equal(x->name, y->name);
        assert_true(shape_equal(&x->shape, &y->shape));
        assert_int_equal(x->producer, y->producer);
        assert_int_equal(!x->data, !y->data);
        if (x->data) {
            /* bit-exact, and 64-byte aligned in memory */
            assert_memory_equal(x->data, y->data,
                                (size_t)shape_numel(&x->shape) * 4);
            assert_int_equal((uintptr_t)y->data % 64, 0);
        }
    }
    for (int i = 0; i < a->n_nodes; i++) {
        const Node *x = &a->nodes[i], *y = &b->nodes[i];
        assert_string_equal(x->name, y->name);
        assert_int_equal(x->op, y->op);
        assert_int_equal(x->n_in, y->n_in);
        assert_memory_equal(x->in, y->in, (size_t)x->n_in * sizeof(int));
        assert_int_equal(x->out, y->out);
        /* both graphs zero-fill the parameter union before use */
        assert_memory_equal(&x->p, &y->p, sizeof x->p);
    }
    assert_int_equal(a->input, b->input);
    assert_int_equal(a->n_outputs, b->n_outputs);
    assert_memory_equal(a->outputs, b->outputs,
                        (size_t)a->n_outputs * sizeof(int));
    assert_meta_equal(&a->meta, &b->meta);
}

/* Decode that must fail with ERR_FORMAT; optional message substring. */
static void expect_reject(const uint8_t *d, size_t n, const char *needle)
{
    Graph g;
    graph_init(&g);
    sl_error_reset();
    int rc = sslim_decode(d, n, "bad.sslim", &g);
    if (rc != ERR_FORMAT)
        fprintf(stderr, "accepted or wrong code %d (size %zu)\n", rc, n);
    assert_int_equal(rc, ERR_FORMAT);
    assert_int_equal(g.n_values, 0);
    assert_null(g.values);
    assert_true(sl_error_reported());
    if (needle && !strstr(sl_error_last(), needle))
        fprintf(stderr, "message '%s' lacks '%s'\n", sl_error_last(), needle);
    if (needle) assert_non_null(strstr(sl_error_last(), needle));
    assert_non_null(strstr(sl_error_last(), "bad.sslim"));
    sl_error_reset();
}

/* Recompute the section and header checksums after a deliberate edit, so
 * that the structural checks behind the CRCs get exercised. */
static void fix_crcs(uint8_t *d, size_t n)
{
    uint32_t ns = sl_rd32(d + 16);
    for (uint32_t i = 0; i < ns; i++) {
        uint8_t *t = d + 32 + 24 * i;
        uint64_t o = sl_rd64(t + 8), l = sl_rd64(t + 16);
        if (o <= n && l <= n - o) sl_wr32(t + 4, sl_crc32(0, d + o, l));
    }
    uint32_t hc = sl_crc32(0, d, 20);
    hc = sl_crc32(hc, d + 24, 24 * ns + 8);
    sl_wr32(d + 20, hc);
}

/* Offset and size of a section by tag. */
static void find_section(const uint8_t *d, const char *tag, size_t *off,
                         size_t *len)
{
    uint32_t ns = sl_rd32(d + 16);
    for (uint32_t i = 0; i < ns; i++) {
        const uint8_t *t = d + 32 + 24 * i;
        if (memcmp(t, tag, 4) == 0) {
            *off = (size_t)sl_rd64(t + 8);
            *len = (size_t)sl_rd64(t + 16);
            return;
        }
    }
    fail();
}

static void small_graph(Graph *g)
{
    GBuild b = {g, {77}, 0, 0};
    graph_init(g);
    int x = gb_input(&b, 2, 1);
    int y = gb_conv(&b, x, 1, 2, 2, 3, 1, 1, 1);
    g->outputs[0] = gb_unary(&b, OP_RELU, y, 0);
    g->n_outputs = 1;
    gb_meta(g, 2, 1, 2);
    assert_int_equal(b.fail, 0);
}

static void test_round_trip(void **state)
{
    (void)state;
    Graph g, h;
    assert_int_equal(build_all_ops(&g, 12), 0);
    /* every op type is present */
    int seen[OP_COUNT] = {0};
    for (int i = 0; i < g.n_nodes; i++)
        seen[g.nodes[i].op] = 1;
    for (int op = 0; op < OP_COUNT; op++)
        assert_true(seen[op]);
    uint8_t *d = NULL, *d2 = NULL;
    size_t n = 0, n2 = 0;
    assert_int_equal(sslim_encode(&g, &d, &n), 0);
    assert_true(sslim_is_sslim(d, n));
    graph_init(&h);
    assert_int_equal(sslim_decode(d, n, "mem", &h), 0);
    expect_same_graph(&g, &h);
    /* encoding is deterministic: decode(encode) re-encodes to the same
     * bytes */
    assert_int_equal(sslim_encode(&h, &d2, &n2), 0);
    assert_int_equal(n, n2);
    assert_memory_equal(d, d2, n);
    /* every weight sits 64-byte aligned in the file: find its bytes */
    for (int i = 0; i < g.n_values; i++) {
        const Value *v = &g.values[i];
        if (!v->data) continue;
        size_t nb = (size_t)shape_numel(&v->shape) * 4;
        int found = 0;
        for (size_t o = 0; o + nb <= n && !found; o += 64)
            found = memcmp(d + o, v->data, nb) == 0;
        assert_true(found);
    }
    /* the decoded graph runs and gives the same answer */
    Shape in = {4, {1, 2, 8, 8}};
    float x[128];
    TestRng r = {3};
    trng_fill(&r, x, 128, -1, 1);
    Executor *e1, *e2;
    assert_int_equal(exec_create(&g, &in, 1, &e1), 0);
    assert_int_equal(exec_create(&h, &in, 1, &e2), 0);
    const float *o1[SL_MAX_OUTPUTS], *o2[SL_MAX_OUTPUTS];
    assert_int_equal(exec_run(e1, x, o1), 0);
    assert_int_equal(exec_run(e2, x, o2), 0);
    assert_memory_equal(o1[0], o2[0], 3 * 64 * 4);
    exec_free(e1);
    exec_free(e2);
    graph_free(&h);
    sl_free(d2);
    sl_free(d);
    graph_free(&g);

    /* 3D U-Net with two outputs and NULL notes */
    assert_int_equal(build_unet(&g, 3, 2, 4, 3, 1, 5), 0);
    sl_free(g.meta.notes);
    g.meta.notes = NULL;
    assert_int_equal(sslim_encode(&g, &d, &n), 0);
    assert_int_equal(sslim_decode(d, n, "mem", &h), 0);
    expect_same_graph(&g, &h);
    graph_free(&h);
    sl_free(d);
    graph_free(&g);
}

/* The optional GEOM section: written only when the model knows its
 * grid (minor 1, four sections), round-trips exactly, is covered by the
 * checksums; models without it keep the old layout (minor 0, three
 * sections) and a model written before reads as "no grid". */
static void test_grid_section(void **state)
{
    (void)state;
    Graph g, h;
    uint8_t *d = NULL, *d2 = NULL;
    size_t n = 0, n2 = 0;
    small_graph(&g);
    assert_int_equal(sslim_encode(&g, &d, &n), 0);
    assert_int_equal(sl_rd32(d + 12), 0);
    assert_int_equal(sl_rd32(d + 16), 3);
    sl_free(d);
    snprintf(g.meta.orientation, 4, "LPS");
    g.meta.spacing[0] = 0.8;
    g.meta.spacing[1] = 0.8;
    g.meta.spacing[2] = 3.0;
    assert_int_equal(sslim_encode(&g, &d, &n), 0);
    assert_int_equal(sl_rd32(d + 12), 1);
    assert_int_equal(sl_rd32(d + 16), 4);
    assert_int_equal(sslim_decode(d, n, "mem", &h), 0);
    assert_string_equal(h.meta.orientation, "LPS");
    assert_true(h.meta.spacing[2] == 3.0);
    expect_same_graph(&g, &h);
    assert_int_equal(sslim_encode(&h, &d2, &n2), 0);
    assert_int_equal(n, n2);
    assert_memory_equal(d, d2, n);
    graph_free(&h);
    sl_free(d2);
    /* any byte of a file with the section changed is detected */
    sl_error_quiet(1);
    for (size_t i = 0; i < n; i++) {
        uint8_t *c = malloc(n);
        memcpy(c, d, n);
        c[i] ^= 0x5a;
        expect_reject(c, n, NULL);
        free(c);
    }
    sl_free(d);
    /* the writer refuses a grid the reader would refuse */
    snprintf(g.meta.orientation, 4, "RRS");
    assert_int_equal(sslim_encode(&g, &d, &n), ERR_ARG);
    snprintf(g.meta.orientation, 4, "RAS");
    g.meta.spacing[1] = -1.0;
    assert_int_equal(sslim_encode(&g, &d, &n), ERR_ARG);
    g.meta.spacing[1] = NAN;
    assert_int_equal(sslim_encode(&g, &d, &n), ERR_ARG);
    sl_error_quiet(0);
    sl_error_reset();
    graph_free(&g);
    /* a model written before the section existed (test_codec's fixture,
     * as models/default.sslim was until it got its grid) */
    assert_int_equal(sslim_read("tests/fixtures/codec/tiny_unet.sslim", &h),
                     0);
    assert_string_equal(h.meta.orientation, "");
    for (int t = 0; t < 3; t++)
        assert_true(h.meta.spacing[t] == 0.0);
    graph_free(&h);
}

static void test_file_io(void **state)
{
    (void)state;
    Graph g, h;
    small_graph(&g);
    char path[512];
    snprintf(path, sizeof path, "%s/m.sslim", test_tmpdir());
    unlink(path);
    assert_int_equal(sslim_write(&g, path, 0), 0);
    assert_int_equal(sslim_read(path, &h), 0);
    expect_same_graph(&g, &h);
    graph_free(&h);
    sl_error_quiet(1);
    sl_error_reset();
    assert_int_equal(sslim_write(&g, path, 0), ERR_EXISTS);
    assert_non_null(strstr(sl_error_last(), "--force"));
    sl_error_reset();
    assert_int_equal(sslim_write(&g, path, 1), 0);
    char missing[600];
    snprintf(missing, sizeof missing, "%s/none.sslim", test_tmpdir());
    assert_int_equal(sslim_read(missing, &h), ERR_IO);
    assert_int_equal(h.n_values, 0);
    sl_error_reset();
    /* metadata a reader would refuse is refused at write time */
    g.meta.dims = 5;
    uint8_t *d = NULL;
    size_t n = 0;
    assert_int_equal(sslim_encode(&g, &d, &n), ERR_ARG);
    assert_null(d);
    g.meta.dims = 2;
    /* so is an invalid graph */
    g.nodes[0].p.conv.stride[0] = 0;
    assert_int_equal(sslim_encode(&g, &d, &n), ERR_FORMAT);
    sl_error_reset();
    sl_error_quiet(0);
    graph_free(&g);
}

/* Loading a file holds its weights once: each tensor is read straight
 * into its own buffer, never the whole file next to the graph's copy.
 * The allocator's byte count over sslim_read is the weights plus the
 * small sections and the graph's arrays; a second copy of the file (as
 * the reader made before) would add about as much again. */
static void test_weights_one_copy(void **state)
{
    (void)state;
    Graph g, h;
    assert_int_equal(build_unet(&g, 2, 1, 48, 3, 0, 5), 0);
    size_t wbytes = 0;
    for (int i = 0; i < g.n_values; i++)
        if (g.values[i].data)
            wbytes += (size_t)shape_numel(&g.values[i].shape) * 4;
    assert_true(wbytes > 256 * 1024); /* so that a copy would show */
    char path[512];
    snprintf(path, sizeof path, "%s/one_copy.sslim", test_tmpdir());
    assert_int_equal(sslim_write(&g, path, 1), 0);
    sl_alloc_track(1);
    int rc = sslim_read(path, &h);
    size_t total = sl_alloc_total();
    sl_alloc_track(0);
    assert_int_equal(rc, 0);
    expect_same_graph(&g, &h);
    /* names, value and node arrays, META and GRPH: a few KiB here */
    if (!(total >= wbytes && total < wbytes + 32 * 1024))
        fprintf(stderr,
                "sslim_read allocated %zu bytes for %zu of "
                "weights\n",
                total, wbytes);
    assert_true(total >= wbytes);
    assert_true(total < wbytes + 32 * 1024);
    graph_free(&h);
    /* The file path checks what the buffer path checks: a flipped weight
     * byte, a cut file (weights read piece by piece, nothing leaked). */
    uint8_t *d = NULL;
    size_t n = 0, woff, wlen;
    assert_int_equal(sslim_encode(&g, &d, &n), 0);
    find_section(d, "WGHT", &woff, &wlen);
    const size_t cut[2] = {n, woff + wlen / 2};
    sl_error_quiet(1);
    for (int k = 0; k < 2; k++) {
        if (k == 0) d[woff + wlen - 100] ^= 0x10;
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(d, 1, cut[k], f), cut[k]);
        fclose(f);
        sl_error_reset();
        assert_int_equal(sslim_read(path, &h), ERR_FORMAT);
        assert_null(h.values);
        assert_non_null(
            strstr(sl_error_last(), k == 0 ? "WGHT checksum" : "truncated"));
        if (k == 0) d[woff + wlen - 100] ^= 0x10;
    }
    sl_error_reset();
    sl_error_quiet(0);
    sl_free(d);
    graph_free(&g);
    unlink(path);
}

static void test_messages(void **state)
{
    (void)state;
    Graph g;
    small_graph(&g);
    uint8_t *d = NULL;
    size_t n = 0;
    assert_int_equal(sslim_encode(&g, &d, &n), 0);
    graph_free(&g);
    uint8_t *c = malloc(n);
    sl_error_quiet(1);

    memcpy(c, d, n);
    c[1] = 'X';
    expect_reject(c, n, "not a .sslim file");
    assert_false(sslim_is_sslim(c, n));
    /* an ONNX file (protobuf) starts with 0x08 */
    const uint8_t onnx[] = {0x08, 0x07, 0x12, 0x07, 'p', 'y', 't'};
    expect_reject(onnx, sizeof onnx, "not a .sslim file");

    memcpy(c, d, n);
    sl_wr32(c + 8, 2);
    expect_reject(c, n, "re-export with sauron-compress");
    assert_non_null(strstr(sl_error_last(), ""));
    memcpy(c, d, n);
    sl_wr32(c + 8, 2);
    expect_reject(c, n, "version 2.0");

    /* a newer minor version is fine once its checksum matches */
    memcpy(c, d, n);
    sl_wr32(c + 12, 7);
    fix_crcs(c, n);
    Graph h;
    assert_int_equal(sslim_decode(c, n, "minor", &h), 0);
    graph_free(&h);

    size_t off, len;
    find_section(d, "GRPH", &off, &len);
    memcpy(c, d, n);
    c[off + len / 2] ^= 0x10;
    expect_reject(c, n, "section GRPH checksum mismatch");
    find_section(d, "WGHT", &off, &len);
    memcpy(c, d, n);
    c[off + 5] ^= 0x01;
    expect_reject(c, n, "section WGHT checksum mismatch");
    memcpy(c, d, n);
    c[40] ^= 0x01; /* in the section table */
    expect_reject(c, n, "header checksum");
    expect_reject(d, n - 1, "truncated");
    sl_error_quiet(0);
    free(c);
    sl_free(d);
}

/* A newer minor version may add sections: an unknown tag is checked and
 * skipped.  The three sections move 64 bytes later (keeping the weights
 * aligned) to make room for a fourth table entry; XTRA goes at the end. */
static void test_unknown_section(void **state)
{
    (void)state;
    Graph g, h;
    small_graph(&g);
    uint8_t *d = NULL;
    size_t n = 0;
    assert_int_equal(sslim_encode(&g, &d, &n), 0);
    assert_int_equal(sl_rd32(d + 16), 3);
    size_t extra = 10, m = n + 64 + extra;
    uint8_t *c = calloc(m, 1);
    memcpy(c, d, 32 + 3 * 24);
    memcpy(c + 104 + 64, d + 104, n - 104);
    for (int i = 0; i < 3; i++) {
        uint8_t *t = c + 32 + 24 * i;
        sl_wr64(t + 8, sl_rd64(t + 8) + 64);
    }
    uint8_t *t = c + 32 + 3 * 24;
    memcpy(t, "XTRA", 4);
    sl_wr64(t + 8, n + 64);
    sl_wr64(t + 16, extra);
    memset(c + n + 64, 0xab, extra);
    sl_wr32(c + 16, 4);
    sl_wr64(c + 24, m);
    fix_crcs(c, m);
    assert_int_equal(sslim_decode(c, m, "four sections", &h), 0);
    expect_same_graph(&g, &h);
    graph_free(&h);
    /* ... and its checksum is still checked */
    c[m - 1] ^= 1;
    sl_error_quiet(1);
    expect_reject(c, m, "section XTRA checksum mismatch");
    /* a required section missing (renamed) is reported by name */
    c[m - 1] ^= 1;
    memcpy(c + 32 + 24, "GRPX", 4);
    fix_crcs(c, m);
    expect_reject(c, m, "no GRPH section");
    sl_error_quiet(0);
    free(c);
    sl_free(d);
    graph_free(&g);
}

/* Offset (in d) of the first weight value's ndim field in GRPH, walking
 * the value records: u32 name length, name, i32 ndim, ndim x u64 dims,
 * u32 kind, kind 1: u64 offset, u64 bytes. */
static size_t first_weight_record(const uint8_t *d, size_t goff)
{
    size_t p = goff;
    uint32_t nv = sl_rd32(d + p);
    p += 4;
    for (uint32_t i = 0; i < nv; i++) {
        uint32_t nl = sl_rd32(d + p);
        p += 4 + (nl == 0xFFFFFFFFu ? 0 : nl);
        size_t rec = p;
        uint32_t nd = sl_rd32(d + p);
        p += 4 + 8 * (size_t)nd;
        uint32_t kind = sl_rd32(d + p);
        p += 4;
        if (kind == 1) return rec;
    }
    fail();
    return 0;
}

/* The largest claims each field of a .sslim can make (counts, string
 * lengths, tensor dims whose product overflows, byte counts, offsets,
 * the section table), checksums fixed so the structural checks behind
 * them answer: each is refused as malformed, with one line naming the
 * file, before anything of the claimed size is allocated (a count is
 * bounded by the bytes left to hold it, a tensor by the WGHT section). */
static void test_largest_claims(void **state)
{
    (void)state;
    Graph g;
    small_graph(&g);
    uint8_t *d = NULL;
    size_t n = 0;
    assert_int_equal(sslim_encode(&g, &d, &n), 0);
    graph_free(&g);
    uint8_t *c = malloc(n);
    assert_non_null(c);
    size_t moff, mlen, goff, glen;
    find_section(d, "META", &moff, &mlen);
    find_section(d, "GRPH", &goff, &glen);
    size_t w = first_weight_record(d, goff);
    uint32_t wnd = sl_rd32(d + w);
    assert_true(wnd >= 2);
    static const uint32_t counts[] = {0xFFFFFFFFu, 0x80000000u, 0x00FFFFFFu,
                                      65536u};
    sl_error_quiet(1);
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        /* class count, first class name length, value count, first value
         * name length */
        static const size_t at[] = {0, 4};
        for (size_t k = 0; k < 2; k++) {
            memcpy(c, d, n);
            sl_wr32(c + moff + at[k], counts[i]);
            fix_crcs(c, n);
            expect_reject(c, n, "bad metadata section");
            memcpy(c, d, n);
            sl_wr32(c + goff + at[k], counts[i]);
            fix_crcs(c, n);
            expect_reject(c, n, "bad graph section");
        }
    }
    /* The weight's dims: product overflowing int64, product far above
     * the WGHT section, a negative dim. */
    static const uint64_t dims[][2] = {{(uint64_t)1 << 62, 4},
                                       {(uint64_t)1 << 40, (uint64_t)1 << 40},
                                       {(uint64_t)1 << 31, 1},
                                       {UINT64_MAX, 1}};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        memcpy(c, d, n);
        sl_wr64(c + w + 4, dims[i][0]);
        sl_wr64(c + w + 12, dims[i][1]);
        fix_crcs(c, n);
        expect_reject(c, n, "bad graph section");
    }
    /* Its byte count and offset. */
    size_t kind_at = w + 4 + 8 * (size_t)wnd;
    static const uint64_t big[] = {UINT64_MAX, (uint64_t)1 << 62,
                                   (uint64_t)1 << 32};
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        memcpy(c, d, n);
        sl_wr64(c + kind_at + 12, big[i]); /* bytes */
        fix_crcs(c, n);
        expect_reject(c, n, "bad graph section");
        memcpy(c, d, n);
        sl_wr64(c + kind_at + 4, big[i] & ~(uint64_t)63); /* offset */
        fix_crcs(c, n);
        expect_reject(c, n, "bad graph section");
    }
    /* The header: section count, a section's size, the file size. */
    memcpy(c, d, n);
    sl_wr32(c + 16, 0xFFFFFFFFu); /* refused before any checksum */
    expect_reject(c, n, "sections");
    memcpy(c, d, n);
    sl_wr64(c + 32 + 16, (uint64_t)1 << 63);
    fix_crcs(c, n);
    expect_reject(c, n, "outside the file");
    memcpy(c, d, n);
    sl_wr64(c + 24, UINT64_MAX);
    fix_crcs(c, n);
    expect_reject(c, n, "truncated");
    sl_error_quiet(0);
    free(c);
    sl_free(d);
}

static void test_truncation(void **state)
{
    (void)state;
    Graph g;
    small_graph(&g);
    uint8_t *d = NULL;
    size_t n = 0;
    assert_int_equal(sslim_encode(&g, &d, &n), 0);
    graph_free(&g);
    sl_error_quiet(1);
    /* every proper prefix, copied so ASan sees reads past its end */
    for (size_t len = 0; len < n; len++) {
        uint8_t *c = malloc(len ? len : 1);
        memcpy(c, d, len);
        expect_reject(c, len, NULL);
        free(c);
    }
    /* and a longer file (trailing junk) */
    uint8_t *c = calloc(n + 64, 1);
    memcpy(c, d, n);
    expect_reject(c, n + 64, NULL);
    free(c);
    sl_error_quiet(0);
    sl_free(d);
}

/* Any single-byte change anywhere is detected. */
static void test_corruption(void **state)
{
    (void)state;
    Graph g;
    small_graph(&g);
    uint8_t *d = NULL;
    size_t n = 0;
    assert_int_equal(sslim_encode(&g, &d, &n), 0);
    graph_free(&g);
    uint8_t *c = malloc(n);
    memcpy(c, d, n);
    sl_error_quiet(1);
    const uint8_t flips[] = {0x01, 0x80, 0xff, 0x5a};
    for (size_t pos = 0; pos < n; pos++) {
        for (size_t f = 0; f < sizeof flips; f++) {
            c[pos] ^= flips[f];
            expect_reject(c, n, NULL);
            c[pos] ^= flips[f];
        }
    }
    sl_error_quiet(0);
    free(c);
    sl_free(d);
}

/* Behind the checksums: edits with valid CRCs must still never crash, and
 * anything accepted must be a valid graph that shape inference handles
 * without crashing.  Every byte of the GRPH and META sections is changed
 * in several ways. */
static void test_structural_fuzz(void **state)
{
    (void)state;
    Graph g;
    assert_int_equal(build_all_ops(&g, 4), 0);
    uint8_t *d = NULL;
    size_t n = 0;
    assert_int_equal(sslim_encode(&g, &d, &n), 0);
    graph_free(&g);
    uint8_t *c = malloc(n);
    sl_error_quiet(1);
    int accepted = 0, rejected = 0;
    const char *tags[2] = {"GRPH", "META"};
    const uint8_t flips[] = {0x01, 0x80, 0xff};
    for (int t = 0; t < 2; t++) {
        size_t off, len;
        find_section(d, tags[t], &off, &len);
        for (size_t pos = off; pos < off + len; pos++) {
            for (size_t f = 0; f < sizeof flips; f++) {
                memcpy(c, d, n);
                c[pos] ^= flips[f];
                fix_crcs(c, n);
                Graph h;
                sl_error_reset();
                int rc = sslim_decode(c, n, "fuzz", &h);
                if (rc) {
                    assert_int_equal(rc, ERR_FORMAT);
                    assert_null(h.values);
                    rejected++;
                    continue;
                }
                accepted++;
                Shape in = {4, {1, 2, 8, 8}};
                (void)graph_infer_shapes(&h, &in);
                graph_free(&h);
            }
        }
    }
    sl_error_reset();
    sl_error_quiet(0);
    /* names, floats and unused bits may change harmlessly; counts and
     * indices may not */
    assert_true(accepted > 0);
    assert_true(rejected > 0);
    free(c);
    sl_free(d);
}

static void test_garbage(void **state)
{
    (void)state;
    Graph g;
    small_graph(&g);
    uint8_t *d = NULL;
    size_t n = 0;
    assert_int_equal(sslim_encode(&g, &d, &n), 0);
    graph_free(&g);
    TestRng r = {99};
    sl_error_quiet(1);
    for (int it = 0; it < 3000; it++) {
        size_t len = (size_t)(trng_next(&r) % (2 * n + 1));
        uint8_t *c = malloc(len ? len : 1);
        for (size_t i = 0; i < len; i++)
            c[i] = (uint8_t)trng_next(&r);
        /* a third keep the real header start (magic, version, counts),
         * so the checks after the magic get garbage too */
        size_t keep = it % 3 == 0 ? 24 : it % 3 == 1 ? 8 : 0;
        if (keep > len) keep = len;
        memcpy(c, d, keep);
        if (it % 3 == 0 && len >= 32) sl_wr64(c + 24, len);
        expect_reject(c, len, NULL);
        free(c);
    }
    sl_error_quiet(0);
    sl_free(d);
}

static void test_failing_allocator(void **state)
{
    (void)state;
    Graph g, h;
    assert_int_equal(build_all_ops(&g, 6), 0);
    uint8_t *d = NULL;
    size_t n = 0;
    sl_error_quiet(1);
    int k;
    for (k = 0; k < 100000; k++) {
        sl_error_reset();
        sl_alloc_fail_after(k);
        int rc = sslim_encode(&g, &d, &n);
        sl_alloc_fail_after(-1);
        if (rc == 0) break;
        assert_int_equal(rc, ERR_NOMEM);
        assert_null(d);
    }
    assert_true(k > 0);
    for (k = 0; k < 100000; k++) {
        sl_error_reset();
        sl_alloc_fail_after(k);
        int rc = sslim_decode(d, n, "mem", &h);
        sl_alloc_fail_after(-1);
        if (rc == 0) break;
        assert_int_equal(rc, ERR_NOMEM);
        assert_int_equal(h.n_values, 0);
        assert_null(h.values);
    }
    /* at least one allocation per value name, weight and node name */
    assert_true(k > g.n_values);
    sl_error_reset();
    sl_error_quiet(0);
    expect_same_graph(&g, &h);
    graph_free(&h);
    sl_free(d);
    graph_free(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_grid_section),
        cmocka_unit_test(test_file_io),
        cmocka_unit_test(test_weights_one_copy),
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_unknown_section),
        cmocka_unit_test(test_largest_claims),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_corruption),
        cmocka_unit_test(test_structural_fuzz),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_failing_allocator),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
