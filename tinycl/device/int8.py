"""The frozen stage on the C runtime's int8 kernels (csrc/int8.c), with TFLite's integer arithmetic.

`DeviceIntegerModel` runs a `QuantizedModel` (from `tinycl.model.tflite.load_tflite` or
`tinycl.quant.ptq.quantize_model`) one sample at a time in CHW, as the device does, and gives the codes
`tinycl.quant.intexec.IntegerModel` gives with the same `kernels` choice: the multipliers, rounding ties and
activation ranges are derived here as that executor derives them (keep the two in step; the tests compare them
exactly). uint8 tensors run as int8 codes shifted by -128 (their differences, and so every accumulator, are
unchanged); the shift is undone on the way out.
"""

from __future__ import annotations

import ctypes

import numpy as np

from tinycl.device.runtime import Library, TclRequant, conv_shape, load_library
from tinycl.errors import ConfigError, ModelError
from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import Layer, TensorQuant
from tinycl.quant.fixedpoint import quantize_multiplier
from tinycl.quant.intexec import KERNELS, _activation_range

__all__ = ["INT8_OPS", "DeviceIntegerModel"]

INT8_OPS = ("conv2d", "depthwise_conv2d", "linear", "avg_pool2d", "max_pool2d", "relu", "relu6", "quantize",
            "flatten", "reshape")
TIES_AWAY, TIES_UP = 0, 1  # TCL_TIES_* of tinycl.h
_F32 = np.float32
_I8 = ctypes.POINTER(ctypes.c_int8)
_I32 = ctypes.POINTER(ctypes.c_int32)


def _offset(q: TensorQuant) -> int:
    return 128 if q.dtype == "uint8" else 0


def _scale(q: TensorQuant) -> np.float32:
    return _F32(q.scale[0])


def _p8(a: np.ndarray):
    return a.ctypes.data_as(_I8)


class _Requant:
    """A tcl_requant record and the arrays it points to (kept alive with it). Codes are in the shifted int8
    domain: zero points and clamps are given in the tensors' own dtypes and shifted here."""

    def __init__(self, in_q: TensorQuant, out_q: TensorQuant, act: tuple[int, int], real, ties: int = TIES_AWAY,
                 w_zero=None, real_scale=None):
        mult, shift = quantize_multiplier(np.atleast_1d(real))
        self.mult = np.ascontiguousarray(mult, dtype=np.int32)
        self.shift = np.ascontiguousarray(shift, dtype=np.int32)
        self.w_zero = None if w_zero is None else np.ascontiguousarray(w_zero, dtype=np.int32)
        self.real_scale = None if real_scale is None else np.ascontiguousarray(real_scale, dtype=np.float64)
        self.record = TclRequant(
            in_q.zero_point[0] - _offset(in_q), out_q.zero_point[0] - _offset(out_q),
            act[0] - _offset(out_q), act[1] - _offset(out_q), ties,
            self.mult.ctypes.data_as(_I32), self.shift.ctypes.data_as(_I32),
            None if self.w_zero is None else self.w_zero.ctypes.data_as(_I32),
            None if self.real_scale is None else self.real_scale.ctypes.data_as(ctypes.POINTER(ctypes.c_double)))


class DeviceIntegerModel:
    """Integer codes of every layer of `qmodel` (sequential; ops in INT8_OPS) computed by the C int8 kernels.

    kernels: "optimized" (LiteRT's default kernels) or "reference" (its reference kernels, TFLite Micro's
    semantics), as `tinycl.quant.intexec.IntegerModel`."""

    def __init__(self, qmodel: QuantizedModel, kernels: str = "optimized", library: Library | None = None):
        if kernels not in KERNELS:
            raise ConfigError(f"kernels={kernels!r} is not known; allowed: {', '.join(KERNELS)}")
        self.qmodel, self.spec, self.kernels = qmodel, qmodel.spec, kernels
        self.lib = library or load_library()
        if self.spec.input_quant is None or any(ly.quant is None for ly in self.spec.layers):
            raise ModelError(f"model {self.spec.name!r} is not quantized: every layer needs `quant`")
        self.steps, prev_q, prev = [], self.spec.input_quant, "input"
        for layer in self.spec.layers:
            if layer.op not in INT8_OPS:
                raise ModelError(f"layer {layer.name!r}: op {layer.op!r} has no C int8 kernel; "
                                 f"allowed: {', '.join(INT8_OPS)}")
            if layer.inputs and layer.inputs != (prev,):
                raise ModelError(f"layer {layer.name!r}: the C int8 path runs sequential models only")
            self.steps.append(self._prepare(layer, prev_q))
            prev_q, prev = layer.quant.output, layer.name

    # -- one layer -> a function of one sample's int8 codes (1-D) -------------------------------------------
    def _requantize(self, r: _Requant):
        def requantize(x):
            y = np.empty_like(x)
            self.lib.requantize_s8(x.size, ctypes.byref(r.record), _p8(x), _p8(y))
            return y

        requantize.keep = r
        return requantize

    def _requantize_to(self, in_q: TensorQuant, out_q: TensorQuant):
        """TFLite QUANTIZE between two quantizations; None when they agree (the codes pass unchanged)."""
        if (_scale(in_q), in_q.zero_point[0]) == (_scale(out_q), out_q.zero_point[0]):
            return None
        real = float(_scale(in_q)) / float(_scale(out_q))
        return self._requantize(_Requant(in_q, out_q, (out_q.qmin, out_q.qmax), real))

    def _prepare(self, layer: Layer, in_q: TensorQuant):
        out_q, op = layer.quant.output, layer.op
        if layer.has_weights:
            return self._weighted(layer, in_q, out_q)
        if op in ("avg_pool2d", "max_pool2d"):
            return self._pool(layer, in_q, out_q)
        if op in ("relu", "relu6"):  # requantize with the float32 ratio of scales, then clamp (TFLite RELU)
            real = float(_scale(in_q) / _scale(out_q))
            return self._requantize(_Requant(in_q, out_q, _activation_range(op, out_q), real))
        return self._requantize_to(in_q, out_q) or (lambda x: x)  # quantize, flatten, reshape

    def _pool(self, layer: Layer, in_q: TensorQuant, out_q: TensorQuant):
        shape = conv_shape(self.spec, layer)
        lo, hi = (v - _offset(in_q) for v in _activation_range(layer.activation, in_q))
        n_out = int(np.prod(self.spec.output_shape(layer.name)))
        then = self._requantize_to(in_q, out_q)  # pooling runs in the input's quantization

        def pool(x):
            y = np.empty(n_out, np.int8)
            if layer.op == "avg_pool2d":
                self.lib.avgpool_s8(ctypes.byref(shape), lo, hi, _offset(in_q), _p8(x), _p8(y))
            else:
                self.lib.maxpool_s8(ctypes.byref(shape), lo, hi, _p8(x), _p8(y))
            return then(y) if then else y

        return pool

    def _weighted(self, layer: Layer, in_q: TensorQuant, out_q: TensorQuant):
        wq, arrays = layer.quant.weight, self.qmodel.weights[layer.name]
        w = np.ascontiguousarray((arrays["weight"].astype(np.int16) - _offset(wq)).astype(np.int8))
        n_out = w.shape[0]
        bias = np.ascontiguousarray(arrays["bias"], dtype=np.int32) if "bias" in arrays else None
        w_zero = np.broadcast_to(np.asarray(wq.zero_point) - _offset(wq), (n_out,))
        s_in, s_out = _scale(in_q), _scale(out_q)
        s_w = np.broadcast_to(np.asarray(wq.scale, _F32), (n_out,))
        per_channel = len(wq.scale) > 1
        if in_q.dtype == "uint8" or (layer.op == "linear" and not per_channel):  # TFLite's legacy float32 product
            real = (s_in * s_w).astype(np.float64) / float(s_out)
        else:
            real = float(s_in) * s_w.astype(np.float64) / float(s_out)
        real_scale = None
        if self.kernels == "reference" and layer.op == "linear":
            real_scale = float(s_in) * s_w.astype(np.float64) / float(s_out)
        up = self.kernels == "optimized" and not (layer.op == "depthwise_conv2d" and in_q.dtype == "uint8")
        r = _Requant(in_q, out_q, _activation_range(layer.activation, out_q), real, TIES_UP if up else TIES_AWAY,
                     w_zero if np.any(w_zero) else None, real_scale)
        shape = conv_shape(self.spec, layer)
        n_in = int(np.prod(self.spec.input_shape_of(layer.name)))
        n_y = int(np.prod(self.spec.output_shape(layer.name)))
        b = None if bias is None else bias.ctypes.data_as(_I32)
        kernel = {"conv2d": self.lib.conv2d_s8, "depthwise_conv2d": self.lib.depthwise_s8}.get(layer.op)

        def weighted(x):
            y = np.empty(n_y, np.int8)
            if kernel is None:
                self.lib.linear_s8(n_in, n_out, ctypes.byref(r.record), _p8(x), _p8(w), b, _p8(y))
            else:
                kernel(ctypes.byref(shape), ctypes.byref(r.record), _p8(x), _p8(w), b, _p8(y))
            return y

        weighted.keep = (r, w, bias)
        return weighted

    # -- running --------------------------------------------------------------------------------------------
    def run_all(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        """{layer: codes (N, *output shape) in the layer's dtype} for input codes (N, *input_shape)."""
        codes = np.asarray(codes)
        outs = {ly.name: [] for ly in self.spec.layers}
        for sample in codes:
            x = np.ascontiguousarray((sample.astype(np.int16) - _offset(self.spec.input_quant)).astype(np.int8))
            x = x.ravel()
            for layer, step in zip(self.spec.layers, self.steps, strict=True):
                x = step(x)
                outs[layer.name].append(x)
        result = {}
        for layer in self.spec.layers:
            q, shape = layer.quant.output, self.spec.output_shape(layer.name)
            stacked = np.stack(outs[layer.name]).astype(np.int16) + _offset(q)
            dtype = np.uint8 if q.dtype == "uint8" else np.int8
            result[layer.name] = stacked.reshape(len(codes), *shape).astype(dtype)
        return result

    def run(self, codes: np.ndarray) -> np.ndarray:
        """Codes of the last layer (N, *output shape)."""
        return self.run_all(codes)[self.spec.layers[-1].name]
