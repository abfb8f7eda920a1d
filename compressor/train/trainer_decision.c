/* The class biases of the decision rule, tuned at the end of a run on the
 * validation cases segmented as segment would (decision.h).
 *
 * The scores come from segment's own pipeline (normalisation, 2D slices
 * or the 3D sliding window with Gaussian fusion).  A first version that
 * tuned on 3D tiles stitched by nearest tile chose a threshold of +1.79
 * for run D3c where segment's fused probabilities peak near +0.85, and
 * that threshold lowered held-out Dice (0.9734 -> 0.9723).  Fusion
 * averages probabilities, so a shift of the logits is not exactly a
 * shift of the fused scores: the cases are segmented again with the
 * biases folded in, and they are kept only if that Dice is higher.
 */
#include <string.h>

#include "compressor/train/decision.h"
#include "compressor/train/trainer_internal.h"
#include "runtime/common.h"
#include "runtime/segment.h"

/* The validation cases as t->g segments them, into *s (initialised
 * here; decision_set_free it, also on error). */
static int val_scores(Trainer *t, DecisionSet *s)
{
    SegmentOptions so;
    memset(&so, 0, sizeof so);
    so.n_threads = t->cfg.threads;
    Segmenter *sg = NULL;
    float *pt = NULL;
    int rc = decision_set_init(s, t->ds->n_classes);
    if (!rc) rc = segmenter_create(t->g, &so, &sg);
    for (int k = 0; !rc && k < t->split.n_val; k++) {
        const DataCase *c = &t->ds->cases[t->split.val[k]];
        const int64_t nv = c->S[0] * c->S[1] * c->S[2];
        sl_free(pt);
        if (!(rc = trainer_val_case_probs(t, sg, t->split.val[k], &pt)))
            rc = decision_add(s, pt, 1, nv, c->label, 1);
    }
    sl_free(pt);
    segmenter_free(sg);
    return rc;
}

int trainer_tune_decision(Trainer *t)
{
    DecisionTune *r = &t->decision;
    const int K = t->ds->n_classes;
    memset(r, 0, sizeof *r);
    float *bias = decision_bias(t->g, K);
    if (t->split.n_val == 0 || !bias) return 0;
    float *trained = NULL;
    DecisionSet s;
    int rc = val_scores(t, &s);
    if (!rc) rc = decision_dice(&s, NULL, &r->dice_before);
    if (!rc) rc = decision_tune(&s, r->bias, &r->predicted);
    if (rc) goto done;
    r->done = 1;
    r->dice_after = r->dice_before;
    int moved = 0;
    for (int k = 0; k < K; k++)
        moved |= r->bias[k] != 0;
    if (!moved) goto done;
    if (!(trained = sl_alloc((size_t)K * sizeof *trained))) {
        sl_error("out of memory tuning the decision rule");
        rc = ERR_NOMEM;
        goto done;
    }
    memcpy(trained, bias, (size_t)K * sizeof *bias);
    for (int k = 0; k < K; k++)
        bias[k] = (float)((double)bias[k] + r->bias[k]);
    decision_set_free(&s);
    if ((rc = val_scores(t, &s)) || (rc = decision_dice(&s, NULL, &r->dice_after)))
        goto done;
    if (r->dice_after > r->dice_before)
        r->folded = 1;
    else /* fusion undid the gain: keep the model as trained */
        memcpy(bias, trained, (size_t)K * sizeof *bias);
done:
    decision_set_free(&s);
    sl_free(trained);
    return rc;
}
