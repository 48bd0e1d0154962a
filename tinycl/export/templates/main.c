/* Streams a scenario through the learner and prints what it predicts after each experience.
 *
 * scenario.bin (written by tinycl export, little-endian): "TCLS", version 1, input size, number of experiences,
 * number of test sets (uint32 each); then every test set and then every experience as a uint32 count followed by
 * that many records of (input codes, one label byte). After each experience the learner is saved to flash and
 * every test set is predicted; one line gives the correct counts (all test sets seen so far, then each set) and
 * CRC-32s of the predictions, the adaptive weights, the replay memory and the saved state. */
#include "platform.h"
#include "tcl_learner.h"
#include "tcl_model.h"

#define MAX_SETS 64

static uint8_t record[TCL_INPUT_SIZE + 1];
static char line[96 + 24 * MAX_SETS];
static uint32_t used;

static void put(const char *s) {
    while (*s && used + 1 < sizeof line) line[used++] = *s++;
    line[used] = 0;
}

static void put_u(uint32_t v) {
    char buf[11];
    int n = 0;
    do buf[n++] = (char)('0' + v % 10u); while ((v /= 10u) != 0 && n < 10);
    while (n) {
        char c[2] = {buf[--n], 0};
        put(c);
    }
}

static void put_x(uint32_t v) {
    char c[9];
    for (int i = 7; i >= 0; --i, v >>= 4) c[i] = "0123456789abcdef"[v & 15u];
    c[8] = 0;
    put(c);
}

static void flush(void) {
    put("\n");
    plat_print(line);
    used = 0;
}

static void fail(const char *why) {
    put("error: ");
    put(why);
    flush();
    plat_exit(1);
}

static uint32_t read_u32(void) {
    uint8_t b[4];
    if (plat_read(b, 4) != 0) fail("scenario.bin is truncated");
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void read_record(void) {
    if (plat_read(record, sizeof record) != 0) fail("scenario.bin is truncated");
}

int main(int argc, char **argv) {
    static uint32_t correct[MAX_SETS], total[MAX_SETS];
    plat_init(argc, argv);
    if (plat_open(argc > 1 ? argv[1] : "scenario.bin") != 0) fail("cannot open the scenario file");
    const uint32_t magic = read_u32(), version = read_u32(), size = read_u32(), n_exp = read_u32(), n_sets = read_u32();
    if (magic != 0x534c4354u || version != 1u) fail("not a tinycl scenario file (version 1)");
    if (size != TCL_INPUT_SIZE) fail("the scenario's input size is not this learner's");
    if (n_sets > MAX_SETS) fail("too many test sets");
    uint32_t pos = 20;
    for (uint32_t j = 0; j < n_sets; ++j) { /* skip the test sets to find the first experience */
        if (plat_seek(pos) != 0) fail("scenario.bin is truncated");
        total[j] = read_u32();
        pos += 4u + total[j] * (uint32_t)sizeof record;
    }
    tcl_init();
    if (argc > 2 && argv[2][0] == 'r' && tcl_restore() == 0) plat_print("restored the saved state\n");
    for (uint32_t e = 0; e < n_exp; ++e) {
        if (plat_seek(pos) != 0) fail("scenario.bin is truncated");
        const uint32_t n = read_u32();
        const uint32_t t0 = plat_instructions();
        for (uint32_t k = 0; k < n; ++k) {
            read_record();
            if (tcl_learn((const int8_t *)record, record[TCL_INPUT_SIZE]) != 0) fail("tcl_learn refused a sample");
        }
        const uint32_t t1 = plat_instructions();
        tcl_end_experience();
        const uint32_t t2 = plat_instructions();
        if (tcl_save() != 0) fail("tcl_save failed");
        const uint32_t t3 = plat_instructions();
        pos += 4u + n * (uint32_t)sizeof record;
        uint32_t crc = 0, seen_correct = 0, seen_total = 0, p0 = 0, p1 = 0, n_pred = 0;
        uint32_t at = 20;
        for (uint32_t j = 0; j < n_sets; ++j) {
            if (plat_seek(at + 4u) != 0) fail("scenario.bin is truncated");
            correct[j] = 0;
            for (uint32_t k = 0; k < total[j]; ++k) {
                read_record();
                p0 = plat_instructions();
                const uint8_t pred = (uint8_t)tcl_predict((const int8_t *)record);
                p1 += plat_instructions() - p0;
                ++n_pred;
                correct[j] += pred == record[TCL_INPUT_SIZE];
                crc = tcl_crc32(crc, &pred, 1);
            }
            if (j <= e) {
                seen_correct += correct[j];
                seen_total += total[j];
            }
            at += 4u + total[j] * (uint32_t)sizeof record;
        }
        put("experience ");
        put_u(e);
        put(": seen ");
        put_u(seen_correct);
        put("/");
        put_u(seen_total);
        put(" tests");
        for (uint32_t j = 0; j < n_sets; ++j) {
            put(" ");
            put_u(correct[j]);
            put("/");
            put_u(total[j]);
        }
        put(" predictions ");
        put_x(crc);
        put(" weights ");
        put_x(tcl_weights_crc());
        put(" memory ");
        put_x(tcl_memory_crc());
        put(" state ");
        put_x(tcl_state_crc());
        flush();
        if (plat_counting()) {
            put("# instructions: learn ");
            put_u(t1 - t0);
            put(" end_experience ");
            put_u(t2 - t1);
            put(" save ");
            put_u(t3 - t2);
            put(" predict ");
            put_u(n_pred ? p1 / n_pred : 0);
            put(" per input");
            flush();
        }
    }
    plat_exit(0);
    return 0;
}
