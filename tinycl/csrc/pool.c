/* Average pooling. A window averages only its taps inside the input (TFLite semantics for padded pooling;
 * without padding this is the plain average). */
#include "internal.h"

void tcl_avgpool_forward(const tcl_conv_shape *s, const float *x, float *y) {
    const int32_t hw_in = s->h_in * s->w_in, hw_out = s->h_out * s->w_out;
    for (int32_t c = 0; c < s->c_in; ++c) {
        const float *xc = x + c * hw_in;
        for (int32_t oy = 0; oy < s->h_out; ++oy) {
            int32_t ky0, ky1;
            tcl_taps_of_output(oy, s->s_h, s->pad_top, s->k_h, s->h_in, &ky0, &ky1);
            const int32_t iy = oy * s->s_h - s->pad_top;
            for (int32_t ox = 0; ox < s->w_out; ++ox) {
                int32_t kx0, kx1;
                tcl_taps_of_output(ox, s->s_w, s->pad_left, s->k_w, s->w_in, &kx0, &kx1);
                const int32_t ix = ox * s->s_w - s->pad_left;
                float acc = 0.0f;
                for (int32_t ky = ky0; ky < ky1; ++ky)
                    for (int32_t kx = kx0; kx < kx1; ++kx) acc += xc[(iy + ky) * s->w_in + ix + kx];
                y[c * hw_out + oy * s->w_out + ox] = acc / (float)((ky1 - ky0) * (kx1 - kx0));
            }
        }
    }
}

void tcl_avgpool_input_grad(const tcl_conv_shape *s, const float *dy, float *dx) {
    const int32_t hw_in = s->h_in * s->w_in, hw_out = s->h_out * s->w_out;
    for (int32_t c = 0; c < s->c_in; ++c) {
        const float *gc = dy + c * hw_out;
        for (int32_t iy = 0; iy < s->h_in; ++iy) {
            int32_t ky0, ky1, oy0;
            tcl_taps_of_input(iy, s->s_h, s->pad_top, s->k_h, s->h_out, &ky0, &ky1, &oy0);
            for (int32_t ix = 0; ix < s->w_in; ++ix) {
                int32_t kx0, kx1, ox0;
                tcl_taps_of_input(ix, s->s_w, s->pad_left, s->k_w, s->w_out, &kx0, &kx1, &ox0);
                float acc = 0.0f;
                for (int32_t ky = ky0, oy = oy0; ky < ky1; ky += s->s_h, --oy) {
                    int32_t r0, r1;
                    tcl_taps_of_output(oy, s->s_h, s->pad_top, s->k_h, s->h_in, &r0, &r1);
                    for (int32_t kx = kx0, ox = ox0; kx < kx1; kx += s->s_w, --ox) {
                        int32_t q0, q1;
                        tcl_taps_of_output(ox, s->s_w, s->pad_left, s->k_w, s->w_in, &q0, &q1);
                        acc += gc[oy * s->w_out + ox] / (float)((r1 - r0) * (q1 - q0));
                    }
                }
                dx[c * hw_in + iy * s->w_in + ix] = acc;
            }
        }
    }
}

void tcl_global_avgpool_forward(int32_t c, int32_t hw, const float *x, float *y) {
    for (int32_t i = 0; i < c; ++i) {
        float acc = 0.0f;
        for (int32_t p = 0; p < hw; ++p) acc += x[i * hw + p];
        y[i] = acc / (float)hw;
    }
}

void tcl_global_avgpool_input_grad(int32_t c, int32_t hw, const float *dy, float *dx) {
    for (int32_t i = 0; i < c; ++i) {
        const float g = dy[i] / (float)hw;
        for (int32_t p = 0; p < hw; ++p) dx[i * hw + p] = g;
    }
}
