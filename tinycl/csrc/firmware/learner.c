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
    net.brn_eps = d->brn_eps;
    net.brn_momentum = d->brn_momentum;
    net.r_limit = d->r_limit;
    net.d_limit = d->d_limit;
    net.brn_step = L->c.steps;
    net.brn_warmup = d->brn_warmup;
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

/* Slot `slot` of an fp32 memory: the latent's float32 values (bytes, so memcpy needs no alignment). */
static uint8_t *fp32_slot(const tcl_learner *L, size_t slot) {
    return L->codes + slot * (size_t)L->def->latent_size * sizeof(float);
}

/* memory.new_latents "quantized", once the memory's quantizer is calibrated: x (a new latent) -> the memory's codes
 * -> their values, as LatentReplay._latents (memory.decode(memory.encode(x))); the codes are unpacked, so reading
 * them as 8-bit codes reads each as it is. */
static void as_stored(const tcl_learner *L, float *x) {
    const tcl_learner_def *d = L->def;
    if (!d->quantize_new || !L->c.calibrated) return;
    uint8_t *codes = (uint8_t *)L->scratch_a; /* free once the latent is loaded */
    tcl_quantize_codes(x, (size_t)d->latent_size, d->bits, d->n_chan, d->chan_size, L->scale, L->zero, codes);
    tcl_dequantize_codes(codes, 0, (size_t)d->latent_size, 8, d->n_chan, d->chan_size, L->scale, L->zero, x);
}

int32_t tcl_learner_predict(tcl_learner *L, const int8_t *input) {
    const tcl_learner_def *d = L->def;
    const tcl_net net = net_of(L, 0.0f);
    load_latent(L, tcl_learner_latent(L, input), L->arena + net.input);
    as_stored(L, L->arena + net.input);
    tcl_net_eval_stats(&net);
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

/* Per class, whether it is among the first n labels. */
static void mark_classes(const uint8_t *labels, int32_t n, uint8_t *present) {
    for (int32_t i = 0; i < n; ++i) present[labels[i]] = 1;
}

/* (new, replayed) samples per mini-batch: TrainConfig.mix (Learner._mix for class_balanced: replayed share = classes
 * only in memory / all classes present; the host rounds b * (1 - k / m) in float64, which no integer formula
 * repeats at every tie, so the exporter tabulates the host's own result for every k < m <= n_classes) */
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
    if (d->mix == TCL_MIX_CLASS_BALANCED) {
        uint8_t in_memory[256] = {0}, present[256] = {0};
        mark_classes(L->labels, n_mem, in_memory);
        mark_classes(L->new_labels, n_new, present);
        int32_t only_memory = 0, all = 0;
        for (int32_t k = 0; k < 256; ++k) {
            only_memory += in_memory[k] && !present[k];
            all += in_memory[k] || present[k];
        }
        c = d->mix_cur[all * (all - 1) / 2 + only_memory];
    }
    c = tcl_imin(tcl_imax(c, 1), b - 1);
    *cur = c;
    *rep = b - c;
}

/* A mini-batch for tcl_net_train_step: samples [0, nb) are new ones (idx_new[start + i]), the rest replayed slots
 * (idx_slots[i - nb]). */
typedef struct {
    const tcl_learner *L;
    int32_t start, nb;
} batch;

static int32_t batch_sample(void *ctx, int32_t i, float *x) {
    const batch *b = (const batch *)ctx;
    const tcl_learner *L = b->L;
    const tcl_learner_def *d = L->def;
    if (i < b->nb) {
        const int32_t j = L->idx_new[b->start + i];
        load_latent(L, L->new_codes + (size_t)j * (size_t)d->latent_size, x);
        as_stored(L, x);
        return L->new_labels[j];
    }
    const size_t slot = L->idx_slots[i - b->nb];
    if (d->bits == 32) /* an fp32 memory holds the latents' float32 values */
        memcpy(x, fp32_slot(L, slot), sizeof(float) * (size_t)d->latent_size);
    else
        tcl_dequantize_codes(L->codes, slot * (size_t)d->latent_size, (size_t)d->latent_size, d->bits, d->n_chan,
                             d->chan_size, L->scale, L->zero, x);
    return L->labels[slot];
}

static void calibrate(tcl_learner *L, int32_t h);

static void train(tcl_learner *L, float lr) {
    const tcl_learner_def *d = L->def;
    tcl_net net = net_of(L, lr);
    int32_t cur, rep;
    if (d->quantize_new && !L->c.calibrated) {
        /* LatentReplay._latents: the quantizer from m = min(n_new, N) evenly spaced new latents, i (n_new - 1) /
         * (m - 1) rounded down (< 2^32 for n_new < 65536) */
        const int32_t m = tcl_imin(L->n_new, d->capacity);
        for (int32_t i = 0; i < m; ++i)
            L->idx_new[i] = (uint16_t)(m > 1 ? (uint32_t)i * (uint32_t)(L->n_new - 1) / (uint32_t)(m - 1) : 0u);
        calibrate(L, m);
    }
    mix(L, &cur, &rep);
    for (int32_t i = 0; i < d->n_momentum; ++i) /* a new optimizer per experience: momentum restarts */
        memset(L->arena + d->momentum[i].offset, 0, sizeof(float) * (size_t)d->momentum[i].count);
    for (int32_t epoch = 0; epoch < d->epochs; ++epoch) {
        tcl_rng_permutation(&L->c.rng, L->idx_new, L->n_new);
        for (int32_t start = 0; start < L->n_new; start += cur) {
            const int32_t nb = tcl_imin(cur, L->n_new - start);
            /* the replayed slots are drawn before any sample is learned, as the host draws them */
            const int32_t replace = rep > L->c.size;
            if (!replace && rep) tcl_rng_sample(&L->c.rng, L->idx_slots, L->c.size, rep);
            if (replace)
                for (int32_t k = 0; k < rep; ++k) L->idx_slots[k] = (uint16_t)tcl_rng_below(&L->c.rng,
                                                                                            (uint32_t)L->c.size);
            batch b = {L, start, nb};
            net.brn_step = ++L->c.steps;
            tcl_net_train_step(&net, batch_sample, &b, nb + rep);
        }
    }
}

/* The memory's quantizer, once, from the first h > 0 new samples idx_new[0, h) (the first written, or those
 * LatentReplay._latents picks): max range, zero point 0 (the latents are >= 0). An fp32 memory has none. */
static void calibrate(tcl_learner *L, int32_t h) {
    const tcl_learner_def *d = L->def;
    if (L->c.calibrated || h <= 0 || d->bits == 32) return;
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

/* New sample j (its latent requantized to the memory's codes, or its float32 values in an fp32 memory) into `slot`. */
static void store(tcl_learner *L, int32_t j, int32_t slot) {
    const tcl_learner_def *d = L->def;
    float *x = L->arena + d->layers[0].x; /* free between training steps */
    uint8_t *codes = (uint8_t *)L->scratch_a;
    load_latent(L, L->new_codes + (size_t)j * (size_t)d->latent_size, x);
    if (d->bits == 32) {
        memcpy(fp32_slot(L, (size_t)slot), x, sizeof(float) * (size_t)d->latent_size);
    } else {
        tcl_quantize_codes(x, (size_t)d->latent_size, d->bits, d->n_chan, d->chan_size, L->scale, L->zero, codes);
        tcl_write_codes(L->codes, (size_t)slot * (size_t)d->latent_size, codes, (size_t)d->latent_size, d->bits);
    }
    L->labels[slot] = L->new_labels[j];
}

/* Pellegrini et al.'s rule (memory.nicv2_policy): h = min(N / (i + 1), n_new) random new latents (at least the
 * free slots' worth) overwrite the free slots first, then h random filled ones. */
static void nicv2(tcl_learner *L) {
    const tcl_learner_def *d = L->def;
    const int32_t n_new = L->n_new, size = L->c.size;
    int32_t h = tcl_imin(d->capacity / (L->c.experiences + 1), n_new);
    h = tcl_imax(h, tcl_imin(d->capacity - size, n_new));
    tcl_rng_sample(&L->c.rng, L->idx_new, n_new, h);
    const int32_t n_free = tcl_imin(d->capacity, size + h) - size, rest = h - n_free;
    if (rest > 0) tcl_rng_sample(&L->c.rng, L->idx_slots, size, rest);
    calibrate(L, h);
    for (int32_t k = 0; k < h; ++k) store(L, L->idx_new[k], k < n_free ? size + k : L->idx_slots[k - n_free]);
    L->c.size = size + n_free;
}

/* pool[0..k) = k of the n values of pool in random order: rng.choice(pool, k, replace=False) as
 * tinycl/device/rng.py draws it (tcl_rng_sample's swaps, made on the values instead of their positions) */
static void choose(tcl_rng *rng, uint16_t *pool, int32_t n, int32_t k) {
    for (int32_t i = 0; i < k; ++i) {
        const int32_t j = i + (int32_t)tcl_rng_below(rng, (uint32_t)(n - i));
        const uint16_t t = pool[i];
        pool[i] = pool[j];
        pool[j] = t;
    }
}

/* memory.class_balanced_policy: quota = N / (classes in memory or new); each class over its quota frees random slots
 * (classes in ascending order), each new class takes up to quota - held random new samples (ascending order); the
 * chosen samples go to the freed and free slots in ascending order, as many as both allow. */
static void class_balanced(tcl_learner *L) {
    const tcl_learner_def *d = L->def;
    const int32_t n_new = L->n_new, size = L->c.size;
    uint8_t in_memory[256] = {0}, present[256] = {0};
    uint16_t held[256] = {0};
    mark_classes(L->labels, size, in_memory);
    mark_classes(L->new_labels, n_new, present);
    int32_t all = 0;
    for (int32_t c = 0; c < 256; ++c) all += in_memory[c] || present[c];
    if (all == 0) return;
    const int32_t quota = d->capacity / all;
    for (int32_t i = 0; i < size; ++i) held[L->labels[i]]++;
    int32_t n_freed = 0; /* idx_slots[0, n_freed): freed slots; each class's slots are listed after them */
    for (int32_t c = 0; c < 256; ++c) {
        if (held[c] <= quota) continue;
        int32_t n = 0;
        for (int32_t i = 0; i < size; ++i)
            if (L->labels[i] == c) L->idx_slots[n_freed + n++] = (uint16_t)i;
        choose(&L->c.rng, L->idx_slots + n_freed, n, n - quota);
        n_freed += n - quota;
    }
    int32_t h = 0; /* idx_new[0, h): the chosen new samples */
    for (int32_t c = 0; c < 256; ++c) {
        if (!present[c]) continue;
        int32_t n = 0;
        for (int32_t i = 0; i < n_new; ++i)
            if (L->new_labels[i] == c) L->idx_new[h + n++] = (uint16_t)i;
        const int32_t want = tcl_imin(tcl_imax(quota - held[c], 0), n);
        choose(&L->c.rng, L->idx_new + h, n, want);
        h += want;
    }
    for (int32_t i = 1; i < n_freed; ++i) { /* ascending (insertion sort: at most N slots, once per experience) */
        const uint16_t v = L->idx_slots[i];
        int32_t k = i;
        for (; k > 0 && L->idx_slots[k - 1] > v; --k) L->idx_slots[k] = L->idx_slots[k - 1];
        L->idx_slots[k] = v;
    }
    h = tcl_imin(h, n_freed + d->capacity - size);
    calibrate(L, h);
    for (int32_t k = 0; k < h; ++k) store(L, L->idx_new[k], k < n_freed ? L->idx_slots[k] : size + k - n_freed);
    L->c.size = tcl_imax(size, size + h - n_freed);
}

void tcl_learner_end_experience(tcl_learner *L) {
    const tcl_learner_def *d = L->def;
    train(L, L->c.experiences == 0 ? d->first_lr : d->lr);
    if (d->policy == TCL_POLICY_CLASS_BALANCED) class_balanced(L);
    else nicv2(L);
    L->c.seen += L->n_new;
    L->c.experiences += 1;
    L->n_new = 0;
}
