/* sauron-compress command line: option parsing (unit-testable), the
 * --no-finetune conversion ONNX or .sslim -> .sslim/.onnx, and fine-tuning
 * with --data (compressor/train/trainer.h). */
#ifndef SL_COMPRESS_CLI_H
#define SL_COMPRESS_CLI_H

#include <stdio.h>

#include "compressor/sauron/pruner.h"
#include "runtime/graph.h"

/* The default length, 30 epochs of 250 iterations: the one length at
 * which the command with no tuning flag met all three real-MRI goals
 * (docs/SAURON_RESULTS.md, "The default length: 30 epochs").  5-class
 * anatomy needs it (83.5% fewer FLOPs where 20 epochs stopped at
 * 79.8%); brain 2D and 3D stay at 90% or more either way. */
#define COMPRESS_DEFAULT_EPOCHS 30

typedef struct {
    const char *in_path;  /* borrowed from argv */
    const char *out_path; /* borrowed from argv */
    const char *data_dir; /* --data, NULL if absent */
    int no_finetune;
    int axis;                /* --axis, 2D slicing axis, default 2 */
    int axis_set, order_set; /* --axis / --order given (a .sslim input
                                keeps its own unless they are) */
    int patch[3];            /* --patch D,H,W (3D); zeros: the import shape */
    Normalize normalize;     /* --normalize, default zscore */
    const char *classes;     /* --classes a,b,c or NULL */
    const char *modalities;  /* --modalities t1,t2 or NULL */
    VoxelOrder order;        /* --order nnunet|nibabel */
    const char *output_name; /* --output NAME or NULL */
    /* --orientation CODE / --spacing X,Y,Z: the grid the model was trained
     * on (runtime/orient.h); a dataset's headers give them otherwise */
    char orientation[4];
    double spacing[3];
    int orientation_set, spacing_set;
    int force;
    int quiet; /* -q/--quiet: no progress, estimates or epoch lines */
    int help, version, man; /* print and exit 0 */
    /* Fine-tuning (--data): */
    int n_patch;         /* 1 if --patch was given (2D: 1,H,W), else 0 */
    int normalize_set;   /* --normalize given */
    int no_prune;        /* --no-prune: plain fine-tuning */
    int distill;         /* --distill: the imported model's outputs are
                            the targets (also when there is no labelsTr) */
    int epochs;          /* --epochs, default COMPRESS_DEFAULT_EPOCHS */
    int iters_per_epoch; /* --iters-per-epoch, default 250 */
    int batch;           /* --batch, default 2 */
    int optimizer;       /* --optimizer: OPTIM_ADAM (default) or SGD */
    double lr;           /* --lr; 0: the optimiser's default */
    double weight_decay; /* --weight-decay; < 0: the optimiser's default */
    unsigned long long seed; /* --seed, default 0 */
    int threads;             /* --threads, 0: all cores */
    double clip_grad;        /* --clip-grad, 0: none */
    const char *run_dir;     /* --run-dir, NULL: "<out>.run" */
    double val_fraction;     /* --val-fraction, default 0.2 */
    int val_fraction_set;    /* --val-fraction given */
    const char *val_cases;   /* --val-cases a,b: the validation cases by
                                name instead of a seeded fraction */
    int no_augment;          /* --no-augment */
    double fov_aug;          /* --fov-aug */
    double crop_aug;         /* --crop-aug */
    int resume;              /* --resume */
    int tune_decision;       /* --tune-decision on (default) | off */
    double teacher_weight;   /* --teacher-weight W: with labels, the
                                imported model teaches too (loss = labels
                                + W * soft targets); 0: off (default) */
    /* Sauron pruning (default with --data unless --no-prune): */
    PrunerConfig prune; /* --lambda --sf --schedule --tau-max ... */
    int allow_unpruned; /* --allow-unpruned */
} CompressOptions;

#define SAURON_VERSION "0.1.0"

/* Parse argv[1..argc-1] (the option table is in compress_opts.c).
 * Returns 0, or ERR_ARG with one sl_error() line (an unknown option, a
 * bad value, a missing positional argument), or ERR_NOMEM.  With
 * --help/--version/--man set, positional arguments are not required. */
int compress_parse_args(int argc, char **argv, CompressOptions *o);

/* --help, the man page (--man) and the --version line, from the table. */
void compress_usage(FILE *f);
void compress_man(FILE *f);
const char *compress_version(void);

/* Split "a,b,c" into n owned strings (sl_free each and the array).
 * Empty items are an ERR_ARG naming `what`. */
int compress_split_list(const char *s, const char *what, char ***items,
                        int *n);

/* Fill the metadata segment needs from the options and the imported
 * graph (class and modality counts must match the network).  Metadata a
 * Sauron ONNX export carried (g->meta as onnx_import restored it) is kept,
 * each option given explicitly (--classes, --modalities, --normalize,
 * --axis, --order, --patch) replacing its field; a graph without it gets
 * the options or their defaults (class0.., mod0.., zscore, ...).
 * Returns 0, ERR_ARG (a list of the wrong length), ERR_SHAPE or
 * ERR_NOMEM (message printed). */
int compress_fill_meta(Graph *g, const CompressOptions *o);

/* Run the conversion for parsed options.  An ONNX input is imported and
 * gets its metadata from compress_fill_meta; a .sslim input
 * (by name or by magic) keeps its network and metadata, the metadata
 * options given explicitly replacing their fields, and refuses --output
 * and --patch (ERR_ARG).  Returns 0 or a negative code (message printed). */
int compress_run(const CompressOptions *o);

/* Fine-tune on o->data_dir and write the result (--data --no-prune).
 * Returns 0 or a negative code (message printed); nothing is written on
 * failure but the run folder's reports and checkpoint. */
int compress_train(const CompressOptions *o);

/* Nonzero if path names a .sslim model: it ends in ".sslim" or starts
 * with the .sslim magic. */
int compress_input_is_sslim(const char *path);

/* The whole program: returns the exit status (0 ok, 2 usage, 1 failure).
 * A .sslim input without --no-finetune is a usage error (training starts
 * from the original ONNX). */
int compress_main(int argc, char **argv);

#endif
