/* Shared helpers of the batch tests (see batchcheck.h). */
#include "batchcheck.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/common.h"

BcRun bc_sh(const char *fmt, ...)
{
    BcRun r;
    memset(&r, 0, sizeof r);
    char cmd[8192], full[10000], outf[600], errf[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    snprintf(outf, sizeof outf, "%s", test_tmp_path("bc_stdout.txt"));
    snprintf(errf, sizeof errf, "%s", test_tmp_path("bc_stderr.txt"));
    snprintf(full, sizeof full, "( %s ) >%s 2>%s", cmd, outf, errf);
    int st = system(full);
    r.status = st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
    r.out = slurp_text(outf);
    r.err = slurp_text(errf);
    assert_non_null(r.out);
    assert_non_null(r.err);
    for (char *p = r.err; *p;) {
        size_t len = strcspn(p, "\n");
        if (strspn(p, " \t\r") < len && r.err_lines++ == 0)
            snprintf(r.err_first, sizeof r.err_first, "%.*s", (int)len, p);
        p += len;
        if (*p) p++;
    }
    return r;
}

void bc_free(BcRun *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

int bc_count_lines(const char *text, const char *prefix)
{
    int n = 0;
    size_t pl = strlen(prefix);
    for (const char *p = text; *p;) {
        if (!strncmp(p, prefix, pl)) n++;
        p += strcspn(p, "\n");
        if (*p) p++;
    }
    return n;
}

void bc_abs_path(const char *rel, char *buf, size_t len)
{
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof cwd));
    if (rel[0] == '/')
        snprintf(buf, len, "%s", rel);
    else
        snprintf(buf, len, "%s/%s", cwd, rel);
}

const char *bc_segment_bin(void)
{
    static char abs[PATH_MAX + 300];
    if (!abs[0]) {
        char rel[300];
        bc_abs_path(bin_path("segment", rel, sizeof rel), abs, sizeof abs);
    }
    return abs;
}

const char *bc_model(void)
{
    static char path[512];
    if (path[0]) return path;
    char bin[300], onnx[300], want[512];
    snprintf(want, sizeof want, "%s", test_tmp_path("batch.sslim"));
    BcRun r =
        bc_sh("%s --no-finetune %s %s --axis 2 --normalize zscore "
              "--classes background,fg --force >/dev/null",
              bin_path("sauron-compress", bin, sizeof bin),
              fixture_path("torch/e2e2d.onnx", onnx, sizeof onnx), want);
    if (r.status) fprintf(stderr, "sauron-compress: %s\n", r.err_first);
    assert_int_equal(r.status, 0);
    bc_free(&r);
    snprintf(path, sizeof path, "%s", want);
    return path;
}

void bc_fresh_dir(const char *dir)
{
    BcRun r = bc_sh("rm -rf '%s' && mkdir -p '%s'", dir, dir);
    assert_int_equal(r.status, 0);
    bc_free(&r);
}

void bc_assert_same_as_single(const char *scan, const char *out)
{
    char ref[600];
    snprintf(ref, sizeof ref, "%s", test_tmp_path("single_ref.nii.gz"));
    BcRun r = bc_sh("nice -n 19 %s -q --threads 2 -m %s --force -o '%s' '%s'",
                    bc_segment_bin(), bc_model(), ref, scan);
    if (r.status) fprintf(stderr, "one-scan run: %s\n", r.err_first);
    assert_int_equal(r.status, 0);
    bc_free(&r);
    if (!files_equal(out, ref))
        fail_msg("batch output %s differs from the one-scan run on %s", out,
                 scan);
}

char *bc_readme_line(const char *needle)
{
    char *t = slurp_text("README.md");
    assert_non_null(t);
    char *p = strstr(t, needle);
    if (!p) fail_msg("README.md has no line with '%s'", needle);
    char *start = p;
    while (start > t && start[-1] != '\n')
        start--;
    size_t len = strcspn(start, "\n");
    char *line = malloc(len + 1);
    assert_non_null(line);
    memcpy(line, start, len);
    line[len] = '\0';
    free(t);
    return line;
}

const char *bc_bin_dir(void)
{
    static char dir[PATH_MAX + 300];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "%s", bc_segment_bin());
        *strrchr(dir, '/') = '\0';
    }
    return dir;
}
