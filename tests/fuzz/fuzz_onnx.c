/* Fuzz target: ONNX import with an external-data file beside the model
 * (see fuzz_targets.h). */
#include <stdio.h>

#include "compressor/onnx/onnx_import.h"
#include "runtime/common.h"
#include "runtime/graph.h"
#include "tests/fuzz/fuzz_targets.h"

int fuzz_onnx(const uint8_t *data, size_t size)
{
    const uint8_t *model, *ext;
    size_t n_model, n_ext;
    fuzz_split(data, size, &model, &n_model, &ext, &n_ext);
    char dir[4096], path[4096 + 32];
    if (fuzz_mkdtemp(dir, sizeof dir)) return -1;
    int rc = -1;
    if (fuzz_write(dir, "model.onnx", model, n_model, 0)) goto out;
    if (ext && fuzz_write(dir, "external.bin", ext, n_ext, 0)) goto out;
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    Graph g;
    graph_init(&g);
    sl_error_reset();
    if (onnx_import(path, NULL, &g) == 0) fuzz_use_graph(&g);
    graph_free(&g);
    rc = 0;
out:
    fuzz_rmtree(dir);
    return rc;
}
