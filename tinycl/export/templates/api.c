
/* ---- the API of tcl_model.h on the one learner above ---- */
void tcl_init(void) { tcl_learner_init(&learner); }
int32_t tcl_predict(const int8_t *input) { return tcl_learner_predict(&learner, input); }
int32_t tcl_learn(const int8_t *input, int32_t label) { return tcl_learner_learn(&learner, input, label); }
void tcl_end_experience(void) { tcl_learner_end_experience(&learner); }
int32_t tcl_save(void) { return tcl_learner_save(&learner); }
int32_t tcl_restore(void) { return tcl_learner_restore(&learner); }
uint32_t tcl_slot_nbytes(void) { return tcl_learner_slot_nbytes(&learner); }
uint32_t tcl_state_crc(void) { return tcl_learner_state_crc(&learner); }

uint32_t tcl_weights_crc(void) {
    uint32_t crc = 0;
    for (int32_t i = 0; i < DEF.n_params; ++i)
        crc = tcl_crc32(crc, (const uint8_t *)(arena + PARAMS[i].offset), sizeof(float) * (size_t)PARAMS[i].count);
    return crc;
}

uint32_t tcl_memory_crc(void) {
    uint32_t crc = tcl_crc32(0, (const uint8_t *)scale, sizeof scale);
    crc = tcl_crc32(crc, (const uint8_t *)zero, sizeof zero);
    crc = tcl_crc32(crc, labels, sizeof labels);
    return tcl_crc32(crc, codes, sizeof codes);
}
