/* Training reports: the stderr line per epoch, RUN/epochs.csv and
 * RUN/epochs.jsonl (rewritten from the history each epoch, so a resumed
 * run never repeats or loses a line), RUN/summary.txt.  epochs.csv is
 * also the record of the epochs' wall-clock times, which the checkpoint
 * does not hold (trainer_read_timings). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compressor/data/json.h"
#include "compressor/train/trainer_internal.h"
#include "runtime/common.h"

/* "4.2 s", "45 s", "12 min 05 s", "3 h 07 min": rounded to what a
 * person planning the wait needs. */
static const char *fmt_duration(double s, char *buf, size_t n)
{
    long v = s > 0 ? (long)(s + 0.5) : 0;
    if (s < 9.95)
        snprintf(buf, n, "%.1f s", s > 0 ? s : 0.0);
    else if (v < 120)
        snprintf(buf, n, "%ld s", v);
    else if (v < 7200)
        snprintf(buf, n, "%ld min %02ld s", v / 60, v % 60);
    else
        snprintf(buf, n, "%ld h %02ld min", v / 3600, v / 60 % 60);
    return buf;
}

void trainer_print_estimate(const Trainer *t, int n_epochs, double per_iter,
                            int n_probe, double val_s)
{
    if (t->cfg.quiet) return;
    if (t->cfg.lr_note) fprintf(stderr, "%s\n", t->cfg.lr_note);
    char d[32];
    double total = n_epochs * (t->cfg.iters_per_epoch * per_iter + val_s);
    fprintf(stderr,
            "expected time: %s%s for %d epoch%s (%.3g s per iteration, "
            "median of %d iteration%s, validation %.1f s per epoch%s)\n",
            t->cfg.shrinks ? "at most " : "",
            fmt_duration(total, d, sizeof d), n_epochs,
            n_epochs == 1 ? "" : "s", per_iter, n_probe,
            n_probe == 1 ? "" : "s", val_s,
            t->cfg.shrinks ? "; pruning makes later epochs faster" : "");
}

void trainer_print_epoch(const Trainer *t, const EpochStats *st)
{
    if (t->cfg.quiet) return;
    fprintf(stderr, "epoch %d/%d", st->epoch, t->cfg.epochs);
    if (st->epoch == 0)
        fprintf(stderr, " (imported model)");
    else
        fprintf(stderr, "  lr %.3g  train %.4f", st->lr, st->train_loss);
    fprintf(stderr, "  val %.4f  dice", st->val_loss);
    for (int k = 1; k < st->n_classes; k++)
        fprintf(stderr, " %s %.4f", t->ds->class_names[k], st->val_dice[k]);
    if (st->n_classes > 2 && !isnan(st->val_dice_tuned))
        fprintf(stderr, "  mean %.4f, tuned %.4f", st->val_dice_mean,
                st->val_dice_tuned);
    fprintf(stderr, "  %.1f s", st->seconds);
    if (st->epoch > 0)
        fprintf(stderr, " (%.3f s/step, data wait %.2f s)", st->step_seconds,
                st->data_wait);
    if (st->epoch > 0) {
        /* The pace of the epoch on this line, not the mean: pruning
         * makes each epoch cheaper than the one before. */
        char el[32], eta[32];
        fprintf(stderr, "  elapsed %s  ETA %s",
                fmt_duration(sl_now() - t->run_t0, el, sizeof el),
                fmt_duration(st->seconds * (t->cfg.epochs - st->epoch), eta,
                             sizeof eta));
    }
    fprintf(stderr, "\n");
}

/* CSV-safe: class names come from dataset.json and may hold anything. */
static void csv_name(FILE *f, const char *s)
{
    for (; *s; s++)
        fputc(*s == ',' || *s == '"' || *s == '\n' || *s == '\r' ? '_' : *s,
              f);
}

/* JSON has no NaN: absent values are null. */
static void json_num(FILE *f, double x)
{
    if (isfinite(x))
        fprintf(f, "%.9g", x);
    else
        fprintf(f, "null");
}

/* The time fields keep their fixed number of decimals. */
static void json_fixed(FILE *f, int decimals, double x)
{
    if (isfinite(x))
        fprintf(f, "%.*f", decimals, x);
    else
        fprintf(f, "null");
}

static void csv_num(FILE *f, double x)
{
    if (isfinite(x))
        fprintf(f, "%.9g", x);
    else
        fprintf(f, "nan");
}

static void write_csv(const Trainer *t, FILE *f)
{
    const Dataset *ds = t->ds;
    fprintf(f, "epoch,lr,train_loss,train_extra,val_loss");
    for (int k = 0; k < ds->n_classes; k++) {
        fprintf(f, ",dice_");
        csv_name(f, ds->class_names[k]);
    }
    fprintf(f, ",dice_mean,dice_tuned,seconds,step_seconds,data_wait,flops,"
               "params");
    for (int k = 0; k < t->hooks.n_columns; k++) {
        fputc(',', f);
        csv_name(f, t->hooks.column_name(t->hooks.ctx, k));
    }
    fputc('\n', f);
    for (int i = 0; i < t->n_hist; i++) {
        const EpochStats *s = &t->hist[i];
        fprintf(f, "%d,", s->epoch);
        csv_num(f, s->lr);
        fputc(',', f);
        csv_num(f, s->train_loss);
        fputc(',', f);
        csv_num(f, s->train_extra);
        fputc(',', f);
        csv_num(f, s->val_loss);
        for (int k = 0; k < ds->n_classes; k++) {
            fputc(',', f);
            csv_num(f, k < s->n_classes ? s->val_dice[k] : (double)NAN);
        }
        fputc(',', f);
        csv_num(f, s->val_dice_mean);
        fputc(',', f);
        csv_num(f, s->val_dice_tuned);
        fprintf(f, ",%.3f,%.5f,%.3f,%lld,%lld", s->seconds, s->step_seconds,
                s->data_wait, (long long)s->flops, (long long)s->params);
        for (int k = 0; k < s->n_columns; k++) {
            fputc(',', f);
            csv_num(f, s->columns[k]);
        }
        fputc('\n', f);
    }
}

static void write_jsonl(const Trainer *t, FILE *f)
{
    const Dataset *ds = t->ds;
    for (int i = 0; i < t->n_hist; i++) {
        const EpochStats *s = &t->hist[i];
        fprintf(f, "{\"epoch\": %d, \"lr\": ", s->epoch);
        json_num(f, s->lr);
        fprintf(f, ", \"train_loss\": ");
        json_num(f, s->epoch ? s->train_loss : (double)NAN);
        fprintf(f, ", \"train_extra\": ");
        json_num(f, s->epoch ? s->train_extra : (double)NAN);
        fprintf(f, ", \"val_loss\": ");
        json_num(f, s->val_loss);
        fprintf(f, ", \"dice\": {");
        for (int k = 0; k < ds->n_classes; k++) {
            fprintf(f, "%s", k ? ", " : "");
            json_write_string(f, ds->class_names[k]);
            fprintf(f, ": ");
            json_num(f, k < s->n_classes ? s->val_dice[k] : (double)NAN);
        }
        fprintf(f, "}, \"dice_mean\": ");
        json_num(f, s->val_dice_mean);
        fprintf(f, ", \"dice_tuned\": ");
        json_num(f, s->val_dice_tuned);
        /* a time lost with its epochs.csv is NaN: null, as above */
        fprintf(f, ", \"seconds\": ");
        json_fixed(f, 3, s->seconds);
        fprintf(f, ", \"step_seconds\": ");
        json_fixed(f, 5, s->step_seconds);
        fprintf(f, ", \"data_wait\": ");
        json_fixed(f, 3, s->data_wait);
        fprintf(f, ", \"flops\": %lld, \"params\": %lld", (long long)s->flops,
                (long long)s->params);
        for (int k = 0; k < s->n_columns; k++) {
            fprintf(f, ", ");
            json_write_string(f, t->hooks.column_name(t->hooks.ctx, k));
            fprintf(f, ": ");
            json_num(f, s->columns[k]);
        }
        fprintf(f, "}\n");
    }
}

/* Write what fn prints into RUN/name atomically. */
static int write_text(const Trainer *t, const char *name,
                      void (*fn)(const Trainer *, FILE *))
{
    char *text = NULL, *path = NULL;
    size_t len = 0;
    int rc = ERR_NOMEM;
    FILE *f = open_memstream(&text, &len);
    if (!f) goto fail;
    fn(t, f);
    if (fclose(f)) goto fail;
    path = trainer_path(t, name);
    if (!path) goto fail;
    rc = sl_write_file_atomic(path, text, len, 1);
fail:
    if (rc == ERR_NOMEM)
        sl_error("out of memory writing the %s report", name);
    free(text);
    sl_free(path);
    return rc;
}

int trainer_write_reports(const Trainer *t)
{
    int rc = write_text(t, "epochs.csv", write_csv);
    if (rc) return rc;
    return write_text(t, "epochs.jsonl", write_jsonl);
}

/* Cut line at commas into at most max fields; returns the count. */
static int csv_fields(char *line, char **field, int max)
{
    int n = 0;
    line[strcspn(line, "\r\n")] = '\0';
    for (char *p = line; n < max; p++) {
        field[n++] = p;
        p = strchr(p, ',');
        if (!p) break;
        *p = '\0';
    }
    return n;
}

void trainer_read_timings(Trainer *t)
{
    /* the trainer's own columns precede the class and hook columns */
    enum { MAX_FIELDS = 16 + DATA_MAX_CLASSES };
    static const char *const names[3] = {"seconds", "step_seconds",
                                         "data_wait"};
    int col[3] = {-1, -1, -1};
    char *path = trainer_path(t, "epochs.csv"), *line = NULL;
    char *field[MAX_FIELDS];
    size_t cap = 0;
    for (int i = 0; i < t->n_hist; i++)
        t->hist[i].seconds = t->hist[i].step_seconds = t->hist[i].data_wait =
            (double)NAN;
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f) goto done;
    if (getline(&line, &cap, f) < 0) goto done;
    int n = csv_fields(line, field, MAX_FIELDS);
    for (int c = 0; c < n; c++)
        for (int k = 0; k < 3; k++)
            if (col[k] < 0 && !strcmp(field[c], names[k])) col[k] = c;
    if (col[0] < 0 || col[1] < 0 || col[2] < 0) goto done;
    while (getline(&line, &cap, f) >= 0) {
        n = csv_fields(line, field, MAX_FIELDS);
        char *end;
        long e = strtol(field[0], &end, 10);
        /* epochs.csv is written before the checkpoint: it may hold one
         * epoch more than the history, which that epoch's rerun rewrites */
        if (*end || end == field[0] || e < 0 || e >= t->n_hist ||
            t->hist[e].epoch != (int)e || n <= col[0] || n <= col[1] ||
            n <= col[2])
            continue;
        t->hist[e].seconds = strtod(field[col[0]], NULL);
        t->hist[e].step_seconds = strtod(field[col[1]], NULL);
        t->hist[e].data_wait = strtod(field[col[2]], NULL);
    }
done:
    if (f) fclose(f);
    free(line);
    sl_free(path);
}

/* The summary needs the run time, which write_text's callback cannot
 * take: it is passed through this small struct instead of a global. */
typedef struct {
    const Trainer *t;
    double seconds;
} SummaryArgs;

static void write_summary_to(const SummaryArgs *a, FILE *f)
{
    const Trainer *t = a->t;
    const Dataset *ds = t->ds;
    const EpochStats *first = &t->hist[0], *last = &t->hist[t->n_hist - 1];
    const ModelMeta *m = &t->g->meta;
    fprintf(f, "Sauron training run\n\n");
    fprintf(f, "model:        %s (%dD)\n",
            m->source_name ? m->source_name : "?", m->dims);
    fprintf(f, "dataset:      %s (%d training cases: %d train, %d val)\n",
            ds->dir, ds->n_cases, t->split.n_train, t->split.n_val);
    fprintf(f,
            "epochs:       %d x %d iterations, batch %d, patch "
            "%lldx%lldx%lld\n",
            t->cfg.epochs, t->cfg.iters_per_epoch, t->cfg.batch,
            (long long)t->P[0], (long long)t->P[1], (long long)t->P[2]);
    fprintf(f,
            "optimiser:    %s, lr %g (polynomial decay), weight decay "
            "%g, clip %g\n",
            t->cfg.optim.kind == OPTIM_ADAM ? "adam" : "sgd-nesterov",
            (double)t->cfg.optim.lr, (double)t->cfg.optim.weight_decay,
            t->cfg.clip_grad);
    fprintf(f, "seed:         %llu\n", (unsigned long long)t->cfg.seed);
    fprintf(f, "validation:   %s\n",
            t->g->meta.dims == 2
                ? "every slice (at most 64 per case) of each val case"
                : "each val case segmented whole, as segment does");
    fprintf(f, "calibration:  batch 0 of the unaugmented %s sampler\n",
            t->split.n_val ? "validation" : "training");
    fprintf(f, "\n%-12s %12s %12s\n", "", "imported", "final");
    fprintf(f, "%-12s %12.4f %12.4f\n", "val loss", first->val_loss,
            last->val_loss);
    for (int k = 1; k < ds->n_classes; k++)
        fprintf(f, "%-12.12s %12.4f %12.4f\n", ds->class_names[k],
                first->val_dice[k], last->val_dice[k]);
    fprintf(f, "%-12s %12.4f %12.4f\n", "dice mean", first->val_dice_mean,
            last->val_dice_mean);
    if (ds->n_classes > 2 && !isnan(first->val_dice_tuned))
        fprintf(f, "%-12s %12.4f %12.4f\n", "dice tuned",
                first->val_dice_tuned, last->val_dice_tuned);
    fprintf(f, "%-12s %12lld %12lld\n", "parameters",
            (long long)first->params, (long long)last->params);
    fprintf(f, "%-12s %12lld %12lld\n", "FLOPs/batch",
            (long long)first->flops, (long long)last->flops);
    if (t->best_epoch >= 0)
        fprintf(f, "\nresult: the network of epoch %d (marked best)\n",
                t->best_epoch);
    else
        fprintf(f, "\nresult: the network after epoch %d\n", last->epoch);
    if (t->cfg.tune_decision) {
        char line[512];
        trainer_decision_line(t, line, sizeof line);
        fprintf(f, "decision:     %s\n", line);
    }
    fprintf(f, "wall time of this invocation: %.1f s\n", a->seconds);
}

int trainer_write_summary(const Trainer *t, double seconds)
{
    SummaryArgs a = {t, seconds};
    char *text = NULL, *path = NULL;
    size_t len = 0;
    int rc = ERR_NOMEM;
    FILE *f = open_memstream(&text, &len);
    if (!f) goto fail;
    write_summary_to(&a, f);
    if (fclose(f)) goto fail;
    path = trainer_path(t, "summary.txt");
    if (!path) goto fail;
    rc = sl_write_file_atomic(path, text, len, 1);
fail:
    if (rc == ERR_NOMEM) sl_error("out of memory writing the summary");
    free(text);
    sl_free(path);
    return rc;
}

/* "+0.10 -0.65 ..." for classes 1..K-1 (the first 8, then "..."). */
static void shifts(const double *b, int K, char *buf, size_t len)
{
    size_t o = 0;
    buf[0] = 0;
    for (int k = 1; k < K && o < len; k++) {
        int n = k > 8 ? snprintf(buf + o, len - o, " ...")
                      : snprintf(buf + o, len - o, "%s%+.2f",
                                 k > 1 ? " " : "", b[k]);
        if (n < 0 || k > 8) break;
        o += (size_t)n;
    }
}

int trainer_decision_folded(const Trainer *t)
{
    return t->decision.done && t->decision.folded;
}

void trainer_decision_line(const Trainer *t, char *buf, size_t len)
{
    const DecisionTune *d = &t->decision;
    const int K = t->ds->n_classes;
    char sh[128];
    if (!d->done) {
        snprintf(buf, len, "not tuned (%s)",
                 t->split.n_val == 0 ? "no validation cases"
                                     : "output 0 is not a convolution with "
                                       "one bias per class");
        return;
    }
    int moved = 0;
    for (int k = 1; k < K; k++)
        moved |= d->bias[k] != 0;
    shifts(d->bias, K, sh, sizeof sh);
    if (d->folded && K == 2)
        snprintf(buf, len,
                 "foreground where its logit exceeds the background's by "
                 "%+.2f: validation Dice %.4f -> %.4f (the val cases "
                 "segmented as segment does)",
                 -d->bias[1], d->dice_before, d->dice_after);
    else if (d->folded)
        snprintf(buf, len,
                 "logits of classes 1-%d shifted by %s against class 0: "
                 "validation mean Dice %.4f -> %.4f (the val cases "
                 "segmented as segment does)",
                 K - 1, sh, d->dice_before, d->dice_after);
    else if (moved)
        snprintf(buf, len,
                 "kept as trained: shifts %s looked best (Dice %.4f) but "
                 "gave %.4f against %.4f once in the model",
                 sh, d->predicted, d->dice_after, d->dice_before);
    else
        snprintf(buf, len,
                 "kept as trained, the best on the val cases (Dice %.4f)",
                 d->dice_before);
}
