"""Bit packing of Q-bit codes into bytes: code k occupies bits [k*Q, (k+1)*Q) of the buffer, least
significant bit first (bit 0 is the LSB of byte 0). A buffer of n codes takes ceil(n * Q / 8) bytes.
The C runtime uses the same layout."""

from __future__ import annotations

import numpy as np

from tinycl.errors import ConfigError

__all__ = ["packed_nbytes", "pack_codes", "unpack_codes", "write_codes", "read_codes", "read_rows"]


def _check(bits: int) -> None:
    if not 1 <= bits <= 8:
        raise ConfigError(f"cannot pack {bits}-bit codes; allowed: 1..8")


def packed_nbytes(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """uint8 codes (any shape, each < 2**bits) -> packed uint8 buffer of ceil(n * bits / 8) bytes."""
    _check(bits)
    flat = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1, 1)
    if bits == 8:
        return flat.ravel().copy()
    bitplanes = np.unpackbits(flat, axis=1, bitorder="little")[:, :bits]
    return np.packbits(bitplanes.ravel(), bitorder="little")


def unpack_codes(buffer: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The first `count` codes of a packed buffer, as uint8."""
    _check(bits)
    if bits == 8:
        return np.asarray(buffer[:count], dtype=np.uint8).copy()
    raw = np.unpackbits(np.asarray(buffer, dtype=np.uint8), bitorder="little", count=count * bits)
    planes = raw.reshape(count, bits)
    return np.packbits(planes, axis=1, bitorder="little").ravel()


def write_codes(buffer: np.ndarray, start: int, codes: np.ndarray, bits: int) -> None:
    """Overwrite codes [start, start + len(codes)) of a packed buffer in place."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8).ravel()
    lo_bit, hi_bit = start * bits, (start + codes.size) * bits
    if lo_bit % 8 == 0 and hi_bit % 8 == 0:
        buffer[lo_bit // 8: hi_bit // 8] = pack_codes(codes, bits)
        return
    lo_byte, hi_byte = lo_bit // 8, (hi_bit + 7) // 8
    window = np.unpackbits(buffer[lo_byte:hi_byte], bitorder="little")
    offset = lo_bit - lo_byte * 8
    new = np.unpackbits(codes.reshape(-1, 1), axis=1, bitorder="little")[:, :bits].ravel()
    window[offset: offset + new.size] = new
    buffer[lo_byte:hi_byte] = np.packbits(window, bitorder="little")


def read_codes(buffer: np.ndarray, start: int, count: int, bits: int) -> np.ndarray:
    """Codes [start, start + count) of a packed buffer."""
    lo_bit = start * bits
    lo_byte, hi_byte = lo_bit // 8, ((start + count) * bits + 7) // 8
    offset = lo_bit - lo_byte * 8
    if offset == 0:
        return unpack_codes(buffer[lo_byte:hi_byte], bits, count)
    window = np.unpackbits(buffer[lo_byte:hi_byte], bitorder="little")[offset: offset + count * bits]
    return np.packbits(window.reshape(count, bits), axis=1, bitorder="little").ravel()


def read_rows(buffer: np.ndarray, rows: np.ndarray, length: int, bits: int) -> np.ndarray:
    """Codes [r * length, (r + 1) * length) for every r in `rows`, as one (len(rows), length) uint8 array, unpacked
    in a few NumPy passes for all rows at once (a replayed mini-batch), whatever each row's bit alignment."""
    _check(bits)
    rows = np.asarray(rows, dtype=np.int64)
    if bits == 8:
        return buffer.reshape(-1)[rows[:, None] * length + np.arange(length)]
    if length * bits % 8 == 0:  # rows start on byte boundaries: gather their bytes, unpack them as one buffer
        row_bytes = length * bits // 8
        gathered = buffer.reshape(-1)[rows[:, None] * row_bytes + np.arange(row_bytes)]
        if 8 % bits == 0:  # whole codes per byte, least significant first: shift and mask
            shifts = (bits * np.arange(8 // bits)).astype(np.uint8)
            return ((gathered[..., None] >> shifts) & np.uint8((1 << bits) - 1)).reshape(len(rows), length)
        return unpack_codes(gathered.reshape(-1), bits, len(rows) * length).reshape(len(rows), length)
    start = rows * length * bits  # first bit of each row
    span = (length * bits + 7) // 8 + 1  # bytes that cover a row at any bit offset
    idx = np.minimum(start[:, None] // 8 + np.arange(span), len(buffer) - 1)
    window = np.unpackbits(buffer[idx], axis=1, bitorder="little")  # (n, 8 * span) bits
    take = (start % 8)[:, None] + np.arange(length * bits)
    planes = np.take_along_axis(window, take, axis=1).reshape(len(rows), length, bits)
    return np.packbits(planes, axis=2, bitorder="little")[..., 0]

