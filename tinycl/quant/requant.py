"""Requantization records: every integer parameter a layer's kernel needs besides its weights, derived once.

TFLite Micro's Prepare/OpData pattern: `prepare(qmodel, kernels)` computes, for each layer of a `QuantizedModel`,
the zero points, the fixed-point multipliers and shifts, the tie rule of the second rounding and the fused
activation's range; the NumPy integer executor (`tinycl.quant.intexec`) and the C int8 path
(`tinycl.device.int8`) both read these records and derive nothing themselves.

The rules follow TFLite's Prepare code for the kernel set `kernels` (see `tinycl.quant.intexec`):
- multipliers of uint8 layers and per-tensor FULLY_CONNECTED come from the float32 product s_in * s_w (the
  legacy GetQuantizedConvolutionMultipler), of int8 conv layers and per-channel FULLY_CONNECTED from the float64
  product (PopulateConvolutionQuantizationParams);
- "optimized": CONV_2D, FULLY_CONNECTED and int8 DEPTHWISE_CONV_2D break second-rounding ties up, uint8
  DEPTHWISE_CONV_2D (and everything else) away from zero; "reference": away from zero everywhere, and
  FULLY_CONNECTED rounds acc * (s_in * s_w / s_out) in float64 instead (`real_scale`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import torch

from tinycl.errors import ConfigError, ModelError
from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import Layer, ModelSpec, TensorQuant
from tinycl.quant.fixedpoint import (
    Float64Multiplier,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    round_half_away,
)

__all__ = ["ADD_LEFT_SHIFT", "KERNELS", "Requant", "activation_range", "libm_expf", "prepare", "requantize"]

KERNELS = ("optimized", "reference")
ADD_LEFT_SHIFT = 20  # TFLite's ADD: headroom bits given to both inputs before they are rescaled and summed
_F32 = np.float32
_NO_CLAMP = (-(2**31), 2**31 - 1)


@dataclass(frozen=True, eq=False)
class Requant:
    """One requantization: int accumulators (already relative to `in_zero`) -> output codes, per channel c:
    y = clamp(out_zero + round(acc * multiplier[c] * 2**(shift[c] - 31)), act_min, act_max), with TFLite's double
    rounding whose second step breaks ties `ties` ("away" | "up"); if `real_scale` is set, round(acc *
    real_scale[c]) in float64 (half away from zero) instead. Codes are in the tensors' own dtypes (uint8 or int8).

    multiplier, shift: (C,) int32 (C = 1 per tensor); empty: a multiplier of exactly 1 (the codes keep their
    quantization and are only clamped: pooling, data movement). block: when > 0, only values in whole blocks of
    `block` break ties `ties`, the leftover ones break them away from zero (LiteRT's optimized kernels run whole
    blocks in vector code and the rest in a scalar loop); block_over: what the blocks count, "channel" (int8
    depthwise: 8, MEAN: 16) or "element" (one sample's tensor in NHWC order: QUANTIZE, 16). w_zero: (C,) int32
    weight zero points, or None (all zero). inputs: ADD only, each input's rescaling to the common scale. then:
    pooling and data movement, the QUANTIZE to the output's quantization after an op that runs in its input's.
    out_dtype: the output codes' dtype, where a kernel may take the float64 path (`apply_float`). table: (256,)
    int64, an elementwise op's output code for each input code (index: code - the dtype's minimum)."""

    in_zero: int
    out_zero: int
    act_min: int
    act_max: int
    multiplier: np.ndarray
    shift: np.ndarray
    ties: str = "away"
    block: int = 0
    block_over: str = "channel"
    w_zero: np.ndarray | None = None
    real_scale: np.ndarray | None = None
    inputs: tuple[Requant, ...] = ()
    then: Requant | None = None
    out_dtype: str = ""
    table: np.ndarray | None = None

    def has_scalar_tail(self, shape: tuple[int, ...]) -> bool:
        """Whether some values of an output of `shape` (batch first) break ties away from zero while the others
        break them `ties` (LiteRT's optimized kernels: a scalar loop after the vector blocks)."""
        return self._scalar_tail(shape) is not None

    def _scalar_tail(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """Boolean mask (broadcasting against `shape`, batch first) of the values LiteRT's scalar tail loop
        requantizes (ties away), or None: the channels past the last whole block, or with block_over="element" the
        elements past the last whole block of one sample's tensor in TFLite's NHWC order."""
        if not self.block or len(shape) < 2:
            return None
        if self.block_over == "channel":
            c = shape[1]
            mask = np.arange(c) >= c - c % self.block
            return mask.reshape((1, -1) + (1,) * (len(shape) - 2)) if mask.any() else None
        n = math.prod(shape[1:])
        nhwc = np.arange(n).reshape(*shape[2:], shape[1])  # element k of the NHWC tensor, laid out as CHW
        order = np.moveaxis(nhwc, -1, 0)
        return (order >= n - n % self.block)[None] if n % self.block else None

    @cached_property
    def _float64(self) -> Float64Multiplier | None:
        if self.real_scale is not None or not self.multiplier.size or self.block_over != "channel" \
                or self.out_dtype not in ("int8", "uint8"):
            return None
        c = self.multiplier.size
        away = np.full(c, self.ties == "away")
        if self.block and c > 1:
            away |= np.arange(c) >= c - c % self.block
        return Float64Multiplier(self.multiplier, self.shift, away, self.out_zero, self.act_min, self.act_max,
                                 self.out_dtype)

    def float64(self, channels: int) -> Float64Multiplier | None:
        """This record as a Float64Multiplier for accumulators of `channels` channels (what `apply_float` runs), or
        None where only the int64 path is exact; the caller still keeps |acc| below its `limit`."""
        f = self._float64
        if f is None or (self.block and self.multiplier.size == 1 and channels % self.block):
            return None
        return f

    def apply_float(self, acc: torch.Tensor, bound: float | None = None) -> torch.Tensor | None:
        """`apply` for a torch float tensor (N, C, ...) of exact integer accumulators, in float64 (a few passes
        instead of int64 NumPy); the output codes as float64 integers. None where that is not provably the same:
        records that need the int64 path, or |acc| (`bound`, a bound known beforehand, else its maximum) too large
        for Float64Multiplier. Returns the int8 / uint8 codes."""
        f = self.float64(acc.shape[1] if acc.ndim > 1 else 0)
        if f is None:
            return None
        if (bound is None or bound >= f.limit) and float(acc.abs().max()) >= f.limit:
            return None
        return f(acc)

    @property
    def identity(self) -> bool:
        """True when the codes pass unchanged (a multiplier of 1, equal zero points)."""
        return self.multiplier.size == 0 and self.in_zero == self.out_zero

    def apply(self, acc: np.ndarray) -> np.ndarray:
        """(N, C, ...) integer accumulators -> int64 output codes, clamped (channels on axis 1)."""
        acc = np.asarray(acc, dtype=np.int64)
        chan = (1, -1) + (1,) * (acc.ndim - 2) if acc.ndim > 1 else (-1,)
        if self.real_scale is not None:
            y = round_half_away(acc * self.real_scale.reshape(chan)).astype(np.int64)
        elif self.multiplier.size:
            y = multiply_by_quantized_multiplier(acc, self.multiplier.reshape(chan), self.shift.reshape(chan),
                                                 self.ties)
            tail = self._scalar_tail(acc.shape)
            if tail is not None:
                away = multiply_by_quantized_multiplier(acc, self.multiplier.reshape(chan), self.shift.reshape(chan))
                y = np.where(tail, away, y)
        else:
            y = acc
        return np.clip(y + self.out_zero, self.act_min, self.act_max)


def _scale(q: TensorQuant) -> np.float32:
    return _F32(q.scale[0])


def _fixed(real) -> tuple[np.ndarray, np.ndarray]:
    m, s = quantize_multiplier(np.atleast_1d(np.asarray(real, dtype=np.float64)))
    return m.astype(np.int32), s.astype(np.int32)


def activation_range(act: str, q: TensorQuant) -> tuple[int, int]:
    """TFLite CalculateActivationRangeQuantized: the fused activation's bounds in output codes of `q`."""
    def code(v: float) -> int:
        return q.zero_point[0] + int(round_half_away(np.array(_F32(v) / _scale(q), dtype=np.float32)))

    if act == "relu":
        return max(q.qmin, code(0.0)), q.qmax
    if act == "relu6":
        return max(q.qmin, code(0.0)), min(q.qmax, code(6.0))
    return q.qmin, q.qmax


def _keep(q: TensorQuant, act: str = "none") -> Requant:
    """Codes that keep their quantization `q`, clamped to the activation `act`."""
    empty = np.zeros(0, np.int32)
    return Requant(q.zero_point[0], q.zero_point[0], *activation_range(act, q), empty, empty)


def requantize(in_q: TensorQuant, out_q: TensorQuant, act: str = "none", real=None, ties: str = "away") -> Requant:
    """TFLite QUANTIZE from `in_q` to `out_q` (identity when they agree), or with `real` given a RELU's rescaling
    by that multiplier, clamped to `act`; the second rounding breaks ties `ties`."""
    if real is None:
        if (_scale(in_q), in_q.zero_point[0]) == (_scale(out_q), out_q.zero_point[0]):
            return _keep(out_q, act)
        real = float(_scale(in_q)) / float(_scale(out_q))
    block = 16 if ties == "up" else 0  # LiteRT's optimized QUANTIZE: vector code on blocks of 16 elements
    return Requant(in_q.zero_point[0], out_q.zero_point[0], *activation_range(act, out_q), *_fixed(real), ties,
                   block, "element")


def _quantize_ties(kernels: str) -> str:
    # LiteRT's optimized requantizing QUANTIZE rounds ties up (in its vector code); the reference one away
    return "up" if kernels == "optimized" else "away"


# -- one record per op kind ----------------------------------------------------------------------------------
def _weighted(layer: Layer, qs: list[TensorQuant], spec: ModelSpec, kernels: str) -> Requant:
    in_q, wq, out_q = qs[0], layer.quant.weight, layer.quant.output
    n_out = spec.output_shape(layer.name)[0]
    s_in, s_out = _scale(in_q), _scale(out_q)
    s_w = np.broadcast_to(np.asarray(wq.scale, _F32), (n_out,))
    if in_q.dtype == "uint8" or (layer.op == "linear" and len(wq.scale) == 1):  # the legacy float32 product
        real = (s_in * s_w).astype(np.float64) / float(s_out)
    else:
        real = float(s_in) * s_w.astype(np.float64) / float(s_out)
    real_scale = None
    if kernels == "reference" and layer.op == "linear":  # reference FC: round(acc * scale) in double
        real_scale = float(s_in) * s_w.astype(np.float64) / float(s_out)
    up = kernels == "optimized" and not (layer.op == "depthwise_conv2d" and in_q.dtype == "uint8")
    block = 8 if up and layer.op == "depthwise_conv2d" else 0  # vector code on blocks of 8 channels
    w_zero = np.broadcast_to(np.asarray(wq.zero_point, np.int32), (n_out,))
    return Requant(in_q.zero_point[0], out_q.zero_point[0], *activation_range(layer.activation, out_q),
                   *_fixed(real), "up" if up else "away", block,
                   w_zero=w_zero.copy() if np.any(w_zero) else None, real_scale=real_scale, out_dtype=out_q.dtype)


def _pool(layer: Layer, qs: list[TensorQuant], spec: ModelSpec, kernels: str) -> Requant:
    # TFLite requires pooling's output quantization to equal its input's: run in the input's, then QUANTIZE
    return replace(_keep(qs[0], layer.activation),
                   then=requantize(qs[0], layer.quant.output, ties=_quantize_ties(kernels)))


def _move(layer: Layer, qs: list[TensorQuant], spec: ModelSpec, kernels: str) -> Requant:
    """QUANTIZE, and data movement (pad, flatten, reshape) in the input's quantization, then to the output's."""
    return requantize(qs[0], layer.quant.output, ties=_quantize_ties(kernels))


def _relu(layer: Layer, qs: list[TensorQuant], spec: ModelSpec, kernels: str) -> Requant:
    # TFLite RELU: the multiplier from the float32 ratio of scales, then the clamp
    out_q = layer.quant.output
    return requantize(qs[0], out_q, layer.op, float(_scale(qs[0]) / _scale(out_q)))


def _mean(layer: Layer, qs: list[TensorQuant], spec: ModelSpec, kernels: str) -> Requant:
    """MEAN over H and W. keep_dims (global_avg_pool then a reshape to (C, 1, 1)) on the optimized kernels:
    LiteRT's 4-D kernel, whose bias and multiplier come from float32 arithmetic (in_zero = 0: the sum is not
    centred); otherwise the generic QuantizedMeanOrSum, which folds 1/count into the multiplier."""
    in_q, out_q = qs[0], layer.quant.output
    c, h, w = spec.input_shape_of(layer.name)
    count, s_in, s_out = h * w, _scale(in_q), _scale(out_q)
    i = spec.index(layer.name)
    nxt = spec.layers[i + 1] if i + 1 < len(spec.layers) else None
    if nxt is not None and nxt.op == "reshape" and nxt.shape == (c, 1, 1) and kernels == "optimized":
        temp = _F32(in_q.zero_point[0]) * s_in / s_out
        temp = temp + _F32(0.5) if temp > 0 else temp - _F32(0.5)
        m, s = _fixed(float(s_in / (_F32(count) * s_out)))
        return Requant(0, out_q.zero_point[0] - int(temp), out_q.qmin, out_q.qmax, m, s, *_mean_ties(in_q))
    m, s = quantize_multiplier(float(s_in) / float(s_out))
    k = min(count.bit_length() - 1, 32, 31 + int(s))
    m, s = np.array([(int(m) << k) // count], np.int32), np.array([int(s) - k], np.int32)
    return Requant(in_q.zero_point[0], out_q.zero_point[0], out_q.qmin, out_q.qmax, m, s)


def _mean_ties(in_q: TensorQuant) -> tuple[str, int]:
    # LiteRT's optimized int8 MEAN runs blocks of 16 channels in vector code (ties up), the rest in scalar code
    return ("up", 16) if in_q.dtype == "int8" else ("away", 0)


def _add(layer: Layer, qs: list[TensorQuant], spec: ModelSpec, kernels: str) -> Requant:
    """ADD: both inputs rescaled to twice the larger input scale (after ADD_LEFT_SHIFT bits of headroom),
    summed, and the sum rescaled to the output."""
    if len(qs) != 2:
        raise ModelError(f"layer {layer.name!r}: integer add supports two inputs, got {len(qs)}")
    out_q = layer.quant.output
    s1, s2, so = (float(_scale(q)) for q in (*qs, out_q))
    twice = 2 * max(s1, s2)
    inputs = tuple(Requant(q.zero_point[0], 0, *_NO_CLAMP, *_fixed(s / twice))
                   for q, s in zip(qs, (s1, s2), strict=True))
    return Requant(0, out_q.zero_point[0], *activation_range(layer.activation, out_q),
                   *_fixed(twice / (float(1 << ADD_LEFT_SHIFT) * so)), inputs=inputs)


def _concat(layer: Layer, qs: list[TensorQuant], spec: ModelSpec, kernels: str) -> Requant:
    """CONCATENATION runs in its first input's quantization (TFLite requires inputs and output equal for int8):
    every input requantized to it (`inputs`, identities where they agree), joined, then requantized to the
    output's (`then`), as the exporter writes it (QUANTIZEs before and after)."""
    ties = _quantize_ties(kernels)
    inputs = tuple(requantize(q, qs[0], ties=ties) for q in qs)
    return replace(_keep(qs[0]), inputs=inputs, then=requantize(qs[0], layer.quant.output, ties=ties))


def _mul(layer: Layer, qs: list[TensorQuant], spec: ModelSpec, kernels: str) -> Requant:
    """MUL: (x1 - z1)(x2 - z2) requantized by s1 s2 / s_out, computed in float32 as TFLite's Prepare does."""
    if len(qs) != 2:
        raise ModelError(f"layer {layer.name!r}: integer mul supports two inputs, got {len(qs)}")
    out_q = layer.quant.output
    real = float(_F32(_scale(qs[0]) * _scale(qs[1])) / _scale(out_q))
    inputs = tuple(_keep(q) for q in qs)
    return Requant(0, out_q.zero_point[0], *activation_range(layer.activation, out_q), *_fixed(real),
                   *_mul_ties(kernels), inputs=inputs)


def _mul_ties(kernels: str) -> tuple:
    return ("away", 0, "element")


def _hard_swish(layer: Layer, qs: list[TensorQuant], spec: ModelSpec, kernels: str) -> Requant:
    """HARD_SWISH: TFLite's int16 fixed-point kernel (reference_ops::HardSwish, parameters as its Prepare derives
    them in float32), evaluated once for each of the 256 input codes: the kernel is that table."""
    in_q, out_q = qs[0], layer.quant.output
    hires = _F32(1 / 128) * _scale(in_q)
    out_m, out_e = _int16_multiplier(float(_F32(hires / _scale(out_q))))
    relu_m, relu_e = _int16_multiplier(float(_F32(hires / _F32(3 / 32768))))
    if out_e > 0:
        raise ModelError(f"layer {layer.name!r}: hard_swish output scale below its input's / 128; TFLite refuses it")
    codes = range(in_q.qmin, in_q.qmax + 1)
    table = [_hard_swish_code(c - in_q.zero_point[0], out_m, out_e, relu_m, relu_e) + out_q.zero_point[0]
             for c in codes]
    empty = np.zeros(0, np.int32)
    return Requant(in_q.zero_point[0], out_q.zero_point[0], out_q.qmin, out_q.qmax, empty, empty,
                   table=np.clip(table, out_q.qmin, out_q.qmax).astype(np.int64))


def _logistic(layer: Layer, qs: list[TensorQuant], spec: ModelSpec, kernels: str) -> Requant:
    """LOGISTIC: both LiteRT kernel sets use a table made in float32 (LUTPopulate): for each input code,
    round(1 / (1 + expf(-s_in (q - z_in))) / s_out) + z_out, half away from zero, clamped."""
    in_q, out_q = qs[0], layer.quant.output
    expf, one = libm_expf(), _F32(1)
    table = []
    for code in range(in_q.qmin, in_q.qmax + 1):
        x = _F32(_scale(in_q) * _F32(code - in_q.zero_point[0]))
        y = _F32(one / _F32(one + expf(-x))) * _F32(one / _scale(out_q))
        table.append(int(round_half_away(np.float32(y))) + out_q.zero_point[0])
    empty = np.zeros(0, np.int32)
    return Requant(in_q.zero_point[0], out_q.zero_point[0], out_q.qmin, out_q.qmax, empty, empty,
                   table=np.clip(table, out_q.qmin, out_q.qmax).astype(np.int64))


def libm_expf():
    """The C library's expf (as LiteRT's kernels call it) as a float32 -> float32 function."""
    name = ctypes.util.find_library("m")
    try:
        fn = ctypes.CDLL(name).expf if name else None
    except OSError:
        fn = None
    if fn is None:
        return lambda v: _F32(math.exp(float(v)))
    fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return lambda v: _F32(fn(float(v)))


def _int16_multiplier(real: float) -> tuple[int, int]:
    """QuantizeMultiplier, then DownScaleInt32ToInt16Multiplier: (int16 multiplier, exponent)."""
    m, e = (int(v) for v in quantize_multiplier(real))
    return (32767 if m >= 2**31 - 1 - 2**15 else (m + 2**15) >> 16), e


def _hard_swish_code(x: int, out_m: int, out_e: int, relu_m: int, relu_e: int) -> int:
    """reference_ops::HardSwish for one centred input code x, in Python integers (int16 saturation as in C)."""
    hires = x * 128
    preshift_out = _srdhm16(hires, out_m)
    relu = _sat16(hires * (1 << (relu_e - 1))) if relu_e > 0 else hires
    relu = _srdhm16(relu, relu_m)
    if relu_e > 0:
        relu = _sat16(relu * 2)
    elif relu_e < 0:
        relu = _rdbpot(relu, -relu_e)
    relu = (relu + (1 << 15)) >> 1
    preshift = 32767 if relu == preshift_out == -32768 else int(relu * preshift_out / (1 << 15))  # truncation
    return _rdbpot(preshift, -out_e)


def _sat16(v: int) -> int:
    return max(-32768, min(32767, v))


def _srdhm16(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul on int16."""
    if a == b == -32768:
        return 32767
    ab = a * b
    nudge = (1 << 14) if ab >= 0 else 1 - (1 << 14)
    return int((ab + nudge) / (1 << 15))  # C division truncates toward zero (exact: |ab| < 2**31)


def _rdbpot(x: int, e: int) -> int:
    """gemmlowp RoundingDivideByPOT (ties away from zero)."""
    mask = (1 << e) - 1
    return (x >> e) + (1 if (x & mask) > (mask >> 1) + (1 if x < 0 else 0) else 0)


_RULES = {"conv2d": _weighted, "depthwise_conv2d": _weighted, "linear": _weighted, "avg_pool2d": _pool,
          "max_pool2d": _pool, "global_avg_pool": _mean, "add": _add, "relu": _relu, "relu6": _relu,
          "quantize": _move, "reshape": _move, "flatten": _move, "pad": _move, "concat": _concat,
          "mul": _mul, "hard_swish": _hard_swish, "logistic": _logistic}


def prepare(qmodel: QuantizedModel, kernels: str = "optimized") -> dict[str, Requant | None]:
    """{layer name: its Requant} for every layer of `qmodel` on the kernel set `kernels` ("optimized" |
    "reference"); None for a layer that requantizes nothing (softmax: its output is computed in float)."""
    if kernels not in KERNELS:
        raise ConfigError(f"kernels={kernels!r} is not known; allowed: {', '.join(KERNELS)}")
    spec = qmodel.spec
    if spec.input_quant is None or any(ly.quant is None for ly in spec.layers):
        raise ModelError(f"model {spec.name!r} is not quantized: every layer needs `quant` and the model "
                         f"`input_quant` (use tinycl.quant.ptq.quantize_model or load_tflite)")
    records = {}
    for i, layer in enumerate(spec.layers):
        qs = [spec.input_quant if s == "input" else spec.layers[spec.index(s)].quant.output
              for s in spec.sources(layer, i)]
        for q in (*qs, layer.quant.output):
            if q.dtype not in ("int8", "uint8") or len(q.scale) != 1:
                raise ModelError(f"layer {layer.name!r}: activation quantization must be per-tensor int8 or uint8")
        rule = _RULES.get(layer.op)
        records[layer.name] = rule(layer, qs, spec, kernels) if rule else None
    return records
