/* Float values -> unsigned Q-bit replay codes, as tinycl.quant.qparams.quantize computes them in float32:
 * q = clamp(sign(v) * floor(|v| + 0.5) + zero, 0, 2^bits - 1) with v = x / scale (the same additions and
 * roundings, so the codes are the host's bit for bit). */
#include "internal.h"

void tcl_quantize_codes(const float *x, size_t count, int32_t bits, int32_t n_chan, int32_t chan_size,
                        const float *scale, const int32_t *zero, uint8_t *codes) {
    const float top = (float)((1 << bits) - 1);
    for (size_t i = 0; i < count; ++i) {
        const size_t c = (i / (size_t)chan_size) % (size_t)n_chan;
        const float v = x[i] / scale[c];
        const float a = (v < 0.0f ? -v : v) + 0.5f;
        /* floor(a) for a in [0, 2^23): truncation; larger values clamp to the top code either way */
        float r = a < 8388608.0f ? (float)(int32_t)a : a;
        if (v < 0.0f) r = -r;
        float q = r + (float)zero[c];
        q = q < 0.0f ? 0.0f : (q > top ? top : q);
        codes[i] = (uint8_t)q;
    }
}
