"""The replay memory: N samples (latents or raw inputs) stored as bit-packed Q-bit codes, and the policies that
choose what to keep.

Codes are unsigned; a sample's values are quantized with one scale/zero point per tensor or per channel, or (code
"lloyd") rounded to the nearest of 2**Q levels fitted per tensor or per channel (tinycl.quant.qparams), packed
contiguously (tinycl.quant.packing): slot i holds codes [i*D, (i+1)*D) of the buffer, D = values per sample. Q = 32
stores float32 values as they are. Every byte the device would hold is in a NumPy array here, and `nbytes` adds up those
arrays.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np

from tinycl.errors import ConfigError
from tinycl.quant.packing import packed_nbytes, read_codes, read_rows, write_codes
from tinycl.quant.qparams import (
    CODES,
    RANGE_METHODS,
    choose_qparams,
    decode_levels,
    dequantize,
    encode_levels,
    lloyd_levels,
    quantize,
)

__all__ = ["ReplayMemory", "POLICIES", "nicv2_policy", "reservoir_policy", "class_balanced_policy", "BITS",
           "check_bits"]

BITS = (32, 8, 7, 6, 5, 4, 3, 2, 1)


def check_bits(bits, what: str = "memory bits") -> int:
    """`bits` if a replay memory can store values at that width (BITS: 1..8 packed codes, 32 = fp32), else a
    ConfigError naming `what` (e.g. "memory.bits") and the allowed values. The one check every caller uses."""
    if isinstance(bits, bool) or bits not in BITS:
        raise ConfigError(f"{what} must be one of {', '.join(map(str, BITS))} (32 = fp32), got {bits!r}")
    return bits


def _physical_memory() -> int:
    """Bytes of RAM of this machine (a memory larger than it can never be allocated)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**62


class ReplayMemory:
    """Fixed-capacity storage of (sample, label) pairs.

    capacity: slots N. sample_shape: shape of one sample (e.g. the latent's C, H, W). bits: Q in BITS.
    granularity: "tensor" (one scale) or "channel" (one per channel, axis 0 of the sample).
    range_method: how the quantizer's range is chosen from calibration data: "max", "percentile", "mse".
    code: "uniform" (levels evenly spaced over that range) or "lloyd" (2**Q levels fitted to the calibration data,
    a float32 table per tensor or channel; range_method unused).
    """

    def __init__(self, capacity: int, sample_shape: tuple[int, ...], bits: int = 32, *,
                 granularity: str = "tensor", range_method: str = "max", code: str = "uniform",
                 n_classes: int = 256):
        if not isinstance(capacity, int) or capacity < 1:
            raise ConfigError(f"memory capacity must be an integer >= 1, got {capacity!r}")
        check_bits(bits)
        if granularity not in ("tensor", "channel"):
            raise ConfigError(f"memory granularity {granularity!r}; allowed: tensor, channel")
        if range_method not in RANGE_METHODS:
            raise ConfigError(f"memory range {range_method!r}; allowed: {', '.join(RANGE_METHODS)}")
        if code not in CODES:
            raise ConfigError(f"memory code {code!r}; allowed: {', '.join(CODES)}")
        need = self.bytes_for(capacity, tuple(sample_shape), bits, granularity=granularity, code=code,
                              n_classes=n_classes)
        if need > _physical_memory():
            raise ConfigError(f"a replay memory of {capacity:,} samples of shape {tuple(sample_shape)} at {bits} bits "
                              f"needs {need:,} bytes, more than this machine's {_physical_memory():,}: lower "
                              f"memory.capacity or memory.bits")
        self.capacity, self.sample_shape, self.bits = capacity, tuple(sample_shape), bits
        self.granularity, self.range_method, self.code = granularity, range_method, code
        self.values_per_sample = math.prod(self.sample_shape)
        self.size = 0  # slots filled
        self.seen_ = 0  # samples offered to the memory so far (reservoir sampling needs it)
        self.labels = np.zeros(capacity, dtype=np.uint8 if n_classes <= 256 else np.int16)
        if bits == 32:
            self.buffer = np.zeros((capacity, self.values_per_sample), dtype=np.float32)
        else:
            self.buffer = np.zeros(packed_nbytes(capacity * self.values_per_sample, bits), dtype=np.uint8)
        self.scale_: np.ndarray | None = None  # float32, () or (C,)
        self.zero_point_: np.ndarray | None = None  # uint8, same shape
        self.levels_: np.ndarray | None = None  # code "lloyd": float32 (2**Q,) or (C, 2**Q), instead of the two

    # -- quantizer --------------------------------------------------------------------------------------
    def calibrate(self, x: np.ndarray) -> ReplayMemory:
        """Fix the quantizer's range from calibration samples (N, *sample_shape). Later data outside the range
        is clipped. Without a call, the first written samples calibrate it."""
        if self.bits != 32 and self.code == "lloyd":
            self.levels_ = lloyd_levels(np.asarray(x, np.float32), self.bits, axis=self._axis)
        elif self.bits != 32:
            scale, zero = choose_qparams(np.asarray(x, np.float32), self.bits, axis=self._axis,
                                         method=self.range_method)
            self.scale_, self.zero_point_ = scale.astype(np.float32), zero.astype(np.uint8)
        return self

    @property
    def _axis(self) -> int | None:
        """The quantizer's channel axis in a sample: 0 per channel, None per tensor."""
        return 0 if self.granularity == "channel" else None

    @property
    def calibrated(self) -> bool:
        """True once the quantizer's range or levels are fixed (an fp32 memory needs none)."""
        return self.bits == 32 or self.scale_ is not None or self.levels_ is not None

    def share_quantizer(self, other: ReplayMemory) -> ReplayMemory:
        """Take `other`'s calibrated quantizer, so other's codes mean the same values here."""
        self.scale_, self.zero_point_, self.levels_ = other.scale_, other.zero_point_, other.levels_
        return self

    def _broadcast(self, v: np.ndarray) -> np.ndarray:
        if v.ndim == 0:
            return v
        return v.reshape((1, -1) + (1,) * (len(self.sample_shape) - 1))

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, *sample_shape) floats -> (n, D) uint8 codes."""
        if self.levels_ is not None:
            return encode_levels(x, self.levels_, axis=self._axis).reshape(len(x), -1)
        codes = quantize(x, self._broadcast(self.scale_), self._broadcast(self.zero_point_.astype(np.int32)),
                         self.bits)
        return codes.reshape(len(x), -1)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        codes = codes.reshape(-1, *self.sample_shape)
        if self.levels_ is not None:
            return decode_levels(codes, self.levels_, axis=self._axis)
        return dequantize(codes, self._broadcast(self.scale_), self._broadcast(self.zero_point_.astype(np.int32)))

    # -- storage --------------------------------------------------------------------------------------------
    def write(self, slots: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
        """Store samples x[k] with labels y[k] in slots[k]; slots must be < capacity, filled ones or the next
        free ones."""
        slots = np.asarray(slots, dtype=np.int64)
        if len(slots) == 0:
            return
        x = np.asarray(x, np.float32).reshape(len(slots), *self.sample_shape)
        if slots.max() >= self.capacity or slots.min() < 0:
            raise IndexError(f"slot out of range 0..{self.capacity - 1}")
        if self.bits == 32:
            self.buffer[slots] = x.reshape(len(slots), -1)
        else:
            if not self.calibrated:
                self.calibrate(x)
            codes = self.encode(x)
            for slot, row in zip(slots.tolist(), codes, strict=True):
                write_codes(self.buffer, slot * self.values_per_sample, row, self.bits)
        self.labels[slots] = y
        self.size = max(self.size, int(slots.max()) + 1)

    def read(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x (n, *sample_shape) float32, y (n,) int64) of the given slots, dequantized."""
        slots = np.asarray(slots, dtype=np.int64)
        if self.bits == 32:
            x = self.buffer[slots].reshape(-1, *self.sample_shape)
        else:
            d = self.values_per_sample
            x = self.decode(read_rows(self.buffer, slots, d, self.bits))  # the whole mini-batch at once
        return x, self.labels[slots].astype(np.int64)

    def codes(self) -> np.ndarray:
        """All stored codes (size, D), unpacked (for tests and export)."""
        d = self.values_per_sample
        return read_codes(self.buffer, 0, self.size * d, self.bits).reshape(self.size, d)

    # -- accounting -----------------------------------------------------------------------------------------
    @property
    def codes_nbytes(self) -> int:
        return int(self.buffer.nbytes)

    @property
    def qparams_nbytes(self) -> int:
        if self.bits == 32:
            return 0
        channels = self.sample_shape[0] if self.granularity == "channel" else 1
        return channels * _qparams_per_channel(self.bits, self.code)

    @property
    def nbytes(self) -> int:
        """Device bytes: packed codes + quantizer parameters + labels."""
        return self.codes_nbytes + self.qparams_nbytes + int(self.labels.nbytes)

    @staticmethod
    def bytes_for(capacity: int, sample_shape: tuple[int, ...], bits: int, *, granularity: str = "tensor",
                  code: str = "uniform", n_classes: int = 256) -> int:
        """What `nbytes` of such a memory is, without allocating it (tests check the two agree)."""
        check_bits(bits)
        values = capacity * math.prod(sample_shape)
        codes = values * 4 if bits == 32 else packed_nbytes(values, bits)
        qparams = 0 if bits == 32 else (sample_shape[0] if granularity == "channel" else 1) * _qparams_per_channel(
            bits, code)
        return codes + qparams + capacity * (1 if n_classes <= 256 else 2)

    @classmethod
    def capacity_for(cls, budget: int, sample_shape: tuple[int, ...], bits: int, **kwargs) -> int:
        """The most slots whose memory fits in `budget` bytes (at least 1)."""
        lo, hi = 1, max(1, budget)
        while lo < hi:  # bytes_for grows with capacity: bisect
            mid = (lo + hi + 1) // 2
            if cls.bytes_for(mid, sample_shape, bits, **kwargs) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def state_dict(self) -> dict:
        return {"buffer": self.buffer.copy(), "labels": self.labels.copy(), "size": self.size, "seen": self.seen_,
                "scale": self.scale_, "zero_point": self.zero_point_, "levels": self.levels_}

    def load_state_dict(self, state: dict) -> None:
        self.buffer, self.labels, self.size = state["buffer"].copy(), state["labels"].copy(), state["size"]
        self.scale_, self.zero_point_, self.seen_ = state["scale"], state["zero_point"], state["seen"]
        self.levels_ = state.get("levels")  # saved before codes other than uniform existed: none


def _qparams_per_channel(bits: int, code: str) -> int:
    """Quantizer bytes per tensor or channel: a float32 scale + a uint8 zero point, or 2**Q float32 levels."""
    return 2**bits * 4 if code == "lloyd" else 4 + 1


# -- insertion policies: (memory, new labels, experience index, rng) -> (indices of new samples, slots) --------
# A policy only chooses; the learner writes the chosen samples and then adds the new data to `memory.seen_`.
Policy = Callable[[ReplayMemory, np.ndarray, int, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def _free_then_random(memory: ReplayMemory, h: int, rng: np.random.Generator) -> np.ndarray:
    free = np.arange(memory.size, min(memory.capacity, memory.size + h))
    rest = h - len(free)
    taken = rng.choice(memory.size, size=rest, replace=False) if rest > 0 else np.zeros(0, np.int64)
    return np.concatenate([free, taken]).astype(np.int64)


def nicv2_policy(memory: ReplayMemory, y_new: np.ndarray, exp_index: int, rng: np.random.Generator):
    """Pellegrini et al.'s rule: after experience i (from 0), h = min(N // (i + 1), n_new) random new samples
    overwrite h random slots (free slots first, so experience 0 fills the memory)."""
    h = min(memory.capacity // (exp_index + 1), len(y_new))
    h = max(h, min(memory.capacity - memory.size, len(y_new)))  # never leave free slots unused
    new = rng.choice(len(y_new), size=h, replace=False)
    return new, _free_then_random(memory, h, rng)


def reservoir_policy(memory: ReplayMemory, y_new: np.ndarray, exp_index: int, rng: np.random.Generator):
    """Reservoir sampling over the whole stream: every sample seen so far is in memory with equal chance."""
    seen = memory.seen_
    new, slots = [], []
    size = memory.size
    for k in range(len(y_new)):
        if size < memory.capacity:
            new.append(k), slots.append(size)
            size += 1
        else:
            j = int(rng.integers(0, seen + k + 1))
            if j < memory.capacity:
                new.append(k), slots.append(j)
    # a slot written twice keeps its last sample
    last = {s: n for n, s in zip(new, slots, strict=True)}
    return np.array(list(last.values()), np.int64), np.array(list(last.keys()), np.int64)


def class_balanced_policy(memory: ReplayMemory, y_new: np.ndarray, exp_index: int, rng: np.random.Generator):
    """Equal slots per class seen: classes over their quota lose random slots to the new data's classes."""
    old = memory.labels[: memory.size].astype(np.int64)
    classes = np.union1d(np.unique(old), np.unique(y_new))
    quota = memory.capacity // len(classes)
    freed = []
    for c in np.unique(old):
        slots_c = np.flatnonzero(old == c)
        if len(slots_c) > quota:
            freed.append(rng.choice(slots_c, size=len(slots_c) - quota, replace=False))
    available = np.concatenate(freed + [np.arange(memory.size, memory.capacity)]).astype(np.int64)
    new = []
    for c in np.unique(y_new):
        have = int(np.sum(old == c))
        want = max(quota - have, 0)
        idx = np.flatnonzero(y_new == c)
        new.append(rng.choice(idx, size=min(want, len(idx)), replace=False))
    new = np.concatenate(new) if new else np.zeros(0, np.int64)
    n = min(len(new), len(available))
    # fill free slots in order so `size` stays the count of filled slots
    return new[:n], np.sort(available)[:n]


POLICIES: dict[str, Policy] = {"nicv2": nicv2_policy, "reservoir": reservoir_policy,
                               "class_balanced": class_balanced_policy}
