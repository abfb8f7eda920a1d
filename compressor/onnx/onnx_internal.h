/* Private to compressor/onnx/: the lowering context shared by the file
 * reader (onnx_import.c) and the folding/lowering pass (onnx_fold.c).
 * Protobuf-c types appear only here and in those two files. */
#ifndef SL_ONNX_INTERNAL_H
#define SL_ONNX_INTERNAL_H

#include <stdint.h>

#include "onnx.pb-c.h"
#include "runtime/graph.h"

#define OT_MAX_DIMS 8

/* A constant tensor during folding: float32 data for float types, int64
 * for integer and bool types (shape arithmetic). */
typedef struct {
    int ndim;
    int64_t dims[OT_MAX_DIMS];
    int64_t numel;
    int is_int;
    float *f;   /* numel floats when !is_int (owned) */
    int64_t *i; /* numel ints when is_int (owned) */
} OTensor;

void ot_free(OTensor *t);
/* Allocate a tensor of the given dims (data zeroed). */
int ot_alloc(OTensor *t, int ndim, const int64_t *dims, int is_int);
/* Element k as double / as int64 whatever the storage. */
double ot_get(const OTensor *t, int64_t k);
int64_t ot_geti(const OTensor *t, int64_t k);
/* double -> int64, saturating (and NaN -> INT64_MIN) instead of UB. */
int64_t ot_d2i(double v);
/* Largest single dim a folded shape may have. */
#define OT_MAX_DIM_VALUE ((int64_t)1 << 31)

/* What an ONNX tensor name stands for while lowering. */
typedef enum {
    SYM_CONST, /* folded constant (initializer, Constant, shape glue) */
    SYM_VALUE, /* an IR value (activation or graph input) */
    SYM_VIEW   /* a pending Reshape/Transpose of an IR value */
} SymKind;
typedef enum { VIEW_RESHAPE, VIEW_TRANSPOSE } ViewKind;

typedef struct {
    char *name; /* owned */
    SymKind kind;
    OTensor t;      /* SYM_CONST */
    int value;      /* VALUE/VIEW: IR value; CONST: IR weight or -1 */
    ViewKind vkind; /* SYM_VIEW */
    int ndim;       /* SYM_VIEW: dims as ONNX sees them */
    int64_t dims[OT_MAX_DIMS];
    int perm[OT_MAX_DIMS]; /* VIEW_TRANSPOSE: view dim k = source perm[k] */
    int node;              /* ONNX node index that made it (messages) */
} Sym;

typedef struct {
    Graph *g;
    const char *path; /* model file, for messages */
    char *dir;        /* realpath of the model's folder (owned) */
    int opset;
    Sym *syms;
    int n_syms, cap_syms;
    const Onnx__GraphProto *gp;
} OnnxCtx;

/* Tensor proto -> OTensor (raw, typed fields, external data).  `what`
 * names the tensor in messages. */
int ot_from_proto(OnnxCtx *c, const Onnx__TensorProto *tp, OTensor *t);

/* Symbol table. */
int sym_find(const OnnxCtx *c, const char *name);
/* Add a symbol; takes ownership of t's data for SYM_CONST. */
int sym_add_const(OnnxCtx *c, const char *name, OTensor *t, int node);
int sym_add_value(OnnxCtx *c, const char *name, int value);
void onnx_ctx_free(OnnxCtx *c);

/* Lower every node of c->gp into c->g (graph input already added). */
int onnx_lower(OnnxCtx *c);

/* ---- lowering (onnx_lower.c, onnx_layout.c) ---- */

/* One ONNX node being lowered: its symbol per input (-1 if absent). */
typedef struct {
    OnnxCtx *c;
    int idx;
    const Onnx__NodeProto *n;
    int in[SL_MAX_INPUTS]; /* symbol per input, -1 if absent */
    int n_in;
} Lw;

/* "<msg> at node ..." for the node being lowered; returns code. */
int lw_fail(Lw *l, int code, const char *msg);
/* Input j as a constant, or NULL. */
const OTensor *lw_const(Lw *l, int j);
/* The node's output 0 now stands for what symbol src stands for (an
 * activation or a view; a constant is refused with an error). */
int lw_alias(Lw *l, int src);
/* Dims of activation input j (a view's dims, or its value's shape); an
 * error (reported) if the input is absent or a constant. */
int lw_act_dims(Lw *l, int j, int *nd, int64_t *dims);
/* Reshape/Squeeze/Unsqueeze/Flatten/Transpose/Pad/Slice/Cast on an
 * activation. */
int onnx_lower_layout(Lw *l);
/* IR value of activation input j (not a view), or an error. */
int lw_act_value(Lw *l, int j, int *v);
/* Add IR node nd for the node's output 0 and infer its shape. */
int lw_emit(Lw *l, Node *nd, int *out_value);
/* Resize (any opset) or Upsample. */
int onnx_lower_resize(Lw *l, int upsample);

#endif

/* ---- helpers shared by onnx_fold.c and onnx_lower.c ---- */

/* Node name for messages (its first output if unnamed). */
const char *onnx_node_name(const Onnx__NodeProto *n);
/* Report "<msg> at node 'N' (#idx, Op) in 'file'" and return code. */
int onnx_node_fail(OnnxCtx *c, int idx, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

const Onnx__AttributeProto *attr_find(const Onnx__NodeProto *n,
                                      const char *name);
int64_t attr_i(const Onnx__NodeProto *n, const char *name, int64_t def);
float attr_f(const Onnx__NodeProto *n, const char *name, float def);
/* Copy up to max ints; returns the count, -1 if absent, -2 if > max. */
int attr_ints(const Onnx__NodeProto *n, const char *name, int64_t *out,
              int max);
/* String attribute into buf (NUL-terminated), or def if absent. */
const char *attr_s(const Onnx__NodeProto *n, const char *name,
                   const char *def, char *buf, size_t len);

/* Fold a node whose inputs are all constants (c->syms), adding its
 * outputs as constants.  Returns 0 if folded, 1 if the op is not a
 * foldable one, or a negative code (reported). */
int onnx_fold(OnnxCtx *c, int idx);
/* The dims a Reshape to `shape` gives for an input of dims in[]. */
int onnx_reshape_dims(const int64_t *in, int in_nd, const OTensor *shape,
                      int allowzero, int64_t *out, int *out_nd);
