/* The decision threshold of a two-class model, tuned at the end of a run
 * on the validation cases segmented as segment would (decision.h).
 *
 * The margins come from segment's own pipeline (normalisation, 2D slices
 * or the 3D sliding window with Gaussian fusion).  A first version that
 * tuned on 3D tiles stitched by nearest tile chose +1.79 for run D3c
 * where segment's fused probabilities peak near +0.85, and that threshold
 * lowered held-out Dice (0.9734 -> 0.9723).  Fusion averages
 * probabilities, so a shift of the logits is not exactly a shift of the
 * fused margin: the cases are segmented again with the threshold folded
 * in, and it is kept only if that Dice is higher.
 */
#include <math.h>
#include <string.h>

#include "compressor/train/decision.h"
#include "compressor/train/trainer_internal.h"
#include "runtime/common.h"
#include "runtime/segment.h"

/* Count validation case i as sg segments it: tp/fp/fn of its labels
 * into cnt, its margins into h when h is not NULL. */
static int segment_case(Trainer *t, Segmenter *sg, int i, DecisionHist *h,
                        int64_t cnt[3])
{
    const DataCase *c = &t->ds->cases[i];
    const int64_t nv = c->S[0] * c->S[1] * c->S[2];
    float *pt = sl_alloc((size_t)2 * nv * sizeof *pt);
    if (!pt) {
        sl_error("out of memory segmenting validation case '%s'", c->name);
        return ERR_NOMEM;
    }
    int rc = trainer_val_case_probs(t, sg, i, pt);
    for (int64_t o = 0; !rc && o < nv; o++) {
        const int y = c->label[o];
        if (y > 1) continue;
        const int p = pt[nv + o] > pt[o]; /* argmax, ties to background */
        cnt[0] += p && y;
        cnt[1] += p && !y;
        cnt[2] += !p && y;
        if (h)
            decision_count(h, log((double)pt[nv + o]) - log((double)pt[o]),
                           y);
    }
    sl_free(pt);
    return rc;
}

/* Foreground Dice of t->g over the validation cases (margins into h). */
static int val_dice(Trainer *t, DecisionHist *h, double *dice)
{
    SegmentOptions so;
    memset(&so, 0, sizeof so);
    so.n_threads = t->cfg.threads;
    Segmenter *sg = NULL;
    int64_t cnt[3] = {0, 0, 0};
    int rc = segmenter_create(t->g, &so, &sg);
    for (int k = 0; !rc && k < t->split.n_val; k++)
        rc = segment_case(t, sg, t->split.val[k], h, cnt);
    segmenter_free(sg);
    const int64_t den = 2 * cnt[0] + cnt[1] + cnt[2];
    *dice = den ? 2.0 * (double)cnt[0] / (double)den : (double)NAN;
    return rc;
}

int trainer_tune_decision(Trainer *t)
{
    DecisionTune *r = &t->decision;
    memset(r, 0, sizeof *r);
    float *bias = decision_bias(t->g);
    if (t->split.n_val == 0 || t->ds->n_classes != 2 || !bias) return 0;
    DecisionHist *h = sl_calloc(1, sizeof *h);
    if (!h) {
        sl_error("out of memory tuning the decision threshold");
        return ERR_NOMEM;
    }
    int rc = val_dice(t, h, &r->dice_before);
    if (rc) goto done;
    const int i = decision_best(h);
    r->done = 1;
    r->predicted = decision_dice(h, i);
    r->dice_after = r->dice_before;
    if (i == DECISION_HALF) goto done;
    const float b0 = *bias;
    r->offset = (i - DECISION_HALF) * DECISION_STEP;
    *bias = (float)((double)b0 - r->offset);
    if ((rc = val_dice(t, NULL, &r->dice_after))) goto done;
    if (!(r->dice_after > r->dice_before)) {
        /* fusion undid the gain: keep the model as trained */
        *bias = b0;
        r->rejected = r->offset;
        r->offset = 0;
    }
done:
    sl_free(h);
    return rc;
}
