/* NIfTI input/output through libnifti (nifti2 API, NIfTI-1 and -2).
 *
 * libnifti accepts some headers it cannot safely load (huge or
 * overflowing dims, data shorter than declared) and never applies
 * scl_slope/scl_inter, so this file checks the raw header first, then
 * loads, then converts to float32 with the scaling applied. */
#include "nifti_io.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nifti2_io.h>

#include "common.h"

struct NiftiGeom {
    nifti_image *nim; /* header only: data == NULL */
    int version;      /* 1 or 2, as stored (libnifti may report 1) */
};

/* deflate never compresses better than 1032:1, so a .gz file of c bytes
 * holds at most c * 1032 bytes: a declared size above that is a truncated
 * or lying header, refused before libnifti allocates it. */
#define DEFLATE_MAX_RATIO 1032

#define MAX_INPUT_FILES 16

void nio_geom_free(NiftiGeom *g)
{
    if (!g) return;
    if (g->nim) nifti_image_free(g->nim);
    sl_free(g);
}

void nio_geom_dims(const NiftiGeom *g, int64_t dim[3])
{
    dim[0] = g->nim->nx;
    dim[1] = g->nim->ny;
    dim[2] = g->nim->nz;
}

void nio_geom_affine(const NiftiGeom *g, double m[3][4])
{
    const nifti_image *h = g->nim;
    const nifti_dmat44 *a = h->sform_code > 0 ? &h->sto_xyz : &h->qto_xyz;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++)
            m[r][c] = a->m[r][c];
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

int nio_is_nifti_name(const char *path)
{
    return ends_with(path, ".nii") || ends_with(path, ".nii.gz");
}

static int datatype_supported(int dt)
{
    switch (dt) {
    case DT_UINT8: case DT_INT8: case DT_UINT16: case DT_INT16:
    case DT_UINT32: case DT_INT32: case DT_UINT64: case DT_INT64:
    case DT_FLOAT32: case DT_FLOAT64:
        return 1;
    default:
        return 0;
    }
}

/* Check the raw header (as stored, byte-swapped by libnifti) for what
 * nifti_image_read would let through or reject without saying why. */
static int check_raw_header(const char *path, int *version)
{
    int nver = 0;
    void *h = nifti_read_header(path, &nver, 0);
    int64_t dim[8];
    int dt = 0;
    int rc = ERR_FORMAT;
    if (!h || (nver != 1 && nver != 2)) {
        sl_error("'%s' is not a NIfTI-1/NIfTI-2 file (bad header); give a "
                 ".nii or .nii.gz scan", path);
        goto fail;
    }
    if (nver == 1) {
        const nifti_1_header *p = h;
        for (int i = 0; i < 8; i++) dim[i] = p->dim[i];
        dt = p->datatype;
    } else {
        const nifti_2_header *p = h;
        for (int i = 0; i < 8; i++) dim[i] = p->dim[i];
        dt = p->datatype;
    }
    if (dim[0] < 1 || dim[0] > 7) {
        sl_error("'%s': header dim[0]=%lld is outside 1..7; the file is "
                 "corrupt, re-export the scan", path, (long long)dim[0]);
        goto fail;
    }
    int64_t n = 1;
    for (int i = 1; i <= dim[0]; i++) {
        if (dim[i] < 1) {
            sl_error("'%s': header dim[%d]=%lld is not positive; the file "
                     "is corrupt, re-export the scan", path, i,
                     (long long)dim[i]);
            goto fail;
        }
        if (n > INT64_MAX / 8 / dim[i]) {
            sl_error("'%s': header dims overflow (%lld x ... too many "
                     "voxels); the file is corrupt, re-export the scan",
                     path, (long long)dim[1]);
            goto fail;
        }
        n *= dim[i];
    }
    for (int i = 5; i <= dim[0]; i++)
        if (dim[i] > 1) {
            sl_error("'%s' is %lldD (dim[%d]=%lld); segment takes 3D scans "
                     "or 4D with one volume per modality", path,
                     (long long)dim[0], i, (long long)dim[i]);
            rc = ERR_UNSUPPORTED;
            goto fail;
        }
    if (!datatype_supported(dt)) {
        const char *name = nifti_datatype_to_string(dt);
        sl_error("'%s' has datatype %s (%d), which segment does not read; "
                 "convert the scan to a real-valued type (e.g. float32 or "
                 "int16)", path, name ? name : "unknown", dt);
        rc = ERR_UNSUPPORTED;
        goto fail;
    }
    *version = nver;
    rc = 0;
fail:
    free(h); /* allocated by libnifti with malloc */
    return rc;
}

/* Make sure the image file can hold what the header declares. */
static int check_data_size(const char *path, const nifti_image *nim)
{
    struct stat st;
    const char *img = nim->iname ? nim->iname : path;
    if (stat(img, &st) != 0) {
        sl_error("cannot open '%s' (image data of '%s'): %s; check the "
                 "path", img, path, strerror(errno));
        return ERR_IO;
    }
    int64_t need = 0;
    if (nim->nvox > INT64_MAX / (nim->nbyper > 0 ? nim->nbyper : 1) -
                        nim->iname_offset) {
        sl_error("'%s': declared data size overflows; the file is "
                 "corrupt, re-export the scan", path);
        return ERR_FORMAT;
    }
    need = nim->iname_offset + nim->nvox * nim->nbyper;
    int64_t have = (int64_t)st.st_size;
    if (nifti_is_gzfile(img)) {
        if (have > INT64_MAX / DEFLATE_MAX_RATIO) return 0;
        have *= DEFLATE_MAX_RATIO;
    }
    if (have < need) {
        sl_error("'%s': data shorter than the header says (%lld voxels of "
                 "%d bytes declared, file has %lld bytes); the file is "
                 "truncated or its header is wrong", path,
                 (long long)nim->nvox, nim->nbyper,
                 (long long)st.st_size);
        return ERR_FORMAT;
    }
    return 0;
}

/* Open one file's header (no data), validated.  nvol: its volumes. */
static int open_header(const char *path, nifti_image **out, int64_t *nvol,
                       int *version)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) {
        sl_error("cannot open '%s': %s; check the path", path,
                 strerror(errno));
        return ERR_IO;
    }
    if (!S_ISREG(st.st_mode)) {
        sl_error("'%s' is not a regular file; give the path of a .nii or "
                 ".nii.gz scan", path);
        return ERR_IO;
    }
    int rc = check_raw_header(path, version);
    if (rc) return rc;
    nifti_image *nim = nifti_image_read(path, 0);
    if (!nim) {
        sl_error("'%s' is not a readable NIfTI file (libnifti rejected "
                 "its header); re-export the scan", path);
        return ERR_FORMAT;
    }
    rc = check_data_size(path, nim);
    if (rc) {
        nifti_image_free(nim);
        return rc;
    }
    *nvol = nim->dim[0] >= 4 ? nim->nt : 1;
    *out = nim;
    return 0;
}

static int close_enough(double a, double b)
{
    return fabs(a - b) <= 1e-5 * (1.0 + fabs(a) + fabs(b));
}

static int mat_equal(const nifti_dmat44 *a, const nifti_dmat44 *b)
{
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++)
            if (!close_enough(a->m[r][c], b->m[r][c])) return 0;
    return 1;
}

/* Same voxel grid in space: dims, spacing, qform/sform codes and
 * matrices (a tolerance absorbs float rounding between writers). */
static int check_same_grid(const nifti_image *a, const char *pa,
                           const nifti_image *b, const char *pb)
{
    const char *what = NULL;
    if (a->nx != b->nx || a->ny != b->ny || a->nz != b->nz)
        what = "dimensions";
    else if (!close_enough(a->dx, b->dx) || !close_enough(a->dy, b->dy) ||
             !close_enough(a->dz, b->dz))
        what = "voxel sizes (pixdim)";
    else if (a->qform_code != b->qform_code ||
             (a->qform_code > 0 && !mat_equal(&a->qto_xyz, &b->qto_xyz)))
        what = "qform";
    else if (a->sform_code != b->sform_code ||
             (a->sform_code > 0 && !mat_equal(&a->sto_xyz, &b->sto_xyz)))
        what = "sform";
    if (!what) return 0;
    sl_error("modality files '%s' and '%s' have different %s; register or "
             "resample them to one grid first", pa, pb, what);
    return ERR_SHAPE;
}

/* dst[0..n) = raw voxels (libnifti's native-order buffer) scaled. */
static void convert_to_float(float *dst, const nifti_image *nim, int64_t n)
{
    double slope = nim->scl_slope, inter = nim->scl_inter;
    /* NIfTI: slope 0 means the data are not scaled. */
    int scaled = slope != 0.0 && isfinite(slope) && isfinite(inter);
    if (!scaled) {
        slope = 1.0;
        inter = 0.0;
    }
    const void *src = nim->data;
#define CONVERT(T)                                                            \
    do {                                                                      \
        const T *s = src;                                                     \
        for (int64_t i = 0; i < n; i++) {                                     \
            T x;                                                              \
            memcpy(&x, s + i, sizeof x);                                      \
            dst[i] = (float)((double)x * slope + inter);                      \
        }                                                                     \
    } while (0)
    switch (nim->datatype) {
    case DT_UINT8: CONVERT(uint8_t); break;
    case DT_INT8: CONVERT(int8_t); break;
    case DT_UINT16: CONVERT(uint16_t); break;
    case DT_INT16: CONVERT(int16_t); break;
    case DT_UINT32: CONVERT(uint32_t); break;
    case DT_INT32: CONVERT(int32_t); break;
    case DT_UINT64: CONVERT(uint64_t); break;
    case DT_INT64: CONVERT(int64_t); break;
    case DT_FLOAT32: CONVERT(float); break;
    case DT_FLOAT64: CONVERT(double); break;
    default: CHECK(!"datatype validated in check_raw_header");
    }
#undef CONVERT
}

/* Split "a,b,c" into at most MAX_INPUT_FILES paths (in buf, modified). */
static int split_spec(char *buf, char **paths, const char *spec)
{
    int n = 0;
    char *p = buf;
    for (;;) {
        char *comma = strchr(p, ',');
        if (comma) *comma = '\0';
        if (!*p) {
            sl_error("empty file name in '%s'; join modality files with "
                     "single commas", spec);
            return ERR_ARG;
        }
        if (n == MAX_INPUT_FILES) {
            sl_error("more than %d files in '%s'", MAX_INPUT_FILES, spec);
            return ERR_ARG;
        }
        paths[n++] = p;
        if (!comma) break;
        p = comma + 1;
    }
    return n;
}

int nio_read(const char *spec, Volume *v, NiftiGeom **geom)
{
    nifti_image *nims[MAX_INPUT_FILES] = {0};
    char *paths[MAX_INPUT_FILES];
    int64_t nvol[MAX_INPUT_FILES];
    int version[MAX_INPUT_FILES];
    NiftiGeom *g = NULL;
    int nf = 0, rc;
    memset(v, 0, sizeof *v);
    if (geom) *geom = NULL;
    nifti_set_debug_level(0);
    char *buf = sl_strdup(spec);
    if (!buf) {
        sl_error("out of memory reading '%s'", spec);
        return ERR_NOMEM;
    }
    rc = split_spec(buf, paths, spec);
    if (rc < 0) goto fail;
    int n_paths = rc;
    int64_t total = 0;
    for (nf = 0; nf < n_paths; nf++) {
        rc = open_header(paths[nf], &nims[nf], &nvol[nf], &version[nf]);
        if (rc) goto fail;
        if (nf > 0) {
            rc = check_same_grid(nims[0], paths[0], nims[nf], paths[nf]);
            if (rc) goto fail;
        }
        total += nvol[nf];
    }
    if (total > 4096) {
        sl_error("'%s' holds %lld volumes; segment expects one volume per "
                 "modality", spec, (long long)total);
        rc = ERR_UNSUPPORTED;
        goto fail;
    }
    rc = volume_alloc(v, nims[0]->nx, nims[0]->ny, nims[0]->nz, (int)total);
    if (rc) goto fail;
    int64_t vox = volume_voxels(v), m = 0;
    for (int f = 0; f < nf; f++) {
        if (nifti_image_load(nims[f]) < 0 || !nims[f]->data) {
            sl_error("cannot read the voxels of '%s': data shorter than the "
                     "header says or not decompressible; the file is "
                     "truncated or corrupt", paths[f]);
            rc = ERR_FORMAT;
            goto fail;
        }
        convert_to_float(v->data + (size_t)(m * vox), nims[f],
                         vox * nvol[f]);
        nifti_image_unload(nims[f]);
        m += nvol[f];
    }
    if (geom) {
        g = sl_calloc(1, sizeof *g);
        if (!g) {
            sl_error("out of memory reading '%s'", spec);
            rc = ERR_NOMEM;
            goto fail;
        }
        g->nim = nims[0];
        g->version = version[0];
        nims[0] = NULL;
        *geom = g;
    }
    rc = 0;
fail:
    for (int f = 0; f < MAX_INPUT_FILES; f++)
        if (nims[f]) nifti_image_free(nims[f]);
    if (rc) volume_free(v);
    sl_free(buf);
    return rc;
}

/* "dir/name.nii.gz" -> "dir/name.tmp.PID.nii.gz": libnifti picks the
 * compression from the extension, so the temporary keeps it. */
static char *tmp_name(const char *path)
{
    const char *ext = ends_with(path, ".nii.gz") ? ".nii.gz" : ".nii";
    size_t stem = strlen(path) - strlen(ext);
    size_t n = stem + strlen(ext) + 40;
    char *t = sl_alloc(n);
    if (t)
        snprintf(t, n, "%.*s.tmp.%ld%s", (int)stem, path, (long)getpid(),
                 ext);
    return t;
}

/* Header for an output of `nt` volumes of `dt` with g's geometry. */
static nifti_image *output_header(const NiftiGeom *g, int64_t nt, int dt)
{
    nifti_image *nim = nifti_copy_nim_info(g->nim);
    if (!nim) return NULL;
    nifti_free_extensions(nim);
    int64_t d0 = nim->dim[0] < 3 ? nim->dim[0] : 3;
    if (nt > 1) d0 = 4;
    nim->dim[0] = d0;
    nim->dim[4] = nt;
    for (int i = 5; i < 8; i++) nim->dim[i] = 1;
    if (nt > 1) nim->pixdim[4] = 1.0;
    nifti_update_dims_from_array(nim);
    nim->datatype = dt;
    nifti_datatype_sizes(dt, &nim->nbyper, &nim->swapsize);
    nim->scl_slope = 1.0;
    nim->scl_inter = 0.0;
    nim->intent_code = NIFTI_INTENT_NONE;
    memset(nim->intent_name, 0, sizeof nim->intent_name);
    memset(nim->aux_file, 0, sizeof nim->aux_file);
    memset(nim->descrip, 0, sizeof nim->descrip);
    snprintf(nim->descrip, sizeof nim->descrip, "sauron segment");
    /* Keep the input's NIfTI version (NIfTI-2 stores the geometry in
     * double, NIfTI-1 in float). */
    if (g->version == 2 || nim->nx > 32767 ||
        nim->ny > 32767 || nim->nz > 32767 || nt > 32767)
        nim->nifti_type = NIFTI_FTYPE_NIFTI2_1;
    else
        nim->nifti_type = NIFTI_FTYPE_NIFTI1_1;
    return nim;
}

/* Serialise nim (header, an empty extension flag, data) to `path` with
 * znzlib; gzip when the name ends in .gz.  Written here rather than by
 * nifti_image_write, which returns no status, prints on failure, and (in
 * libnifti 2.1) mis-places the data of single-file NIfTI-2 output. */
static int write_file(const nifti_image *nim, const char *path)
{
    uint8_t hdr[540 + 4];
    size_t hsize;
    memset(hdr, 0, sizeof hdr);
    if (nim->nifti_type == NIFTI_FTYPE_NIFTI2_1) {
        nifti_2_header h2;
        if (nifti_convert_nim2n2hdr(nim, &h2) != 0) return ERR_FORMAT;
        memcpy(h2.magic, "n+2\0\r\n\032\n", 8);
        h2.vox_offset = 544;
        memcpy(hdr, &h2, sizeof h2);
        hsize = 544;
    } else {
        nifti_1_header h1;
        if (nifti_convert_nim2n1hdr(nim, &h1) != 0) return ERR_FORMAT;
        memcpy(h1.magic, "n+1", 4);
        h1.vox_offset = 352.0f;
        memcpy(hdr, &h1, sizeof h1);
        hsize = 352;
    }
    size_t bytes = (size_t)nim->nvox * (size_t)nim->nbyper;
    znzFile fp = znzopen(path, "wb", ends_with(path, ".gz"));
    if (znz_isnull(fp)) return ERR_IO;
    int ok = znzwrite(hdr, 1, hsize, fp) == hsize;
    /* znzwrite takes the count as size_t but gzwrite an unsigned: write
     * in pieces well below 4 GiB. */
    const uint8_t *d = nim->data;
    for (size_t done = 0; ok && done < bytes;) {
        size_t n = bytes - done < ((size_t)1 << 30) ? bytes - done
                                                    : (size_t)1 << 30;
        ok = znzwrite(d + done, 1, n, fp) == n;
        done += n;
    }
    if (znzclose(fp) != 0) ok = 0;
    return ok ? 0 : ERR_IO;
}

/* Write nim (data attached by the caller) to path atomically. */
static int write_atomic(const nifti_image *nim, const char *path, int force)
{
    char *tmp = NULL;
    int rc = ERR_IO;
    if (!nio_is_nifti_name(path)) {
        sl_error("output '%s' must end in .nii or .nii.gz", path);
        rc = ERR_ARG;
        goto fail;
    }
    if (!force && sl_file_exists(path)) {
        sl_error("output '%s' exists; pass --force to overwrite it", path);
        rc = ERR_EXISTS;
        goto fail;
    }
    tmp = tmp_name(path);
    if (!tmp) {
        sl_error("out of memory writing '%s'", path);
        rc = ERR_NOMEM;
        goto fail;
    }
    errno = 0;
    rc = write_file(nim, tmp);
    if (rc) {
        sl_error("cannot write '%s': %s; check the folder exists, is "
                 "writable and has free space", tmp,
                 errno ? strerror(errno) : "write failed");
        unlink(tmp);
        goto fail;
    }
    rc = ERR_IO;
    int fd = open(tmp, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0) {
        sl_error("cannot sync '%s': %s; check free disk space", tmp,
                 strerror(errno));
        if (fd >= 0) close(fd);
        unlink(tmp);
        goto fail;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        sl_error("cannot rename '%s' to '%s': %s", tmp, path,
                 strerror(errno));
        unlink(tmp);
        goto fail;
    }
    rc = 0;
fail:
    sl_free(tmp);
    return rc;
}

int nio_write_labels(const char *path, const NiftiGeom *g,
                     const int16_t *labels, int n_classes, int force)
{
    int dt = n_classes <= 255 ? DT_UINT8 : DT_INT16;
    void *buf = NULL;
    int rc = ERR_NOMEM;
    nifti_image *nim = output_header(g, 1, dt);
    if (!nim) {
        sl_error("out of memory preparing '%s'", path);
        goto fail;
    }
    nim->cal_min = 0.0;
    nim->cal_max = n_classes > 0 ? n_classes - 1 : 0;
    nim->intent_code = NIFTI_INTENT_LABEL;
    size_t n = (size_t)nim->nvox;
    if (dt == DT_UINT8) {
        uint8_t *b = sl_alloc(n);
        if (!b) {
            sl_error("out of memory writing '%s'", path);
            goto fail;
        }
        for (size_t i = 0; i < n; i++) b[i] = (uint8_t)labels[i];
        buf = b;
    } else {
        buf = sl_alloc(n * sizeof(int16_t));
        if (!buf) {
            sl_error("out of memory writing '%s'", path);
            goto fail;
        }
        memcpy(buf, labels, n * sizeof(int16_t));
    }
    nim->data = buf;
    rc = write_atomic(nim, path, force);
fail:
    if (nim) {
        nim->data = NULL; /* ours, not libnifti's */
        nifti_image_free(nim);
    }
    sl_free(buf);
    return rc;
}

int nio_write_probs(const char *path, const NiftiGeom *g, const float *probs,
                    int nc, int force)
{
    int rc = ERR_NOMEM;
    nifti_image *nim = output_header(g, nc, DT_FLOAT32);
    if (!nim) {
        sl_error("out of memory preparing '%s'", path);
        goto fail;
    }
    nim->cal_min = 0.0;
    nim->cal_max = 1.0;
    /* libnifti only reads the buffer while writing. */
    memcpy(&nim->data, &probs, sizeof probs);
    rc = write_atomic(nim, path, force);
fail:
    if (nim) {
        nim->data = NULL;
        nifti_image_free(nim);
    }
    return rc;
}
