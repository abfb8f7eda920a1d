/* Class biases of the decision rule (see decision.h). */
#include <math.h>
#include <string.h>

#include "compressor/train/decision.h"
#include "runtime/common.h"

/* Bins of the margin m: bin 0 holds m <= -RANGE, bin BINS - 1 m > RANGE,
 * and bin j in between (j - HALF - 1) * STEP < m <= (j - HALF) * STEP,
 * so threshold index i (d = (i - HALF) * STEP, 0 <= i <= 2 * HALF) gives
 * class c exactly the bins above i. */
#define BINS (2 * DECISION_HALF + 2)

static int margin_bin(double m)
{
    if (isnan(m)) return 0; /* never the class, as argmax would say */
    double c = ceil(m / DECISION_STEP);
    if (c <= -DECISION_HALF) return 0;
    if (c > DECISION_HALF) return BINS - 1;
    return (int)c + DECISION_HALF;
}

/* argmax_k (z[k] + b[k]) skipping class skip (-1: none), ties to the
 * lower class; b NULL: all 0. */
static int best_class(const float *z, const double *b, int K, int skip)
{
    int best = -1;
    double bv = 0;
    for (int k = 0; k < K; k++) {
        if (k == skip) continue;
        double v = (double)z[k] + (b ? b[k] : 0.0);
        if (best < 0 || v > bv) {
            best = k;
            bv = v;
        }
    }
    return best;
}

static void count(int64_t *tp, int64_t *fp, int64_t *fn, int y, int p)
{
    if (p == y)
        tp[y]++;
    else {
        fp[p]++;
        fn[y]++;
    }
}

int decision_set_init(DecisionSet *s, int K)
{
    memset(s, 0, sizeof *s);
    if (K < 2 || K > DECISION_MAX_CLASSES) {
        sl_error("decision rule: %d classes (2 to %d)", K,
                 DECISION_MAX_CLASSES);
        return ERR_ARG;
    }
    s->K = K;
    s->tp = sl_calloc((size_t)3 * K, sizeof *s->tp);
    if (!s->tp) {
        sl_error("out of memory for the decision rule's counts");
        return ERR_NOMEM;
    }
    s->fp = s->tp + K;
    s->fn = s->fp + K;
    return 0;
}

void decision_set_free(DecisionSet *s)
{
    sl_free(s->tp);
    sl_free(s->z);
    sl_free(s->y);
    memset(s, 0, sizeof *s);
}

static int grow(DecisionSet *s)
{
    int64_t cap = s->cap ? 2 * s->cap : 4096;
    float *z = sl_realloc(s->z, (size_t)cap * s->K * sizeof *z);
    if (z) s->z = z;
    uint8_t *y = z ? sl_realloc(s->y, (size_t)cap) : NULL;
    if (y) s->y = y;
    if (!z || !y) {
        sl_error("out of memory keeping voxels for the decision rule");
        return ERR_NOMEM;
    }
    s->cap = cap;
    return 0;
}

int decision_add(DecisionSet *s, const float *x, int64_t B, int64_t n,
                 const uint8_t *labels, int probs)
{
    const int K = s->K;
    float zv[DECISION_MAX_CLASSES];
    for (int64_t b = 0; b < B; b++)
        for (int64_t v = 0; v < n; v++) {
            const int y = labels[b * n + v];
            if (y >= K) continue;
            const float *xp = x + b * K * n + v;
            for (int k = 0; k < K; k++)
                zv[k] = probs ? (float)log((double)xp[k * n]) : xp[k * n];
            const int p = best_class(zv, NULL, K, -1);
            const int q = best_class(zv, NULL, K, p);
            /* Biases within +-RANGE (b_0 = 0) differ by at most 2 RANGE:
             * a larger lead (or a NaN) cannot be overturned. */
            if (!((double)zv[p] - (double)zv[q] <= 2 * DECISION_RANGE)) {
                count(s->tp, s->fp, s->fn, y, p);
                continue;
            }
            if (s->n == s->cap && grow(s)) return ERR_NOMEM;
            memcpy(s->z + s->n * K, zv, (size_t)K * sizeof *zv);
            s->y[s->n++] = (uint8_t)y;
        }
    return 0;
}

void decision_confusion(const DecisionSet *s, const double *b, int64_t *tp,
                        int64_t *fp, int64_t *fn)
{
    const int K = s->K;
    memcpy(tp, s->tp, (size_t)K * sizeof *tp);
    memcpy(fp, s->fp, (size_t)K * sizeof *fp);
    memcpy(fn, s->fn, (size_t)K * sizeof *fn);
    for (int64_t v = 0; v < s->n; v++)
        count(tp, fp, fn, s->y[v], best_class(s->z + v * K, b, K, -1));
}

int decision_dice(const DecisionSet *s, const double *b, double *dice)
{
    const int K = s->K;
    int64_t *cnt = sl_calloc((size_t)3 * K, sizeof *cnt);
    if (!cnt) {
        sl_error("out of memory tuning the decision rule");
        return ERR_NOMEM;
    }
    decision_confusion(s, b, cnt, cnt + K, cnt + 2 * K);
    *dice = decision_mean_dice(cnt, cnt + K, cnt + 2 * K, K);
    sl_free(cnt);
    return 0;
}

double decision_mean_dice(const int64_t *tp, const int64_t *fp,
                          const int64_t *fn, int K)
{
    double sum = 0;
    int n = 0;
    for (int k = 1; k < K; k++) {
        int64_t den = 2 * tp[k] + fp[k] + fn[k];
        if (den) {
            sum += 2.0 * (double)tp[k] / (double)den;
            n++;
        }
    }
    return n ? sum / n : (double)NAN;
}

/* Per-bin counts of one class c's sweep (decision.h): the voxels of bin j
 * take c when the threshold index is below j, else their rival r. */
typedef struct {
    int64_t *ct, *cf; /* [BINS]: labelled c, or not */
    int64_t *rt, *rf; /* [K][BINS]: rival r, labelled r or not */
    int64_t *tp, *fp, *fn;
    double *dice; /* [2 HALF + 1] mean Dice of each threshold index */
} Sweep;

/* The threshold index of the best mean Dice for class c, the others at
 * b; i0 is c's current index (the first candidate, and the nearest wins
 * among equals, the lower index first). */
static int sweep_class(const DecisionSet *s, const double *b, int c, int i0,
                       Sweep *w)
{
    const int K = s->K;
    memset(w->ct, 0, (size_t)BINS * sizeof *w->ct);
    memset(w->cf, 0, (size_t)BINS * sizeof *w->cf);
    memset(w->rt, 0, (size_t)K * BINS * sizeof *w->rt);
    memset(w->rf, 0, (size_t)K * BINS * sizeof *w->rf);
    memcpy(w->tp, s->tp, (size_t)K * sizeof *w->tp);
    memcpy(w->fp, s->fp, (size_t)K * sizeof *w->fp);
    memcpy(w->fn, s->fn, (size_t)K * sizeof *w->fn);
    /* every kept voxel at its rival first */
    for (int64_t v = 0; v < s->n; v++) {
        const float *z = s->z + v * K;
        const int y = s->y[v], r = best_class(z, b, K, c);
        const int j =
            margin_bin((double)z[c] - ((double)z[r] + b[r]));
        if (y == c)
            w->ct[j]++;
        else
            w->cf[j]++;
        if (y == r)
            w->rt[r * BINS + j]++;
        else
            w->rf[r * BINS + j]++;
        count(w->tp, w->fp, w->fn, y, r);
    }
    /* then bins move to c from the top: after bin j, index i = j - 1 */
    for (int j = BINS - 1; j >= 1; j--) {
        for (int r = 0; r < K; r++) {
            const int64_t t = w->rt[r * BINS + j], f = w->rf[r * BINS + j];
            w->tp[r] -= t;
            w->fn[r] += t;
            w->fp[r] -= f;
        }
        w->tp[c] += w->ct[j];
        w->fn[c] -= w->ct[j];
        w->fp[c] += w->cf[j];
        w->dice[j - 1] = decision_mean_dice(w->tp, w->fp, w->fn, K);
    }
    int best = i0;
    double bd = w->dice[i0];
    for (int k = 1; k <= 2 * DECISION_HALF; k++)
        for (int sg = -1; sg <= 1; sg += 2) {
            const int i = i0 + sg * k;
            if (i < 0 || i > 2 * DECISION_HALF) continue;
            const double d = w->dice[i];
            if (d > bd || (isnan(bd) && !isnan(d))) {
                bd = d;
                best = i;
            }
        }
    return best;
}

int decision_tune(const DecisionSet *s, double *b, double *dice)
{
    const int K = s->K;
    int rc = 0;
    int *idx = sl_calloc((size_t)K, sizeof *idx);
    Sweep w;
    w.ct = sl_calloc((size_t)(2 + 2 * K) * BINS + 3 * K, sizeof *w.ct);
    w.dice = sl_calloc(2 * DECISION_HALF + 1, sizeof *w.dice);
    if (!idx || !w.ct || !w.dice) {
        sl_error("out of memory tuning the decision rule");
        rc = ERR_NOMEM;
        goto done;
    }
    w.cf = w.ct + BINS;
    w.rt = w.cf + BINS;
    w.rf = w.rt + (size_t)K * BINS;
    w.tp = w.rf + (size_t)K * BINS;
    w.fp = w.tp + K;
    w.fn = w.fp + K;
    for (int k = 0; k < K; k++) {
        b[k] = 0;
        idx[k] = DECISION_HALF;
    }
    for (int round = 0; round < DECISION_ROUNDS; round++) {
        int moved = 0;
        for (int c = 1; c < K; c++) {
            const int i = sweep_class(s, b, c, idx[c], &w);
            if (i == idx[c]) continue;
            idx[c] = i;
            b[c] = (DECISION_HALF - i) * DECISION_STEP; /* b_c = -d */
            moved = 1;
        }
        /* two classes: class 1's rival is always 0, one round is all */
        if (!moved || K == 2) break;
    }
    if (dice) rc = decision_dice(s, b, dice);
done:
    sl_free(idx);
    sl_free(w.ct);
    sl_free(w.dice);
    return rc;
}

int decision_logit_conv(const Graph *g, int K)
{
    if (g->n_outputs < 1) return -1;
    int pn = g->values[g->outputs[0]].producer;
    if (pn < 0) return -1;
    const Node *n = &g->nodes[pn];
    if (n->op == OP_SOFTMAX) {
        if (n->p.softmax.axis != 1 || n->p.softmax.flatten) return -1;
        pn = g->values[n->in[0]].producer;
        if (pn < 0) return -1;
        n = &g->nodes[pn];
    }
    if (n->op != OP_CONV && n->op != OP_CONV_TRANSPOSE) return -1;
    if (n->n_in < 3) return -1;
    const Value *b = &g->values[n->in[2]];
    if (!b->data || b->shape.ndim != 1 || b->shape.d[0] != K) return -1;
    return pn;
}

float *decision_bias(Graph *g, int K)
{
    int pn = decision_logit_conv(g, K);
    return pn < 0 ? NULL : g->values[g->nodes[pn].in[2]].data;
}
