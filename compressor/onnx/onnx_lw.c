/* Helpers every lowering function uses: the node's inputs as constants,
 * activations or views, emitting an IR node, aliasing an output, and the
 * node's error line. */
#include "onnx_lw.h"

#include <stdio.h>
#include <string.h>

#include "runtime/common.h"
#include "runtime/ops/ops.h"

int lw_fail(Lw *l, int code, const char *msg)
{
    return onnx_node_fail(l->c, l->idx, code, "%s", msg);
}

/* ---- symbols and values ---- */

const OTensor *lw_const(Lw *l, int j)
{
    if (j >= l->n_in || l->in[j] < 0) return NULL;
    Sym *s = &l->c->syms[l->in[j]];
    return s->kind == SYM_CONST ? &s->t : NULL;
}

int lw_is_act(Lw *l, int j)
{
    return j < l->n_in && l->in[j] >= 0 &&
           l->c->syms[l->in[j]].kind != SYM_CONST;
}

/* IR value of input j, which must be an activation (not a view). */
int lw_act_value(Lw *l, int j, int *v)
{
    if (j >= l->n_in || l->in[j] < 0)
        return lw_fail(l, ERR_FORMAT, "missing input");
    Sym *s = &l->c->syms[l->in[j]];
    if (s->kind == SYM_CONST)
        return onnx_node_fail(
            l->c, l->idx, ERR_UNSUPPORTED,
            "input '%s' is a constant where an activation is expected",
            sl_esc(s->name).s);
    if (s->kind == SYM_VIEW) {
        const Onnx__NodeProto *m =
            s->node >= 0 ? l->c->gp->node[s->node] : NULL;
        return onnx_node_fail(
            l->c, l->idx, ERR_UNSUPPORTED,
            "input '%s' comes from a %s (node '%s') that changes "
            "the layout; only the exporter patterns "
            "Transpose-Softmax-Transpose and "
            "Reshape-BatchNormalization-Reshape are supported",
            sl_esc(s->name).s, m ? sl_esc(m->op_type).s : "reshape",
            m ? sl_esc(onnx_node_name(m)).s : "?");
    }
    *v = s->value;
    return 0;
}

/* Dims input j has as ONNX sees it; it must be an activation or a view.
 * A folded constant can reach a layout op that does not fold (Pad, or a
 * Reshape whose shape is computed from an activation): it has no IR value
 * yet, so it is refused here rather than read as one. */
int lw_act_dims(Lw *l, int j, int *nd, int64_t *dims)
{
    if (j >= l->n_in || l->in[j] < 0)
        return lw_fail(l, ERR_FORMAT, "missing input");
    const Sym *s = &l->c->syms[l->in[j]];
    if (s->kind == SYM_CONST)
        return onnx_node_fail(
            l->c, l->idx, ERR_UNSUPPORTED,
            "input '%s' is a constant where an activation is expected",
            sl_esc(s->name).s);
    if (s->kind == SYM_VIEW) {
        *nd = s->ndim;
        memcpy(dims, s->dims, sizeof s->dims);
        return 0;
    }
    const Shape *sh = &l->c->g->values[s->value].shape;
    *nd = sh->ndim;
    for (int k = 0; k < sh->ndim; k++)
        dims[k] = sh->d[k];
    return 0;
}

/* Add IR node nd with output named after ONNX output 0; infer its shape. */
int lw_emit(Lw *l, Node *nd, int *out_value)
{
    Graph *g = l->c->g;
    Shape empty = {0, {0}};
    const char *oname = l->n->n_output ? l->n->output[0] : NULL;
    if (!oname || !*oname)
        return lw_fail(l, ERR_FORMAT, "node without an output");
    nd->name = l->n->name && *l->n->name ? l->n->name : l->n->output[0];
    int v = graph_add_value(g, oname, &empty, NULL);
    if (v < 0) return v;
    nd->out = v;
    int k = graph_add_node(g, nd);
    if (k < 0) return k;
    Shape s;
    int rc = op_table[nd->op].infer(g, &g->nodes[k], &s);
    if (rc) {
        if (!sl_error_reported())
            onnx_node_fail(l->c, l->idx, ERR_SHAPE, "inconsistent shapes");
        return rc < 0 ? rc : ERR_SHAPE;
    }
    g->values[v].shape = s;
    rc = sym_add_value(l->c, oname, v);
    if (rc < 0) return rc;
    if (out_value) *out_value = v;
    return 0;
}

/* Make the node's output 0 stand for what symbol src stands for. */
int lw_alias(Lw *l, int src)
{
    OnnxCtx *c = l->c;
    Sym copy = c->syms[src];
    int r;
    if (copy.kind == SYM_CONST)
        /* Reached when a node on a constant was not folded (too many
         * inputs): the file is malformed. */
        return onnx_node_fail(
            c, l->idx, ERR_UNSUPPORTED,
            "input '%s' is a constant where an activation is expected",
            sl_esc(copy.name).s);
    r = sym_add_value(c, l->n->output[0], copy.value);
    if (r < 0) return r;
    Sym *s = &c->syms[r];
    char *nm = s->name;
    *s = copy;
    s->name = nm;
    memset(&s->t, 0, sizeof s->t);
    return 0;
}

int lw_consumers(const OnnxCtx *c, const char *name)
{
    int k = 0;
    for (size_t i = 0; i < c->gp->n_node; i++)
        for (size_t j = 0; j < c->gp->node[i]->n_input; j++)
            k += !strcmp(c->gp->node[i]->input[j], name);
    for (size_t i = 0; i < c->gp->n_output; i++)
        k += c->gp->output[i]->name && !strcmp(c->gp->output[i]->name, name)
                 ? 2
                 : 0;
    return k;
}
