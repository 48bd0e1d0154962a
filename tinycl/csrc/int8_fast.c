/* Fast int8 inference for the batched frozen stage on the host (tinycl.quant.intexec): whole batches of NHWC
 * codes, requantization as one affine map and a floor in double. Host only: firmware builds (-DTCL_NO_DOUBLE)
 * compile none of it; a device runs int8.c's kernels.
 *
 * Codes travel as bytes: a uint8 code as is, an int8 code as its two's complement byte; xor-ing 0x80 turns the
 * one into the other's offset binary (int8 code + 128). No rounding rule is restated here: the requantization
 * parameters (tcl_requant_f64) come from tinycl.quant.fixedpoint.Float64Multiplier, which derives them from
 * TFLite's two fixed-point roundings and shows every step below exact in double while |acc| < its limit; the
 * caller checks each layer's accumulator bound against that limit, so no int32 sum here can overflow either.
 *
 * Per-channel values come repeated to q->len, a multiple of the channel count: the loops run over flat spans of
 * q->len values (several pixels of few channels) and vectorize whatever the channel count. */
#include <string.h>

#include "internal.h"

#ifndef TCL_NO_DOUBLE

#if defined(__GNUC__) && !defined(__clang__)
/* -O2's cost model leaves loops of unknown length scalar; the flat spans are what vectorizes (and -O3's loop
 * transformations fuse the tap loops into scalar code) */
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#if defined(__x86_64__) && defined(__GLIBC__)
/* one copy per instruction set, picked when the library loads (the host's CPU is not known at build time; the
 * choice needs glibc's ifunc) */
#define TCL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
#endif
#ifndef TCL_CLONES
#define TCL_CLONES
#endif

enum { BLOCK = 512 }; /* accumulators per pass, in L1 */

/* The parameters of span positions k0.. as restrict pointers and values: the byte stores of the loops cannot
 * alias them, so the loops vectorize */
#define REQUANT_LOCALS(q, k0)                                                                                       \
    const double *restrict m = (q)->m + (k0), *restrict offset = (q)->offset + (k0);                                \
    const double *restrict threshold = (q)->threshold + (k0), *restrict step = (q)->step + (k0);                    \
    const double lo = (q)->lo, hi = (q)->hi;                                                                        \
    const uint8_t flip = (uint8_t)(q)->flip

/* The requantized byte of accumulator a (every step exact: see the top of the file); `away`: the tie test. */
static inline uint8_t requant(double a, double m, double offset, double threshold, double step, int32_t away,
                              double lo, double hi, uint8_t flip) {
    double t = a * m + offset;
    if (away) t += t < threshold ? step : 0.0;
    t = t < lo ? lo : (t > hi ? hi : t);
    return (uint8_t)((uint8_t)t ^ flip); /* t in [0, 255]: the conversion truncates, which is floor */
}

/* out[k] = requantized a[k] for span positions k0 + k, k < len (the tie test is hoisted out of the loops) */
static inline void requant_span(int32_t len, const int32_t *restrict a, const tcl_requant_f64 *q, int32_t k0,
                                uint8_t *restrict out) {
    REQUANT_LOCALS(q, k0);
    if (q->away)
        for (int32_t k = 0; k < len; ++k)
            out[k] = requant((double)a[k], m[k], offset[k], threshold[k], step[k], 1, lo, hi, flip);
    else
        for (int32_t k = 0; k < len; ++k) out[k] = requant((double)a[k], m[k], offset[k], 0.0, 0.0, 0, lo, hi, flip);
}

static inline double from_bits(uint32_t u) { /* the int32 whose two's complement bits u holds, exactly */
    return (double)(u ^ 0x80000000u) - 2147483648.0;
}

/* requant_span of int32 accumulators held as their two's complement bits in uint32 (sums that wrapped) */
static inline void requant_span_bits(int32_t len, const uint32_t *restrict a, const tcl_requant_f64 *q,
                                     uint8_t *restrict out) {
    REQUANT_LOCALS(q, 0);
    if (q->away)
        for (int32_t k = 0; k < len; ++k)
            out[k] = requant(from_bits(a[k]), m[k], offset[k], threshold[k], step[k], 1, lo, hi, flip);
    else
        for (int32_t k = 0; k < len; ++k) out[k] = requant(from_bits(a[k]), m[k], offset[k], 0.0, 0.0, 0, lo, hi, flip);
}

static int32_t bad_len(const tcl_requant_f64 *q, int32_t channels) {
    return channels <= 0 || q->len < channels || q->len > TCL_FAST_MAX_LEN || q->len % channels != 0;
}

TCL_CLONES
int32_t tcl_fast_requant_rows(int32_t rows, int32_t n, int32_t ld, const int32_t *acc, const int32_t *add,
                              const int32_t *b, const tcl_requant_f64 *q, uint8_t *y) {
    if (bad_len(q, n) || ld < n + (b ? 1 : 0)) return -1;
    const int32_t per = q->len / n; /* rows per span */
    uint32_t sums[TCL_FAST_MAX_LEN];
    for (int32_t r0 = 0; r0 < rows; r0 += per) {
        const int32_t nr = tcl_imin(per, rows - r0);
        for (int32_t r = 0; r < nr; ++r) {
            /* uint32 arithmetic wraps as TFLite's int32 does; the true sum fits int32 (the caller's bound) */
            const int32_t *restrict a = acc + (size_t)(r0 + r) * (size_t)ld;
            const int32_t *restrict add0 = add;
            uint32_t *restrict out = sums + r * n;
            if (b) {
                const int32_t *restrict b0 = b;
                const uint32_t rowsum = (uint32_t)a[n];
                for (int32_t c = 0; c < n; ++c) out[c] = (uint32_t)a[c] + (uint32_t)add0[c] + rowsum * (uint32_t)b0[c];
            } else {
                for (int32_t c = 0; c < n; ++c) out[c] = (uint32_t)a[c] + (uint32_t)add0[c];
            }
        }
        requant_span_bits(nr * n, sums, q, y + (size_t)r0 * (size_t)n);
    }
    return 0;
}

/* Input row iy of sample xs, centred (code - zero; 0 outside the input, where TFLite skips the tap), split by
 * column phase for stride sw: phase p holds padded columns u = p, p + sw, ... (u = column + pad_left), so tap kx
 * of outputs ox.. reads the contiguous span phase kx % sw from column ox + kx / sw. */
static void centred_row(const tcl_conv_shape *s, const uint8_t *restrict xs, int32_t iy, int32_t flip, int32_t zero,
                        int32_t cols, int32_t *restrict row) {
    const int32_t ch = s->c_in, sw = s->s_w;
    for (int32_t u = 0; u < cols * sw; ++u) {
        int32_t *restrict dst = row + ((size_t)(u % sw) * (size_t)cols + (size_t)(u / sw)) * (size_t)ch;
        const int32_t ix = u - s->pad_left;
        if (iy < 0 || iy >= s->h_in || ix < 0 || ix >= s->w_in) {
            for (int32_t c = 0; c < ch; ++c) dst[c] = 0;
            continue;
        }
        const uint8_t *restrict src = xs + ((size_t)iy * (size_t)s->w_in + (size_t)ix) * (size_t)ch;
        for (int32_t c = 0; c < ch; ++c) dst[c] = (src[c] ^ flip) - zero;
    }
}

/* acc[k] = bias[k] + sum over taps t of x[t][k] * w[t][k], k < len: three taps per pass over the accumulators
 * (restrict: vectorized without runtime alias checks) */
static inline void taps_sum(int32_t len, int32_t taps, const int32_t *const *x, const int32_t *const *w,
                            const int32_t *restrict bias, int32_t *restrict acc) {
    int32_t t = 0;
    for (int32_t k = 0; k < len; ++k) acc[k] = bias[k];
    for (; t + 3 <= taps; t += 3) {
        const int32_t *restrict x0 = x[t], *restrict x1 = x[t + 1], *restrict x2 = x[t + 2];
        const int32_t *restrict w0 = w[t], *restrict w1 = w[t + 1], *restrict w2 = w[t + 2];
        for (int32_t k = 0; k < len; ++k) acc[k] += x0[k] * w0[k] + x1[k] * w1[k] + x2[k] * w2[k];
    }
    for (; t < taps; ++t) {
        const int32_t *restrict xt = x[t], *restrict wt = w[t];
        for (int32_t k = 0; k < len; ++k) acc[k] += xt[k] * wt[k];
    }
}

TCL_CLONES
int32_t tcl_fast_depthwise(const tcl_conv_shape *s, int32_t n, int32_t in_zero, int32_t in_flip, const uint8_t *x,
                           const int32_t *w, const int32_t *bias, const tcl_requant_f64 *q, int32_t *work,
                           uint8_t *y) {
    const int32_t ch = s->c_out, len = q->len;
    if (bad_len(q, ch) || s->c_in != ch || s->k_h <= 0 || s->k_w <= 0 || s->k_h * s->k_w > TCL_FAST_MAX_TAPS ||
        s->s_h <= 0 || s->s_w <= 0)
        return -1;
    const int32_t flip = in_flip ? 0x80 : 0, zero = in_zero + (in_flip ? 128 : 0);
    const int32_t cols = s->w_out + (s->k_w - 1) / s->s_w, per = len / ch; /* columns per phase, pixels per span */
    const size_t row_size = (size_t)s->s_w * (size_t)cols * (size_t)ch;
    int32_t *tags = work, *ring = work + s->k_h; /* ring slot iy % k_h holds input row tags[slot] */
    const int32_t *xt[TCL_FAST_MAX_TAPS], *wt[TCL_FAST_MAX_TAPS], *xb[TCL_FAST_MAX_TAPS], *wb[TCL_FAST_MAX_TAPS];
    int32_t acc[BLOCK];
    for (int32_t i = 0; i < n; ++i) {
        const uint8_t *xs = x + (size_t)i * (size_t)s->h_in * (size_t)s->w_in * (size_t)ch;
        for (int32_t k = 0; k < s->k_h; ++k) tags[k] = INT32_MIN;
        for (int32_t oy = 0; oy < s->h_out; ++oy) {
            int32_t ky0, ky1, taps = 0;
            tcl_taps_of_output(oy, s->s_h, s->pad_top, s->k_h, s->h_in, &ky0, &ky1);
            const int32_t iy = oy * s->s_h - s->pad_top;
            for (int32_t ky = ky0; ky < ky1; ++ky) { /* taps outside the input add nothing, as TFLite skips them */
                const int32_t slot = (iy + ky) % s->k_h; /* iy + ky >= 0 here */
                int32_t *row = ring + (size_t)slot * row_size;
                if (tags[slot] != iy + ky) {
                    centred_row(s, xs, iy + ky, flip, zero, cols, row);
                    tags[slot] = iy + ky;
                }
                for (int32_t kx = 0; kx < s->k_w; ++kx, ++taps) {
                    xt[taps] = row + ((size_t)(kx % s->s_w) * (size_t)cols + (size_t)(kx / s->s_w)) * (size_t)ch;
                    wt[taps] = w + (size_t)(ky * s->k_w + kx) * (size_t)len;
                }
            }
            uint8_t *out = y + ((size_t)i * (size_t)s->h_out + (size_t)oy) * (size_t)s->w_out * (size_t)ch;
            for (int32_t p0 = 0; p0 < s->w_out; p0 += per) {
                const int32_t span = tcl_imin(per, s->w_out - p0) * ch;
                for (int32_t k0 = 0; k0 < span; k0 += BLOCK) {
                    const int32_t block = tcl_imin(BLOCK, span - k0);
                    for (int32_t t = 0; t < taps; ++t) {
                        xb[t] = xt[t] + (size_t)p0 * (size_t)ch + (size_t)k0;
                        wb[t] = wt[t] + k0;
                    }
                    taps_sum(block, taps, xb, wb, bias + k0, acc);
                    requant_span(block, acc, q, k0, out + (size_t)p0 * (size_t)ch + (size_t)k0);
                }
            }
        }
    }
    return 0;
}

/* Patch byte j of outputs o0..o1 of a row: tap kx of input row `src` (pixels px_step bytes apart; NULL: a row
 * outside the input) where it lies inside the input; elsewhere `fill`, the zero point, which adds nothing. */
static void im2col_tap(const tcl_conv_shape *s, const uint8_t *src, size_t px_step, int32_t kx, int32_t flip,
                       int32_t fill, int32_t k_pad, int32_t j, int32_t o0, int32_t o1, uint8_t *cols) {
    int32_t lo = o1, hi = o1;
    if (src) tcl_outputs_of_tap(kx, s->s_w, s->pad_left, s->w_in, s->w_out, &lo, &hi);
    lo = tcl_imin(tcl_imax(lo, o0), o1), hi = tcl_imax(tcl_imin(hi, o1), lo);
    uint8_t *dst = cols + j; /* byte stores may alias anything: every loop bound and step is a local */
    const size_t step = (size_t)k_pad, in_step = (size_t)s->s_w * px_step;
    for (int32_t ox = o0; ox < lo; ++ox) dst[(size_t)ox * step] = (uint8_t)fill;
    if (lo < hi) {
        const uint8_t *from = src + (size_t)(lo * s->s_w + kx - s->pad_left) * px_step;
        for (int32_t ox = lo; ox < hi; ++ox, from += in_step) dst[(size_t)ox * step] = (uint8_t)(*from ^ flip);
    }
    for (int32_t ox = hi; ox < o1; ++ox) dst[(size_t)ox * step] = (uint8_t)fill;
}

/* Bytes j..j+2 of outputs o0..o1 = their 3-tap run of the NCHW input row src, whose 4 bytes from the run's start
 * lie inside the row: copied as 4 bytes, the 4th lands on byte j + 3, which the next run (or the zero padding
 * past the patch, k_pad > k) rewrites. */
static void copy_runs(const tcl_conv_shape *s, const uint8_t *src, int32_t flip, int32_t k_pad, int32_t j,
                      int32_t o0, int32_t o1, uint8_t *cols) {
    const uint32_t flip4 = (uint32_t)flip * 0x01010101u;
    const size_t in_step = (size_t)s->s_w, step = (size_t)k_pad;
    const uint8_t *from = src + (o0 * s->s_w - s->pad_left);
    uint8_t *dst = cols + (size_t)o0 * step + (size_t)j;
    for (int32_t ox = o0; ox < o1; ++ox, from += in_step, dst += step) {
        uint32_t v;
        memcpy(&v, from, 4);
        v ^= flip4;
        memcpy(dst, &v, 4);
    }
}

/* The patch of output (oy, ox) of NHWC sample xs in (ky, kx, c) order: runs of ch bytes (many channels). */
static void im2col_pixel(const tcl_conv_shape *s, const uint8_t *xs, int32_t oy, int32_t ox, int32_t flip,
                         int32_t fill, uint8_t *restrict dst) {
    const int32_t ch = s->c_in;
    for (int32_t ky = 0; ky < s->k_h; ++ky)
        for (int32_t kx = 0; kx < s->k_w; ++kx, dst += ch) {
            const int32_t yy = oy * s->s_h - s->pad_top + ky, xx = ox * s->s_w - s->pad_left + kx;
            if (yy < 0 || yy >= s->h_in || xx < 0 || xx >= s->w_in) {
                for (int32_t c = 0; c < ch; ++c) dst[c] = (uint8_t)fill;
                continue;
            }
            const uint8_t *restrict src = xs + ((size_t)yy * (size_t)s->w_in + (size_t)xx) * (size_t)ch;
            for (int32_t c = 0; c < ch; ++c) dst[c] = (uint8_t)(src[c] ^ flip);
        }
}

void tcl_fast_im2col(const tcl_conv_shape *s, int32_t n, int32_t channels_last, int32_t k_pad, int32_t flip,
                     int32_t fill, const uint8_t *x, uint8_t *cols) {
    const int32_t ch = s->c_in, kw = s->k_w, k = s->k_h * kw * ch;
    const size_t plane = (size_t)s->h_in * (size_t)s->w_in, row_bytes = (size_t)s->w_out * (size_t)k_pad;
    for (int32_t i = 0; i < n; ++i) {
        const uint8_t *xs = x + (size_t)i * plane * (size_t)ch;
        for (int32_t oy = 0; oy < s->h_out; ++oy) {
            uint8_t *row = cols + ((size_t)i * (size_t)s->h_out + (size_t)oy) * row_bytes;
            if (channels_last && ch >= 16) { /* many channels: contiguous runs per tap */
                for (int32_t ox = 0; ox < s->w_out; ++ox) im2col_pixel(s, xs, oy, ox, flip, fill, row + ox * k_pad);
            } else { /* few channels: one tap of the whole output row at a time */
                for (int32_t g = 0; g < s->k_h * ch; ++g) { /* (ky, c) pairs in the order of their bytes */
                    /* NHWC: (ky, kx, c) order, pixels ch bytes apart; NCHW: (c, ky, kx), planes of bytes */
                    const int32_t ky = channels_last ? g / ch : g % s->k_h, c = channels_last ? g % ch : g / s->k_h;
                    const int32_t yy = oy * s->s_h - s->pad_top + ky, inside = yy >= 0 && yy < s->h_in;
                    {
                        const uint8_t *src = !inside ? NULL
                                             : channels_last ? xs + (size_t)yy * (size_t)s->w_in * (size_t)ch + c
                                                             : xs + (size_t)c * plane + (size_t)yy * (size_t)s->w_in;
                        int32_t o0 = 0, o1 = 0; /* NCHW 3-tap runs read 4 bytes inside the row: one copy each */
                        if (src && !channels_last && kw == 3 && k_pad > k && s->w_in + s->pad_left >= 4) {
                            o0 = tcl_imin((s->pad_left + s->s_w - 1) / s->s_w, s->w_out);
                            o1 = tcl_imax(o0, tcl_imin(s->w_out, (s->w_in - 4 + s->pad_left) / s->s_w + 1));
                            copy_runs(s, src, flip, k_pad, (c * s->k_h + ky) * kw, o0, o1, row);
                        }
                        for (int32_t kx = 0; kx < kw; ++kx) {
                            const int32_t j = channels_last ? (ky * kw + kx) * ch + c : (c * s->k_h + ky) * kw + kx;
                            const size_t px = channels_last ? (size_t)ch : 1;
                            im2col_tap(s, src, px, kx, flip, fill, k_pad, j, 0, o0, row);
                            im2col_tap(s, src, px, kx, flip, fill, k_pad, j, o1, s->w_out, row);
                        }
                    }
                }
            }
            for (int32_t ox = 0, w_out = s->w_out; ox < w_out; ++ox)
                for (int32_t j = k; j < k_pad; ++j) row[(size_t)ox * (size_t)k_pad + (size_t)j] = 0;
        }
    }
}

#endif /* TCL_NO_DOUBLE */
