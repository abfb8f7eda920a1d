/* Private to compressor/onnx/: ModelMeta <-> ONNX metadata_props.
 *
 * Keys (all values are text, so the metadata reads well in Netron):
 *   sauron.meta_version  "1" (its presence marks a Sauron export)
 *   sauron.n_classes, sauron.class.<k>        class names
 *   sauron.n_modalities, sauron.modality.<k>  modality names
 *   sauron.normalize.<k>  "zscore" | "none" | "ct:LO,HI" (%.9g: exact)
 *   sauron.dims "2"|"3", sauron.axis "0".."2", sauron.patch "D,H,W",
 *   sauron.order "nnunet"|"nibabel", sauron.source_sha256 (64 hex),
 *   sauron.source_name, sauron.notes (optional)
 */
#ifndef SL_ONNX_META_H
#define SL_ONNX_META_H

#include "onnx.pb-c.h"
#include "runtime/graph.h"

typedef struct {
    char *key, *value; /* owned */
} MetaProp;

/* Encode m into *n key/value pairs (none when m has no classes or no
 * modalities: a graph without metadata).  Free with meta_props_free. */
int onnx_meta_encode(const ModelMeta *m, MetaProp **props, int *n);
void onnx_meta_props_free(MetaProp *props, int n);

/* If mp carries sauron.meta_version, replace g->meta with the stored
 * metadata.  Absent keys, or counts that do not fit g (class count !=
 * channels of output 0, modality count != input channels, dims != spatial
 * rank): returns 0 and changes nothing.  Malformed: ERR_FORMAT naming the
 * key and `path`; g->meta unchanged.  g's shapes must be inferred. */
int onnx_meta_decode(const Onnx__ModelProto *mp, const char *path, Graph *g);

#endif
