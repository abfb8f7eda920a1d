/* Double-buffered batch producer (see prefetch.h).
 *
 * Slot k % 2 holds batch k.  The producer makes batch `next_make` into
 * its slot once that slot is free (the consumer has moved past the batch
 * two before); the consumer takes batch `next_take` once it is ready.
 * All state changes happen under one mutex; filling happens outside it. */
#include "prefetch.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "runtime/common.h"

struct Prefetcher {
    const Sampler *s;
    Batch slot[2];
    int ready[2]; /* slot holds an unconsumed finished batch */
    int held;     /* slot index lent to the consumer, -1 if none */
    int64_t next_make, next_take;
    int quit;
    double waited;
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static void *producer(void *arg)
{
    Prefetcher *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        int i = (int)(p->next_make % 2);
        while (!p->quit && (p->ready[i] || p->held == i))
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->quit) break;
        int64_t k = p->next_make;
        pthread_mutex_unlock(&p->mu);
        sampler_fill(p->s, k, &p->slot[i]);
        pthread_mutex_lock(&p->mu);
        p->ready[i] = 1;
        p->next_make++;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int prefetch_start(Prefetcher **out, const Sampler *s, int64_t first_k)
{
    Prefetcher *p = sl_calloc(1, sizeof *p);
    int rc = ERR_NOMEM;
    *out = NULL;
    if (!p) goto fail;
    p->s = s;
    p->held = -1;
    p->next_make = p->next_take = first_k;
    if ((rc = batch_alloc(&p->slot[0], s)) ||
        (rc = batch_alloc(&p->slot[1], s)))
        goto fail;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    int e = pthread_create(&p->thread, NULL, producer, p);
    if (e) {
        sl_error("cannot start the batch prefetch thread: %s", strerror(e));
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
        rc = ERR_IO;
        goto fail;
    }
    p->started = 1;
    *out = p;
    return 0;
fail:
    if (rc == ERR_NOMEM && !sl_error_reported())
        sl_error("out of memory for the batch prefetcher");
    if (p) {
        batch_free(&p->slot[0]);
        batch_free(&p->slot[1]);
    }
    sl_free(p);
    return rc;
}

int prefetch_next(Prefetcher *p, const Batch **out)
{
    double t0 = sl_now();
    pthread_mutex_lock(&p->mu);
    if (p->held >= 0) {
        p->ready[p->held] = 0;
        p->held = -1;
        pthread_cond_broadcast(&p->cv);
    }
    int i = (int)(p->next_take % 2);
    while (!p->ready[i])
        pthread_cond_wait(&p->cv, &p->mu);
    CHECK(p->slot[i].k == p->next_take);
    p->held = i;
    p->next_take++;
    p->waited += sl_now() - t0;
    pthread_mutex_unlock(&p->mu);
    *out = &p->slot[i];
    return 0;
}

double prefetch_wait_seconds(const Prefetcher *p)
{
    return p->waited;
}

void prefetch_stop(Prefetcher *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    batch_free(&p->slot[0]);
    batch_free(&p->slot[1]);
    sl_free(p);
}
