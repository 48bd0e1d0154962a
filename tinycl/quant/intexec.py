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

Speed (same results, fast arithmetic; `benchmarks/intexec_speed.py`, docs/tflite_speed.md): convolutions run on
whole batches of NHWC codes through the C runtime (tinycl/csrc/int8_fast.c, checked buffers): a conv2d is one
int8 x int8 -> int32 matrix product (`torch._int_mm`, exact) over its input rows (1x1) or C's im2col patches,
then C requantizes every row; a depthwise conv accumulates its taps in int32 in C and requantizes in the same
pass. Requantization there is `tinycl.quant.fixedpoint.Float64Multiplier`'s float64 form of TFLite's two
roundings, exact for every int32 accumulator whose shift cannot wrap; a layer takes that path only where its
accumulator bound (from its weights) proves the sums fit, and otherwise runs as torch float32 / float64
convolutions (exact below 2**24 / 2**53) with the requantization in float64 or int64 NumPy, as it does on a host
without a C compiler. Activations stay NHWC in memory between fast layers (NCHW-shaped views); the frozen stage
runs its inputs in batches sized to the cache, one batch per core.

The executor runs imported `.tflite` files and post-training quantized torch models (`tinycl.quant.ptq`) alike;
layers whose output quantization differs from their input's where TFLite requires them equal (pooling, pad,
reshape, concatenation) run in the input's quantization and then requantize, as the exporter
(`tinycl.model.tflite_export`) writes them.
"""

from __future__ import annotations

import functools
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from tinycl.errors import ConfigError, DataError, ModelError
from tinycl.model.ops import pads, window_counts
from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import Layer, ModelSpec, TensorQuant
from tinycl.model.split import Split
from tinycl.quant.fixedpoint import round_half_away, wrap_int32
from tinycl.quant.requant import ADD_LEFT_SHIFT, KERNELS, Requant, libm_expf, prepare
from tinycl.runtime import conv_shape

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
    """conv2d / depthwise_conv2d / linear: exact integer accumulation, per-channel requantization; through the C
    runtime's fast kernels (`fast`) where `_fast_kernel` proves them exact, else torch convolutions."""

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
        self.fast = _fast_kernel(layer, rec, qmodel, w, bias, self.bound)

    def __call__(self, ins: list[np.ndarray]) -> np.ndarray:
        if self.fast is not None:
            return self.fast(ins[0])
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

    w: (O, K) int64 weights minus their zero points; bias: (O,) int64; k_pad: the inputs' row length, K or more
    (zero columns past K, which add nothing)."""

    def __init__(self, w: np.ndarray, bias: np.ndarray, in_zero: int, in_dtype: str, k_pad: int | None = None):
        k = w.shape[1]
        self.shift_in = in_dtype == "uint8"
        a = (128 if self.shift_in else 0) - in_zero
        fits = w.min() >= -128 and w.max() <= 127
        # else one offset b moves all weights into int8 (uint8 weights minus one zero point span at most 255)
        b = np.full(w.shape[0], 0 if fits else int(np.ceil((w.max() + w.min()) / 2)), np.int64)
        w8 = w - b[:, None]
        self.extra = bool(b.any())
        cols = np.concatenate([w8, np.ones((1, k), np.int64)]) if self.extra else w8
        cols = np.pad(cols, ((0, 0), (0, (k_pad or k) - k)))
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
        r = self.products(x)
        acc = r[:, : self.n_out] + self.const
        if self.extra:
            acc.addcmul_(r[:, self.n_out:], self.b)
        return acc.reshape(n, h, wd, self.n_out).permute(0, 3, 1, 2)

    def products(self, x: torch.Tensor, shifted: bool = False) -> torch.Tensor:
        """(M, K) codes (rows contiguous; `shifted`: uint8 codes already minus 128, as int8) -> (M, O) int32 sums
        of x' w8, plus a column of the row sums of x' where the weights were offset."""
        if self.shift_in and not shifted:
            x = x.bitwise_xor(128).view(torch.int8)  # x - 128 as int8: flip the top bit
        return torch._int_mm(x, self.w)


# -- the fast path: whole batches of NHWC codes through the C runtime (tinycl/csrc/int8_fast.c) --------------
@functools.cache
def _fast_library():
    """The C runtime, or None on a host without a C compiler (the torch path then runs every layer)."""
    from tinycl.runtime import load_library

    try:
        return load_library()
    except ConfigError:
        return None


def _nhwc_bytes(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) codes -> their (N, H, W, C) bytes, C-contiguous (free when x is an NHWC array's view)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).view(np.uint8)


def _span(channels: int) -> int:
    """Values per flat span of the C kernels: whole pixels, at least 256 values (full vectors for few channels)."""
    return channels * -(-256 // channels)


def _fast_kernel(layer: Layer, rec: Requant, qmodel: QuantizedModel, w: np.ndarray, bias: np.ndarray,
                 bound: float):
    """The fast kernel of a conv2d / depthwise_conv2d layer, or None where it would not be exact or does not apply:
    no C compiler, a requantization without an exact float64 form for |acc| <= `bound` (which also keeps the int32
    sums from overflowing), weights that do not fit the int8 GEMM, a depth multiplier, too many channels.
    w: its weights minus their zero points (int64)."""
    lib = _fast_library()
    c = w.shape[0]
    f = rec.float64(c)
    if lib is None or f is None or bound >= min(f.limit, 2**31) or layer.op == "linear" \
            or _span(c) > lib.constant("TCL_FAST_MAX_LEN"):
        return None
    q = lib.new("tcl_requant_f64", **f.arrays(c, _span(c)))
    in_q = qmodel.input_quant_of(layer.name)
    shape = conv_shape(qmodel.spec, layer)
    if layer.op == "depthwise_conv2d":
        fits = shape.c_in == c and shape.k_h * shape.k_w <= lib.constant("TCL_FAST_MAX_TAPS")
        return _FastDepthwise(lib, shape, q, rec.in_zero, in_q.dtype, w, bias) if fits else None
    if np.ptp(w) > 255 or w[0].size >= 2**16:  # int8 GEMM operands; _int_mm's int32 sums, < 2**16 * 128 * 128
        return None
    strided = (-(-shape.h_in // shape.s_h), -(-shape.w_in // shape.s_w)) == (shape.h_out, shape.w_out)
    pointwise = layer.kernel == (1, 1) and not (shape.pad_top or shape.pad_left) and strided
    return _FastConv(lib, shape, q, rec.in_zero, in_q.dtype, w, bias, pointwise)


def _checked(status: int, what: str) -> None:
    if status != 0:  # the Python side sizes everything C checks: a refusal here is a bug, not bad input
        raise RuntimeError(f"{what}: the C kernel refused its arguments")


class _FastDepthwise:
    """DEPTHWISE_CONV_2D (depth multiplier 1) of a whole batch in one C call: int32 sums over each output's taps,
    requantized by the record's float64 form, NHWC bytes in and out."""

    def __init__(self, lib, shape, q, in_zero: int, in_dtype: str, w: np.ndarray, bias: np.ndarray):
        self.lib, self.shape, self.q, self.in_zero = lib, shape, q, in_zero
        self.flip = int(in_dtype == "int8")
        reps = q.ptr.len // shape.c_out
        taps = w[:, 0].reshape(shape.c_out, -1).T  # (kh * kw, C)
        self.w = np.ascontiguousarray(np.tile(taps, (1, reps)), dtype=np.int32)
        self.bias = np.tile(bias, reps).astype(np.int32)
        ring = shape.s_w * (shape.w_out + (shape.k_w - 1) // shape.s_w) * shape.c_in
        self.work = _Work(shape.k_h * (1 + ring))
        self.out_dtype = np.int8 if q.ptr.flip else np.uint8

    def __call__(self, x: np.ndarray) -> np.ndarray:
        s, n = self.shape, len(x)
        y = np.empty((n, s.h_out, s.w_out, s.c_out), np.uint8)
        _checked(self.lib.fast_depthwise(s, n, self.in_zero, self.flip, _nhwc_bytes(x), self.w, self.bias, self.q,
                                         self.work.get(), y), "depthwise")
        return y.view(self.out_dtype).transpose(0, 3, 1, 2)


class _Work(threading.local):
    """An int32 work buffer per thread (the frozen stage runs one batch per core)."""

    def __init__(self, size: int):
        self.size, self.buffer = size, None

    def get(self) -> np.ndarray:
        if self.buffer is None:
            self.buffer = np.empty(self.size, np.int32)
        return self.buffer


class _FastConv:
    """CONV_2D as one int8 x int8 -> int32 matrix product (`_Int8Gemm`) over the inputs' patches (NHWC rows, made
    by C's im2col unless the convolution is 1x1 without padding), then C's requantization of every row."""

    def __init__(self, lib, shape, q, in_zero: int, in_dtype: str, w: np.ndarray, bias: np.ndarray,
                 pointwise: bool):
        self.lib, self.shape, self.q, self.pointwise = lib, shape, q, pointwise
        k = w[0].size
        # patch rows: whole groups of 4 for the int8 dot-product instructions, and a byte of slack for im2col
        self.k_pad = k if pointwise else -(-(k + 1) // 4) * 4
        # patches in (kh, kw, C_in) order from NHWC inputs, (C_in, kh, kw) from NCHW ones (the model's input)
        self.gemm = _Int8Gemm(w.transpose(0, 2, 3, 1).reshape(len(w), k), bias, in_zero, in_dtype, self.k_pad)
        nchw = w.shape[2:] == (1, 1)  # one tap: both orders agree
        self.gemm_nchw = self.gemm if nchw else _Int8Gemm(w.reshape(len(w), k), bias, in_zero, in_dtype, self.k_pad)
        self.flip = 0x80 if self.gemm.shift_in else 0
        self.fill = (in_zero & 0xFF) ^ self.flip  # the zero point's byte: a tap outside the input adds nothing
        self.add = self.gemm.const.numpy()
        self.b = self.gemm.b.numpy() if self.gemm.extra else None
        self.out_dtype = np.int8 if q.ptr.flip else np.uint8

    def __call__(self, x: np.ndarray) -> np.ndarray:
        s, n = self.shape, len(x)
        if self.pointwise:
            rows = torch.from_numpy(np.ascontiguousarray(x[:, :, :: s.s_h, :: s.s_w].transpose(0, 2, 3, 1)))
            r = self.gemm.products(rows.reshape(-1, s.c_in))
        else:
            cols = np.empty((n * s.h_out * s.w_out, self.k_pad), np.uint8)
            nchw = x.flags.c_contiguous  # e.g. the model's input, as the caller gave it
            data = x.view(np.uint8) if nchw else _nhwc_bytes(x)
            self.lib.fast_im2col(s, n, int(not nchw), self.k_pad, self.flip, self.fill, data, cols)
            gemm = self.gemm_nchw if nchw else self.gemm
            r = gemm.products(torch.from_numpy(cols).view(torch.int8), shifted=True)
        y = np.empty((n, s.h_out, s.w_out, s.c_out), np.uint8)
        _checked(self.lib.fast_requant_rows(len(r), s.c_out, r.shape[1], r.numpy(), self.add, self.b, self.q, y),
                 "requantization")
        return y.view(self.out_dtype).transpose(0, 3, 1, 2)


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
    Micro's); see the module docstring. fast: False runs every layer on the torch path, without the C runtime's
    kernels (the same bits, slower; for comparisons)."""

    def __init__(self, qmodel: QuantizedModel, kernels: str = "optimized", fast: bool = True):
        self.records = prepare(qmodel, kernels)  # checks `kernels` and that the model is quantized
        self.qmodel, self.spec, self.kernels_name, self.fast = qmodel, qmodel.spec, kernels, fast
        self.kernels = self._kernels()

    def _kernels(self) -> dict:
        kernels = {layer.name: self._kernel(layer) for layer in self.spec.layers}
        for kernel in kernels.values() if not self.fast else ():
            if isinstance(kernel, _Weighted):
                kernel.fast = None
        return kernels

    # pickled (e.g. to a sweep's worker) without its kernels, which hold the C library: rebuilt where unpickled
    def __getstate__(self) -> dict:
        return {**self.__dict__, "kernels": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.kernels = self._kernels()

    def _kernel(self, layer: Layer):
        if layer.op not in INTEGER_KERNELS:
            raise ModelError(f"layer {layer.name!r}: op {layer.op!r} has no integer kernel")
        return INTEGER_KERNELS[layer.op](layer, self.records[layer.name], self.qmodel)

    def run(self, codes: np.ndarray, upto: int | None = None, keep_all: bool = False):
        """Integer codes (in each layer's dtype) of layer `upto - 1` (default: the last layer) for input codes
        (N, *input_shape); with keep_all, a dict of every layer's codes instead."""
        def step(layer: Layer, ins: list[np.ndarray]) -> np.ndarray:
            y = self.kernels[layer.name](ins).astype(_np_dtype(layer.quant.output), copy=False)
            # a kernel may return a reversed view (a registered data-movement op); torch takes no negative strides
            return y.copy(order="K") if any(s < 0 for s in y.strides) else y

        return self.spec.walk(step, codes, upto=upto, keep_all=keep_all)


class IntegerFrozenStage:
    """A frozen stage run in integers, bit-exact with LiteRT: the layers of `qmodel` up to and including
    `upto` (a layer name or index, as tinycl.model.split.Split takes; default: all). Satisfies
    tinycl.frozen.FrozenStage.

    batch_size: samples run together (default: from BATCH_VALUES); kernels, fast: as IntegerModel takes them.
    Input: (N, *input_shape). Integer arrays of the model input's dtype (e.g. uint8 images for the MobileNet files)
    are its codes and go in unchanged; float arrays are quantized with `spec.input_quant` as TFLite's QUANTIZE
    does. Images must already have the model's size: resize them first (the models' README resizes with PIL's
    `Image.resize`). `__call__` returns float32 latents, scale * (code - zero_point) of the last frozen layer (what
    a DEQUANTIZE would give); `codes` returns the integer codes themselves.
    """

    def __init__(self, qmodel: QuantizedModel, upto: str | int | None = None, batch_size: int | None = None,
                 kernels: str = "optimized", fast: bool = True):
        last = len(qmodel.spec.layers) - 1 if upto is None else upto
        self.qmodel = Split.at(qmodel.spec, last).frozen_model(qmodel)
        self.spec: ModelSpec = self.qmodel.spec
        self.model = IntegerModel(self.qmodel, kernels, fast)
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
