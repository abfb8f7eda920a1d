/* Soft-target loss of --distill (compressor/train/loss_soft.h):
 *   - against PyTorch (values computed once with torch float64 from the
 *     closed-form inputs below: x_i = 2 sin(0.37 i + 0.1), q = softmax
 *     over K of 3 cos(0.11 i^2 + 0.3)), batch Dice and per-sample Dice;
 *   - gradient against central finite differences of the loss value, from
 *     logits and from probabilities, both Dice modes;
 *   - one-hot targets give exactly loss_ce_dice (value and gradient);
 *   - bad shape refused; allocation failure reported.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compressor/train/loss.h"
#include "compressor/train/loss_soft.h"
#include "runtime/common.h"
#include "tests/testutil.h"

#define B 2
#define K 3
#define H 4
#define W 5
#define N (B * K * H * W)

static Shape shape4(void)
{
    Shape s;
    memset(&s, 0, sizeof s);
    s.ndim = 4;
    s.d[0] = B;
    s.d[1] = K;
    s.d[2] = H;
    s.d[3] = W;
    return s;
}

static void inputs(float *x, float *q)
{
    for (int i = 0; i < N; i++) {
        x[i] = (float)(2.0 * sin(0.37 * i + 0.1));
        q[i] = (float)(3.0 * cos(0.11 * i * i + 0.3));
    }
    /* softmax over K per voxel, in double */
    const int S = H * W;
    for (int b = 0; b < B; b++)
        for (int s = 0; s < S; s++) {
            double m = -1e30, sum = 0, e[K];
            for (int k = 0; k < K; k++)
                if ((double)q[(b * K + k) * S + s] > m)
                    m = (double)q[(b * K + k) * S + s];
            for (int k = 0; k < K; k++)
                sum += e[k] = exp((double)q[(b * K + k) * S + s] - m);
            for (int k = 0; k < K; k++)
                q[(b * K + k) * S + s] = (float)(e[k] / sum);
        }
}

static void test_vs_torch(void **state)
{
    (void)state;
    float x[N], q[N], dx[N];
    inputs(x, q);
    Shape s = shape4();
    static const int idx[6] = {0, 7, 33, 59, 101, 119};
    static const double want_loss[2] = {2.159528244219, 2.158339611670};
    static const double want_g[2][6] = {
        {-5.310722708231e-03, 2.051011758222e-03, -6.417983771489e-03,
         -2.454088585368e-02, 1.900179822914e-02, -9.412757036459e-03},
        {-5.295583711217e-03, 2.105740918628e-03, -6.267117638401e-03,
         -2.456557143469e-02, 1.948750318902e-02, -9.359940075608e-03}};
    for (int m = 0; m < 2; m++) {
        LossOptions o;
        loss_options_default(&o, 2);
        o.batch_dice = m == 0;
        LossValue v = {0, 0, 0};
        memset(dx, 0, sizeof dx);
        assert_int_equal(loss_soft_ce_dice(&v, dx, x, &s, q, &o, 1.0f), 0);
        /* inputs rounded to float (~6e-8 relative) move the loss by
         * ~1e-7: 1e-5 relative is far below any formula error (a missing
         * term or wrong normalisation changes it by > 1e-2) */
        assert_true(fabs(v.total - want_loss[m]) < 1e-5 * want_loss[m]);
        for (int j = 0; j < 6; j++)
            assert_true(fabs((double)dx[idx[j]] - want_g[m][j]) <
                        1e-5 * fabs(want_g[m][j]) + 1e-8);
    }
}

/* loss at x (double-accumulated value only) */
static double value_at(const float *x, const float *q, const Shape *s,
                       const LossOptions *o)
{
    LossValue v = {0, 0, 0};
    assert_int_equal(loss_soft_ce_dice(&v, NULL, x, s, q, o, 1.0f), 0);
    return v.total;
}

static void test_finite_differences(void **state)
{
    (void)state;
    float x[N], q[N], dx[N];
    Shape s = shape4();
    for (int mode = 0; mode < 4; mode++) {
        LossOptions o;
        loss_options_default(&o, 2);
        o.batch_dice = mode & 1;
        o.from_logits = !(mode & 2);
        inputs(x, q);
        if (!o.from_logits) /* probabilities in [0.3, 0.7] */
            for (int i = 0; i < N; i++)
                x[i] = 0.5f + 0.2f * sinf(0.37f * (float)i);
        memset(dx, 0, sizeof dx);
        LossValue v = {0, 0, 0};
        assert_int_equal(loss_soft_ce_dice(&v, dx, x, &s, q, &o, 0.5f), 0);
        double worst = 0;
        for (int i = 0; i < N; i++) {
            /* central differences in float inputs: the rounding of
             * x +- h moves the step by ~3e-8 / h relative, and the
             * truncation is h^2/6 times the third derivative: ~1 from
             * logits (h = 1e-2), up to 2 q / p^3 < 75 for -q log p at
             * p >= 0.3 (h = 2e-3): both below 5e-5 */
            const float h = o.from_logits ? 1e-2f : 2e-3f;
            float keep = x[i];
            x[i] = keep + h;
            double up = value_at(x, q, &s, &o);
            x[i] = keep - h;
            double dn = value_at(x, q, &s, &o);
            x[i] = keep;
            double fd = 0.5 * (up - dn) / (2.0 * (double)h);
            double err = fabs(fd - (double)dx[i]);
            if (err > worst) worst = err;
        }
        fprintf(stderr, "mode %d: worst |fd - grad| %.3g\n", mode, worst);
        assert_true(worst < 1e-4);
    }
}

static void test_one_hot_matches_hard_loss(void **state)
{
    (void)state;
    float x[N], q[N], g1[N], g2[N];
    uint8_t lab[B * H * W];
    inputs(x, q);
    const int S = H * W;
    for (int b = 0; b < B; b++)
        for (int s = 0; s < S; s++) {
            int y = (b * 7 + s * 3) % K;
            lab[b * S + s] = (uint8_t)y;
            for (int k = 0; k < K; k++)
                q[(b * K + k) * S + s] = k == y ? 1.0f : 0.0f;
        }
    Shape s = shape4();
    for (int m = 0; m < 2; m++) {
        LossOptions o;
        loss_options_default(&o, 2);
        o.batch_dice = m;
        LossValue a = {0, 0, 0}, c = {0, 0, 0};
        memset(g1, 0, sizeof g1);
        memset(g2, 0, sizeof g2);
        assert_int_equal(loss_soft_ce_dice(&a, g1, x, &s, q, &o, 1.0f), 0);
        assert_int_equal(loss_ce_dice(&c, g2, x, &s, lab, &o, 1.0f), 0);
        /* the same sums in the same order up to the CE form (sum_k q_k
         * (x_k - lse) vs x_y - lse): a few ulps of double */
        assert_true(fabs(a.total - c.total) < 1e-12);
        assert_allclose(g1, g2, N, 1e-7, 1e-6);
    }
}

static void test_refusals(void **state)
{
    (void)state;
    float x[N], q[N];
    inputs(x, q);
    Shape s = shape4();
    s.ndim = 2;
    LossOptions o;
    loss_options_default(&o, 2);
    LossValue v = {0, 0, 0};
    assert_int_equal(loss_soft_ce_dice(&v, NULL, x, &s, q, &o, 1.0f),
                     ERR_ARG);
    s = shape4();
    sl_alloc_fail_after(0);
    int rc = loss_soft_ce_dice(&v, NULL, x, &s, q, &o, 1.0f);
    sl_alloc_fail_after(-1);
    assert_int_equal(rc, ERR_NOMEM);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vs_torch),
        cmocka_unit_test(test_finite_differences),
        cmocka_unit_test(test_one_hot_matches_hard_loss),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
