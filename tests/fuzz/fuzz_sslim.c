/* Fuzz target: the .sslim reader (see fuzz_targets.h). */
#include "runtime/common.h"
#include "runtime/graph.h"
#include "runtime/sslim.h"
#include "tests/fuzz/fuzz_targets.h"

int fuzz_sslim(const uint8_t *data, size_t size)
{
    Graph g;
    graph_init(&g);
    sl_error_reset();
    if (sslim_decode(data, size, "fuzz input", &g) == 0) fuzz_use_graph(&g);
    graph_free(&g);
    return 0;
}
