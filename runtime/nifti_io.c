/* NIfTI input/output (NIfTI-1 and -2, either byte order, .nii and
 * .nii.gz).
 *
 * libnifti accepts headers it cannot safely load (negative offsets,
 * huge or overflowing dims, data shorter than declared), allocates the
 * declared size before reading, and never applies scl_slope/scl_inter.
 * So the header bytes are read and range-checked here (libnifti only
 * turns the checked, host-order header into the geometry), and the voxels
 * are read here in bounded chunks, converted to float32 with the scaling
 * applied as they arrive. */
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
 * holds at most c * 1032 bytes: a header that declares more is refused
 * before anything is read.  Below that bound a .gz claim is still only a
 * claim: the voxel buffer grows with what decompression yields (see
 * read_voxels), so a lying header costs at most twice the real data. */
#define DEFLATE_MAX_RATIO 1032

#define MAX_INPUT_FILES 16
/* The stored byte order is decided per file; values are assembled from
 * bytes in that order, so this host's own order only picks the side. */
#define HOST_BIG_ENDIAN (__BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)
/* Volumes (modalities) of one case across all its files. */
#define MAX_VOLUMES 4096
/* Voxel bytes read and converted per step. */
#define READ_CHUNK ((size_t)1 << 20)
/* First capacity (floats) of a .gz case's voxel buffer, before doubling. */
#define GZ_FIRST_FLOATS ((size_t)1 << 20)

/* One input file as its header describes it, every field used in size
 * arithmetic range-checked. */
typedef struct {
    const char *path;
    nifti_image *nim; /* header only (no extensions, no data) */
    int version;      /* 1 or 2 */
    int swap;         /* stored in the other byte order than this host's */
    int gz;           /* gzip-compressed */
    int datatype;
    int nbyper;        /* bytes per voxel value */
    int64_t dim[4];    /* nx, ny, nz, volumes (dim[4..7] folded in) */
    int64_t offset;    /* byte offset of the voxel data */
    int64_t file_size; /* bytes on disk */
} NiiFile;

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

/* Bytes per value of a datatype segment reads; 0 for any other. */
static int datatype_bytes(int dt)
{
    switch (dt) {
    case DT_UINT8:
    case DT_INT8:
        return 1;
    case DT_UINT16:
    case DT_INT16:
        return 2;
    case DT_UINT32:
    case DT_INT32:
    case DT_FLOAT32:
        return 4;
    case DT_UINT64:
    case DT_INT64:
    case DT_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

uint64_t nio_default_max_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    if (pages <= 0 || page <= 0) return UINT64_MAX; /* unknown: no limit */
    uint64_t ram = (uint64_t)pages * (uint64_t)page;
    return ram / NIO_DEFAULT_MEMORY_DIVISOR;
}

/* Read the header bytes of `path` (through zlib, which also reads plain
 * files) and check what it claims: version, byte order, magic, dims,
 * datatype, vox_offset.  Fills f (nim left NULL). */
static int parse_header(const char *path, NiiFile *f)
{
    union {
        nifti_1_header n1;
        nifti_2_header n2;
        uint8_t b[sizeof(nifti_2_header)];
    } h;
    memset(&h, 0, sizeof h);
    znzFile fp = znzopen(path, "rb", 1);
    if (znz_isnull(fp)) {
        sl_error("cannot open '%s': %s; check the path", path,
                 strerror(errno));
        return ERR_IO;
    }
    size_t got = znzread(h.b, 1, sizeof h.b, fp);
    znzclose(fp);
    int32_t size_hdr;
    memcpy(&size_hdr, h.b, sizeof size_hdr);
    int32_t swapped = (int32_t)__builtin_bswap32((uint32_t)size_hdr);
    f->swap = size_hdr != 348 && size_hdr != 540;
    int32_t declared = f->swap ? swapped : size_hdr;
    if (declared != 348 && declared != 540) {
        sl_error("'%s' is not a NIfTI-1/NIfTI-2 file (bad header); give a "
                 ".nii or .nii.gz scan",
                 path);
        return ERR_FORMAT;
    }
    f->version = declared == 348 ? 1 : 2;
    if (got < (size_t)declared) {
        sl_error("'%s' ends inside its %d-byte NIfTI header; the file is "
                 "truncated",
                 path, (int)declared);
        return ERR_FORMAT;
    }
    if (f->version == 1) {
        if (f->swap) nifti_swap_as_nifti1(&h.n1);
    } else {
        if (f->swap) nifti_swap_as_nifti2(&h.n2);
    }
    /* The header is now in host order; keep that copy as the geometry. */
    int64_t dim[8], offset = -1;
    double vox_offset; /* for messages; offset is what is used */
    const char *magic;
    if (f->version == 1) {
        for (int i = 0; i < 8; i++)
            dim[i] = h.n1.dim[i];
        f->datatype = h.n1.datatype;
        vox_offset = (double)h.n1.vox_offset;
        if (vox_offset >= 0.0 && vox_offset < 0x1p62 &&
            vox_offset == floor(vox_offset))
            offset = (int64_t)vox_offset;
        magic = h.n1.magic;
    } else {
        for (int i = 0; i < 8; i++)
            dim[i] = h.n2.dim[i];
        f->datatype = h.n2.datatype;
        vox_offset = (double)h.n2.vox_offset;
        if (h.n2.vox_offset >= 0 && h.n2.vox_offset < (int64_t)1 << 62)
            offset = h.n2.vox_offset;
        magic = h.n2.magic;
    }
    /* A negative, fractional or astronomically large offset is corrupt
     * whatever the file kind (2^62: no file is that long, and sums of it
     * with a data size stay below INT64_MAX). */
    if (offset < 0) {
        sl_error("'%s': header vox_offset=%g is not a byte offset; the "
                 "file is corrupt, re-export the scan",
                 path, vox_offset);
        return ERR_FORMAT;
    }
    if (magic[0] == 'n' && magic[1] == 'i' && magic[3] == '\0' &&
        (magic[2] == '1' || magic[2] == '2')) {
        sl_error("'%s' is the header of a .hdr/.img pair (magic 'ni%c'); "
                 "segment reads single-file .nii or .nii.gz scans: "
                 "convert it (e.g. with nibabel or fslchfiletype)",
                 path, magic[2]);
        return ERR_UNSUPPORTED;
    }
    if (magic[0] != 'n' || magic[1] != '+' ||
        magic[2] != (f->version == 1 ? '1' : '2') || magic[3] != '\0') {
        sl_error("'%s' is not a NIfTI-%d file (magic is not 'n+%d'); give "
                 "a .nii or .nii.gz scan",
                 path, f->version, f->version);
        return ERR_FORMAT;
    }
    if (dim[0] < 1 || dim[0] > 7) {
        sl_error("'%s': header dim[0]=%lld is outside 1..7; the file is "
                 "corrupt, re-export the scan",
                 path, (long long)dim[0]);
        return ERR_FORMAT;
    }
    for (int i = 1; i <= dim[0]; i++)
        if (dim[i] < 1) {
            sl_error("'%s': header dim[%d]=%lld is not positive; the file "
                     "is corrupt, re-export the scan",
                     path, i, (long long)dim[i]);
            return ERR_FORMAT;
        }
    for (int i = (int)dim[0] + 1; i < 8; i++)
        dim[i] = 1;
    f->nbyper = datatype_bytes(f->datatype);
    if (!f->nbyper) {
        const char *name = nifti_datatype_to_string(f->datatype);
        sl_error("'%s' has datatype %s (%d), which segment does not read; "
                 "convert the scan to a real-valued type (e.g. float32 or "
                 "int16)",
                 path, name ? name : "unknown", f->datatype);
        return ERR_UNSUPPORTED;
    }
    /* The voxel count times the value size stays under 2^62: dims are
     * positive, so each partial product is checked before it is formed
     * (then any sum with an offset below 2^62 fits in int64). */
    int64_t n = f->nbyper;
    for (int i = 1; i < 8; i++) {
        if (dim[i] > ((int64_t)1 << 62) / n) {
            sl_error("'%s': header dims overflow (%lld x %lld x %lld x "
                     "%lld ... voxels); the file is corrupt, re-export the "
                     "scan",
                     path, (long long)dim[1], (long long)dim[2],
                     (long long)dim[3], (long long)dim[4]);
            return ERR_FORMAT;
        }
        n *= dim[i];
    }
    for (int i = 5; i < 8; i++)
        if (dim[i] > 1) {
            sl_error("'%s' is %lldD (dim[%d]=%lld); segment takes 3D scans "
                     "or 4D with one volume per modality",
                     path, (long long)dim[0], i, (long long)dim[i]);
            return ERR_UNSUPPORTED;
        }
    for (int i = 0; i < 4; i++)
        f->dim[i] = dim[i + 1];
    /* vox_offset: a whole byte count past the header and its 4-byte
     * extension flag (NIfTI-1 stores it as a float; 0 there is the
     * ANALYZE-era "right after the header"). */
    int64_t min_off = f->version == 1 ? 352 : 544;
    if (f->version == 1 && offset == 0) offset = 352;
    if (offset < min_off) {
        sl_error("'%s': header vox_offset=%lld is inside the %lld-byte "
                 "header; the file is corrupt, re-export the scan",
                 path, (long long)offset, (long long)min_off);
        return ERR_FORMAT;
    }
    f->offset = offset;
    /* libnifti fills the geometry (qform/sform, pixdim, scaling) from
     * the host-order copy; its extension reader is never run. */
    f->nim = f->version == 1 ? nifti_convert_n1hdr2nim(h.n1, path)
                             : nifti_convert_n2hdr2nim(h.n2, path);
    if (!f->nim) {
        sl_error("'%s' is not a readable NIfTI file (libnifti rejected "
                 "its header); re-export the scan",
                 path);
        return ERR_FORMAT;
    }
    if (f->nim->nx != f->dim[0] || f->nim->ny != f->dim[1] ||
        f->nim->nz != f->dim[2] || f->nim->datatype != f->datatype) {
        sl_error("'%s': libnifti reads its header differently (dims or "
                 "datatype); the file is corrupt, re-export the scan",
                 path);
        return ERR_FORMAT;
    }
    return 0;
}

/* Bytes of voxel data one file declares (fits: see parse_header). */
static int64_t data_bytes(const NiiFile *f)
{
    return f->dim[0] * f->dim[1] * f->dim[2] * f->dim[3] * f->nbyper;
}

/* Open one file's header, validated, and check that the file can hold
 * the data it declares: exactly for .nii, within the deflate bound for
 * .nii.gz (whose real length read_voxels checks as it decompresses). */
static int open_file(const char *path, NiiFile *f)
{
    memset(f, 0, sizeof *f);
    f->path = path;
    struct stat st;
    if (stat(path, &st) != 0) {
        sl_error("cannot open '%s': %s; check the path", path,
                 strerror(errno));
        return ERR_IO;
    }
    if (!S_ISREG(st.st_mode)) {
        sl_error("'%s' is not a regular file; give the path of a .nii or "
                 ".nii.gz scan",
                 path);
        return ERR_IO;
    }
    f->file_size = (int64_t)st.st_size;
    f->gz = nifti_is_gzfile(path);
    int rc = parse_header(path, f);
    if (rc) return rc;
    int64_t have = f->file_size;
    if (f->gz)
        have = have > INT64_MAX / DEFLATE_MAX_RATIO
                   ? INT64_MAX
                   : have * DEFLATE_MAX_RATIO;
    int64_t bytes = data_bytes(f);
    if (f->offset > have || bytes > have - f->offset) {
        sl_error("'%s': data shorter than the header says (%lld voxels of "
                 "%d bytes from byte %lld declared, file has %lld bytes%s); "
                 "the file is truncated or its header is wrong",
                 path, (long long)(bytes / f->nbyper), f->nbyper,
                 (long long)f->offset, (long long)f->file_size,
                 f->gz ? " compressed" : "");
        return ERR_FORMAT;
    }
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
             "resample them to one grid first",
             pa, pb, what);
    return ERR_SHAPE;
}

/* Unsigned value of an nb-byte field at p stored little-endian, or
 * big-endian when `big`. */
static inline uint64_t load_uint(const uint8_t *p, int nb, int big)
{
    uint64_t x = 0;
    for (int i = 0; i < nb; i++)
        x |= (uint64_t)p[big ? nb - 1 - i : i] << (8 * i);
    return x;
}

/* dst[0..n) = the n raw values at src (as stored: `f->swap` tells the
 * byte order) converted to float with slope/inter applied. */
static void convert_to_float(float *dst, const uint8_t *src, size_t n,
                             const NiiFile *f, double slope, double inter)
{
    int big = f->swap ? !HOST_BIG_ENDIAN : HOST_BIG_ENDIAN;
#define CONVERT(T, U)                                                        \
    do {                                                                     \
        for (size_t i = 0; i < n; i++) {                                     \
            U u = (U)load_uint(src + i * sizeof(T), (int)sizeof(T), big);    \
            T x;                                                             \
            memcpy(&x, &u, sizeof x);                                        \
            dst[i] = (float)((double)x * slope + inter);                     \
        }                                                                    \
    } while (0)
    switch (f->datatype) {
    case DT_UINT8:
        CONVERT(uint8_t, uint8_t);
        break;
    case DT_INT8:
        CONVERT(int8_t, uint8_t);
        break;
    case DT_UINT16:
        CONVERT(uint16_t, uint16_t);
        break;
    case DT_INT16:
        CONVERT(int16_t, uint16_t);
        break;
    case DT_UINT32:
        CONVERT(uint32_t, uint32_t);
        break;
    case DT_INT32:
        CONVERT(int32_t, uint32_t);
        break;
    case DT_UINT64:
        CONVERT(uint64_t, uint64_t);
        break;
    case DT_INT64:
        CONVERT(int64_t, uint64_t);
        break;
    case DT_FLOAT32:
        CONVERT(float, uint32_t);
        break;
    case DT_FLOAT64:
        CONVERT(double, uint64_t);
        break;
    default:
        CHECK(!"datatype validated in parse_header");
    }
#undef CONVERT
}

/* Make v->data hold at least `need` floats (of `total`): grow to
 * max(need, 2 x current) capped at total.  Doubling keeps the copies
 * linear, and a buffer is never more than twice what was read. */
static int reserve(Volume *v, size_t *cap, size_t need, size_t total,
                   const char *path)
{
    if (need <= *cap) return 0;
    size_t want = *cap > total / 2 ? total : *cap * 2;
    if (want < need) want = need;
    float *p = sl_realloc(v->data, want * sizeof(float));
    if (!p) {
        sl_error("out of memory reading '%s' (%zu MB of voxels)", path,
                 want * sizeof(float) >> 20);
        return ERR_NOMEM;
    }
    v->data = p;
    *cap = want;
    return 0;
}

/* Append the voxels of f (all its volumes) to v->data from float index
 * `at`, converting as they are read in READ_CHUNK pieces.  A .nii file's
 * size was checked, so its whole share is reserved at once; a .nii.gz
 * file's share grows only as decompression really yields data. */
static int read_voxels(const NiiFile *f, Volume *v, size_t *cap, size_t at,
                       size_t total, uint8_t *chunk)
{
    double slope = f->nim->scl_slope, inter = f->nim->scl_inter;
    /* NIfTI: slope 0 means the data are not scaled. */
    if (!(slope != 0.0 && isfinite(slope) && isfinite(inter))) {
        slope = 1.0;
        inter = 0.0;
    }
    size_t n = (size_t)(data_bytes(f) / f->nbyper);
    size_t per_chunk = READ_CHUNK / (size_t)f->nbyper;
    int rc = 0;
    if (!f->gz && (rc = reserve(v, cap, at + n, total, f->path))) return rc;
    znzFile fp = znzopen(f->path, "rb", f->gz);
    if (znz_isnull(fp)) {
        sl_error("cannot open '%s': %s; check the path", f->path,
                 strerror(errno));
        return ERR_IO;
    }
    /* znzseek returns fseek's 0 or gzseek's offset: ask znztell. */
    if (znzseek(fp, (znz_off_t)f->offset, SEEK_SET) < 0 ||
        znztell(fp) != (znz_off_t)f->offset) {
        rc = ERR_FORMAT;
        goto short_data;
    }
    for (size_t done = 0; done < n;) {
        size_t k = n - done < per_chunk ? n - done : per_chunk;
        if ((rc = reserve(v, cap, at + done + k, total, f->path))) goto out;
        size_t bytes = k * (size_t)f->nbyper;
        if (znzread(chunk, 1, bytes, fp) != bytes) {
            rc = ERR_FORMAT;
            goto short_data;
        }
        convert_to_float(v->data + at + done, chunk, k, f, slope, inter);
        done += k;
    }
    goto out;
short_data:
    sl_error("cannot read the voxels of '%s': data shorter than the header "
             "says (%lld voxels of %d bytes from byte %lld) or not "
             "decompressible; the file is truncated or corrupt",
             f->path, (long long)n, f->nbyper, (long long)f->offset);
out:
    znzclose(fp);
    return rc;
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
                     "single commas",
                     spec);
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
    return nio_read_within(spec, nio_default_max_memory(), v, geom);
}

int nio_read_within(const char *spec, uint64_t max_bytes, Volume *v,
                    NiftiGeom **geom)
{
    NiiFile files[MAX_INPUT_FILES];
    char *paths[MAX_INPUT_FILES];
    NiftiGeom *g = NULL;
    uint8_t *chunk = NULL;
    int nf = 0, rc;
    memset(files, 0, sizeof files);
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
        rc = open_file(paths[nf], &files[nf]);
        if (rc) goto fail;
        if (nf > 0) {
            rc = check_same_grid(files[0].nim, paths[0], files[nf].nim,
                                 paths[nf]);
            if (rc) goto fail;
        }
        total += files[nf].dim[3];
        if (total > MAX_VOLUMES) {
            sl_error("'%s' holds more than %d volumes; segment expects one "
                     "volume per modality",
                     spec, MAX_VOLUMES);
            rc = ERR_UNSUPPORTED;
            goto fail;
        }
    }
    /* vox * total * 4 < 2^62 * 4096 * 4 could overflow: compare in
     * double first (exact enough for a limit), then form it. */
    const int64_t *d = files[0].dim;
    int64_t vox = d[0] * d[1] * d[2];
    double claim = (double)vox * (double)total * (double)sizeof(float);
    if (claim > (double)max_bytes || claim > (double)(SIZE_MAX / 2)) {
        char need_s[32], max_s[32];
        sl_error("'%s' needs %s for its %lld x %lld x %lld x %lld float32 "
                 "voxels, above the memory limit of %s; raise it with "
                 "--max-memory if the scan is real",
                 spec, sl_fmt_bytes(claim, need_s), (long long)d[0],
                 (long long)d[1], (long long)d[2], (long long)total,
                 sl_fmt_bytes((double)max_bytes, max_s));
        rc = ERR_NOMEM;
        goto fail;
    }
    chunk = sl_alloc(READ_CHUNK);
    if (!chunk) {
        sl_error("out of memory reading '%s'", spec);
        rc = ERR_NOMEM;
        goto fail;
    }
    size_t n_all = (size_t)vox * (size_t)total, cap = 0, at = 0;
    /* A .gz case starts small and grows with the data (see reserve). */
    int any_gz = 0;
    for (int f = 0; f < nf; f++)
        any_gz |= files[f].gz;
    if (any_gz &&
        (rc = reserve(v, &cap,
                      n_all < GZ_FIRST_FLOATS ? n_all : GZ_FIRST_FLOATS,
                      n_all, paths[0])))
        goto fail;
    for (int f = 0; f < nf; f++) {
        rc = read_voxels(&files[f], v, &cap, at, n_all, chunk);
        if (rc) goto fail;
        at += (size_t)(vox * files[f].dim[3]);
    }
    v->dim[0] = d[0];
    v->dim[1] = d[1];
    v->dim[2] = d[2];
    v->n_mod = (int)total;
    if (geom) {
        g = sl_calloc(1, sizeof *g);
        if (!g) {
            sl_error("out of memory reading '%s'", spec);
            rc = ERR_NOMEM;
            goto fail;
        }
        g->nim = files[0].nim;
        g->version = files[0].version;
        files[0].nim = NULL;
        *geom = g;
    }
    rc = 0;
fail:
    for (int f = 0; f < MAX_INPUT_FILES; f++)
        if (files[f].nim) nifti_image_free(files[f].nim);
    if (rc) volume_free(v);
    sl_free(chunk);
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
    for (int i = 5; i < 8; i++)
        nim->dim[i] = 1;
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
    if (g->version == 2 || nim->nx > 32767 || nim->ny > 32767 ||
        nim->nz > 32767 || nt > 32767)
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
        size_t n =
            bytes - done < ((size_t)1 << 30) ? bytes - done : (size_t)1 << 30;
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
                 "writable and has free space",
                 tmp, errno ? strerror(errno) : "write failed");
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
        for (size_t i = 0; i < n; i++)
            b[i] = (uint8_t)labels[i];
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
