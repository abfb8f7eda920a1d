/* Checks shared by test_peer and test_torch_segment (see peercheck.h). */
#include "peercheck.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "niftifixture.h"

void peer_write_scan(const char *path, const PeerPhantom *ph, double slope,
                     double inter)
{
    int int16 = slope != 0;
    int64_t dims[8] = {3, ph->nx, ph->ny, ph->nz, 1, 1, 1, 1};
    nifti_image *nim =
        nifti_make_new_nim(dims, int16 ? DT_INT16 : DT_FLOAT32, 1);
    assert_non_null(nim);
    TestRng rng = {ph->seed};
    for (int k = 0, idx = 0; k < ph->nz; k++)
        for (int j = 0; j < ph->ny; j++)
            for (int i = 0; i < ph->nx; i++, idx++) {
                float v = ph->intensity(i, j, k, &rng);
                if (int16)
                    ((int16_t *)nim->data)[idx] =
                        (int16_t)lrint(((double)v - inter) / slope);
                else
                    ((float *)nim->data)[idx] = v;
            }
    if (int16) {
        nim->scl_slope = (float)slope;
        nim->scl_inter = (float)inter;
    }
    nifti_fixture_geometry(nim);
    assert_int_equal(nifti_set_filenames(nim, path, 0, 1), 0);
    nifti_image_write(nim);
    nifti_image_free(nim);
    assert_int_equal(access(path, R_OK), 0);
}

const char *peer_model(void)
{
    static int done;
    static char path[512];
    if (done) return path;
    snprintf(path, sizeof path, "%s",
             test_tmp_path("default_scangrid.sslim"));
    char bin[300], cmd[1500], err[512];
    snprintf(cmd, sizeof cmd,
             "%s --no-finetune --orientation none --spacing none --force %s "
             "'%s' >/dev/null",
             bin_path("sauron-compress", bin, sizeof bin), PEER_MODEL, path);
    int st = run_cmd(cmd, err, sizeof err);
    if (st) fail_msg("sauron-compress --no-finetune: exit %d: %s", st, err);
    done = 1;
    return path;
}

const char *peer_default_onnx(void)
{
    static int done;
    const char *onnx = test_tmp_path("default.onnx");
    if (done) return onnx;
    char bin[300], cmd[1500], err[512];
    const char *model = peer_model();
    snprintf(cmd, sizeof cmd, "%s --no-finetune '%s' '%s' >/dev/null",
             bin_path("sauron-compress", bin, sizeof bin), model, onnx);
    int st = run_cmd(cmd, err, sizeof err);
    if (st) fail_msg("sauron-compress --no-finetune: exit %d: %s", st, err);
    done = 1;
    return onnx;
}

void peer_segment(PeerScan *s, const char *name, const PeerPhantom *ph,
                  double slope, double inter)
{
    char file[64];
    snprintf(file, sizeof file, "%s.nii.gz", name);
    snprintf(s->scan, sizeof s->scan, "%s", test_tmp_path(file));
    snprintf(file, sizeof file, "%s_ours.nii.gz", name);
    snprintf(s->ours, sizeof s->ours, "%s", test_tmp_path(file));
    snprintf(file, sizeof file, "%s_probs.nii.gz", name);
    snprintf(s->probs, sizeof s->probs, "%s", test_tmp_path(file));
    peer_write_scan(s->scan, ph, slope, inter);

    char bin[300], cmd[3000], err[512];
    snprintf(cmd, sizeof cmd,
             "%s -q --threads 1 -m '%s' -o '%s' --probabilities '%s' '%s'",
             bin_path("segment", bin, sizeof bin), peer_model(), s->ours,
             s->probs, s->scan);
    int st = run_cmd(cmd, err, sizeof err);
    if (st) fail_msg("segment on %s: exit %d: %s", s->scan, st, err);
}

int peer_run(const char *cmd, char *err, size_t len, int *lines)
{
    int st = run_cmd(cmd, err, len);
    *lines = 0;
    /* run_cmd keeps the whole stderr there */
    FILE *f = fopen(test_tmp_path("stderr.txt"), "r");
    assert_non_null(f);
    int c;
    while ((c = fgetc(f)) != EOF)
        *lines += c == '\n';
    fclose(f);
    return st;
}

void peer_read_lines(const char *path, char *l1, char *l2, size_t len)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    l1[0] = l2[0] = '\0';
    if (!fgets(l1, (int)len, f)) l1[0] = '\0';
    if (!fgets(l2, (int)len, f)) l2[0] = '\0';
    fclose(f);
}

void peer_parse_check(const char *what, const char *line, long nv,
                      double *agree, long *differ)
{
    long of = -1;
    *agree = -1;
    *differ = -1;
    if (sscanf(line, "agree %lf differ %ld of %ld", agree, differ, &of) != 3)
        fail_msg("%s: no 'agree .. differ .. of ..' line: %s", what, line);
    assert_int_equal(of, nv);
    /* the fraction is printed to 8 places */
    assert_true(fabs(*agree - (double)(nv - *differ) / (double)nv) <= 5e-9);
}

nifti_image *peer_read(const char *path, int data)
{
    nifti_image *nim = nifti_image_read(path, data);
    if (!nim) fail_msg("cannot read %s", path);
    return nim;
}

nifti_image *peer_read_probs(const char *path, long nv)
{
    nifti_image *p = peer_read(path, 1);
    assert_int_equal(p->datatype, DT_FLOAT32);
    assert_int_equal((int64_t)p->nvox, 2 * nv);
    return p;
}

int peer_label_at(const nifti_image *nim, size_t i)
{
    if (nim->datatype == DT_UINT8) return ((const uint8_t *)nim->data)[i];
    if (nim->datatype == DT_INT16) return ((const int16_t *)nim->data)[i];
    fail_msg("label map datatype %d is neither uint8 nor int16",
             nim->datatype);
    return -1;
}

long peer_count_differ(const char *what, const nifti_image *a,
                       const nifti_image *b, const float *probs, long nv,
                       double tie_margin)
{
    long n = 0;
    for (size_t i = 0; i < (size_t)nv; i++) {
        int la = peer_label_at(a, i), lb = peer_label_at(b, i);
        if (la == lb) continue;
        n++;
        double gap = fabs((double)probs[(size_t)nv + i] - (double)probs[i]);
        fprintf(stderr, "%s: voxel %zu: %d vs %d, |p1 - p0| = %.3g\n", what,
                i, la, lb, gap);
        if (gap > tie_margin)
            fail_msg("%s: voxel %zu differs and is no near-tie", what, i);
    }
    return n;
}

long peer_assert_two_classes(const char *what, const nifti_image *map,
                             long nv, long min_voxels)
{
    long n1 = 0;
    for (size_t i = 0; i < (size_t)nv; i++)
        n1 += peer_label_at(map, i) == 1;
    fprintf(stderr, "%s: segment labels %ld of %ld voxels brain\n", what, n1,
            nv);
    assert_true(n1 >= min_voxels);
    assert_true(nv - n1 >= min_voxels);
    return n1;
}

void peer_assert_same_geometry(const nifti_image *in, const nifti_image *o)
{
    assert_int_equal(o->ndim, 3);
    assert_int_equal(o->nx, in->nx);
    assert_int_equal(o->ny, in->ny);
    assert_int_equal(o->nz, in->nz);
    /* Every value comes from the same float32 header fields and is
     * written back as float32, so equality is exact. */
    for (int i = 1; i <= 3; i++)
        assert_true(o->pixdim[i] == in->pixdim[i]);
    assert_int_equal(o->qform_code, in->qform_code);
    assert_int_equal(o->sform_code, in->sform_code);
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) {
            assert_true(o->qto_xyz.m[r][c] == in->qto_xyz.m[r][c]);
            assert_true(o->sto_xyz.m[r][c] == in->sto_xyz.m[r][c]);
        }
}

void peer_assert_one_error(int st, int lines, const char *err,
                           const char *prefix)
{
    fprintf(stderr, "exit %d: %s", st, err);
    assert_int_not_equal(st, 0);
    assert_int_equal(lines, 1);
    assert_true(strncmp(err, prefix, strlen(prefix)) == 0);
}

void peer_check_missing_input(PeerTool tool, const char *prefix)
{
    char args[2500], err[512];
    int lines;
    snprintf(args, sizeof args, "'%s' '%s' '%s'", peer_default_onnx(),
             test_tmp_path("no_such_scan.nii.gz"),
             test_tmp_path("never.nii.gz"));
    int st = tool(args, NULL, err, sizeof err, &lines);
    peer_assert_one_error(st, lines, err, prefix);
    assert_int_not_equal(access(test_tmp_path("never.nii.gz"), F_OK), 0);
}

void peer_check_no_clobber(PeerTool tool, const char *prefix,
                           const PeerPhantom *ph, const char *scan,
                           const char *exists)
{
    peer_write_scan(scan, ph, 0, 0);
    FILE *f = fopen(exists, "w");
    assert_non_null(f);
    fputs("keep", f);
    fclose(f);
    char args[2500], err[512];
    int lines;
    snprintf(args, sizeof args, "'%s' '%s' '%s'", peer_default_onnx(), scan,
             exists);
    int st = tool(args, NULL, err, sizeof err, &lines);
    peer_assert_one_error(st, lines, err, prefix);
    assert_non_null(strstr(err, "--force"));
    char keep[8] = "";
    f = fopen(exists, "r");
    assert_non_null(f);
    assert_non_null(fgets(keep, sizeof keep, f));
    fclose(f);
    assert_string_equal(keep, "keep");
}
