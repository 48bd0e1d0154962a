/* The continual-learning loop on the device; see tcl_learner.h for what it mirrors on the host. */
#include <string.h>

#include "internal.h"
#include "tcl_learner.h"

static tcl_net net_of(const tcl_learner *L, float lr) {
    const tcl_learner_def *d = L->def;
    tcl_net net;
    net.n_layers = d->n_layers;
    net.layers = d->layers;
    net.arena = L->arena;
    net.input = d->layers[0].x;
    net.lr = lr;
    net.momentum = d->momentum_factor;
    net.weight_decay = d->weight_decay;
    return net;
}

void tcl_learner_init(tcl_learner *L) {
    const tcl_learner_def *d = L->def;
    const size_t n_codes = tcl_packed_nbytes((size_t)d->capacity * (size_t)d->latent_size, d->bits);
    for (int32_t i = 0; i < d->n_params; ++i) {
        const tcl_param *p = &d->params[i];
        memcpy(L->arena + p->offset, p->init, sizeof(float) * (size_t)p->count);
    }
    if (d->init_codes) memcpy(L->codes, d->init_codes, n_codes);
    else memset(L->codes, 0, n_codes);
    if (d->init_labels) memcpy(L->labels, d->init_labels, (size_t)d->capacity);
    else memset(L->labels, 0, (size_t)d->capacity);
    memcpy(L->scale, d->init_scale, sizeof(float) * (size_t)d->n_chan);
    memcpy(L->zero, d->init_zero, sizeof(int32_t) * (size_t)d->n_chan);
    L->c = *d->init_counters;
    L->n_new = 0;
}

/* latent codes -> the float32 input of the adaptive stage: (code - zero) * scale, as the host's frozen stage */
static void load_latent(const tcl_learner *L, const int8_t *codes, float *out) {
    const tcl_learner_def *d = L->def;
    for (int32_t i = 0; i < d->latent_size; ++i) out[i] = (float)((int32_t)codes[i] - d->latent_zero) * d->latent_scale;
}

int32_t tcl_learner_predict(tcl_learner *L, const int8_t *input) {
    const tcl_learner_def *d = L->def;
    const tcl_net net = net_of(L, 0.0f);
    load_latent(L, tcl_learner_latent(L, input), L->arena + net.input);
    tcl_net_forward(&net);
    const float *z = L->arena + d->layers[d->n_layers - 1].y;
    int32_t best = 0;
    for (int32_t k = 1; k < d->n_classes; ++k)
        if (z[k] > z[best]) best = k; /* the first of equal maxima, as numpy's argmax */
    return best;
}

int32_t tcl_learner_learn(tcl_learner *L, const int8_t *input, int32_t label) {
    const tcl_learner_def *d = L->def;
    if (label < 0 || label >= d->n_classes) return TCL_ERR_LABEL;
    if (L->n_new >= d->max_new) return TCL_ERR_FULL;
    memcpy(L->new_codes + (size_t)L->n_new * (size_t)d->latent_size, tcl_learner_latent(L, input),
           (size_t)d->latent_size);
    L->new_labels[L->n_new++] = (uint8_t)label;
    return TCL_OK;
}

/* (new, replayed) samples per mini-batch: TrainConfig.mix */
static void mix(const tcl_learner *L, int32_t *cur, int32_t *rep) {
    const tcl_learner_def *d = L->def;
    const int32_t b = d->batch_size, n_new = L->n_new, n_mem = L->c.size;
    if (n_mem == 0) {
        *cur = b;
        *rep = 0;
        return;
    }
    int32_t c = d->ratio_cur;
    if (d->mix == TCL_MIX_PELLEGRINI) c = n_new / tcl_imax((n_new + n_mem) / b, 1);
    c = tcl_imin(tcl_imax(c, 1), b - 1);
    *cur = c;
    *rep = b - c;
}

static void train(tcl_learner *L, float lr) {
    const tcl_learner_def *d = L->def;
    const tcl_net net = net_of(L, lr);
    float *x = L->arena + net.input;
    int32_t cur, rep;
    mix(L, &cur, &rep);
    for (int32_t i = 0; i < d->n_momentum; ++i) /* a new optimizer per experience: momentum restarts */
        memset(L->arena + d->momentum[i].offset, 0, sizeof(float) * (size_t)d->momentum[i].count);
    for (int32_t epoch = 0; epoch < d->epochs; ++epoch) {
        tcl_rng_permutation(&L->c.rng, L->idx_new, L->n_new);
        for (int32_t start = 0; start < L->n_new; start += cur) {
            const int32_t nb = tcl_imin(cur, L->n_new - start), n = nb + rep;
            const float grad_scale = 1.0f / (float)n;
            /* the replayed slots are drawn before any sample is learned, as the host draws them */
            const int32_t replace = rep > L->c.size;
            if (!replace && rep) tcl_rng_sample(&L->c.rng, L->idx_slots, L->c.size, rep);
            if (replace)
                for (int32_t k = 0; k < rep; ++k) L->idx_slots[k] = (uint16_t)tcl_rng_below(&L->c.rng,
                                                                                            (uint32_t)L->c.size);
            tcl_net_zero_grad(&net);
            for (int32_t k = 0; k < nb; ++k) {
                const int32_t j = L->idx_new[start + k];
                load_latent(L, L->new_codes + (size_t)j * (size_t)d->latent_size, x);
                tcl_net_accumulate(&net, L->new_labels[j], grad_scale);
            }
            for (int32_t k = 0; k < rep; ++k) {
                const size_t slot = L->idx_slots[k];
                tcl_dequantize_codes(L->codes, slot * (size_t)d->latent_size, (size_t)d->latent_size, d->bits,
                                     d->n_chan, d->chan_size, L->scale, L->zero, x);
                tcl_net_accumulate(&net, L->labels[slot], grad_scale);
            }
            tcl_net_sgd_step(&net);
        }
    }
}

/* The memory's quantizer from the first samples written: max range, zero point 0 (the latents are >= 0) */
static void calibrate(tcl_learner *L, int32_t h) {
    const tcl_learner_def *d = L->def;
    const int32_t top = (1 << d->bits) - 1;
    for (int32_t c = 0; c < d->n_chan; ++c) {
        int32_t hi = d->latent_zero;
        for (int32_t k = 0; k < h; ++k) {
            const int8_t *z = L->new_codes + (size_t)L->idx_new[k] * (size_t)d->latent_size;
            for (int32_t i = c * d->chan_size; i < d->latent_size; i += d->n_chan * d->chan_size)
                for (int32_t e = 0; e < d->chan_size; ++e) hi = tcl_imax(hi, z[i + e]);
        }
        /* hi / levels in float32 equals the host's float64 quotient rounded to float32 (no double rounding:
         * a float32 over an odd integer <= 255 is never within 2^-53 of a float32 midpoint) */
        const float range = (float)(hi - d->latent_zero) * d->latent_scale;
        L->scale[c] = range > 0.0f ? range / (float)top : 1.0f;
        L->zero[c] = 0;
    }
    L->c.calibrated = 1;
}

/* Pellegrini et al.'s rule (memory.nicv2_policy): h = min(N / (i + 1), n_new) random new latents (at least the
 * free slots' worth) overwrite the free slots first, then h random filled ones. */
static void update_memory(tcl_learner *L) {
    const tcl_learner_def *d = L->def;
    const int32_t n_new = L->n_new, size = L->c.size;
    int32_t h = tcl_imin(d->capacity / (L->c.experiences + 1), n_new);
    h = tcl_imax(h, tcl_imin(d->capacity - size, n_new));
    tcl_rng_sample(&L->c.rng, L->idx_new, n_new, h);
    const int32_t n_free = tcl_imin(d->capacity, size + h) - size, rest = h - n_free;
    if (rest > 0) tcl_rng_sample(&L->c.rng, L->idx_slots, size, rest);
    if (h > 0 && !L->c.calibrated) calibrate(L, h);
    float *x = L->arena + d->layers[0].x; /* free between training steps */
    uint8_t *codes = (uint8_t *)L->scratch_a;
    for (int32_t k = 0; k < h; ++k) {
        const int32_t slot = k < n_free ? size + k : L->idx_slots[k - n_free];
        const int32_t j = L->idx_new[k];
        load_latent(L, L->new_codes + (size_t)j * (size_t)d->latent_size, x);
        tcl_quantize_codes(x, (size_t)d->latent_size, d->bits, d->n_chan, d->chan_size, L->scale, L->zero, codes);
        tcl_write_codes(L->codes, (size_t)slot * (size_t)d->latent_size, codes, (size_t)d->latent_size, d->bits);
        L->labels[slot] = L->new_labels[j];
    }
    L->c.size = size + n_free;
    L->c.seen += n_new;
}

void tcl_learner_end_experience(tcl_learner *L) {
    const tcl_learner_def *d = L->def;
    train(L, L->c.experiences == 0 ? d->first_lr : d->lr);
    update_memory(L);
    L->c.experiences += 1;
    L->n_new = 0;
}
