/* The matrix product under pointwise convolutions: register-blocked, output-stationary.
 *
 * A 4x4 block of C stays in 16 accumulators while k runs: 8 loads feed 16 multiply-accumulates, and every C
 * element is loaded and stored once. On a Cortex-M4F/M7 (32 single-precision registers, no data cache on
 * most parts' SRAM paths) memory operations, not FMAs, bound the inner loop, so this ratio is what matters;
 * the block needs 16 + 4 + 4 = 24 float registers, which fits. */
#include "internal.h"

static void block4x4(int32_t k, const float *a, int32_t a_rs, int32_t a_cs, const float *b, int32_t b_rs,
                     int32_t b_cs, float *c, int32_t ldc) {
    float acc[4][4] = {{0.0f}};
    for (int32_t p = 0; p < k; ++p) {
        const float *ap = a + p * a_cs, *bp = b + p * b_rs;
        const float a0 = ap[0], a1 = ap[a_rs], a2 = ap[2 * a_rs], a3 = ap[3 * a_rs];
        const float b0 = bp[0], b1 = bp[b_cs], b2 = bp[2 * b_cs], b3 = bp[3 * b_cs];
        acc[0][0] += a0 * b0; acc[0][1] += a0 * b1; acc[0][2] += a0 * b2; acc[0][3] += a0 * b3;
        acc[1][0] += a1 * b0; acc[1][1] += a1 * b1; acc[1][2] += a1 * b2; acc[1][3] += a1 * b3;
        acc[2][0] += a2 * b0; acc[2][1] += a2 * b1; acc[2][2] += a2 * b2; acc[2][3] += a2 * b3;
        acc[3][0] += a3 * b0; acc[3][1] += a3 * b1; acc[3][2] += a3 * b2; acc[3][3] += a3 * b3;
    }
    for (int32_t i = 0; i < 4; ++i)
        for (int32_t j = 0; j < 4; ++j) c[i * ldc + j] += acc[i][j];
}

/* Edge blocks (mi <= 4 rows, nj <= 4 columns), same order of operations, loops not unrolled. */
static void block_edge(int32_t mi, int32_t nj, int32_t k, const float *a, int32_t a_rs, int32_t a_cs,
                       const float *b, int32_t b_rs, int32_t b_cs, float *c, int32_t ldc) {
    float acc[4][4] = {{0.0f}};
    for (int32_t p = 0; p < k; ++p)
        for (int32_t i = 0; i < mi; ++i) {
            const float av = a[i * a_rs + p * a_cs];
            for (int32_t j = 0; j < nj; ++j) acc[i][j] += av * b[p * b_rs + j * b_cs];
        }
    for (int32_t i = 0; i < mi; ++i)
        for (int32_t j = 0; j < nj; ++j) c[i * ldc + j] += acc[i][j];
}

void tcl_gemm(int32_t m, int32_t n, int32_t k, const float *a, int32_t a_rs, int32_t a_cs, const float *b,
              int32_t b_rs, int32_t b_cs, float *c, int32_t ldc) {
    for (int32_t i = 0; i < m; i += 4) {
        const int32_t mi = tcl_imin(4, m - i);
        for (int32_t j = 0; j < n; j += 4) {
            const int32_t nj = tcl_imin(4, n - j);
            const float *ab = a + i * a_rs, *bb = b + j * b_cs;
            float *cb = c + i * ldc + j;
            if (mi == 4 && nj == 4)
                block4x4(k, ab, a_rs, a_cs, bb, b_rs, b_cs, cb, ldc);
            else
                block_edge(mi, nj, k, ab, a_rs, a_cs, bb, b_rs, b_cs, cb, ldc);
        }
    }
}
