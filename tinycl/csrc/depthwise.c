/* Depthwise convolution (one k_h x k_w filter per channel, channel multiplier 1), direct and output-stationary like
 * conv2d.c; channels are independent, so each works on one H x W plane at a time.
 *
 * Every output is one accumulator summed in one order whatever the path: taps by row then column, ascending (the
 * weight gradient: outputs by row then column), each product a fused multiply-add (fmaf: vfma.f32 on a Cortex-M4F, as
 * in gemm.c), and a tap that falls in the padding is dropped, never multiplied by zero. Any filter runs the general
 * loops below, with per-output tap ranges on the border and none inside. 3 x 3 filters at column stride 1 or 2
 * (MobileNet's) run code specialised per kind of row, border rows and columns included: on the 8 x 8 and 4 x 4 planes
 * of MobileNet's late layers the border holds half the outputs, and on a Cortex-M4F memory operations bound these
 * loops (docs/firmware.md). */
#include <math.h>

#include "internal.h"

/* The 3 x 3 row functions are specialised by inlining them with constant arguments; GCC would call some of them. */
#if defined(__GNUC__)
#define TCL_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define TCL_ALWAYS_INLINE static inline
#endif

/* Outputs [*lo, *hi) (of n_out) whose k taps all fall inside the input (size n): o*s - p >= 0, o*s - p + k <= n. */
static void interior_outputs(int32_t s, int32_t p, int32_t k, int32_t n, int32_t n_out, int32_t *lo, int32_t *hi) {
    *lo = tcl_imin(n_out, (p + s - 1) / s);
    *hi = n - k + p < 0 ? 0 : tcl_imin(n_out, (n - k + p) / s + 1);
    if (*hi < *lo) *hi = *lo;
}

/* ---- any filter: per-output tap ranges on the border ---- */

/* One output: acc + the taps [ky0, ky1) x (the column taps inside the input) of filter wc */
static float forward_window(const tcl_conv_shape *s, const float *xc, const float *wc, int32_t oy, int32_t ox,
                            int32_t ky0, int32_t ky1, float acc) {
    int32_t kx0, kx1;
    tcl_taps_of_output(ox, s->s_w, s->pad_left, s->k_w, s->w_in, &kx0, &kx1);
    const float *xr = xc + (oy * s->s_h - s->pad_top + ky0) * s->w_in + ox * s->s_w - s->pad_left + kx0;
    const float *wr = wc + ky0 * s->k_w + kx0;
    for (int32_t ky = ky0; ky < ky1; ++ky, xr += s->w_in, wr += s->k_w)
        for (int32_t kx = 0; kx < kx1 - kx0; ++kx) acc = fmaf(wr[kx], xr[kx], acc);
    return acc;
}

/* One output: acc[tap] += g x for the same taps */
static void weight_grad_window(const tcl_conv_shape *s, const float *xc, float g, int32_t oy, int32_t ox, int32_t ky0,
                               int32_t ky1, float *acc) {
    int32_t kx0, kx1;
    tcl_taps_of_output(ox, s->s_w, s->pad_left, s->k_w, s->w_in, &kx0, &kx1);
    const float *xr = xc + (oy * s->s_h - s->pad_top + ky0) * s->w_in + ox * s->s_w - s->pad_left + kx0;
    float *ar = acc + ky0 * s->k_w + kx0;
    for (int32_t ky = ky0; ky < ky1; ++ky, xr += s->w_in, ar += s->k_w)
        for (int32_t kx = 0; kx < kx1 - kx0; ++kx) ar[kx] = fmaf(g, xr[kx], ar[kx]);
}

/* One input (row iy, column ix): taps ky0, ky0 + s_h, ... < ky1 (from output row oy0 down, tcl_taps_of_input) by
 * the column taps that read it */
static float input_grad_window(const tcl_conv_shape *s, const float *gc, const float *wc, int32_t iy, int32_t ix) {
    int32_t ky0, ky1, oy0, kx0, kx1, ox0;
    tcl_taps_of_input(iy, s->s_h, s->pad_top, s->k_h, s->h_out, &ky0, &ky1, &oy0);
    tcl_taps_of_input(ix, s->s_w, s->pad_left, s->k_w, s->w_out, &kx0, &kx1, &ox0);
    float acc = 0.0f;
    for (int32_t ky = ky0, oy = oy0; ky < ky1; ky += s->s_h, --oy)
        for (int32_t kx = kx0, ox = ox0; kx < kx1; kx += s->s_w, --ox)
            acc = fmaf(gc[oy * s->w_out + ox], wc[ky * s->k_w + kx], acc);
    return acc;
}

static void forward_any(const tcl_conv_shape *s, const float *xc, const float *wc, float bias, float *yc) {
    int32_t lo, hi;
    interior_outputs(s->s_w, s->pad_left, s->k_w, s->w_in, s->w_out, &lo, &hi);
    for (int32_t oy = 0; oy < s->h_out; ++oy) {
        int32_t ky0, ky1;
        tcl_taps_of_output(oy, s->s_h, s->pad_top, s->k_h, s->h_in, &ky0, &ky1);
        float *yr = yc + oy * s->w_out;
        for (int32_t ox = 0; ox < lo; ++ox) yr[ox] = forward_window(s, xc, wc, oy, ox, ky0, ky1, bias);
        for (int32_t ox = lo; ox < hi; ++ox) { /* every column tap inside */
            const float *xr = xc + (oy * s->s_h - s->pad_top + ky0) * s->w_in + ox * s->s_w - s->pad_left;
            float acc = bias;
            for (int32_t ky = ky0; ky < ky1; ++ky, xr += s->w_in)
                for (int32_t kx = 0; kx < s->k_w; ++kx) acc = fmaf(wc[ky * s->k_w + kx], xr[kx], acc);
            yr[ox] = acc;
        }
        for (int32_t ox = hi; ox < s->w_out; ++ox) yr[ox] = forward_window(s, xc, wc, oy, ox, ky0, ky1, bias);
    }
}

static void weight_grad_any(const tcl_conv_shape *s, const float *xc, const float *gc, float *acc) {
    int32_t lo, hi;
    interior_outputs(s->s_w, s->pad_left, s->k_w, s->w_in, s->w_out, &lo, &hi);
    for (int32_t oy = 0; oy < s->h_out; ++oy) {
        int32_t ky0, ky1;
        tcl_taps_of_output(oy, s->s_h, s->pad_top, s->k_h, s->h_in, &ky0, &ky1);
        const float *gr = gc + oy * s->w_out;
        for (int32_t ox = 0; ox < lo; ++ox) weight_grad_window(s, xc, gr[ox], oy, ox, ky0, ky1, acc);
        for (int32_t ox = lo; ox < hi; ++ox) {
            const float *xr = xc + (oy * s->s_h - s->pad_top + ky0) * s->w_in + ox * s->s_w - s->pad_left;
            for (int32_t ky = ky0; ky < ky1; ++ky, xr += s->w_in)
                for (int32_t kx = 0; kx < s->k_w; ++kx)
                    acc[ky * s->k_w + kx] = fmaf(gr[ox], xr[kx], acc[ky * s->k_w + kx]);
        }
        for (int32_t ox = hi; ox < s->w_out; ++ox) weight_grad_window(s, xc, gr[ox], oy, ox, ky0, ky1, acc);
    }
}

/* Filters larger than TCL_DW_MAX_TAPS: one tap at a time over the outputs it reads (same order, no stack array) */
static void weight_grad_by_tap(const tcl_conv_shape *s, const float *xc, const float *gc, float *dwc) {
    for (int32_t ky = 0; ky < s->k_h; ++ky) {
        int32_t oy0, oy1;
        tcl_outputs_of_tap(ky, s->s_h, s->pad_top, s->h_in, s->h_out, &oy0, &oy1);
        for (int32_t kx = 0; kx < s->k_w; ++kx) {
            int32_t ox0, ox1;
            tcl_outputs_of_tap(kx, s->s_w, s->pad_left, s->w_in, s->w_out, &ox0, &ox1);
            float acc = 0.0f;
            for (int32_t oy = oy0; oy < oy1; ++oy) {
                const float *gr = gc + oy * s->w_out, *xr = xc + (oy * s->s_h + ky - s->pad_top) * s->w_in;
                for (int32_t ox = ox0; ox < ox1; ++ox) acc = fmaf(gr[ox], xr[ox * s->s_w + kx - s->pad_left], acc);
            }
            dwc[ky * s->k_w + kx] += acc;
        }
    }
}

/* ---- 3 x 3 filters at column stride 1 or 2 ----
 *
 * The rows whose three filter rows lie inside run one row function, inlined with the filter (or the nine
 * weight-gradient accumulators) in a local array indexed by constants only, so in registers; a border row reading
 * two filter rows (the first or last row under SAME or symmetric padding) runs the same function inlined for two
 * rows, the missing taps dropped at compile time; a row reading fewer (a plane under three rows) the general code.
 * Within a row: the one border column at each end, whose missing taps are also dropped at compile time, and the
 * columns in between two at a time (sharing loads). A plane whose border columns have another form (padding of 2 or
 * more, a plane under two columns) runs the general code. The input gradient at stride 1 mirrors this; at stride 2
 * it works in 2 x 2 blocks of inputs (below). */

/* acc + k[kx] x[kx - kx0] for the taps kx0 <= kx < kx1 of filter row k */
TCL_ALWAYS_INLINE float row_taps(float acc, const float *x, const float *k, int32_t kx0, int32_t kx1) {
    if (kx0 <= 0 && 0 < kx1) acc = fmaf(k[0], x[0 - kx0], acc);
    if (kx0 <= 1 && 1 < kx1) acc = fmaf(k[1], x[1 - kx0], acc);
    if (kx0 <= 2 && 2 < kx1) acc = fmaf(k[2], x[2 - kx0], acc);
    return acc;
}

/* acc + the taps [kx0, kx1) of n (2 or 3) filter rows k, rows then columns: x at the first row's tap kx0, its rows
 * ld apart */
TCL_ALWAYS_INLINE float taps_3x3(float acc, const float *x, int32_t ld, const float *k, int32_t n, int32_t kx0,
                                 int32_t kx1) {
    acc = row_taps(acc, x, k, kx0, kx1);
    acc = row_taps(acc, x + ld, k + 3, kx0, kx1);
    return n == 3 ? row_taps(acc, x + 2 * ld, k + 6, kx0, kx1) : acc;
}

/* a[kx] += g x[kx - kx0] for the same taps (a: accumulators of the n filter rows) */
TCL_ALWAYS_INLINE void grad_row_taps(float *a, float g, const float *x, int32_t kx0, int32_t kx1) {
    if (kx0 <= 0 && 0 < kx1) a[0] = fmaf(g, x[0 - kx0], a[0]);
    if (kx0 <= 1 && 1 < kx1) a[1] = fmaf(g, x[1 - kx0], a[1]);
    if (kx0 <= 2 && 2 < kx1) a[2] = fmaf(g, x[2 - kx0], a[2]);
}

TCL_ALWAYS_INLINE void grad_taps_3x3(float *a, float g, const float *x, int32_t ld, int32_t n, int32_t kx0,
                                     int32_t kx1) {
    grad_row_taps(a, g, x, kx0, kx1);
    grad_row_taps(a + 3, g, x + ld, kx0, kx1);
    if (n == 3) grad_row_taps(a + 6, g, x + 2 * ld, kx0, kx1);
}

/* The columns of a 3 x 3 plane: outputs [lo, hi) read three input columns; the border output before them (if
 * first) reads taps 1 and 2, the one after them (if last) taps 0 and 1. */
typedef struct {
    int32_t lo, hi, first, last;
} columns_3x3;

/* 0 if the border columns are not of that form (the plane then runs the general code) */
static int columns_of(const tcl_conv_shape *s, columns_3x3 *c) {
    interior_outputs(s->s_w, s->pad_left, 3, s->w_in, s->w_out, &c->lo, &c->hi);
    c->first = c->lo == 1 && s->pad_left == 1 && s->w_in >= 2;
    c->last = c->hi == s->w_out - 1 && s->w_in - ((s->w_out - 1) * s->s_w - s->pad_left) == 2;
    return (c->lo == 0 || c->first) && (c->hi == s->w_out || c->last);
}

/* One output row y from n filter rows k at column stride st (both constants where inlined): x at the input row of k's
 * first row (column 0) */
TCL_ALWAYS_INLINE void forward_row_3x3(const tcl_conv_shape *s, const columns_3x3 *c, int32_t n, int32_t st,
                                       const float *x, const float *k, float bias, float *y) {
    const int32_t ld = s->w_in;
    int32_t ox = c->lo;
    const float *xt = x + ox * st - s->pad_left;
    if (c->first) y[0] = taps_3x3(bias, x, ld, k, n, 1, 3);
    for (; ox + 2 <= c->hi; ox += 2, xt += 2 * st) { /* two outputs share 2 (stride 1) or 1 (stride 2) columns */
        const float p = taps_3x3(bias, xt, ld, k, n, 0, 3), q = taps_3x3(bias, xt + st, ld, k, n, 0, 3);
        y[ox] = p, y[ox + 1] = q;
    }
    if (ox < c->hi) y[ox++] = taps_3x3(bias, xt, ld, k, n, 0, 3), xt += st;
    if (c->last) y[ox] = taps_3x3(bias, xt, ld, k, n, 0, 2);
}

/* A border row oy (the padding cuts its filter rows): two filter rows through forward_row_3x3, fewer (a plane under
 * three rows) through the general code */
static void forward_border_row_3x3(const tcl_conv_shape *s, const columns_3x3 *c, const float *xc, const float *wc,
                                   float bias, float *yc, int32_t oy) {
    int32_t ky0, ky1;
    tcl_taps_of_output(oy, s->s_h, s->pad_top, 3, s->h_in, &ky0, &ky1);
    float *y = yc + oy * s->w_out;
    if (ky1 - ky0 == 2) {
        const float *x = xc + (oy * s->s_h - s->pad_top + ky0) * s->w_in, *wr = wc + 3 * ky0;
        const float k2[6] = {wr[0], wr[1], wr[2], wr[3], wr[4], wr[5]};
        if (s->s_w == 1) forward_row_3x3(s, c, 2, 1, x, k2, bias, y);
        else forward_row_3x3(s, c, 2, 2, x, k2, bias, y);
    } else {
        for (int32_t ox = 0; ox < s->w_out; ++ox) y[ox] = forward_window(s, xc, wc, oy, ox, ky0, ky1, bias);
    }
}

static void forward_3x3(const tcl_conv_shape *s, const columns_3x3 *c, const float *xc, const float *wc, float bias,
                        float *yc) {
    int32_t lo, hi; /* the rows that read three filter rows */
    interior_outputs(s->s_h, s->pad_top, 3, s->h_in, s->h_out, &lo, &hi);
    for (int32_t oy = 0; oy < lo; ++oy) forward_border_row_3x3(s, c, xc, wc, bias, yc, oy);
    if (lo < hi) {
        const float k[9] = {wc[0], wc[1], wc[2], wc[3], wc[4], wc[5], wc[6], wc[7], wc[8]};
        const float *x = xc + (lo * s->s_h - s->pad_top) * s->w_in;
        const int32_t step = s->s_h * s->w_in;
        float *y = yc + lo * s->w_out;
        if (s->s_w == 1)
            for (int32_t oy = lo; oy < hi; ++oy, x += step, y += s->w_out) forward_row_3x3(s, c, 3, 1, x, k, bias, y);
        else
            for (int32_t oy = lo; oy < hi; ++oy, x += step, y += s->w_out) forward_row_3x3(s, c, 3, 2, x, k, bias, y);
    }
    for (int32_t oy = hi; oy < s->h_out; ++oy) forward_border_row_3x3(s, c, xc, wc, bias, yc, oy);
}

/* Output row g's contributions to the accumulators a of n filter rows (and to *g_sum, the bias gradient): a local
 * array of the caller's, so that its nine floats stay in registers */
TCL_ALWAYS_INLINE void weight_grad_row_3x3(const tcl_conv_shape *s, const columns_3x3 *c, int32_t n, int32_t st,
                                           const float *x, const float *g, float *a, float *g_sum) {
    const int32_t ld = s->w_in;
    float sum = *g_sum;
    int32_t ox = c->lo;
    const float *xt = x + ox * st - s->pad_left;
    if (c->first) grad_taps_3x3(a, g[0], x, ld, n, 1, 3), sum += g[0];
    for (; ox + 2 <= c->hi; ox += 2, xt += 2 * st) { /* each accumulator still takes the two outputs in order */
        grad_taps_3x3(a, g[ox], xt, ld, n, 0, 3), grad_taps_3x3(a, g[ox + 1], xt + st, ld, n, 0, 3);
        sum += g[ox], sum += g[ox + 1];
    }
    if (ox < c->hi) grad_taps_3x3(a, g[ox], xt, ld, n, 0, 3), sum += g[ox++], xt += st;
    if (c->last) grad_taps_3x3(a, g[ox], xt, ld, n, 0, 2), sum += g[ox];
    *g_sum = sum;
}

static void weight_grad_border_row_3x3(const tcl_conv_shape *s, const columns_3x3 *c, const float *xc,
                                       const float *gc, float *acc, float *g_sum, int32_t oy) {
    int32_t ky0, ky1;
    tcl_taps_of_output(oy, s->s_h, s->pad_top, 3, s->h_in, &ky0, &ky1);
    const float *g = gc + oy * s->w_out;
    if (ky1 - ky0 == 2) {
        const float *x = xc + (oy * s->s_h - s->pad_top + ky0) * s->w_in;
        float *ar = acc + 3 * ky0, a[6] = {ar[0], ar[1], ar[2], ar[3], ar[4], ar[5]}, sum = *g_sum;
        if (s->s_w == 1) weight_grad_row_3x3(s, c, 2, 1, x, g, a, &sum);
        else weight_grad_row_3x3(s, c, 2, 2, x, g, a, &sum);
        ar[0] = a[0], ar[1] = a[1], ar[2] = a[2], ar[3] = a[3], ar[4] = a[4], ar[5] = a[5], *g_sum = sum;
    } else {
        for (int32_t ox = 0; ox < s->w_out; ++ox) {
            weight_grad_window(s, xc, g[ox], oy, ox, ky0, ky1, acc);
            *g_sum += g[ox];
        }
    }
}

static void weight_grad_3x3(const tcl_conv_shape *s, const columns_3x3 *c, const float *xc, const float *gc,
                            float *acc, float *g_sum) {
    int32_t lo, hi;
    interior_outputs(s->s_h, s->pad_top, 3, s->h_in, s->h_out, &lo, &hi);
    for (int32_t oy = 0; oy < lo; ++oy) weight_grad_border_row_3x3(s, c, xc, gc, acc, g_sum, oy);
    if (lo < hi) {
        float a[9] = {acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7], acc[8]}, sum = *g_sum;
        const float *x = xc + (lo * s->s_h - s->pad_top) * s->w_in, *g = gc + lo * s->w_out;
        const int32_t step = s->s_h * s->w_in;
        if (s->s_w == 1) /* one loop per stride: the stride is a constant inside */
            for (int32_t oy = lo; oy < hi; ++oy, x += step, g += s->w_out)
                weight_grad_row_3x3(s, c, 3, 1, x, g, a, &sum);
        else
            for (int32_t oy = lo; oy < hi; ++oy, x += step, g += s->w_out)
                weight_grad_row_3x3(s, c, 3, 2, x, g, a, &sum);
        acc[0] = a[0], acc[1] = a[1], acc[2] = a[2], acc[3] = a[3], acc[4] = a[4], acc[5] = a[5], acc[6] = a[6];
        acc[7] = a[7], acc[8] = a[8], *g_sum = sum;
    }
    for (int32_t oy = hi; oy < s->h_out; ++oy) weight_grad_border_row_3x3(s, c, xc, gc, acc, g_sum, oy);
}

/* acc + dy k[kx] for the taps kx0 <= kx < kx1 of filter row k: tap kx reads g[kx0 - kx] (one output left per tap) */
TCL_ALWAYS_INLINE float input_row_taps(float acc, const float *g, const float *k, int32_t kx0, int32_t kx1) {
    if (kx0 <= 0 && 0 < kx1) acc = fmaf(g[kx0 - 0], k[0], acc);
    if (kx0 <= 1 && 1 < kx1) acc = fmaf(g[kx0 - 1], k[1], acc);
    if (kx0 <= 2 && 2 < kx1) acc = fmaf(g[kx0 - 2], k[2], acc);
    return acc;
}

/* Stride 1: the taps [kx0, kx1) of n filter rows k reading dy: g at the output of the first row's tap kx0, each next
 * filter row one output row (ld) up */
TCL_ALWAYS_INLINE float input_taps_3x3(const float *g, int32_t ld, const float *k, int32_t n, int32_t kx0,
                                       int32_t kx1) {
    float acc = input_row_taps(0.0f, g, k, kx0, kx1);
    acc = input_row_taps(acc, g - ld, k + 3, kx0, kx1);
    return n == 3 ? input_row_taps(acc, g - 2 * ld, k + 6, kx0, kx1) : acc;
}

/* Stride 1, input row dx from n filter rows k: g at the output row of k's first row (column 0). Inputs [lo, hi) are
 * read by three tap columns; under SAME padding the input before them by taps 0 and 1, the one after by 1 and 2. */
TCL_ALWAYS_INLINE void input_grad_row_s1(const tcl_conv_shape *s, const columns_3x3 *c, int32_t n, const float *g,
                                         const float *k, float *dx) {
    const int32_t ld = s->w_out;
    int32_t ix = c->lo;
    const float *gt = g + ix + s->pad_left; /* the output that tap column 0 reads */
    if (c->first) dx[0] = input_taps_3x3(g + 1, ld, k, n, 0, 2);
    for (; ix + 2 <= c->hi; ix += 2, gt += 2) { /* two inputs share two of their three output columns */
        const float p = input_taps_3x3(gt, ld, k, n, 0, 3), q = input_taps_3x3(gt + 1, ld, k, n, 0, 3);
        dx[ix] = p, dx[ix + 1] = q;
    }
    if (ix < c->hi) dx[ix++] = input_taps_3x3(gt++, ld, k, n, 0, 3);
    if (c->last) dx[ix] = input_taps_3x3(gt - 1, ld, k, n, 1, 3);
}

/* The input columns of a stride-1 3 x 3 input gradient: [lo, hi) read by all three tap columns, the same border
 * forms as columns_of (first: taps 0, 1 of output 1; last: taps 1, 2) */
static int input_columns_of(const tcl_conv_shape *s, columns_3x3 *c) {
    c->lo = tcl_imin(s->w_in, tcl_imax(0, 2 - s->pad_left));
    c->hi = tcl_imax(c->lo, tcl_imin(s->w_in, s->w_out - s->pad_left));
    c->first = c->lo == 1 && s->pad_left == 1 && s->w_out >= 2;
    c->last = c->hi == s->w_in - 1 && c->hi + s->pad_left == s->w_out && s->w_out >= 2;
    return (c->lo == 0 || c->first) && (c->hi == s->w_in || c->last);
}

static void input_grad_3x3_s1(const tcl_conv_shape *s, const columns_3x3 *c, const float *gc, const float *wc,
                              float *dxc) {
    const float k[9] = {wc[0], wc[1], wc[2], wc[3], wc[4], wc[5], wc[6], wc[7], wc[8]};
    for (int32_t iy = 0; iy < s->h_in; ++iy) {
        int32_t ky0, ky1, oy0;
        tcl_taps_of_input(iy, 1, s->pad_top, 3, s->h_out, &ky0, &ky1, &oy0);
        const float *g = gc + oy0 * s->w_out;
        float *dx = dxc + iy * s->w_in;
        if (ky1 - ky0 == 3) {
            input_grad_row_s1(s, c, 3, g, k, dx);
        } else if (ky1 - ky0 == 2) {
            const float *wr = wc + 3 * ky0, k2[6] = {wr[0], wr[1], wr[2], wr[3], wr[4], wr[5]};
            input_grad_row_s1(s, c, 2, g, k2, dx);
        } else {
            for (int32_t ix = 0; ix < s->w_in; ++ix) dx[ix] = input_grad_window(s, gc, wc, iy, ix);
        }
    }
}

/* Stride 2 (both ways): the inputs (2 by - pad_top + i, 2 bx - pad_left + j), i, j in {0, 1}, of block (by, bx) read
 * the output gradients g (row by) at column bx (taps (i, j)) and bx - 1 (taps (i, 2), j = 0), and p (row by - 1, if
 * any) at bx (taps (2, j), i = 0) and bx - 1 (tap (2, 2)): four inputs from four loads. cur, prev: output columns bx
 * and bx - 1 exist; left, right: input columns j = 0 and 1 exist. de, dd: the even and odd input rows at column
 * j = 0. */
TCL_ALWAYS_INLINE void input_grad_block_s2(const float *g, const float *p, const float *k, int32_t bx, int cur,
                                           int prev, int left, int right, float *de, float *dd) {
    const int up = p != NULL;
    float ee = 0.0f, eo = 0.0f, oe = 0.0f, oo = 0.0f; /* (even row, even column), ... in tap order */
    if (cur) {
        const float a = g[bx];
        ee = fmaf(a, k[0], ee), eo = fmaf(a, k[1], eo), oe = fmaf(a, k[3], oe), oo = fmaf(a, k[4], oo);
    }
    if (prev) {
        const float b = g[bx - 1];
        ee = fmaf(b, k[2], ee), oe = fmaf(b, k[5], oe);
    }
    if (up && cur) {
        const float c = p[bx];
        ee = fmaf(c, k[6], ee), eo = fmaf(c, k[7], eo);
    }
    if (up && prev) ee = fmaf(p[bx - 1], k[8], ee);
    if (left) de[0] = ee, dd[0] = oe;
    if (right) de[1] = eo, dd[1] = oo;
}

/* Stride 2, the two input rows of block row by (both inside the input, by < h_out) from output rows g = by and, if
 * p, by - 1. Blocks [lo, hi) have both columns and both output columns; the others are the plane's edges. */
TCL_ALWAYS_INLINE void input_grad_rows_s2(const tcl_conv_shape *s, const float *g, const float *p, const float *k,
                                          float *de, float *dd, int32_t lo, int32_t hi) {
    const int32_t pl = s->pad_left, last = (s->w_in - 1 + pl) / 2;
    int32_t bx = pl / 2;
    for (; bx < lo; ++bx) {
        const int32_t ix = 2 * bx - pl;
        const int cur = bx < s->w_out, prev = bx > 0 && bx <= s->w_out;
        input_grad_block_s2(g, p, k, bx, cur, prev, ix >= 0, ix + 1 < s->w_in, de + ix, dd + ix);
    }
    for (; bx + 2 <= hi; bx += 2) { /* neighbour blocks share two loads */
        const int32_t ix = 2 * bx - pl;
        input_grad_block_s2(g, p, k, bx, 1, 1, 1, 1, de + ix, dd + ix);
        input_grad_block_s2(g, p, k, bx + 1, 1, 1, 1, 1, de + ix + 2, dd + ix + 2);
    }
    for (; bx <= last; ++bx) {
        const int32_t ix = 2 * bx - pl;
        const int cur = bx < s->w_out, prev = bx > 0 && bx <= s->w_out;
        input_grad_block_s2(g, p, k, bx, cur, prev, ix >= 0, ix + 1 < s->w_in, de + ix, dd + ix);
    }
}

static void input_grad_3x3_s2(const tcl_conv_shape *s, const float *gc, const float *wc, float *dxc) {
    const float k[9] = {wc[0], wc[1], wc[2], wc[3], wc[4], wc[5], wc[6], wc[7], wc[8]};
    const int32_t pt = s->pad_top, pl = s->pad_left;
    /* blocks with both input columns inside and both output columns: 2 bx - pl >= 0, 2 bx - pl + 1 < w_in, bx >= 1 */
    const int32_t lo = tcl_imax(1, (pl + 1) / 2), hi = tcl_imax(lo, tcl_imin(s->w_out, (s->w_in - 2 + pl) / 2 + 1));
    for (int32_t by = pt / 2; 2 * by - pt < s->h_in; ++by) {
        const int32_t iy = 2 * by - pt; /* the block's even input row */
        const float *g = gc + by * s->w_out;
        float *de = dxc + iy * s->w_in;
        if (iy >= 0 && iy + 1 < s->h_in && by < s->h_out && by > 0) {
            input_grad_rows_s2(s, g, g - s->w_out, k, de, de + s->w_in, lo, hi);
        } else if (iy >= 0 && iy + 1 < s->h_in && by == 0 && s->h_out > 0) {
            input_grad_rows_s2(s, g, NULL, k, de, de + s->w_in, lo, hi);
        } else {
            for (int32_t i = tcl_imax(0, iy); i < tcl_imin(s->h_in, iy + 2); ++i)
                for (int32_t ix = 0; ix < s->w_in; ++ix)
                    dxc[i * s->w_in + ix] = input_grad_window(s, gc, wc, i, ix);
        }
    }
}

/* ---- the kernels ---- */

void tcl_depthwise_forward(const tcl_conv_shape *s, const float *x, const float *w, const float *b, float *y) {
    const int32_t hw_in = s->h_in * s->w_in, hw_out = s->h_out * s->w_out, ksize = s->k_h * s->k_w;
    columns_3x3 cols = {0, 0, 0, 0};
    const int fast = s->k_h == 3 && s->k_w == 3 && (s->s_w == 1 || s->s_w == 2) && columns_of(s, &cols);
    for (int32_t c = 0; c < s->c_out; ++c) {
        const float bias = b ? b[c] : 0.0f;
        if (fast) forward_3x3(s, &cols, x + c * hw_in, w + c * ksize, bias, y + c * hw_out);
        else forward_any(s, x + c * hw_in, w + c * ksize, bias, y + c * hw_out);
    }
}

#define TCL_DW_MAX_TAPS 49 /* up to 7 x 7: accumulators on the stack; larger filters go tap by tap */

static float bias_grad(const float *g, int32_t n) {
    float sum = 0.0f;
    for (int32_t p = 0; p < n; ++p) sum += g[p];
    return sum;
}

/* dw[tap] += sum over outputs of dy x, one accumulator per tap taking the outputs in raster order (db likewise) */
void tcl_depthwise_weight_grad(const tcl_conv_shape *s, const float *x, const float *dy, float *dw, float *db) {
    const int32_t hw_in = s->h_in * s->w_in, hw_out = s->h_out * s->w_out, ksize = s->k_h * s->k_w;
    columns_3x3 cols = {0, 0, 0, 0};
    const int fast = s->k_h == 3 && s->k_w == 3 && (s->s_w == 1 || s->s_w == 2) && columns_of(s, &cols);
    for (int32_t c = 0; c < s->c_out; ++c) {
        const float *xc = x + c * hw_in, *gc = dy + c * hw_out;
        float *dwc = dw + c * ksize;
        if (ksize > TCL_DW_MAX_TAPS) {
            weight_grad_by_tap(s, xc, gc, dwc);
            if (db) db[c] += bias_grad(gc, hw_out);
            continue;
        }
        float acc[TCL_DW_MAX_TAPS], g_sum = 0.0f;
        for (int32_t t = 0; t < ksize; ++t) acc[t] = 0.0f;
        if (fast) {
            weight_grad_3x3(s, &cols, xc, gc, acc, &g_sum);
        } else {
            weight_grad_any(s, xc, gc, acc);
            if (db) g_sum = bias_grad(gc, hw_out);
        }
        for (int32_t t = 0; t < ksize; ++t) dwc[t] += acc[t];
        if (db) db[c] += g_sum;
    }
}

/* dx = sum over the taps that read it of dy w, taps by row then column */
void tcl_depthwise_input_grad(const tcl_conv_shape *s, const float *dy, const float *w, float *dx) {
    const int32_t hw_in = s->h_in * s->w_in, hw_out = s->h_out * s->w_out, ksize = s->k_h * s->k_w;
    const int k3 = s->k_h == 3 && s->k_w == 3;
    columns_3x3 cols = {0, 0, 0, 0};
    const int s1 = k3 && s->s_h == 1 && s->s_w == 1 && input_columns_of(s, &cols);
    const int s2 = k3 && s->s_h == 2 && s->s_w == 2;
    for (int32_t c = 0; c < s->c_in; ++c) {
        const float *gc = dy + c * hw_out, *wc = w + c * ksize;
        float *dxc = dx + c * hw_in;
        if (s1) {
            input_grad_3x3_s1(s, &cols, gc, wc, dxc);
        } else if (s2) {
            input_grad_3x3_s2(s, gc, wc, dxc);
        } else {
            for (int32_t iy = 0; iy < s->h_in; ++iy)
                for (int32_t ix = 0; ix < s->w_in; ++ix)
                    dxc[iy * s->w_in + ix] = input_grad_window(s, gc, wc, iy, ix);
        }
    }
}
