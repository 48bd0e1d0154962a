/* General 2-D convolution (any kernel, stride, padding), direct and output-stationary: each output element
 * (of y, dw or dx) is accumulated in a register and stored once. The valid range of kernel taps is computed
 * once per output row and column, so the inner loops carry no bounds checks and padding costs no memory
 * (no padded copy, no im2col buffer: the arena holds only the tensors themselves). */
#include "internal.h"

void tcl_conv2d_forward(const tcl_conv_shape *s, const float *x, const float *w, const float *b, float *y) {
    const int32_t hw_in = s->h_in * s->w_in, ksize = s->k_h * s->k_w;
    for (int32_t co = 0; co < s->c_out; ++co) {
        const float *wo = w + (size_t)co * (size_t)s->c_in * (size_t)ksize;
        float *yo = y + (size_t)co * (size_t)s->h_out * (size_t)s->w_out;
        for (int32_t oy = 0; oy < s->h_out; ++oy) {
            int32_t ky0, ky1;
            tcl_taps_of_output(oy, s->s_h, s->pad_top, s->k_h, s->h_in, &ky0, &ky1);
            const int32_t iy = oy * s->s_h - s->pad_top;
            for (int32_t ox = 0; ox < s->w_out; ++ox) {
                int32_t kx0, kx1;
                tcl_taps_of_output(ox, s->s_w, s->pad_left, s->k_w, s->w_in, &kx0, &kx1);
                const int32_t ix = ox * s->s_w - s->pad_left;
                float acc = b ? b[co] : 0.0f;
                for (int32_t ci = 0; ci < s->c_in; ++ci) {
                    const float *xc = x + ci * hw_in, *wc = wo + ci * ksize;
                    for (int32_t ky = ky0; ky < ky1; ++ky) {
                        const float *xr = xc + (iy + ky) * s->w_in, *wr = wc + ky * s->k_w;
                        for (int32_t kx = kx0; kx < kx1; ++kx) acc += wr[kx] * xr[ix + kx];
                    }
                }
                yo[oy * s->w_out + ox] = acc;
            }
        }
    }
}

void tcl_conv2d_weight_grad(const tcl_conv_shape *s, const float *x, const float *dy, float *dw, float *db) {
    const int32_t hw_in = s->h_in * s->w_in, hw_out = s->h_out * s->w_out, ksize = s->k_h * s->k_w;
    for (int32_t co = 0; co < s->c_out; ++co) {
        const float *go = dy + co * hw_out;
        for (int32_t ci = 0; ci < s->c_in; ++ci) {
            const float *xc = x + ci * hw_in;
            float *dwc = dw + ((size_t)co * (size_t)s->c_in + (size_t)ci) * (size_t)ksize;
            for (int32_t ky = 0; ky < s->k_h; ++ky) {
                int32_t oy0, oy1;
                tcl_outputs_of_tap(ky, s->s_h, s->pad_top, s->h_in, s->h_out, &oy0, &oy1);
                for (int32_t kx = 0; kx < s->k_w; ++kx) {
                    int32_t ox0, ox1;
                    tcl_outputs_of_tap(kx, s->s_w, s->pad_left, s->w_in, s->w_out, &ox0, &ox1);
                    float acc = 0.0f;
                    for (int32_t oy = oy0; oy < oy1; ++oy) {
                        const float *gr = go + oy * s->w_out;
                        const float *xr = xc + (oy * s->s_h + ky - s->pad_top) * s->w_in;
                        for (int32_t ox = ox0; ox < ox1; ++ox) acc += gr[ox] * xr[ox * s->s_w + kx - s->pad_left];
                    }
                    dwc[ky * s->k_w + kx] += acc;
                }
            }
        }
        if (db) {
            float acc = 0.0f;
            for (int32_t p = 0; p < hw_out; ++p) acc += go[p];
            db[co] += acc;
        }
    }
}

void tcl_conv2d_input_grad(const tcl_conv_shape *s, const float *dy, const float *w, float *dx) {
    const int32_t hw_out = s->h_out * s->w_out, ksize = s->k_h * s->k_w;
    for (int32_t ci = 0; ci < s->c_in; ++ci) {
        for (int32_t iy = 0; iy < s->h_in; ++iy) {
            int32_t ky0, ky1, oy0;
            tcl_taps_of_input(iy, s->s_h, s->pad_top, s->k_h, s->h_out, &ky0, &ky1, &oy0);
            for (int32_t ix = 0; ix < s->w_in; ++ix) {
                int32_t kx0, kx1, ox0;
                tcl_taps_of_input(ix, s->s_w, s->pad_left, s->k_w, s->w_out, &kx0, &kx1, &ox0);
                float acc = 0.0f;
                for (int32_t co = 0; co < s->c_out; ++co) {
                    const float *go = dy + co * hw_out;
                    const float *wc = w + ((size_t)co * (size_t)s->c_in + (size_t)ci) * (size_t)ksize;
                    for (int32_t ky = ky0, oy = oy0; ky < ky1; ky += s->s_h, --oy)
                        for (int32_t kx = kx0, ox = ox0; kx < kx1; kx += s->s_w, --ox)
                            acc += go[oy * s->w_out + ox] * wc[ky * s->k_w + kx];
                }
                dx[(ci * s->h_in + iy) * s->w_in + ix] = acc;
            }
        }
    }
}
