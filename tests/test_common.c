/* common.c: CRC-32, little-endian helpers, error reporting, the failing
 * allocator hook, and atomic file writes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/common.h"
#include "tests/testutil.h"

static void test_crc32(void **state)
{
    (void)state;
    /* The standard check value of CRC-32/ISO-HDLC (zlib, PNG, gzip). */
    assert_int_equal(sl_crc32(0, "123456789", 9), 0xCBF43926u);
    assert_int_equal(sl_crc32(0, "", 0), 0);
    /* Chaining over pieces equals one pass (the .sslim header CRC
     * skips its own field this way). */
    uint32_t c = sl_crc32(0, "1234", 4);
    assert_int_equal(sl_crc32(c, "56789", 5), 0xCBF43926u);
    /* One flipped bit changes it. */
    assert_int_not_equal(sl_crc32(0, "123456788", 9), 0xCBF43926u);
}

static void test_little_endian(void **state)
{
    (void)state;
    uint8_t b[8];
    sl_wr32(b, 0x11223344u);
    assert_int_equal(b[0], 0x44);
    assert_int_equal(b[3], 0x11);
    assert_int_equal(sl_rd32(b), 0x11223344u);
    sl_wr64(b, 0x0102030405060708ull);
    assert_int_equal(b[0], 0x08);
    assert_int_equal(b[7], 0x01);
    assert_true(sl_rd64(b) == 0x0102030405060708ull);
}

static void test_mul_size(void **state)
{
    (void)state;
    size_t r = 0;
    assert_int_equal(sl_mul_size(3, 5, &r), 0);
    assert_int_equal(r, 15);
    assert_int_equal(sl_mul_size(0, SIZE_MAX, &r), 0);
    assert_int_equal(r, 0);
    assert_int_equal(sl_mul_size(SIZE_MAX / 2 + 1, 2, &r), -1);
}

/* --max-memory's sizes: suffixes are powers of 1024; zero, junk and
 * overflow are refused. */
static void test_parse_bytes(void **state)
{
    (void)state;
    uint64_t v = 0;
    assert_int_equal(sl_parse_bytes("1000000", &v), 0);
    assert_true(v == 1000000);
    assert_int_equal(sl_parse_bytes("512M", &v), 0);
    assert_true(v == (uint64_t)512 << 20);
    assert_int_equal(sl_parse_bytes("8g", &v), 0);
    assert_true(v == (uint64_t)8 << 30);
    assert_int_equal(sl_parse_bytes("2TB", &v), 0);
    assert_true(v == (uint64_t)2 << 40);
    assert_int_equal(sl_parse_bytes("3k", &v), 0);
    assert_true(v == 3072);
    assert_int_equal(sl_parse_bytes("18446744073709551615", &v), 0);
    assert_true(v == UINT64_MAX);
    static const char *bad[] = {"",
                                "0",
                                "0G",
                                "-1",
                                "1.5G",
                                "G",
                                "12Q",
                                "4GG",
                                " 4G",
                                "4G ",
                                "18446744073709551616",
                                "16777216T",
                                "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 42;
        if (sl_parse_bytes(bad[i], &v) != ERR_ARG) fail_msg("'%s'", bad[i]);
        assert_true(v == 42);
    }
    assert_int_equal(sl_parse_bytes(NULL, &v), ERR_ARG);
}

static void test_alloc(void **state)
{
    (void)state;
    for (size_t n = 0; n < 300; n += 37) {
        void *p = sl_alloc(n);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 64, 0);
        sl_free(p);
    }
    float *z = sl_calloc(100, sizeof(float));
    assert_non_null(z);
    for (int i = 0; i < 100; i++)
        assert_true(z[i] == 0.0f);
    sl_free(z);
    assert_null(sl_calloc(SIZE_MAX / 2, 4)); /* count*size overflows */
    char *s = sl_strdup("abc");
    assert_string_equal(s, "abc");
    sl_free(s);
    assert_null(sl_strdup(NULL));
}

static void test_failing_allocator(void **state)
{
    (void)state;
    /* 0: the very next allocation fails, then the hook disarms. */
    sl_alloc_fail_after(0);
    assert_null(sl_alloc(16));
    void *p = sl_alloc(16);
    assert_non_null(p);
    sl_free(p);
    /* 2: two succeed, the third fails; realloc and calloc count too. */
    sl_alloc_fail_after(2);
    void *a = sl_alloc(8);
    void *b = sl_realloc(NULL, 8);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(sl_calloc(4, 4));
    void *c = sl_calloc(4, 4);
    assert_non_null(c);
    sl_free(a);
    sl_free(b);
    sl_free(c);
    /* realloc failure leaves the old block intact. */
    char *r = sl_realloc(NULL, 4);
    assert_non_null(r);
    memcpy(r, "xyz", 4);
    sl_alloc_fail_after(0);
    assert_null(sl_realloc(r, 1 << 20));
    assert_string_equal(r, "xyz");
    sl_free(r);
    /* strdup goes through the allocator as well. */
    sl_alloc_fail_after(0);
    assert_null(sl_strdup("x"));
    /* negative disarms */
    sl_alloc_fail_after(-1);
    p = sl_alloc(1);
    assert_non_null(p);
    sl_free(p);
}

/* Names from input files are shown escaped: nothing a terminal acts on,
 * no invalid UTF-8, quotes that cannot close the message's own. */
static void test_escape(void **state)
{
    (void)state;
    assert_string_equal(sl_esc("conv1.weight").s, "conv1.weight");
    assert_string_equal(sl_esc(NULL).s, "(none)");
    assert_string_equal(sl_esc("").s, "");
    /* C0 controls, DEL, ESC sequences, vertical tab and form feed (each
     * shows as a line break on some terminals) */
    assert_string_equal(sl_esc("a\nb\rc\td\x1b[2J\x7f\v\f").s,
                        "a\\x0ab\\x0dc\\x09d\\x1b[2J\\x7f\\x0b\\x0c");
    /* quotes and backslash */
    assert_string_equal(sl_esc("it's \"x\" \\").s, "it\\'s \\\"x\\\" \\\\");
    /* valid UTF-8 stays: e-acute, CJK, emoji */
    assert_string_equal(sl_esc("caf\xc3\xa9 \xe5\x90\x8d \xf0\x9f\x98\x80").s,
                        "caf\xc3\xa9 \xe5\x90\x8d \xf0\x9f\x98\x80");
    /* invalid: lone continuation, truncated sequence, overlong '/',
     * surrogate, > U+10FFFF, 0xff */
    assert_string_equal(
        sl_esc("\x80|\xc3|\xc0\xaf|\xed\xa0\x80|\xf4\x90\x80\x80|\xff").s,
        "\\x80|\\xc3|\\xc0\\xaf|\\xed\\xa0\\x80|"
        "\\xf4\\x90\\x80\\x80|\\xff");
    /* C1 control NEL (U+0085) and the line/paragraph separators */
    assert_string_equal(sl_esc("a\xc2\x85"
                               "b\xe2\x80\xa8"
                               "c\xe2\x80\xa9")
                            .s,
                        "a\\xc2\\x85b\\xe2\\x80\\xa8c\\xe2\\x80\\xa9");
    /* bounded: a long name is cut and says so */
    char longname[1000];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    SlEsc e = sl_esc(longname);
    size_t n = strlen(e.s);
    assert_true(n < SL_ESC_MAX);
    assert_string_equal(e.s + n - 3, "...");
    /* a cut never splits an escape or a UTF-8 sequence */
    memset(longname, 0, sizeof longname);
    for (size_t k = 0; k + 2 < sizeof longname; k += 2)
        memcpy(longname + k, "\xc3\xa9", 2);
    e = sl_esc(longname);
    n = strlen(e.s);
    assert_string_equal(e.s + n - 3, "...");
    assert_int_equal((n - 3) % 2, 0);
    /* byte strings that need not end in a NUL */
    assert_string_equal(sl_esc_n("ab\x01"
                                 "cd",
                                 3)
                            .s,
                        "ab\\x01");
    /* sl_error filters its whole line the same way (quotes kept): a name
     * that was not passed through sl_esc still cannot break the line */
    sl_error_quiet(1);
    sl_error_reset();
    sl_error("node '%s' failed", "x\vy\fz\x1b]0;t\x07\xff");
    assert_string_equal(sl_error_last(),
                        "node 'x\\x0by\\x0cz\\x1b]0;t\\x07\\xff' failed");
    sl_error_reset();
    sl_error_quiet(0);
}

static void test_errors(void **state)
{
    (void)state;
    sl_error_quiet(1);
    assert_int_equal(sl_error_is_quiet(), 1);
    sl_error_reset();
    assert_int_equal(sl_error_reported(), 0);
    assert_string_equal(sl_error_last(), "");
    sl_error("first %d\nsecond line", 1);
    assert_int_equal(sl_error_reported(), 1);
    /* one line, newlines flattened */
    assert_string_equal(sl_error_last(), "first 1 second line");
    /* the innermost (first) report wins */
    sl_error("outer");
    assert_string_equal(sl_error_last(), "first 1 second line");
    sl_error_reset();
    sl_error("outer");
    assert_string_equal(sl_error_last(), "outer");
    sl_error_reset();
    sl_error_quiet(0);
    assert_int_equal(sl_error_is_quiet(), 0);
    for (int c = 0; c >= ERR_EXISTS; c--)
        assert_string_not_equal(sl_strerror(c), "unknown error");
    assert_string_equal(sl_strerror(-1000), "unknown error");
}

static void path_in_tmp(const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", test_tmpdir(), name);
}

static void test_atomic_write(void **state)
{
    (void)state;
    char path[512];
    path_in_tmp("atomic.bin", path, sizeof path);
    unlink(path);
    assert_int_equal(sl_write_file_atomic(path, "hello", 5, 0), 0);
    uint8_t *d = NULL;
    size_t n = 0;
    assert_int_equal(sl_read_file(path, &d, &n), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(d, "hello", 5);
    sl_free(d);

    /* Without force an existing file is refused and left untouched. */
    sl_error_quiet(1);
    sl_error_reset();
    assert_int_equal(sl_write_file_atomic(path, "bye", 3, 0), ERR_EXISTS);
    assert_non_null(strstr(sl_error_last(), "--force"));
    sl_error_reset();
    assert_int_equal(sl_read_file(path, &d, &n), 0);
    assert_int_equal(n, 5);
    sl_free(d);

    /* With force it is replaced, and no temporary file is left behind. */
    assert_int_equal(sl_write_file_atomic(path, "bye", 3, 1), 0);
    assert_int_equal(sl_read_file(path, &d, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(d, "bye", 3);
    sl_free(d);
    char *tmp = sl_tmp_path(path);
    assert_non_null(tmp);
    assert_false(sl_file_exists(tmp));
    sl_free(tmp);

    /* A missing folder is an I/O error, with a message. */
    char bad[600];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.bin", test_tmpdir());
    assert_int_equal(sl_write_file_atomic(bad, "x", 1, 0), ERR_IO);
    assert_true(sl_error_reported());
    /* the line names the output the user asked for, not the temporary */
    char want[700];
    snprintf(want, sizeof want, "cannot write '%s'", bad);
    assert_non_null(strstr(sl_error_last(), want));
    sl_error_reset();
    /* Reading a missing file or a directory is an I/O error too. */
    assert_int_equal(sl_read_file(bad, &d, &n), ERR_IO);
    assert_null(d);
    sl_error_reset();
    assert_int_equal(sl_read_file(test_tmpdir(), &d, &n), ERR_IO);
    sl_error_reset();
    /* An empty file reads as 0 bytes. */
    path_in_tmp("empty.bin", path, sizeof path);
    assert_int_equal(sl_write_file_atomic(path, "", 0, 1), 0);
    assert_int_equal(sl_read_file(path, &d, &n), 0);
    assert_int_equal(n, 0);
    sl_free(d);
    sl_error_quiet(0);
}

/* A write killed before its rename leaves OUT.tmp.PID: the next run
 * removes those of dead processes beside its output, and nothing else. */
static void test_dead_temps(void **state)
{
    (void)state;
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) _exit(0);
    assert_int_equal(waitpid(child, NULL, 0), child);
    char out[512], f[5][700];
    path_in_tmp("dt.sslim", out, sizeof out);
    snprintf(f[0], sizeof f[0], "%s.tmp.%ld", out, (long)child);    /* dead */
    snprintf(f[1], sizeof f[1], "%s.tmp.%ld", out, (long)getpid()); /* us */
    snprintf(f[2], sizeof f[2], "%s.tmp.%ldx", out, (long)child); /* no PID */
    path_in_tmp("dt.sslimx.tmp.", f[3], sizeof f[3]);
    snprintf(f[3] + strlen(f[3]), sizeof f[3] - strlen(f[3]), "%ld",
             (long)child);                  /* another output's */
    snprintf(f[4], sizeof f[4], "%s", out); /* the output itself */
    for (int i = 0; i < 5; i++) {
        FILE *fp = fopen(f[i], "wb");
        assert_non_null(fp);
        fclose(fp);
    }
    assert_true(sl_is_dead_temp(strrchr(f[0], '/') + 1, NULL));
    assert_false(sl_is_dead_temp(strrchr(f[0], '/') + 1, "dt.sslimx"));
    sl_remove_dead_temps(out);
    assert_false(sl_file_exists(f[0]));
    for (int i = 1; i < 5; i++) {
        assert_true(sl_file_exists(f[i]));
        unlink(f[i]);
    }
    /* a bare file name works in the current folder too */
    sl_remove_dead_temps("no-such-output-here.sslim");
}

static void test_now(void **state)
{
    (void)state;
    double a = sl_now(), b = sl_now();
    assert_true(b >= a);
}

/* The median that timings share (trainer estimate, sauron-run,
 * bench-train): odd n the middle value, even n the mean of the two middle
 * ones, the array left sorted. */
static void test_median(void **state)
{
    (void)state;
    double one[] = {3.0};
    assert_true(sl_median(one, 1) == 3.0);
    double odd[] = {5.0, 1.0, 4.0, 2.0, 3.0};
    assert_true(sl_median(odd, 5) == 3.0);
    for (int i = 0; i < 5; i++)
        assert_true(odd[i] == (double)(i + 1));
    double even[] = {0.8, 0.3, 1.4, 0.5};
    assert_true(sl_median(even, 4) == 0.5 * (0.5 + 0.8));
    double dist[] = {2.0, -1.0, 2.0, 0.0};
    sl_sort_doubles(dist, 4);
    assert_true(dist[0] == -1.0 && dist[1] == 0.0 && dist[2] == 2.0 &&
                dist[3] == 2.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32),
        cmocka_unit_test(test_little_endian),
        cmocka_unit_test(test_mul_size),
        cmocka_unit_test(test_parse_bytes),
        cmocka_unit_test(test_alloc),
        cmocka_unit_test(test_failing_allocator),
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_atomic_write),
        cmocka_unit_test(test_dead_temps),
        cmocka_unit_test(test_now),
        cmocka_unit_test(test_median),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
