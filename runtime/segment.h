/* The segmentation driver: runs a model over a whole volume.
 *
 * 2D models (meta.dims == 2) run slice by slice along meta.axis, several
 * slices per exec_run, each slice padded with zeros (after normalisation)
 * up to a size the network accepts and cropped back.  3D models
 * (meta.dims == 3) run a sliding window of meta.patch with step
 * patch * 0.5 and nnU-Net's Gaussian weighting; windows larger than the
 * volume along a dim are zero-padded.
 *
 * Memory bound (3D): probabilities are fused in a slab accumulator that
 * spans one window depth along tensor axis 0 and the whole volume along
 * axes 1 and 2: (n_classes + 1) * min(P0, S0) * S1 * S2 floats, where S
 * is the volume size in tensor order.  Planes that no later window
 * touches are argmax'ed into the label map and the slab moves on; no
 * per-class map of the whole volume is ever allocated (unless the caller
 * asks for probabilities, which are the output itself).
 *
 * Labels come from the argmax over classes; when the graph's last op is
 * not Softmax the probabilities (and the 3D fusion) use a softmax of the
 * outputs.  Results do not depend on the thread count.
 */
#ifndef SL_SEGMENT_H
#define SL_SEGMENT_H

#include <stddef.h>
#include <stdint.h>

#include "graph.h"
#include "volume.h"

typedef struct {
    int n_threads; /* <= 0: all cores */
    int batch;     /* 2D slices per exec_run; <= 0: chosen from the slice size
                    * (activations within 16 MiB, at most 4; segment.c) */
    double step;   /* 3D window step as a fraction of the patch; <= 0: 0.5 */
    int tta;       /* test-time mirroring (mirror.h): the softmax averaged
                    * over 4 (2D) or 8 (3D) mirrored passes on the network's
                    * input grid; that many times the network time */
    /* Called after each slice batch or window (may be NULL). */
    void (*progress)(void *ctx, int64_t done, int64_t total);
    void *progress_ctx;
} SegmentOptions;

typedef struct Segmenter Segmenter;

/* Bind a model (g must outlive the segmenter and is not copied; its
 * activation shapes change as inputs are run).  Checks the metadata.
 * o may be NULL (defaults).  Returns 0 or a negative code (message
 * printed). */
int segmenter_create(Graph *g, const SegmentOptions *o, Segmenter **out);
void segmenter_free(Segmenter *s);

/* Segment one case.  in: raw intensities (normalised here as the model's
 * metadata says), in->n_mod == meta.n_modalities.  labels: [nz][ny][nx]
 * (overwritten).  probs: NULL, or [n_classes][nz][ny][nx] (overwritten).
 * Executors are created once per distinct input shape and reused across
 * calls.  Returns 0 or a negative code (message printed). */
int segmenter_run(Segmenter *s, const Volume *in, int16_t *labels,
                  float *probs);

/* Where class scores go instead of a label map: planes
 * off[0] .. off[0]+box[0]-1 along tensor axis 0, each call covering whole
 * planes (box[1], box[2] = the volume's size), in increasing order, as
 * scores [nc, pad0, pad1, pad2] (tensor order ax, see volume.h), to be
 * divided by wsum [pad0, pad1, pad2] when it is not NULL (3D fusion). */
typedef struct {
    void (*planes)(void *ctx, const float *scores, const float *wsum, int nc,
                   const int ax[3], const int64_t off[3],
                   const int64_t box[3], const int64_t pad[3]);
    void *ctx;
    /* Nonzero: scores are probabilities.  Zero: 2D models pass the
     * network's raw outputs (logits when its last op is a Softmax that is
     * skipped); 3D models always pass fused probabilities. */
    int probabilities;
} ScoreSink;

/* Like segmenter_run, but the scores go to sink; in is already
 * normalised (no normalisation is applied).  The tensor axes are the
 * model's (volume_axes of its metadata). */
int segmenter_run_sink(Segmenter *s, const Volume *in, const ScoreSink *sink);

/* The model's normalisation of each modality of in (na: in->n_mod
 * entries).  0 or a negative code (message printed). */
int segmenter_norm_affines(const Segmenter *s, const Volume *in,
                           NormAffine *na);

/* The model the segmenter runs, and its options (defaults filled in). */
const Graph *segmenter_graph(const Segmenter *s);
SegmentOptions segmenter_options(const Segmenter *s);

/* Bytes of the 3D fusion buffers of the last run (0 for 2D): the bound
 * stated above, exposed for tests. */
size_t segmenter_accum_bytes(const Segmenter *s);
/* Number of executors created so far (tests check reuse). */
int segmenter_exec_count(const Segmenter *s);

/* One-shot convenience: create, run, free. */
int segment_volume(Graph *g, const Volume *in, const SegmentOptions *o,
                   int16_t *labels, float *probs);

#endif
