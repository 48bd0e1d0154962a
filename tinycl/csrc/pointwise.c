/* Pointwise (1x1, stride 1, unpadded) convolution. In CHW a sample is a (C x H*W) matrix, so all three
 * kernels are matrix products over it with no reshuffling (the reason the runtime keeps CHW): no im2col
 * buffer and no scratch memory. */
#include <string.h>

#include "internal.h"

void tcl_pointwise_forward(const tcl_conv_shape *s, const float *x, const float *w, const float *b, float *y) {
    const int32_t hw = s->h_out * s->w_out;
    for (int32_t co = 0; co < s->c_out; ++co)
        for (int32_t p = 0; p < hw; ++p) y[co * hw + p] = b ? b[co] : 0.0f;
    /* Y (c_out x hw) += W (c_out x c_in) X (c_in x hw) */
    tcl_gemm(s->c_out, hw, s->c_in, w, s->c_in, 1, x, hw, 1, y, hw);
}

void tcl_pointwise_weight_grad(const tcl_conv_shape *s, const float *x, const float *dy, float *dw, float *db) {
    const int32_t hw = s->h_out * s->w_out;
    /* dW (c_out x c_in) += dY (c_out x hw) X^T (hw x c_in) */
    tcl_gemm(s->c_out, s->c_in, hw, dy, hw, 1, x, 1, hw, dw, s->c_in);
    if (db)
        for (int32_t co = 0; co < s->c_out; ++co) {
            float acc = 0.0f;
            for (int32_t p = 0; p < hw; ++p) acc += dy[co * hw + p];
            db[co] += acc;
        }
}

void tcl_pointwise_input_grad(const tcl_conv_shape *s, const float *dy, const float *w, float *dx) {
    const int32_t hw = s->h_out * s->w_out;
    memset(dx, 0, sizeof(float) * (size_t)s->c_in * (size_t)hw);
    /* dX (c_in x hw) = W^T (c_in x c_out) dY (c_out x hw) */
    tcl_gemm(s->c_in, hw, s->c_out, w, 1, s->c_in, dy, hw, 1, dx, hw);
}
