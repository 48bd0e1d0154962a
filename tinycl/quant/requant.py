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

from dataclasses import dataclass, replace

import numpy as np

from tinycl.errors import ConfigError, ModelError
from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import Layer, ModelSpec, TensorQuant
from tinycl.quant.fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier, round_half_away

__all__ = ["ADD_LEFT_SHIFT", "KERNELS", "Requant", "activation_range", "prepare", "requantize"]

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
    quantization and are only clamped: pooling, data movement). w_zero: (C,) int32 weight zero points, or None
    (all zero). inputs: ADD only, each input's rescaling to the common scale. then: pooling and data movement,
    the QUANTIZE to the output's quantization after an op that runs in its input's."""

    in_zero: int
    out_zero: int
    act_min: int
    act_max: int
    multiplier: np.ndarray
    shift: np.ndarray
    ties: str = "away"
    w_zero: np.ndarray | None = None
    real_scale: np.ndarray | None = None
    inputs: tuple[Requant, ...] = ()
    then: Requant | None = None

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


def requantize(in_q: TensorQuant, out_q: TensorQuant, act: str = "none", real=None) -> Requant:
    """TFLite QUANTIZE from `in_q` to `out_q` (identity when they agree), or with `real` given a RELU's rescaling
    by that multiplier, clamped to `act`."""
    if real is None:
        if (_scale(in_q), in_q.zero_point[0]) == (_scale(out_q), out_q.zero_point[0]):
            return _keep(out_q, act)
        real = float(_scale(in_q)) / float(_scale(out_q))
    return Requant(in_q.zero_point[0], out_q.zero_point[0], *activation_range(act, out_q), *_fixed(real))


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
    w_zero = np.broadcast_to(np.asarray(wq.zero_point, np.int32), (n_out,))
    return Requant(in_q.zero_point[0], out_q.zero_point[0], *activation_range(layer.activation, out_q),
                   *_fixed(real), "up" if up else "away", w_zero.copy() if np.any(w_zero) else None, real_scale)


def _pool(layer: Layer, qs: list[TensorQuant], spec: ModelSpec, kernels: str) -> Requant:
    # TFLite requires pooling's output quantization to equal its input's: run in the input's, then QUANTIZE
    return replace(_keep(qs[0], layer.activation), then=requantize(qs[0], layer.quant.output))


def _move(layer: Layer, qs: list[TensorQuant], spec: ModelSpec, kernels: str) -> Requant:
    """QUANTIZE, and data movement (pad, flatten, reshape) in the input's quantization, then to the output's."""
    return requantize(qs[0], layer.quant.output)


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
        return Requant(0, out_q.zero_point[0] - int(temp), out_q.qmin, out_q.qmax, m, s)
    m, s = quantize_multiplier(float(s_in) / float(s_out))
    k = min(count.bit_length() - 1, 32, 31 + int(s))
    m, s = np.array([(int(m) << k) // count], np.int32), np.array([int(s) - k], np.int32)
    return Requant(in_q.zero_point[0], out_q.zero_point[0], out_q.qmin, out_q.qmax, m, s)


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


_RULES = {"conv2d": _weighted, "depthwise_conv2d": _weighted, "linear": _weighted, "avg_pool2d": _pool,
          "max_pool2d": _pool, "global_avg_pool": _mean, "add": _add, "relu": _relu, "relu6": _relu,
          "quantize": _move, "reshape": _move, "flatten": _move, "pad": _move}


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
