/* Run report of a Sauron fine-tuning run (report.h): per-epoch CSV and
 * JSON lines, summary JSON and text, one progress line per epoch. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compressor/sauron/cost.h"
#include "compressor/sauron/report.h"
#include "runtime/common.h"

#define CSV_NAME "sauron_epochs.csv"
#define JSONL_NAME "sauron_epochs.jsonl"
#define SUMMARY_JSON "sauron_summary.json"
#define SUMMARY_TXT "sauron_summary.txt"

struct SauronReport {
    char *dir;
    char *csv, *jsonl;
    FILE *progress;
    ReportInfo info;
    int n_classes;
    double dice0; /* imported model's Dice (row 0) */
};

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = sl_alloc(n);
    if (s) snprintf(s, n, "%s/%s", dir, name);
    return s;
}

/* Keep the lines of path whose leading integer (the epoch) is <= last;
 * a line without one (the CSV header) is kept.  A missing file is fine. */
static int trim_rows(const char *path, int last, int json)
{
    uint8_t *d = NULL;
    size_t n = 0;
    if (!sl_file_exists(path)) return 0;
    int rc = sl_read_file(path, &d, &n);
    if (rc) return rc;
    size_t keep = 0, i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && d[j] != '\n')
            j++;
        if (j == n) break; /* a torn last line goes */
        const char *s = (const char *)d + i;
        if (json) {
            const char *k = "{\"epoch\": ";
            s = strncmp(s, k, strlen(k)) == 0 ? s + strlen(k) : NULL;
        }
        if (s && *s >= '0' && *s <= '9' && atoi(s) > last) break;
        keep = j + 1;
        i = j + 1;
    }
    rc = sl_write_file_atomic(path, d, keep, 1);
    sl_free(d);
    return rc;
}

static void point_name(char *buf, size_t len, const Graph *g, const Pruner *p,
                       int i)
{
    const char *nm = g->nodes[pruner_point_node(p, i)].name;
    size_t k = 0;
    /* CSV and JSON friendly: no commas, quotes or control characters */
    for (; nm && nm[k] && k + 1 < len; k++) {
        char c = nm[k];
        buf[k] = (c == ',' || c == '"' || c == '\\' || c < ' ') ? '_' : c;
    }
    buf[k] = 0;
}

void report_close(SauronReport *r)
{
    if (!r) return;
    sl_free(r->dir);
    sl_free(r->csv);
    sl_free(r->jsonl);
    sl_free(r);
}

int report_open(SauronReport **out, const char *dir, const Pruner *p,
                const Graph *g, const ReportInfo *info, int resume_epoch,
                FILE *progress)
{
    *out = NULL;
    FILE *f = NULL;
    int rc = ERR_NOMEM;
    SauronReport *r = sl_calloc(1, sizeof *r);
    if (!r) goto nomem;
    r->dir = sl_strdup(dir);
    r->csv = join(dir, CSV_NAME);
    r->jsonl = join(dir, JSONL_NAME);
    if (!r->dir || !r->csv || !r->jsonl) goto nomem;
    r->progress = progress;
    r->info = *info;
    r->n_classes = info->n_classes;
    r->dice0 = NAN;
    if (resume_epoch >= 0 && sl_file_exists(r->csv)) {
        rc = trim_rows(r->csv, resume_epoch, 0);
        if (!rc) rc = trim_rows(r->jsonl, resume_epoch, 1);
        if (rc) goto fail;
        *out = r;
        return 0;
    }
    rc = ERR_IO;
    f = fopen(r->csv, "w");
    if (!f) goto io;
    fprintf(f, "epoch,seconds,lr,train_loss,reg,val_loss,dice");
    for (int k = 1; k < r->n_classes; k++) {
        const char *cn = info->class_names ? info->class_names[k] : NULL;
        if (cn && !strpbrk(cn, ",\"\n"))
            fprintf(f, ",dice_%s", cn);
        else
            fprintf(f, ",dice_%d", k);
    }
    fprintf(f, ",params,flops,channels");
    char nm[128];
    for (int i = 0; i < pruner_n_points(p); i++) {
        point_name(nm, sizeof nm, g, p, i);
        fprintf(f, ",ch_%s", nm);
    }
    for (int i = 0; i < pruner_n_points(p); i++) {
        point_name(nm, sizeof nm, g, p, i);
        fprintf(f, ",tau_%s", nm);
    }
    fprintf(f, "\n");
    if (fclose(f)) {
        f = NULL;
        goto io;
    }
    f = fopen(r->jsonl, "w");
    if (!f || fclose(f)) {
        f = NULL;
        goto io;
    }
    *out = r;
    return 0;
io:
    sl_error("cannot write the run report in %s (%s); check the folder "
             "(--out-dir) is writable",
             dir, strerror(errno));
    if (f) fclose(f);
    goto fail;
nomem:
    sl_error("out of memory opening the run report");
fail:
    report_close(r);
    return rc;
}

/* %g that prints NaN as an empty CSV cell or JSON null. */
static void num(FILE *f, double v, int json)
{
    if (isnan(v) || isinf(v))
        fputs(json ? "null" : "", f);
    else
        fprintf(f, "%.6g", v);
}

static int total_channels(const Pruner *p)
{
    int s = 0;
    for (int i = 0; i < pruner_n_points(p); i++)
        s += pruner_point_channels(p, i);
    return s;
}

int report_epoch(SauronReport *r, Pruner *p, const Graph *g,
                 const ReportEpoch *e)
{
    int64_t flops = pruner_flops(p);
    int64_t params = graph_params(g);
    int np = pruner_n_points(p);
    if (e->epoch == 0) r->dice0 = e->dice;
    FILE *f = fopen(r->csv, "a");
    if (!f) goto io;
    fprintf(f, "%d,%.3f,", e->epoch, e->seconds);
    num(f, e->lr, 0);
    fputc(',', f);
    num(f, e->train_loss, 0);
    fputc(',', f);
    num(f, e->reg, 0);
    fputc(',', f);
    num(f, e->val_loss, 0);
    fputc(',', f);
    num(f, e->dice, 0);
    for (int k = 1; k < r->n_classes; k++) {
        fputc(',', f);
        num(f,
            e->dice_class && k < e->n_classes ? e->dice_class[k]
                                              : (double)NAN,
            0);
    }
    fprintf(f, ",%lld,%lld,%d", (long long)params, (long long)flops,
            total_channels(p));
    for (int i = 0; i < np; i++)
        fprintf(f, ",%d", pruner_point_channels(p, i));
    for (int i = 0; i < np; i++)
        fprintf(f, ",%.6g", pruner_point_tau(p, i));
    fprintf(f, "\n");
    if (fclose(f)) goto io;

    f = fopen(r->jsonl, "a");
    if (!f) goto io;
    fprintf(f, "{\"epoch\": %d, \"seconds\": %.3f, \"lr\": ", e->epoch,
            e->seconds);
    num(f, e->lr, 1);
    fprintf(f, ", \"train_loss\": ");
    num(f, e->train_loss, 1);
    fprintf(f, ", \"reg\": ");
    num(f, e->reg, 1);
    fprintf(f, ", \"val_loss\": ");
    num(f, e->val_loss, 1);
    fprintf(f, ", \"dice\": ");
    num(f, e->dice, 1);
    fprintf(f, ", \"dice_class\": [");
    for (int k = 0; k < r->n_classes; k++) {
        if (k) fprintf(f, ", ");
        num(f,
            e->dice_class && k < e->n_classes ? e->dice_class[k]
                                              : (double)NAN,
            1);
    }
    fprintf(f, "], \"params\": %lld, \"flops\": %lld, \"channels\": [",
            (long long)params, (long long)flops);
    for (int i = 0; i < np; i++)
        fprintf(f, "%s%d", i ? ", " : "", pruner_point_channels(p, i));
    fprintf(f, "], \"tau\": [");
    for (int i = 0; i < np; i++)
        fprintf(f, "%s%.6g", i ? ", " : "", pruner_point_tau(p, i));
    fprintf(f, "]}\n");
    if (fclose(f)) goto io;

    if (r->progress) {
        int64_t f0 = pruner_flops0(p);
        fprintf(r->progress,
                "epoch %3d  %6.1fs  loss %.4f (reg %.4f)  dice %.4f  "
                "FLOPs %.3g (%.1f%% of imported)  channels %d  tau %.3g\n",
                e->epoch, e->seconds, e->train_loss, e->reg, e->dice,
                (double)flops,
                f0 > 0 ? 100.0 * (double)flops / (double)f0 : 100.0,
                total_channels(p), np ? pruner_point_tau(p, 0) : 0.0);
        fflush(r->progress);
    }
    return 0;
io:
    sl_error("cannot append to the run report in %s (%s); check free disk "
             "space",
             r->dir, strerror(errno));
    return ERR_IO;
}

/* Output channels of a Sauron point's convolution in graph g (same node
 * numbering as the pruner's graph: surgery keeps the structure). */
static int conv_channels(const Graph *g, int node)
{
    const Node *n = &g->nodes[node];
    const Shape *w = &g->values[n->in[1]].shape;
    if (n->op == OP_CONV_TRANSPOSE)
        return (int)w->d[1] * (n->p.conv.group > 0 ? n->p.conv.group : 1);
    return (int)w->d[0];
}

static void write_removals(FILE *f, const SauronPoint *pt, int json)
{
    int first = 1;
    for (int k = 1; k < pt->nhist; k++) {
        int lost = pt->hist[k - 1].channels - pt->hist[k].channels;
        if (lost <= 0) continue;
        if (json)
            fprintf(f, "%s{\"progress\": %.4g, \"removed\": %d}",
                    first ? "" : ", ", pt->hist[k].progress, lost);
        else
            fprintf(f, "%s-%d@%.3g", first ? "" : " ", lost,
                    pt->hist[k].progress);
        first = 0;
    }
}

int report_target_verdict(double target, double kept_min, double kept_written,
                          double dice_ref, double dice_written,
                          double max_dice_drop, char *buf, size_t len)
{
    char margin[160];
    int margin_ok = 1;
    double bound = dice_ref - max_dice_drop;
    /* 1e-12: the same slack as sauron_best_within_margin */
    if (isnan(dice_ref))
        snprintf(margin, sizeof margin,
                 "Dice margin not checked (no validation data)");
    else if (dice_written >= bound - 1e-12)
        snprintf(margin, sizeof margin, "Dice margin met (%.4f >= %.4f)",
                 dice_written, bound);
    else {
        margin_ok = 0;
        snprintf(margin, sizeof margin, "Dice margin NOT met (%.4f < %.4f)",
                 dice_written, bound);
    }
    /* 1e-9: FLOPs ratios of integers, compared with a decimal target */
    int met = kept_written <= target + 1e-9;
    if (met)
        snprintf(buf, len,
                 "target met: %.1f%% of the FLOPs kept (target %.4g%%), %s",
                 100 * kept_written, 100 * target, margin);
    else if (kept_min <= target + 1e-9)
        snprintf(buf, len,
                 "target given up to keep the Dice margin: the run reached "
                 "%.1f%% of the FLOPs kept, but only below the margin; the "
                 "model written keeps %.1f%% (target %.4g%%), %s",
                 100 * kept_min, 100 * kept_written, 100 * target, margin);
    else
        snprintf(buf, len,
                 "target not reached: pruning went down to %.1f%% of the "
                 "FLOPs kept (target %.4g%%; raise --tau-max, --prune-guard "
                 "or --epochs); the model written keeps %.1f%%, %s",
                 100 * kept_min, 100 * target, 100 * kept_written, margin);
    return met && margin_ok;
}

int report_summary(SauronReport *r, Pruner *p, Graph *written, int best_epoch,
                   double dice_before, double dice_after,
                   const char *target_line)
{
    char *pj = join(r->dir, SUMMARY_JSON), *pt = join(r->dir, SUMMARY_TXT);
    FILE *f = NULL;
    int rc = ERR_NOMEM;
    if (!pj || !pt) {
        sl_error("out of memory writing the run summary");
        goto fail;
    }
    const SauronSched *s = pruner_sched(p);
    int np = pruner_n_points(p);
    int64_t f0 = pruner_flops0(p), p0 = pruner_params0(p);
    int64_t p1 = graph_params(written);
    int64_t flops_after = pruner_graph_flops(p, written);
    rc = ERR_IO;
    f = fopen(pj, "w");
    if (!f) goto io;
    fprintf(f, "{\n  \"mode\": \"%s\",\n  \"calibration\": \"%s\",\n",
            r->info.mode ? r->info.mode : "labels",
            r->info.calibration ? r->info.calibration : "");
    fprintf(f, "  \"schedule\": \"%s\",\n  \"model_in\": \"%s\",\n",
            r->info.schedule ? r->info.schedule : "budget",
            r->info.model_in ? r->info.model_in : "");
    fprintf(f, "  \"tau_max\": %g, \"kappa\": %d, \"max_dice_drop\": %g,\n",
            s->cfg.tau_max, s->cfg.kappa, s->cfg.max_dice_drop);
    fprintf(f, "  \"cost_rule\": \"%s\", \"prune_end\": %g,\n",
            sauron_cost_rule_name(pruner_config(p)->cost_rule),
            s->cfg.prune_end);
    fprintf(f, "  \"epochs\": %d, \"written_epoch\": %d,\n", s->epochs,
            best_epoch);
    fprintf(f, "  \"params_before\": %lld, \"params_after\": %lld,\n",
            (long long)p0, (long long)p1);
    fprintf(f, "  \"flops_before\": %lld, \"flops_after\": %lld,\n",
            (long long)f0, (long long)flops_after);
    fprintf(f, "  \"flops_cut\": ");
    num(f,
        f0 > 0 && flops_after >= 0 ? 1.0 - (double)flops_after / (double)f0
                                   : (double)NAN,
        1);
    fprintf(f, ",\n  \"dice_before\": ");
    num(f, dice_before, 1);
    fprintf(f, ", \"dice_after\": ");
    num(f, dice_after, 1);
    if (target_line)
        fprintf(f, ",\n  \"target_flops\": %.17g, \"target\": \"%s\"",
                pruner_config(p)->target_flops, target_line);
    fprintf(f, ",\n  \"points\": [\n");
    for (int i = 0; i < np; i++) {
        char nm[128];
        point_name(nm, sizeof nm, written, p, i);
        fprintf(f,
                "    {\"name\": \"%s\", \"before\": %d, \"after\": %d, "
                "\"tau\": %.6g, \"frozen\": %d, \"removals\": [",
                nm, pruner_point_channels0(p, i),
                conv_channels(written, pruner_point_node(p, i)),
                pruner_point_tau(p, i), s->pt[i].frozen);
        write_removals(f, &s->pt[i], 1);
        fprintf(f, "]}%s\n", i + 1 < np ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    if (fclose(f)) {
        f = NULL;
        goto io;
    }
    f = fopen(pt, "w");
    if (!f) goto io;
    fprintf(f, "Sauron run summary (%s mode, %s schedule)\n",
            r->info.mode ? r->info.mode : "labels",
            r->info.schedule ? r->info.schedule : "budget");
    fprintf(f, "calibration batch: %s\n",
            r->info.calibration ? r->info.calibration : "");
    fprintf(f, "model written: epoch %d of %d\n", best_epoch, s->epochs);
    fprintf(f, "parameters: %lld -> %lld (%.1f%% fewer)\n", (long long)p0,
            (long long)p1,
            p0 > 0 ? 100.0 * (1.0 - (double)p1 / (double)p0) : 0.0);
    fprintf(f, "FLOPs per sample: %lld -> %lld (%.1f%% fewer)\n",
            (long long)f0, (long long)flops_after,
            f0 > 0 ? 100.0 * (1.0 - (double)flops_after / (double)f0) : 0.0);
    fprintf(f, "validation Dice: %.4f -> %.4f\n", dice_before, dice_after);
    if (target_line) fprintf(f, "%s\n", target_line);
    fprintf(f, "%-32s %6s %6s %8s  removals (-n@epoch)\n", "point", "before",
            "after", "tau");
    for (int i = 0; i < np; i++) {
        char nm[128];
        point_name(nm, sizeof nm, written, p, i);
        fprintf(f, "%-32s %6d %6d %8.4f  ", nm, pruner_point_channels0(p, i),
                conv_channels(written, pruner_point_node(p, i)),
                pruner_point_tau(p, i));
        write_removals(f, &s->pt[i], 0);
        fprintf(f, "\n");
    }
    if (fclose(f)) {
        f = NULL;
        goto io;
    }
    rc = 0;
    goto fail;
io:
    sl_error("cannot write the run summary in %s (%s); check free disk "
             "space",
             r->dir, strerror(errno));
    if (f) fclose(f);
fail:
    sl_free(pj);
    sl_free(pt);
    return rc;
}
