/* The continual learner as firmware: an int8 frozen stage, a replay memory of Q-bit latents, and the adaptive
 * stage's SGD step (net.c), all in static buffers; tinycl export generates the tables (tcl_model.c) and the
 * buffers, and the application calls the API of tcl_model.h (tcl_init, tcl_predict, tcl_learn, ...).
 *
 * What a learner does is the host learner's `LatentReplay` in device mode (tinycl/learners), step for step:
 * tcl_learner_learn runs the frozen stage on one input and keeps its int8 latent; tcl_learner_end_experience trains
 * `epochs` passes over the experience's latents in mini-batches of `cur` new + `batch_size - cur` replayed ones
 * (TrainConfig.mix: ratio, Pellegrini et al.'s rule or class-balanced; momentum restarts per experience; batch
 * renormalization layers in train mode), then inserts new latents into the memory (memory.nicv2_policy or
 * memory.class_balanced_policy), drawing every random choice from tcl_rng as tinycl/device/rng.py does. */
#ifndef TCL_LEARNER_H
#define TCL_LEARNER_H

#include "tinycl.h"

enum { TCL_I8_CONV2D = 1, TCL_I8_DEPTHWISE = 2, TCL_I8_LINEAR = 3, TCL_I8_AVGPOOL = 4, TCL_I8_MAXPOOL = 5,
       TCL_I8_REQUANTIZE = 6 };

/* One layer of the int8 frozen stage (codes are int8; uint8 models run shifted by -128, see int8.c). */
typedef struct {
    int32_t op;            /* TCL_I8_* */
    tcl_conv_shape shape;  /* input (c, h, w) -> output (c, h, w); linear: inputs flattened, c_out outputs */
    tcl_requant q;         /* weighted layers, requantize, and a pool's requantize after pooling */
    const int8_t *w;       /* weights (OIHW, (C,1,kh,kw) or (out, in)) */
    const int32_t *bias;   /* NULL: none */
    int32_t act_min, act_max, code_offset; /* pools: clamp in the input's codes; 128 for a uint8 model */
    int32_t then;          /* pools: 1 to requantize by q after pooling */
    int32_t n_out;         /* output codes */
} tcl_i8_layer;

/* A parameter tensor of the adaptive stage: arena offset (floats), size and initial values (NULL: zeros). */
typedef struct {
    int32_t offset, count;
    const float *init;
} tcl_param;

enum { TCL_MIX_RATIO = 0, TCL_MIX_PELLEGRINI = 1, TCL_MIX_CLASS_BALANCED = 2 };
enum { TCL_POLICY_NICV2 = 0, TCL_POLICY_CLASS_BALANCED = 1 };

/* What tcl_save keeps besides the weights and the memory; steps: training steps so far (batch renormalization's
 * warm-up, Learner.steps_). */
typedef struct {
    tcl_rng rng;
    int32_t size, seen, experiences, calibrated, steps;
} tcl_counters;

typedef struct {
    /* frozen stage: input codes -> latent codes; latent value = (code - latent_zero) * latent_scale */
    int32_t n_frozen;
    const tcl_i8_layer *frozen;
    int32_t input_size, latent_size, latent_zero;
    float latent_scale;
    /* adaptive stage (net.c records, offsets into the arena) */
    int32_t n_layers;
    const tcl_layer *layers;
    int32_t n_params, n_momentum, n_classes;
    const tcl_param *params, *momentum; /* params: weights, biases and running statistics, in the state's order */
    /* training: the host TrainConfig */
    float lr, first_lr, momentum_factor, weight_decay;
    int32_t epochs, batch_size, mix, ratio_cur; /* ratio_cur: new samples per mini-batch for TCL_MIX_RATIO */
    const uint16_t *mix_cur; /* TCL_MIX_CLASS_BALANCED: new samples per mini-batch when k of the m classes present
                              * are only in memory, at [m (m - 1) / 2 + k] for 1 <= m <= n_classes; else NULL */
    float brn_eps, brn_momentum, r_limit, d_limit; /* batch renormalization (tcl_net) */
    int32_t brn_warmup;
    /* replay memory: capacity slots of latent_size codes of `bits` bits; n_chan scales (chan_size values each) */
    int32_t capacity, bits, n_chan, chan_size, max_new, policy; /* policy: TCL_POLICY_* */
    int32_t quantize_new; /* memory.new_latents "quantized": new latents reach the adaptive stage in the memory's
                           * form (LatentReplay._latents), the quantizer calibrated on experience 0 before training */
    /* the state tcl_learner_init starts from (a fresh learner, or a host run's, tinycl export --from); NULL codes
     * and labels: an empty memory */
    const tcl_counters *init_counters;
    const uint8_t *init_codes, *init_labels;
    const float *init_scale;
    const int32_t *init_zero;
} tcl_learner_def;

typedef struct {
    const tcl_learner_def *def;
    float *arena;                  /* the planned training arena (weights, gradients, momentum, one sample) */
    int8_t *scratch_a, *scratch_b; /* the frozen stage's ping-pong activations */
    uint8_t *codes, *labels;       /* replay memory: packed codes, labels */
    float *scale;                  /* replay quantizer, n_chan each */
    int32_t *zero;
    int8_t *new_codes;             /* this experience's latents (max_new x latent_size) and labels */
    uint8_t *new_labels;
    uint16_t *idx_new, *idx_slots; /* max_new and capacity indices */
    int32_t n_new;
    tcl_counters c;
} tcl_learner;

enum { TCL_OK = 0, TCL_ERR_FULL = -1, TCL_ERR_LABEL = -2, TCL_ERR_FLASH = -3, TCL_ERR_NO_STATE = -4 };

void tcl_learner_init(tcl_learner *L);
/* The int8 latent codes of one input (input_size int8 codes), in one of the scratch buffers. */
const int8_t *tcl_learner_latent(tcl_learner *L, const int8_t *input);
int32_t tcl_learner_predict(tcl_learner *L, const int8_t *input);
int32_t tcl_learner_learn(tcl_learner *L, const int8_t *input, int32_t label);
void tcl_learner_end_experience(tcl_learner *L);

/* State in flash: two slots, each a header {seq, length, payload crc, header crc, magic} after its payload
 * (counters, weights, memory). tcl_learner_save writes the slot that does not hold the newest valid state: first
 * it invalidates that slot's magic, then writes the payload, then the header with the magic last, so a cut at any
 * byte leaves either the old state or the new one valid. tcl_learner_restore loads the valid slot with the higher
 * sequence number after checking both CRCs; if none is valid it changes nothing. */
uint32_t tcl_learner_state_nbytes(const tcl_learner *L); /* payload bytes */
uint32_t tcl_learner_slot_nbytes(const tcl_learner *L);  /* payload + header, rounded up to 8 */
uint32_t tcl_learner_state_crc(const tcl_learner *L);    /* CRC-32 of the payload as it would be saved */
int32_t tcl_learner_save(tcl_learner *L);
int32_t tcl_learner_restore(tcl_learner *L);

/* The flash region of 2 slots, supplied by the platform: 0 on success. */
int32_t tcl_flash_read(uint32_t offset, uint8_t *data, uint32_t n);
int32_t tcl_flash_write(uint32_t offset, const uint8_t *data, uint32_t n);

#endif /* TCL_LEARNER_H */
