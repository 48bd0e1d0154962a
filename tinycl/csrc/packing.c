/* Q-bit codes (1 <= Q <= 8) packed LSB first: code k occupies bits [k*Q, (k+1)*Q) of the buffer, bit 0 being
 * the least significant bit of byte 0; a code spans at most two bytes. Same layout as tinycl/quant/packing.py. */
#include <string.h>

#include "internal.h"

size_t tcl_packed_nbytes(size_t count, int32_t bits) { return (count * (size_t)bits + 7u) / 8u; }

static inline unsigned read_one(const uint8_t *packed, size_t k, int32_t bits) {
    const size_t pos = k * (size_t)bits, byte = pos >> 3;
    const unsigned off = (unsigned)(pos & 7u);
    unsigned word = packed[byte];
    if (off + (unsigned)bits > 8u) word |= (unsigned)packed[byte + 1] << 8;
    return (word >> off) & ((1u << bits) - 1u);
}

static inline void write_one(uint8_t *packed, size_t k, unsigned code, int32_t bits) {
    const size_t pos = k * (size_t)bits, byte = pos >> 3;
    const unsigned off = (unsigned)(pos & 7u);
    const unsigned mask = ((1u << bits) - 1u) << off, value = (code << off) & mask;
    packed[byte] = (uint8_t)((packed[byte] & ~mask) | value);
    if (off + (unsigned)bits > 8u)
        packed[byte + 1] = (uint8_t)((packed[byte + 1] & ~(mask >> 8)) | (value >> 8));
}

void tcl_pack_codes(const uint8_t *codes, size_t count, int32_t bits, uint8_t *packed) {
    memset(packed, 0, tcl_packed_nbytes(count, bits)); /* the unused high bits of the last byte stay 0 */
    tcl_write_codes(packed, 0, codes, count, bits);
}

void tcl_unpack_codes(const uint8_t *packed, size_t count, int32_t bits, uint8_t *codes) {
    tcl_read_codes(packed, 0, count, bits, codes);
}

void tcl_write_codes(uint8_t *packed, size_t start, const uint8_t *codes, size_t count, int32_t bits) {
    for (size_t i = 0; i < count; ++i) write_one(packed, start + i, codes[i], bits);
}

void tcl_read_codes(const uint8_t *packed, size_t start, size_t count, int32_t bits, uint8_t *codes) {
    for (size_t i = 0; i < count; ++i) codes[i] = (uint8_t)read_one(packed, start + i, bits);
}

void tcl_dequantize_codes(const uint8_t *packed, size_t start, size_t count, int32_t bits, int32_t n_chan,
                          int32_t chan_size, const float *scale, const int32_t *zero, float *out) {
    for (size_t i = 0; i < count; ++i) {
        const size_t c = (i / (size_t)chan_size) % (size_t)n_chan;
        out[i] = scale[c] * (float)((int32_t)read_one(packed, start + i, bits) - zero[c]);
    }
}
