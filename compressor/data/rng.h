/* A small seeded PRNG for the data pipeline (xoshiro256** seeded through
 * splitmix64), passed explicitly: no global state.
 *
 * Streams: rng_seed(&r, seed, a, b) derives an independent stream from a
 * seed and two indices (e.g. batch k and sample b), so what a sample gets
 * depends only on (seed, k, b), never on which thread draws it or when.
 */
#ifndef SL_DATA_RNG_H
#define SL_DATA_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct {
    uint64_t s[4];
} Rng;

static inline uint64_t rng_splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Stream (a, b) of `seed`.  Each index is mixed through splitmix64 before
 * combining, so neighbouring (a, b) give unrelated streams. */
static inline void rng_seed(Rng *r, uint64_t seed, uint64_t a, uint64_t b)
{
    uint64_t x = seed;
    uint64_t ha = a, hb = b;
    x ^= rng_splitmix(&ha) * 3u;
    x ^= rng_splitmix(&hb) * 7u;
    for (int i = 0; i < 4; i++)
        r->s[i] = rng_splitmix(&x);
}

static inline uint64_t rng_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t rng_next(Rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rng_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rng_rotl(s[3], 45);
    return out;
}

/* Uniform double in [0, 1) with 53 random bits. */
static inline double rng_uniform(Rng *r)
{
    return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

static inline double rng_range(Rng *r, double lo, double hi)
{
    return lo + (hi - lo) * rng_uniform(r);
}

/* Uniform integer in [0, n) (n >= 1); the modulo bias is below 2^-32
 * for the sizes used here (n < 2^32). */
static inline int64_t rng_below(Rng *r, int64_t n)
{
    return (int64_t)(rng_next(r) % (uint64_t)n);
}

/* Standard normal (Box-Muller; one value per call, deterministic). */
static inline double rng_normal(Rng *r)
{
    double u1 = 1.0 - rng_uniform(r); /* (0, 1]: log is finite */
    double u2 = rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
