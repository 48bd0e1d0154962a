/* tcl_learner_save / tcl_learner_restore: the learner's state in two flash slots with an atomic commit (see
 * tcl_learner.h). The payload is a sequence of fields read straight from the learner's buffers, so saving needs
 * no copy of the state in RAM; restoring checks a slot's CRC over the flash before it touches the learner. */
#include <string.h>

#include "tcl_learner.h"

#define TCL_STATE_MAGIC 0x4c435454u /* "TTCL" */
#define HEADER_BYTES 20u
#define CHUNK 64u

typedef struct {
    uint32_t seq, length, payload_crc, header_crc, magic; /* the magic is written last */
} header;

/* Field i of the payload: its bytes in the learner, or 0 past the last field. */
static uint32_t field(const tcl_learner *L, int32_t i, uint8_t **ptr) {
    const tcl_learner_def *d = L->def;
    if (i == 0) {
        *ptr = (uint8_t *)&L->c;
        return (uint32_t)sizeof L->c;
    }
    if (i <= d->n_params) {
        const tcl_param *p = &d->params[i - 1];
        *ptr = (uint8_t *)(L->arena + p->offset);
        return (uint32_t)(sizeof(float) * (size_t)p->count);
    }
    switch (i - d->n_params) {
    case 1: *ptr = (uint8_t *)L->scale; return (uint32_t)(sizeof(float) * (size_t)d->n_chan);
    case 2: *ptr = (uint8_t *)L->zero; return (uint32_t)(sizeof(int32_t) * (size_t)d->n_chan);
    case 3: *ptr = L->labels; return (uint32_t)d->capacity;
    case 4:
        *ptr = L->codes;
        return (uint32_t)tcl_packed_nbytes((size_t)d->capacity * (size_t)d->latent_size, d->bits);
    default: return 0;
    }
}

uint32_t tcl_learner_state_nbytes(const tcl_learner *L) {
    uint32_t total = 0, n;
    uint8_t *p;
    for (int32_t i = 0; (n = field(L, i, &p)) != 0; ++i) total += n;
    return total;
}

uint32_t tcl_learner_slot_nbytes(const tcl_learner *L) { return (tcl_learner_state_nbytes(L) + HEADER_BYTES + 7u) & ~7u; }

uint32_t tcl_learner_state_crc(const tcl_learner *L) {
    uint32_t crc = 0, n;
    uint8_t *p;
    for (int32_t i = 0; (n = field(L, i, &p)) != 0; ++i) crc = tcl_crc32(crc, p, n);
    return crc;
}

static uint32_t header_crc(const header *h) { return tcl_crc32(0, (const uint8_t *)h, 12); }

/* 1 if slot s holds a complete state (magic, length, both CRCs over what flash holds), with its header in *h */
static int32_t valid_slot(const tcl_learner *L, uint32_t s, header *h) {
    const uint32_t base = s * tcl_learner_slot_nbytes(L), length = tcl_learner_state_nbytes(L);
    if (tcl_flash_read(base + length, (uint8_t *)h, HEADER_BYTES) != 0) return 0;
    if (h->magic != TCL_STATE_MAGIC || h->length != length || h->header_crc != header_crc(h)) return 0;
    uint8_t buf[CHUNK];
    uint32_t crc = 0;
    for (uint32_t off = 0; off < length; off += CHUNK) {
        const uint32_t n = length - off < CHUNK ? length - off : CHUNK;
        if (tcl_flash_read(base + off, buf, n) != 0) return 0;
        crc = tcl_crc32(crc, buf, n);
    }
    return crc == h->payload_crc;
}

/* the slot holding the newest valid state (-1: none) and its sequence number */
static int32_t newest(const tcl_learner *L, uint32_t *seq) {
    header h[2];
    const int32_t ok0 = valid_slot(L, 0, &h[0]), ok1 = valid_slot(L, 1, &h[1]);
    if (!ok0 && !ok1) return -1;
    /* sequence numbers compared modulo 2^32: the slot written last is ahead */
    const int32_t s = ok0 && ok1 ? ((int32_t)(h[1].seq - h[0].seq) > 0 ? 1 : 0) : (ok1 ? 1 : 0);
    *seq = h[s].seq;
    return s;
}

int32_t tcl_learner_save(tcl_learner *L) {
    uint32_t seq = 0;
    const int32_t last = newest(L, &seq);
    const uint32_t s = last == 0 ? 1u : 0u, base = s * tcl_learner_slot_nbytes(L);
    const uint32_t length = tcl_learner_state_nbytes(L);
    header h;
    memset(&h, 0, sizeof h);
    /* 1. the target slot stops being valid before any of its payload changes */
    if (tcl_flash_write(base + length + 16u, (const uint8_t *)&h.magic, 4) != 0) return TCL_ERR_FLASH;
    /* 2. the payload, field by field */
    uint32_t off = 0, n, crc = 0;
    uint8_t *p;
    for (int32_t i = 0; (n = field(L, i, &p)) != 0; ++i) {
        if (tcl_flash_write(base + off, p, n) != 0) return TCL_ERR_FLASH;
        crc = tcl_crc32(crc, p, n);
        off += n;
    }
    /* 3. the header, its magic last: only a complete write makes the slot valid */
    h.seq = last < 0 ? 1u : seq + 1u;
    h.length = length;
    h.payload_crc = crc;
    h.header_crc = header_crc(&h);
    if (tcl_flash_write(base + length, (const uint8_t *)&h, 16) != 0) return TCL_ERR_FLASH;
    h.magic = TCL_STATE_MAGIC;
    if (tcl_flash_write(base + length + 16u, (const uint8_t *)&h.magic, 4) != 0) return TCL_ERR_FLASH;
    return TCL_OK;
}

int32_t tcl_learner_restore(tcl_learner *L) {
    uint32_t seq;
    const int32_t s = newest(L, &seq);
    if (s < 0) return TCL_ERR_NO_STATE; /* nothing valid: the learner keeps its state */
    const uint32_t base = (uint32_t)s * tcl_learner_slot_nbytes(L);
    uint32_t off = 0, n;
    uint8_t *p;
    for (int32_t i = 0; (n = field(L, i, &p)) != 0; ++i) {
        if (tcl_flash_read(base + off, p, n) != 0) return TCL_ERR_FLASH; /* read after a CRC check: not expected */
        off += n;
    }
    L->n_new = 0;
    return TCL_OK;
}
