"""Quantization as pure functions. Uniform (affine): q = clamp(round(x / s) + z, qmin, qmax); x = s * (q - z).
Lloyd (non-uniform): 2**Q levels fitted to the data; q = the nearest level's index; x = levels[q].

Used by the replay memory (unsigned Q-bit codes, 1 <= Q <= 8; both codes) and by post-training quantization
(int8, uniform). Rounding is half away from zero, as TFLite's reference quantizer does.
"""

from __future__ import annotations

import numpy as np

from tinycl.errors import ConfigError
from tinycl.quant.fixedpoint import round_half_away

__all__ = ["CODES", "RANGE_METHODS", "choose_qparams", "quantize", "dequantize", "lloyd_levels", "encode_levels",
           "decode_levels"]

RANGE_METHODS = ("max", "percentile", "mse")
CODES = ("uniform", "lloyd")  # how a replay memory's 2**Q levels are placed


def _reduce_axes(x: np.ndarray, axis: int | None) -> tuple[int, ...]:
    # statistics are taken over all axes but the channel axis (axis counts in the sample shape, after batch)
    if axis is None:
        return tuple(range(x.ndim))
    return tuple(i for i in range(x.ndim) if i != axis + 1)


def _range(x: np.ndarray, method: str, axis: int | None, percentile: float, bits: int):
    axes = _reduce_axes(x, axis)
    if method == "max":
        return x.min(axis=axes), x.max(axis=axes)
    if method == "percentile":
        return np.percentile(x, 100 - percentile, axis=axes), np.percentile(x, percentile, axis=axes)
    if method == "mse":
        return _mse_range(x, axes, bits)
    raise ConfigError(f"range method {method!r} is not known; allowed: {', '.join(RANGE_METHODS)}")


def _mse_range(x: np.ndarray, axes: tuple[int, ...], bits: int):
    """Shrink the [min, max] range by the factor (from a grid) that minimises the mean squared quantization
    error on `x`, separately per channel when `axes` leaves one."""
    lo, hi = x.min(axis=axes), x.max(axis=axes)
    best_err = np.full(np.shape(lo), np.inf)
    best_lo, best_hi = np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64)
    for frac in np.linspace(0.05, 1.0, 40):
        clo, chi = lo * frac, hi * frac
        scale, zero = _qparams_from_range(clo, chi, bits)
        xs = _expand(scale, x, axes), _expand(zero, x, axes)
        err = ((dequantize(quantize(x, *xs, bits), *xs) - x) ** 2).mean(axis=axes)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_lo, best_hi = np.where(better, clo, best_lo), np.where(better, chi, best_hi)
    return best_lo, best_hi


def _expand(v: np.ndarray, x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    v = np.asarray(v)
    return v.reshape([1 if i in axes else -1 for i in range(x.ndim)]) if v.ndim else v


def _qparams_from_range(lo, hi, bits: int):
    lo = np.minimum(np.asarray(lo, dtype=np.float64), 0.0)
    hi = np.maximum(np.asarray(hi, dtype=np.float64), 0.0)
    levels = 2**bits - 1
    scale = (hi - lo) / levels
    scale = np.where(scale > 0, scale, 1.0)
    zero = np.clip(round_half_away(-lo / scale), 0, levels).astype(np.int32)
    return scale.astype(np.float32), zero


def choose_qparams(x: np.ndarray, bits: int, *, axis: int | None = None, method: str = "max",
                   percentile: float = 99.99) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point for unsigned `bits`-bit codes covering the data `x` (batch first).

    Non-negative data gets zero point 0 (all 2**bits levels above zero); data with negative values gets an
    asymmetric range. `axis`: the channel axis of one sample for per-channel parameters, None for one per
    tensor. Returns float32 scale and int32 zero point arrays (shape () per tensor, (C,) per channel).
    """
    _check_code_bits(bits)
    x = np.asarray(x, dtype=np.float32)
    lo, hi = _range(x, method, axis, percentile, bits)
    return _qparams_from_range(lo, hi, bits)


def _check_code_bits(bits: int) -> None:
    if not 1 <= bits <= 8:
        raise ConfigError(f"bits={bits} cannot be quantized to codes; allowed: 1..8 (32 means fp32, unquantized)")


def quantize(x: np.ndarray, scale, zero_point, bits: int) -> np.ndarray:
    """Unsigned codes (uint8) of `x`; `scale`/`zero_point` broadcast against `x`."""
    q = round_half_away(np.asarray(x, dtype=np.float32) / scale) + zero_point
    return np.clip(q, 0, 2**bits - 1).astype(np.uint8)


def dequantize(codes: np.ndarray, scale, zero_point) -> np.ndarray:
    return ((codes.astype(np.int32) - zero_point) * scale).astype(np.float32)


# -- non-uniform codes: 2**Q levels per tensor or per channel, a table the device decodes through ---------------
def lloyd_levels(x: np.ndarray, bits: int, *, axis: int | None = None, iterations: int = 50) -> np.ndarray:
    """2**bits levels that minimise the mean squared error of rounding `x` (batch first) to the nearest one:
    Lloyd-Max (1-D k-means), started from the data's quantiles, so it is deterministic. Returns float32 levels,
    ascending: shape (2**bits,) per tensor, (C, 2**bits) per channel (`axis`: the channel axis of one sample)."""
    _check_code_bits(bits)
    x = np.asarray(x, dtype=np.float32)
    if axis is None:
        return _lloyd(x.ravel(), 2**bits, iterations)
    return np.stack([_lloyd(c.ravel(), 2**bits, iterations) for c in np.moveaxis(x, axis + 1, 0)])


def _lloyd(v: np.ndarray, k: int, iterations: int) -> np.ndarray:
    v = np.sort(v.astype(np.float64))
    levels = np.quantile(v, (np.arange(k) + 0.5) / k)
    for _ in range(iterations):
        bounds = np.searchsorted(v, (levels[1:] + levels[:-1]) / 2)  # cell j: v[bounds[j-1]:bounds[j]]
        cells = np.split(v, bounds)
        new = np.array([c.mean() if len(c) else lv for c, lv in zip(cells, levels, strict=True)])
        if np.array_equal(new, levels):
            break
        levels = new
    return np.sort(levels).astype(np.float32)


def encode_levels(x: np.ndarray, levels: np.ndarray, *, axis: int | None = None) -> np.ndarray:
    """uint8 codes: the index of the nearest level (ties to the lower). Levels of shape (C, 2**bits) are per
    channel, along `axis` of one sample (batch first in x)."""
    x = np.asarray(x, dtype=np.float32)
    if levels.ndim == 1:
        return np.searchsorted((levels[1:] + levels[:-1]) / 2, x, side="left").astype(np.uint8)
    out = np.empty(x.shape, np.uint8)
    for c, lv in enumerate(levels):
        idx = (slice(None),) * (axis + 1) + (c,)
        out[idx] = np.searchsorted((lv[1:] + lv[:-1]) / 2, x[idx], side="left")
    return out


def decode_levels(codes: np.ndarray, levels: np.ndarray, *, axis: int | None = None) -> np.ndarray:
    """The levels the codes index: x = levels[q] (per channel, as encode_levels: levels[c, q])."""
    if levels.ndim == 1:
        return levels[codes.astype(np.intp)]
    shape = [1] * codes.ndim
    shape[axis + 1] = len(levels)
    channel = np.arange(len(levels)).reshape(shape)
    return levels[channel, codes.astype(np.intp)]
