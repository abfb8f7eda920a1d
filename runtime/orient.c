/* Axis codes and model grids: see orient.h. */
#include "orient.h"

#include <math.h>
#include <string.h>

#include "common.h"

/* Largest model grid side: a 2 m field of view at 0.1 mm. */
#define ORIENT_MAX_DIM 20000

static const char POS[3] = {'R', 'A', 'S'};
static const char NEG[3] = {'L', 'P', 'I'};

static double col_norm(const Affine *x, int c)
{
    const double(*a)[4] = x->m;
    return sqrt(a[0][c] * a[0][c] + a[1][c] * a[1][c] + a[2][c] * a[2][c]);
}

/* world[v] (and sign[v]) for each voxel axis v: greedy, largest |cosine|
 * first, each world axis once. */
static void assign_axes(const Affine *x, int world[3], int sign[3])
{
    const double(*a)[4] = x->m;
    int used_v[3] = {0}, used_w[3] = {0};
    for (int n = 0; n < 3; n++) {
        int bv = -1, bw = -1;
        double best = -1.0;
        for (int v = 0; v < 3; v++) {
            if (used_v[v]) continue;
            double nv = col_norm(x, v);
            for (int w = 0; w < 3; w++) {
                if (used_w[w]) continue;
                double c = nv > 0 ? fabs(a[w][v]) / nv : 0.0;
                if (c > best) {
                    best = c;
                    bv = v;
                    bw = w;
                }
            }
        }
        used_v[bv] = used_w[bw] = 1;
        world[bv] = bw;
        sign[bv] = a[bw][bv] < 0 ? -1 : 1;
    }
}

void orient_axcodes(const Affine *aff, char code[4])
{
    int world[3], sign[3];
    assign_axes(aff, world, sign);
    for (int v = 0; v < 3; v++)
        code[v] = sign[v] > 0 ? POS[world[v]] : NEG[world[v]];
    code[3] = '\0';
}

int orient_parse(const char *code, int world[3], int sign[3])
{
    if (!code || strlen(code) != 3) return ERR_ARG;
    int seen[3] = {0};
    for (int v = 0; v < 3; v++) {
        char ch = code[v];
        if (ch >= 'a' && ch <= 'z') ch = (char)(ch - 'a' + 'A');
        int w = -1;
        for (int k = 0; k < 3; k++)
            if (ch == POS[k] || ch == NEG[k]) w = k;
        if (w < 0 || seen[w]++) return ERR_ARG;
        world[v] = w;
        sign[v] = ch == POS[w] ? 1 : -1;
    }
    return 0;
}

/* inv = a^-1 (3x3 part and translation).  Returns 0 or -1 (singular). */
static int affine_invert(const Affine *x, Affine *y)
{
    const double(*a)[4] = x->m;
    double(*inv)[4] = y->m;
    double det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) -
                 a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0]) +
                 a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
    double scale = 0.0;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 3; c++)
            scale = fmax(scale, fabs(a[r][c]));
    if (!(scale > 0.0) || !(fabs(det) > 1e-12 * scale * scale * scale) ||
        !isfinite(det))
        return -1;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 3; c++) {
            /* cofactor of a[c][r] (transposed) */
            int r1 = (c + 1) % 3, r2 = (c + 2) % 3;
            int c1 = (r + 1) % 3, c2 = (r + 2) % 3;
            inv[r][c] = (a[r1][c1] * a[r2][c2] - a[r1][c2] * a[r2][c1]) / det;
        }
    for (int r = 0; r < 3; r++)
        inv[r][3] = -(inv[r][0] * a[0][3] + inv[r][1] * a[1][3] +
                      inv[r][2] * a[2][3]);
    return 0;
}

/* out = a * b (affines). */
static void affine_mul(const Affine *x, const Affine *y, Affine *z)
{
    const double(*a)[4] = x->m, (*b)[4] = y->m;
    double(*out)[4] = z->m;
    for (int r = 0; r < 3; r++) {
        for (int c = 0; c < 4; c++) {
            double s = c == 3 ? a[r][3] : 0.0;
            for (int k = 0; k < 3; k++)
                s += a[r][k] * b[k][c];
            out[r][c] = s;
        }
    }
}

int orient_voxel_map(const Grid *from, const Grid *to, Affine *m)
{
    Affine inv;
    if (affine_invert(&to->aff, &inv)) return ERR_ARG;
    affine_mul(&inv, &from->aff, m);
    return 0;
}

int orient_map_is_identity(const Affine *a)
{
    const double(*m)[4] = a->m;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++)
            if (fabs(m[r][c] - (r == c ? 1.0 : 0.0)) > 1e-6) return 0;
    return 1;
}

int orient_model_grid(const Grid *in, const char *code, const double sp[3],
                      Grid *out)
{
    int world[3], sign[3], in_world[3], in_sign[3];
    Affine dir = {{{0}}}; /* unit direction of model axis t: column t */
    double in_sp[3];      /* scan spacing along the matching axis */
    memset(out, 0, sizeof *out);
    int keep = !code || !code[0];
    if (!keep && orient_parse(code, world, sign)) {
        sl_error("model axis code '%s' is not three of R/L, A/P, S/I; "
                 "re-export the model with sauron-compress",
                 code);
        return ERR_ARG;
    }
    const double(*A)[4] = in->aff.m;
    Affine inv;
    if (affine_invert(&in->aff, &inv)) {
        sl_error("the scan's voxel-to-world matrix is singular (sform or "
                 "qform); fix the scan header");
        return ERR_ARG;
    }
    assign_axes(&in->aff, in_world, in_sign);
    for (int t = 0; t < 3; t++) {
        int v = t; /* scan axis matching model axis t */
        if (keep) {
            double n = col_norm(&in->aff, t);
            for (int r = 0; r < 3; r++)
                dir.m[r][t] = A[r][t] / n;
        } else {
            dir.m[world[t]][t] = sign[t];
            for (int u = 0; u < 3; u++)
                if (in_world[u] == world[t]) v = u;
        }
        in_sp[t] = col_norm(&in->aff, v);
    }
    /* Voxel-centre corners of the scan in model-axis coordinates:
     * dir^-1 * world (dir is orthonormal when a code is given; a skewed
     * scan keeps its own skew when none is). */
    Affine di;
    if (affine_invert(&dir, &di)) {
        sl_error("the scan's axes are degenerate (sform or qform); fix the "
                 "scan header");
        return ERR_ARG;
    }
    double lo[3] = {INFINITY, INFINITY, INFINITY};
    double hi[3] = {-INFINITY, -INFINITY, -INFINITY};
    for (int c = 0; c < 8; c++) {
        double p[3], w[3];
        for (int v = 0; v < 3; v++)
            p[v] = (c >> v & 1) ? (double)(in->dim[v] - 1) : 0.0;
        for (int r = 0; r < 3; r++)
            w[r] = A[r][0] * p[0] + A[r][1] * p[1] + A[r][2] * p[2] + A[r][3];
        for (int t = 0; t < 3; t++) {
            double q =
                di.m[t][0] * w[0] + di.m[t][1] * w[1] + di.m[t][2] * w[2];
            lo[t] = fmin(lo[t], q);
            hi[t] = fmax(hi[t], q);
        }
    }
    double origin[3];
    for (int t = 0; t < 3; t++) {
        double s = sp && sp[t] > 0.0 ? sp[t] : in_sp[t];
        double ext = hi[t] - lo[t];
        /* the tolerance keeps an extent that is a whole number of voxels
         * in exact arithmetic from losing one to rounding */
        double n = floor(ext / s + ORIENT_SNAP) + 1.0;
        if (!(n >= 1.0 && n <= ORIENT_MAX_DIM)) {
            sl_error("the model grid would have %.0f voxels along axis %d "
                     "(scan extent %.1f mm at %.3g mm); check the scan's "
                     "pixdim and the model's spacing",
                     n, t, ext, s);
            return ERR_SHAPE;
        }
        out->dim[t] = (int64_t)n;
        origin[t] = lo[t] + 0.5 * (ext - (n - 1.0) * s);
        for (int r = 0; r < 3; r++)
            out->aff.m[r][t] = dir.m[r][t] * s;
    }
    for (int r = 0; r < 3; r++)
        out->aff.m[r][3] = dir.m[r][0] * origin[0] + dir.m[r][1] * origin[1] +
                           dir.m[r][2] * origin[2];
    return 0;
}
