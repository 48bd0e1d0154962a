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
 * moments accumulates per channel sum(x) and sum(x^2) (2 x c), grad_sums sum(dy) and sum(dy * xn) (2 x c). */
void tcl_batchrenorm_forward(int32_t c, int32_t hw, const float *x, const float *w, const float *b,
                             const float *stats, float *y);
void tcl_batchrenorm_weight_grad(int32_t c, int32_t hw, const float *x, const float *dy, const float *stats,
                                 float *dw, float *db);
void tcl_batchrenorm_input_grad(int32_t c, int32_t hw, const float *dy, const float *x, const float *w,
                                const float *stats, const float *sums, float *dx);
void tcl_batchrenorm_moments(int32_t c, int32_t hw, const float *x, float *sums);
void tcl_batchrenorm_grad_sums(int32_t c, int32_t hw, const float *dy, const float *x, const float *stats,
                               float *sums);

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
} tcl_layer;

typedef struct {
    int32_t n_layers;
    const tcl_layer *layers;
    float *arena;
    int32_t input;          /* offset of the input sample = layers[0].x */
    float lr, momentum, weight_decay;
} tcl_net;

/* One sample: input already at arena[input]; leaves the logits at arena[layers[n-1].y]. */
void tcl_net_forward(const tcl_net *net);
/* One sample: forward, loss, backward; adds its weight gradients (scaled by grad_scale) and returns its loss. */
float tcl_net_accumulate(const tcl_net *net, int32_t label, float grad_scale);
void tcl_net_zero_grad(const tcl_net *net);
void tcl_net_sgd_step(const tcl_net *net);
/* A mini-batch of n samples (n x input size floats, outside the arena) and labels: zero grad, accumulate every
 * sample with scale 1/n, one SGD step. Returns the mean loss. */
float tcl_net_train_batch(const tcl_net *net, const float *batch, const int32_t *labels, int32_t n);
/* Logits (n x classes) of n samples. */
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

#endif /* TINYCL_H */
