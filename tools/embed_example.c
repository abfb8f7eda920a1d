/* Embedding the runtime: load a model, build a small volume in memory,
 * segment it, print a summary.  Uses only <sauron_rt.h> (built against
 * the installed library: cc embed_example.c $(pkg-config --cflags --libs
 * sauron-rt)).
 *
 *   embed-example MODEL.sslim [VOLUME.f32 LABELS.i16]
 *
 * The volume is a bright ellipsoid (a "head") of 48 x 40 x 6 voxels of
 * 1.1 x 1.2 x 2.5 mm stored L-P-S (DICOM's axes: the affine flips x and
 * y), so a model with a recorded orientation and spacing reorients and
 * resamples it.  With the two optional paths the example also writes the
 * volume (float32, [nz][ny][nx]) and the labels (int16) as raw files, so
 * that tests/test_embed.c can compare them with the segment program's
 * output for the same volume stored as NIfTI (same geometry: EX_* below
 * and the test's copy must agree). */
#include <stdio.h>
#include <stdlib.h>

#include <sauron_rt.h>

enum { EX_NX = 48, EX_NY = 40, EX_NZ = 6 };
/* exact in float32, as NIfTI stores affines: the test compares bit for bit */
static const double EX_SPACING[3] = {1.125, 1.25, 2.5};

static int write_raw(const char *path, const void *p, size_t size, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(p, size, n, f);
    return (fclose(f) != 0 || w != n) ? -1 : 0;
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 4) {
        fprintf(stderr, "usage: embed-example MODEL.sslim "
                        "[VOLUME.f32 LABELS.i16]\n");
        return 2;
    }
    srt_options opt = {2, 0}; /* 2 threads, errors only via the API */
    srt_model *m = NULL;
    int rc = srt_open(argv[1], &opt, &m);
    if (rc) {
        fprintf(stderr, "error: %s\n", srt_last_error());
        return 1;
    }
    const int64_t dim[3] = {EX_NX, EX_NY, EX_NZ};
    /* Voxel (i, j, k, 1) -> RAS mm: i points left, j posterior. */
    /* clang-format off */
    const double aff[16] = {-EX_SPACING[0], 0, 0, 30.0,
                            0, -EX_SPACING[1], 0, 25.0,
                            0, 0, EX_SPACING[2], -5.0,
                            0, 0, 0, 1};
    /* clang-format on */
    int n_mod = srt_n_modalities(m);
    size_t nvox = (size_t)EX_NX * EX_NY * EX_NZ;
    float *vol = malloc(nvox * (size_t)n_mod * sizeof *vol);
    int16_t *labels = malloc(nvox * sizeof *labels);
    if (!vol || !labels) {
        fprintf(stderr, "error: out of memory\n");
        rc = 1;
        goto done;
    }
    for (int c = 0; c < n_mod; c++)
        for (int z = 0; z < EX_NZ; z++)
            for (int y = 0; y < EX_NY; y++)
                for (int x = 0; x < EX_NX; x++) {
                    double u = (x - 23.5) / 17.0, v = (y - 19.5) / 14.0,
                           w = (z - 2.5) / 4.0;
                    double r2 = u * u + v * v + w * w;
                    /* tissue ~ 600 inside, a thin skull ring ~ 900 */
                    float val = r2 < 1.0   ? (float)(600.0 + 40.0 * u)
                                : r2 < 1.3 ? 900.0f
                                           : 5.0f;
                    vol[(((size_t)c * EX_NZ + z) * EX_NY + y) * EX_NX + x] =
                        val;
                }
    rc = srt_segment(m, vol, n_mod, dim, aff, NULL, labels);
    if (rc) {
        fprintf(stderr, "error: %s\n", srt_last_error());
        rc = 1;
        goto done;
    }
    printf("model: %dD, %d modalities, %d classes\n", srt_dims(m), n_mod,
           srt_n_classes(m));
    for (int k = 0; k < srt_n_classes(m); k++) {
        size_t cnt = 0;
        for (size_t i = 0; i < nvox; i++)
            cnt += labels[i] == k;
        const char *name = srt_class_name(m, k);
        printf("class %d (%s): %zu voxels\n", k, name ? name : "?", cnt);
    }
    if (argc == 4 &&
        (write_raw(argv[2], vol, sizeof *vol, nvox * (size_t)n_mod) ||
         write_raw(argv[3], labels, sizeof *labels, nvox))) {
        fprintf(stderr, "error: cannot write '%s' or '%s'\n", argv[2],
                argv[3]);
        rc = 1;
    }
done:
    free(vol);
    free(labels);
    srt_close(m);
    return rc;
}
