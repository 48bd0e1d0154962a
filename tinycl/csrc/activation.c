/* Fused activations. The backward pass reads the layer's output, which the training step keeps anyway as the
 * next layer's input, so no pre-activation tensor is stored. */
#include "internal.h"

void tcl_activation_forward(int32_t act, int32_t n, const float *x, float *y) {
    if (act == TCL_ACT_RELU)
        for (int32_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
    else if (act == TCL_ACT_RELU6)
        for (int32_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? (x[i] < 6.0f ? x[i] : 6.0f) : 0.0f;
    else if (x != y)
        for (int32_t i = 0; i < n; ++i) y[i] = x[i];
}

void tcl_activation_input_grad(int32_t act, int32_t n, const float *y, const float *dy, float *dx) {
    if (act == TCL_ACT_RELU)
        for (int32_t i = 0; i < n; ++i) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    else if (act == TCL_ACT_RELU6)
        for (int32_t i = 0; i < n; ++i) dx[i] = (y[i] > 0.0f && y[i] < 6.0f) ? dy[i] : 0.0f;
    else if (dx != dy)
        for (int32_t i = 0; i < n; ++i) dx[i] = dy[i];
}
