"""TFLite's fixed-point requantization as pure, vectorised functions.

A real multiplier M > 0 is stored as an int32 q in [2**30, 2**31) and a shift with M = q * 2**(shift - 31)
(`quantize_multiplier`, TFLite's QuantizeMultiplier). `multiply_by_quantized_multiplier` computes
round(x * M) for int32 x the way TFLite's kernels do, in two roundings (gemmlowp's
SaturatingRoundingDoublingHighMul, then a rounding right shift by -shift). The second rounding breaks ties
either away from zero (`ties="away"`: gemmlowp's RoundingDivideByPOT, TFLite's reference kernels) or toward
+infinity (`ties="up"`: the rounding shift of LiteRT's optimized x86 GEMM and depthwise int8 kernels). The two
differ only for negative values whose first rounding lands exactly on a half.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from tinycl.errors import ConfigError

__all__ = ["TIES", "Float64Multiplier", "quantize_multiplier", "multiply_by_quantized_multiplier", "round_half_away",
           "wrap_int32"]

TIES = ("away", "up")


def round_half_away(x: np.ndarray) -> np.ndarray:
    """C's round() / TfLiteRound: to nearest, ties away from zero (same dtype as x)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """int64 values reduced modulo 2**32 into the int32 range, as int32 arithmetic would wrap them."""
    return ((x + 2**31) & (2**32 - 1)) - 2**31


def quantize_multiplier(real) -> tuple[np.ndarray, np.ndarray]:
    """Real multiplier(s) (float64, >= 0) -> (q, shift) int64 arrays with real = q * 2**(shift - 31),
    2**30 <= q < 2**31. Zero gives (0, 0); multipliers below 2**-31 flush to (0, 0), as in TFLite."""
    real = np.asarray(real, dtype=np.float64)
    frac, shift = np.frexp(real)
    q = round_half_away(frac * 2.0**31).astype(np.int64)
    shift = shift.astype(np.int64)
    carry = q == 2**31
    q, shift = np.where(carry, q // 2, q), np.where(carry, shift + 1, shift)
    flush = (shift < -31) | (real == 0)
    return np.where(flush, 0, q), np.where(flush, 0, shift)


def multiply_by_quantized_multiplier(x, q, shift, ties: str = "away") -> np.ndarray:
    """round(x * q * 2**(shift - 31)) for int32 values x (any integer dtype; q and shift broadcast against x),
    with TFLite's double rounding; `ties` picks the second rounding (see the module docstring). Returns int64."""
    if ties not in TIES:
        raise ConfigError(f"ties={ties!r} is not known; allowed: {', '.join(TIES)}")
    x = np.asarray(x, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    q = np.asarray(q, dtype=np.int64)
    right = np.maximum(-shift, 0)
    if np.any(shift > 0):
        x = wrap_int32(x << np.maximum(shift, 0))
    # SaturatingRoundingDoublingHighMul: (x q +- 2**30) / 2**31 truncated toward zero equals
    # floor((x q + 2**30) / 2**31) for every x (ties go up). No saturation: q < 2**31 is never INT32_MIN.
    high = (x * q + (1 << 30)) >> 31
    half = (np.int64(1) << right) >> 1
    if ties == "up":
        return (high + half) >> right
    # RoundingDivideByPOT: ties away from zero, i.e. a negative tie rounds down
    return (high + half - ((high < 0) & (half > 0))) >> right


class Float64Multiplier:
    """A requantization `clamp(out_zero + multiply_by_quantized_multiplier(x, q, shift), act_min, act_max)` as a
    few float64 passes over a torch tensor, with the same result.

    The two roundings fold into one: with a = x * 2**left, TFLite computes floor((a q + 2**30) / 2**31), then adds
    half = 2**(right - 1) (right > 0) and shifts right; floor((floor(u / m) + h) / n) = floor((u + h m) / (m n)),
    so y = floor(x M + c) with M = q 2**(shift - 31) and c = 2**(-1 - right) + (right > 0) / 2, minus 2**-right
    where ties go away from zero and a q + 2**30 < 0 (x M < -2**(-1 - right)). The zero point and -qmin join c,
    so 0 <= c < 2**9 and the result is read off t = x M + c in [0, 255] after the clamp.

    Exact for every int32 x with x * 2**left in the int32 range (|x| < `limit` = 2**(31 - left), as TFLite's shift
    must not wrap) when right <= 12 (else `limit` is 0 and the caller takes the int64 path): while |x M| < 2**9,
    x q is an integer below 2**(40 + right) <= 2**52, so x M, t, the threshold test and t - 2**-right (multiples of
    2**(-31 - right) below 2**10) are all exact in float64, with or without a fused multiply-add; once |x M| >= 2**9
    the rounded t is >= 2**9 > 255 or <= -2**9 + c < 0, like the exact value, and both clamp to the same bound.

    q, shift: (C,) per channel; away: (C,) bool, the channels whose second rounding breaks ties away from zero;
    dtype: "int8" | "uint8", the output codes'."""

    def __init__(self, q: np.ndarray, shift: np.ndarray, away: np.ndarray, out_zero: int, act_min: int,
                 act_max: int, dtype: str):
        shift = np.asarray(shift, np.int64)
        left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
        self.limit = float(2.0 ** (31 - left.max())) if right.max() <= 12 else 0.0
        # outputs are computed as uint8 codes y - qmin (truncation = floor on values >= 0), int8 recovered by xor
        self.qmin = -128 if dtype == "int8" else 0
        self.bounds = (act_min - self.qmin, act_max - self.qmin)
        as_t = lambda v: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64))  # noqa: E731
        self.m = as_t(np.asarray(q, np.float64) * 2.0 ** (shift - 31))
        offset = 2.0 ** (-1.0 - right) + np.where(right > 0, 0.5, 0.0) + (out_zero - self.qmin)
        step = np.where(np.asarray(away) & (right > 0), 2.0 ** -right.astype(np.float64), 0.0)
        self.away = bool(step.any())
        self.offset, self.step = as_t(offset), as_t(-step)
        self.threshold = as_t(offset - 2.0 ** (-1.0 - right))  # x M < -2**(-1 - right), offset added

    def arrays(self, channels: int, length: int) -> dict:
        """This map as the C runtime's `tcl_requant_f64` takes it (tinycl/csrc/int8_fast.c): m, offset, threshold,
        step as (length,) float64 arrays, the `channels` per-channel values (a per-tensor one repeated) repeated to
        `length`, a multiple of `channels` (step 0 where ties go up); lo and hi, the clamp in codes minus the dtype's
        minimum; flip, 0x80 for int8 codes (written as bytes); away, whether any step is nonzero."""
        def tiled(v: torch.Tensor) -> np.ndarray:
            return np.tile(np.broadcast_to(v.numpy(), (channels,)), length // channels)

        step = self.step if self.away else torch.zeros_like(self.step)
        return dict(m=tiled(self.m), offset=tiled(self.offset), threshold=tiled(self.threshold), step=tiled(step),
                    lo=float(self.bounds[0]), hi=float(self.bounds[1]), flip=0x80 if self.qmin else 0,
                    away=int(self.away), len=length)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, ...) float tensor of integers, |x| < limit -> (N, C, ...) int8 / uint8 output codes."""
        view = (1, -1) + (1,) * (x.ndim - 2) if x.ndim > 1 else (-1,)
        t = _SCRATCH.like(x, torch.float64, 0).copy_(x)
        torch.addcmul(self.offset.view(view), t, self.m.view(view), out=t)
        if self.away:
            below = torch.lt(t, self.threshold.view(view), out=_SCRATCH.like(t, torch.float64, 1))
            t.addcmul_(below, self.step.view(view))
        y = t.clamp_(*self.bounds).to(torch.uint8)  # t >= 0 here: truncation is floor
        return y.bitwise_xor_(128).view(torch.int8) if self.qmin else y


class _Scratch(threading.local):
    """Reused float64 work buffers: a new large torch tensor costs a page fault per 4 kB every time (torch's CPU
    allocator maps and unmaps them), several times the arithmetic on it."""

    def __init__(self):
        self.buffers: dict[tuple, torch.Tensor] = {}

    def like(self, x: torch.Tensor, dtype: torch.dtype, slot: int) -> torch.Tensor:
        """A dense tensor of x's shape with x's order of dimensions in memory, over buffer `slot` (its old
        contents)."""
        order = sorted(range(x.ndim), key=lambda d: (-x.stride(d), d))  # outermost dimension first
        buf = self.buffers.get((dtype, slot))
        if buf is None or buf.numel() < x.numel():
            buf = self.buffers[(dtype, slot)] = torch.empty(max(x.numel(), 1 << 16), dtype=dtype)
        dense = buf[: x.numel()].view([x.shape[d] for d in order])
        return dense.permute(*np.argsort(order).tolist())


_SCRATCH = _Scratch()
