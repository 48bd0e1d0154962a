"""Write a `QuantizedModel` as a `.tflite` file: the inverse of `tinycl.model.tflite.read_tflite`.

Uses: deploying a post-training-quantized backbone with TFLite / TFLite Micro, and checking the integer executor
against LiteRT on any spec (every op, int8 and uint8, per-tensor and per-channel), not only on files that
happen to exist. Layers map to one operator each (CHW -> NHWC, OIHW -> OHWI, C1HW -> 1HWC), except:
a `global_avg_pool` followed by a reshape to (C, 1, 1) becomes one MEAN with keep_dims; explicit conv padding
becomes PAD + VALID convolution; a pooling / pad / reshape whose output quantization differs from its input's
is followed by a QUANTIZE (TFLite requires them equal; the integer executor computes the same); and
`float_io=True` adds QUANTIZE / DEQUANTIZE around the integer graph, as TFLite's converter does for float I/O;
`nchw=True` makes the input (and a feature-map output) NCHW with a TRANSPOSE to (from) NHWC, as PyTorch-to-TFLite
converters write them.
"""

from __future__ import annotations

import importlib
import math

import flatbuffers
import numpy as np
import tflite

from tinycl.errors import ModelError
from tinycl.model.ops import OPS, pads
from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import Layer, TensorQuant

__all__ = ["to_tflite", "write_tflite"]

_TYPES = {"float32": 0, "int32": 2, "uint8": 3, "int8": 9}
_ACT = {"none": 0, "relu": 1, "relu6": 3}
_OPTION_TYPES = {name: getattr(tflite.BuiltinOptions, name) for name in (
    "Conv2DOptions", "DepthwiseConv2DOptions", "FullyConnectedOptions", "Pool2DOptions", "ReducerOptions",
    "AddOptions", "SoftmaxOptions", "ReshapeOptions", "PadOptions", "QuantizeOptions", "DequantizeOptions",
    "ConcatenationOptions", "MulOptions", "TransposeOptions")}


def write_tflite(qmodel: QuantizedModel, path, *, float_io: bool = False, nchw: bool = False) -> None:
    with open(path, "wb") as f:
        f.write(to_tflite(qmodel, float_io=float_io, nchw=nchw))


def to_tflite(qmodel: QuantizedModel, *, float_io: bool = False, nchw: bool = False) -> bytes:
    """The model as TFLite flatbuffer bytes (schema version 3, one subgraph)."""
    return _Writer(qmodel, float_io, nchw).run()


def _nhwc(shape: tuple[int, ...]) -> list[int]:
    return [1, shape[1], shape[2], shape[0]] if len(shape) == 3 else [1, *shape]


class _Writer:
    def __init__(self, qmodel: QuantizedModel, float_io: bool, nchw: bool = False):
        self.q, self.spec, self.float_io, self.nchw = qmodel, qmodel.spec, float_io, nchw
        self.buffers: list[bytes] = [b""]  # buffer 0 is the empty sentinel
        self.tensors: list[dict] = []
        self.ops: list[tuple[str, list[int], list[int], str | None, dict]] = []
        self.opcodes: list[str] = []
        self.hwc_flat: set[str] = set()  # flatten layers whose TFLite tensor is in HWC order

    # -- tensors ---------------------------------------------------------------------------------------
    def tensor(self, name: str, shape, dtype: str, quant: TensorQuant | None = None, data: np.ndarray | None = None,
               axis: int = 0) -> int:
        buffer = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(data).tobytes())
            buffer = len(self.buffers) - 1
        self.tensors.append(dict(name=name, shape=list(shape), dtype=dtype, quant=quant, buffer=buffer, axis=axis))
        return len(self.tensors) - 1

    def const_i32(self, name: str, values) -> int:
        arr = np.asarray(values, np.int32)
        return self.tensor(name, arr.shape, "int32", data=arr)

    def op(self, opname: str, ins: list[int], outs: list[int], options: str | None = None, **fields) -> None:
        if opname not in self.opcodes:
            self.opcodes.append(opname)
        self.ops.append((opname, ins, outs, options, fields))

    # -- graph -----------------------------------------------------------------------------------------
    def run(self) -> bytes:
        spec = self.spec
        iq = spec.input_quant
        x = self.tensor("input", _nhwc(spec.input_shape), iq.dtype, iq)
        graph_in = x
        if self.nchw and len(spec.input_shape) == 3:
            graph_in = self.tensor("input_nchw", [1, *spec.input_shape], iq.dtype, iq)
        if self.float_io:
            float_in = self.tensor("input_float", self.tensors[graph_in]["shape"], "float32")
            self.op("QUANTIZE", [float_in], [graph_in])
        if graph_in != x:
            self.op("TRANSPOSE", [graph_in, self.const_i32("input/perm", [0, 2, 3, 1])], [x], "TransposeOptions")
        if self.float_io:
            graph_in = float_in
        out_of = {"input": x}
        layers = spec.layers
        skip = set()
        for i, layer in enumerate(layers):
            if layer.name in skip:
                continue
            sources = self.spec.sources(layer, i)
            ins = [out_of[s] for s in sources]
            for s in sources:
                if s in self.hwc_flat and layer.op != "linear":
                    raise ModelError(f"layer {layer.name!r} reads flattened feature maps; in TFLite only a linear "
                                     f"layer may (the element order differs)")
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            keep_dims = (layer.op == "global_avg_pool" and nxt is not None and nxt.op == "reshape"
                         and nxt.shape == (spec.input_shape_of(layer.name)[0], 1, 1))
            shape = spec.output_shape(nxt.name if keep_dims else layer.name)
            q = layer.quant.output
            out = self.tensor(f"{nxt.name};{layer.name}" if keep_dims else layer.name, _nhwc(shape), q.dtype, q)
            in_q = self.tensors[ins[0]]["quant"]
            if OPS[layer.op].same_quant and (np.float32(in_q.scale[0]), in_q.zero_point[0]) != (
                    np.float32(q.scale[0]), q.zero_point[0]):
                # TFLite needs these ops' output in their input's quantization: compute there, then requantize
                moved = self.tensor(f"{layer.name}/in_quant", _nhwc(shape), in_q.dtype, in_q)
                self.layer(layer, ins, moved, sources, keep_dims)
                self.op("QUANTIZE", [moved], [out], "QuantizeOptions")
            else:
                self.layer(layer, ins, out, sources, keep_dims)
            out_of[layer.name] = out
            if keep_dims:
                skip.add(nxt.name)
                out_of[nxt.name] = out
        graph_out = out_of[layers[-1].name] if layers else x
        shape = self.tensors[graph_out]["shape"]
        if self.nchw and len(shape) == 4:
            q = self.tensors[graph_out]["quant"]
            nchw = self.tensor("output_nchw", [1, shape[3], shape[1], shape[2]], q.dtype, q)
            self.op("TRANSPOSE", [graph_out, self.const_i32("output/perm", [0, 3, 1, 2])], [nchw], "TransposeOptions")
            graph_out = nchw
        if self.float_io:
            float_out = self.tensor("output_float", self.tensors[graph_out]["shape"], "float32")
            self.op("DEQUANTIZE", [graph_out], [float_out])
            graph_out = float_out
        return self.finish(graph_in, graph_out)

    def layer(self, layer: Layer, ins: list[int], out: int, sources, keep_dims: bool) -> None:
        spec, op = self.spec, layer.op
        in_shape = spec.input_shape_of(layer.name)
        act = _ACT[layer.activation]
        if op in ("conv2d", "depthwise_conv2d", "linear"):
            self.weighted(layer, ins[0], out, in_shape, sources[0])
        elif op in ("avg_pool2d", "max_pool2d"):
            padding = self.padding(layer, in_shape, allow_explicit=False)
            self.op("AVERAGE_POOL_2D" if op == "avg_pool2d" else "MAX_POOL_2D", ins, [out], "Pool2DOptions",
                    Padding=padding, StrideW=layer.stride[1], StrideH=layer.stride[0], FilterWidth=layer.kernel[1],
                    FilterHeight=layer.kernel[0], FusedActivationFunction=act)
        elif op == "global_avg_pool":
            self.op("MEAN", [ins[0], self.const_i32(f"{layer.name}/axes", [1, 2])], [out], "ReducerOptions",
                    KeepDims=keep_dims)
        elif op in ("flatten", "reshape"):
            target = (math.prod(in_shape),) if op == "flatten" else layer.shape
            order_free = [len(s) == 1 or s[0] == 1 or s[1] * s[2] == 1 for s in (in_shape, target)]
            if not all(order_free):
                if op == "reshape" or len(in_shape) != 3:
                    raise ModelError(f"layer {layer.name!r}: reshape {in_shape} -> {target} reorders elements "
                                     f"between CHW and TFLite's NHWC")
                self.hwc_flat.add(layer.name)
            shape = _nhwc(target)
            self.op("RESHAPE", [ins[0], self.const_i32(f"{layer.name}/shape", shape)], [out], "ReshapeOptions",
                    NewShape=np.asarray(shape, np.int32))
        elif op == "pad":
            t, b, l, r = layer.padding
            self.op("PAD", [ins[0], self.const_i32(f"{layer.name}/pads", [[0, 0], [t, b], [l, r], [0, 0]])], [out],
                    "PadOptions")
        elif op == "add":
            self.op("ADD", ins, [out], "AddOptions", FusedActivationFunction=act)
        elif op == "mul":
            self.op("MUL", ins, [out], "MulOptions", FusedActivationFunction=act)
        elif op == "concat":
            q = self.tensors[out]["quant"]  # the output's, or its input's when a QUANTIZE follows (same_quant)
            ins = [self.in_quant(t, q, f"{layer.name}/in{k}") for k, t in enumerate(ins)]
            self.op("CONCATENATION", ins, [out], "ConcatenationOptions", Axis=len(self.tensors[out]["shape"]) - 1,
                    FusedActivationFunction=act)
        elif op == "softmax":
            self.op("SOFTMAX", ins, [out], "SoftmaxOptions", Beta=1.0)
        elif op in ("relu", "relu6", "hard_swish", "logistic"):
            self.op(op.upper(), ins, [out])
        elif op == "quantize":
            self.op("QUANTIZE", ins, [out], "QuantizeOptions")
        else:
            raise ModelError(f"layer {layer.name!r}: op {op!r} has no TFLite operator here")

    def in_quant(self, t: int, q: TensorQuant, name: str) -> int:
        """Tensor t, or a QUANTIZE of it to `q` when its quantization differs (TFLite ops that need it equal)."""
        have = self.tensors[t]["quant"]
        if (np.float32(have.scale[0]), have.zero_point[0]) == (np.float32(q.scale[0]), q.zero_point[0]):
            return t
        moved = self.tensor(name, self.tensors[t]["shape"], q.dtype, q)
        self.op("QUANTIZE", [t], [moved], "QuantizeOptions")
        return moved

    def padding(self, layer: Layer, in_shape, allow_explicit: bool):
        """TFLite padding code (SAME=0, VALID=1), or the explicit (t, b, l, r) pads to emit as a PAD."""
        if layer.padding in ("same", "valid"):
            return 0 if layer.padding == "same" else 1
        explicit = tuple(layer.padding)
        if explicit == (0, 0, 0, 0):
            return 1
        if explicit == pads(Layer(layer.name, layer.op, kernel=layer.kernel, stride=layer.stride, padding="same"),
                         in_shape[1], in_shape[2]):
            return 0
        if not allow_explicit:
            raise ModelError(f"layer {layer.name!r}: padding {explicit} is neither SAME nor VALID; TFLite pooling "
                             f"supports only those")
        return explicit

    def weighted(self, layer: Layer, x: int, out: int, in_shape, source: str) -> None:
        weights = self.q.weights[layer.name]
        w, wq = weights["weight"], layer.quant.weight
        act = _ACT[layer.activation]
        if layer.op == "linear":
            if source in self.hwc_flat or len(in_shape) == 3:
                c, h, wd = self.flat_source_shape(source, in_shape)
                w = w.reshape(w.shape[0], c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
            w_t = self.tensor(f"{layer.name}/weight", w.shape, wq.dtype, wq, w, axis=0)
            opname, options, fields = "FULLY_CONNECTED", "FullyConnectedOptions", dict(FusedActivationFunction=act)
        else:
            padding = self.padding(layer, in_shape, allow_explicit=True)
            if isinstance(padding, tuple):
                t, b, l, r = padding
                in_q = self.tensors[x]["quant"]
                padded = self.tensor(f"{layer.name}/pad", _nhwc((in_shape[0], in_shape[1] + t + b,
                                                                 in_shape[2] + l + r)), in_q.dtype, in_q)
                self.op("PAD", [x, self.const_i32(f"{layer.name}/pads", [[0, 0], [t, b], [l, r], [0, 0]])],
                        [padded], "PadOptions")
                x, padding = padded, 1
            fields = dict(Padding=padding, StrideW=layer.stride[1], StrideH=layer.stride[0],
                          FusedActivationFunction=act, DilationWFactor=1, DilationHFactor=1)
            if layer.op == "conv2d":
                w_t = self.tensor(f"{layer.name}/weight", w.transpose(0, 2, 3, 1).shape, wq.dtype, wq,
                                  w.transpose(0, 2, 3, 1), axis=0)
                opname, options = "CONV_2D", "Conv2DOptions"
            else:
                w1 = w[:, 0].transpose(1, 2, 0)[None]  # C1HW -> 1HWC
                w_t = self.tensor(f"{layer.name}/weight", w1.shape, wq.dtype, wq, w1, axis=3)
                opname, options = "DEPTHWISE_CONV_2D", "DepthwiseConv2DOptions"
                fields["DepthMultiplier"] = 1
        ins = [x, w_t]
        if "bias" in weights:
            in_scale = np.float32(self.tensors[x]["quant"].scale[0])
            b_scale = tuple(float(in_scale * np.float32(s)) for s in wq.scale)
            bq = TensorQuant(b_scale, (0,) * len(b_scale), "int32")
            ins.append(self.tensor(f"{layer.name}/bias", weights["bias"].shape, "int32", bq,
                                   weights["bias"].astype(np.int32)))
        else:
            ins.append(-1)
        self.op(opname, ins, [out], options, **fields)

    def flat_source_shape(self, source: str, in_shape):
        if len(in_shape) == 3:
            return in_shape
        return self.spec.input_shape_of(source)

    # -- flatbuffer ------------------------------------------------------------------------------------
    def finish(self, graph_in: int, graph_out: int) -> bytes:
        # sized for the weights up front: the builder then never regrows (each growth copies the whole buffer)
        b = flatbuffers.Builder(sum(len(d) for d in self.buffers) + 512 * (len(self.tensors) + len(self.ops)) + 4096)
        buffers = [_table(b, "Buffer", Data=np.frombuffer(data, np.uint8) if data else None)
                   for data in self.buffers]
        tensors = []
        for t in self.tensors:
            quant = None
            if t["quant"] is not None:
                q = t["quant"]
                quant = _table(b, "QuantizationParameters", Scale=np.asarray(q.scale, np.float32),
                               ZeroPoint=np.asarray(q.zero_point, np.int64), QuantizedDimension=t["axis"])
            tensors.append(_table(b, "Tensor", Shape=np.asarray(t["shape"], np.int32), Type=_TYPES[t["dtype"]],
                                  Buffer=t["buffer"], Name=b.CreateString(t["name"]), Quantization=quant))
        ops = []
        for opname, ins, outs, options, fields in self.ops:
            opts = _table(b, options, **fields) if options else None
            ops.append(_table(b, "Operator", OpcodeIndex=self.opcodes.index(opname),
                              Inputs=np.asarray(ins, np.int32), Outputs=np.asarray(outs, np.int32),
                              BuiltinOptionsType=_OPTION_TYPES[options] if options else 0, BuiltinOptions=opts))
        codes = []
        for opname in self.opcodes:
            code = getattr(tflite.BuiltinOperator, opname)
            codes.append(_table(b, "OperatorCode", DeprecatedBuiltinCode=min(code, 127), BuiltinCode=code, Version=1))
        graph = _table(b, "SubGraph", Tensors=_vector(b, "SubGraph", "Tensors", tensors),
                       Inputs=np.asarray([graph_in], np.int32), Outputs=np.asarray([graph_out], np.int32),
                       Operators=_vector(b, "SubGraph", "Operators", ops), Name=b.CreateString("main"))
        model = _table(b, "Model", Version=3, OperatorCodes=_vector(b, "Model", "OperatorCodes", codes),
                       Subgraphs=_vector(b, "Model", "Subgraphs", [graph]),
                       Description=b.CreateString(f"tinycl: {self.spec.name}"),
                       Buffers=_vector(b, "Model", "Buffers", buffers))
        b.Finish(model, file_identifier=b"TFL3")
        return bytes(b.Output())


def _vector(b: flatbuffers.Builder, table: str, field: str, offsets: list[int]) -> int:
    getattr(importlib.import_module(f"tflite.{table}"), f"Start{field}Vector")(b, len(offsets))
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _table(b: flatbuffers.Builder, name: str, **fields) -> int:
    """Build table `name` from its fields: NumPy arrays become vectors, None is omitted, the rest (scalars and
    offsets of objects already built) are added as they are."""
    mod = importlib.import_module(f"tflite.{name}")
    ready = {k: (b.CreateNumpyVector(v) if isinstance(v, np.ndarray) else v)
             for k, v in fields.items() if v is not None}
    mod.Start(b)
    for k, v in ready.items():
        getattr(mod, f"Add{k}")(b, v)
    return mod.End(b)
