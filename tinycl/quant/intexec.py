"""Integer-only execution of a `QuantizedModel`, bit-exact with LiteRT's CPU kernels.

Every layer computes what the TFLite kernel for its operator computes: int32 accumulation of
(x - x_zero) * (w - w_zero) plus the int32 bias, requantization by a fixed-point multiplier and shift
(`tinycl.quant.fixedpoint`), the output zero point, and a clamp to the fused activation's range.
`kernels` picks which of LiteRT's two built-in kernel sets to reproduce; they differ in rounding details
(tests compare both against ai-edge-litert 2.3, every tensor, exactly):

- "optimized" (LiteRT's built-in kernels, `OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`): CONV_2D,
  FULLY_CONNECTED and int8 DEPTHWISE_CONV_2D break second-rounding ties toward +infinity (int8 depthwise only on
  whole blocks of 8 channels, int8 MEAN on blocks of 16 channels, requantizing QUANTIZE on blocks of 16 elements:
  their vector code; the scalar tail breaks them away from zero), uint8 DEPTHWISE_CONV_2D away from zero; a
  float input is quantized as x * (1 / scale) rounded to nearest even.
- "reference" (`OpResolverType.BUILTIN_REF`, whose integer kernels TFLite Micro shares): ties away from zero
  everywhere; FULLY_CONNECTED rounds acc * (s_in * s_w / s_out) computed in float64 instead; a float input is
  quantized as x / scale rounded half away from zero.

Every requantization parameter (multipliers, shifts, tie rule, activation range) comes from the layer's record,
derived once by `tinycl.quant.requant.prepare` as TFLite's Prepare code derives it; the C int8 path reads the same
records. The kernels are registered in one table, `INTEGER_KERNELS` (op -> factory). LiteRT's
XNNPACK delegate, which a plain `Interpreter(model_path=...)` applies, is not reproduced: its convolutions
requantize with a float32 scale rounded to nearest even, and its depthwise and pooling kernels differ further.

Speed (same results, fast arithmetic; `benchmarks/intexec_speed.py`): 1x1 convolutions are one int8 x int8 ->
int32 matrix product (`torch._int_mm`, exact); other convolutions run as torch float32 convolutions on NHWC
memory when every partial sum provably stays below 2**24 (then float32 is exact; checked per layer from the
weights), else float64; requantization is a few float64 passes that equal TFLite's two fixed-point roundings
exactly while the accumulators stay below 2**20 (`tinycl.quant.fixedpoint.Float64Multiplier`; int64 NumPy
otherwise); the frozen stage runs its inputs in batches sized to the cache, on torch's threads. The executor
runs imported `.tflite` files and post-training quantized torch models (`tinycl.quant.ptq`) alike; layers whose
output quantization differs from their input's where TFLite requires them equal (pooling, pad, reshape,
concatenation) run in the input's quantization and then requantize, as the exporter
(`tinycl.model.tflite_export`) writes them.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from tinycl.errors import DataError, ModelError
from tinycl.model.ops import pads, window_counts
from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import Layer, ModelSpec, TensorQuant
from tinycl.model.split import Split
from tinycl.quant.fixedpoint import round_half_away, wrap_int32
from tinycl.quant.requant import ADD_LEFT_SHIFT, KERNELS, Requant, libm_expf, prepare

__all__ = ["INTEGER_KERNELS", "KERNELS", "IntegerModel", "IntegerFrozenStage", "quantize_input"]

_F32 = np.float32
BATCH_VALUES = 1 << 21  # values of the largest layer's output per batch, when no batch size is given


def _np_dtype(q: TensorQuant):
    return {"int8": np.int8, "uint8": np.uint8, "int32": np.int32}[q.dtype]


def _scale(q: TensorQuant) -> np.float32:
    return _F32(q.scale[0])


def quantize_input(x: np.ndarray, q: TensorQuant, kernels: str = "optimized") -> np.ndarray:
    """Float inputs -> integer codes as TFLite's QUANTIZE, plus the zero point, clamped. "optimized":
    x * (1 / scale) in float32 rounded to nearest even; "reference": x / scale rounded half away from zero."""
    x = np.asarray(x, dtype=np.float32)
    if kernels == "optimized":
        codes = np.rint(x * (_F32(1.0) / _scale(q)))
    else:
        codes = round_half_away(x / _scale(q))
    return np.clip(codes + q.zero_point[0], q.qmin, q.qmax).astype(_np_dtype(q))


def _requantize(rec: Requant, x: np.ndarray) -> np.ndarray:
    """Codes x (N, ...) in the record's input quantization -> int64 codes in its output's (QUANTIZE, RELU)."""
    return rec.apply(x.astype(np.int64) - rec.in_zero)


# -- layers: each kernel is made from (layer, its Requant record, the QuantizedModel) ---------------------
class _Weighted:
    """conv2d / depthwise_conv2d / linear: exact integer accumulation, per-channel requantization."""

    def __init__(self, layer: Layer, rec: Requant, qmodel: QuantizedModel):
        in_q, weights = qmodel.input_quant_of(layer.name), qmodel.weights[layer.name]
        w = weights["weight"].astype(np.int64)
        if rec.w_zero is not None:
            w = w - rec.w_zero.astype(np.int64).reshape((-1,) + (1,) * (w.ndim - 1))
        self.layer, self.rec = layer, rec
        x_max = max(abs(in_q.qmin - rec.in_zero), abs(in_q.qmax - rec.in_zero))
        # every partial sum is bounded by max|x - zx| * sum|w - zw| over one output's taps, plus the bias
        bias = weights["bias"].astype(np.int64) if "bias" in weights else np.zeros(w.shape[0], np.int64)
        self.bound = float(x_max * np.abs(w.reshape(w.shape[0], -1)).sum(axis=1).max() + np.abs(bias).max(initial=0))
        self.dtype = torch.float32 if self.bound < 2**24 else torch.float64  # float sums are exact below these
        self.w = torch.from_numpy(w.astype(np.float64)).to(self.dtype)
        if self.w.ndim == 4:
            self.w = self.w.contiguous(memory_format=torch.channels_last)
        self.bias = torch.from_numpy(bias.astype(np.float64)).to(self.dtype)
        self.may_wrap = self.bound >= 2**31  # int32 accumulators only wrap if the sum can leave the int32 range
        pointwise = layer.op == "conv2d" and layer.kernel == (1, 1) and not any(pads(layer, 2, 2) + pads(layer, 3, 3))
        int8able = np.ptp(w) <= 255 and w.shape[1] <= 4096 and not self.may_wrap  # int32 sums cannot overflow
        self.gemm = _Int8Gemm(w.reshape(w.shape[:2]), bias, rec.in_zero, in_q.dtype) if pointwise and int8able else None

    def __call__(self, ins: list[np.ndarray]) -> np.ndarray:
        acc = self.accumulate(torch.from_numpy(ins[0]))
        y = None if self.may_wrap else self.rec.apply_float(acc, self.bound)
        if y is not None:
            return y.numpy()
        acc = acc.numpy().astype(np.int64)  # the float sums are exact integers
        return self.rec.apply(wrap_int32(acc) if self.may_wrap else acc)

    def accumulate(self, codes: torch.Tensor) -> torch.Tensor:
        """Input codes (N, ...) -> exact integer accumulators (N, C, ...) including the bias, as floats (int32
        from the int8 GEMM of a 1x1 convolution)."""
        layer = self.layer
        if self.gemm is not None:
            return self.gemm(codes[:, :, :: layer.stride[0], :: layer.stride[1]])
        if layer.op == "linear":
            x = codes.reshape(len(codes), -1).to(self.dtype).sub_(self.rec.in_zero)  # exact: small integers
            return torch.addmm(self.bias, x, self.w.T)
        # NHWC in memory (channels_last): oneDNN's convolutions run several times faster on it than on NCHW
        x = codes.to(self.dtype, memory_format=torch.channels_last).sub_(self.rec.in_zero)
        t, b, l, r = pads(layer, x.shape[2], x.shape[3])
        pad = 0
        if t == b and l == r:
            pad = (t, l)
        else:  # TF SAME on stride 2: the extra row / column goes at the bottom / right
            x = F.pad(x, (l, r, t, b)).contiguous(memory_format=torch.channels_last)  # 0 = TFLite skipping the tap
        groups = x.shape[1] if layer.op == "depthwise_conv2d" else 1
        return F.conv2d(x, self.w, self.bias, stride=layer.stride, padding=pad, groups=groups)


class _Int8Gemm:
    """A 1x1 convolution as one int8 x int8 -> int32 matrix product (`torch._int_mm`; oneDNN runs it with the
    CPU's int8 dot-product instructions, ~10x float32's speed here), exact: every term is an integer and the
    int32 sums cannot overflow (K * 128 * 255 < 2**31 for K < 2**16).

    With x' = x - 128 (uint8 inputs, as int8) or x (int8 inputs) and w8 = the centred weights w - zw when they fit
    int8, else w - 128 with b = 128 - zw: sum (x - zx)(w - zw) = sum x' w8 + b sum x' + const, const = a sum w8 +
    K a b + bias (a = 128 - zx, or -zx for int8). The row sums of x' come from one more weight column of ones.

    w: (O, K) int64 weights minus their zero points; bias: (O,) int64."""

    def __init__(self, w: np.ndarray, bias: np.ndarray, in_zero: int, in_dtype: str):
        k = w.shape[1]
        self.shift_in = in_dtype == "uint8"
        a = (128 if self.shift_in else 0) - in_zero
        fits = w.min() >= -128 and w.max() <= 127
        # else one offset b moves all weights into int8 (uint8 weights minus one zero point span at most 255)
        b = np.full(w.shape[0], 0 if fits else int(np.ceil((w.max() + w.min()) / 2)), np.int64)
        w8 = w - b[:, None]
        self.extra = bool(b.any())
        cols = np.concatenate([w8, np.ones((1, k), np.int64)]) if self.extra else w8
        self.w = torch.from_numpy(cols.T.astype(np.int8).copy())
        self.b = torch.from_numpy(b.astype(np.int32))
        self.const = torch.from_numpy((a * w8.sum(axis=1) + k * a * b + bias).astype(np.int32))
        self.n_out = w.shape[0]

    def __call__(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, K, H, W) int8 / uint8 codes -> (N, O, H, W) int32 accumulators (NHWC in memory)."""
        n, k, h, wd = codes.shape
        x = codes.permute(0, 2, 3, 1).reshape(-1, k)
        if x.stride() != (k, 1):  # _int_mm reads the strides even of size-1 dimensions, which torch leaves odd
            x = torch.empty(x.shape, dtype=x.dtype).copy_(x)
        x = x.bitwise_xor(128).view(torch.int8) if self.shift_in else x  # x - 128 as int8: flip the top bit
        r = torch._int_mm(x, self.w)
        acc = r[:, : self.n_out] + self.const
        if self.extra:
            acc.addcmul_(r[:, self.n_out:], self.b)
        return acc.reshape(n, h, wd, self.n_out).permute(0, 3, 1, 2)


class _Pool:
    """AVERAGE_POOL_2D / MAX_POOL_2D in the input's quantization (TFLite requires output = input quant):
    the average is the integer mean over the window's valid (unpadded) taps, rounded half away from zero."""

    def __init__(self, layer: Layer, rec: Requant, qmodel: QuantizedModel):
        self.layer, self.rec = layer, rec

    def __call__(self, ins):
        layer, x = self.layer, torch.from_numpy(ins[0].astype(np.float64))
        h, w = x.shape[2], x.shape[3]
        t, b, l, r = pads(layer, h, w)
        if layer.op == "max_pool2d":
            x = F.pad(x, (l, r, t, b), value=-1e9) if t + b + l + r else x
            y = F.max_pool2d(x, layer.kernel, layer.stride).numpy().astype(np.int64)
        else:
            acc = F.avg_pool2d(F.pad(x, (l, r, t, b)), layer.kernel, layer.stride, divisor_override=1)
            acc, count = acc.numpy().astype(np.int64), window_counts(layer, h, w)
            y = np.sign(acc) * ((np.abs(acc) + count // 2) // count)  # C: (acc +- count/2) / count
        return _requantize(self.rec.then, np.clip(y, self.rec.act_min, self.rec.act_max))


class _Mean:
    """MEAN over H and W: the sum of (x - in_zero) over each channel, requantized by the record (see
    tinycl.quant.requant for its two forms)."""

    def __init__(self, layer: Layer, rec: Requant, qmodel: QuantizedModel):
        self.rec = rec

    def __call__(self, ins):
        return self.rec.apply((ins[0].astype(np.int64) - self.rec.in_zero).sum(axis=(2, 3)))


class _Add:
    """ADD: both inputs rescaled to the common scale (the record's `inputs`), summed, rescaled."""

    def __init__(self, layer: Layer, rec: Requant, qmodel: QuantizedModel):
        self.rec = rec

    def __call__(self, ins):
        total = sum(r.apply((x.astype(np.int64) - r.in_zero) << ADD_LEFT_SHIFT)
                    for x, r in zip(ins, self.rec.inputs, strict=True))
        return self.rec.apply(total)


class _Concat:
    """CONCATENATION along channels: each input requantized to the first one's quantization (the record's
    `inputs`), joined, requantized to the output's (`then`)."""

    def __init__(self, layer: Layer, rec: Requant, qmodel: QuantizedModel):
        self.rec = rec

    def __call__(self, ins):
        joined = np.concatenate([_requantize(r, x) for x, r in zip(ins, self.rec.inputs, strict=True)], axis=1)
        return _requantize(self.rec.then, joined)


class _Mul:
    """MUL: the product of both inputs' centred codes (broadcasting), requantized by the record."""

    def __init__(self, layer: Layer, rec: Requant, qmodel: QuantizedModel):
        self.rec = rec

    def __call__(self, ins):
        (a, ra), (b, rb) = zip(ins, self.rec.inputs, strict=True)
        prod = (a.astype(np.int64) - ra.in_zero) * (b.astype(np.int64) - rb.in_zero)
        return self.rec.apply(prod)


class _Table:
    """An elementwise op computed once per input code (HARD_SWISH, LOGISTIC): a lookup in the record's table."""

    def __init__(self, layer: Layer, rec: Requant, qmodel: QuantizedModel):
        self.rec, self.qmin = rec, qmodel.input_quant_of(layer.name).qmin

    def __call__(self, ins):
        return self.rec.table[ins[0].astype(np.int64) - self.qmin]


class _Softmax:
    """SOFTMAX as LiteRT's x86 kernel computes it: a float32 table of exp(-scale * d) for d = max - x (made with
    the C library's expf, as LiteRT does), a left-to-right float32 sum, and truncation (uint8) or rounding
    (int8) of the scaled probability."""

    def __init__(self, layer: Layer, rec: None, qmodel: QuantizedModel):
        expf = libm_expf()
        scale = -_scale(qmodel.input_quant_of(layer.name)) * _F32(1.0)  # beta = 1
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
    """Data movement (reshape, flatten, pad), QUANTIZE and standalone RELU / RELU6: values keep their codes
    (padding with the input's zero point), then the record requantizes them."""

    def __init__(self, layer: Layer, rec: Requant, qmodel: QuantizedModel):
        self.layer, self.rec = layer, rec

    def __call__(self, ins):
        x, layer = ins[0], self.layer
        if layer.op == "pad":
            t, b, l, r = layer.padding
            x = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=self.rec.in_zero)
        elif layer.op == "flatten":
            x = x.reshape(len(x), -1)
        elif layer.op == "reshape":
            x = x.reshape(len(x), *layer.shape)
        return _requantize(self.rec, x)


# op -> kernel factory (layer, Requant record, QuantizedModel): the one place integer kernels are registered
INTEGER_KERNELS = {"conv2d": _Weighted, "depthwise_conv2d": _Weighted, "linear": _Weighted, "avg_pool2d": _Pool,
                   "max_pool2d": _Pool, "global_avg_pool": _Mean, "add": _Add, "softmax": _Softmax, "relu": _Move,
                   "relu6": _Move, "quantize": _Move, "reshape": _Move, "flatten": _Move, "pad": _Move,
                   "concat": _Concat, "mul": _Mul, "hard_swish": _Table,
                   "logistic": _Table}


# -- the model ---------------------------------------------------------------------------------------------
class IntegerModel:
    """Runs a QuantizedModel's layers on integer codes (N, *input_shape) -> integer codes per layer.

    kernels: "optimized" (LiteRT's default built-in kernels) or "reference" (its reference kernels, = TFLite
    Micro's); see the module docstring."""

    def __init__(self, qmodel: QuantizedModel, kernels: str = "optimized"):
        self.records = prepare(qmodel, kernels)  # checks `kernels` and that the model is quantized
        self.qmodel, self.spec, self.kernels_name = qmodel, qmodel.spec, kernels
        self.kernels = {layer.name: self._kernel(layer) for layer in self.spec.layers}

    def _kernel(self, layer: Layer):
        if layer.op not in INTEGER_KERNELS:
            raise ModelError(f"layer {layer.name!r}: op {layer.op!r} has no integer kernel")
        return INTEGER_KERNELS[layer.op](layer, self.records[layer.name], self.qmodel)

    def run(self, codes: np.ndarray, upto: int | None = None, keep_all: bool = False):
        """Integer codes (in each layer's dtype) of layer `upto - 1` (default: the last layer) for input codes
        (N, *input_shape); with keep_all, a dict of every layer's codes instead."""
        def step(layer: Layer, ins: list[np.ndarray]) -> np.ndarray:
            return self.kernels[layer.name](ins).astype(_np_dtype(layer.quant.output))

        return self.spec.walk(step, codes, upto=upto, keep_all=keep_all)


class IntegerFrozenStage:
    """A frozen stage run in integers, bit-exact with LiteRT: the layers of `qmodel` up to and including
    `upto` (a layer name or index, as tinycl.model.split.Split takes; default: all). Satisfies
    tinycl.frozen.FrozenStage.

    batch_size: samples run together (default: from BATCH_VALUES). Input: (N, *input_shape). Integer arrays of the
    model input's dtype (e.g. uint8 images for the MobileNet files) are its codes and go in unchanged; float
    arrays are quantized with `spec.input_quant` as TFLite's QUANTIZE does. Images must already have the model's
    size: resize them first (the models' README resizes with PIL's `Image.resize`). `__call__` returns float32
    latents, scale * (code - zero_point) of the last frozen layer (what a DEQUANTIZE would give); `codes` returns
    the integer codes themselves.
    """

    def __init__(self, qmodel: QuantizedModel, upto: str | int | None = None, batch_size: int | None = None,
                 kernels: str = "optimized"):
        last = len(qmodel.spec.layers) - 1 if upto is None else upto
        self.qmodel = Split.at(qmodel.spec, last).frozen_model(qmodel)
        self.spec: ModelSpec = self.qmodel.spec
        self.model = IntegerModel(self.qmodel, kernels)
        largest = max((math.prod(self.spec.output_shape(n)) for n in self.spec.names), default=1)
        # default: samples per batch such that the largest layer's float64 work buffer is ~16 MB (cache-sized;
        # larger batches run slower per sample here, 2x at 224 x 224)
        self.batch_size = batch_size or max(1, BATCH_VALUES // largest)
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
        batches = [x[i: i + self.batch_size] for i in range(0, len(x), self.batch_size)]
        cores = torch.get_num_threads()
        if min(cores, len(batches)) <= 1:
            parts = [self.model.run(b) for b in batches]
        else:  # one batch per core, each op on one thread: no barrier per op, which small layers cannot amortise
            torch.set_num_threads(1)
            try:
                with ThreadPoolExecutor(min(cores, len(batches))) as pool:  # torch, NumPy release the GIL
                    parts = list(pool.map(self.model.run, batches))
            finally:
                torch.set_num_threads(cores)
        return np.concatenate(parts) if parts else x[:0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        q = self.output_quant
        return (self.codes(x).astype(np.int32) - q.zero_point[0]).astype(np.float32) * _scale(q)

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """{layer name: integer codes (N, *shape)} for every frozen layer (one batch, for checking)."""
        return self.model.run(self.quantize(x), keep_all=True)
