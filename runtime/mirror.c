/* Test-time mirroring (see mirror.h). */
#include "mirror.h"

#include <omp.h>
#include <string.h>

#include "common.h"

int mirror_init(Mirror *m, int n_axes, size_t n_in, size_t n_out,
                int n_threads)
{
    memset(m, 0, sizeof *m);
    CHECK(n_axes == 2 || n_axes == 3);
    m->n_threads = n_threads > 0 ? n_threads : omp_get_num_procs();
    m->n_axes = n_axes;
    m->first_axis = n_axes == 2 ? 1 : 0;
    m->n_pass = 1 << n_axes;
    m->n_in = n_in;
    m->n_out = n_out;
    m->xf = sl_alloc(sizeof(float) * n_in);
    m->cur = sl_alloc(sizeof(float) * n_out);
    int ok = m->xf && m->cur;
    for (int l = 0; l <= n_axes; l++) {
        m->lvl[l] = sl_alloc(sizeof(float) * n_out);
        ok = ok && m->lvl[l];
    }
    if (!ok) {
        mirror_free(m);
        sl_error("out of memory for --tta (%zu MB of mirrored outputs); "
                 "run without --tta",
                 (size_t)(n_axes + 2) * n_out * 4 >> 20);
        return ERR_NOMEM;
    }
    return 0;
}

void mirror_free(Mirror *m)
{
    sl_free(m->xf);
    sl_free(m->cur);
    for (int l = 0; l < 4; l++)
        sl_free(m->lvl[l]);
    memset(m, 0, sizeof *m);
}

void mirror_flip(float *dst, const float *src, int64_t nbc,
                 const int64_t pad[3], const int64_t box[3], int mask,
                 int n_threads)
{
    int64_t P0 = pad[0], P1 = pad[1], P2 = pad[2];
    int f0 = mask & 1, f1 = mask >> 1 & 1, f2 = mask >> 2 & 1;
    /* Each (channel, plane) writes its own rows. */
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t cz = 0; cz < nbc * P0; cz++) {
        int64_t c = cz / P0, z = cz % P0;
        int64_t sz = f0 && z < box[0] ? box[0] - 1 - z : z;
        for (int64_t y = 0; y < P1; y++) {
            int64_t sy = f1 && y < box[1] ? box[1] - 1 - y : y;
            float *d = dst + ((c * P0 + z) * P1 + y) * P2;
            const float *s = src + ((c * P0 + sz) * P1 + sy) * P2;
            if (f2) {
                for (int64_t x = 0; x < box[2]; x++)
                    d[x] = s[box[2] - 1 - x];
                memcpy(d + box[2], s + box[2],
                       sizeof(float) * (size_t)(P2 - box[2]));
            } else {
                memcpy(d, s, sizeof(float) * (size_t)P2);
            }
        }
    }
}

/* a += b over n floats. */
static void add_into(float *a, const float *b, size_t n, int n_threads)
{
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (size_t i = 0; i < n; i++)
        a[i] += b[i];
}

void mirror_push(Mirror *m)
{
    /* A binary counter: a partial sum of 2^l passes waits in lvl[l]
     * until its right sibling of the same size arrives. */
    const float *c = m->cur;
    for (int l = 0; l <= m->n_axes; l++) {
        if (!m->have[l]) {
            if (c != m->lvl[l])
                memcpy(m->lvl[l], c, sizeof(float) * m->n_out);
            m->have[l] = 1;
            return;
        }
        add_into(m->lvl[l], c, m->n_out, m->n_threads);
        m->have[l] = 0;
        /* the sum moves up a level */
        if (l + 1 <= m->n_axes && !m->have[l + 1]) {
            float *t = m->lvl[l + 1];
            m->lvl[l + 1] = m->lvl[l];
            m->lvl[l] = t;
            m->have[l + 1] = 1;
            return;
        }
        c = m->lvl[l];
    }
    CHECK(!"more passes pushed than the tree holds");
}

void mirror_mean(Mirror *m, float *out)
{
    CHECK(m->have[m->n_axes]);
    const float *s = m->lvl[m->n_axes];
    float inv = 1.0f / (float)m->n_pass;
    for (size_t i = 0; i < m->n_out; i++)
        out[i] = s[i] * inv;
    memset(m->have, 0, sizeof m->have);
}
