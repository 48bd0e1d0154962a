/* Portable expf and logf: only IEEE single-precision +, -, *, / and integer bit operations, in a fixed order, so
 * every C99 compiler and FPU that does not contract or reassociate (the builds use -ffp-contract=off) computes
 * the same bits. The C library's expf/logf differ between newlib and glibc by one ulp on ~10% of inputs, which
 * would make a learner's weights on the device drift from the host's; these make the loss part of the runtime.
 * Accuracy: about 1 ulp on the inputs the softmax cross-entropy gives them (expf of x <= 0, logf of x >= 1). */
#include <string.h>

#include "internal.h"

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

float tcl_expf(float x) {
    if (x != x) return x;
    if (x > 88.0f) return from_bits(0x7f800000u); /* +inf */
    if (x < -87.0f) return 0.0f;                   /* below the smallest normal float: no subnormals */
    /* x = k ln2 + r, |r| <= ln2 / 2; ln2 in two parts so that k * LN2_HI is exact (Cody and Waite) */
    const float t = x * 1.44269504f;
    const int32_t k = (int32_t)(t >= 0.0f ? t + 0.5f : t - 0.5f);
    const float r = (x - (float)k * 0.693145752f) - (float)k * 1.42860677e-6f;
    const float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.66666672e-1f + r * (4.16666679e-2f + r * (8.33333377e-3f
                                                                                              + r * 1.38888892e-3f)))));
    return p * from_bits((uint32_t)(k + 127) << 23); /* k in [-126, 127]: 2^k is a normal float */
}

float tcl_logf(float x) {
    if (x != x || x < 0.0f) return from_bits(0x7fc00000u); /* NaN */
    if (x == 0.0f) return -from_bits(0x7f800000u);
    uint32_t u = to_bits(x);
    int32_t e = 0;
    if (u < 0x00800000u) { /* subnormal: scale by 2^23 */
        u = to_bits(x * 8388608.0f);
        e = -23;
    }
    if (u >= 0x7f800000u) return x; /* +inf */
    e += (int32_t)(u >> 23) - 127;
    float m = from_bits((u & 0x007fffffu) | 0x3f800000u); /* [1, 2) */
    if (m > 1.41421356f) {
        m *= 0.5f;
        e += 1;
    }
    /* log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716 */
    const float f = m - 1.0f, s = f / (2.0f + f), z = s * s;
    const float log_m = s * (2.0f + z * (0.666666687f + z * (0.400000006f + z * (0.285714298f + z * 0.222222224f))));
    return (float)e * 0.693145752f + (log_m + (float)e * 1.42860677e-6f);
}
