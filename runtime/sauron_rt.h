/* sauron_rt.h: the embeddable Sauron runtime (libsauron_rt).
 *
 * Load a .sslim model, segment a volume held in memory, free.  This is the
 * only header a program embedding the runtime (a PACS plugin, a viewer)
 * needs; link with `pkg-config --libs sauron-rt` (static: --static).
 *
 * Conventions
 *  - Every function that can fail returns SRT_OK (0) or a negative SRT_E*
 *    code; srt_last_error() then gives one line saying what failed, where
 *    and what to do.  Nothing calls exit() or abort() on bad input, and
 *    nothing is printed unless srt_options.verbose is set (then the same
 *    line goes to stderr as "error: ...").
 *  - Ownership: srt_open() allocates the model; srt_close() frees it and
 *    everything it holds.  Strings returned by the srt_*_name functions
 *    belong to the model and live until srt_close().  Input buffers are
 *    only read, never kept; the label buffer is the caller's and is
 *    overwritten.
 *  - Threads: a model may be used by one thread at a time (it caches
 *    executors between calls); different models are independent, except
 *    that the last-error text is process-wide.  Each call runs on
 *    srt_options.n_threads OpenMP threads.  Labels do not depend on the
 *    thread count.
 */
#ifndef SAURON_RT_H
#define SAURON_RT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes (the runtime's own ERR_* values). */
enum {
    SRT_OK = 0,
    SRT_ENOMEM = -1,       /* allocation failed */
    SRT_EIO = -2,          /* the model file could not be read */
    SRT_EFORMAT = -3,      /* the file is not a valid .sslim model */
    SRT_EUNSUPPORTED = -4, /* valid model we cannot run */
    SRT_ESHAPE = -5,       /* volume size unusable by the model */
    SRT_EARG = -6          /* bad argument (NULL, sizes, affine) */
};

typedef struct srt_model srt_model; /* opaque */

typedef struct {
    int n_threads; /* OpenMP threads per call; <= 0: all cores */
    int verbose;   /* nonzero: also print error lines on stderr */
} srt_options;

/* Open the .sslim model at path.  opt may be NULL (all cores, quiet).
 * *out: a new model (free with srt_close), NULL on failure. */
int srt_open(const char *path, const srt_options *opt, srt_model **out);

/* Free a model (NULL is allowed). */
void srt_close(srt_model *m);

/* What the model expects and produces. */
int srt_n_classes(const srt_model *m);    /* labels are 0 .. n_classes-1 */
int srt_n_modalities(const srt_model *m); /* channels of the input */
int srt_dims(const srt_model *m);         /* 2: slice-wise, 3: patches */
/* Names (NULL if i is out of range). */
const char *srt_class_name(const srt_model *m, int i);
const char *srt_modality_name(const srt_model *m, int i);

/* Segment one volume.
 *  data:    raw intensities (float32, not normalised: the model's own
 *           normalisation is applied), laid out [n_mod][nz][ny][nx] with
 *           x (NIfTI i) fastest; n_mod == srt_n_modalities(m).
 *  dim:     nx, ny, nz (each >= 1).
 *  affine:  4x4 row-major (affine[4*r+c]: row r, column c) mapping voxel
 *           (i, j, k, 1) to world mm in RAS+ (NIfTI's sform convention; for
 * DICOM LPS negate the first two rows); the last row must be 0 0 0 1.  NULL:
 * diag(spacing), i.e. the volume's axes are R, A, S. spacing: voxel size in
 * mm along i, j, k, used only when affine is NULL (NULL: 1 mm). labels:
 * caller's buffer of nx*ny*nz int16 ([nz][ny][nx]), overwritten with the
 * label map on the volume's own grid. A model that records a training
 * orientation and spacing runs on that grid and its scores are resampled
 * back, exactly as the segment program does for a NIfTI file with the same
 * geometry. Returns SRT_OK or a negative code; labels are unspecified on
 * failure. */
int srt_segment(srt_model *m, const float *data, int n_mod,
                const int64_t dim[3], const double affine[16],
                const double spacing[3], int16_t *labels);

/* The last error line ("" if none yet).  Valid until the next srt_ call. */
const char *srt_last_error(void);

/* A short name for a return code ("out of memory", ...). */
const char *srt_strerror(int code);

#ifdef __cplusplus
}
#endif

#endif
