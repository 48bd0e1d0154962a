/* Power loss during tcl_save, at every byte: a test harness linked with an exported project's src/ (not its main.c
 * or platform files). The flash is an array; a write budget stops writing after `budget` bytes, as a power cut
 * would. For every cut point: start from a flash holding the old state, save the new state with the cut, reboot
 * (tcl_init + tcl_restore) and check the learner holds exactly the old or the new state; then the learner keeps
 * learning from each outcome and ends where an uninterrupted learner from that state ends. Also: a corrupted slot
 * is rejected by its CRC (the other slot is taken), and with both slots corrupt tcl_restore keeps the learner as
 * it was. Prints one line of counts; exit status 0 only if every check held. */
#include <stdio.h>
#include <string.h>

#include "tcl_learner.h"
#include "tcl_model.h"

static uint8_t flash[TCL_STATE_REGION_BYTES], old_image[TCL_STATE_REGION_BYTES], new_image[TCL_STATE_REGION_BYTES];
static uint32_t budget = 0xffffffffu, written;
static int8_t input[TCL_INPUT_SIZE];
static tcl_rng data_rng;

int32_t tcl_flash_read(uint32_t offset, uint8_t *data, uint32_t n) {
    if (offset > sizeof flash || n > sizeof flash - offset) return -1;
    memcpy(data, flash + offset, n);
    return 0;
}

int32_t tcl_flash_write(uint32_t offset, const uint8_t *data, uint32_t n) {
    if (offset > sizeof flash || n > sizeof flash - offset) return -1;
    for (uint32_t i = 0; i < n; ++i) {
        if (written >= budget) return -1; /* the power is gone: nothing more reaches the flash */
        flash[offset + i] = data[i];
        ++written;
    }
    return 0;
}

static void experience(int32_t n) { /* n random inputs with random labels */
    for (int32_t k = 0; k < n; ++k) {
        for (int32_t i = 0; i < TCL_INPUT_SIZE; ++i) input[i] = (int8_t)(tcl_rng_below(&data_rng, 256) - 128);
        tcl_learn(input, (int32_t)tcl_rng_below(&data_rng, TCL_N_CLASSES));
    }
    tcl_end_experience();
}

static uint32_t continued(uint32_t seed) { /* the state CRC after one more experience */
    tcl_rng_seed(&data_rng, seed);
    experience(5);
    return tcl_state_crc();
}

int main(void) {
    int failures = 0;
    tcl_rng_seed(&data_rng, 1);
    tcl_init();
    experience(12);
    if (tcl_save() != 0) return 1; /* slot 0: the first state */
    experience(12);
    if (tcl_save() != 0) return 1; /* slot 1 */
    const uint32_t old_crc = tcl_state_crc();
    memcpy(old_image, flash, sizeof flash);
    experience(12);
    const uint32_t new_crc = tcl_state_crc();
    written = 0;
    if (tcl_save() != 0) return 1;
    const uint32_t total = written; /* bytes one save writes */
    memcpy(new_image, flash, sizeof flash);
    const uint32_t after_new = continued(7);
    memcpy(flash, old_image, sizeof flash);
    tcl_init();
    if (tcl_restore() != 0 || tcl_state_crc() != old_crc) return 1;
    const uint32_t after_old = continued(7);
    uint32_t n_old = 0, n_new = 0, torn = 0, cont_old = 0, cont_new = 0;
    for (uint32_t cut = 0; cut <= total; ++cut) {
        memcpy(flash, new_image, sizeof flash); /* the learner in RAM holds the new state ... */
        tcl_init();
        tcl_restore();
        memcpy(flash, old_image, sizeof flash); /* ... and the flash the old one when the save starts */
        budget = cut;
        written = 0;
        const int32_t saved = tcl_save();
        budget = 0xffffffffu;
        tcl_init(); /* reboot */
        if (tcl_restore() != 0) {
            ++torn;
            continue;
        }
        const uint32_t crc = tcl_state_crc();
        if (crc == old_crc) ++n_old;
        else if (crc == new_crc) ++n_new;
        else ++torn;
        if ((saved == 0) != (cut == total)) ++failures; /* only the complete save reports success */
        /* keep learning from the first and the last cut of each outcome */
        if (crc == old_crc && (n_old == 1 || cut == total - 1)) cont_old += continued(7) == after_old;
        if (crc == new_crc && (n_new == 1 || cut == total)) cont_new += continued(7) == after_new;
    }
    if (n_new == 0 || torn || n_old + n_new != total + 1 || cont_old != 2 || cont_new != 1 + (n_new > 1))
        ++failures;
    /* a corrupt newest slot: restore takes the other; both corrupt: the learner keeps its state */
    uint32_t newest_base = 0;
    memcpy(flash, old_image, sizeof flash);
    tcl_init();
    tcl_restore();
    const uint32_t slot = tcl_slot_nbytes();
    newest_base = slot; /* the second save went to slot 1 */
    flash[newest_base + 100] ^= 0x40u;
    tcl_init();
    const int32_t r1 = tcl_restore();
    const uint32_t fallback = tcl_state_crc();
    flash[100] ^= 0x01u;
    experience(3);
    const uint32_t before = tcl_state_crc();
    const int32_t r2 = tcl_restore();
    const int corrupt_ok = r1 == 0 && fallback != old_crc && r2 == TCL_ERR_NO_STATE && tcl_state_crc() == before;
    failures += !corrupt_ok;
    printf("save bytes %u cuts %u old %u new %u torn %u continued %u+%u corrupt %s\n", (unsigned)total,
           (unsigned)(total + 1), (unsigned)n_old, (unsigned)n_new, (unsigned)torn, (unsigned)cont_old,
           (unsigned)cont_new, corrupt_ok ? "rejected" : "ACCEPTED");
    return failures ? 1 : 0;
}
