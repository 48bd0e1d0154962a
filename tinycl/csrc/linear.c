/* Fully connected layer, y = W x + b with W (n_out x n_in) row-major. A CHW input is read as its flattening.
 * Matrix-vector products, blocked by four outputs so that each loaded input feeds four accumulators. */
#include "internal.h"

void tcl_linear_forward(int32_t n_in, int32_t n_out, const float *x, const float *w, const float *b, float *y) {
    int32_t o = 0;
    for (; o + 4 <= n_out; o += 4) {
        const float *w0 = w + (size_t)o * (size_t)n_in, *w1 = w0 + n_in, *w2 = w1 + n_in, *w3 = w2 + n_in;
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
        for (int32_t i = 0; i < n_in; ++i) {
            const float xv = x[i];
            a0 += w0[i] * xv; a1 += w1[i] * xv; a2 += w2[i] * xv; a3 += w3[i] * xv;
        }
        y[o] = a0 + (b ? b[o] : 0.0f); y[o + 1] = a1 + (b ? b[o + 1] : 0.0f);
        y[o + 2] = a2 + (b ? b[o + 2] : 0.0f); y[o + 3] = a3 + (b ? b[o + 3] : 0.0f);
    }
    for (; o < n_out; ++o) {
        const float *wo = w + (size_t)o * (size_t)n_in;
        float acc = 0.0f;
        for (int32_t i = 0; i < n_in; ++i) acc += wo[i] * x[i];
        y[o] = acc + (b ? b[o] : 0.0f);
    }
}

void tcl_linear_weight_grad(int32_t n_in, int32_t n_out, const float *x, const float *dy, float *dw, float *db) {
    /* an outer product: each weight row is one multiply-add over x, read in order */
    for (int32_t o = 0; o < n_out; ++o) {
        const float g = dy[o];
        float *row = dw + (size_t)o * (size_t)n_in;
        for (int32_t i = 0; i < n_in; ++i) row[i] += g * x[i];
        if (db) db[o] += g;
    }
}

void tcl_linear_input_grad(int32_t n_in, int32_t n_out, const float *dy, const float *w, float *dx) {
    /* dx = W^T dy, four inputs at a time: W is read by columns, which costs nothing extra on cacheless SRAM */
    int32_t i = 0;
    for (; i + 4 <= n_in; i += 4) {
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
        for (int32_t o = 0; o < n_out; ++o) {
            const float *wo = w + (size_t)o * (size_t)n_in + i, g = dy[o];
            a0 += wo[0] * g; a1 += wo[1] * g; a2 += wo[2] * g; a3 += wo[3] * g;
        }
        dx[i] = a0; dx[i + 1] = a1; dx[i + 2] = a2; dx[i + 3] = a3;
    }
    for (; i < n_in; ++i) {
        float acc = 0.0f;
        for (int32_t o = 0; o < n_out; ++o) acc += w[(size_t)o * (size_t)n_in + i] * dy[o];
        dx[i] = acc;
    }
}
