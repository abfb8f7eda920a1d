/* Fuzz target: the NIfTI reader, one file or a comma-joined pair, .nii
 * or .nii.gz (see fuzz_targets.h). */
#include <stdio.h>

#include "runtime/common.h"
#include "runtime/nifti_io.h"
#include "runtime/volume.h"
#include "tests/fuzz/fuzz_targets.h"

int fuzz_nifti(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int flags = data[0];
    const uint8_t *a, *b;
    size_t na, nb;
    fuzz_split(data + 1, size - 1, &a, &na, &b, &nb);
    if (!b) { /* one file, or the same file twice */
        b = a;
        nb = na;
    }
    const char *name_a = flags & 1 ? "a.nii.gz" : "a.nii";
    const char *name_b = flags & 2 ? "b.nii.gz" : "b.nii";
    char dir[4096], spec[2 * 4096 + 32];
    if (fuzz_mkdtemp(dir, sizeof dir)) return -1;
    int rc = -1;
    if (fuzz_write(dir, name_a, a, na, flags & 1)) goto out;
    if (flags & 4) {
        if (fuzz_write(dir, name_b, b, nb, flags & 2)) goto out;
        snprintf(spec, sizeof spec, "%s/%s,%s/%s", dir, name_a, dir, name_b);
    } else {
        snprintf(spec, sizeof spec, "%s/%s", dir, name_a);
    }
    Volume v = {0};
    NiftiGeom *geom = NULL;
    sl_error_reset();
    if (nio_read(spec, &v, &geom) == 0) {
        int64_t dim[3];
        double m[3][4];
        nio_geom_dims(geom, dim);
        nio_geom_affine(geom, m);
        volume_free(&v);
        nio_geom_free(geom);
    }
    rc = 0;
out:
    fuzz_rmtree(dir);
    return rc;
}
