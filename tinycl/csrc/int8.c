/* Int8 inference kernels for the frozen stage, with TFLite's integer arithmetic: int32 accumulation of
 * (x - x_zero) * (w - w_zero) over the taps inside the input (padding taps add nothing, as TFLite skips them),
 * plus the int32 bias, then requantization by a Q31 fixed-point multiplier and a power-of-two shift, plus the
 * output zero point, clamped to the fused activation's range.
 *
 * Codes are int8. A uint8 model runs here exactly by shifting every code and zero point by -128 (the
 * differences x - x_zero do not change, and an output clamped to [0, 255] with zero point z equals one clamped
 * to [-128, 127] with z - 128): the binding (tinycl/device/int8.py) does that once, as TFLite's converter does.
 *
 * No signed overflow and no implementation-defined right shift: accumulators wrap as uint32 (TFLite's int32
 * wrap-around), and shifts of negative values are written as floor divisions by powers of two. */
#include "internal.h"

#ifndef TCL_NO_DOUBLE
#include <math.h>
#endif

static inline int64_t floor_shift(int64_t x, int32_t n) { /* floor(x / 2^n), n in [0, 62] */
    return x >= 0 ? x >> n : -((-x - 1) >> n) - 1;
}

static inline int32_t wrap32(uint32_t x) { /* two's complement reading, without implementation-defined casts */
    return x < 0x80000000u ? (int32_t)x : -(int32_t)(0xFFFFFFFFu - x) - 1;
}

int32_t tcl_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int32_t shift, int32_t ties) {
    /* gemmlowp's SaturatingRoundingDoublingHighMul ... */
    const int32_t left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    const int32_t a = wrap32((uint32_t)x << left);
    if (a == INT32_MIN && multiplier == INT32_MIN) return INT32_MAX;
    const int64_t ab = (int64_t)a * multiplier;
    const int64_t nudged = ab + (ab >= 0 ? ((int64_t)1 << 30) : 1 - ((int64_t)1 << 30));
    const int64_t high = nudged >= 0 ? nudged / ((int64_t)1 << 31) : -((-nudged) / ((int64_t)1 << 31));
    /* ... then a rounding right shift: ties toward +infinity (LiteRT's optimized x86 kernels) */
    if (ties == TCL_TIES_UP) return (int32_t)floor_shift(high + (((int64_t)1 << right) >> 1), right);
    /* or away from zero (gemmlowp's RoundingDivideByPOT: TFLite's reference kernels, TFLite Micro, CMSIS-NN) */
    const int64_t mask = ((int64_t)1 << right) - 1, remainder = high & mask;
    const int64_t threshold = (mask >> 1) + (high < 0 ? 1 : 0);
    return (int32_t)(floor_shift(high, right) + (remainder > threshold ? 1 : 0));
}

static inline int8_t clamp8(int64_t y, const tcl_requant *q) {
    return (int8_t)(y < q->act_min ? q->act_min : (y > q->act_max ? q->act_max : y));
}

static inline int8_t requantize(uint32_t acc, const tcl_requant *q, int32_t c) {
    const int32_t a = wrap32(acc);
#ifndef TCL_NO_DOUBLE
    /* LiteRT's reference FULLY_CONNECTED only; firmware builds (-DTCL_NO_DOUBLE, tinycl export) leave it out, so no
     * double-precision arithmetic reaches a device without a double FPU */
    if (q->real_scale) { /* round(acc * scale) in double, ties away from zero; bounded before the cast */
        double v = (double)a * q->real_scale[c];
        v = v >= 0.0 ? floor(v + 0.5) : -floor(-v + 0.5);
        v = v > 1e6 ? 1e6 : (v < -1e6 ? -1e6 : v); /* far outside any int8 clamp: the result is the same */
        return clamp8((int64_t)v + q->out_zero, q);
    }
#endif
    const int32_t y = tcl_multiply_by_quantized_multiplier(a, q->multiplier[c], q->shift[c], q->ties);
    return clamp8((int64_t)y + q->out_zero, q);
}

void tcl_conv2d_s8(const tcl_conv_shape *s, const tcl_requant *q, const int8_t *x, const int8_t *w,
                   const int32_t *bias, int8_t *y) {
    const int32_t hw_in = s->h_in * s->w_in, ksize = s->k_h * s->k_w;
    for (int32_t co = 0; co < s->c_out; ++co) {
        const int8_t *wo = w + (size_t)co * (size_t)s->c_in * (size_t)ksize;
        const int32_t wz = q->w_zero ? q->w_zero[co] : 0;
        for (int32_t oy = 0; oy < s->h_out; ++oy) {
            int32_t ky0, ky1;
            tcl_taps_of_output(oy, s->s_h, s->pad_top, s->k_h, s->h_in, &ky0, &ky1);
            const int32_t iy = oy * s->s_h - s->pad_top;
            for (int32_t ox = 0; ox < s->w_out; ++ox) {
                int32_t kx0, kx1;
                tcl_taps_of_output(ox, s->s_w, s->pad_left, s->k_w, s->w_in, &kx0, &kx1);
                const int32_t ix = ox * s->s_w - s->pad_left;
                uint32_t acc = bias ? (uint32_t)bias[co] : 0u;
                for (int32_t ci = 0; ci < s->c_in; ++ci) {
                    const int8_t *xc = x + ci * hw_in, *wc = wo + ci * ksize;
                    for (int32_t ky = ky0; ky < ky1; ++ky) {
                        const int8_t *xr = xc + (iy + ky) * s->w_in, *wr = wc + ky * s->k_w;
                        for (int32_t kx = kx0; kx < kx1; ++kx)
                            acc += (uint32_t)((xr[ix + kx] - q->in_zero) * (wr[kx] - wz));
                    }
                }
                y[(co * s->h_out + oy) * s->w_out + ox] = requantize(acc, q, co);
            }
        }
    }
}

void tcl_depthwise_s8(const tcl_conv_shape *s, const tcl_requant *q, const int8_t *x, const int8_t *w,
                      const int32_t *bias, int8_t *y) {
    const int32_t hw_in = s->h_in * s->w_in, hw_out = s->h_out * s->w_out, ksize = s->k_h * s->k_w;
    for (int32_t c = 0; c < s->c_out; ++c) {
        const int8_t *xc = x + c * hw_in, *wc = w + c * ksize;
        const int32_t wz = q->w_zero ? q->w_zero[c] : 0;
        for (int32_t oy = 0; oy < s->h_out; ++oy) {
            int32_t ky0, ky1;
            tcl_taps_of_output(oy, s->s_h, s->pad_top, s->k_h, s->h_in, &ky0, &ky1);
            const int32_t iy = oy * s->s_h - s->pad_top;
            for (int32_t ox = 0; ox < s->w_out; ++ox) {
                int32_t kx0, kx1;
                tcl_taps_of_output(ox, s->s_w, s->pad_left, s->k_w, s->w_in, &kx0, &kx1);
                const int32_t ix = ox * s->s_w - s->pad_left;
                uint32_t acc = bias ? (uint32_t)bias[c] : 0u;
                for (int32_t ky = ky0; ky < ky1; ++ky) {
                    const int8_t *xr = xc + (iy + ky) * s->w_in, *wr = wc + ky * s->k_w;
                    for (int32_t kx = kx0; kx < kx1; ++kx)
                        acc += (uint32_t)((xr[ix + kx] - q->in_zero) * (wr[kx] - wz));
                }
                y[c * hw_out + oy * s->w_out + ox] = requantize(acc, q, c);
            }
        }
    }
}

void tcl_linear_s8(int32_t n_in, int32_t n_out, const tcl_requant *q, const int8_t *x, const int8_t *w,
                   const int32_t *bias, int8_t *y) {
    for (int32_t o = 0; o < n_out; ++o) {
        const int8_t *row = w + (size_t)o * (size_t)n_in;
        const int32_t wz = q->w_zero ? q->w_zero[o] : 0;
        uint32_t acc = bias ? (uint32_t)bias[o] : 0u;
        for (int32_t i = 0; i < n_in; ++i) acc += (uint32_t)((x[i] - q->in_zero) * (row[i] - wz));
        y[o] = requantize(acc, q, o);
    }
}

/* Pooling keeps the input's quantization (as TFLite requires); a following tcl_requantize_s8 changes it.
 * Averages round on the original codes: code_offset is 128 for a uint8 model run in shifted codes, else 0. */
void tcl_avgpool_s8(const tcl_conv_shape *s, int32_t act_min, int32_t act_max, int32_t code_offset, const int8_t *x,
                    int8_t *y) {
    const int32_t hw_in = s->h_in * s->w_in, hw_out = s->h_out * s->w_out;
    for (int32_t c = 0; c < s->c_in; ++c)
        for (int32_t oy = 0; oy < s->h_out; ++oy) {
            int32_t ky0, ky1;
            tcl_taps_of_output(oy, s->s_h, s->pad_top, s->k_h, s->h_in, &ky0, &ky1);
            const int32_t iy = oy * s->s_h - s->pad_top;
            for (int32_t ox = 0; ox < s->w_out; ++ox) {
                int32_t kx0, kx1;
                tcl_taps_of_output(ox, s->s_w, s->pad_left, s->k_w, s->w_in, &kx0, &kx1);
                const int32_t ix = ox * s->s_w - s->pad_left, count = (ky1 - ky0) * (kx1 - kx0);
                int32_t acc = count * code_offset;
                for (int32_t ky = ky0; ky < ky1; ++ky)
                    for (int32_t kx = kx0; kx < kx1; ++kx) acc += x[c * hw_in + (iy + ky) * s->w_in + ix + kx];
                /* rounded to nearest, ties away from zero (C division truncates) */
                int32_t v = (acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count) - code_offset;
                v = v < act_min ? act_min : (v > act_max ? act_max : v);
                y[c * hw_out + oy * s->w_out + ox] = (int8_t)v;
            }
        }
}

void tcl_maxpool_s8(const tcl_conv_shape *s, int32_t act_min, int32_t act_max, const int8_t *x, int8_t *y) {
    const int32_t hw_in = s->h_in * s->w_in, hw_out = s->h_out * s->w_out;
    for (int32_t c = 0; c < s->c_in; ++c)
        for (int32_t oy = 0; oy < s->h_out; ++oy) {
            int32_t ky0, ky1;
            tcl_taps_of_output(oy, s->s_h, s->pad_top, s->k_h, s->h_in, &ky0, &ky1);
            const int32_t iy = oy * s->s_h - s->pad_top;
            for (int32_t ox = 0; ox < s->w_out; ++ox) {
                int32_t kx0, kx1;
                tcl_taps_of_output(ox, s->s_w, s->pad_left, s->k_w, s->w_in, &kx0, &kx1);
                const int32_t ix = ox * s->s_w - s->pad_left;
                int32_t v = -128;
                for (int32_t ky = ky0; ky < ky1; ++ky)
                    for (int32_t kx = kx0; kx < kx1; ++kx) {
                        const int32_t xv = x[c * hw_in + (iy + ky) * s->w_in + ix + kx];
                        v = xv > v ? xv : v;
                    }
                v = v < act_min ? act_min : (v > act_max ? act_max : v);
                y[c * hw_out + oy * s->w_out + ox] = (int8_t)v;
            }
        }
}

void tcl_requantize_s8(int32_t n, const tcl_requant *q, const int8_t *x, int8_t *y) {
    for (int32_t i = 0; i < n; ++i) y[i] = requantize((uint32_t)(x[i] - q->in_zero), q, 0);
}
