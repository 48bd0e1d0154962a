/* The int8 frozen stage's layer loop: each layer reads the previous one's codes and writes into the other of
 * two scratch buffers; layers that only requantize by the identity are skipped by the generator. */
#include "tcl_learner.h"

const int8_t *tcl_learner_latent(tcl_learner *L, const int8_t *input) {
    const tcl_learner_def *d = L->def;
    const int8_t *x = input;
    for (int32_t i = 0; i < d->n_frozen; ++i) {
        const tcl_i8_layer *l = &d->frozen[i];
        int8_t *y = (x == L->scratch_a) ? L->scratch_b : L->scratch_a;
        const tcl_conv_shape *s = &l->shape;
        switch (l->op) {
        case TCL_I8_CONV2D: tcl_conv2d_s8(s, &l->q, x, l->w, l->bias, y); break;
        case TCL_I8_DEPTHWISE: tcl_depthwise_s8(s, &l->q, x, l->w, l->bias, y); break;
        case TCL_I8_LINEAR: tcl_linear_s8(s->c_in * s->h_in * s->w_in, s->c_out, &l->q, x, l->w, l->bias, y); break;
        case TCL_I8_AVGPOOL: tcl_avgpool_s8(s, l->act_min, l->act_max, l->code_offset, x, y); break;
        case TCL_I8_MAXPOOL: tcl_maxpool_s8(s, l->act_min, l->act_max, x, y); break;
        case TCL_I8_REQUANTIZE: tcl_requantize_s8(l->n_out, &l->q, x, y); break;
        default: continue;
        }
        if (l->then) tcl_requantize_s8(l->n_out, &l->q, y, y); /* elementwise: in place is safe */
        x = y;
    }
    return x;
}
