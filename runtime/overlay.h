/* Overlay pictures: the scan with its label map drawn over it, written as
 * a PNG (segment --overlay).
 *
 * Three panels side by side: axial, coronal, sagittal, each a plane
 * through the centre of the labelled region (the mean voxel index of the
 * non-background voxels, rounded to a voxel; the volume centre when no
 * voxel is labelled).  Each panel is resampled to world axes through the
 * voxel-to-world affine (the sform if set, else the qform: the same rule
 * as the rest of the runtime, nio_geom_affine), nearest neighbour, with
 * square pixels whose side is the smallest voxel spacing (coarser if a
 * panel would exceed OVERLAY_MAX_PANEL pixels).  So the same head stored
 * with its voxel axes permuted or flipped (affine columns to match) gives
 * the same picture, byte for byte.  An index exactly halfway between two
 * voxels goes to the one with the smaller world coordinate, so the rule
 * does not depend on the storage order either.
 *
 * Convention: RADIOLOGICAL, written on the picture: the patient's right
 * on the image left in the axial and coronal panels; anterior at the top
 * of the axial panel, superior at the top of the coronal and sagittal
 * ones, anterior on the left of the sagittal panel.  A letter beside each
 * panel edge names the direction (R L A P S I).
 *
 * Intensity: modality 0, window from the 0.5th to the 99.5th percentile
 * of all its finite voxels (a 4096-bin histogram between the minimum and
 * the maximum: independent of the voxel order), grey levels 0..255.
 * Labels: class c > 0 blended over the grey at alpha 115/256 in a fixed
 * colour (overlay_class_colour), and its outline (a labelled pixel with a
 * 4-neighbour of another class in the panel) drawn opaque.  Pixels
 * outside the scan are black.
 */
#ifndef SL_OVERLAY_H
#define SL_OVERLAY_H

#include <stdint.h>

#include "volume.h"

enum { OVERLAY_AXIAL, OVERLAY_CORONAL, OVERLAY_SAGITTAL, OVERLAY_PANELS };
/* Largest panel side in pixels: a 0.5 mm whole-head scan fits (~512). */
enum { OVERLAY_MAX_PANEL = 1024 };
/* Fill opacity of a class colour over the grey, out of 256. */
enum { OVERLAY_ALPHA = 115 };

typedef struct {
    int x0, y0; /* top-left pixel of the panel in the picture */
    int w, h;   /* its size in pixels */
} OverlayPanel;

typedef struct {
    int width, height;
    uint8_t *rgb; /* [height][width][3], owned (sl_alloc) */
    OverlayPanel panel[OVERLAY_PANELS];
    double step;       /* pixel side in mm */
    int64_t centre[3]; /* voxel (i, j, k) the three planes go through */
} OverlayImage;

/* Render v's modality 0 (raw intensities) with labels [nz][ny][nx]
 * (values 0..n_classes-1; 0 is background) through the voxel-to-world
 * affine aff (world = aff * (i, j, k, 1), mm; not modified).  Returns 0,
 * ERR_ARG (a singular affine: the message names `what`, the scan) or
 * ERR_NOMEM. */
int overlay_render(OverlayImage *img, const Volume *v, const int16_t *labels,
                   double aff[3][4], const char *what);
void overlay_free(OverlayImage *img);

/* Colour of class c (c >= 1; the table repeats after its end). */
void overlay_class_colour(int c, uint8_t rgb[3]);

/* Write img as an 8-bit RGB PNG (no time stamp: the same picture gives
 * the same bytes), to a temporary name beside path then renamed.  path
 * must end in .png; ERR_EXISTS if it exists and !force, ERR_IO. */
int overlay_write_png(const char *path, const OverlayImage *img, int force);

#endif
