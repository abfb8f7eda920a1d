/* Fuzz target: the .sslim reader (see fuzz_targets.h). */
#include <stdlib.h>
#include <string.h>

#include "runtime/common.h"
#include "runtime/graph.h"
#include "runtime/sslim.h"
#include "tests/fuzz/fuzz_targets.h"

/* Header layout (runtime/sslim.c): u32 section count at 16, header CRC at
 * 20 over [0,20) and [24, end of the table), table entries of 24 bytes
 * (tag, CRC, u64 offset, u64 size) from 32. */
#define SSLIM_TABLE 32
#define SSLIM_ENTRY 24

/* Recompute every CRC the reader checks, where the table says where the
 * bytes are (entries past the end of data are left as they are). */
static void fix_crcs(uint8_t *d, size_t n)
{
    if (n < SSLIM_TABLE) return;
    uint32_t ns = sl_rd32(d + 16);
    size_t i = 0;
    for (; i < ns && SSLIM_TABLE + SSLIM_ENTRY * (i + 1) <= n; i++) {
        uint8_t *t = d + SSLIM_TABLE + SSLIM_ENTRY * i;
        uint64_t o = sl_rd64(t + 8), l = sl_rd64(t + 16);
        if (o <= n && l <= n - o) sl_wr32(t + 4, sl_crc32(0, d + o, l));
    }
    uint32_t hc = sl_crc32(0, d, 20);
    hc = sl_crc32(hc, d + 24, SSLIM_TABLE - 24 + SSLIM_ENTRY * i);
    sl_wr32(d + 20, hc);
}

static void decode(const uint8_t *data, size_t size)
{
    Graph g;
    graph_init(&g);
    sl_error_reset();
    if (sslim_decode(data, size, "fuzz input", &g) == 0) fuzz_use_graph(&g);
    graph_free(&g);
}

int fuzz_sslim(const uint8_t *data, size_t size)
{
    decode(data, size);
    /* A mutated byte almost always breaks a CRC, which the reader checks
     * first; the same input with its CRCs made right reaches the
     * structural checks behind them. */
    uint8_t *fixed = malloc(size ? size : 1);
    if (!fixed) return -1;
    memcpy(fixed, data, size);
    fix_crcs(fixed, size);
    if (size && memcmp(fixed, data, size)) decode(fixed, size);
    free(fixed);
    return 0;
}
