/* Voxel grids in world space, axis codes, and the grid a model runs on.
 *
 * World space is NIfTI's RAS+ (x to the Right, y Anterior, z Superior, in
 * mm).  A grid's affine maps voxel indices (i, j, k, 1) to world mm; for
 * a scan it is the sform when its code is > 0, else the qform
 * (nio_geom_affine), as everywhere in the project.
 *
 * Axis codes name, for voxel axes i, j, k in turn, the world direction
 * each points to: "RAS" (i to the right, j anterior, k superior), "LPS"
 * (DICOM's patient axes), "ASR" (a sagittal stack), ...  An oblique axis
 * gets the letter of the world axis it is closest to, each world axis used
 * once (the greedy largest-cosine assignment nibabel's io_orientation also
 * makes).
 *
 * The model grid (orient_model_grid) has the model's axis code with axes
 * exactly along the world axes, the model's spacing, and covers the scan's
 * voxel centres.  A scan whose axes are a permutation and flips of the
 * model's at the same spacing gets a grid that is the same voxels in
 * another order (the voxel map is a signed permutation plus an integer
 * shift): reorientation is then exact and lossless both ways.  An oblique
 * scan is resampled through its affine onto the world-aligned grid.
 */
#ifndef SL_ORIENT_H
#define SL_ORIENT_H

#include <math.h>
#include <stdint.h>

/* A 3x4 affine map (a struct, so that const works on it in C11). */
typedef struct {
    double m[3][4];
} Affine;

typedef struct {
    int64_t dim[3]; /* voxels along i, j, k */
    Affine aff;     /* voxel (i, j, k, 1) -> world mm */
} Grid;

/* Axis code of an affine (3 letters and a NUL). */
void orient_axcodes(const Affine *aff, char code[4]);

/* Parse an axis code: 3 letters from R/L, A/P, S/I (either case), each
 * world axis once.  world[t]: world axis (0 x, 1 y, 2 z) of voxel axis t;
 * sign[t]: +1 if it points to R, A or S.  Returns 0 or ERR_ARG (no
 * message: callers say where the code came from). */
int orient_parse(const char *code, int world[3], int sign[3]);

/* The grid a model with axis code `code` ("" or NULL: the scan's own
 * axes) and spacing sp (an entry <= 0: the scan's spacing along the
 * matching axis) sees for scan grid `in`.  Its axes point exactly along
 * the code's world directions (or along the scan's axes), its voxel
 * centres cover the scan's voxel-centre box: n = floor(extent / sp) + 1
 * along each axis, centred in the box.  Returns 0, ERR_ARG (bad code,
 * singular scan affine) or ERR_SHAPE (grid too large); one message. */
int orient_model_grid(const Grid *in, const char *code, const double sp[3],
                      Grid *out);

/* m = to^-1 * from: maps voxel coordinates of `from` to voxel coordinates
 * of `to`.  Returns 0 or ERR_ARG if `to`'s affine is singular. */
int orient_voxel_map(const Grid *from, const Grid *to, Affine *m);

/* Nonzero if m is the identity within rounding (the grids coincide). */
int orient_map_is_identity(const Affine *m);

/* Voxel coordinate rounding: values within ORIENT_SNAP of an integer are
 * that integer, so maps that are exact permutations in exact arithmetic
 * pick one voxel with weight 1 (affines are stored as float32 in NIfTI;
 * 1e-4 voxel is far below any interpolation that matters and far above
 * double rounding of such maps). */
#define ORIENT_SNAP 1e-4
/* Inline, as resampling snaps 3 coordinates of every voxel both ways.
 * Adding and subtracting 1.5 * 2^52 rounds |x| < 2^51 to the nearest
 * integer, ties to even (what nearbyint does in the default rounding
 * mode) without a libm call; larger values are integers already. */
static inline double orient_snap(double x)
{
    const double big = 6755399441055744.0;         /* 1.5 * 2^52 */
    if (!(fabs(x) < 2251799813685248.0)) return x; /* 2^51; NaN too */
    double r = copysign((x + big) - big, x);       /* -0.0 as nearbyint */
    return fabs(x - r) <= ORIENT_SNAP ? r : x;
}

#endif
