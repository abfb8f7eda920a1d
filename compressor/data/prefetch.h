/* Background batch preparation: one producer pthread fills batch k+1
 * while the caller trains on batch k (double buffering).
 *
 * Deterministic: batches come out in order first_k, first_k + 1, ... and
 * batch k is sampler_fill(s, k): the same bytes whatever the timing (the
 * producer only decides *when* a batch is made, never what is in it).
 * The producer is a single thread running no OpenMP regions, so it takes
 * at most one core from the compute team while it works.
 *
 * Usage:
 *     Prefetcher *pf;
 *     prefetch_start(&pf, &sampler, 0);
 *     for (step...) { const Batch *b; prefetch_next(pf, &b); train(b); }
 *     prefetch_stop(pf);
 * The batch returned by prefetch_next stays valid (and untouched by the
 * producer) until the next prefetch_next or prefetch_stop.
 */
#ifndef SL_DATA_PREFETCH_H
#define SL_DATA_PREFETCH_H

#include <stdint.h>

#include "compressor/data/sampler.h"

typedef struct Prefetcher Prefetcher;

/* Start producing batches first_k, first_k + 1, ... of s (s must outlive
 * the prefetcher).  0, ERR_NOMEM, or ERR_IO if the thread cannot start. */
int prefetch_start(Prefetcher **out, const Sampler *s, int64_t first_k);
/* Wait for the next batch in order; releases the previous one. */
int prefetch_next(Prefetcher *p, const Batch **out);
/* Stop the producer (waits for the batch it is making) and free all. */
void prefetch_stop(Prefetcher *p);

/* Seconds the consumer spent waiting in prefetch_next so far (0 when the
 * producer keeps ahead): a starvation measure for reports. */
double prefetch_wait_seconds(const Prefetcher *p);

#endif
