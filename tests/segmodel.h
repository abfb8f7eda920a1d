/* Tiny segmentation models with known behaviour and their expected
 * labels, shared by test_segment_lib and test_segment_cli:
 *   threshold: a 1x1 conv whose two logits are +-(x - t): label = x > t
 *              on the normalised intensity, optionally then Softmax;
 *   shift:     a 3x3(x3) conv with one tap: the label of a voxel is the
 *              threshold of a neighbour along known tensor axes, which
 *              pins down the NIfTI axis <-> tensor axis mapping;
 *   down/up:   optionally a zero-weight strided conv + transposed conv
 *              path added to the output: values unchanged, but the
 *              network then only accepts even sizes, so padding and
 *              cropping are exercised.
 * Expected labels are computed here independently (double statistics).
 */
#ifndef SL_SEGMODEL_H
#define SL_SEGMODEL_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/graph.h"
#include "runtime/volume.h"

enum { KIND_THRESH, KIND_SHIFT };

typedef struct {
    int dims, axis, nmod, kind, downup, softmax;
    VoxelOrder order;
    int patch[3];
    float t; /* threshold on the normalised first modality */
    NormalizeKind norm;
    float lo, hi; /* CT window */
} ModelSpec;

float *weights(size_t n);
void build_model(Graph *g, const ModelSpec *ms);
void fill_volume(Volume *v, int64_t nx, int64_t ny, int64_t nz, int nmod,
                 int seed);
double *normalised(const Volume *v, const ModelSpec *ms);
float mid_threshold(const Volume *v, const ModelSpec *ms);
int16_t *expected(const Volume *v, const ModelSpec *ms);
int count_diff(const int16_t *a, const int16_t *b, int64_t n);

/* Graph-building helpers (cmocka-asserting) for tests that build their
 * own models: a value of the given dims (data owned by the graph, or
 * NULL), and a strdup that cannot return NULL. */
int seg_add_value(Graph *g, const char *name, int ndim, const int64_t *d,
                  float *data);
char *seg_strdup(const char *s);

#endif
