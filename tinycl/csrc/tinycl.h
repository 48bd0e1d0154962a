/* tinycl device runtime: fp32 training kernels for the adaptive stage, Q-bit replay code packing, int8
 * inference kernels for the frozen stage, and a training step that runs in one statically planned arena.
 *
 * Portable C99, libc/libm only, no dynamic allocation: every buffer is passed in by the caller (on a device:
 * offsets into one static arena planned by tinycl/device/arena.py).
 *
 * Conventions (the same as tinycl/model/spec.py):
 * - one sample at a time: tensors are CHW (channels, height, width) float32, row-major; the batch loop is
 *   outside the kernels, so only one sample's activations are ever live;
 * - conv weights OIHW (out, in, kh, kw), depthwise (C, 1, kh, kw), linear (out, in); biases may be NULL;
 * - zero padding is given by its top/left part, the bottom/right part follows from the sizes (TF "same"
 *   puts the extra row/column at the bottom/right);
 * - weight-gradient kernels ACCUMULATE (dw += ...; db += ...) so that a mini-batch sums its samples;
 *   forward and input-gradient kernels OVERWRITE their output.
 */
#ifndef TINYCL_H
#define TINYCL_H

#include <stddef.h>
#include <stdint.h>

enum { TCL_ACT_NONE = 0, TCL_ACT_RELU = 1, TCL_ACT_RELU6 = 2 };

/* Geometry of a convolution or pooling over one CHW sample. A linear layer's record keeps its input's CHW shape
 * (read flattened) and outputs c_out x 1 x 1. */
typedef struct {
    int32_t c_in, h_in, w_in;
    int32_t c_out, h_out, w_out;
    int32_t k_h, k_w;
    int32_t s_h, s_w;
    int32_t pad_top, pad_left;
} tcl_conv_shape;

/* ---- fp32 kernels (conv2d.c, depthwise.c, pointwise.c, linear.c, pool.c, activation.c) ---------------- */
void tcl_conv2d_forward(const tcl_conv_shape *s, const float *x, const float *w, const float *b, float *y);
void tcl_conv2d_weight_grad(const tcl_conv_shape *s, const float *x, const float *dy, float *dw, float *db);
void tcl_conv2d_input_grad(const tcl_conv_shape *s, const float *dy, const float *w, float *dx);

void tcl_depthwise_forward(const tcl_conv_shape *s, const float *x, const float *w, const float *b, float *y);
void tcl_depthwise_weight_grad(const tcl_conv_shape *s, const float *x, const float *dy, float *dw, float *db);
void tcl_depthwise_input_grad(const tcl_conv_shape *s, const float *dy, const float *w, float *dx);

/* 1x1 convolution, stride 1, no padding: a (c_out x c_in) by (c_in x h*w) matrix product in CHW. */
void tcl_pointwise_forward(const tcl_conv_shape *s, const float *x, const float *w, const float *b, float *y);
void tcl_pointwise_weight_grad(const tcl_conv_shape *s, const float *x, const float *dy, float *dw, float *db);
void tcl_pointwise_input_grad(const tcl_conv_shape *s, const float *dy, const float *w, float *dx);

void tcl_linear_forward(int32_t n_in, int32_t n_out, const float *x, const float *w, const float *b, float *y);
void tcl_linear_weight_grad(int32_t n_in, int32_t n_out, const float *x, const float *dy, float *dw, float *db);
void tcl_linear_input_grad(int32_t n_in, int32_t n_out, const float *dy, const float *w, float *dx);

/* Average over the window's elements inside the input (TFLite semantics; = plain average without padding). */
void tcl_avgpool_forward(const tcl_conv_shape *s, const float *x, float *y);
void tcl_avgpool_input_grad(const tcl_conv_shape *s, const float *dy, float *dx);
void tcl_global_avgpool_forward(int32_t c, int32_t hw, const float *x, float *y);
void tcl_global_avgpool_input_grad(int32_t c, int32_t hw, const float *dy, float *dx);

/* y = act(x) and dx = dy * act'(y), both elementwise; in place is allowed (y == x, dx == dy).
 * The derivative is taken from the output y: relu passes where y > 0, relu6 where 0 < y < 6 (as torch). */
void tcl_activation_forward(int32_t act, int32_t n, const float *x, float *y);
void tcl_activation_input_grad(int32_t act, int32_t n, const float *y, const float *dy, float *dx);

/* Batch renormalization (batchrenorm.c) of one CHW sample (c channels of hw values); w, b: gamma, beta (c each).
 * stats (4 x c): per channel mean_B, sigma_B = sqrt(var_B + eps), r, d (eval mode: running mean,
 * sqrt(running var + eps), 1, 0); y = w * ((x - mean_B) / sigma_B * r + d) + b.
 * sums (2 x c): the batch means (over samples and positions) of dy and of dy * (x - mean_B) / sigma_B; the input
 * gradient is dx = w r / sigma_B * (dy - sums[0] - xn * sums[1]); sums = NULL: statistics held constant.
 * moments accumulates per channel sum(x - shift) and sum((x - shift)^2) (2 x c; shift: c values, NULL = 0),
 * grad_sums sum(dy) and sum(dy * xn) (2 x c).
 * batch_stats (train mode): from the moments of `count` values per channel about shift = running[0..c), stats =
 * mean_B, sigma_B (biased var_B), r = clip(sigma_B / sigma, 1/r_max, r_max), d = clip((mean_B - mean) / sigma,
 * -d_max, d_max) with the running mean and sigma = sqrt(running var + eps) before the step; then running (2 x c:
 * mean, var) moves by `momentum` towards mean_B and var_B (tinycl.model.ops._batch_renorm).
 * eval_stats: stats = running mean, sqrt(running var + eps), 1, 0. */
void tcl_batchrenorm_forward(int32_t c, int32_t hw, const float *x, const float *w, const float *b,
                             const float *stats, float *y);
void tcl_batchrenorm_weight_grad(int32_t c, int32_t hw, const float *x, const float *dy, const float *stats,
                                 float *dw, float *db);
void tcl_batchrenorm_input_grad(int32_t c, int32_t hw, const float *dy, const float *x, const float *w,
                                const float *stats, const float *sums, float *dx);
void tcl_batchrenorm_moments(int32_t c, int32_t hw, const float *x, const float *shift, float *sums);
void tcl_batchrenorm_grad_sums(int32_t c, int32_t hw, const float *dy, const float *x, const float *stats,
                               float *sums);
void tcl_batchrenorm_batch_stats(int32_t c, float count, const float *moments, float eps, float momentum,
                                 float r_max, float d_max, float *running, float *stats);
void tcl_batchrenorm_eval_stats(int32_t c, float eps, const float *running, float *stats);

/* ---- loss and optimizer (loss.c, sgd.c) --------------------------------------------------------------- */
/* Softmax cross-entropy of one sample: returns -log softmax(z)[label]; writes dz = (softmax(z) - onehot) * scale
 * (scale = 1 / batch size gives the gradient of the batch mean). */
float tcl_softmax_xent(int32_t n, const float *z, int32_t label, float scale, float *dz);

/* torch.optim.SGD (dampening 0, no Nesterov): d = g + wd * w; v = m * v + d; w -= lr * v (v = NULL: no momentum,
 * w -= lr * d). The momentum buffer starts at zero, which equals torch's first-step v = d. */
void tcl_sgd_update(int32_t n, float *w, const float *g, float *v, float lr, float momentum, float weight_decay);

/* ---- Q-bit replay codes (packing.c): code k at bits [k*bits, (k+1)*bits), LSB first, as quant/packing.py -- */
size_t tcl_packed_nbytes(size_t count, int32_t bits);
void tcl_pack_codes(const uint8_t *codes, size_t count, int32_t bits, uint8_t *packed);
void tcl_unpack_codes(const uint8_t *packed, size_t count, int32_t bits, uint8_t *codes);
void tcl_write_codes(uint8_t *packed, size_t start, const uint8_t *codes, size_t count, int32_t bits);
void tcl_read_codes(const uint8_t *packed, size_t start, size_t count, int32_t bits, uint8_t *codes);
/* out[i] = scale[c] * (code[start + i] - zero[c]) with c = (i / chan_size) % n_chan (n_chan = 1: per tensor). */
void tcl_dequantize_codes(const uint8_t *packed, size_t start, size_t count, int32_t bits, int32_t n_chan,
                          int32_t chan_size, const float *scale, const int32_t *zero, float *out);

/* ---- int8 inference for the frozen stage, TFLite arithmetic (int8.c) ----------------------------------- */
enum { TCL_TIES_AWAY = 0, TCL_TIES_UP = 1 };

/* Requantization of a layer's int32 accumulators to int8 output codes, per output channel c:
 * y = clamp(out_zero + round(acc * multiplier[c] * 2^(shift[c] - 31)), act_min, act_max), with TFLite's double
 * rounding: gemmlowp's rounding doubling high multiply, then a rounding right shift whose ties go away from zero
 * (TCL_TIES_AWAY: TFLite's reference kernels, TFLite Micro, CMSIS-NN) or up (TCL_TIES_UP: LiteRT's optimized x86
 * kernels). If real_scale is set: y = clamp(out_zero + round(acc * real_scale[c]), ...) in double instead (the
 * reference FULLY_CONNECTED of LiteRT). */
typedef struct {
    int32_t in_zero, out_zero;   /* zero points of the input and output codes */
    int32_t act_min, act_max;    /* output clamp in codes: the fused activation within [-128, 127] */
    int32_t ties;                /* TCL_TIES_* */
    const int32_t *multiplier;   /* per output channel (one entry for per-tensor ops), in [2^30, 2^31) or 0 */
    const int32_t *shift;        /* per output channel, in [-31, 30] */
    const int32_t *w_zero;       /* per output channel weight zero points; NULL: all 0 (symmetric int8) */
    const double *real_scale;    /* NULL, or per output channel real multipliers (see above) */
} tcl_requant;

int32_t tcl_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int32_t shift, int32_t ties);
void tcl_conv2d_s8(const tcl_conv_shape *s, const tcl_requant *q, const int8_t *x, const int8_t *w,
                   const int32_t *bias, int8_t *y);
void tcl_depthwise_s8(const tcl_conv_shape *s, const tcl_requant *q, const int8_t *x, const int8_t *w,
                      const int32_t *bias, int8_t *y);
void tcl_linear_s8(int32_t n_in, int32_t n_out, const tcl_requant *q, const int8_t *x, const int8_t *w,
                   const int32_t *bias, int8_t *y);
/* code_offset: 128 when the codes are a uint8 model's shifted by -128 (averages round on the original codes). */
void tcl_avgpool_s8(const tcl_conv_shape *s, int32_t act_min, int32_t act_max, int32_t code_offset, const int8_t *x,
                    int8_t *y);
void tcl_maxpool_s8(const tcl_conv_shape *s, int32_t act_min, int32_t act_max, const int8_t *x, int8_t *y);
/* y = requantized x (n codes, per-tensor: multiplier[0], shift[0]), e.g. TFLite QUANTIZE int8 -> int8. */
void tcl_requantize_s8(int32_t n, const tcl_requant *q, const int8_t *x, int8_t *y);

/* ---- the training step (net.c) ------------------------------------------------------------------------ */
enum {
    TCL_OP_CONV2D = 1,
    TCL_OP_DEPTHWISE = 2,
    TCL_OP_POINTWISE = 3,
    TCL_OP_LINEAR = 4,
    TCL_OP_AVGPOOL = 5,
    TCL_OP_GLOBAL_AVGPOOL = 6,
    TCL_OP_ACTIVATION = 7, /* a standalone relu/relu6 layer (act says which) */
    TCL_OP_BATCHRENORM = 8 /* batch renormalization: w, b = gamma, beta; stats, sums as above */
};

/* One layer of the adaptive stage. Tensor fields are offsets in floats into the arena; -1 means absent. */
typedef struct {
    int32_t op, act;        /* TCL_OP_*, fused TCL_ACT_* applied to the output */
    int32_t backward;       /* 0: no trainable layer at or before this one: skip its backward entirely */
    int32_t input_grad;     /* 1: compute dx (0 for the first trainable layer) */
    tcl_conv_shape shape;   /* input (c_in, h_in, w_in) -> output (c_out, h_out, w_out) for every op */
    int32_t x, y, dx, dy;   /* input, output and their gradients */
    int32_t w, b, dw, db;   /* parameters and their gradients (summed over the mini-batch) */
    int32_t vw, vb;         /* momentum buffers */
    int32_t stats, sums;    /* TCL_OP_BATCHRENORM: its 4 x c statistics and 2 x c batch sums (-1: none) */
    int32_t running;        /* TCL_OP_BATCHRENORM: running mean and running var (2 x c), kept across steps */
} tcl_layer;

typedef struct {
    int32_t n_layers;
    const tcl_layer *layers;
    float *arena;
    int32_t input;          /* offset of the input sample = layers[0].x */
    float lr, momentum, weight_decay;
    /* batch renormalization (tinycl.model.ops: BRN_EPS, BRN_MOMENTUM, BRN_LIMITS): r_max and d_max of a step ramp
     * from 1 and 0 to r_limit and d_limit over brn_warmup steps (Learner._renorm_limits, in float32):
     * t = min(1, brn_step / brn_warmup) (1 if brn_warmup = 0), r_max = 1 + (r_limit - 1) t, d_max = d_limit t;
     * brn_step counts the steps so far, this one included */
    float brn_eps, brn_momentum, r_limit, d_limit;
    int32_t brn_step, brn_warmup;
} tcl_net;

/* Writes sample i (0 <= i < n) of a mini-batch into x (the arena's input) and returns its label. */
typedef int32_t (*tcl_sample_fn)(void *ctx, int32_t i, float *x);

/* One sample: input already at arena[input]; leaves the logits at arena[layers[n-1].y]. Batch renormalization
 * layers normalize by what their stats hold (tcl_net_eval_stats: the running statistics). */
void tcl_net_forward(const tcl_net *net);
/* Eval mode: every batch renormalization layer's stats from its running statistics. */
void tcl_net_eval_stats(const tcl_net *net);
/* One sample: forward, loss, backward; adds its weight gradients (scaled by grad_scale) and returns its loss
 * (batch renormalization with the statistics its stats hold, held constant). */
float tcl_net_accumulate(const tcl_net *net, int32_t label, float grad_scale);
void tcl_net_zero_grad(const tcl_net *net);
void tcl_net_sgd_step(const tcl_net *net);
/* One SGD step on a mini-batch of n samples that load() writes into the arena's input one at a time: zero grad,
 * every sample's gradient with scale 1/n summed, one SGD update; batch renormalization layers in train mode (batch
 * statistics, running statistics updated; see net.c for the passes this takes). Returns the mean loss. */
float tcl_net_train_step(const tcl_net *net, tcl_sample_fn load, void *ctx, int32_t n);
/* tcl_net_train_step on n samples (n x input size floats, outside the arena) and labels. */
float tcl_net_train_batch(const tcl_net *net, const float *batch, const int32_t *labels, int32_t n);
/* Logits (n x classes) of n samples, in eval mode (tcl_net_eval_stats first). */
void tcl_net_predict(const tcl_net *net, const float *batch, int32_t n, float *logits);

/* ---- portable math, random numbers, checksums and replay quantization (mathf.c, rng.c, crc32.c, quantize.c) -- */
/* expf / logf from IEEE single-precision arithmetic only: the same bits on every FPU and C library. */
float tcl_expf(float x);
float tcl_logf(float x);

/* xoshiro128**; tinycl/device/rng.py is the same generator, used by the learner in device mode. */
typedef struct {
    uint32_t s[4];
} tcl_rng;
void tcl_rng_seed(tcl_rng *rng, uint32_t seed);
uint32_t tcl_rng_next(tcl_rng *rng);
/* Uniform in [0, n), n >= 1, without modulo bias (rejection). */
uint32_t tcl_rng_below(tcl_rng *rng, uint32_t n);
/* out = a random permutation of 0..n-1 (Fisher-Yates from the top). */
void tcl_rng_permutation(tcl_rng *rng, uint16_t *out, int32_t n);
/* out[0..size) = size distinct values of 0..n-1 in random order (partial Fisher-Yates from the bottom; out holds n). */
void tcl_rng_sample(tcl_rng *rng, uint16_t *out, int32_t n, int32_t size);

/* zlib's crc32(crc, data, n): start with crc = 0. */
uint32_t tcl_crc32(uint32_t crc, const uint8_t *data, size_t n);

/* codes[i] = clamp(round_half_away(x[i] / scale[c]) + zero[c], 0, 2^bits - 1), c as in tcl_dequantize_codes; the
 * float32 operations of tinycl.quant.qparams.quantize. */
void tcl_quantize_codes(const float *x, size_t count, int32_t bits, int32_t n_chan, int32_t chan_size,
                        const float *scale, const int32_t *zero, uint8_t *codes);

/* ---- batched int8 inference on the host (int8_fast.c; not built with TCL_NO_DOUBLE) ----------------------
 * tinycl.quant.intexec's fast path: n samples at once, NHWC, codes as bytes (uint8 codes as they are, int8 codes
 * as two's complement; flip = 0x80 reads int8 codes as code + 128). Requantization of accumulator k of a span,
 * exact while |acc| < the limit of tinycl.quant.fixedpoint.Float64Multiplier, which derives these parameters from
 * TFLite's rounding: t = acc * m[k] + offset[k]; t += step[k] if t < threshold[k]; byte = (uint8)clamp(t, lo, hi)
 * ^ flip. The arrays hold len values: the per-channel values repeated, len a multiple of the channel count and at
 * most TCL_FAST_MAX_LEN; the functions return 0, or -1 (and write nothing) when len or the geometry do not fit. */
enum { TCL_FAST_MAX_LEN = 4096, TCL_FAST_MAX_TAPS = 64 }; /* span values; k_h * k_w of a depthwise layer */
typedef struct {
    const double *m;
    const double *offset;
    const double *threshold;
    const double *step;
    double lo, hi;
    int32_t flip;
    int32_t away;   /* 0: every step is 0 (ties go up everywhere), the threshold test is skipped */
    int32_t len;
} tcl_requant_f64;

/* y (rows x n) = requantized acc[r * ld + c] + add[c] (+ acc[r * ld + n] * b[c] unless b is NULL), summed with
 * int32 wrap-around: the int32 products of torch._int_mm, with an extra column of row sums when the weights were
 * offset into int8. */
int32_t tcl_fast_requant_rows(int32_t rows, int32_t n, int32_t ld, const int32_t *acc, const int32_t *add,
                              const int32_t *b, const tcl_requant_f64 *q, uint8_t *y);
/* Depthwise convolution (c_in == c_out) of n NHWC samples: int32 sums of (x - in_zero) * w over the taps inside the
 * input plus the bias, requantized; y: (n, h_out, w_out, c). w: (k_h * k_w, len) weights minus their zero points
 * and bias (len), both repeated like q's arrays. work: k_h * (1 + s_w * (w_out + (k_w - 1) / s_w) * c) values. */
int32_t tcl_fast_depthwise(const tcl_conv_shape *s, int32_t n, int32_t in_zero, int32_t in_flip, const uint8_t *x,
                           const int32_t *w, const int32_t *bias, const tcl_requant_f64 *q, int32_t *work,
                           uint8_t *y);
/* cols (n * h_out * w_out rows of k_pad bytes) = each output's input patch, every byte xor flip, taps outside the
 * input = fill, bytes past k_h * k_w * c_in = 0; x: n samples, NHWC and patches in (k_h, k_w, c_in) order if
 * channels_last, else NCHW and patches in (c_in, k_h, k_w) order. */
void tcl_fast_im2col(const tcl_conv_shape *s, int32_t n, int32_t channels_last, int32_t k_pad, int32_t flip,
                     int32_t fill, const uint8_t *x, uint8_t *cols);

#endif /* TINYCL_H */
