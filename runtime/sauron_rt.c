/* The embeddable runtime's public API (sauron_rt.h): a thin layer over
 * sslim_read, the Segmenter and segment_scan, so that an embedding program
 * gets exactly what the segment program computes for the same geometry. */
#include "sauron_rt.h"

#include <string.h>

#include "common.h"
#include "graph.h"
#include "orient.h"
#include "segment.h"
#include "segment_scan.h"
#include "sslim.h"
#include "volume.h"

/* The public codes are the runtime's; a change there must show here. */
_Static_assert((int)SRT_ENOMEM == (int)ERR_NOMEM &&
                   (int)SRT_EIO == (int)ERR_IO &&
                   (int)SRT_EFORMAT == (int)ERR_FORMAT &&
                   (int)SRT_EUNSUPPORTED == (int)ERR_UNSUPPORTED &&
                   (int)SRT_ESHAPE == (int)ERR_SHAPE &&
                   (int)SRT_EARG == (int)ERR_ARG,
               "sauron_rt.h codes must equal common.h's");

struct srt_model {
    Graph g; /* must outlive seg (segmenter_create keeps a pointer) */
    Segmenter *seg;
    int verbose;
};

/* Each entry point reports at most one line of its own (sl_error prints
 * only the first per operation) and prints it only if asked; the
 * caller's quiet setting is restored on the way out. */
static int enter(int verbose)
{
    int was = sl_error_is_quiet();
    sl_error_reset();
    sl_error_quiet(!verbose);
    return was;
}

int srt_open(const char *path, const srt_options *opt, srt_model **out)
{
    srt_options o = {0, 0};
    if (opt) o = *opt;
    int was = enter(o.verbose), rc;
    srt_model *m = NULL;
    if (!out || !path) {
        sl_error("srt_open: path and out must not be NULL");
        rc = ERR_ARG;
        goto fail;
    }
    *out = NULL;
    if (!(m = sl_calloc(1, sizeof *m))) {
        sl_error("srt_open: out of memory opening '%s'", sl_esc(path).s);
        rc = ERR_NOMEM;
        goto fail;
    }
    m->verbose = o.verbose;
    graph_init(&m->g);
    if ((rc = sslim_read(path, &m->g))) goto fail;
    SegmentOptions so;
    memset(&so, 0, sizeof so);
    so.n_threads = o.n_threads;
    if ((rc = segmenter_create(&m->g, &so, &m->seg))) goto fail;
    *out = m;
    sl_error_quiet(was);
    return 0;
fail:
    srt_close(m);
    sl_error_quiet(was);
    return rc;
}

void srt_close(srt_model *m)
{
    if (!m) return;
    segmenter_free(m->seg);
    graph_free(&m->g);
    sl_free(m);
}

int srt_n_classes(const srt_model *m)
{
    return m ? m->g.meta.n_classes : 0;
}
int srt_n_modalities(const srt_model *m)
{
    return m ? m->g.meta.n_modalities : 0;
}
int srt_dims(const srt_model *m)
{
    return m ? m->g.meta.dims : 0;
}

const char *srt_class_name(const srt_model *m, int i)
{
    if (!m || i < 0 || i >= m->g.meta.n_classes || !m->g.meta.class_names)
        return NULL;
    return m->g.meta.class_names[i];
}

const char *srt_modality_name(const srt_model *m, int i)
{
    if (!m || i < 0 || i >= m->g.meta.n_modalities ||
        !m->g.meta.modality_names)
        return NULL;
    return m->g.meta.modality_names[i];
}

/* The caller's geometry as the runtime's 3x4 affine; ERR_ARG (message)
 * if it is not affine or a spacing is not positive. */
static int geometry(const double affine[16], const double spacing[3],
                    Affine *aff)
{
    memset(aff, 0, sizeof *aff);
    if (affine) {
        if (affine[12] != 0 || affine[13] != 0 || affine[14] != 0 ||
            affine[15] != 1) {
            sl_error("srt_segment: the affine's last row must be 0 0 0 1");
            return ERR_ARG;
        }
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 4; c++) {
                aff->m[r][c] = affine[4 * r + c];
                if (!(affine[4 * r + c] - affine[4 * r + c] == 0)) {
                    sl_error("srt_segment: the affine has a NaN or "
                             "infinite entry");
                    return ERR_ARG;
                }
            }
        return 0;
    }
    for (int t = 0; t < 3; t++) {
        double s = spacing ? spacing[t] : 1.0;
        if (!(s > 0 && s < 1e6)) {
            sl_error("srt_segment: spacing[%d] = %g mm; give a positive "
                     "voxel size",
                     t, s);
            return ERR_ARG;
        }
        aff->m[t][t] = s;
    }
    return 0;
}

int srt_segment(srt_model *m, const float *data, int n_mod,
                const int64_t dim[3], const double affine[16],
                const double spacing[3], int16_t *labels)
{
    int was = enter(m ? m->verbose : 0), rc;
    Volume v = {{0, 0, 0}, 0, NULL};
    int16_t *out = NULL;
    if (!m || !data || !dim || !labels) {
        sl_error("srt_segment: model, data, dim and labels must not be "
                 "NULL");
        rc = ERR_ARG;
        goto done;
    }
    if (n_mod != m->g.meta.n_modalities) {
        sl_error("srt_segment: %d modalities given, the model takes %d",
                 n_mod, m->g.meta.n_modalities);
        rc = ERR_ARG;
        goto done;
    }
    Affine aff;
    if ((rc = geometry(affine, spacing, &aff))) goto done;
    /* volume_alloc checks the sizes (>= 1, no overflow). */
    if ((rc = volume_alloc(&v, dim[0], dim[1], dim[2], n_mod))) goto done;
    int64_t n = volume_voxels(&v);
    memcpy(v.data, data, (size_t)n * (size_t)n_mod * sizeof *data);
    /* segment_scan consumes v and allocates the label map. */
    rc = segment_scan(m->seg, &v, &aff, &out, NULL);
    if (rc) goto done;
    memcpy(labels, out, (size_t)n * sizeof *labels);
done:
    volume_free(&v);
    sl_free(out);
    sl_error_quiet(was);
    return rc;
}

const char *srt_last_error(void)
{
    return sl_error_last();
}
const char *srt_strerror(int code)
{
    return sl_strerror(code);
}
