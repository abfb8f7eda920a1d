/* sauron-compress options: the table (runtime/cliopt.h) that parsing,
 * --help and the man page all come from. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "compressor/compress_cli.h"
#include "compressor/data/split.h"
#include "compressor/sauron/sauron_hooks.h"
#include "compressor/train/optim.h"
#include "runtime/cliopt.h"
#include "runtime/common.h"
#include "runtime/orient.h"
#include "runtime/sslim.h"

#define STR2(x) #x
#define STR(x) STR2(x)
#define VERSION_LINE                                                         \
    "sauron-compress " SAURON_VERSION                                        \
    " (.sslim " STR(SSLIM_MAJOR) "." STR(SSLIM_MINOR) ")"

/* CLI_CHOICE stores an int */
_Static_assert(sizeof(VoxelOrder) == sizeof(int), "--order is an int");

static int parse_normalize(const char *s, void *target)
{
    Normalize *n = target;
    memset(n, 0, sizeof *n);
    if (!strcmp(s, "zscore")) {
        n->kind = NORMALIZE_ZSCORE;
        return 0;
    }
    if (!strcmp(s, "none")) {
        n->kind = NORMALIZE_NONE;
        return 0;
    }
    if (!strncmp(s, "zscore-fg", 9)) {
        /* zscore-fg[:GAIN,OFFSET]: stored as hi = gain, lo = offset */
        n->kind = NORMALIZE_ZSCORE_FG;
        n->hi = 1.0f;
        if (!s[9]) return 0;
        char *end;
        if (s[9] != ':') return -1;
        double g = strtod(s + 10, &end);
        if (end == s + 10 || *end != ',' || !(g > 0.0 && g < 1e6)) return -1;
        const char *o = end + 1;
        double off = strtod(o, &end);
        if (end == o || *end || !(off > -1e6 && off < 1e6)) return -1;
        n->hi = (float)g;
        n->lo = (float)off;
        return 0;
    }
    if (!strncmp(s, "ct:", 3)) {
        char *end;
        double lo = strtod(s + 3, &end);
        if (*end != ',') return -1;
        const char *h = end + 1;
        double hi = strtod(h, &end);
        if (end == h || *end || !(lo < hi)) return -1;
        n->kind = NORMALIZE_CT;
        n->lo = (float)lo;
        n->hi = (float)hi;
        return 0;
    }
    return -1;
}

/* An axis code (RAS, LPS, ...) into char[4], upper case; "none": "". */
static int parse_orientation(const char *v, void *target)
{
    char *code = target;
    int w[3], sg[3];
    memset(code, 0, 4);
    if (!strcmp(v, "none")) return 0;
    if (orient_parse(v, w, sg)) return -1;
    for (int k = 0; k < 3; k++)
        code[k] =
            (char)(v[k] >= 'a' && v[k] <= 'z' ? v[k] - 'a' + 'A' : v[k]);
    return 0;
}

/* "X,Y,Z" in mm, each in (0, 1000], into double[3]; "none": zeros. */
static int parse_spacing(const char *v, void *target)
{
    double *sp = target, x[3];
    if (!strcmp(v, "none")) {
        memset(sp, 0, 3 * sizeof *sp);
        return 0;
    }
    const char *p = v;
    for (int k = 0; k < 3; k++) {
        char *end;
        x[k] = strtod(p, &end);
        if (end == p || !(x[k] > 0.0 && x[k] <= 1000.0)) return -1;
        if (k < 2 && *end != ',') return -1;
        p = end + (k < 2);
        if (k == 2 && *end) return -1;
    }
    memcpy(sp, x, sizeof x);
    return 0;
}

/* "D,H,W" (or DxHxW), each 1..4096, into int[3]. */
static int parse_patch(const char *v, void *target)
{
    int *patch = target, sz[3];
    const char *p = v;
    for (int k = 0; k < 3; k++) {
        char item[32];
        size_t len = strcspn(p, ",x");
        long x;
        if (len >= sizeof item) return -1;
        memcpy(item, p, len);
        item[len] = '\0';
        if (cli_parse_long(item, 1, 4096, &x)) return -1;
        sz[k] = (int)x;
        p += len;
        if (k < 2 && !*p++) return -1;
    }
    if (*p) return -1;
    memcpy(patch, sz, sizeof sz);
    return 0;
}

static const CliChoice optimizers[] = {
    {"adam", OPTIM_ADAM}, {"sgd", OPTIM_SGD}, {NULL, 0}};
static const CliChoice orders[] = {
    {"nnunet", ORDER_NNUNET}, {"nibabel", ORDER_NIBABEL}, {NULL, 0}};

#define OPT(field) offsetof(CompressOptions, field)

static const CliOpt main_opts[] = {
    {.name = "data",
     .type = CLI_STRING,
     .metavar = "DIR",
     .off = OPT(data_dir),
     .help = "training data (nnU-Net raw layout: dataset.json, imagesTr/, "
             "labelsTr/)"},
    {.name = "no-finetune",
     .type = CLI_FLAG,
     .off = OPT(no_finetune),
     .help = "convert only (no training, no pruning)"},
    {.name = "no-prune",
     .type = CLI_FLAG,
     .off = OPT(no_prune),
     .help = "fine-tune only (no Sauron pruning)"},
    {.name = "distill",
     .type = CLI_FLAG,
     .off = OPT(distill),
     .help = "label-free: the imported model's own outputs are the targets "
             "(automatic when the dataset has no labelsTr); validation Dice "
             "is agreement with the imported model"},
    {.name = "axis",
     .type = CLI_INT,
     .lo = 0,
     .hi = 2,
     .metavar = "0|1|2",
     .off = OPT(axis),
     .has_mark = 1,
     .mark = OPT(axis_set),
     .help = "2D models: NIfTI axis to slice along (default 2)"},
    {.name = "patch",
     .type = CLI_CUSTOM,
     .parse = parse_patch,
     .expect = "three sizes D,H,W in 1..4096 (1,H,W for a 2D model)",
     .metavar = "D,H,W",
     .off = OPT(patch),
     .has_mark = 1,
     .mark = OPT(n_patch),
     .help = "patch size: 3D (default: the model's input); 2D training "
             "1,H,W (default: whole slices, padded to a size the network "
             "accepts)"},
    {.name = "quiet",
     .short_name = 'q',
     .type = CLI_FLAG,
     .off = OPT(quiet),
     .help = "no progress on stderr: no expected time, no line per epoch "
             "(the run folder's reports are written all the same)"},
};

static const CliOpt train_opts[] = {
    {.name = "epochs",
     .type = CLI_INT,
     .lo = 1,
     .hi = 100000,
     .metavar = "E",
     .off = OPT(epochs),
     .help = "epochs (default 30)"},
    {.name = "iters-per-epoch",
     .type = CLI_INT,
     .lo = 1,
     .hi = 10000000,
     .metavar = "I",
     .off = OPT(iters_per_epoch),
     .help = "iterations per epoch (default 250)"},
    {.name = "batch",
     .type = CLI_INT,
     .lo = 1,
     .hi = 4096,
     .metavar = "B",
     .off = OPT(batch),
     .help = "batch size (default 2)"},
    {.name = "optimizer",
     .type = CLI_CHOICE,
     .choices = optimizers,
     .off = OPT(optimizer),
     .help = "Adam (default) or SGD with Nesterov momentum 0.99"},
    {.name = "lr",
     .type = CLI_DOUBLE,
     .lo = 1e-12,
     .hi = 1e6,
     .metavar = "X",
     .off = OPT(lr),
     .help = "learning rate, polynomial decay over the epochs (default: "
             "SGD 1e-2; Adam 1e-3, times 1000 / iterations for runs longer "
             "than 1000 iterations)"},
    {.name = "weight-decay",
     .type = CLI_DOUBLE,
     .lo = 0,
     .hi = 1000,
     .metavar = "X",
     .off = OPT(weight_decay),
     .help = "L2 weight decay (default 1e-5 Adam, 3e-5 SGD)"},
    {.name = "clip-grad",
     .type = CLI_DOUBLE,
     .lo = 0,
     .hi = 1e12,
     .metavar = "X",
     .off = OPT(clip_grad),
     .help = "clip the gradient L2 norm at X (default: off)"},
    {.name = "seed",
     .type = CLI_U64,
     .metavar = "S",
     .off = OPT(seed),
     .help = "seed of split, sampling and augmentation (default 0)"},
    {.name = "threads",
     .type = CLI_INT,
     .lo = 1,
     .hi = 4096,
     .metavar = "N",
     .off = OPT(threads),
     .help = "threads (default: all cores)"},
    {.name = "val-fraction",
     .type = CLI_DOUBLE,
     .lo = 0,
     .hi = 0.95,
     .metavar = "F",
     .off = OPT(val_fraction),
     .has_mark = 1,
     .mark = OPT(val_fraction_set),
     .help = "training cases held out for validation (default 0.2)"},
    {.name = "val-cases",
     .type = CLI_STRING,
     .metavar = "a,b",
     .off = OPT(val_cases),
     .help = "validate on these training cases (names such as "
             "case_001, e.g. the cases the imported model was validated "
             "on) and train on the others, instead of a seeded "
             "--val-fraction"},
    {.name = "no-augment",
     .type = CLI_FLAG,
     .off = OPT(no_augment),
     .help = "no data augmentation"},
    {.name = "fov-aug",
     .type = CLI_DOUBLE,
     .lo = 0,
     .hi = 1,
     .metavar = "P",
     .off = OPT(fov_aug),
     .help = "2D: fraction of the batches that see another field of view "
             "(the slice cropped, or with more air around it: 0.7 to 1.4 "
             "times its size), so InstanceNorm does not learn the training "
             "scans' ratio of air to head (default 0: off)"},
    {.name = "crop-aug",
     .type = CLI_DOUBLE,
     .lo = 0,
     .hi = 1,
     .metavar = "Q",
     .off = OPT(crop_aug),
     .help = "2D: fraction of the batches that see each slice cut close "
             "around the case's labelled region (0 to 12 voxels of margin "
             "a side), as a scan cropped around the organ is; with "
             "--fov-aug P, P + Q <= 1 (default 0: off)"},
    {.name = "teacher-weight",
     .type = CLI_DOUBLE,
     .lo = 0,
     .hi = 100,
     .metavar = "W",
     .off = OPT(teacher_weight),
     .help = "with labels, the imported model teaches too: loss = labels' "
             "loss + W * soft-target loss against its outputs (default 0: "
             "labels only)"},
    {.name = "tune-decision",
     .type = CLI_CHOICE,
     .choices = cli_on_off,
     .off = OPT(tune_decision),
     .help = "once trained, add to the logits the class biases (within "
             "+-3, steps of 0.01) that give the highest validation mean "
             "Dice, folded into the last layer's bias; every epoch is "
             "also scored at its best biases, and a pruning run chooses "
             "the model it writes by that Dice (two-class models: their "
             "validation Dice is that Dice) (default on)"},
    {.name = "run-dir",
     .type = CLI_STRING,
     .metavar = "DIR",
     .off = OPT(run_dir),
     .help = "reports and checkpoint (default OUT.run)"},
    {.name = "resume",
     .type = CLI_FLAG,
     .off = OPT(resume),
     .help = "continue the run in --run-dir after a crash"},
};

static const CliOpt meta_opts[] = {
    {.name = "normalize",
     .type = CLI_CUSTOM,
     .parse = parse_normalize,
     .expect = "zscore, zscore-fg, zscore-fg:GAIN,OFFSET with GAIN > 0, "
               "none or ct:LOW,HIGH with LOW < HIGH",
     .metavar = "SPEC",
     .off = OPT(normalize),
     .has_mark = 1,
     .mark = OPT(normalize_set),
     .help = "zscore (default); zscore-fg: over the head only (voxels at or "
             "above the Otsu threshold), zscore-fg:GAIN,OFFSET then maps it "
             "to another scale; none; or ct:LOW,HIGH"},
    {.name = "classes",
     .type = CLI_STRING,
     .metavar = "a,b,c",
     .off = OPT(classes),
     .help = "class names (default class0..classK-1)"},
    {.name = "modalities",
     .type = CLI_STRING,
     .metavar = "t1,t2",
     .off = OPT(modalities),
     .help = "modality names (default mod0..)"},
    {.name = "order",
     .type = CLI_CHOICE,
     .choices = orders,
     .off = OPT(order),
     .has_mark = 1,
     .mark = OPT(order_set),
     .help = "voxel order the model was trained on (default nnunet)"},
    {.name = "orientation",
     .type = CLI_CUSTOM,
     .parse = parse_orientation,
     .expect = "three letters, one of R/L, A/P and S/I each (e.g. RAS), or "
               "none",
     .metavar = "CODE",
     .off = OPT(orientation),
     .has_mark = 1,
     .mark = OPT(orientation_set),
     .help = "axis code of the voxel axes the model was trained on, e.g. RAS "
             "or LPS (default: what the training data's headers share, with "
             "--data; none: segment keeps each scan's axes)"},
    {.name = "spacing",
     .type = CLI_CUSTOM,
     .parse = parse_spacing,
     .expect = "three voxel sizes in mm X,Y,Z, each in (0, 1000], or none",
     .metavar = "X,Y,Z",
     .off = OPT(spacing),
     .has_mark = 1,
     .mark = OPT(spacing_set),
     .help = "voxel spacing in mm it was trained at, along those axes "
             "(default: from the training data; none: segment keeps each "
             "scan's spacing)"},
    {.name = "output",
     .type = CLI_STRING,
     .metavar = "NAME",
     .off = OPT(output_name),
     .help = "ONNX output to use (default: the largest)"},
    {.name = "force",
     .type = CLI_FLAG,
     .off = OPT(force),
     .help = "overwrite out.sslim if it exists (and start a new run in a run "
             "folder holding a checkpoint)"},
};

static const CliOpt prune_extra_opts[] = {
    {.name = "allow-unpruned",
     .type = CLI_FLAG,
     .off = OPT(allow_unpruned),
     .help = "a model without prunable point is fine-tuned and written "
             "unpruned instead of refused"},
};

#define N(a) (int)(sizeof a / sizeof *a)
#define PRUNING "Sauron pruning (default with --data; --no-prune disables it)"

static const CliGroup compress_groups[] = {
    {NULL, main_opts, N(main_opts), 0},
    {"Training (with --data)", train_opts, N(train_opts), 0},
    {"Model metadata (also with --no-finetune)", meta_opts, N(meta_opts), 0},
    {PRUNING, sauron_cli_opts, 0, OPT(prune)}, /* n set in compress_spec */
    {PRUNING, prune_extra_opts, N(prune_extra_opts), 0},
};

static const char compress_description[] =
    "Import a trained U-Net from ONNX, fine-tune and prune it with Sauron,\n"
    "and write a slim .sslim model for segment (or, if out ends in "
    "\".onnx\",\n"
    "an ONNX model for any ONNX tool).\n"
    "\n"
    "A .sslim input (e.g. models/default.sslim, or any model a Sauron run\n"
    "wrote) converts with --no-finetune only (to ONNX for ONNX Runtime, or\n"
    "to .sslim): the network is written as it is and its metadata kept;\n"
    "--classes, --modalities, --normalize, --order and --axis, when given,\n"
    "replace those fields; --output and --patch are refused (they act at\n"
    "ONNX import).  To fine-tune again, start from the original ONNX.  An\n"
    "ONNX that sauron-compress wrote keeps the metadata it carries in the\n"
    "same way.";

/* The spec with the Sauron group's size filled in (sauron_cli_n_opts is
 * a constant of another file, not a constant expression here). */
static CliSpec compress_spec(CliGroup *groups)
{
    memcpy(groups, compress_groups, sizeof compress_groups);
    groups[3].n = sauron_cli_n_opts;
    return (CliSpec){
        .prog = "sauron-compress",
        .version = VERSION_LINE,
        .summary = "import, fine-tune and prune a U-Net into a slim model",
        .synopsis = "[options] in.onnx|in.sslim out.sslim|out.onnx",
        .description = compress_description,
        .groups = groups,
        .n_groups = N(compress_groups),
        .notes = "Exit status: 0 on success, 1 on failure, 2 for a usage "
                 "error.",
    };
}

int compress_parse_args(int argc, char **argv, CompressOptions *o)
{
    CliGroup groups[N(compress_groups)];
    CliSpec spec = compress_spec(groups);
    memset(o, 0, sizeof *o);
    o->axis = 2;
    o->normalize.kind = NORMALIZE_ZSCORE;
    o->order = ORDER_NNUNET;
    pruner_config_unset(&o->prune);
    o->epochs = COMPRESS_DEFAULT_EPOCHS;
    o->iters_per_epoch = 250;
    o->batch = 2;
    o->optimizer = OPTIM_ADAM;
    o->weight_decay = -1.0;
    o->val_fraction = SPLIT_DEFAULT_VAL_FRAC;
    o->tune_decision = 1;
    char **pos = sl_calloc((size_t)argc + 1, sizeof *pos);
    if (!pos) {
        sl_error("out of memory parsing the command line");
        return ERR_NOMEM;
    }
    int npos = 0;
    int rc = cli_parse(&spec, argc, argv, o, pos, &npos);
    o->help = rc == CLI_HELP;
    o->version = rc == CLI_VERSION;
    o->man = rc == CLI_MAN;
    if (rc > 0) rc = 0;
    if (rc || o->help || o->version || o->man) goto done;
    pruner_config_resolve(&o->prune, o->epochs, o->iters_per_epoch);
    /* ranges tying two settings together (--tau-max above tau0, ...) */
    rc = pruner_config_check(&o->prune);
    if (rc) goto done;
    /* one uniform draw per batch splits it into field of view, crop and
     * whole slices; 1e-12: 0.7 + 0.3 may round just above 1 */
    if (o->fov_aug + o->crop_aug > 1.0 + 1e-12) {
        sl_error("--fov-aug %g plus --crop-aug %g is more than 1 (they are "
                 "fractions of the same batches); lower one of them",
                 o->fov_aug, o->crop_aug);
        rc = ERR_ARG;
        goto done;
    }
    if (o->val_cases && o->val_fraction_set) {
        sl_error("--val-cases and --val-fraction both choose the validation "
                 "cases; give one of them");
        rc = ERR_ARG;
        goto done;
    }
    if (npos > 2) {
        sl_error("unexpected argument '%s': give one input (.onnx or "
                 ".sslim) and one output (.sslim or .onnx)",
                 pos[2]);
        rc = ERR_ARG;
    } else if (npos != 2) {
        sl_error("missing %s; usage: sauron-compress [options] "
                 "in.onnx|in.sslim out.sslim|out.onnx",
                 npos ? "the output path" : "the input and output paths");
        rc = ERR_ARG;
    } else {
        o->in_path = pos[0];
        o->out_path = pos[1];
    }
done:
    sl_free(pos);
    return rc;
}

void compress_usage(FILE *f)
{
    CliGroup groups[N(compress_groups)];
    CliSpec spec = compress_spec(groups);
    cli_help(&spec, f);
}

void compress_man(FILE *f)
{
    CliGroup groups[N(compress_groups)];
    CliSpec spec = compress_spec(groups);
    cli_man(&spec, f);
}

const char *compress_version(void)
{
    return VERSION_LINE;
}
