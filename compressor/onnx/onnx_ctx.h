/* Private to compressor/onnx/: the import context shared by every file of
 * the importer (what each ONNX tensor name stands for, the graph being
 * built) and the node error line.  Protobuf-c types never leave
 * compressor/onnx/. */
#ifndef SL_ONNX_CTX_H
#define SL_ONNX_CTX_H

#include <stdint.h>

#include "onnx.pb-c.h"
#include "onnx_tensor.h"
#include "runtime/graph.h"

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

/* Symbol table: index of the newest symbol called name, or -1. */
int sym_find(const OnnxCtx *c, const char *name);
/* Add a symbol; takes ownership of t's data for SYM_CONST.  Return its
 * index, or ERR_NOMEM (reported). */
int sym_add_const(OnnxCtx *c, const char *name, OTensor *t, int node);
int sym_add_value(OnnxCtx *c, const char *name, int value);
void onnx_ctx_free(OnnxCtx *c);

/* Node name for messages (its first output if unnamed). */
const char *onnx_node_name(const Onnx__NodeProto *n);
/* Report "<msg> at node 'N' (#idx, Op) in 'file'" and return code; names
 * from the file put in msg are escaped by the caller (sl_esc). */
int onnx_node_fail(OnnxCtx *c, int idx, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
