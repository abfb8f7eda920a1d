/* .sslim v1: the project's model file (graph, weights, metadata).
 *
 * Little-endian, versioned (major.minor; a reader rejects an unknown
 * major), one CRC-32 per section, weights 64-byte aligned in the file so
 * it can be memory-mapped.  Every offset and size is bounds-checked on
 * read; a bad file gives ERR_FORMAT with a message naming the file and
 * saying what to do (re-export with sauron-compress).
 */
#ifndef SL_SSLIM_H
#define SL_SSLIM_H

#include <stddef.h>
#include <stdint.h>

#include "graph.h"

#define SSLIM_MAJOR 1
#define SSLIM_MINOR 1 /* 1: optional GEOM section (sslim.c) */

/* Write atomically (temporary name, then rename).  Refuses an existing
 * path unless force (ERR_EXISTS). */
int sslim_write(const Graph *g, const char *path, int force);
/* Serialise to a new buffer (caller sl_free()s *data). */
int sslim_encode(const Graph *g, uint8_t **data, size_t *size);

/* Read into an initialised, empty graph (graph_init).  On failure g is
 * left empty (graph_free'd).  `what` names the source in messages. */
int sslim_read(const char *path, Graph *g);
int sslim_decode(const uint8_t *data, size_t size, const char *what,
                 Graph *g);

/* Nonzero if the buffer starts with the .sslim magic. */
int sslim_is_sslim(const uint8_t *data, size_t size);

#endif
