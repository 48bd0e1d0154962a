/* The matrix product under pointwise convolutions: register-blocked, output-stationary, fused multiply-adds.
 *
 * A 4x4 block of C stays in 16 accumulators while k runs: 8 loads feed 16 fused multiply-adds (fmaf: one vfma.f32
 * on a Cortex-M4F, an FMA instruction on a host built with -mfma, libm's exactly rounded fmaf otherwise; the same
 * bits everywhere), and every C element is loaded and stored once. On a Cortex-M4F/M7 memory operations bound the
 * inner loop; the block needs 16 + 4 + 4 = 24 float registers, which fits. Each operand walks four pointers: the
 * three products a convolution needs (Y = W X, dW += dY X^T, dX = W^T dY) each have a unit stride on one side,
 * and a variant per case lets the compiler use post-incremented and multiple loads (docs/firmware.md). */
#include <math.h>

#include "internal.h"

#define BLOCK4X4(A_RS, A_CS, B_RS, B_CS)                                                                          \
    const float *a0 = a, *a1 = a + (A_RS), *a2 = a + 2 * (A_RS), *a3 = a + 3 * (A_RS);                            \
    const float *b0 = b, *b1 = b + (B_CS), *b2 = b + 2 * (B_CS), *b3 = b + 3 * (B_CS);                            \
    float c00 = 0.0f, c01 = 0.0f, c02 = 0.0f, c03 = 0.0f, c10 = 0.0f, c11 = 0.0f, c12 = 0.0f, c13 = 0.0f;         \
    float c20 = 0.0f, c21 = 0.0f, c22 = 0.0f, c23 = 0.0f, c30 = 0.0f, c31 = 0.0f, c32 = 0.0f, c33 = 0.0f;         \
    for (int32_t p = 0; p < k; ++p) {                                                                              \
        const float x0 = *a0, x1 = *a1, x2 = *a2, x3 = *a3, y0 = *b0, y1 = *b1, y2 = *b2, y3 = *b3;              \
        a0 += (A_CS); a1 += (A_CS); a2 += (A_CS); a3 += (A_CS);                                                    \
        b0 += (B_RS); b1 += (B_RS); b2 += (B_RS); b3 += (B_RS);                                                    \
        c00 = fmaf(x0, y0, c00); c01 = fmaf(x0, y1, c01); c02 = fmaf(x0, y2, c02); c03 = fmaf(x0, y3, c03);      \
        c10 = fmaf(x1, y0, c10); c11 = fmaf(x1, y1, c11); c12 = fmaf(x1, y2, c12); c13 = fmaf(x1, y3, c13);      \
        c20 = fmaf(x2, y0, c20); c21 = fmaf(x2, y1, c21); c22 = fmaf(x2, y2, c22); c23 = fmaf(x2, y3, c23);      \
        c30 = fmaf(x3, y0, c30); c31 = fmaf(x3, y1, c31); c32 = fmaf(x3, y2, c32); c33 = fmaf(x3, y3, c33);      \
    }                                                                                                              \
    c[0] += c00; c[1] += c01; c[2] += c02; c[3] += c03;                                                            \
    c += ldc; c[0] += c10; c[1] += c11; c[2] += c12; c[3] += c13;                                                  \
    c += ldc; c[0] += c20; c[1] += c21; c[2] += c22; c[3] += c23;                                                  \
    c += ldc; c[0] += c30; c[1] += c31; c[2] += c32; c[3] += c33;

/* Y = W X (forward): A rows and B columns are contiguous along k only in A; B's four columns are adjacent */
static void block_ab_unit(int32_t k, const float *a, int32_t a_rs, const float *b, int32_t b_rs, float *c,
                          int32_t ldc) {
    BLOCK4X4(a_rs, 1, b_rs, 1)
}

/* dW += dY X^T (weight gradient): both operands run along k with unit stride */
static void block_k_unit(int32_t k, const float *a, int32_t a_rs, const float *b, int32_t b_cs, float *c,
                         int32_t ldc) {
    BLOCK4X4(a_rs, 1, 1, b_cs)
}

/* dX = W^T dY (input gradient): A's four rows and B's four columns are adjacent */
static void block_mn_unit(int32_t k, const float *a, int32_t a_cs, const float *b, int32_t b_rs, float *c,
                          int32_t ldc) {
    BLOCK4X4(1, a_cs, b_rs, 1)
}

static void block_any(int32_t k, const float *a, int32_t a_rs, int32_t a_cs, const float *b, int32_t b_rs,
                      int32_t b_cs, float *c, int32_t ldc) {
    BLOCK4X4(a_rs, a_cs, b_rs, b_cs)
}

/* Edge blocks (mi <= 4 rows, nj <= 4 columns), same order of operations, loops not unrolled. */
static void block_edge(int32_t mi, int32_t nj, int32_t k, const float *a, int32_t a_rs, int32_t a_cs,
                       const float *b, int32_t b_rs, int32_t b_cs, float *c, int32_t ldc) {
    float acc[4][4] = {{0.0f}};
    for (int32_t p = 0; p < k; ++p)
        for (int32_t i = 0; i < mi; ++i) {
            const float av = a[i * a_rs + p * a_cs];
            for (int32_t j = 0; j < nj; ++j) acc[i][j] = fmaf(av, b[p * b_rs + j * b_cs], acc[i][j]);
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
            if (mi < 4 || nj < 4)
                block_edge(mi, nj, k, ab, a_rs, a_cs, bb, b_rs, b_cs, cb, ldc);
            else if (a_cs == 1 && b_cs == 1)
                block_ab_unit(k, ab, a_rs, bb, b_rs, cb, ldc);
            else if (a_cs == 1 && b_rs == 1)
                block_k_unit(k, ab, a_rs, bb, b_cs, cb, ldc);
            else if (a_rs == 1 && b_cs == 1)
                block_mn_unit(k, ab, a_cs, bb, b_rs, cb, ldc);
            else
                block_any(k, ab, a_rs, a_cs, bb, b_rs, b_cs, cb, ldc);
        }
    }
}
