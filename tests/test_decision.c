/* Class biases of the decision rule (compressor/train/decision.h), against
 * brute force on synthetic scores:
 *   - the counts of any biases equal those of labelling every voxel by
 *     argmax (z + b) here, although voxels with a large lead are only
 *     counted (the split must not change a count);
 *   - at plain argmax they equal metric_confusion's;
 *   - the tuned biases are on the grid, b[0] = 0, and no single class's
 *     bias can be moved along the grid to a higher mean Dice (the search
 *     is exact per class); with two classes, the best of the whole grid;
 *   - a deliberately over-called class is pulled back (negative bias),
 *     a calibrated model keeps b = 0;
 *   - probabilities give the biases their logits give;
 *   - class counts out of range are refused.
 * Dice values are compared exactly or to 1e-12: both sides sum the same
 * integer counts.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compressor/train/decision.h"
#include "compressor/train/loss.h"
#include "runtime/common.h"
#include "tests/testutil.h"

#define NV 6000

typedef struct {
    int K;
    float *x; /* [K][NV] logits, as a network's output with B = 1 */
    uint8_t *y;
} Scores;

/* Labels 0..K-1 (every 50th voxel 255: not a class, skipped); logits
 * a * onehot(y) + noise + shift[k]; a mix of sure voxels (lead > 6) and
 * doubtful ones. */
static Scores make_scores(int K, const double *shift, double noise)
{
    Scores s;
    TestRng r = {42u + (uint64_t)K};
    s.K = K;
    s.x = malloc((size_t)K * NV * sizeof *s.x);
    s.y = malloc(NV);
    assert_non_null(s.x);
    assert_non_null(s.y);
    for (int v = 0; v < NV; v++) {
        int y = (int)(trng_next(&r) % (uint64_t)K);
        /* background most common, as in scans */
        if (trng_uniform(&r, 0, 1) < 0.4f) y = 0;
        const float a = v % 3 == 0 ? 9.0f : 2.0f;
        s.y[v] = v % 50 == 7 ? 255 : (uint8_t)y;
        for (int k = 0; k < K; k++)
            s.x[k * NV + v] =
                (k == y ? a : 0.0f) + (float)shift[k] +
                (float)noise * trng_uniform(&r, -1.0f, 1.0f);
    }
    return s;
}

static void free_scores(Scores *s)
{
    free(s->x);
    free(s->y);
}

static void fill(DecisionSet *d, const Scores *s, int probs)
{
    assert_int_equal(decision_set_init(d, s->K), 0);
    if (!probs) {
        assert_int_equal(decision_add(d, s->x, 1, NV, s->y, 0), 0);
        return;
    }
    float *p = malloc((size_t)s->K * NV * sizeof *p);
    assert_non_null(p);
    for (int v = 0; v < NV; v++) {
        double m = -INFINITY, sum = 0;
        for (int k = 0; k < s->K; k++)
            m = fmax(m, (double)s->x[k * NV + v]);
        for (int k = 0; k < s->K; k++)
            sum += exp((double)s->x[k * NV + v] - m);
        for (int k = 0; k < s->K; k++)
            p[k * NV + v] = (float)(exp((double)s->x[k * NV + v] - m) / sum);
    }
    assert_int_equal(decision_add(d, p, 1, NV, s->y, 1), 0);
    free(p);
}

/* Mean foreground Dice of labelling every voxel by argmax (x + b), ties to
 * the lower class; the counts into cnt [3K] when not NULL. */
static double brute(const Scores *s, const double *b, int64_t *cnt)
{
    int64_t c[3 * DECISION_MAX_CLASSES];
    const int K = s->K;
    memset(c, 0, sizeof c);
    for (int v = 0; v < NV; v++) {
        const int y = s->y[v];
        if (y >= K) continue;
        int best = 0;
        for (int k = 1; k < K; k++)
            if ((double)s->x[k * NV + v] + b[k] >
                (double)s->x[best * NV + v] + b[best])
                best = k;
        if (best == y)
            c[y]++;
        else {
            c[K + best]++;
            c[2 * K + y]++;
        }
    }
    if (cnt) memcpy(cnt, c, (size_t)3 * K * sizeof *cnt);
    return decision_mean_dice(c, c + K, c + 2 * K, K);
}

static void test_counts(void **state)
{
    (void)state;
    const double shift[4] = {0, 0.3, -0.5, 1.0};
    Scores s = make_scores(4, shift, 2.5);
    DecisionSet d;
    fill(&d, &s, 0);
    /* some voxels only counted, some kept */
    int64_t counted = 0;
    for (int k = 0; k < 4; k++)
        counted += d.tp[k] + d.fn[k];
    assert_true(counted > NV / 10 && d.n > NV / 10);
    int skipped = 0;
    for (int v = 0; v < NV; v++)
        skipped += s.y[v] == 255;
    assert_int_equal(counted + d.n, NV - skipped);
    TestRng r = {7};
    int64_t a[12], e[12];
    for (int t = 0; t < 20; t++) {
        double b[4] = {0};
        for (int k = 1; k < 4; k++)
            b[k] = t ? (double)(int)trng_uniform(&r, -300, 301) *
                           DECISION_STEP
                     : 0.0;
        decision_confusion(&d, b, a, a + 4, a + 8);
        brute(&s, b, e);
        assert_memory_equal(a, e, sizeof a);
    }
    /* plain argmax: metric_confusion's counts, once the voxels that are
     * not a class are left out */
    uint8_t *y = malloc(NV);
    float *x = malloc((size_t)4 * NV * sizeof *x);
    int n = 0;
    for (int v = 0; v < NV; v++) {
        if (s.y[v] == 255) continue;
        for (int k = 0; k < 4; k++)
            x[k * (NV - skipped) + n] = s.x[k * NV + v];
        y[n++] = s.y[v];
    }
    Shape xs = {3, {1, 4, n}};
    memset(e, 0, sizeof e);
    assert_int_equal(metric_confusion(e, e + 4, e + 8, x, &xs, y), 0);
    const double zero[4] = {0};
    decision_confusion(&d, zero, a, a + 4, a + 8);
    assert_memory_equal(a, e, sizeof a);
    free(x);
    free(y);
    decision_set_free(&d);
    free_scores(&s);
}

/* b tuned on s: on the grid, b[0] = 0, and no class better off at any
 * other grid value with the others kept.  Returns the tuned Dice. */
static double check_tuned(const Scores *s, const double *b, double dice)
{
    const int K = s->K;
    assert_true(b[0] == 0);
    assert_true(fabs(brute(s, b, NULL) - dice) < 1e-12);
    for (int c = 1; c < K; c++) {
        const double i = b[c] / DECISION_STEP;
        assert_true(fabs(i - round(i)) < 1e-9);
        assert_true(fabs(b[c]) <= DECISION_RANGE + 1e-9);
        double bb[DECISION_MAX_CLASSES];
        memcpy(bb, b, (size_t)K * sizeof *b);
        for (int j = -DECISION_HALF; j <= DECISION_HALF; j++) {
            bb[c] = j * DECISION_STEP;
            assert_true(brute(s, bb, NULL) <= dice + 1e-12);
        }
    }
    return dice;
}

static void test_tune_multiclass(void **state)
{
    (void)state;
    /* class 3 over-called (its logits 1.2 too high), class 2 under */
    const double shift[4] = {0, 0, -0.6, 1.2};
    Scores s = make_scores(4, shift, 2.5);
    DecisionSet d, dp;
    double b[4], bp[4], dice, dp_dice;
    fill(&d, &s, 0);
    assert_int_equal(decision_tune(&d, b, &dice), 0);
    const double zero[4] = {0};
    const double before = brute(&s, zero, NULL);
    check_tuned(&s, b, dice);
    assert_true(dice > before + 0.01);
    /* class 3 pulled back the most, class 2 pushed up against class 1
     * (whose logits are as they should be) */
    assert_true(b[3] < -0.5 && b[3] < b[1] && b[2] > b[1] + 0.2);
    /* probabilities: log p = z - logsumexp z, the same margins */
    fill(&dp, &s, 1);
    assert_int_equal(decision_tune(&dp, bp, &dp_dice), 0);
    assert_memory_equal(b, bp, sizeof b);
    assert_true(fabs(dp_dice - dice) < 1e-12);
    decision_set_free(&d);
    decision_set_free(&dp);
    free_scores(&s);
    /* calibrated and separable: nothing to gain, b stays 0 */
    const double none[3] = {0, 0, 0};
    s = make_scores(3, none, 0.5);
    fill(&d, &s, 0);
    assert_int_equal(decision_tune(&d, b, &dice), 0);
    assert_true(dice == 1.0);
    for (int k = 0; k < 3; k++)
        assert_true(b[k] == 0);
    decision_set_free(&d);
    free_scores(&s);
}

static void test_tune_two_classes(void **state)
{
    (void)state;
    const double shift[2] = {0, 0.9};
    Scores s = make_scores(2, shift, 2.0);
    DecisionSet d;
    double b[2], dice;
    fill(&d, &s, 0);
    assert_int_equal(decision_tune(&d, b, &dice), 0);
    check_tuned(&s, b, dice);
    /* one bias: the best of the grid, the nearest to 0 among equals */
    double bb[2] = {0, 0}, best = -1;
    int at = 0;
    for (int k = 0; k <= DECISION_HALF; k++)
        for (int sg = -1; sg <= 1; sg += 2) {
            bb[1] = sg * k * DECISION_STEP;
            double v = brute(&s, bb, NULL);
            if (v > best) {
                best = v;
                at = sg * k;
            }
        }
    assert_true(dice == best);
    assert_true(fabs(b[1] - at * DECISION_STEP) < 1e-12);
    assert_true(b[1] < -0.3);
    decision_set_free(&d);
    free_scores(&s);
}

static void test_refusals(void **state)
{
    (void)state;
    DecisionSet d;
    sl_error_reset();
    assert_int_equal(decision_set_init(&d, 1), ERR_ARG);
    sl_error_reset();
    assert_int_equal(decision_set_init(&d, DECISION_MAX_CLASSES + 1),
                     ERR_ARG);
    sl_error_reset();
    /* allocation failure while keeping voxels: reported, not a crash */
    const double shift[3] = {0, 0, 0};
    Scores s = make_scores(3, shift, 3.0);
    assert_int_equal(decision_set_init(&d, 3), 0);
    sl_alloc_fail_after(0);
    int rc = decision_add(&d, s.x, 1, NV, s.y, 0);
    sl_alloc_fail_after(-1);
    assert_int_equal(rc, ERR_NOMEM);
    sl_error_reset();
    decision_set_free(&d);
    free_scores(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts),
        cmocka_unit_test(test_tune_multiclass),
        cmocka_unit_test(test_tune_two_classes),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
