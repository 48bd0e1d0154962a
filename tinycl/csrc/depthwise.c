/* Depthwise convolution (one k_h x k_w filter per channel, channel multiplier 1), direct and
 * output-stationary like conv2d.c; channels are independent, so each works on one H x W plane at a time.
 *
 * Every output is one accumulator summed in one order whatever the path: taps by row then column, ascending
 * (the weight gradient: outputs by row then column), each product a fused multiply-add (fmaf: vfma.f32 on a
 * Cortex-M4F, as in gemm.c). The border of the plane, where part of a window falls in the padding, runs the
 * general loops with per-output tap ranges; the interior, where the whole window lies inside, runs without bounds
 * checks, and for 3 x 3 filters (stride 1 or 2) with the nine taps unrolled and the filter in registers: on a
 * Cortex-M4F memory operations bound these loops (docs/firmware.md). */
#include <math.h>

#include "internal.h"

/* Outputs [*lo, *hi) (of n_out) whose k taps all fall inside the input (size n): o*s - p >= 0, o*s - p + k <= n. */
static void interior_outputs(int32_t s, int32_t p, int32_t k, int32_t n, int32_t n_out, int32_t *lo, int32_t *hi) {
    *lo = tcl_imin(n_out, (p + s - 1) / s);
    *hi = n - k + p < 0 ? 0 : tcl_imin(n_out, (n - k + p) / s + 1);
    if (*hi < *lo) *hi = *lo;
}

/* ---- forward: y = sum over taps of w x (+ b) ---- */

/* One border output: the taps [ky0, ky1) of its window row-wise and the column taps inside the input; the
 * column taps of a 3-wide filter are unrolled (1, 2 or 3 of them). */
static inline float forward_window(const tcl_conv_shape *s, const float *xc, const float *wc, int32_t oy, int32_t ox,
                                   int32_t ky0, int32_t ky1, float acc) {
    int32_t kx0, kx1;
    tcl_taps_of_output(ox, s->s_w, s->pad_left, s->k_w, s->w_in, &kx0, &kx1);
    const float *xr = xc + (oy * s->s_h - s->pad_top + ky0) * s->w_in + ox * s->s_w - s->pad_left + kx0;
    const float *wr = wc + ky0 * s->k_w + kx0;
    const int32_t n = kx1 - kx0, rows = ky1 - ky0;
    if (s->k_w == 3 && n == 2) {
        for (int32_t r = 0; r < rows; ++r, xr += s->w_in, wr += 3) {
            acc = fmaf(wr[0], xr[0], acc); acc = fmaf(wr[1], xr[1], acc);
        }
    } else if (s->k_w == 3 && n == 3) {
        for (int32_t r = 0; r < rows; ++r, xr += s->w_in, wr += 3) {
            acc = fmaf(wr[0], xr[0], acc); acc = fmaf(wr[1], xr[1], acc); acc = fmaf(wr[2], xr[2], acc);
        }
    } else {
        for (int32_t r = 0; r < rows; ++r, xr += s->w_in, wr += s->k_w)
            for (int32_t kx = 0; kx < n; ++kx) acc = fmaf(wr[kx], xr[kx], acc);
    }
    return acc;
}

/* n interior outputs of a row whose three input rows start at r0, r1, r2 (the first output's tap 0), stride st */
static inline void forward_3x3(int32_t n, int32_t st, const float *r0, const float *r1, const float *r2,
                               const float *w, float bias, float *y) {
    const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6], w7 = w[7], w8 = w[8];
    int32_t i = 0;
    if (st == 1) /* two outputs share 6 of their 12 inputs */
        for (; i + 2 <= n; i += 2) {
            const float a0 = r0[0], a1 = r0[1], a2 = r0[2], a3 = r0[3], b0 = r1[0], b1 = r1[1], b2 = r1[2],
                        b3 = r1[3], c0 = r2[0], c1 = r2[1], c2 = r2[2], c3 = r2[3];
            float p = bias, q = bias;
            p = fmaf(w0, a0, p); p = fmaf(w1, a1, p); p = fmaf(w2, a2, p);
            q = fmaf(w0, a1, q); q = fmaf(w1, a2, q); q = fmaf(w2, a3, q);
            p = fmaf(w3, b0, p); p = fmaf(w4, b1, p); p = fmaf(w5, b2, p);
            q = fmaf(w3, b1, q); q = fmaf(w4, b2, q); q = fmaf(w5, b3, q);
            p = fmaf(w6, c0, p); p = fmaf(w7, c1, p); p = fmaf(w8, c2, p);
            q = fmaf(w6, c1, q); q = fmaf(w7, c2, q); q = fmaf(w8, c3, q);
            y[i] = p; y[i + 1] = q;
            r0 += 2; r1 += 2; r2 += 2;
        }
    for (; i < n; ++i) {
        float acc = bias;
        acc = fmaf(w0, r0[0], acc); acc = fmaf(w1, r0[1], acc); acc = fmaf(w2, r0[2], acc);
        acc = fmaf(w3, r1[0], acc); acc = fmaf(w4, r1[1], acc); acc = fmaf(w5, r1[2], acc);
        acc = fmaf(w6, r2[0], acc); acc = fmaf(w7, r2[1], acc); acc = fmaf(w8, r2[2], acc);
        y[i] = acc;
        r0 += st; r1 += st; r2 += st;
    }
}

void tcl_depthwise_forward(const tcl_conv_shape *s, const float *x, const float *w, const float *b, float *y) {
    const int32_t hw_in = s->h_in * s->w_in, hw_out = s->h_out * s->w_out, ksize = s->k_h * s->k_w;
    const int unrolled = s->k_h == 3 && s->k_w == 3 && (s->s_w == 1 || s->s_w == 2);
    int32_t lo, hi;
    interior_outputs(s->s_w, s->pad_left, s->k_w, s->w_in, s->w_out, &lo, &hi);
    for (int32_t c = 0; c < s->c_out; ++c) {
        const float *xc = x + c * hw_in, *wc = w + c * ksize;
        const float bias = b ? b[c] : 0.0f;
        for (int32_t oy = 0; oy < s->h_out; ++oy) {
            int32_t ky0, ky1;
            tcl_taps_of_output(oy, s->s_h, s->pad_top, s->k_h, s->h_in, &ky0, &ky1);
            float *yr = y + c * hw_out + oy * s->w_out;
            for (int32_t ox = 0; ox < lo; ++ox) yr[ox] = forward_window(s, xc, wc, oy, ox, ky0, ky1, bias);
            /* the interior columns: every column tap is inside; a row outside the input has no taps */
            const float *xr = xc + (oy * s->s_h - s->pad_top) * s->w_in + lo * s->s_w - s->pad_left;
            if (unrolled && ky0 == 0 && ky1 == 3) {
                if (s->s_w == 1) forward_3x3(hi - lo, 1, xr, xr + s->w_in, xr + 2 * s->w_in, wc, bias, yr + lo);
                else forward_3x3(hi - lo, 2, xr, xr + s->w_in, xr + 2 * s->w_in, wc, bias, yr + lo);
            } else {
                for (int32_t ox = lo; ox < hi; ++ox) {
                    float acc = bias;
                    for (int32_t ky = ky0; ky < ky1; ++ky) {
                        const float *xt = xr + ky * s->w_in + (ox - lo) * s->s_w, *wr = wc + ky * s->k_w;
                        if (unrolled) {
                            acc = fmaf(wr[0], xt[0], acc); acc = fmaf(wr[1], xt[1], acc); acc = fmaf(wr[2], xt[2], acc);
                        } else {
                            for (int32_t kx = 0; kx < s->k_w; ++kx) acc = fmaf(wr[kx], xt[kx], acc);
                        }
                    }
                    yr[ox] = acc;
                }
            }
            for (int32_t ox = hi; ox < s->w_out; ++ox) yr[ox] = forward_window(s, xc, wc, oy, ox, ky0, ky1, bias);
        }
    }
}

/* ---- weight gradient: dw[tap] += sum over outputs of dy x, one accumulator per tap, outputs in raster order ---- */

static float bias_grad(const float *g, int32_t n) {
    float sum = 0.0f;
    for (int32_t p = 0; p < n; ++p) sum += g[p];
    return sum;
}

#define TCL_DW_MAX_TAPS 49 /* up to 7 x 7: accumulators on the stack; larger filters go tap by tap */

static inline void weight_grad_window(const tcl_conv_shape *s, const float *xc, float g, int32_t oy, int32_t ox,
                                      int32_t ky0, int32_t ky1, float *acc) {
    int32_t kx0, kx1;
    tcl_taps_of_output(ox, s->s_w, s->pad_left, s->k_w, s->w_in, &kx0, &kx1);
    const float *xr = xc + (oy * s->s_h - s->pad_top + ky0) * s->w_in + ox * s->s_w - s->pad_left + kx0;
    float *ar = acc + ky0 * s->k_w + kx0;
    const int32_t n = kx1 - kx0, rows = ky1 - ky0;
    if (s->k_w == 3 && n == 2) {
        for (int32_t r = 0; r < rows; ++r, xr += s->w_in, ar += 3) {
            ar[0] = fmaf(g, xr[0], ar[0]); ar[1] = fmaf(g, xr[1], ar[1]);
        }
    } else {
        for (int32_t r = 0; r < rows; ++r, xr += s->w_in, ar += s->k_w)
            for (int32_t kx = 0; kx < n; ++kx) ar[kx] = fmaf(g, xr[kx], ar[kx]);
    }
}

static inline void weight_grad_3x3(int32_t n, int32_t st, const float *r0, const float *r1, const float *r2,
                                   const float *g, float *acc) {
    float a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3], a4 = acc[4], a5 = acc[5], a6 = acc[6], a7 = acc[7],
          a8 = acc[8];
    int32_t i = 0;
    if (st == 1) /* two outputs share 6 of their 12 inputs; each accumulator still takes them in order */
        for (; i + 2 <= n; i += 2) {
            const float g0 = g[i], g1 = g[i + 1];
            const float x0 = r0[0], x1 = r0[1], x2 = r0[2], x3 = r0[3], y0 = r1[0], y1 = r1[1], y2 = r1[2],
                        y3 = r1[3], z0 = r2[0], z1 = r2[1], z2 = r2[2], z3 = r2[3];
            a0 = fmaf(g1, x1, fmaf(g0, x0, a0)); a1 = fmaf(g1, x2, fmaf(g0, x1, a1));
            a2 = fmaf(g1, x3, fmaf(g0, x2, a2)); a3 = fmaf(g1, y1, fmaf(g0, y0, a3));
            a4 = fmaf(g1, y2, fmaf(g0, y1, a4)); a5 = fmaf(g1, y3, fmaf(g0, y2, a5));
            a6 = fmaf(g1, z1, fmaf(g0, z0, a6)); a7 = fmaf(g1, z2, fmaf(g0, z1, a7));
            a8 = fmaf(g1, z3, fmaf(g0, z2, a8));
            r0 += 2; r1 += 2; r2 += 2;
        }
    for (; i < n; ++i) {
        const float gi = g[i];
        a0 = fmaf(gi, r0[0], a0); a1 = fmaf(gi, r0[1], a1); a2 = fmaf(gi, r0[2], a2);
        a3 = fmaf(gi, r1[0], a3); a4 = fmaf(gi, r1[1], a4); a5 = fmaf(gi, r1[2], a5);
        a6 = fmaf(gi, r2[0], a6); a7 = fmaf(gi, r2[1], a7); a8 = fmaf(gi, r2[2], a8);
        r0 += st; r1 += st; r2 += st;
    }
    acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3; acc[4] = a4; acc[5] = a5; acc[6] = a6; acc[7] = a7;
    acc[8] = a8;
}

/* Filters larger than TCL_DW_MAX_TAPS: one tap at a time over the outputs it reads (same order, no stack array) */
static void weight_grad_by_tap(const tcl_conv_shape *s, const float *x, const float *dy, float *dw, float *db) {
    const int32_t hw_in = s->h_in * s->w_in, hw_out = s->h_out * s->w_out, ksize = s->k_h * s->k_w;
    for (int32_t c = 0; c < s->c_out; ++c) {
        const float *xc = x + c * hw_in, *gc = dy + c * hw_out;
        for (int32_t ky = 0; ky < s->k_h; ++ky) {
            int32_t oy0, oy1;
            tcl_outputs_of_tap(ky, s->s_h, s->pad_top, s->h_in, s->h_out, &oy0, &oy1);
            for (int32_t kx = 0; kx < s->k_w; ++kx) {
                int32_t ox0, ox1;
                tcl_outputs_of_tap(kx, s->s_w, s->pad_left, s->w_in, s->w_out, &ox0, &ox1);
                float acc = 0.0f;
                for (int32_t oy = oy0; oy < oy1; ++oy) {
                    const float *gr = gc + oy * s->w_out;
                    const float *xr = xc + (oy * s->s_h + ky - s->pad_top) * s->w_in;
                    for (int32_t ox = ox0; ox < ox1; ++ox) acc = fmaf(gr[ox], xr[ox * s->s_w + kx - s->pad_left], acc);
                }
                dw[c * ksize + ky * s->k_w + kx] += acc;
            }
        }
        if (db) db[c] += bias_grad(gc, hw_out);
    }
}

void tcl_depthwise_weight_grad(const tcl_conv_shape *s, const float *x, const float *dy, float *dw, float *db) {
    const int32_t hw_in = s->h_in * s->w_in, hw_out = s->h_out * s->w_out, ksize = s->k_h * s->k_w;
    const int unrolled = s->k_h == 3 && s->k_w == 3 && (s->s_w == 1 || s->s_w == 2);
    if (ksize > TCL_DW_MAX_TAPS) {
        weight_grad_by_tap(s, x, dy, dw, db);
        return;
    }
    int32_t lo, hi;
    interior_outputs(s->s_w, s->pad_left, s->k_w, s->w_in, s->w_out, &lo, &hi);
    for (int32_t c = 0; c < s->c_out; ++c) {
        const float *xc = x + c * hw_in, *gc = dy + c * hw_out;
        float acc[TCL_DW_MAX_TAPS];
        for (int32_t t = 0; t < ksize; ++t) acc[t] = 0.0f;
        for (int32_t oy = 0; oy < s->h_out; ++oy) {
            int32_t ky0, ky1;
            tcl_taps_of_output(oy, s->s_h, s->pad_top, s->k_h, s->h_in, &ky0, &ky1);
            const float *gr = gc + oy * s->w_out;
            for (int32_t ox = 0; ox < lo; ++ox) weight_grad_window(s, xc, gr[ox], oy, ox, ky0, ky1, acc);
            const float *xr = xc + (oy * s->s_h - s->pad_top) * s->w_in + lo * s->s_w - s->pad_left;
            if (unrolled && ky0 == 0 && ky1 == 3) {
                if (s->s_w == 1) weight_grad_3x3(hi - lo, 1, xr, xr + s->w_in, xr + 2 * s->w_in, gr + lo, acc);
                else weight_grad_3x3(hi - lo, 2, xr, xr + s->w_in, xr + 2 * s->w_in, gr + lo, acc);
            } else {
                for (int32_t ox = lo; ox < hi; ++ox)
                    for (int32_t ky = ky0; ky < ky1; ++ky) {
                        const float *xt = xr + ky * s->w_in + (ox - lo) * s->s_w;
                        float *ar = acc + ky * s->k_w;
                        if (unrolled) {
                            ar[0] = fmaf(gr[ox], xt[0], ar[0]); ar[1] = fmaf(gr[ox], xt[1], ar[1]);
                            ar[2] = fmaf(gr[ox], xt[2], ar[2]);
                        } else {
                            for (int32_t kx = 0; kx < s->k_w; ++kx) ar[kx] = fmaf(gr[ox], xt[kx], ar[kx]);
                        }
                    }
            }
            for (int32_t ox = hi; ox < s->w_out; ++ox) weight_grad_window(s, xc, gr[ox], oy, ox, ky0, ky1, acc);
        }
        for (int32_t t = 0; t < ksize; ++t) dw[c * ksize + t] += acc[t];
        if (db) db[c] += bias_grad(gc, hw_out);
    }
}

/* ---- input gradient: dx = sum over the taps that read it of dy w ---- */

/* One input: taps t0, t0 + s, ... < t_end read outputs o0, o0 - 1, ... (tcl_taps_of_input), rows then columns */
static float input_grad_window(const tcl_conv_shape *s, const float *gc, const float *wc, int32_t ix, int32_t ky0,
                               int32_t ky1, int32_t oy0) {
    int32_t kx0, kx1, ox0;
    tcl_taps_of_input(ix, s->s_w, s->pad_left, s->k_w, s->w_out, &kx0, &kx1, &ox0);
    float acc = 0.0f;
    for (int32_t ky = ky0, oy = oy0; ky < ky1; ky += s->s_h, --oy)
        for (int32_t kx = kx0, ox = ox0; kx < kx1; kx += s->s_w, --ox)
            acc = fmaf(gc[oy * s->w_out + ox], wc[ky * s->k_w + kx], acc);
    return acc;
}

/* Stride 1, 3 x 3, all nine taps read: dx at input column ix reads dy rows g0 (tap row 0), g1, g2 at columns
 * ix + pad (tap column 0), ix + pad - 1, ix + pad - 2; g* point at the first input's column ix + pad. */
static void input_grad_3x3_s1(int32_t n, const float *g0, const float *g1, const float *g2, const float *w,
                              float *dx) {
    const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6], w7 = w[7], w8 = w[8];
    int32_t i = 0;
    for (; i + 2 <= n; i += 2) { /* two inputs share 6 of their 12 output gradients */
        const float a0 = g0[-2], a1 = g0[-1], a2 = g0[0], a3 = g0[1], b0 = g1[-2], b1 = g1[-1], b2 = g1[0],
                    b3 = g1[1], c0 = g2[-2], c1 = g2[-1], c2 = g2[0], c3 = g2[1];
        float p = 0.0f, q = 0.0f;
        p = fmaf(a2, w0, p); p = fmaf(a1, w1, p); p = fmaf(a0, w2, p);
        q = fmaf(a3, w0, q); q = fmaf(a2, w1, q); q = fmaf(a1, w2, q);
        p = fmaf(b2, w3, p); p = fmaf(b1, w4, p); p = fmaf(b0, w5, p);
        q = fmaf(b3, w3, q); q = fmaf(b2, w4, q); q = fmaf(b1, w5, q);
        p = fmaf(c2, w6, p); p = fmaf(c1, w7, p); p = fmaf(c0, w8, p);
        q = fmaf(c3, w6, q); q = fmaf(c2, w7, q); q = fmaf(c1, w8, q);
        dx[i] = p; dx[i + 1] = q;
        g0 += 2; g1 += 2; g2 += 2;
    }
    for (; i < n; ++i) {
        float acc = 0.0f;
        acc = fmaf(g0[0], w0, acc); acc = fmaf(g0[-1], w1, acc); acc = fmaf(g0[-2], w2, acc);
        acc = fmaf(g1[0], w3, acc); acc = fmaf(g1[-1], w4, acc); acc = fmaf(g1[-2], w5, acc);
        acc = fmaf(g2[0], w6, acc); acc = fmaf(g2[-1], w7, acc); acc = fmaf(g2[-2], w8, acc);
        dx[i] = acc;
        ++g0; ++g1; ++g2;
    }
}

/* Stride 2, 3 x 3, an input row read by tap rows wa (dy row ga) and, if gb, wb (dy row gb, one output up).
 * Pairs of inputs from an even ix + pad: the even one reads taps 0 and 2 at outputs o and o - 1, the odd one tap 1
 * at output o; g* point at the first pair's output o. */
static void input_grad_3x3_s2(int32_t pairs, const float *ga, const float *wa, const float *gb, const float *wb,
                              float *dx) {
    const float a0 = wa[0], a1 = wa[1], a2 = wa[2];
    if (gb) {
        const float b0 = wb[0], b1 = wb[1], b2 = wb[2];
        for (int32_t i = 0; i < pairs; ++i) {
            float even = 0.0f, odd = 0.0f;
            even = fmaf(ga[0], a0, even); even = fmaf(ga[-1], a2, even);
            even = fmaf(gb[0], b0, even); even = fmaf(gb[-1], b2, even);
            odd = fmaf(ga[0], a1, odd); odd = fmaf(gb[0], b1, odd);
            dx[0] = even; dx[1] = odd;
            ++ga; ++gb; dx += 2;
        }
    } else {
        for (int32_t i = 0; i < pairs; ++i) {
            float even = 0.0f, odd = 0.0f;
            even = fmaf(ga[0], a0, even); even = fmaf(ga[-1], a2, even);
            odd = fmaf(ga[0], a1, odd);
            dx[0] = even; dx[1] = odd;
            ++ga; dx += 2;
        }
    }
}

void tcl_depthwise_input_grad(const tcl_conv_shape *s, const float *dy, const float *w, float *dx) {
    const int32_t hw_in = s->h_in * s->w_in, hw_out = s->h_out * s->w_out, ksize = s->k_h * s->k_w;
    const int s1 = s->k_h == 3 && s->k_w == 3 && s->s_h == 1 && s->s_w == 1;
    const int s2 = s->k_h == 3 && s->k_w == 3 && s->s_h == 2 && s->s_w == 2;
    /* inputs whose every tap (of their phase) reads an output: ix + pad - 2 >= 0, (ix + pad) / s < w_out */
    const int32_t lo = tcl_imin(s->w_in, tcl_imax(0, 2 - s->pad_left));
    const int32_t hi_in = tcl_imin(s->w_in, s->w_out * s->s_w - s->pad_left);
    const int32_t start = tcl_imin(s->w_in, lo + (s2 && (lo + s->pad_left) % 2)); /* stride 2: an even ix + pad */
    const int32_t pairs = s2 ? tcl_imax(0, (hi_in - start) / 2) : 0;
    const int32_t hi = s2 ? start + 2 * pairs : tcl_imax(lo, hi_in);
    for (int32_t c = 0; c < s->c_in; ++c) {
        const float *gc = dy + c * hw_out, *wc = w + c * ksize;
        for (int32_t iy = 0; iy < s->h_in; ++iy) {
            int32_t ky0, ky1, oy0;
            tcl_taps_of_input(iy, s->s_h, s->pad_top, s->k_h, s->h_out, &ky0, &ky1, &oy0);
            float *dxr = dx + c * hw_in + iy * s->w_in;
            const int32_t row_taps = (ky1 - ky0 + s->s_h - 1) / s->s_h;
            const int32_t phase = (iy + s->pad_top) % s->s_h, all = (s->k_h - phase + s->s_h - 1) / s->s_h;
            const int fast = (s1 || s2) && ky1 > ky0 && ky0 == phase && row_taps == all;
            int32_t a = s->w_in, z = s->w_in; /* the general loop covers [0, a) and [z, w_in) */
            if (fast) {
                a = s2 ? start : lo, z = hi;
                const float *g = gc + oy0 * s->w_out + (a + s->pad_left) / s->s_w;
                if (s1) input_grad_3x3_s1(z - a, g, g - s->w_out, g - 2 * s->w_out, wc, dxr + a);
                else input_grad_3x3_s2(pairs, g, wc + ky0 * 3, row_taps == 2 ? g - s->w_out : NULL, wc + 6,
                                       dxr + a);
            }
            for (int32_t ix = 0; ix < a; ++ix) dxr[ix] = input_grad_window(s, gc, wc, ix, ky0, ky1, oy0);
            for (int32_t ix = z; ix < s->w_in; ++ix) dxr[ix] = input_grad_window(s, gc, wc, ix, ky0, ky1, oy0);
        }
    }
}
