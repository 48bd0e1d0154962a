/* Instructions per kernel call on an emulated Cortex-M4F (QEMU mps2-an386, -icount shift=0): every fp32 training
 * kernel and every int8 inference kernel on a few MobileNet-like shapes. Built and run by benchmarks/m4f_kernels.py
 * with the runtime's sources and the exported project's startup and platform files. Prints one line per call:
 * "<kernel>;<shape>;<phase>;<MACs>;<instructions>" (shape: channels x height x width and stride, or the matrix). */
#include <string.h>

#include "platform.h"
#include "tinycl.h"

#define MAXN (128 * 128)
static float x[128 * 64], y[128 * 64], w[MAXN], dy[128 * 64], dx[128 * 64], dw[MAXN], b[256], db[256];
static int8_t qx[128 * 64], qy[128 * 64], qw[MAXN];
static int32_t qb[128], mult[128], shift[128];
static char line[128];

static void put_u(char **p, uint32_t v) {
    char buf[11];
    int n = 0;
    do buf[n++] = (char)('0' + v % 10u); while ((v /= 10u) != 0);
    while (n) *(*p)++ = buf[--n];
}

static void report(const char *kernel, const char *shape, const char *phase, uint32_t macs, uint32_t insns) {
    char *p = line;
    for (const char *s = kernel; *s;) *p++ = *s++;
    *p++ = ';';
    for (const char *s = shape; *s;) *p++ = *s++;
    *p++ = ';';
    for (const char *s = phase; *s;) *p++ = *s++;
    *p++ = ';';
    put_u(&p, macs);
    *p++ = ';';
    put_u(&p, insns);
    *p++ = '\n';
    *p = 0;
    plat_print(line);
}

static uint32_t overhead;
#define MEASURE(kernel, shape, phase, macs, call)                                                               \
    do {                                                                                                         \
        const uint32_t t0 = plat_instructions();                                                                 \
        call;                                                                                                    \
        report(kernel, shape, phase, macs, plat_instructions() - t0 - overhead);                                 \
    } while (0)

static tcl_conv_shape shape(int32_t c_in, int32_t h, int32_t c_out, int32_t k, int32_t s, int32_t pad, int32_t dw_) {
    tcl_conv_shape r;
    r.c_in = c_in;
    r.h_in = r.w_in = h;
    r.c_out = dw_ ? c_in : c_out;
    r.k_h = r.k_w = k;
    r.s_h = r.s_w = s;
    r.pad_top = r.pad_left = pad;
    r.h_out = r.w_out = (h + 2 * pad - k) / s + 1;
    return r;
}

int main(int argc, char **argv) {
    plat_init(argc, argv);
    for (int32_t i = 0; i < MAXN; ++i) w[i] = (float)(i % 7) * 0.01f - 0.03f, qw[i] = (int8_t)(i % 11 - 5);
    for (int32_t i = 0; i < 128 * 64; ++i) x[i] = dy[i] = (float)(i % 5) * 0.1f, qx[i] = (int8_t)(i % 9 - 4);
    for (int32_t i = 0; i < 128; ++i) mult[i] = 1 << 30, shift[i] = -6, qb[i] = i;
    {
        const uint32_t t0 = plat_instructions();
        overhead = plat_instructions() - t0;
    }
    const tcl_requant q = {3, -2, -128, 127, TCL_TIES_UP, mult, shift, NULL, NULL};
    /* pointwise 128 -> 128 on 8 x 8 (the papers' conv5_x/sep at width 0.25) */
    const tcl_conv_shape pw = shape(128, 8, 128, 1, 1, 0, 0);
    const uint32_t pw_macs = 128u * 128u * 64u;
    MEASURE("pointwise", "128x8x8 -> 128", "forward", pw_macs, tcl_pointwise_forward(&pw, x, w, b, y));
    MEASURE("pointwise", "128x8x8 -> 128", "weight_grad", pw_macs, tcl_pointwise_weight_grad(&pw, x, dy, dw, db));
    MEASURE("pointwise", "128x8x8 -> 128", "input_grad", pw_macs, tcl_pointwise_input_grad(&pw, dy, w, dx));
    /* depthwise 3 x 3, 128 channels, 8 x 8, stride 1 and stride 2 (TF same padding): MobileNet-V1 0.25/128's
     * Conv2d_11 and Conv2d_12, in the adaptive stage above Conv2d_10_depthwise */
    const tcl_conv_shape d1 = shape(128, 8, 128, 3, 1, 1, 1);
    tcl_conv_shape d2 = shape(128, 8, 128, 3, 2, 0, 1);
    d2.h_out = d2.w_out = 4; /* TF same: 8 -> 4, padding 0 before and 1 after */
    const uint32_t d1_macs = 128u * 64u * 9u, d2_macs = 128u * 16u * 9u;
    MEASURE("depthwise", "128x8x8 s1", "forward", d1_macs, tcl_depthwise_forward(&d1, x, w, b, y));
    MEASURE("depthwise", "128x8x8 s1", "weight_grad", d1_macs, tcl_depthwise_weight_grad(&d1, x, dy, dw, db));
    MEASURE("depthwise", "128x8x8 s1", "input_grad", d1_macs, tcl_depthwise_input_grad(&d1, dy, w, dx));
    MEASURE("depthwise_s2", "128x8x8 s2", "forward", d2_macs, tcl_depthwise_forward(&d2, x, w, b, y));
    MEASURE("depthwise_s2", "128x8x8 s2", "weight_grad", d2_macs, tcl_depthwise_weight_grad(&d2, x, dy, dw, db));
    MEASURE("depthwise_s2", "128x8x8 s2", "input_grad", d2_macs, tcl_depthwise_input_grad(&d2, dy, w, dx));
    /* MobileNet-V1 0.25/128's last depthwise layer (Conv2d_13: 256 channels of 4 x 4, stride 1), and stride 2 on
     * the same plane (4 -> 2, TF same) */
    const tcl_conv_shape d4 = shape(256, 4, 256, 3, 1, 1, 1);
    tcl_conv_shape d5 = shape(256, 4, 256, 3, 2, 0, 1);
    d5.h_out = d5.w_out = 2;
    const uint32_t d4_macs = 256u * 16u * 9u, d5_macs = 256u * 4u * 9u;
    MEASURE("depthwise_4x4", "256x4x4 s1", "forward", d4_macs, tcl_depthwise_forward(&d4, x, w, b, y));
    MEASURE("depthwise_4x4", "256x4x4 s1", "weight_grad", d4_macs, tcl_depthwise_weight_grad(&d4, x, dy, dw, db));
    MEASURE("depthwise_4x4", "256x4x4 s1", "input_grad", d4_macs, tcl_depthwise_input_grad(&d4, dy, w, dx));
    MEASURE("depthwise_4x4_s2", "256x4x4 s2", "forward", d5_macs, tcl_depthwise_forward(&d5, x, w, b, y));
    MEASURE("depthwise_4x4_s2", "256x4x4 s2", "weight_grad", d5_macs, tcl_depthwise_weight_grad(&d5, x, dy, dw, db));
    MEASURE("depthwise_4x4_s2", "256x4x4 s2", "input_grad", d5_macs, tcl_depthwise_input_grad(&d5, dy, w, dx));
    /* the same on a 32 x 32 plane (8 channels): the border is 12% of the outputs instead of 44% */
    const tcl_conv_shape d3 = shape(8, 32, 8, 3, 1, 1, 1);
    const uint32_t d3_macs = 8u * 1024u * 9u;
    MEASURE("depthwise_32x32", "8x32x32 s1", "forward", d3_macs, tcl_depthwise_forward(&d3, x, w, b, y));
    MEASURE("depthwise_32x32", "8x32x32 s1", "weight_grad", d3_macs, tcl_depthwise_weight_grad(&d3, x, dy, dw, db));
    MEASURE("depthwise_32x32", "8x32x32 s1", "input_grad", d3_macs, tcl_depthwise_input_grad(&d3, dy, w, dx));
    /* conv2d 3 x 3, 16 -> 32 on 8 x 8; linear 256 -> 32 */
    const tcl_conv_shape cv = shape(16, 8, 32, 3, 1, 1, 0);
    const uint32_t cv_macs = 32u * 16u * 9u * 64u;
    MEASURE("conv2d", "16x8x8 -> 32, 3x3", "forward", cv_macs, tcl_conv2d_forward(&cv, x, w, b, y));
    MEASURE("conv2d", "16x8x8 -> 32, 3x3", "weight_grad", cv_macs, tcl_conv2d_weight_grad(&cv, x, dy, dw, db));
    MEASURE("conv2d", "16x8x8 -> 32, 3x3", "input_grad", cv_macs, tcl_conv2d_input_grad(&cv, dy, w, dx));
    MEASURE("linear", "256 -> 32", "forward", 256u * 32u, tcl_linear_forward(256, 32, x, w, b, y));
    MEASURE("linear", "256 -> 32", "weight_grad", 256u * 32u, tcl_linear_weight_grad(256, 32, x, dy, dw, db));
    MEASURE("linear", "256 -> 32", "input_grad", 256u * 32u, tcl_linear_input_grad(256, 32, dy, w, dx));
    MEASURE("sgd", "8192 weights", "momentum", 3u * 8192u, tcl_sgd_update(8192, w, dw, dx, 0.01f, 0.9f, 5e-4f));
    /* int8 inference: the same geometries */
    MEASURE("conv2d_s8", "16x8x8 -> 32, 3x3", "forward", cv_macs, tcl_conv2d_s8(&cv, &q, qx, qw, qb, qy));
    MEASURE("pointwise_s8", "128x8x8 -> 128", "forward", pw_macs, tcl_conv2d_s8(&pw, &q, qx, qw, qb, qy));
    MEASURE("depthwise_s8", "128x8x8 s1", "forward", d1_macs, tcl_depthwise_s8(&d1, &q, qx, qw, qb, qy));
    MEASURE("linear_s8", "256 -> 32", "forward", 256u * 32u, tcl_linear_s8(256, 32, &q, qx, qw, qb, qy));
    plat_exit(0);
    return 0;
}
