"""Integer-only execution of a `QuantizedModel`, bit-exact with LiteRT's CPU kernels.

Every layer computes what the TFLite kernel for its operator computes: int32 accumulation of
(x - x_zero) * (w - w_zero) plus the int32 bias, requantization by a fixed-point multiplier and shift
(`tinycl.quant.fixedpoint`), the output zero point, and a clamp to the fused activation's range.
`kernels` picks which of LiteRT's two built-in kernel sets to reproduce; they differ in rounding details
(tests compare both against ai-edge-litert 2.3, every tensor, exactly):

- "optimized" (LiteRT's built-in kernels, `OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`): CONV_2D,
  FULLY_CONNECTED and int8 DEPTHWISE_CONV_2D break second-rounding ties toward +infinity, uint8
  DEPTHWISE_CONV_2D away from zero; a float input is quantized as x * (1 / scale) rounded to nearest even.
- "reference" (`OpResolverType.BUILTIN_REF`, whose integer kernels TFLite Micro shares): ties away from zero
  everywhere; FULLY_CONNECTED rounds acc * (s_in * s_w / s_out) computed in float64 instead; a float input is
  quantized as x / scale rounded half away from zero.

Multipliers follow TFLite's Prepare code: uint8 layers and per-tensor FULLY_CONNECTED use the float32 product
s_in * s_w (the legacy path), int8 conv layers and per-channel FULLY_CONNECTED the float64 product. LiteRT's
XNNPACK delegate, which a plain `Interpreter(model_path=...)` applies, is not reproduced: its convolutions
requantize with a float32 scale rounded to nearest even, and its depthwise and pooling kernels differ further.

Speed: convolutions run as torch float32 convolutions when every partial sum provably stays below 2**24 (then
float32 is exact; checked per layer from the weights), else float64 (exact below 2**53); requantization runs
vectorised in int64 NumPy. The executor runs imported `.tflite` files and post-training quantized torch models
(`tinycl.quant.ptq`) alike; layers whose output quantization differs from their input's where TFLite requires
them equal (pooling, pad, reshape) run in the input's quantization and then requantize, as the exporter
(`tinycl.model.tflite_export`) writes them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math

import numpy as np
import torch
import torch.nn.functional as F

from tinycl.errors import ConfigError, DataError, ModelError
from tinycl.model.ops import pads
from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import Layer, ModelSpec, TensorQuant
from tinycl.quant.fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier, round_half_away, wrap_int32

__all__ = ["KERNELS", "IntegerModel", "IntegerFrozenStage", "quantize_input"]

KERNELS = ("optimized", "reference")
_F32 = np.float32


def _np_dtype(q: TensorQuant):
    return {"int8": np.int8, "uint8": np.uint8, "int32": np.int32}[q.dtype]


def _scale(q: TensorQuant) -> np.float32:
    return _F32(q.scale[0])


def _activation_range(act: str, q: TensorQuant) -> tuple[int, int]:
    """TFLite CalculateActivationRangeQuantized: the fused activation's bounds in output codes."""
    zero = q.zero_point[0]

    def code(v: float) -> int:
        return zero + int(round_half_away(np.array(_F32(v) / _scale(q), dtype=np.float32)))

    if act == "relu":
        return max(q.qmin, code(0.0)), q.qmax
    if act == "relu6":
        return max(q.qmin, code(0.0)), min(q.qmax, code(6.0))
    return q.qmin, q.qmax


def quantize_input(x: np.ndarray, q: TensorQuant, kernels: str = "optimized") -> np.ndarray:
    """Float inputs -> integer codes as TFLite's QUANTIZE, plus the zero point, clamped. "optimized":
    x * (1 / scale) in float32 rounded to nearest even; "reference": x / scale rounded half away from zero."""
    x = np.asarray(x, dtype=np.float32)
    if kernels == "optimized":
        codes = np.rint(x * (_F32(1.0) / _scale(q)))
    else:
        codes = round_half_away(x / _scale(q))
    return np.clip(codes + q.zero_point[0], q.qmin, q.qmax).astype(_np_dtype(q))


def _requantize_fn(in_q: TensorQuant, out_q: TensorQuant):
    """TFLite QUANTIZE from one integer quantization to another (also used after data-movement ops)."""
    if (_scale(in_q), in_q.zero_point[0]) == (_scale(out_q), out_q.zero_point[0]):
        return lambda x: x
    m, s = quantize_multiplier(float(_scale(in_q)) / float(_scale(out_q)))

    def requantize(x):
        y = multiply_by_quantized_multiplier(x.astype(np.int64) - in_q.zero_point[0], m, s)
        return np.clip(y + out_q.zero_point[0], out_q.qmin, out_q.qmax)

    return requantize


# -- layers ------------------------------------------------------------------------------------------------
class _Weighted:
    """conv2d / depthwise_conv2d / linear: exact integer accumulation, per-channel requantization."""

    def __init__(self, layer: Layer, in_q: TensorQuant, weights: dict, kernels: str):
        wq, out_q = layer.quant.weight, layer.quant.output
        w = weights["weight"].astype(np.int64)
        w = w - np.asarray(wq.zero_point, np.int64).reshape((-1,) + (1,) * (w.ndim - 1))
        self.layer, self.in_zero, self.out_zero = layer, in_q.zero_point[0], out_q.zero_point[0]
        x_max = max(abs(in_q.qmin - self.in_zero), abs(in_q.qmax - self.in_zero))
        # every partial sum is bounded by max|x - zx| * sum|w - zw| over one output's taps
        bound = x_max * np.abs(w.reshape(w.shape[0], -1)).sum(axis=1).max()
        self.dtype = torch.float32 if bound < 2**24 else torch.float64
        self.w = torch.from_numpy(w.astype(np.float64)).to(self.dtype)
        self.bias = weights["bias"].astype(np.int64) if "bias" in weights else None
        # int32 accumulators only wrap around if the sum can leave the int32 range
        self.may_wrap = bound + (np.abs(self.bias).max() if self.bias is not None and self.bias.size else 0) >= 2**31
        n_out = w.shape[0]
        s_in, s_out = _scale(in_q), _scale(out_q)
        s_w = np.broadcast_to(np.asarray(wq.scale, _F32), (n_out,))
        per_channel = len(wq.scale) > 1
        legacy = in_q.dtype == "uint8" or (layer.op == "linear" and not per_channel)
        if legacy:  # GetQuantizedConvolutionMultipler: the product of scales in float32
            real = (s_in * s_w).astype(np.float64) / float(s_out)
        else:  # PopulateConvolutionQuantizationParams: per channel, in float64
            real = float(s_in) * s_w.astype(np.float64) / float(s_out)
        self.mult, self.shift = quantize_multiplier(real)
        self.float_scale = None
        if kernels == "reference" and layer.op == "linear":  # reference FC: round(acc * scale) in double
            self.float_scale = float(s_in) * s_w.astype(np.float64) / float(s_out)
        self.ties = "up" if kernels == "optimized" and not (layer.op == "depthwise_conv2d"
                                                              and in_q.dtype == "uint8") else "away"
        self.lo, self.hi = _activation_range(layer.activation, out_q)
        self.chan = (1, -1) if layer.op == "linear" else (1, -1, 1, 1)

    def __call__(self, ins: list[np.ndarray]) -> np.ndarray:
        x = torch.from_numpy(ins[0]).to(self.dtype) - self.in_zero  # exact: codes are small integers
        layer = self.layer
        if layer.op == "linear":
            acc = (x.reshape(len(x), -1) @ self.w.T).numpy()
        else:
            t, b, l, r = pads(layer, x.shape[2], x.shape[3])
            pad = 0
            if t == b and l == r:
                pad = (t, l)
            else:  # TF SAME on stride 2: the extra row / column goes at the bottom / right
                x = F.pad(x, (l, r, t, b))  # (x - zx) padded with 0 = TFLite skipping the padded taps
            groups = x.shape[1] if layer.op == "depthwise_conv2d" else 1
            acc = F.conv2d(x, self.w, stride=layer.stride, padding=pad, groups=groups).numpy()
        acc = acc.astype(np.int64)  # the float sums are exact integers
        if self.bias is not None:
            acc += self.bias.reshape(self.chan)
        if self.may_wrap:
            acc = wrap_int32(acc)
        if self.float_scale is not None:
            y = round_half_away(acc * self.float_scale.reshape(self.chan)).astype(np.int64)
        else:
            y = multiply_by_quantized_multiplier(acc, self.mult.reshape(self.chan), self.shift.reshape(self.chan),
                                                 self.ties)
        return np.clip(y + self.out_zero, self.lo, self.hi)


class _Pool:
    """AVERAGE_POOL_2D / MAX_POOL_2D in the input's quantization (TFLite requires output = input quant):
    the average is the integer mean over the window's valid (unpadded) taps, rounded half away from zero."""

    def __init__(self, layer: Layer, in_q: TensorQuant):
        self.layer = layer
        self.lo, self.hi = _activation_range(layer.activation, in_q)
        self.requantize = _requantize_fn(in_q, layer.quant.output)

    def __call__(self, ins):
        layer, x = self.layer, torch.from_numpy(ins[0].astype(np.float64))
        t, b, l, r = pads(layer, x.shape[2], x.shape[3])
        if layer.op == "max_pool2d":
            x = F.pad(x, (l, r, t, b), value=-1e9) if t + b + l + r else x
            y = F.max_pool2d(x, layer.kernel, layer.stride).numpy().astype(np.int64)
        else:
            acc = F.avg_pool2d(F.pad(x, (l, r, t, b)), layer.kernel, layer.stride, divisor_override=1)
            ones = F.pad(torch.ones_like(x[:1, :1]), (l, r, t, b))
            count = F.avg_pool2d(ones, layer.kernel, layer.stride, divisor_override=1)
            acc, count = acc.numpy().astype(np.int64), count.numpy().astype(np.int64)
            y = np.sign(acc) * ((np.abs(acc) + count // 2) // count)  # C: (acc +- count/2) / count
        return self.requantize(np.clip(y, self.lo, self.hi))


class _Mean:
    """MEAN over H and W. keep_dims (a global_avg_pool followed by a reshape to (C, 1, 1)): LiteRT's 4-D kernel,
    whose bias and multiplier come from float32 arithmetic; otherwise the generic QuantizedMeanOrSum, which folds
    1/count into the multiplier."""

    def __init__(self, layer: Layer, in_q: TensorQuant, in_shape: tuple[int, ...], keep_dims: bool, kernels: str):
        out_q = layer.quant.output
        self.in_zero, self.out_q = in_q.zero_point[0], out_q
        self.count = in_shape[1] * in_shape[2]
        s_in, s_out = _scale(in_q), _scale(out_q)
        self.fold = not (keep_dims and kernels == "optimized")
        if not self.fold:
            temp = _F32(self.in_zero) * s_in / s_out
            temp = temp + _F32(0.5) if temp > 0 else temp - _F32(0.5)
            self.bias = out_q.zero_point[0] - int(temp)
            self.mult, self.shift = quantize_multiplier(float(s_in / (_F32(self.count) * s_out)))
        else:
            m, s = quantize_multiplier(float(s_in) / float(s_out))
            k = min(self.count.bit_length() - 1, 32, 31 + int(s))
            self.mult, self.shift = (int(m) << k) // self.count, int(s) - k
            self.bias = out_q.zero_point[0]

    def __call__(self, ins):
        acc = ins[0].astype(np.int64).sum(axis=(2, 3))
        if self.fold:
            acc = acc - self.in_zero * self.count
        y = multiply_by_quantized_multiplier(acc, self.mult, self.shift) + self.bias
        return np.clip(y, self.out_q.qmin, self.out_q.qmax)


class _Add:
    """ADD: both inputs rescaled to twice the larger input scale with 20 bits of headroom, summed, rescaled."""

    def __init__(self, layer: Layer, qs: list[TensorQuant]):
        out_q = layer.quant.output
        s1, s2, so = (float(_scale(q)) for q in (*qs, out_q))
        twice = 2 * max(s1, s2)
        self.zeros = [q.zero_point[0] for q in qs]
        self.m = [quantize_multiplier(s / twice) for s in (s1, s2)]
        self.mo = quantize_multiplier(twice / (float(1 << 20) * so))
        self.out_zero = out_q.zero_point[0]
        self.lo, self.hi = _activation_range(layer.activation, out_q)

    def __call__(self, ins):
        total = 0
        for x, zero, (m, s) in zip(ins, self.zeros, self.m, strict=True):
            total = total + multiply_by_quantized_multiplier((x.astype(np.int64) - zero) << 20, m, s)
        y = multiply_by_quantized_multiplier(total, *self.mo) + self.out_zero
        return np.clip(y, self.lo, self.hi)


class _Relu:
    """Standalone RELU / RELU6: requantize (multiplier from the float32 ratio of scales), then clamp."""

    def __init__(self, layer: Layer, in_q: TensorQuant):
        out_q = layer.quant.output
        self.in_zero, self.out_zero = in_q.zero_point[0], out_q.zero_point[0]
        self.m, self.s = quantize_multiplier(float(_scale(in_q) / _scale(out_q)))
        self.lo, self.hi = _activation_range(layer.op, out_q)

    def __call__(self, ins):
        y = self.out_zero + multiply_by_quantized_multiplier(ins[0].astype(np.int64) - self.in_zero, self.m, self.s)
        return np.clip(y, self.lo, self.hi)


def _libm_expf():
    name = ctypes.util.find_library("m")
    try:
        fn = ctypes.CDLL(name).expf if name else None
    except OSError:
        fn = None
    if fn is None:
        return lambda v: _F32(math.exp(float(v)))
    fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return lambda v: _F32(fn(float(v)))


class _Softmax:
    """SOFTMAX as LiteRT's x86 kernel computes it: a float32 table of exp(-scale * d) for d = max - x (made with
    the C library's expf, as LiteRT does), a left-to-right float32 sum, and truncation (uint8) or rounding
    (int8) of the scaled probability."""

    def __init__(self, layer: Layer, in_q: TensorQuant):
        expf = _libm_expf()
        scale = -_scale(in_q) * _F32(1.0)  # beta = 1
        self.table = np.array([expf(scale * _F32(d)) for d in range(256)], dtype=np.float32)
        self.out_q = layer.quant.output

    def __call__(self, ins):
        x = ins[0].astype(np.int64)
        e = self.table[x.max(axis=1, keepdims=True) - x]
        total = np.add.accumulate(e, axis=1, dtype=np.float32).take([-1], axis=1)
        inv = (_F32(1.0) / (total * _scale(self.out_q))).astype(np.float32)
        p = (e * inv).astype(np.float32)
        if self.out_q.dtype == "uint8":  # static_cast<int32>(p + 0.5f): the zero point is taken as 0
            y = np.trunc(p + _F32(0.5)).astype(np.int64)
        else:
            y = round_half_away(p).astype(np.int64) + self.out_q.zero_point[0]
        return np.clip(y, self.out_q.qmin, self.out_q.qmax)


class _Move:
    """Data movement (reshape, flatten, pad): values keep their codes; requantize if the output differs."""

    def __init__(self, layer: Layer, in_q: TensorQuant):
        self.layer, self.in_zero = layer, in_q.zero_point[0]
        self.requantize = _requantize_fn(in_q, layer.quant.output)

    def __call__(self, ins):
        x, layer = ins[0], self.layer
        if layer.op == "pad":
            t, b, l, r = layer.padding
            x = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=self.in_zero)
        elif layer.op == "flatten":
            x = x.reshape(len(x), -1)
        elif layer.op == "reshape":
            x = x.reshape(len(x), *layer.shape)
        return self.requantize(x)


# -- the model ---------------------------------------------------------------------------------------------
class IntegerModel:
    """Runs a QuantizedModel's layers on integer codes (N, *input_shape) -> integer codes per layer.

    kernels: "optimized" (LiteRT's default built-in kernels) or "reference" (its reference kernels, = TFLite
    Micro's); see the module docstring."""

    def __init__(self, qmodel: QuantizedModel, kernels: str = "optimized"):
        if kernels not in KERNELS:
            raise ConfigError(f"kernels={kernels!r} is not known; allowed: {', '.join(KERNELS)}")
        self.qmodel, self.spec, self.kernels_name = qmodel, qmodel.spec, kernels
        spec = qmodel.spec
        if spec.input_quant is None or any(ly.quant is None for ly in spec.layers):
            raise ModelError(f"model {spec.name!r} is not quantized: every layer needs `quant` and the model "
                             f"`input_quant` (use tinycl.quant.ptq.quantize_model or load_tflite)")
        self.kernels = [self._kernel(i, layer) for i, layer in enumerate(spec.layers)]

    def _kernel(self, i: int, layer: Layer):
        spec, kernels = self.spec, self.kernels_name
        sources = layer.inputs or ((spec.layers[i - 1].name if i else "input"),)
        qs = [spec.input_quant if s == "input" else spec.layers[spec.index(s)].quant.output for s in sources]
        in_shape = spec.input_shape_of(layer.name)
        for q in (*qs, layer.quant.output):
            if q.dtype not in ("int8", "uint8") or len(q.scale) != 1:
                raise ModelError(f"layer {layer.name!r}: activation quantization must be per-tensor int8 or uint8")
        op = layer.op
        if layer.has_weights:
            return _Weighted(layer, qs[0], self.qmodel.weights[layer.name], kernels)
        if op in ("avg_pool2d", "max_pool2d"):
            return _Pool(layer, qs[0])
        if op == "global_avg_pool":
            nxt = spec.layers[i + 1] if i + 1 < len(spec.layers) else None
            keep = nxt is not None and nxt.op == "reshape" and nxt.shape == (in_shape[0], 1, 1)
            return _Mean(layer, qs[0], in_shape, keep, kernels)
        if op == "add":
            if len(qs) != 2:
                raise ModelError(f"layer {layer.name!r}: integer add supports two inputs, got {len(qs)}")
            return _Add(layer, qs)
        if op in ("relu", "relu6"):
            return _Relu(layer, qs[0])
        if op == "softmax":
            return _Softmax(layer, qs[0])
        if op == "quantize":
            requantize = _requantize_fn(qs[0], layer.quant.output)
            return lambda ins: requantize(ins[0])
        if op in ("reshape", "flatten", "pad"):
            return _Move(layer, qs[0])
        raise ModelError(f"layer {layer.name!r}: op {op!r} has no integer kernel")

    def run(self, codes: np.ndarray, upto: int | None = None, keep_all: bool = False):
        """Integer codes (in each layer's dtype) of layer `upto - 1` (default: the last layer) for input codes
        (N, *input_shape); with keep_all, a dict of every layer's codes instead."""
        spec = self.spec
        n = len(spec.layers) if upto is None else upto
        needed = {name for layer in spec.layers[:n] for name in layer.inputs}
        saved = {"input": codes}
        x = codes
        for layer, kernel in zip(spec.layers[:n], self.kernels[:n], strict=True):
            ins = [saved[s] for s in layer.inputs] if layer.inputs else [x]
            x = kernel(ins).astype(_np_dtype(layer.quant.output))
            if keep_all or layer.name in needed:
                saved[layer.name] = x
        if keep_all:
            saved.pop("input")
            return saved
        return x


class IntegerFrozenStage:
    """A frozen stage run in integers, bit-exact with LiteRT: the layers of `qmodel` up to and including
    `upto` (default: all). Satisfies tinycl.frozen.FrozenStage.

    Input: (N, *input_shape). Integer arrays of the model input's dtype (e.g. uint8 images for the MobileNet
    files) are its codes and go in unchanged; float arrays are quantized with `spec.input_quant` as TFLite's
    QUANTIZE does. Images must already have the model's size: resize them first (the models' README resizes
    with PIL's `Image.resize`). `__call__` returns float32 latents, scale * (code - zero_point) of the last
    frozen layer (what a DEQUANTIZE would give); `codes` returns the integer codes themselves.
    """

    def __init__(self, qmodel: QuantizedModel, upto: str | None = None, batch_size: int = 64,
                 kernels: str = "optimized"):
        full = qmodel.spec
        n = len(full.layers) if upto is None else full.index(upto) + 1
        self.spec: ModelSpec = full.with_layers(full.layers[:n], input_quant=full.input_quant,
                                                name=f"{full.name}[:{n}]")
        self.qmodel = QuantizedModel(self.spec, {k: v for k, v in qmodel.weights.items() if k in self.spec.names})
        self.model = IntegerModel(self.qmodel, kernels)
        self.batch_size = batch_size
        self.nbytes = self.qmodel.nbytes

    @property
    def output_quant(self) -> TensorQuant:
        return self.spec.layers[-1].quant.output if self.spec.layers else self.spec.input_quant

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Input codes for x (see the class docstring)."""
        x = np.asarray(x)
        iq = self.spec.input_quant
        if tuple(x.shape[1:]) != tuple(self.spec.input_shape):
            raise DataError(f"input of shape {tuple(x.shape[1:])} per sample; the model takes "
                            f"{tuple(self.spec.input_shape)} (CHW): resize images to the model's size first")
        if np.issubdtype(x.dtype, np.integer):
            if x.dtype != _np_dtype(iq):
                raise DataError(f"integer input of dtype {x.dtype}, but the model's input codes are {iq.dtype}; "
                                f"pass {iq.dtype} codes or float values")
            return x
        return quantize_input(x, iq, self.model.kernels_name)

    def codes(self, x: np.ndarray) -> np.ndarray:
        """(N, *input_shape) -> integer codes (N, *latent_shape) of the last frozen layer, in its dtype."""
        x = self.quantize(x)
        parts = [self.model.run(x[i: i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        return np.concatenate(parts) if parts else x[:0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        q = self.output_quant
        return (self.codes(x).astype(np.int32) - q.zero_point[0]).astype(np.float32) * _scale(q)

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """{layer name: integer codes (N, *shape)} for every frozen layer (one batch, for checking)."""
        return self.model.run(self.quantize(x), keep_all=True)
