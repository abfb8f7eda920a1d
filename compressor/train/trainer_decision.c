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
#include <string.h>

#include "compressor/train/decision.h"
#include "compressor/train/trainer_internal.h"
#include "runtime/common.h"
#include "runtime/segment.h"

/* The margins of the validation cases as t->g segments them, into h
 * (zeroed first): its Dice at index DECISION_HALF is the model's own. */
static int val_margins(Trainer *t, DecisionHist *h)
{
    SegmentOptions so;
    memset(&so, 0, sizeof so);
    so.n_threads = t->cfg.threads;
    memset(h, 0, sizeof *h);
    Segmenter *sg = NULL;
    float *pt = NULL;
    int rc = segmenter_create(t->g, &so, &sg);
    for (int k = 0; !rc && k < t->split.n_val; k++) {
        const DataCase *c = &t->ds->cases[t->split.val[k]];
        const int64_t nv = c->S[0] * c->S[1] * c->S[2];
        sl_free(pt);
        if (!(rc = trainer_val_case_probs(t, sg, t->split.val[k], &pt)))
            decision_add(h, pt, 1, nv, c->label, 1);
    }
    sl_free(pt);
    segmenter_free(sg);
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
    int rc = val_margins(t, h);
    if (rc) goto done;
    const int i = decision_best(h);
    r->done = 1;
    r->dice_before = decision_dice(h, DECISION_HALF);
    r->predicted = decision_dice(h, i);
    r->dice_after = r->dice_before;
    if (i == DECISION_HALF) goto done;
    const float b0 = *bias;
    r->offset = (i - DECISION_HALF) * DECISION_STEP;
    *bias = (float)((double)b0 - r->offset);
    if ((rc = val_margins(t, h))) goto done;
    r->dice_after = decision_dice(h, DECISION_HALF);
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
