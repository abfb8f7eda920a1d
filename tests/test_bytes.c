/* The byte codec (runtime/bytes.h) on its own: exact little-endian bytes
 * of every scalar kind, bounds and the sticky error, counts bounded by the
 * bytes left, strings (NULL, too long, embedded NUL, failing allocation),
 * alignment padding, patched fields, CRC-32, and a writer whose
 * allocations fail in turn.  Runtime only: make check-long also runs it
 * on aarch64 under qemu. */
#include <stdio.h>
#include <string.h>

#include "runtime/bytes.h"
#include "runtime/common.h"
#include "tests/testutil.h"

/* Every scalar kind round-trips with its exact little-endian bytes. */
static void test_scalars(void **state)
{
    (void)state;
    ByteWriter w = {0};
    bw_u8(&w, 0xA1);
    bw_u16(&w, 0xB2C3);
    bw_u32(&w, 0xD4E5F607u);
    bw_u64(&w, 0x0102030405060708ull);
    bw_i32(&w, -2);
    bw_i64(&w, -3);
    bw_f32(&w, -1.5f);
    bw_f64(&w, 0.1);
    const int iv[3] = {1, -1, 7};
    const float fv[2] = {2.5f, -0.0f};
    bw_i32s(&w, iv, 3);
    bw_f32s(&w, fv, 2);
    bw_str(&w, "ab");
    bw_str(&w, NULL);
    bw_str(&w, "");
    assert_int_equal(w.err, 0);
    const uint8_t head[] = {0xA1, 0xC3, 0xB2, 0x07, 0xF6, 0xE5, 0xD4,
                            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02,
                            0x01, 0xFE, 0xFF, 0xFF, 0xFF};
    assert_memory_equal(w.p, head, sizeof head);

    ByteReader r;
    br_init(&r, w.p, w.n);
    assert_int_equal(br_u8(&r), 0xA1);
    assert_int_equal(br_u16(&r), 0xB2C3);
    assert_int_equal(br_u32(&r), 0xD4E5F607u);
    assert_true(br_u64(&r) == 0x0102030405060708ull);
    assert_int_equal(br_i32(&r), -2);
    assert_true(br_i64(&r) == -3);
    assert_true(br_f32(&r) == -1.5f);
    assert_true(br_f64(&r) == 0.1);
    int ov[3];
    float of[2];
    br_i32s(&r, ov, 3);
    br_f32s(&r, of, 2);
    assert_memory_equal(ov, iv, sizeof iv);
    assert_memory_equal(of, fv, sizeof fv); /* -0.0 keeps its sign bit */
    char *a = br_str(&r, 16), *n = br_str(&r, 16), *e = br_str(&r, 16);
    assert_string_equal(a, "ab");
    assert_null(n);
    assert_string_equal(e, "");
    assert_int_equal(br_finish(&r), 0);
    sl_free(a);
    sl_free(e);
    bw_free(&w);
}

/* Reading past the end fails once and stays failed: later reads give 0
 * and never move the cursor; br_finish reports leftovers. */
static void test_reader_bounds(void **state)
{
    (void)state;
    const uint8_t d[6] = {1, 0, 0, 0, 9, 9};
    ByteReader r;
    br_init(&r, d, sizeof d);
    assert_int_equal(br_u32(&r), 1);
    assert_int_equal(br_left(&r), 2);
    assert_int_equal(br_u32(&r), 0); /* only 2 bytes left */
    assert_int_equal(r.err, ERR_FORMAT);
    assert_int_equal(r.pos, 4);
    assert_int_equal(br_u8(&r), 0); /* sticky, though 1 byte would fit */
    assert_null(br_bytes(&r, 0));
    assert_int_equal(br_left(&r), 0);

    br_init(&r, d, sizeof d);
    br_skip(&r, 4);
    assert_int_equal(br_finish(&r), ERR_FORMAT); /* 2 bytes left over */

    /* counts bounded by max and by the bytes left */
    const uint8_t c[8] = {3, 0, 0, 0, 0, 0, 0, 0};
    br_init(&r, c, sizeof c);
    assert_int_equal(br_count(&r, 10, 1), 3);
    br_init(&r, c, sizeof c);
    assert_int_equal(br_count(&r, 2, 1), 0);
    assert_int_equal(r.err, ERR_FORMAT);
    br_init(&r, c, sizeof c);
    assert_int_equal(br_count(&r, 10, 2), 0); /* 3 x 2 > 4 bytes left */
    assert_int_equal(r.err, ERR_FORMAT);

    /* strings: too long, embedded NUL, length beyond the buffer */
    const uint8_t s1[7] = {3, 0, 0, 0, 'a', 'b', 'c'};
    br_init(&r, s1, sizeof s1);
    assert_null(br_str(&r, 2));
    assert_int_equal(r.err, ERR_FORMAT);
    const uint8_t s2[7] = {3, 0, 0, 0, 'a', 0, 'c'};
    br_init(&r, s2, sizeof s2);
    assert_null(br_str(&r, 16));
    assert_int_equal(r.err, ERR_FORMAT);
    br_init(&r, s1, 6);
    assert_null(br_str(&r, 16));
    assert_int_equal(r.err, ERR_FORMAT);
    /* the copy's allocation failing */
    br_init(&r, s1, sizeof s1);
    sl_alloc_fail_after(0);
    assert_null(br_str(&r, 16));
    sl_alloc_fail_after(-1);
    assert_int_equal(r.err, ERR_NOMEM);

    /* an empty reader (NULL buffer) */
    br_init(&r, NULL, 0);
    assert_non_null(br_bytes(&r, 0));
    assert_int_equal(br_finish(&r), 0);
    assert_int_equal(br_u8(&r), 0);
    assert_int_equal(r.err, ERR_FORMAT);
}

/* Alignment pads with zeros on write and insists on zeros on read; a
 * patched field and the CRC of a range. */
static void test_align_patch_crc(void **state)
{
    (void)state;
    ByteWriter w = {0};
    bw_u8(&w, 5);
    bw_align(&w, 8);
    assert_int_equal(w.n, 8);
    bw_align(&w, 8);
    assert_int_equal(w.n, 8);
    bw_u32(&w, 0);
    bw_put_u32_at(&w, 8, 0x11223344u);
    assert_int_equal(sl_rd32(w.p + 8), 0x11223344u);
    /* "123456789" has the standard CRC-32 check value 0xCBF43926 */
    size_t at = w.n;
    bw_bytes(&w, "123456789", 9);
    assert_int_equal(bw_crc32(&w, at), 0xCBF43926u);
    ByteReader r;
    br_init(&r, w.p, w.n);
    assert_int_equal(br_u8(&r), 5);
    br_align(&r, 8);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.pos, 8);
    w.p[3] = 1; /* nonzero padding */
    br_init(&r, w.p, w.n);
    br_u8(&r);
    br_align(&r, 8);
    assert_int_equal(r.err, ERR_FORMAT);
    bw_free(&w);
}

/* The writer grows across many appends, and a failed allocation sticks:
 * later appends do nothing and the bytes written so far stay. */
static void test_writer_growth_and_failure(void **state)
{
    (void)state;
    ByteWriter w = {0};
    for (uint32_t i = 0; i < 10000; i++)
        bw_u32(&w, i);
    assert_int_equal(w.err, 0);
    assert_int_equal(w.n, 40000);
    for (uint32_t i = 0; i < 10000; i += 997)
        assert_int_equal(sl_rd32(w.p + 4 * i), i);
    bw_free(&w);

    for (long k = 0; k < 4; k++) {
        ByteWriter f = {0};
        sl_alloc_fail_after(k);
        for (int i = 0; i < 5000; i++)
            bw_f64(&f, (double)i);
        sl_alloc_fail_after(-1);
        /* 40000 bytes take 5 allocations (4096 doubling to 65536), so
         * each k fails one of them */
        assert_int_equal(f.err, ERR_NOMEM);
        size_t n = f.n;
        bw_u32(&f, 1);
        assert_int_equal(f.n, n);
        assert_null(bw_reserve(&f, 1));
        assert_int_equal(bw_crc32(&f, 0), 0);
        for (size_t i = 0; i < n / 8; i++) {
            double v;
            uint64_t u = sl_rd64(f.p + 8 * i);
            memcpy(&v, &u, 8);
            assert_true(v == (double)i);
        }
        bw_free(&f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars),
        cmocka_unit_test(test_reader_bounds),
        cmocka_unit_test(test_align_patch_crc),
        cmocka_unit_test(test_writer_growth_and_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
