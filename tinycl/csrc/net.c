/* The adaptive stage's training step on one static arena. Every tensor is an offset into net->arena, planned
 * ahead from the step's tensor lifetimes (tinycl/device/arena.py), and the calls below run in exactly the
 * order that plan assumed: forward per layer, loss, then per layer from the top: activation gradient (in
 * place), weight gradient, input gradient. The mini-batch is a loop over samples around that, so only one
 * sample's activations are ever live; the weight gradients sum over the batch before one SGD update. */
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

static void backward_layer(const tcl_net *net, const tcl_layer *l) {
    const float *x = at(net, l->x), *y = at(net, l->y), *w = at(net, l->w);
    float *dy = at(net, l->dy), *dx = at(net, l->dx), *dw = at(net, l->dw), *db = at(net, l->db);
    if (l->op == TCL_OP_ACTIVATION) {
        tcl_activation_input_grad(l->act, out_size(l), y, dy, dx);
        return;
    }
    tcl_activation_input_grad(l->act, out_size(l), y, dy, dy);
    switch (l->op) {
    case TCL_OP_CONV2D:
        tcl_conv2d_weight_grad(&l->shape, x, dy, dw, db);
        if (l->input_grad) tcl_conv2d_input_grad(&l->shape, dy, w, dx);
        break;
    case TCL_OP_DEPTHWISE:
        tcl_depthwise_weight_grad(&l->shape, x, dy, dw, db);
        if (l->input_grad) tcl_depthwise_input_grad(&l->shape, dy, w, dx);
        break;
    case TCL_OP_POINTWISE:
        tcl_pointwise_weight_grad(&l->shape, x, dy, dw, db);
        if (l->input_grad) tcl_pointwise_input_grad(&l->shape, dy, w, dx);
        break;
    case TCL_OP_LINEAR:
        tcl_linear_weight_grad(in_size(l), out_size(l), x, dy, dw, db);
        if (l->input_grad) tcl_linear_input_grad(in_size(l), out_size(l), dy, w, dx);
        break;
    case TCL_OP_AVGPOOL:
        if (l->input_grad) tcl_avgpool_input_grad(&l->shape, dy, dx);
        break;
    case TCL_OP_BATCHRENORM:
        tcl_batchrenorm_weight_grad(l->shape.c_in, l->shape.h_in * l->shape.w_in, x, dy, at(net, l->stats), dw, db);
        if (l->input_grad)
            tcl_batchrenorm_input_grad(l->shape.c_in, l->shape.h_in * l->shape.w_in, dy, x, w, at(net, l->stats),
                                       at(net, l->sums), dx);
        break;
    case TCL_OP_GLOBAL_AVGPOOL:
        if (l->input_grad) tcl_global_avgpool_input_grad(l->shape.c_in, l->shape.h_in * l->shape.w_in, dy, dx);
        break;
    default: break;
    }
}

void tcl_net_forward(const tcl_net *net) {
    for (int32_t i = 0; i < net->n_layers; ++i) forward_layer(net, &net->layers[i]);
}

float tcl_net_accumulate(const tcl_net *net, int32_t label, float grad_scale) {
    const tcl_layer *top = &net->layers[net->n_layers - 1];
    tcl_net_forward(net);
    const float loss = tcl_softmax_xent(out_size(top), at(net, top->y), label, grad_scale, at(net, top->dy));
    for (int32_t i = net->n_layers - 1; i >= 0; --i)
        if (net->layers[i].backward) backward_layer(net, &net->layers[i]);
    return loss;
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

float tcl_net_train_batch(const tcl_net *net, const float *batch, const int32_t *labels, int32_t n) {
    const int32_t size = in_size(&net->layers[0]);
    float total = 0.0f;
    tcl_net_zero_grad(net);
    for (int32_t i = 0; i < n; ++i) {
        memcpy(at(net, net->input), batch + (size_t)i * (size_t)size, sizeof(float) * (size_t)size);
        total += tcl_net_accumulate(net, labels[i], 1.0f / (float)n);
    }
    tcl_net_sgd_step(net);
    return total / (float)n;
}

void tcl_net_predict(const tcl_net *net, const float *batch, int32_t n, float *logits) {
    const tcl_layer *top = &net->layers[net->n_layers - 1];
    const int32_t size = in_size(&net->layers[0]), classes = out_size(top);
    for (int32_t i = 0; i < n; ++i) {
        memcpy(at(net, net->input), batch + (size_t)i * (size_t)size, sizeof(float) * (size_t)size);
        tcl_net_forward(net);
        memcpy(logits + (size_t)i * (size_t)classes, at(net, top->y), sizeof(float) * (size_t)classes);
    }
}
