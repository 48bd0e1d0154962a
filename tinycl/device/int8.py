"""The frozen stage on the C runtime's int8 kernels (csrc/int8.c), with TFLite's integer arithmetic.

`DeviceIntegerModel` runs a `QuantizedModel` (from `tinycl.model.tflite.load_tflite` or
`tinycl.quant.ptq.quantize_model`) one sample at a time in CHW, as the device does, and gives the codes
`tinycl.quant.intexec.IntegerModel` gives with the same `kernels` choice: both read the requantization records
of `tinycl.quant.requant.prepare` (multipliers, rounding ties, activation ranges) and derive nothing themselves.
uint8 tensors run as int8 codes shifted by -128 (their differences, and so every accumulator, are unchanged);
the shift is applied to the records' zero points and clamps here and undone on the way out.
"""

from __future__ import annotations

import numpy as np

from tinycl.errors import ModelError
from tinycl.model.ops import OPS, ops_where
from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import Layer, TensorQuant
from tinycl.quant.requant import Requant, prepare
from tinycl.runtime import Library, Struct, conv_shape, load_library

__all__ = ["DeviceIntegerModel", "check_c_exact", "code_offset", "requant_fields"]



def _offset(q: TensorQuant) -> int:
    return 128 if q.dtype == "uint8" else 0


def code_offset(q: TensorQuant) -> int:
    """128 for uint8 codes (run as int8 codes shifted by -128), else 0."""
    return _offset(q)


def requant_fields(rec: Requant, in_q: TensorQuant, out_q: TensorQuant, w_offset: int = 0) -> dict:
    """The tcl_requant fields of `rec` in the shifted int8 domain of codes `in_q` -> `out_q` (arrays as NumPy):
    a multiplier of exactly 1 becomes (2^30, shift 1) in Q31; all-zero weight zero points become None."""
    w_zero = None if rec.w_zero is None else (rec.w_zero - w_offset).astype(np.int32)
    empty = rec.multiplier.size == 0
    return dict(in_zero=rec.in_zero - _offset(in_q), out_zero=rec.out_zero - _offset(out_q),
                act_min=rec.act_min - _offset(out_q), act_max=rec.act_max - _offset(out_q), ties=rec.ties,
                multiplier=np.array([2**30], np.int32) if empty else rec.multiplier,
                shift=np.array([1], np.int32) if empty else rec.shift,
                w_zero=w_zero if w_zero is not None and np.any(w_zero) else None, real_scale=rec.real_scale)


def check_c_exact(qmodel: QuantizedModel, records: dict[str, Requant | None]) -> None:
    """ModelError naming the first layer whose requantization the C int8 kernels would not reproduce exactly:
    LiteRT's optimized kernels break ties up only in whole vector blocks (8 or 16 channels, or elements) and away
    from zero in the rest, while a C record has one tie rule. TFLite Micro's kernels ("reference") have none."""
    for layer in qmodel.spec.layers:
        for rec in (records.get(layer.name), getattr(records.get(layer.name), "then", None)):
            if rec is not None and rec.has_scalar_tail((1, *qmodel.spec.output_shape(layer.name))):
                raise ModelError(f"layer {layer.name!r}: its {qmodel.spec.output_shape(layer.name)[0]} channels are "
                                 f"not a whole number of LiteRT's vector blocks ({rec.block}), whose tie rule the C "
                                 f"int8 kernels do not reproduce; use kernels=\"reference\" (TFLite Micro's)")


class DeviceIntegerModel:
    """Integer codes of every layer of `qmodel` (sequential; ops with a C int8 kernel in the op table) computed
    by the C int8 kernels.

    kernels: "optimized" (LiteRT's default kernels) or "reference" (its reference kernels, TFLite Micro's
    semantics), as `tinycl.quant.intexec.IntegerModel`."""

    def __init__(self, qmodel: QuantizedModel, kernels: str = "optimized", library: Library | None = None):
        self.qmodel, self.spec, self.kernels = qmodel, qmodel.spec, kernels
        self.lib = library or load_library()
        records = prepare(qmodel, kernels)  # checks `kernels` and that the model is quantized
        check_c_exact(qmodel, records)
        self.steps, prev = [], "input"
        for layer in self.spec.layers:
            if not OPS[layer.op].int8:
                raise ModelError(f"layer {layer.name!r}: op {layer.op!r} has no C int8 kernel; "
                                 f"allowed: {', '.join(ops_where(lambda op: op.int8))}")
            if layer.inputs and layer.inputs != (prev,):
                raise ModelError(f"layer {layer.name!r}: the C int8 path runs sequential models only")
            self.steps.append(self._prepare(layer, records[layer.name]))
            prev = layer.name

    def _struct(self, rec: Requant, in_q: TensorQuant, out_q: TensorQuant, w_offset: int = 0) -> Struct:
        """The tcl_requant of `rec` in the shifted int8 domain of codes `in_q` -> `out_q`."""
        fields = requant_fields(rec, in_q, out_q, w_offset)
        fields["ties"] = self.lib.constant(f"TCL_TIES_{fields['ties'].upper()}")
        return self.lib.new("tcl_requant", **fields)

    # -- one layer -> a function of one sample's int8 codes (1-D) -------------------------------------------
    def _requantize(self, rec: Requant, in_q: TensorQuant, out_q: TensorQuant):
        """TFLite QUANTIZE / RELU by `rec`; the identity when the codes pass unchanged."""
        if rec.identity and rec.act_min <= in_q.qmin and rec.act_max >= in_q.qmax:
            return lambda x: x
        q = self._struct(rec, in_q, out_q)

        def requantize(x):
            y = np.empty_like(x)
            self.lib.requantize_s8(x.size, q, x, y)
            return y

        return requantize

    def _prepare(self, layer: Layer, rec: Requant):
        in_q, out_q = self.qmodel.input_quant_of(layer.name), layer.quant.output
        if layer.has_weights:
            return self._weighted(layer, rec, in_q, out_q)
        if layer.op in ("avg_pool2d", "max_pool2d"):
            return self._pool(layer, rec, in_q, out_q)
        return self._requantize(rec, in_q, out_q)  # relu, relu6, quantize, flatten, reshape

    def _pool(self, layer: Layer, rec: Requant, in_q: TensorQuant, out_q: TensorQuant):
        shape = conv_shape(self.spec, layer)
        lo, hi = rec.act_min - _offset(in_q), rec.act_max - _offset(in_q)
        n_out = int(np.prod(self.spec.output_shape(layer.name)))
        then = self._requantize(rec.then, in_q, out_q)  # pooling runs in the input's quantization

        def pool(x):
            y = np.empty(n_out, np.int8)
            if layer.op == "avg_pool2d":
                self.lib.avgpool_s8(shape, lo, hi, _offset(in_q), x, y)
            else:
                self.lib.maxpool_s8(shape, lo, hi, x, y)
            return then(y)

        return pool

    def _weighted(self, layer: Layer, rec: Requant, in_q: TensorQuant, out_q: TensorQuant):
        wq, arrays = layer.quant.weight, self.qmodel.weights[layer.name]
        w = np.ascontiguousarray((arrays["weight"].astype(np.int16) - _offset(wq)).astype(np.int8)).ravel()
        bias = np.ascontiguousarray(arrays["bias"], dtype=np.int32) if "bias" in arrays else None
        q = self._struct(rec, in_q, out_q, _offset(wq))
        shape = conv_shape(self.spec, layer)
        n_in = int(np.prod(self.spec.input_shape_of(layer.name)))
        n_y = int(np.prod(self.spec.output_shape(layer.name)))
        kernel = {"conv2d": self.lib.conv2d_s8, "depthwise_conv2d": self.lib.depthwise_s8}.get(layer.op)

        def weighted(x):
            y = np.empty(n_y, np.int8)
            if kernel is None:
                self.lib.linear_s8(n_in, n_y, q, x, w, bias, y)
            else:
                kernel(shape, q, x, w, bias, y)
            return y

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
