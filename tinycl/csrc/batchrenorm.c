/* Batch renormalization (Ioffe 2017) of one CHW sample, channel by channel over its hw values. The batch's
 * statistics come in `stats` (4 x c floats: mean_B, sigma_B = sqrt(var_B + eps), r, d per channel; in eval mode
 * the running mean, sqrt(running var + eps), 1 and 0), so the kernels run one sample at a time like every other:
 * the statistics and the batch sums of the backward pass are accumulated over the samples first
 * (tcl_batchrenorm_moments, tcl_batchrenorm_grad_sums). r and d are constants of the step (no gradient), as in
 * the paper; mean_B and sigma_B are not: their gradient is the sums term of the input gradient. */
#include <math.h>

#include "internal.h"

static float normalized(const float *stats, int32_t c, int32_t ch, float x) {
    return (x - stats[ch]) / stats[c + ch];
}

void tcl_batchrenorm_forward(int32_t c, int32_t hw, const float *x, const float *w, const float *b,
                             const float *stats, float *y) {
    for (int32_t ch = 0; ch < c; ++ch) {
        const float r = stats[2 * c + ch], d = stats[3 * c + ch];
        for (int32_t i = ch * hw; i < (ch + 1) * hw; ++i)
            y[i] = w[ch] * (normalized(stats, c, ch, x[i]) * r + d) + b[ch];
    }
}

void tcl_batchrenorm_weight_grad(int32_t c, int32_t hw, const float *x, const float *dy, const float *stats,
                                 float *dw, float *db) {
    for (int32_t ch = 0; ch < c; ++ch) {
        const float r = stats[2 * c + ch], d = stats[3 * c + ch];
        float sw = 0.0f, sb = 0.0f;
        for (int32_t i = ch * hw; i < (ch + 1) * hw; ++i) {
            sw += dy[i] * (normalized(stats, c, ch, x[i]) * r + d);
            sb += dy[i];
        }
        dw[ch] += sw;
        db[ch] += sb;
    }
}

void tcl_batchrenorm_input_grad(int32_t c, int32_t hw, const float *dy, const float *x, const float *w,
                                const float *stats, const float *sums, float *dx) {
    for (int32_t ch = 0; ch < c; ++ch) {
        const float k = w[ch] * stats[2 * c + ch] / stats[c + ch];
        const float m_dy = sums ? sums[ch] : 0.0f, m_dyx = sums ? sums[c + ch] : 0.0f;
        for (int32_t i = ch * hw; i < (ch + 1) * hw; ++i)
            dx[i] = k * (dy[i] - m_dy - normalized(stats, c, ch, x[i]) * m_dyx);
    }
}

/* Moments about a shift: with the running mean as the shift (net.c), sum((x - shift)^2) stays close to the
 * variance's share, where sum(x^2) - n mean^2 would cancel the leading digits of a channel whose mean is large
 * against its spread. */
void tcl_batchrenorm_moments(int32_t c, int32_t hw, const float *x, const float *shift, float *sums) {
    for (int32_t ch = 0; ch < c; ++ch) {
        const float k = shift ? shift[ch] : 0.0f;
        float s = 0.0f, s2 = 0.0f;
        for (int32_t i = ch * hw; i < (ch + 1) * hw; ++i) {
            const float v = x[i] - k;
            s += v;
            s2 += v * v;
        }
        sums[ch] += s;
        sums[c + ch] += s2;
    }
}

static float clip(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

void tcl_batchrenorm_batch_stats(int32_t c, float count, const float *moments, float eps, float momentum,
                                 float r_max, float d_max, float *running, float *stats) {
    for (int32_t ch = 0; ch < c; ++ch) {
        const float m = moments[ch] / count; /* mean_B - shift */
        float var = moments[c + ch] / count - m * m;
        if (var < 0.0f) var = 0.0f;
        const float mean = running[ch] + m, sigma = sqrtf(running[c + ch] + eps), sigma_b = sqrtf(var + eps);
        stats[ch] = mean;
        stats[c + ch] = sigma_b;
        stats[2 * c + ch] = clip(sigma_b / sigma, 1.0f / r_max, r_max);
        stats[3 * c + ch] = clip((mean - running[ch]) / sigma, -d_max, d_max);
        running[ch] += momentum * (mean - running[ch]);
        running[c + ch] += momentum * (var - running[c + ch]);
    }
}

void tcl_batchrenorm_eval_stats(int32_t c, float eps, const float *running, float *stats) {
    for (int32_t ch = 0; ch < c; ++ch) {
        stats[ch] = running[ch];
        stats[c + ch] = sqrtf(running[c + ch] + eps);
        stats[2 * c + ch] = 1.0f;
        stats[3 * c + ch] = 0.0f;
    }
}

void tcl_batchrenorm_grad_sums(int32_t c, int32_t hw, const float *dy, const float *x, const float *stats,
                               float *sums) {
    for (int32_t ch = 0; ch < c; ++ch) {
        float s = 0.0f, sx = 0.0f;
        for (int32_t i = ch * hw; i < (ch + 1) * hw; ++i) {
            s += dy[i];
            sx += dy[i] * normalized(stats, c, ch, x[i]);
        }
        sums[ch] += s;
        sums[c + ch] += sx;
    }
}
