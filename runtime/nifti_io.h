/* NIfTI-1/NIfTI-2 input and label-map output (through libnifti's nifti2
 * API; .nii and .nii.gz).
 *
 * Reading converts any real datatype libnifti reads to float32 with
 * scl_slope/scl_inter applied (slope 0 means "no scaling").  A 3D file is
 * one modality; a 4D file holds one volume per modality (dim[4]); several
 * files joined by commas ("t1.nii.gz,t2.nii.gz") are stacked in order and
 * must share one grid (dims, pixdim, qform/sform codes and matrices).
 * The first file's header (without data) is kept as the NiftiGeom used to
 * write outputs with exactly the input's geometry.
 */
#ifndef SL_NIFTI_IO_H
#define SL_NIFTI_IO_H

#include <stdint.h>

#include "volume.h"

typedef struct NiftiGeom NiftiGeom; /* opaque: a header without data */

/* Read `spec` (one path, or paths joined by commas) into v (overwritten;
 * free with volume_free) and, if geom is not NULL, its geometry (free with
 * nio_geom_free).  Returns 0, ERR_IO (missing/unreadable), ERR_FORMAT
 * (malformed header, data shorter than the header says), ERR_UNSUPPORTED
 * (complex/RGB datatypes, 5D+ data, .hdr/.img pairs), ERR_SHAPE (grids
 * differ), ERR_NOMEM (out of memory, or the float32 volume would exceed
 * max_bytes); one line via sl_error() on failure, nothing allocated on
 * failure.
 *
 * Resource claims are checked before any allocation: every header field
 * used in size arithmetic is range-checked; a .nii must hold the data its
 * header declares (file size); a .nii.gz may not declare more than deflate
 * can expand to (1032:1), and below that its voxel buffer grows with the
 * data decompression actually yields, so a lying header costs at most
 * about twice the real data.  Beyond the voxels, memory is O(1): the raw
 * data are converted in 1 MiB chunks, never held whole. */
int nio_read_within(const char *spec, uint64_t max_bytes, Volume *v,
                    NiftiGeom **geom);
/* nio_read_within with nio_default_max_memory(). */
int nio_read(const char *spec, Volume *v, NiftiGeom **geom);

/* The default memory limit: physical RAM / NIO_DEFAULT_MEMORY_DIVISOR
 * (UINT64_MAX if the RAM size is unknown). */
#define NIO_DEFAULT_MEMORY_DIVISOR 2
uint64_t nio_default_max_memory(void);
void nio_geom_free(NiftiGeom *g);

/* Grid size nx, ny, nz of a geometry. */
void nio_geom_dims(const NiftiGeom *g, int64_t dim[3]);
/* Voxel-to-world matrix of a geometry: world (x, y, z) in mm =
 * m * (i, j, k, 1).  The sform if its code is set, else the qform (which
 * libnifti builds from pixdim alone when qform_code is 0). */
void nio_geom_affine(const NiftiGeom *g, double m[3][4]);

/* Write a label map labels [nz][ny][nx] with g's grid and geometry:
 * uint8 if n_classes <= 255, else int16; scaling reset; written to a
 * temporary name beside `path` and renamed.  path must end in .nii or
 * .nii.gz.  ERR_EXISTS if path exists and !force. */
int nio_write_labels(const char *path, const NiftiGeom *g,
                     const int16_t *labels, int n_classes, int force);
/* Write probabilities probs [nc][nz][ny][nx] as a 4D float32 file (one
 * volume per class) with g's geometry; same rules as nio_write_labels. */
int nio_write_probs(const char *path, const NiftiGeom *g, const float *probs,
                    int nc, int force);

/* Nonzero if path ends in .nii or .nii.gz. */
int nio_is_nifti_name(const char *path);

#endif
