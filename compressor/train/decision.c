/* Decision threshold of two-class models (see decision.h). */
#include <math.h>

#include "compressor/train/decision.h"
#include "runtime/common.h"

/* Bin of margin m: bin j (1 <= j <= 2 * DECISION_HALF) holds (j - HALF - 1)
 * * STEP < m <= (j - HALF) * STEP, i.e. j = ceil(m / STEP) + HALF. */
static int margin_bin(double m)
{
    if (isnan(m)) return 0; /* never foreground, as argmax would say */
    double c = ceil(m / DECISION_STEP);
    if (c <= -DECISION_HALF) return 0;
    if (c > DECISION_HALF) return DECISION_BINS - 1;
    return (int)c + DECISION_HALF;
}

void decision_add(DecisionHist *h, const float *x, int64_t B, int64_t n,
                  const uint8_t *labels, int probs)
{
    for (int64_t b = 0; b < B; b++) {
        const float *x0 = x + b * 2 * n, *x1 = x0 + n;
        const uint8_t *y = labels + b * n;
        for (int64_t s = 0; s < n; s++) {
            if (y[s] > 1) continue;
            double m = probs ? log((double)x1[s]) - log((double)x0[s])
                             : (double)x1[s] - (double)x0[s];
            h->n[y[s]][margin_bin(m)]++;
        }
    }
}

void decision_counts(const DecisionHist *h, int i, int64_t *tp, int64_t *fp,
                     int64_t *fn, int64_t *tn)
{
    *tp = *fp = *fn = *tn = 0;
    for (int j = 0; j < DECISION_BINS; j++) {
        if (j > i) { /* above the threshold: labelled foreground */
            *tp += h->n[1][j];
            *fp += h->n[0][j];
        } else {
            *fn += h->n[1][j];
            *tn += h->n[0][j];
        }
    }
}

double decision_dice(const DecisionHist *h, int i)
{
    int64_t tp, fp, fn, tn;
    decision_counts(h, i, &tp, &fp, &fn, &tn);
    int64_t den = 2 * tp + fp + fn;
    return den ? 2.0 * (double)tp / (double)den : (double)NAN;
}

int decision_best(const DecisionHist *h)
{
    int best = DECISION_HALF;
    double bd = decision_dice(h, best);
    for (int k = 1; k <= DECISION_HALF; k++)
        for (int s = -1; s <= 1; s += 2) {
            int i = DECISION_HALF + s * k;
            double d = decision_dice(h, i);
            if (d > bd || (isnan(bd) && !isnan(d))) {
                bd = d;
                best = i;
            }
        }
    return best;
}

int decision_logit_conv(const Graph *g)
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
    if (!b->data || b->shape.ndim != 1 || b->shape.d[0] != 2) return -1;
    return pn;
}

float *decision_bias(Graph *g)
{
    int pn = decision_logit_conv(g);
    return pn < 0 ? NULL : g->values[g->nodes[pn].in[2]].data + 1;
}
