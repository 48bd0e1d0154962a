/* The learner's random numbers: xoshiro128** (Blackman and Vigna), and the draws the continual-learning loop makes
 * from it. tinycl/device/rng.py is the same generator in Python; the learner uses it in device mode, so the host
 * and the device draw the same mini-batches, replay slots and memory insertions. */
#include "internal.h"

static uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

static uint32_t fmix32(uint32_t h) { /* MurmurHash3's finalizer: spreads a small seed over all bits */
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

void tcl_rng_seed(tcl_rng *rng, uint32_t seed) {
    for (uint32_t i = 0; i < 4; ++i) rng->s[i] = fmix32(seed + (i + 1u) * 0x9e3779b9u);
    if (!(rng->s[0] | rng->s[1] | rng->s[2] | rng->s[3])) rng->s[0] = 1u; /* the one state it must not be in */
}

uint32_t tcl_rng_next(tcl_rng *rng) {
    uint32_t *s = rng->s;
    const uint32_t result = rotl(s[1] * 5u, 7) * 9u, t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
}

uint32_t tcl_rng_below(tcl_rng *rng, uint32_t n) {
    /* uniform in [0, n) without modulo bias: reject the lowest 2^32 mod n values */
    const uint32_t threshold = (0u - n) % n;
    for (;;) {
        const uint32_t r = tcl_rng_next(rng);
        if (r >= threshold) return r % n;
    }
}

void tcl_rng_permutation(tcl_rng *rng, uint16_t *out, int32_t n) {
    for (int32_t i = 0; i < n; ++i) out[i] = (uint16_t)i;
    for (int32_t i = n - 1; i > 0; --i) {
        const uint32_t j = tcl_rng_below(rng, (uint32_t)i + 1u);
        const uint16_t t = out[i];
        out[i] = out[j];
        out[j] = t;
    }
}

void tcl_rng_sample(tcl_rng *rng, uint16_t *out, int32_t n, int32_t size) {
    for (int32_t i = 0; i < n; ++i) out[i] = (uint16_t)i;
    for (int32_t i = 0; i < size; ++i) {
        const uint32_t j = (uint32_t)i + tcl_rng_below(rng, (uint32_t)(n - i));
        const uint16_t t = out[i];
        out[i] = out[j];
        out[j] = t;
    }
}
