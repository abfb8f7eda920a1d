/* Replays the fuzz corpus and every input that ever crashed a fuzz target
 * (tests/fuzz/corpus/<target>/ and tests/fuzz/crashes/<target>/) through
 * the same entry functions the libFuzzer programs call, in the normal
 * build: a crash fixed once stays fixed, and under `make asan` the whole
 * set runs with ASan, UBSan and the leak check. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/common.h"
#include "tests/fuzz/fuzz_targets.h"
#include "tests/testutil.h"

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Run every regular file of dir through t (sorted by name, so a failure
 * names the same file every time).  Returns the number of files. */
static int replay_dir(const FuzzTarget *t, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            names = realloc(names, (size_t)cap * sizeof *names);
            assert_non_null(names);
        }
        names[n] = strdup(e->d_name);
        assert_non_null(names[n]);
        n++;
    }
    closedir(d);
    if (n) qsort(names, (size_t)n, sizeof *names, cmp_name);
    for (int i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        assert_int_equal(fseek(f, 0, SEEK_END), 0);
        long size = ftell(f);
        assert_true(size >= 0);
        rewind(f);
        uint8_t *buf = malloc((size_t)size + 1);
        assert_non_null(buf);
        assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
        fclose(f);
        /* 0: handled (accepted or refused); anything else is the harness
         * failing, reported with the file so it can be rerun alone. */
        int rc = t->run(buf, (size_t)size);
        if (rc)
            fprintf(stderr, "replay %s: %s returned %d\n", t->name, path, rc);
        assert_int_equal(rc, 0);
        free(buf);
        free(names[i]);
    }
    free(names);
    return n;
}

static void test_replay(void **state)
{
    const FuzzTarget *t = &fuzz_targets[*(int *)*state];
    char dir[256];
    snprintf(dir, sizeof dir, "tests/fuzz/corpus/%s", t->name);
    int n_corpus = replay_dir(t, dir);
    snprintf(dir, sizeof dir, "tests/fuzz/crashes/%s", t->name);
    int n_crashes = replay_dir(t, dir);
    printf("# %s: %d corpus inputs, %d crash inputs replayed\n", t->name,
           n_corpus, n_crashes);
    /* An empty corpus would make this test pass on nothing (a moved
     * folder, a bad checkout). */
    assert_true(n_corpus > 0);
}

int main(void)
{
    sl_error_quiet(1);
    struct CMUnitTest tests[FUZZ_N_TARGETS];
    char names[FUZZ_N_TARGETS][64];
    int index[FUZZ_N_TARGETS];
    for (int i = 0; i < FUZZ_N_TARGETS; i++) {
        index[i] = i;
        snprintf(names[i], sizeof names[i], "replay_%s",
                 fuzz_targets[i].name);
        tests[i] =
            (struct CMUnitTest){names[i], test_replay, NULL, NULL, &index[i]};
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
