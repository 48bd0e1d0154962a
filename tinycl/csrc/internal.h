/* Helpers shared by the kernels; not part of the public API. */
#ifndef TINYCL_INTERNAL_H
#define TINYCL_INTERNAL_H

#include "tinycl.h"

static inline int32_t tcl_imax(int32_t a, int32_t b) { return a > b ? a : b; }
static inline int32_t tcl_imin(int32_t a, int32_t b) { return a < b ? a : b; }

/* Kernel taps [*lo, *hi) of output index o that fall inside an input of size n (stride s, leading pad p).
 * Computing the range once per output row/column keeps bounds checks out of the inner loops. */
static inline void tcl_taps_of_output(int32_t o, int32_t s, int32_t p, int32_t k, int32_t n, int32_t *lo,
                                      int32_t *hi) {
    const int32_t start = o * s - p; /* input index of tap 0 */
    *lo = tcl_imax(0, -start);
    *hi = tcl_imax(*lo, tcl_imin(k, n - start));
}

/* Outputs [*lo, *hi) (of n_out) whose tap t falls inside the input (size n): 0 <= o*s + t - p < n. */
static inline void tcl_outputs_of_tap(int32_t t, int32_t s, int32_t p, int32_t n, int32_t n_out, int32_t *lo,
                                      int32_t *hi) {
    const int32_t a = p - t, b = n - 1 + p - t;
    *lo = a <= 0 ? 0 : (a + s - 1) / s;
    *hi = b < 0 ? 0 : tcl_imin(n_out, b / s + 1);
    if (*hi < *lo) *hi = *lo;
}

/* Taps that read input index i: t = *t0, *t0 + s, ... < *t_end, from output o0 = (i + p - *t0) / s downwards
 * (each step of s in t is one output less). The first tap is the smallest t = i + p (mod s) whose output
 * index is below n_out. */
static inline void tcl_taps_of_input(int32_t i, int32_t s, int32_t p, int32_t k, int32_t n_out, int32_t *t0,
                                     int32_t *t_end, int32_t *o0) {
    *t0 = tcl_imax((i + p) % s, i + p - (n_out - 1) * s);
    *t_end = tcl_imin(k, i + p + 1);
    *o0 = (i + p - *t0) / s;
}

/* C (M x N, row stride ldc) += A (M x K) * B (K x N), with A[i][k] = a[i*a_rs + k*a_cs] and
 * B[k][j] = b[k*b_rs + j*b_cs]: the strides express transposes without copies. */
void tcl_gemm(int32_t m, int32_t n, int32_t k, const float *a, int32_t a_rs, int32_t a_cs, const float *b,
              int32_t b_rs, int32_t b_cs, float *c, int32_t ldc);

#endif /* TINYCL_INTERNAL_H */
