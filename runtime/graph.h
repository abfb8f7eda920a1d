/* The graph IR shared by the runtime and the compressor.
 *
 * A Graph is a DAG of Nodes over Values.  A Value is a tensor: a weight
 * (data != NULL, shape fixed, owned by the graph) or an activation (data
 * NULL, shape filled in by graph_infer_shapes for a concrete input shape).
 * Nodes are kept in topological order.  Tensors are N-d, float32, dense,
 * row-major: [N, C, (D,) H, W]; 2D and 3D networks share every code path.
 *
 * Dimension letters used project-wide: N batch, C/IC/OC channels,
 * D H W spatial, K kernel.  "nsp" is the number of spatial dims (1..3).
 */
#ifndef SL_GRAPH_H
#define SL_GRAPH_H

#include <stdint.h>

#define SL_MAX_DIMS 5    /* N, C and up to three spatial dims */
#define SL_MAX_INPUTS 16 /* Concat fan-in limit */
#define SL_MAX_OUTPUTS 8 /* graph outputs (deep-supervision heads) */

typedef struct {
    int ndim;
    int64_t d[SL_MAX_DIMS];
} Shape;

int64_t shape_numel(const Shape *s);
int shape_equal(const Shape *a, const Shape *b);
/* "[1,32,64,64]" into buf; returns buf. */
char *shape_str(const Shape *s, char *buf, int len);

typedef enum {
    OP_CONV,
    OP_CONV_TRANSPOSE,
    OP_INSTANCE_NORM,
    OP_BATCH_NORM,
    OP_RELU,
    OP_LEAKY_RELU,
    OP_SIGMOID,
    OP_SOFTMAX,
    OP_CONCAT,
    OP_ADD,
    OP_MAX_POOL,
    OP_AVG_POOL,
    OP_RESIZE,
    OP_IDENTITY,
    OP_COUNT
} OpType;

/* Conv inputs: X [N,IC,sp...], W [OC,IC/group,K...], optional B [OC].
 * ConvTranspose inputs: X [N,IC,sp...], W [IC,OC/group,K...], optional B.
 * ConvTranspose output size per spatial dim:
 *   stride*(in-1) + out_pad + dilation*(K-1) + 1 - pad_lo - pad_hi
 * (the importer turns ONNX output_shape into pads/out_pad). */
typedef struct {
    int nsp;
    int kernel[3], stride[3], dilation[3], pad_lo[3], pad_hi[3];
    int out_pad[3]; /* ConvTranspose only */
    int group;
} ConvParams;

/* InstanceNorm inputs: X, scale [C], bias [C]; statistics per (n, c).
 * BatchNorm inputs: X, scale, bias, running mean, running var (inference
 * form: y = (x - mean) / sqrt(var + eps) * scale + bias).  An ONNX
 * BatchNormalization that uses batch statistics is imported as
 * InstanceNorm when that is what it computes, or as BatchNorm with
 * use_batch_stats = 1 (statistics over N and spatial dims). */
typedef struct {
    float eps;
    float momentum;      /* ONNX convention: running = running * momentum
                          * + batch * (1 - momentum); 0.9 by default */
    int use_batch_stats; /* BatchNorm only */
} NormParams;

typedef struct {
    float alpha; /* LeakyRelu slope */
} ActParams;

/* Softmax over `axis` (normalised to >= 0).  flatten = 1 gives the
 * opset < 13 meaning: one softmax over all dims from axis to the end. */
typedef struct {
    int axis;
    int flatten;
} SoftmaxParams;

typedef struct {
    int axis;
} ConcatParams;

typedef struct {
    int nsp;
    int kernel[3], stride[3], dilation[3], pad_lo[3], pad_hi[3];
    int ceil_mode;
    int count_include_pad; /* AveragePool only */
} PoolParams;

typedef enum { RESIZE_NEAREST, RESIZE_LINEAR } ResizeMode;
typedef enum {
    COORD_HALF_PIXEL,
    COORD_PYTORCH_HALF_PIXEL,
    COORD_ALIGN_CORNERS,
    COORD_ASYMMETRIC
} ResizeCoord;
typedef enum {
    NEAREST_ROUND_PREFER_FLOOR,
    NEAREST_ROUND_PREFER_CEIL,
    NEAREST_FLOOR,
    NEAREST_CEIL
} ResizeNearest;

/* Resize over the spatial dims only (N and C pass through).
 * Output size: floor(in * scale[i] + 1e-6) unless the node has a second
 * input, in which case the output spatial size is that tensor's spatial
 * size (U-Nets that interpolate "to the size of the skip").  The
 * coordinate transform uses out/in as the scale, as ONNX does. */
typedef struct {
    int nsp;
    ResizeMode mode;
    ResizeCoord coord;
    ResizeNearest nearest;
    double scale[3];
} ResizeParams;

typedef struct {
    OpType op;
    char *name; /* owned; from the source model, for messages */
    int n_in;
    int in[SL_MAX_INPUTS]; /* value indices; weights included */
    int out;               /* one output value per node */
    union {
        ConvParams conv;
        NormParams norm;
        ActParams act;
        SoftmaxParams softmax;
        ConcatParams concat;
        PoolParams pool;
        ResizeParams resize;
    } p;
} Node;

typedef struct {
    char *name; /* owned */
    Shape shape;
    float *data;  /* weights: owned, 64-byte aligned; NULL for activations */
    int producer; /* node index, or -1 (graph input or weight) */
} Value;

typedef enum {
    NORMALIZE_NONE,
    NORMALIZE_ZSCORE,
    NORMALIZE_CT,
    NORMALIZE_ZSCORE_FG
} NormalizeKind;

/* Per-modality intensity normalisation.
 *   zscore: (v - mean) / max(std, 1e-8), per case, population std.
 *   zscore-fg: the same with mean and std over the head only (the voxels
 *           at or above the Otsu threshold of the case, volume.h), so
 *           that the air or neck a field of view holds does not change
 *           the statistics; applied to every voxel, then * hi + lo (gain
 *           hi > 0 and offset lo: 1 and 0 for a model trained with this
 *           rule; a model trained on whole-volume z-scores carries the
 *           map from head z-scores to that scale measured on its
 *           training data, models/README.md).
 *   ct:     clip to [lo, hi], then (v - lo) / (hi - lo) * 2 - 1.  */
typedef struct {
    NormalizeKind kind;
    float lo, hi;
} Normalize;

typedef enum { ORDER_NNUNET = 0, ORDER_NIBABEL = 1 } VoxelOrder;

/* What segment needs besides the network. */
typedef struct {
    int n_classes;
    char **class_names; /* owned, n_classes */
    int n_modalities;
    char **modality_names; /* owned, n_modalities */
    Normalize *normalize;  /* owned, n_modalities */
    int dims;              /* 2: slice by slice; 3: sliding window */
    int axis;              /* 2D: NIfTI axis sliced along (0=i, 1=j, 2=k) */
    int patch[3];          /* 3D: patch size in tensor order (D, H, W) */
    VoxelOrder order;      /* how tensor axes map to NIfTI i, j, k */
    /* The grid the model was trained on (runtime/orient.h): world
     * direction of voxel axes i, j, k as an axis code such as "RAS"
     * ("" = unset: the scan's own axes are kept), and voxel spacing in mm
     * along those axes (0 = unset: the scan's own spacing is kept).
     * Both unset (old models): segment runs on the scan's grid as is. */
    char orientation[4];
    double spacing[3];
    uint8_t source_sha256[32];
    char *source_name; /* owned; file name of the imported model */
    char *notes;       /* owned, may be NULL: pruning summary (JSON text) */
} ModelMeta;

typedef struct {
    Value *values;
    int n_values, cap_values;
    Node *nodes;
    int n_nodes, cap_nodes;
    int input;                   /* value index of the single graph input */
    int outputs[SL_MAX_OUTPUTS]; /* outputs[0] is the segmentation output */
    int n_outputs;
    ModelMeta meta;
} Graph;

void graph_init(Graph *g);
void graph_free(Graph *g);
void meta_free(ModelMeta *m);

/* Add a value; takes ownership of data (may be NULL).  Returns its index
 * or a negative error code. */
int graph_add_value(Graph *g, const char *name, const Shape *shape,
                    float *data);
/* Add a node (copied); its name is duplicated.  The node's output value's
 * producer is set.  Returns the node index or a negative error code. */
int graph_add_node(Graph *g, const Node *n);
/* Value index by name, or -1. */
int graph_find_value(const Graph *g, const char *name);

/* Check structure: indices in range, every activation produced once,
 * topological order, weights present with plausible shapes.  Reports the
 * first problem with sl_error() naming `what` (usually the file name). */
int graph_validate(const Graph *g, const char *what);

/* Fill in activation shapes for the given input shape.  Returns ERR_SHAPE
 * with a message naming the node on any inconsistency. */
int graph_infer_shapes(Graph *g, const Shape *input);

/* Total FLOPs (multiply-add = 2) of one forward pass, after
 * graph_infer_shapes.  Parameters: number of floats in weights. */
int64_t graph_flops(const Graph *g);
int64_t graph_params(const Graph *g);

/* Deep copy (weights and metadata included). */
int graph_clone(Graph *dst, const Graph *src);

/* Smallest size >= want along spatial dim `dim` (0-based among spatial
 * dims) for which shape inference succeeds and the first output keeps the
 * input's spatial size, other dims taken from `base`.  -1 if none within
 * want + 1024. */
int64_t graph_valid_size(Graph *g, const Shape *base, int dim, int64_t want);

#endif
