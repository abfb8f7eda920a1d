/* Layout and resampling operators on activations: Reshape, Squeeze,
 * Unsqueeze, Flatten and Transpose become pending "views" of an IR value
 * (see onnx_lower.c); Pad, Slice and Cast are accepted where they change
 * nothing; Resize and Upsample become IR Resize nodes. */
#include <math.h>
#include <string.h>

#include "onnx_attr.h"
#include "onnx_lower_ops.h"
#include "runtime/common.h"

static int same_dims(int na, const int64_t *a, const Shape *b)
{
    if (na != b->ndim) return 0;
    for (int k = 0; k < na; k++)
        if (a[k] != b->d[k]) return 0;
    return 1;
}

/* Output 0 of the node as a view of source value src. */
static int make_view(Lw *l, int src, ViewKind vk, int nd, const int64_t *dims,
                     const int *perm)
{
    OnnxCtx *c = l->c;
    const Shape *ss = &c->g->values[src].shape;
    int identity = 1;
    if (vk == VIEW_RESHAPE) {
        identity = same_dims(nd, dims, ss);
    } else {
        for (int k = 0; k < nd; k++)
            identity &= perm[k] == k;
    }
    int r = sym_add_value(c, l->n->output[0], src);
    if (r < 0) return r;
    if (identity) return 0;
    Sym *s = &c->syms[r];
    s->kind = SYM_VIEW;
    s->vkind = vk;
    s->ndim = nd;
    s->node = l->idx;
    memcpy(s->dims, dims, (size_t)nd * sizeof *dims);
    if (perm) memcpy(s->perm, perm, (size_t)nd * sizeof *perm);
    return 0;
}

/* ---- layout ops on activations: Reshape & co, Transpose ---- */

int onnx_lower_reshape(Lw *l, int kind)
{
    Sym *s = &l->c->syms[l->in[0]];
    int nd, ond = 0;
    int64_t dims[OT_MAX_DIMS], od[OT_MAX_DIMS];
    int rc = lw_act_dims(l, 0, &nd, dims);
    if (rc) return rc;
    if (s->kind == SYM_VIEW && s->vkind != VIEW_RESHAPE)
        return lw_fail(l, ERR_UNSUPPORTED,
                       "reshape of a transposed tensor is not supported");
    if (kind == LAYOUT_RESHAPE) {
        const OTensor *t = lw_const(l, 1);
        if (!t)
            return lw_fail(
                l, ERR_UNSUPPORTED,
                "Reshape target shape is not a constant after folding");
        if (onnx_reshape_dims(dims, nd, t, (int)attr_i(l->n, "allowzero", 0),
                              od, &ond))
            return lw_fail(
                l, ERR_SHAPE,
                "Reshape to a shape with a different element count");
    } else if (kind == LAYOUT_FLATTEN) {
        int64_t ax = attr_i(l->n, "axis", 1);
        if (ax < 0) ax += nd;
        if (ax < 0 || ax > nd)
            return lw_fail(l, ERR_FORMAT, "Flatten axis out of range");
        od[0] = od[1] = 1;
        for (int k = 0; k < nd; k++)
            od[k >= ax] *= dims[k];
        ond = 2;
    } else {
        /* Squeeze / Unsqueeze: axes from the attribute or input 1. */
        int64_t axes[OT_MAX_DIMS];
        int na = -1;
        const OTensor *t = lw_const(l, 1);
        if (t && t->numel <= OT_MAX_DIMS) {
            na = (int)t->numel;
            for (int k = 0; k < na; k++)
                axes[k] = ot_geti(t, k);
        } else {
            na = attr_ints(l->n, "axes", axes, OT_MAX_DIMS);
        }
        char mark[OT_MAX_DIMS] = {0};
        int r = kind == LAYOUT_UNSQUEEZE ? nd + (na > 0 ? na : 0) : nd;
        if (r > OT_MAX_DIMS)
            return lw_fail(l, ERR_UNSUPPORTED, "too many dims");
        for (int k = 0; k < na; k++) {
            int64_t a = axes[k] < 0 ? axes[k] + r : axes[k];
            if (a < 0 || a >= r)
                return lw_fail(l, ERR_FORMAT, "axis out of range");
            mark[a] = 1;
        }
        if (kind == LAYOUT_UNSQUEEZE) {
            if (na < 0)
                return lw_fail(l, ERR_FORMAT, "Unsqueeze without axes");
            for (int k = 0, j = 0; k < r; k++)
                od[ond++] = mark[k] ? 1 : dims[j++];
        } else {
            for (int k = 0; k < nd; k++)
                if (!(na < 0 ? dims[k] == 1 : mark[k] && dims[k] == 1))
                    od[ond++] = dims[k];
        }
    }
    if (ond > OT_MAX_DIMS)
        return lw_fail(l, ERR_UNSUPPORTED, "too many dims");
    return make_view(l, s->value, VIEW_RESHAPE, ond, od, NULL);
}

int onnx_lower_transpose(Lw *l, int unused)
{
    (void)unused;
    Sym *s = &l->c->syms[l->in[0]];
    int nd, perm[OT_MAX_DIMS], np2[OT_MAX_DIMS];
    int64_t dims[OT_MAX_DIMS], od[OT_MAX_DIMS], p64[OT_MAX_DIMS];
    int rc = lw_act_dims(l, 0, &nd, dims);
    if (rc) return rc;
    if (s->kind == SYM_VIEW && s->vkind != VIEW_TRANSPOSE)
        return lw_fail(l, ERR_UNSUPPORTED,
                       "transpose of a reshaped tensor is not supported");
    int np = attr_ints(l->n, "perm", p64, OT_MAX_DIMS);
    if (np < 0) {
        for (int k = 0; k < nd; k++)
            p64[k] = nd - 1 - k;
    } else if (np != nd) {
        return lw_fail(l, ERR_FORMAT, "Transpose perm has the wrong length");
    }
    for (int k = 0; k < nd; k++) {
        if (p64[k] < 0 || p64[k] >= nd)
            return lw_fail(l, ERR_FORMAT, "Transpose perm out of range");
        perm[k] = (int)p64[k];
        od[k] = dims[perm[k]];
        /* Compose with an earlier transpose: view dim k = source dim. */
        np2[k] = s->kind == SYM_VIEW ? s->perm[perm[k]] : perm[k];
    }
    return make_view(l, s->value, VIEW_TRANSPOSE, nd, od, np2);
}

/* Pad, Slice and Cast on an activation are accepted only where they do
 * nothing (zero pads at the import shape, a full-range slice, a cast to
 * float): exporters emit them for sizes that turn out to match. */
int onnx_lower_noop(Lw *l, int kind)
{
    int nd;
    int64_t dims[OT_MAX_DIMS];
    int rc = lw_act_dims(l, 0, &nd, dims);
    if (rc) return rc;
    if (kind == NOOP_CAST) {
        if (attr_i(l->n, "to", 1) != 1)
            return lw_fail(l, ERR_UNSUPPORTED,
                           "Cast of an activation to a non-float type");
    } else if (kind == NOOP_PAD) {
        int64_t pads[2 * OT_MAX_DIMS];
        int np;
        char buf[32];
        const OTensor *t = lw_const(l, 1);
        if (l->c->opset < 11) {
            np = attr_ints(l->n, "pads", pads, 2 * OT_MAX_DIMS);
        } else {
            np = t && t->numel <= 2 * OT_MAX_DIMS ? (int)t->numel : -1;
            for (int k = 0; k < np; k++)
                pads[k] = ot_geti(t, k);
        }
        if (np < 0 ||
            (l->n_in > 1 && l->in[1] >= 0 && !t && l->c->opset >= 11))
            return lw_fail(
                l, ERR_UNSUPPORTED,
                "Pad with pads that are not constant after folding");
        for (int k = 0; k < np; k++)
            if (pads[k] != 0)
                return onnx_node_fail(
                    l->c, l->idx, ERR_UNSUPPORTED,
                    "Pad by non-zero amounts at the import shape is not "
                    "supported (mode '%s'); export at a size the network "
                    "takes without padding",
                    sl_esc(attr_s(l->n, "mode", "constant", buf, sizeof buf))
                        .s);
    } else { /* Slice */
        const OTensor *st = lw_const(l, 1), *en = lw_const(l, 2);
        const OTensor *ax = lw_const(l, 3), *sp = lw_const(l, 4);
        if (l->c->opset < 10 || !st || !en || st->numel != en->numel)
            return lw_fail(l, ERR_UNSUPPORTED,
                           "Slice of an activation is not supported");
        for (int64_t k = 0; k < st->numel; k++) {
            int64_t a = ax && ax->numel == st->numel ? ot_geti(ax, k) : k;
            if (a < 0) a += nd;
            int64_t b = ot_geti(st, k), e = ot_geti(en, k);
            int64_t step = sp && sp->numel == st->numel ? ot_geti(sp, k) : 1;
            if (a < 0 || a >= nd)
                return lw_fail(l, ERR_FORMAT, "Slice axis out of range");
            if (b < 0) b += dims[a];
            if (e < 0) e += dims[a];
            if (step != 1 || b > 0 || e < dims[a])
                return lw_fail(l, ERR_UNSUPPORTED,
                               "Slice of an activation that drops elements "
                               "is not supported");
        }
    }
    return lw_alias(l, l->in[0]);
}

/* ---- Resize / Upsample ---- */

int onnx_lower_resize(Lw *l, int upsample)
{
    OnnxCtx *c = l->c;
    Graph *g = c->g;
    int x, rc;
    char buf[64];
    if ((rc = lw_act_value(l, 0, &x))) return rc;
    const Shape *xs = &g->values[x].shape;
    int nsp = xs->ndim - 2;
    if (nsp < 1 || nsp > 3)
        return lw_fail(l, ERR_SHAPE, "Resize input must be 3D to 5D");
    Node nd = {0};
    ResizeParams *p = &nd.p.resize;
    p->nsp = nsp;
    const char *mode = attr_s(l->n, "mode", "nearest", buf, sizeof buf);
    if (!strcmp(mode, "nearest"))
        p->mode = RESIZE_NEAREST;
    else if (!strcmp(mode, "linear") || !strcmp(mode, "bilinear") ||
             !strcmp(mode, "trilinear"))
        p->mode = RESIZE_LINEAR;
    else
        return onnx_node_fail(
            c, l->idx, ERR_UNSUPPORTED,
            "Resize mode '%s' not supported (nearest, linear)",
            sl_esc(mode).s);
    if (upsample || c->opset < 11) {
        /* Upsample and Resize-10: asymmetric coordinates, floor. */
        p->coord = COORD_ASYMMETRIC;
        p->nearest = NEAREST_FLOOR;
    } else {
        const char *ct = attr_s(l->n, "coordinate_transformation_mode",
                                "half_pixel", buf, sizeof buf);
        if (!strcmp(ct, "half_pixel"))
            p->coord = COORD_HALF_PIXEL;
        else if (!strcmp(ct, "pytorch_half_pixel"))
            p->coord = COORD_PYTORCH_HALF_PIXEL;
        else if (!strcmp(ct, "align_corners"))
            p->coord = COORD_ALIGN_CORNERS;
        else if (!strcmp(ct, "asymmetric"))
            p->coord = COORD_ASYMMETRIC;
        else
            return onnx_node_fail(
                c, l->idx, ERR_UNSUPPORTED,
                "Resize coordinate_transformation_mode '%s' not supported",
                sl_esc(ct).s);
        const char *nm = attr_s(l->n, "nearest_mode", "round_prefer_floor",
                                buf, sizeof buf);
        if (!strcmp(nm, "round_prefer_floor"))
            p->nearest = NEAREST_ROUND_PREFER_FLOOR;
        else if (!strcmp(nm, "round_prefer_ceil"))
            p->nearest = NEAREST_ROUND_PREFER_CEIL;
        else if (!strcmp(nm, "floor"))
            p->nearest = NEAREST_FLOOR;
        else if (!strcmp(nm, "ceil"))
            p->nearest = NEAREST_CEIL;
        else
            return onnx_node_fail(c, l->idx, ERR_UNSUPPORTED,
                                  "Resize nearest_mode '%s' not supported",
                                  sl_esc(nm).s);
        if (attr_i(l->n, "antialias", 0) || attr_find(l->n, "axes"))
            return lw_fail(l, ERR_UNSUPPORTED,
                           "Resize antialias/axes (opset 18) not supported");
    }
    double sc[SL_MAX_DIMS];
    int have = 0;
    const OTensor *scales = NULL, *sizes = NULL;
    if (upsample && c->opset < 9) {
        const Onnx__AttributeProto *a = attr_find(l->n, "scales");
        if (!a || a->n_floats != (size_t)xs->ndim)
            return lw_fail(l, ERR_FORMAT, "Upsample without scales");
        for (int k = 0; k < xs->ndim; k++)
            sc[k] = a->floats[k];
        have = 1;
    } else {
        int si = c->opset < 11 || upsample ? 1 : 2;
        for (int j = 1; j < l->n_in; j++)
            if (l->in[j] >= 0 && !lw_const(l, j))
                return lw_fail(
                    l, ERR_UNSUPPORTED,
                    "Resize scales/sizes are not constant after folding");
        scales = lw_const(l, si);
        sizes = si == 2 ? lw_const(l, 3) : NULL;
        if (scales && scales->numel > 0) {
            if (scales->numel != xs->ndim)
                return lw_fail(l, ERR_FORMAT,
                               "Resize scales have the wrong length");
            for (int k = 0; k < xs->ndim; k++)
                sc[k] = ot_get(scales, k);
            have = 1;
        } else if (sizes && sizes->numel == xs->ndim) {
            for (int k = 0; k < xs->ndim; k++)
                sc[k] = (double)ot_geti(sizes, k) / (double)xs->d[k];
            have = 2;
        }
    }
    if (!have)
        return lw_fail(l, ERR_FORMAT, "Resize without scales or sizes");
    if (sc[0] != 1.0 || sc[1] != 1.0)
        return lw_fail(l, ERR_UNSUPPORTED,
                       "Resize of the batch or channel dim");
    nd.op = OP_RESIZE;
    nd.n_in = 1;
    nd.in[0] = x;
    int integral = 1;
    for (int k = 0; k < nsp; k++) {
        p->scale[k] = sc[2 + k];
        if (!(p->scale[k] > 0 && p->scale[k] <= 1024))
            return lw_fail(l, ERR_FORMAT,
                           "Resize scale must be in (0, 1024]");
        integral &= p->scale[k] == floor(p->scale[k]);
    }
    if (have == 2 && !integral) {
        /* "Resize to the size of the skip": sizes came from another
         * tensor's shape; find the latest activation of that size so the
         * relation holds at every input size. */
        for (int v = g->n_values - 1; v >= 0; v--) {
            const Shape *vs = &g->values[v].shape;
            if (g->values[v].data || vs->ndim != xs->ndim || v == x) continue;
            int same = 1;
            for (int k = 0; k < nsp; k++)
                same &= vs->d[2 + k] == ot_geti(sizes, 2 + k);
            if (same) {
                nd.n_in = 2;
                nd.in[1] = v;
                break;
            }
        }
    }
    return lw_emit(l, &nd, NULL);
}
