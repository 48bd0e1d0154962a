/* Runs the forward, weight-gradient and input-gradient kernels of one layer shape once, for callgrind
 * (benchmarks/kernels.py --callgrind). Usage: kernels_driver KIND c_in h_in w_in c_out h_out w_out k_h k_w s_h s_w
 * pad_top pad_left, KIND one of conv2d, depthwise, pointwise, linear. The benchmark driver may allocate; the
 * runtime itself never does. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tinycl.h"

static float *filled(size_t n) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; ++i) p[i] = (float)((i * 2654435761u) % 1000u) / 1000.0f - 0.5f;
    return p;
}

int main(int argc, char **argv) {
    if (argc != 14) {
        fprintf(stderr, "usage: %s KIND c_in h_in w_in c_out h_out w_out k_h k_w s_h s_w pad_top pad_left\n", argv[0]);
        return 2;
    }
    int32_t v[12];
    for (int i = 0; i < 12; ++i) v[i] = (int32_t)atoi(argv[i + 2]);
    const tcl_conv_shape s = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11]};
    const size_t n_in = (size_t)s.c_in * s.h_in * s.w_in, n_out = (size_t)s.c_out * s.h_out * s.w_out;
    const char *kind = argv[1];
    size_t n_w = (size_t)s.c_out * s.c_in * s.k_h * s.k_w;
    if (!strcmp(kind, "depthwise")) n_w = (size_t)s.c_out * s.k_h * s.k_w;
    if (!strcmp(kind, "linear")) n_w = n_in * n_out;
    float *x = filled(n_in), *w = filled(n_w), *b = filled((size_t)s.c_out), *y = filled(n_out);
    float *dy = filled(n_out), *dw = filled(n_w), *db = filled((size_t)s.c_out), *dx = filled(n_in);
    if (!strcmp(kind, "conv2d")) {
        tcl_conv2d_forward(&s, x, w, b, y);
        tcl_conv2d_weight_grad(&s, x, dy, dw, db);
        tcl_conv2d_input_grad(&s, dy, w, dx);
    } else if (!strcmp(kind, "depthwise")) {
        tcl_depthwise_forward(&s, x, w, b, y);
        tcl_depthwise_weight_grad(&s, x, dy, dw, db);
        tcl_depthwise_input_grad(&s, dy, w, dx);
    } else if (!strcmp(kind, "pointwise")) {
        tcl_pointwise_forward(&s, x, w, b, y);
        tcl_pointwise_weight_grad(&s, x, dy, dw, db);
        tcl_pointwise_input_grad(&s, dy, w, dx);
    } else if (!strcmp(kind, "linear")) {
        tcl_linear_forward((int32_t)n_in, (int32_t)n_out, x, w, NULL, y);
        tcl_linear_weight_grad((int32_t)n_in, (int32_t)n_out, x, dy, dw, NULL);
        tcl_linear_input_grad((int32_t)n_in, (int32_t)n_out, dy, w, dx);
    } else {
        fprintf(stderr, "unknown kind %s\n", kind);
        return 2;
    }
    printf("%g\n", (double)(y[0] + dw[0] + dx[0])); /* keeps the results alive */
    free(x), free(w), free(b), free(y), free(dy), free(dw), free(db), free(dx);
    return 0;
}
