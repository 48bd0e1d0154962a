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

import numpy as np

from tinycl.errors import ConfigError

__all__ = ["TIES", "quantize_multiplier", "multiply_by_quantized_multiplier", "round_half_away", "wrap_int32"]

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
