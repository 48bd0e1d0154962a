/* The adaptive stage's training step on one static arena. Every tensor is an offset into net->arena, planned
 * ahead from the step's tensor lifetimes (tinycl/device/arena.py), and the calls below run in exactly the
 * order that plan assumed: forward per layer, loss, then per layer from the top: activation gradient (in
 * place), weight gradient, input gradient. The mini-batch is a loop over samples around that, so only one
 * sample's activations are ever live; the weight gradients sum over the batch before one SGD update.
 *
 * Batch renormalization needs more than one loop: a layer's batch statistics depend on every sample's input to
 * it, and its input gradient on batch sums of dy and dy * xn at it. With one sample of activations in the arena,
 * tcl_net_train_step recomputes instead of storing the batch (exact: every pass computes the same bits):
 *  1. per BRN layer, bottom up: every sample forward up to the layer's input, moments accumulated about the
 *     running mean; then mean_B, sigma_B, r, d are fixed and the running statistics move (the layers below have
 *     their statistics already; the moments use the layer's sums buffer, free until step 2);
 *  2. per BRN layer with an input gradient, top down: every sample forward, loss and backward down to that layer,
 *     whose batch sums accumulate; the weight gradients of the layers from it up to the previous such layer are
 *     summed in this pass, since the dy they read depends only on batch sums above, all known by then;
 *  3. every sample forward and backward to the bottom: the remaining weight gradients.
 * Each weight gradient is summed once, over the samples in order, exactly as without BRN (which runs step 3
 * alone). For L BRN layers the step costs L partial forward passes and L full forward + partial backward passes
 * more than one without. */
#include <string.h>

#include "internal.h"

static float *at(const tcl_net *net, int32_t offset) { return offset < 0 ? NULL : net->arena + offset; }

static int32_t in_size(const tcl_layer *l) { return l->shape.c_in * l->shape.h_in * l->shape.w_in; }
static int32_t out_size(const tcl_layer *l) { return l->shape.c_out * l->shape.h_out * l->shape.w_out; }
static int32_t weight_size(const tcl_layer *l) {
    const tcl_conv_shape *s = &l->shape;
    switch (l->op) {
    case TCL_OP_CONV2D: return s->c_out * s->c_in * s->k_h * s->k_w;
    case TCL_OP_DEPTHWISE: return s->c_out * s->k_h * s->k_w;
    case TCL_OP_POINTWISE: return s->c_out * s->c_in;
    case TCL_OP_LINEAR: return s->c_out * in_size(l);
    case TCL_OP_BATCHRENORM: return s->c_out;
    default: return 0;
    }
}

static void forward_layer(const tcl_net *net, const tcl_layer *l) {
    const float *x = at(net, l->x), *w = at(net, l->w), *b = at(net, l->b);
    float *y = at(net, l->y);
    switch (l->op) {
    case TCL_OP_CONV2D: tcl_conv2d_forward(&l->shape, x, w, b, y); break;
    case TCL_OP_DEPTHWISE: tcl_depthwise_forward(&l->shape, x, w, b, y); break;
    case TCL_OP_POINTWISE: tcl_pointwise_forward(&l->shape, x, w, b, y); break;
    case TCL_OP_LINEAR: tcl_linear_forward(in_size(l), out_size(l), x, w, b, y); break;
    case TCL_OP_AVGPOOL: tcl_avgpool_forward(&l->shape, x, y); break;
    case TCL_OP_GLOBAL_AVGPOOL: tcl_global_avgpool_forward(l->shape.c_in, l->shape.h_in * l->shape.w_in, x, y);
        break;
    case TCL_OP_ACTIVATION: tcl_activation_forward(l->act, out_size(l), x, y); return;
    case TCL_OP_BATCHRENORM:
        tcl_batchrenorm_forward(l->shape.c_in, l->shape.h_in * l->shape.w_in, x, w, b, at(net, l->stats), y);
        break;
    default: return;
    }
    tcl_activation_forward(l->act, out_size(l), y, y);
}

enum { DX_NONE = 0, DX_INPUT = 1, DX_SUMS = 2 };

/* Activation gradient (in place), the weight gradient if `weights`, then by `dx`: nothing, the input gradient (if
 * the layer has one) or, for a BRN layer, its batch sums. */
static void backward_layer(const tcl_net *net, const tcl_layer *l, int32_t weights, int32_t dx_mode) {
    const float *x = at(net, l->x), *y = at(net, l->y), *w = at(net, l->w);
    float *dy = at(net, l->dy), *dx = at(net, l->dx), *dw = at(net, l->dw), *db = at(net, l->db);
    const int32_t input = dx_mode == DX_INPUT && l->input_grad;
    const int32_t hw = l->shape.h_in * l->shape.w_in;
    if (l->op == TCL_OP_ACTIVATION) {
        if (input) tcl_activation_input_grad(l->act, out_size(l), y, dy, dx);
        return;
    }
    tcl_activation_input_grad(l->act, out_size(l), y, dy, dy);
    switch (l->op) {
    case TCL_OP_CONV2D:
        if (weights) tcl_conv2d_weight_grad(&l->shape, x, dy, dw, db);
        if (input) tcl_conv2d_input_grad(&l->shape, dy, w, dx);
        break;
    case TCL_OP_DEPTHWISE:
        if (weights) tcl_depthwise_weight_grad(&l->shape, x, dy, dw, db);
        if (input) tcl_depthwise_input_grad(&l->shape, dy, w, dx);
        break;
    case TCL_OP_POINTWISE:
        if (weights) tcl_pointwise_weight_grad(&l->shape, x, dy, dw, db);
        if (input) tcl_pointwise_input_grad(&l->shape, dy, w, dx);
        break;
    case TCL_OP_LINEAR:
        if (weights) tcl_linear_weight_grad(in_size(l), out_size(l), x, dy, dw, db);
        if (input) tcl_linear_input_grad(in_size(l), out_size(l), dy, w, dx);
        break;
    case TCL_OP_AVGPOOL:
        if (input) tcl_avgpool_input_grad(&l->shape, dy, dx);
        break;
    case TCL_OP_BATCHRENORM:
        if (weights) tcl_batchrenorm_weight_grad(l->shape.c_in, hw, x, dy, at(net, l->stats), dw, db);
        if (input) tcl_batchrenorm_input_grad(l->shape.c_in, hw, dy, x, w, at(net, l->stats), at(net, l->sums), dx);
        if (dx_mode == DX_SUMS) tcl_batchrenorm_grad_sums(l->shape.c_in, hw, dy, x, at(net, l->stats), at(net, l->sums));
        break;
    case TCL_OP_GLOBAL_AVGPOOL:
        if (input) tcl_global_avgpool_input_grad(l->shape.c_in, hw, dy, dx);
        break;
    default: break;
    }
}

void tcl_net_forward(const tcl_net *net) {
    for (int32_t i = 0; i < net->n_layers; ++i) forward_layer(net, &net->layers[i]);
}

void tcl_net_eval_stats(const tcl_net *net) {
    for (int32_t i = 0; i < net->n_layers; ++i) {
        const tcl_layer *l = &net->layers[i];
        if (l->op == TCL_OP_BATCHRENORM)
            tcl_batchrenorm_eval_stats(l->shape.c_in, net->brn_eps, at(net, l->running), at(net, l->stats));
    }
}

/* One sample (at the arena's input): forward, loss, backward from the top down to layer `stop` (-1: to the
 * bottom; a BRN layer: its batch sums accumulate there and the pass ends), weight gradients of layers
 * [w_lo, w_hi) only. Returns the loss. */
static float sample_pass(const tcl_net *net, int32_t label, float grad_scale, int32_t stop, int32_t w_lo,
                         int32_t w_hi) {
    const tcl_layer *top = &net->layers[net->n_layers - 1];
    tcl_net_forward(net);
    const float loss = tcl_softmax_xent(out_size(top), at(net, top->y), label, grad_scale, at(net, top->dy));
    for (int32_t i = net->n_layers - 1; i >= 0 && i >= stop; --i) {
        const tcl_layer *l = &net->layers[i];
        if (l->backward) backward_layer(net, l, w_lo <= i && i < w_hi, i == stop ? DX_SUMS : DX_INPUT);
    }
    return loss;
}

float tcl_net_accumulate(const tcl_net *net, int32_t label, float grad_scale) {
    return sample_pass(net, label, grad_scale, -1, 0, net->n_layers);
}

void tcl_net_zero_grad(const tcl_net *net) {
    for (int32_t i = 0; i < net->n_layers; ++i) {
        const tcl_layer *l = &net->layers[i];
        if (l->dw >= 0) memset(at(net, l->dw), 0, sizeof(float) * (size_t)weight_size(l));
        if (l->db >= 0) memset(at(net, l->db), 0, sizeof(float) * (size_t)l->shape.c_out);
    }
}

void tcl_net_sgd_step(const tcl_net *net) {
    for (int32_t i = 0; i < net->n_layers; ++i) {
        const tcl_layer *l = &net->layers[i];
        if (l->w >= 0)
            tcl_sgd_update(weight_size(l), at(net, l->w), at(net, l->dw), at(net, l->vw), net->lr, net->momentum,
                           net->weight_decay);
        if (l->b >= 0)
            tcl_sgd_update(l->shape.c_out, at(net, l->b), at(net, l->db), at(net, l->vb), net->lr, net->momentum,
                           net->weight_decay);
    }
}

/* Step 1 of net.c's passes: every BRN layer's batch statistics, bottom up; its running statistics move. */
static void batch_statistics(const tcl_net *net, tcl_sample_fn load, void *ctx, int32_t n) {
    float t = 1.0f;
    if (net->brn_warmup > 0) {
        t = (float)net->brn_step / (float)net->brn_warmup;
        if (t > 1.0f) t = 1.0f;
    }
    const float r_max = 1.0f + (net->r_limit - 1.0f) * t, d_max = net->d_limit * t;
    float *input = at(net, net->input);
    for (int32_t k = 0; k < net->n_layers; ++k) {
        const tcl_layer *l = &net->layers[k];
        if (l->op != TCL_OP_BATCHRENORM) continue;
        const int32_t c = l->shape.c_in, hw = l->shape.h_in * l->shape.w_in;
        float *moments = at(net, l->sums), *running = at(net, l->running);
        memset(moments, 0, sizeof(float) * 2u * (size_t)c);
        for (int32_t i = 0; i < n; ++i) {
            load(ctx, i, input);
            for (int32_t j = 0; j < k; ++j) forward_layer(net, &net->layers[j]);
            tcl_batchrenorm_moments(c, hw, at(net, l->x), running, moments);
        }
        tcl_batchrenorm_batch_stats(c, (float)n * (float)hw, moments, net->brn_eps, net->brn_momentum, r_max, d_max,
                                    running, at(net, l->stats));
    }
}

float tcl_net_train_step(const tcl_net *net, tcl_sample_fn load, void *ctx, int32_t n) {
    const float scale = 1.0f / (float)n;
    float *input = at(net, net->input), total = 0.0f;
    int32_t w_hi = net->n_layers; /* weight gradients of layers [k, w_hi) are summed in the pass that stops at k */
    tcl_net_zero_grad(net);
    batch_statistics(net, load, ctx, n);
    for (int32_t k = net->n_layers - 1; k >= 0; --k) { /* step 2 */
        const tcl_layer *l = &net->layers[k];
        if (l->op != TCL_OP_BATCHRENORM || !l->input_grad) continue;
        const int32_t c = l->shape.c_in;
        float *sums = at(net, l->sums);
        memset(sums, 0, sizeof(float) * 2u * (size_t)c);
        for (int32_t i = 0; i < n; ++i) sample_pass(net, load(ctx, i, input), scale, k, k, w_hi);
        const float count = (float)n * (float)(l->shape.h_in * l->shape.w_in);
        for (int32_t j = 0; j < 2 * c; ++j) sums[j] /= count;
        w_hi = k;
    }
    for (int32_t i = 0; i < n; ++i) total += sample_pass(net, load(ctx, i, input), scale, -1, 0, w_hi); /* step 3 */
    tcl_net_sgd_step(net);
    return total / (float)n;
}

typedef struct {
    const float *batch;
    const int32_t *labels;
    int32_t size;
} batch_source;

static int32_t batch_sample(void *ctx, int32_t i, float *x) {
    const batch_source *b = (const batch_source *)ctx;
    memcpy(x, b->batch + (size_t)i * (size_t)b->size, sizeof(float) * (size_t)b->size);
    return b->labels[i];
}

float tcl_net_train_batch(const tcl_net *net, const float *batch, const int32_t *labels, int32_t n) {
    batch_source source = {batch, labels, in_size(&net->layers[0])};
    return tcl_net_train_step(net, batch_sample, &source, n);
}

void tcl_net_predict(const tcl_net *net, const float *batch, int32_t n, float *logits) {
    const tcl_layer *top = &net->layers[net->n_layers - 1];
    const int32_t size = in_size(&net->layers[0]), classes = out_size(top);
    tcl_net_eval_stats(net);
    for (int32_t i = 0; i < n; ++i) {
        memcpy(at(net, net->input), batch + (size_t)i * (size_t)size, sizeof(float) * (size_t)size);
        tcl_net_forward(net);
        memcpy(logits + (size_t)i * (size_t)classes, at(net, top->y), sizeof(float) * (size_t)classes);
    }
}
