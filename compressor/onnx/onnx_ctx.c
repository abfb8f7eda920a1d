/* The import context: the symbol table (what each ONNX tensor name stands
 * for) and the one-line node error every importer file reports with. */
#include "onnx_ctx.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "runtime/common.h"

/* ---- symbol table ---- */

int sym_find(const OnnxCtx *c, const char *name)
{
    /* Newest first: a later definition of a name shadows nothing in valid
     * SSA graphs, but this keeps aliases cheap to find. */
    for (int k = c->n_syms - 1; k >= 0; k--)
        if (!strcmp(c->syms[k].name, name)) return k;
    return -1;
}

static Sym *sym_new(OnnxCtx *c, const char *name)
{
    if (c->n_syms == c->cap_syms) {
        int cap = c->cap_syms ? 2 * c->cap_syms : 64;
        Sym *s = sl_realloc(c->syms, (size_t)cap * sizeof *s);
        if (!s) return NULL;
        c->syms = s;
        c->cap_syms = cap;
    }
    Sym *s = &c->syms[c->n_syms];
    memset(s, 0, sizeof *s);
    s->name = sl_strdup(name);
    if (!s->name) return NULL;
    s->value = -1;
    s->node = -1;
    c->n_syms++;
    return s;
}

int sym_add_const(OnnxCtx *c, const char *name, OTensor *t, int node)
{
    Sym *s = sym_new(c, name);
    if (!s) {
        ot_free(t);
        sl_error("out of memory importing '%s'", c->path);
        return ERR_NOMEM;
    }
    s->kind = SYM_CONST;
    s->t = *t;
    s->node = node;
    memset(t, 0, sizeof *t);
    return c->n_syms - 1;
}

int sym_add_value(OnnxCtx *c, const char *name, int value)
{
    Sym *s = sym_new(c, name);
    if (!s) {
        sl_error("out of memory importing '%s'", c->path);
        return ERR_NOMEM;
    }
    s->kind = SYM_VALUE;
    s->value = value;
    return c->n_syms - 1;
}

void onnx_ctx_free(OnnxCtx *c)
{
    for (int k = 0; k < c->n_syms; k++) {
        sl_free(c->syms[k].name);
        ot_free(&c->syms[k].t);
    }
    sl_free(c->syms);
    sl_free(c->dir);
    c->syms = NULL;
    c->dir = NULL;
    c->n_syms = c->cap_syms = 0;
}

/* ---- attributes and messages ---- */

const char *onnx_node_name(const Onnx__NodeProto *n)
{
    if (n->name && *n->name) return n->name;
    if (n->n_output && n->output[0] && *n->output[0]) return n->output[0];
    return "?";
}

int onnx_node_fail(OnnxCtx *c, int idx, int code, const char *fmt, ...)
{
    char msg[600];
    const Onnx__NodeProto *n = c->gp->node[idx];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* The node's name and type come from the file: escaped.  Callers
     * escape the names they put in msg the same way. */
    sl_error("%s at node '%s' (#%d, %s) in '%s'", msg,
             sl_esc(onnx_node_name(n)).s, idx, sl_esc(n->op_type).s, c->path);
    return code;
}
