/* Training data: an nnU-Net raw dataset folder, checked and loaded into
 * memory as normalised tensors in the order the model sees them.
 *
 * Layout (nnU-Net v2 "raw"):
 *   DIR/dataset.json
 *   DIR/imagesTr/CASE_0000.nii.gz  one file per modality (4-digit index)
 *   DIR/labelsTr/CASE.nii.gz       integer label map, same grid
 *   DIR/imagesTs/, DIR/labelsTs/   optional held-out test set
 * dataset.json: "channel_names" {"0": "T1", "1": "T2"} (nnU-Net v1's
 * "modality" is accepted too), "labels" {"background": 0, "brain": 1}
 * (v1's {"0": "background", "1": "brain"} too), optional "file_ending"
 * (default ".nii.gz"; ".nii" also works) and "numTraining" (checked
 * against labelsTr when present).  Label values must be 0..n-1, each
 * declared once, background 0 (as nnU-Net requires); region-based labels
 * and the "ignore" label are not supported (ERR_UNSUPPORTED).
 *
 * Loaded cases.  Each training case is kept as float32 image
 * [C][S0][S1][S2] and uint8 labels [S0][S1][S2] where S is the volume
 * size in tensor order: S[t] = NIfTI size along ax[t], ax from
 * volume_axes(order, dims, axis) (runtime/volume.h), and the voxels are
 * gathered with volume_gather and normalised with volume_norm_affine:
 * the very functions segment uses, so a training tensor equals, bit for
 * bit, what segment feeds the network for the same scan.  For a 2D model
 * S0 is the number of slices along the model's axis and a slice
 * [C][S1][S2] is exactly one of segment's [C, H, W] inputs (before
 * segment's zero padding at the high end of H and W).
 *
 * Normalisation comes from the DataLayout (the model's metadata or the
 * --normalize flag); channel names in dataset.json are not interpreted:
 * nnU-Net's "CT" scheme (dataset-wide foreground percentiles) is not
 * computed here, give ct:LOW,HIGH explicitly.  Memory: every training
 * case stays in RAM (4 bytes per voxel and modality + 1 per voxel); no
 * memory-mapped cache as nnU-Net has.
 *
 * Errors: every check names the case and file and says what to do;
 * ERR_FORMAT for a broken dataset (no dataset.json, missing modality or
 * label file, undeclared label value, grid mismatch, no training cases),
 * ERR_IO for unreadable files, ERR_UNSUPPORTED, ERR_NOMEM.  Nothing is
 * left allocated in a Dataset on failure beyond what dataset_free frees.
 */
#ifndef SL_DATA_DATASET_H
#define SL_DATA_DATASET_H

#include <stdint.h>

#include "runtime/graph.h"
#include "runtime/volume.h"

/* Classes are stored as uint8 (0..254). */
#define DATA_MAX_CLASSES 255
/* Foreground locations kept per class and case (nnU-Net keeps 10000):
 * an even stride over the class's voxels in raster order, so the sample
 * is deterministic and spread over the whole structure. */
#define DATA_MAX_FG_LOCS 10000

/* How the model wants its tensors (usually from its ModelMeta). */
typedef struct {
    int dims;                   /* 2: slices; 3: patches */
    int axis;                   /* 2D: NIfTI axis sliced along (0..2) */
    VoxelOrder order;           /* tensor axes <-> NIfTI axes */
    const Normalize *normalize; /* n_modalities entries; NULL: z-score
                                   for every modality (segment's default) */
} DataLayout;

typedef struct {
    char *name;        /* case identifier (owned) */
    int64_t S[3];      /* tensor-order spatial size */
    float *image;      /* [C][S0][S1][S2], normalised (owned) */
    uint8_t *label;    /* [S0][S1][S2], class index (owned) */
    int n_classes;     /* copy of the dataset's count */
    int64_t *fg_loc;   /* flat indices into [S0][S1][S2] of foreground
                          voxels, class by class (owned) */
    int64_t *fg_start; /* [n_classes + 1]: class c's locations are
                          fg_loc[fg_start[c] .. fg_start[c+1]); class 0
                          (background) has none */
    /* Bounding box of the non-background label voxels, tensor order,
     * [box_lo, box_hi): what a scan cropped around the organ holds (the
     * crop augmentation, sampler.h); the whole case when it has none. */
    int64_t box_lo[3], box_hi[3];
    char orientation[4]; /* axis code of the image header (orient.h) */
    double spacing[3];   /* voxel size in mm along NIfTI i, j, k */
    float *air;          /* [C] the darkest voxel of each modality after
                            normalisation: what the field-of-view augmentation
                            fills added air with (owned; NULL reads as 0) */
} DataCase;

typedef struct {
    char *dir;         /* dataset folder (owned) */
    char *file_ending; /* ".nii.gz" or ".nii" (owned) */
    int n_modalities;
    char **modality_names; /* [n_modalities] (owned) */
    int n_classes;
    char **class_names; /* [n_classes], index = label value (owned) */
    int n_cases;
    char **case_names; /* training cases (labelsTr), sorted (owned) */
    int n_test;
    char **test_names;   /* imagesTs cases, sorted (owned), may be 0 */
    int *test_has_label; /* [n_test]: labelsTs/CASE exists */
    /* Set by dataset_load: */
    DataLayout layout;    /* as given, normalize -> ds->normalize */
    Normalize *normalize; /* [n_modalities] as applied (owned) */
    int ax[3];            /* tensor axis -> NIfTI axis */
    DataCase *cases;      /* [n_cases], same order as case_names */
    /* The training grid: the axis code and spacing every training case
     * shares ("" / zeros when they differ: training does not resample,
     * so the model then has no single grid; runtime/orient.h). */
    char orientation[4];
    double spacing[3];
    /* 1: opened by dataset_open_unlabeled without labelsTr: the training
     * cases are the imagesTr cases and their labels load as all
     * background, for the caller to fill (--distill). */
    int unlabeled;
} Dataset;

/* Read DIR/dataset.json and list the cases; checks that every training
 * case has all its modality files and its label (and that no image is
 * without a label), and the same for imagesTs.  Loads no voxels. */
int dataset_open(Dataset *ds, const char *dir);
/* dataset_open that also accepts a dataset without labels (label-free
 * compression): when labelsTr is missing or empty, the imagesTr cases are
 * the training cases and ds->unlabeled is 1; otherwise as dataset_open. */
int dataset_open_unlabeled(Dataset *ds, const char *dir);

/* Load every training case for a model with layout `lay` (copied; the
 * normalisation array too): read, check grids and labels, normalise,
 * reorder, collect foreground locations.  Call once after dataset_open;
 * on failure the cases are freed and only dataset_free may follow. */
int dataset_load(Dataset *ds, const DataLayout *lay);

/* Layout of a model: dims, axis, order and normalisation from its
 * metadata (normalize may be NULL there: z-score). */
void dataset_layout_from_meta(DataLayout *lay, const ModelMeta *m);

/* Load one case of the test set (imagesTs; labels from labelsTs if
 * present, else all zero) with the layout given to dataset_load.
 * Free with data_case_free. */
int dataset_load_test_case(const Dataset *ds, int i, DataCase *out);

/* File names of case i (test = 0: training set, 1: test set): the image
 * spec (modality files joined by commas, as nio_read and segment take
 * them) and the label path (NULL if the test case has no label).  Caller
 * frees both with sl_free. */
int dataset_case_paths(const Dataset *ds, int test, int i, char **image,
                       char **label);

/* The image of loaded training case i read again from its file(s), as
 * segment would read it (raw intensities, NIfTI order), for running the
 * runtime's segmenter on it; the file must still hold the case's voxel
 * count.  Free with volume_free.  0 or < 0 (message printed). */
int dataset_read_image(const Dataset *ds, int i, Volume *v);

/* Largest tensor-order size over the loaded training cases (for choosing
 * a patch that covers every slice). */
void dataset_max_size(const Dataset *ds, int64_t S[3]);

/* After the caller rewrote c->label in place (distillation: the
 * teacher's segmentation): collect the foreground locations again.
 * 0 or ERR_NOMEM. */
int data_case_relabel(DataCase *c);

void data_case_free(DataCase *c);
void dataset_free(Dataset *ds);

#endif
