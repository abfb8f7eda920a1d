/* Batches: `segment -o OUTDIR a b ...` and `segment --input-dir DIR -o
 * OUTDIR` (runtime/batch.c), run as a user would, from the repository
 * root.
 *
 * The reference for every output is a one-scan run of the same binary on
 * the same scan: batch outputs must be byte-identical to it (same model,
 * same threads; results do not depend on what ran before in the process).
 * A corrupt case in the middle must give exactly one stderr line naming
 * it, no output, and the cases after it must still be written; the exit
 * status is 1 when any case failed, 2 for refused arguments.  Inputs must
 * keep their bytes and mtime.  The GNU parallel line of the README and the
 * Slurm array script (tools/segment_array.sh) are run as documented.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/batch.h"
#include "runtime/common.h"
#include "runtime/sslim.h"
#include "tests/batchcheck.h"
#include "tests/phantomscan.h"
#include "tests/testutil.h"

/* Scan `name` in folder `dir` (created), case number i picks size and
 * datatype. */
static void make_scan(const char *dir, const char *name, int i)
{
    static const int sizes[][3] = {{24, 32, 6}, {33, 17, 5}, {20, 20, 9}};
    const int *s = sizes[i % 3];
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_int_equal(phantom_write(path, s[0], s[1], s[2],
                                   phantom_types[i % N_PHANTOM_TYPES],
                                   1000 + (uint64_t)i),
                     0);
}

typedef struct {
    struct stat st;
    uint8_t *bytes;
    size_t n;
} Snapshot;

static void snap(const char *path, Snapshot *s)
{
    assert_int_equal(stat(path, &s->st), 0);
    assert_int_equal(sl_read_file(path, &s->bytes, &s->n), 0);
}

/* The input still has its bytes and its mtime. */
static void assert_untouched(const char *path, Snapshot *s)
{
    struct stat st;
    uint8_t *b = NULL;
    size_t n = 0;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(sl_read_file(path, &b, &n), 0);
    if (n != s->n || memcmp(b, s->bytes, n) ||
        st.st_mtim.tv_sec != s->st.st_mtim.tv_sec ||
        st.st_mtim.tv_nsec != s->st.st_mtim.tv_nsec)
        fail_msg("input %s was modified", path);
    sl_free(b);
    sl_free(s->bytes);
    s->bytes = NULL;
}

/* Five cases of three sizes and five datatypes, the third corrupt: one
 * line for it, four outputs identical to one-scan runs, exit 1, a
 * per-case line with a time for each good case, a summary. */
static void test_corrupt_case_in_the_middle(void **state)
{
    (void)state;
    char in[600], out[600];
    snprintf(in, sizeof in, "%s", test_tmp_path("mid_in"));
    snprintf(out, sizeof out, "%s", test_tmp_path("mid_out"));
    bc_fresh_dir(in);
    BcRun r = bc_sh("rm -rf '%s'", out);
    bc_free(&r);
    const char *names[5] = {"a.nii.gz", "b.nii", "bad.nii.gz", "d.nii.gz",
                            "e.nii.gz"};
    for (int i = 0; i < 5; i++)
        make_scan(in, names[i], i);
    char bad[1024];
    snprintf(bad, sizeof bad, "%s/bad.nii.gz", in);
    /* 400 bytes of a .nii.gz: a whole header, a fraction of the data */
    assert_int_equal(phantom_truncate(bad, bad, 400), 0);
    Snapshot sn[5];
    char paths[5][1024];
    for (int i = 0; i < 5; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/%s", in, names[i]);
        snap(paths[i], &sn[i]);
    }
    r = bc_sh("%s --threads 2 -m %s -o '%s' '%s' '%s' '%s' '%s' '%s'",
              bc_segment_bin(), bc_model(), out, paths[0], paths[1], paths[2],
              paths[3], paths[4]);
    fprintf(stderr, "batch: exit %d, stderr: %s\nstdout:\n%s", r.status,
            r.err, r.out);
    assert_int_equal(r.status, 1);
    assert_int_equal(r.err_lines, 1);
    assert_non_null(strstr(r.err_first, "case 3/5"));
    assert_non_null(strstr(r.err_first, bad));
    /* four "[k/5] scan -> output (t s)" lines and the summary */
    assert_int_equal(bc_count_lines(r.out, "["), 4);
    assert_non_null(strstr(r.out, "[5/5] "));
    assert_non_null(strstr(r.out, " s)\n"));
    assert_non_null(strstr(r.out, "segmented 4 of 5 cases in "));
    assert_non_null(strstr(r.out, "1 failed"));
    bc_free(&r);
    const char *outs[5] = {"a_seg.nii.gz", "b_seg.nii.gz", "bad_seg.nii.gz",
                           "d_seg.nii.gz", "e_seg.nii.gz"};
    for (int i = 0; i < 5; i++) {
        char o[1024];
        snprintf(o, sizeof o, "%s/%s", out, outs[i]);
        if (i == 2) {
            assert_false(sl_file_exists(o));
            continue;
        }
        bc_assert_same_as_single(paths[i], o);
    }
    for (int i = 0; i < 5; i++)
        assert_untouched(paths[i], &sn[i]);
    /* only the outputs in the output folder: no temporary left */
    r = bc_sh("ls '%s' | wc -l", out);
    assert_int_equal(atoi(r.out), 4);
    bc_free(&r);
}

/* --input-dir: every .nii/.nii.gz file in name order (others and hidden
 * ones skipped), the output folder created, all outputs as one-scan runs;
 * exit 0 when every case worked. */
static void test_input_dir(void **state)
{
    (void)state;
    char in[600], out[600];
    snprintf(in, sizeof in, "%s", test_tmp_path("dir_in"));
    snprintf(out, sizeof out, "%s", test_tmp_path("dir_out"));
    bc_fresh_dir(in);
    BcRun r = bc_sh("rm -rf '%s' && echo notes >'%s/README.txt' && "
                    "echo x >'%s/.hidden.nii.gz'",
                    out, in, in);
    bc_free(&r);
    const char *names[3] = {"c.nii.gz", "a.nii", "b.nii.gz"};
    for (int i = 0; i < 3; i++)
        make_scan(in, names[i], i + 1);
    r = bc_sh("%s --threads 2 -m %s --input-dir '%s' -o '%s'",
              bc_segment_bin(), bc_model(), in, out);
    fprintf(stderr, "input-dir: exit %d, stderr: %s\nstdout:\n%s", r.status,
            r.err, r.out);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.err_lines, 0);
    char *a = strstr(r.out, "[1/3] "), *b = strstr(r.out, "[2/3] "),
         *c = strstr(r.out, "[3/3] ");
    assert_true(a && b && c);
    /* name order: a.nii, b.nii.gz, c.nii.gz */
    assert_non_null(strstr(a, "/a.nii ->"));
    assert_non_null(strstr(b, "/b.nii.gz ->"));
    assert_non_null(strstr(c, "/c.nii.gz ->"));
    assert_non_null(strstr(r.out, "segmented 3 of 3 cases in "));
    bc_free(&r);
    for (int i = 0; i < 3; i++) {
        char scan[1024], o[1024];
        snprintf(scan, sizeof scan, "%s/%s", in, names[i]);
        snprintf(o, sizeof o, "%s/%c_seg.nii.gz", out, names[i][0]);
        bc_assert_same_as_single(scan, o);
    }
}

/* No clobbering per case: an existing output fails that case alone (one
 * line) and keeps its bytes; --force replaces it and exits 0. */
static void test_no_clobber_per_case(void **state)
{
    (void)state;
    char in[600], out[600], kept[1024], p[3][1024];
    snprintf(in, sizeof in, "%s", test_tmp_path("clob_in"));
    snprintf(out, sizeof out, "%s", test_tmp_path("clob_out"));
    bc_fresh_dir(in);
    bc_fresh_dir(out);
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "s%d.nii.gz", i);
        make_scan(in, name, i);
        snprintf(p[i], sizeof p[i], "%s/%s", in, name);
    }
    snprintf(kept, sizeof kept, "%s/s1_seg.nii.gz", out);
    assert_int_equal(sl_write_file_atomic(kept, "keep me\n", 8, 1), 0);
    BcRun r = bc_sh("%s -q -m %s -o '%s' '%s' '%s' '%s'", bc_segment_bin(),
                    bc_model(), out, p[0], p[1], p[2]);
    fprintf(stderr, "no clobber: exit %d: %s\n", r.status, r.err_first);
    assert_int_equal(r.status, 1);
    assert_int_equal(r.err_lines, 1);
    assert_non_null(strstr(r.err_first, "case 2/3"));
    assert_non_null(strstr(r.err_first, "--force"));
    assert_string_equal(r.out, ""); /* -q: no per-case lines, no summary */
    bc_free(&r);
    char *c = slurp_text(kept);
    assert_string_equal(c, "keep me\n");
    free(c);
    char o0[1024], o2[1024];
    snprintf(o0, sizeof o0, "%s/s0_seg.nii.gz", out);
    snprintf(o2, sizeof o2, "%s/s2_seg.nii.gz", out);
    bc_assert_same_as_single(p[0], o0);
    bc_assert_same_as_single(p[2], o2);
    r = bc_sh("%s -q --force -m %s -o '%s' '%s' '%s' '%s'", bc_segment_bin(),
              bc_model(), out, p[0], p[1], p[2]);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.err_lines, 0);
    bc_free(&r);
    bc_assert_same_as_single(p[1], kept);
}

/* Several scans without -o: outputs beside each scan, as before; one
 * scan prints the unchanged "scan -> output" line. */
static void test_beside_each_scan(void **state)
{
    (void)state;
    char in[600], s0[1024], s1[1024];
    snprintf(in, sizeof in, "%s", test_tmp_path("beside"));
    bc_fresh_dir(in);
    make_scan(in, "x.nii.gz", 0);
    make_scan(in, "y.nii.gz", 2);
    snprintf(s0, sizeof s0, "%s/x.nii.gz", in);
    snprintf(s1, sizeof s1, "%s/y.nii.gz", in);
    BcRun r = bc_sh("%s -m %s '%s'", bc_segment_bin(), bc_model(), s0);
    assert_int_equal(r.status, 0);
    char want[2200];
    snprintf(want, sizeof want, "%s -> %s/x_seg.nii.gz\n", s0, in);
    assert_string_equal(r.out, want);
    bc_free(&r);
    r = bc_sh("%s -m %s --force '%s' '%s'", bc_segment_bin(), bc_model(), s0,
              s1);
    assert_int_equal(r.status, 0);
    assert_int_equal(bc_count_lines(r.out, "["), 2);
    bc_free(&r);
    char o[1024];
    snprintf(o, sizeof o, "%s/y_seg.nii.gz", in);
    bc_assert_same_as_single(s1, o);
}

/* Refused before any case runs: exit 2 (1 for an unreadable folder),
 * one line, nothing written. */
static void test_refusals(void **state)
{
    (void)state;
    char in[600], out[600], other[600], empty[600];
    snprintf(in, sizeof in, "%s", test_tmp_path("ref_in"));
    snprintf(out, sizeof out, "%s", test_tmp_path("ref_out"));
    snprintf(other, sizeof other, "%s", test_tmp_path("ref_other"));
    snprintf(empty, sizeof empty, "%s", test_tmp_path("ref_empty"));
    bc_fresh_dir(in);
    bc_fresh_dir(other);
    bc_fresh_dir(empty);
    BcRun r = bc_sh("rm -rf '%s'", out);
    bc_free(&r);
    make_scan(in, "a.nii.gz", 0);
    make_scan(other, "a.nii.gz", 1);
    struct {
        const char *what;
        char args[4000];
        int status;
    } cases[7];
    int n = 0;
    cases[n].what = "--input-dir without -o";
    snprintf(cases[n].args, sizeof cases[n].args, "--input-dir '%s'", in);
    cases[n++].status = 2;
    cases[n].what = "-o is the input folder";
    snprintf(cases[n].args, sizeof cases[n].args, "--input-dir '%s' -o '%s'",
             in, in);
    cases[n++].status = 2;
    cases[n].what = "two scans with one output name";
    snprintf(cases[n].args, sizeof cases[n].args,
             "-o '%s' '%s/a.nii.gz' '%s/a.nii.gz'", out, in, other);
    cases[n++].status = 2;
    cases[n].what = "-o FILE with two scans";
    snprintf(cases[n].args, sizeof cases[n].args,
             "-o '%s/x.nii.gz' '%s/a.nii.gz' '%s/a.nii.gz'", out, in, other);
    cases[n++].status = 2;
    cases[n].what = "--probabilities with two scans";
    snprintf(cases[n].args, sizeof cases[n].args,
             "--probabilities '%s/p.nii.gz' -o '%s' '%s/a.nii.gz' "
             "'%s/a.nii.gz'",
             in, out, in, other);
    cases[n++].status = 2;
    cases[n].what = "an input folder without scans";
    snprintf(cases[n].args, sizeof cases[n].args, "--input-dir '%s' -o '%s'",
             empty, out);
    cases[n++].status = 2;
    cases[n].what = "a missing input folder";
    snprintf(cases[n].args, sizeof cases[n].args,
             "--input-dir '%s/none' -o '%s'", in, out);
    cases[n++].status = 1;
    for (int i = 0; i < n; i++) {
        r = bc_sh("%s -m %s %s", bc_segment_bin(), bc_model(), cases[i].args);
        fprintf(stderr, "%s: exit %d: %s\n", cases[i].what, r.status,
                r.err_first);
        assert_int_equal(r.status, cases[i].status);
        assert_int_equal(r.err_lines, 1);
        assert_string_equal(r.out, "");
        bc_free(&r);
        assert_false(sl_file_exists(out));
        r = bc_sh("ls '%s' | wc -l", in);
        assert_int_equal(atoi(r.out), 1);
        bc_free(&r);
    }
}

/* One Segmenter for all cases: executors are made once per input shape,
 * so three cases of one size create as many as one case. */
static void test_executors_reused(void **state)
{
    (void)state;
    char in[600], out[600];
    snprintf(in, sizeof in, "%s", test_tmp_path("reuse_in"));
    snprintf(out, sizeof out, "%s", test_tmp_path("reuse_out"));
    bc_fresh_dir(in);
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "r%d.nii.gz", i);
        /* i * 3: always size 0, datatypes differ */
        make_scan(in, name, i * 3);
    }
    Graph g;
    graph_init(&g);
    assert_int_equal(sslim_read(bc_model(), &g), 0);
    int made[2];
    for (int t = 0; t < 2; t++) {
        BcRun r = bc_sh("rm -rf '%s'", out);
        bc_free(&r);
        char one[1024];
        snprintf(one, sizeof one, "%s/r0.nii.gz", in);
        char *scans[1] = {one}, outdir[700];
        /* one case: the trailing '/' makes -o a folder */
        snprintf(outdir, sizeof outdir, "%s/", out);
        SegBatch b;
        assert_int_equal(t == 0
                             ? segbatch_plan(&b, scans, 1, NULL, outdir, NULL)
                             : segbatch_plan(&b, NULL, 0, in, out, NULL),
                         0);
        assert_int_equal(b.n, t == 0 ? 1 : 3);
        SegBatchOptions o = {.quiet = 1, .seg = {.n_threads = 1}};
        SegBatchResult res;
        assert_int_equal(segbatch_run(&b, &g, &o, &res), 0);
        assert_int_equal(res.n_ok, b.n);
        assert_int_equal(res.n_failed, 0);
        made[t] = res.n_executors;
        segbatch_free(&b);
    }
    fprintf(stderr, "executors: 1 case %d, 3 cases %d\n", made[0], made[1]);
    assert_true(made[0] >= 1);
    assert_int_equal(made[1], made[0]);
    graph_free(&g);
}

/* Lay out what the README's backlog examples expect in `dir`: scans/
 * with four good scans and a corrupt one, model.sslim, no out/. */
static void backlog(const char *dir, char scans[5][1024])
{
    char sd[700];
    bc_fresh_dir(dir);
    snprintf(sd, sizeof sd, "%s/scans", dir);
    bc_fresh_dir(sd);
    for (int i = 0; i < 5; i++) {
        char name[32];
        snprintf(name, sizeof name, "case%d.nii.gz", i);
        make_scan(sd, name, i);
        snprintf(scans[i], sizeof scans[i], "%s/%s", sd, name);
    }
    assert_int_equal(phantom_truncate(scans[3], scans[3], 400), 0);
    BcRun r = bc_sh("cp %s '%s/model.sslim'", bc_model(), dir);
    assert_int_equal(r.status, 0);
    bc_free(&r);
}

static void check_backlog(const char *dir, char scans[5][1024])
{
    for (int i = 0; i < 5; i++) {
        char o[1024];
        snprintf(o, sizeof o, "%s/out/case%d_seg.nii.gz", dir, i);
        if (i == 3)
            assert_false(sl_file_exists(o));
        else
            bc_assert_same_as_single(scans[i], o);
    }
}

/* The README's GNU parallel line, verbatim, in a folder laid out as it
 * assumes, with segment on PATH: every good case written as a one-scan
 * run would, the corrupt one reported, a non-zero exit. */
static void test_readme_gnu_parallel(void **state)
{
    (void)state;
    char dir[600], scans[5][1024];
    snprintf(dir, sizeof dir, "%s", test_tmp_path("parallel"));
    backlog(dir, scans);
    char *line = bc_readme_line("| parallel ");
    BcRun r = bc_sh("cd '%s' && PATH='%s':\"$PATH\" && %s", dir, bc_bin_dir(),
                    line);
    fprintf(stderr, "README line: %s\nexit %d, stderr:\n%s", line, r.status,
            r.err);
    assert_int_not_equal(r.status, 0);
    assert_true(r.status > 0);
    assert_int_equal(r.err_lines, 1);
    assert_non_null(strstr(r.err_first, "case3.nii.gz"));
    bc_free(&r);
    free(line);
    check_backlog(dir, scans);
}

/* tools/segment_array.sh as Slurm runs it: one process per array task
 * (ids 3..5 of an array 3-5, as `--array=3-5` numbers them), each its
 * share; together every good case once, the task holding the corrupt
 * case fails, the others succeed. */
static void test_slurm_array_script(void **state)
{
    (void)state;
    char dir[600], scans[5][1024], script[PATH_MAX + 300];
    snprintf(dir, sizeof dir, "%s", test_tmp_path("slurm"));
    backlog(dir, scans);
    bc_abs_path("tools/segment_array.sh", script, sizeof script);
    int failed = 0;
    for (int task = 3; task <= 5; task++) {
        BcRun r =
            bc_sh("cd '%s' && PATH='%s':\"$PATH\" SLURM_ARRAY_TASK_ID=%d "
                  "SLURM_ARRAY_TASK_MIN=3 SLURM_ARRAY_TASK_COUNT=3 "
                  "SLURM_CPUS_PER_TASK=1 sh '%s' scans out model.sslim",
                  dir, bc_bin_dir(), task, script);
        fprintf(stderr, "task %d: exit %d, %d stderr line(s): %s\n", task,
                r.status, r.err_lines, r.err_first);
        if (r.status) {
            failed++;
            assert_non_null(strstr(r.err, "case3.nii.gz"));
        }
        bc_free(&r);
    }
    assert_int_equal(failed, 1);
    check_backlog(dir, scans);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corrupt_case_in_the_middle),
        cmocka_unit_test(test_input_dir),
        cmocka_unit_test(test_no_clobber_per_case),
        cmocka_unit_test(test_beside_each_scan),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_executors_reused),
        cmocka_unit_test(test_readme_gnu_parallel),
        cmocka_unit_test(test_slurm_array_script),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
