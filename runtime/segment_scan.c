/* Segment a scan on the model's grid: see segment_scan.h. */
#include "segment_scan.h"

#include <string.h>

#include "common.h"
#include "orient.h"
#include "resample.h"

static int model_has_grid(const ModelMeta *m)
{
    return m->orientation[0] || m->spacing[0] > 0 || m->spacing[1] > 0 ||
           m->spacing[2] > 0;
}

/* Model grid and scan -> model voxel map; *direct when they coincide. */
static int plan(const Segmenter *s, const Grid *in, Grid *mg,
                Affine *m_scan_to_model, int *direct)
{
    const ModelMeta *m = &segmenter_graph(s)->meta;
    *direct = 1;
    *mg = *in;
    if (!model_has_grid(m)) return 0;
    int rc = orient_model_grid(in, m->orientation, m->spacing, mg);
    if (rc) return rc;
    if (orient_voxel_map(in, mg, m_scan_to_model)) {
        sl_error("the model grid of the scan is singular; check the scan's "
                 "pixdim and the model's spacing");
        return ERR_ARG;
    }
    *direct = mg->dim[0] == in->dim[0] && mg->dim[1] == in->dim[1] &&
              mg->dim[2] == in->dim[2] &&
              orient_map_is_identity(m_scan_to_model);
    return 0;
}

int segment_scan_grid(const Segmenter *s, const int64_t dim[3],
                      const Affine *aff, int64_t model_dim[3],
                      Affine *model_aff, int *direct)
{
    Grid in, mg;
    Affine map;
    memcpy(in.dim, dim, sizeof in.dim);
    in.aff = *aff;
    int rc = plan(s, &in, &mg, &map, direct);
    if (rc) return rc;
    memcpy(model_dim, mg.dim, sizeof mg.dim);
    *model_aff = mg.aff;
    return 0;
}

int segment_scan(Segmenter *s, Volume *v, const Affine *aff, int16_t **labels,
                 float *probs)
{
    const Graph *g = segmenter_graph(s);
    const ModelMeta *m = &g->meta;
    SegmentOptions o = segmenter_options(s);
    NormAffine *na = NULL;
    Volume t = {0};
    BackMap *bm = NULL;
    Grid in, mg;
    Affine to_model, to_scan;
    int direct, rc, ax[3];
    int64_t sdim[3];
    *labels = NULL;
    memcpy(in.dim, v->dim, sizeof in.dim);
    in.aff = *aff;
    memcpy(sdim, v->dim, sizeof sdim);
    size_t nv = (size_t)volume_voxels(v);
    if ((rc = plan(s, &in, &mg, &to_model, &direct))) goto fail;
    if (direct) {
        rc = ERR_NOMEM;
        if (!(*labels = sl_alloc(nv * sizeof **labels))) {
            sl_error("out of memory for the label map (%zu voxels)", nv);
            goto fail;
        }
        rc = segmenter_run(s, v, *labels, probs);
        goto fail;
    }
    if ((rc = volume_axes(m->order, m->dims, m->axis, ax))) goto fail;
    if (orient_voxel_map(&mg, &in, &to_scan)) {
        sl_error("the scan's voxel-to-world matrix is singular (sform or "
                 "qform); fix the scan header");
        rc = ERR_ARG;
        goto fail;
    }
    rc = ERR_NOMEM;
    if (!(na = sl_calloc((size_t)v->n_mod, sizeof *na))) {
        sl_error("out of memory");
        goto fail;
    }
    /* Statistics on the scan's own voxels: resampling does not change
     * which voxels the normalisation sees. */
    if ((rc = segmenter_norm_affines(s, v, na))) goto fail;
    if ((rc = volume_alloc(&t, mg.dim[0], mg.dim[1], mg.dim[2], v->n_mod)))
        goto fail;
    resample_volume(&t, v, na, &to_scan, o.n_threads);
    volume_free(v);
    rc = ERR_NOMEM;
    if (!(*labels = sl_alloc(nv * sizeof **labels))) {
        sl_error("out of memory for the label map (%zu voxels)", nv);
        goto fail;
    }
    if ((rc = backmap_create(sdim, mg.dim, &to_model, ax[0], m->n_classes,
                             *labels, probs, o.n_threads, &bm)))
        goto fail;
    ScoreSink sink = {backmap_planes, bm, probs != NULL};
    if ((rc = segmenter_run_sink(s, &t, &sink))) goto fail;
    CHECK(backmap_done(bm) == (int64_t)nv);
fail:
    if (rc) {
        sl_free(*labels);
        *labels = NULL;
    }
    backmap_free(bm);
    volume_free(&t);
    volume_free(v);
    sl_free(na);
    return rc;
}
