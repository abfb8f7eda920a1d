/* Fuzz targets: one entry function per reader, shared by the libFuzzer
 * programs (tests/fuzz/libfuzzer_main.c, built by `make fuzz` with clang)
 * and the replay test (tests/test_fuzz_replay.c, built by `make test`),
 * so a committed corpus or crash file runs through exactly the code the
 * fuzzer ran.
 *
 * Each entry takes one arbitrary input, runs the reader on it (through
 * temporary files where the reader takes paths) and frees everything,
 * whether the reader accepted or refused the input.  It returns 0 when
 * the input was handled (accepted or refused with an error code), -1
 * only when the harness itself failed (no temporary folder): an input
 * can never make it return non-zero, so a replay that sees -1 fails for
 * the machine, not the input.  Crashes, leaks and hangs are what the
 * sanitizers and libFuzzer catch.
 *
 * Multi-file inputs (NIfTI modality lists, ONNX model + external data)
 * are one byte string cut at FUZZ_SEP: the mutator keeps the cut where
 * it is while it changes either side.
 */
#ifndef SL_FUZZ_TARGETS_H
#define SL_FUZZ_TARGETS_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/graph.h"

#define FUZZ_SEP "\n--fuzz-next-file--\n"

/* .sslim bytes: sslim_decode, then shape inference and FLOP count at the
 * stored input shape (unknown dims 16), as sauron-inspect and segment do. */
int fuzz_sslim(const uint8_t *data, size_t size);
/* data[0] holds flags: bit 0 gzip the first file (.nii.gz, else .nii),
 * bit 1 the same for the second file, bit 2 read two files joined by a
 * comma (the second is the part after FUZZ_SEP, or a copy of the first
 * if there is none).  The rest is the file (or the two files).
 * nio_read on the spec, then the geometry queries. */
int fuzz_nifti(const uint8_t *data, size_t size);
/* model.onnx [FUZZ_SEP external.bin]: onnx_import of model.onnx with
 * external.bin beside it (the name the external-data seeds use), then
 * shape inference at the stored input shape. */
int fuzz_onnx(const uint8_t *data, size_t size);
/* dataset.json text, in a dataset folder holding one case with two
 * modalities in both file endings (empty files: dataset_open only lists
 * them), through dataset_open. */
int fuzz_dataset(const uint8_t *data, size_t size);

typedef struct {
    const char *name; /* folder name under tests/fuzz/corpus and crashes */
    int (*run)(const uint8_t *data, size_t size);
} FuzzTarget;

/* Every target, for the replay test; FUZZ_N_TARGETS entries. */
#define FUZZ_N_TARGETS 4
extern const FuzzTarget fuzz_targets[FUZZ_N_TARGETS];

/* Helpers for the targets (fuzz_util.c). */
/* What the programs do with a graph they loaded: shape inference at its
 * stored input shape (unknown dims 16, as nothing else is known), FLOP
 * and parameter counts.  Errors are the input's, so ignored. */
void fuzz_use_graph(Graph *g);
/* A fresh private folder under $TMPDIR (or /tmp) into dir[len]; 0 or -1. */
int fuzz_mkdtemp(char *dir, size_t len);
/* Write data to dir/name (gzip-compressed if gz); 0 or -1. */
int fuzz_write(const char *dir, const char *name, const void *data,
               size_t size, int gz);
/* Remove dir and everything below it. */
void fuzz_rmtree(const char *dir);
/* Cut data at the first FUZZ_SEP: the part before it in (*a, *na), the
 * part after it in (*b, *nb); *b is NULL and *nb 0 without a separator. */
void fuzz_split(const uint8_t *data, size_t size, const uint8_t **a,
                size_t *na, const uint8_t **b, size_t *nb);

#endif
