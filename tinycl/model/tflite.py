"""Import a quantized `.tflite` file as the project's model description plus integer weights.

`load_tflite(path)` returns a `QuantizedModel`: a `ModelSpec` whose layers carry their quantization
(`Layer.quant`) and the integer parameters ({layer: {"weight": int8/uint8 OIHW or (out, in), "bias": int32}}),
the same form `tinycl.quant.ptq.quantize_model` produces, so `tinycl.quant.intexec` runs both.

Layout: TFLite tensors are NHWC; the spec is CHW. Weights are transposed (conv OHWI -> OIHW, depthwise
1HWC -> C1HW) and a FULLY_CONNECTED that reads feature maps gets its columns permuted from HWC to CHW order,
so every layer computes exactly what its TFLite operator computes, element for element. A RESHAPE that
flattens feature maps becomes `flatten` and is listed in `TfliteImport.hwc_flattened` (TFLite's tensor holds
the same values in HWC order); other reshapes must not reorder elements.
Operators map one to one onto layers, except: a leading QUANTIZE of a float input becomes `input_quant`; a
trailing DEQUANTIZE is dropped (the executor returns dequantized float latents anyway); a MEAN with keep_dims
becomes `global_avg_pool` + `reshape`; a DEPTHWISE_CONV_2D with depth multiplier M on one input channel is a
`conv2d` with M filters; the TRANSPOSEs of an NCHW input or output (PyTorch exports) are folded away (the spec is
CHW already). Layer names come from the output tensors' names ("MobilenetV1/Conv2d_3/Relu6;..."
-> "Conv2d_3"), made unique. Anything else (ops, dtypes, shapes) raises a one-line ModelError naming the
operator index, its output tensor and what is supported; the file itself is checked first (`_verify`, and
every tensor's shape, type, buffer and byte size), so a corrupt file is one line too, never a Python internal.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import tflite

from tinycl.errors import ModelError
from tinycl.model.ops import OPS
from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import Layer, LayerQuant, ModelSpec, TensorQuant

__all__ = ["supported_ops", "TfliteImport", "load_tflite", "read_tflite", "hwc_columns_to_chw"]

_OP_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
_DTYPES = {v: k.lower() for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}
_ACTIVATIONS = {0: "none", 1: "relu", 3: "relu6"}  # TFLite ActivationFunctionType -> spec activation
_OPTIONS = {"CONV_2D": tflite.Conv2DOptions, "DEPTHWISE_CONV_2D": tflite.DepthwiseConv2DOptions,
            "FULLY_CONNECTED": tflite.FullyConnectedOptions, "AVERAGE_POOL_2D": tflite.Pool2DOptions,
            "MAX_POOL_2D": tflite.Pool2DOptions, "MEAN": tflite.ReducerOptions, "ADD": tflite.AddOptions,
            "SOFTMAX": tflite.SoftmaxOptions, "CONCATENATION": tflite.ConcatenationOptions, "MUL": tflite.MulOptions}
_NP_DTYPES = {"int8": np.int8, "uint8": np.uint8, "int32": np.int32, "int64": np.int64, "float32": np.float32,
              "int16": np.int16, "bool": np.bool_, "float16": np.float16}
_MAX_DIM = 1 << 20  # no real tensor dimension is larger; a bit-flipped one often is
_NCHW_TO_NHWC, _NHWC_TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]
# last name components that say what an op did rather than which layer it belongs to ("Conv2d_3/Relu6")
_GENERIC = re.compile(r"^(Relu6?|BiasAdd|Conv2D(_Fold)?|depthwise(_Fold)?|add_fold|AvgPool|MaxPool|Reshape(_\d+)?|"
                      r"Squeeze|Mean|Softmax|Identity|MatMul|Add(V2)?|Pad|FusedBatchNorm\w*|BatchNorm\w*|"
                      r"\w*[Ff]ake[Qq]uant\w*|act_quant\w*)$")


def supported_ops() -> tuple[str, ...]:
    """The TFLite operators the importer reads: those of the op table, a trailing DEQUANTIZE (dropped) and the
    TRANSPOSEs of an NCHW input or output (folded: the spec is CHW)."""
    return (*(name for op in OPS.values() for name in op.tflite), "DEQUANTIZE", "TRANSPOSE")


@dataclass(frozen=True)
class TfliteImport:
    """An imported file: the integer model, and for each layer the index of the TFLite tensor it outputs.

    `hwc_flattened`: layers whose 1-D output holds a flattened (C, H, W) tensor in CHW order where the TFLite
    tensor holds it in HWC order (a RESHAPE that flattens feature maps); the value is that (C, H, W).
    `output_dequantized`: the file ends in DEQUANTIZE (its output is float32); `input_float`: it starts with
    a QUANTIZE of a float32 input; `input_nchw` / `output_nchw`: its input / output is NCHW and a TRANSPOSE to /
    from NHWC (PyTorch's layout, as PyTorch-to-TFLite converters write it) is folded away."""

    model: QuantizedModel
    tensor_of: dict[str, int]
    hwc_flattened: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    output_dequantized: bool = False
    input_float: bool = False
    input_nchw: bool = False
    output_nchw: bool = False


def load_tflite(path: str | Path) -> QuantizedModel:
    """The integer model in a `.tflite` file (see the module docstring)."""
    return read_tflite(path).model


def read_tflite(path: str | Path) -> TfliteImport:
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as err:
        raise ModelError(f"cannot read model file {str(path)!r}: {err.strerror or err}") from None
    importer = None
    try:
        if len(buf) < 8 or not tflite.Model.ModelBufferHasIdentifier(buf, 0):
            raise ModelError(f"{str(path)!r} is not a .tflite file (no 'TFL3' identifier); give a TFLite flatbuffer")
        importer = _Importer(buf, path.stem)
        return importer.run()
    except ModelError:
        raise
    except Exception:  # a flatbuffer with offsets past its end fails anywhere inside the reader
        raise ModelError(f"{str(path)!r} is truncated or corrupt: an offset or length points outside the file"
                         f"{importer.where if importer else ''}") from None


class _Importer:
    def __init__(self, buf: bytes, name: str):
        self.buf, self.name = buf, name
        self.model = tflite.Model.GetRootAsModel(buf, 0)
        if self.model.SubgraphsLength() < 1:
            raise ModelError(f"model {name!r} has no subgraph")
        self.graph = self.model.Subgraphs(0)
        self.layers: list[Layer] = []
        self.weights: dict[str, dict[str, np.ndarray]] = {}
        self.tensor_of: dict[str, int] = {}
        self.hwc_flat: dict[str, tuple[int, int, int]] = {}
        self.source: dict[int, str] = {}  # tensor index -> layer name (or "input") that produces it
        self.shape: dict[int, tuple[int, ...]] = {}  # tensor index -> spec shape (CHW / features)
        self.used_names: set[str] = {"input"}
        self.where = ""  # what is being read, for errors from deep inside the flatbuffer reader
        self.nchw = [False, False]  # input, output folded from NCHW

    # -- tensors ---------------------------------------------------------------------------------------
    def tensor(self, t: int):
        return self.graph.Tensors(t)

    def dtype(self, t: int) -> str:
        return _DTYPES.get(self.tensor(t).Type(), str(self.tensor(t).Type()))

    def tname(self, t: int) -> str:
        return self.tensor(t).Name().decode(errors="replace")

    def dims(self, t: int) -> tuple[int, ...]:
        tensor = self.tensor(t)
        return tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()

    def check_tensors(self) -> None:
        """Every tensor: a known type, dimensions positive and bounded, its buffer index in range, and a constant
        buffer's byte size equal to shape x dtype (bit-flipped files LiteRT rejects fail here, with one line)."""
        n_buffers = self.model.BuffersLength()
        for t in range(self.graph.TensorsLength()):
            self.where = f" (tensor {t})"
            d, name = self.dims(t), self.tname(t)
            if any(not 0 < v <= _MAX_DIM for v in d) or len(d) > 6:
                raise ModelError(f"tensor {t} {name!r} has shape {list(d)}: the file is corrupt (dimensions must be "
                                 f"1..{_MAX_DIM}, at most 6 of them)")
            if self.dtype(t) not in _NP_DTYPES:
                raise ModelError(f"tensor {t} {name!r} has an unknown type code {self.tensor(t).Type()}: the file "
                                 f"is corrupt")
            b = self.tensor(t).Buffer()
            if not 0 <= b < n_buffers:
                raise ModelError(f"tensor {t} {name!r} points at buffer {b} of {n_buffers}: the file is corrupt")
            size = self.buffer_size(b)
            need = math.prod(d) * np.dtype(_NP_DTYPES[self.dtype(t)]).itemsize
            if size and size != need:
                raise ModelError(f"tensor {t} {name!r} holds {size} bytes, its shape {list(d)} needs {need}: the "
                                 f"file is truncated or corrupt")
        self.where = ""

    def buffer_size(self, b: int) -> int:
        buffer = self.model.Buffers(b)
        if buffer.Offset() > 1:
            if buffer.Offset() + buffer.Size() > len(self.buf):
                raise ModelError(f"buffer {b} lies past the end of the file: the file is truncated or corrupt")
            return int(buffer.Size())
        return int(buffer.DataLength())

    def data(self, t: int) -> np.ndarray | None:
        """A constant tensor's values with its dtype and shape, or None for activations."""
        tensor = self.tensor(t)
        buffer = self.model.Buffers(tensor.Buffer())
        if buffer.Offset() > 1:  # large models keep buffers after the flatbuffer
            raw = np.frombuffer(self.buf, np.uint8, count=buffer.Size(), offset=buffer.Offset())
        elif buffer.DataLength():
            raw = buffer.DataAsNumpy()
        else:
            return None
        np_dtype = _NP_DTYPES.get(self.dtype(t))
        if np_dtype is None or np_dtype in (np.bool_, np.float16):
            raise ModelError(f"constant tensor {self.tname(t)!r} has type {self.dtype(t)}; supported: int8, uint8, "
                             f"int32")
        shape = self.dims(t)
        if raw.size != math.prod(shape) * np.dtype(np_dtype).itemsize:
            raise ModelError(f"constant tensor {self.tname(t)!r} holds {raw.size} bytes, its shape {shape} needs "
                             f"{math.prod(shape) * np.dtype(np_dtype).itemsize}: the file is truncated or corrupt")
        return np.frombuffer(raw.tobytes(), np_dtype).reshape(shape)

    def quant(self, t: int, *, axis_dims: int | None = None) -> TensorQuant:
        q = self.tensor(t).Quantization()
        if q is None or q.ScaleLength() == 0:
            raise ModelError(f"tensor {self.tname(t)!r} is not quantized; tinycl runs fully integer models only")
        scale = tuple(float(s) for s in q.ScaleAsNumpy())
        zero = tuple(int(z) for z in q.ZeroPointAsNumpy()) if q.ZeroPointLength() else (0,) * len(scale)
        if not all(0 < s < math.inf for s in scale) or len(zero) != len(scale):
            raise ModelError(f"tensor {self.tname(t)!r} has scales {list(scale)[:4]} and {len(zero)} zero points: "
                             f"scales must be positive and finite, one zero point each")
        lo, hi = {"int8": (-128, 127), "uint8": (0, 255)}.get(self.dtype(t), (-2 ** 31, 2 ** 31 - 1))
        if not all(lo <= z <= hi for z in zero):
            raise ModelError(f"tensor {self.tname(t)!r} has zero points {list(zero)[:4]} outside its type "
                             f"{self.dtype(t)} ({lo}..{hi}): the file is corrupt")
        return TensorQuant(scale, zero, self.dtype(t), axis=0)

    def act_quant(self, t: int, where: str) -> TensorQuant:
        if self.dtype(t) not in ("int8", "uint8"):
            raise ModelError(f"{where}: tensor type {self.dtype(t)} is not supported; supported: int8, uint8")
        q = self.quant(t)
        if len(q.scale) != 1:
            raise ModelError(f"{where}: per-channel activation quantization is not supported")
        return q

    # -- graph -----------------------------------------------------------------------------------------
    def run(self) -> TfliteImport:
        _verify(self.model, len(self.buf), "model")
        self.where = ""
        g = self.graph
        if g.InputsLength() != 1 or g.OutputsLength() != 1:
            raise ModelError(f"model {self.name!r} has {g.InputsLength()} inputs and {g.OutputsLength()} outputs; "
                             f"supported: one of each")
        self.check_tensors()
        t_in, t_out = g.Inputs(0), g.Outputs(0)
        self.source[t_in], self.shape[t_in] = "input", self.input_shape(t_in)
        input_quant, input_float, dequantized = None, False, False
        n_ops = g.OperatorsLength()
        for i in range(n_ops):
            op = g.Operators(i)
            self.where = f" (operator {i})"
            opname = self.opname(op)
            self.check_operator(op, i, opname)
            out = op.Outputs(0)
            where = f"operator {i} {opname} (output {self.tname(out)!r})"
            if opname not in supported_ops():
                raise ModelError(f"{where} is not supported; supported: {', '.join(supported_ops())}")
            x = op.Inputs(0)
            if opname == "TRANSPOSE":
                self.transpose(op, where, t_out, i == n_ops - 1 or out != t_out and i == n_ops - 2)
                continue
            if opname == "QUANTIZE" and x == t_in and self.dtype(x) == "float32":
                input_float, input_quant = True, self.act_quant(out, where)
                self.source[out], self.shape[out] = "input", self.shape[x]
                continue
            if opname == "DEQUANTIZE" and out == t_out and i == n_ops - 1:
                dequantized = True
                self.source[out], self.shape[out] = self.source[x], self.shape[x]
                continue
            if x not in self.source:
                raise ModelError(f"{where}: its input {self.tname(x)!r} is a constant or comes from an "
                                 f"unsupported path; supported: activations computed by earlier operators")
            self.convert(op, opname, where)
        if input_quant is None:
            input_quant = self.act_quant(t_in, "model input")
        if t_out not in self.source:
            raise ModelError(f"model output {self.tname(t_out)!r} is not computed by a supported operator")
        layers = self.layers
        if self.source[t_out] != (layers[-1].name if layers else "input"):
            raise ModelError(f"model output {self.tname(t_out)!r} is not the last operator's output")
        spec = ModelSpec(self.shape[t_in], tuple(layers), input_quant=input_quant, name=self.name)
        return TfliteImport(QuantizedModel(spec, self.weights), dict(self.tensor_of), dict(self.hwc_flat),
                            dequantized, input_float, *self.nchw)

    def check_operator(self, op, i: int, opname: str) -> None:
        n = self.graph.TensorsLength()
        ins = [op.Inputs(k) for k in range(op.InputsLength())]
        outs = [op.Outputs(k) for k in range(op.OutputsLength())]
        if not outs or not ins or any(not -1 <= t < n for t in ins) or any(not 0 <= t < n for t in outs):
            raise ModelError(f"operator {i} {opname} reads tensors {ins} and writes {outs} of {n}: the file is "
                             f"corrupt")

    def input_shape(self, t: int) -> tuple[int, ...]:
        """The model input's spec shape; an NCHW input that a TRANSPOSE turns into NHWC is CHW already."""
        g, d = self.graph, self.dims(t)
        for i in range(g.OperatorsLength()):
            op = g.Operators(i)
            if self.opname(op) == "TRANSPOSE" and op.InputsLength() > 1 and op.Inputs(0) == t and len(d) == 4:
                return d[1:]
            if self.opname(op) == "QUANTIZE" and op.Inputs(0) == t and len(d) == 4:
                t = op.Outputs(0)  # a float NCHW input: QUANTIZE, then the TRANSPOSE
        return self.spec_shape(t, "model input")

    def transpose(self, op, where: str, t_out: int, at_end: bool) -> None:
        """Fold the layout TRANSPOSE of an NCHW input (perm 0,2,3,1) or output (perm 0,3,1,2): in CHW both are the
        identity."""
        x, out = op.Inputs(0), op.Outputs(0)
        perm = self.data(op.Inputs(1)) if op.InputsLength() > 1 else None
        perm = [] if perm is None else [int(v) for v in perm.ravel()]
        if perm == _NCHW_TO_NHWC and self.source.get(x) == "input" and not self.layers:
            self.nchw[0] = True
        elif perm == _NHWC_TO_NCHW and x in self.source and at_end and len(self.shape[x]) == 3:
            self.nchw[1] = True
        else:
            raise ModelError(f"{where}: permutation {perm} is not supported; supported: NCHW -> NHWC (0, 2, 3, 1) of "
                             f"the model input, NHWC -> NCHW (0, 3, 1, 2) of its output")
        self.source[out], self.shape[out] = self.source[x], self.shape[x]

    def opname(self, op) -> str:
        code = self.model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if _OP_NAMES.get(builtin) == "CUSTOM":
            return f"CUSTOM:{code.CustomCode().decode(errors='replace')}"
        return _OP_NAMES.get(builtin, f"BUILTIN_{builtin}")

    def spec_shape(self, t: int, where: str) -> tuple[int, ...]:
        d = self.dims(t)
        if len(d) == 4 and d[0] == 1:
            return (d[3], d[1], d[2])
        if len(d) == 2 and d[0] == 1:
            return (d[1],)
        raise ModelError(f"{where}: tensor {self.tname(t)!r} has shape {list(d)}; supported: [1, H, W, C] or [1, N]")

    def layer_name(self, t: int, segment: int = 0) -> str:
        """A short unique layer name from tensor t's name: its `segment`-th ';'-separated part (TFLite joins
        the names of fused ops with ';'), without scopes and generic op words ("Conv2d_3/Relu6" -> "Conv2d_3")."""
        parts = self.tname(t).split(";")[segment].split("/")
        while len(parts) > 1 and _GENERIC.match(parts[-1]):
            parts.pop()
        base = parts[-1] or f"t{t}"
        name, k = base, 2
        while name in self.used_names:
            name, k = f"{base}_{k}", k + 1
        self.used_names.add(name)
        return name

    def add(self, layer: Layer, out: int, shape: tuple[int, ...], inputs: list[int]) -> None:
        prev = self.layers[-1].name if self.layers else "input"
        sources = [self.source[t] for t in inputs]
        if len(sources) > 1 or sources[0] != prev:
            layer = replace(layer, inputs=tuple(sources))
        self.layers.append(layer)
        self.source[out], self.shape[out], self.tensor_of[layer.name] = layer.name, shape, out
        built = ModelSpec(self.shape[self.graph.Inputs(0)], tuple(self.layers)).output_shape(layer.name)
        if built != shape:
            raise ModelError(f"layer {layer.name!r}: computed output shape {built} but the file says {shape}")

    def options(self, op, opname: str):
        table = op.BuiltinOptions()
        if table is None:
            raise ModelError(f"{opname} operator without options: the file is corrupt")
        opts = _OPTIONS[opname]()
        opts.Init(table.Bytes, table.Pos)
        return opts

    # -- operators -------------------------------------------------------------------------------------
    def convert(self, op, opname: str, where: str) -> None:
        x, out = op.Inputs(0), op.Outputs(0)
        in_shape = self.shape[x]
        if x in self.hwc_marked() and opname != "FULLY_CONNECTED":
            raise ModelError(f"{where}: reads a flattened feature map; supported: only FULLY_CONNECTED may")
        out_q = self.act_quant(out, where)
        out_shape = self.spec_shape(out, where)
        name = self.layer_name(out)
        quant = LayerQuant(output=out_q)
        if opname in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            self.weighted(op, opname, where, name, out_q, in_shape, out_shape)
            return
        if opname in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
            o = self.options(op, opname)
            layer = Layer(name, "avg_pool2d" if opname == "AVERAGE_POOL_2D" else "max_pool2d",
                          kernel=_positive(where, o.FilterHeight(), o.FilterWidth()),
                          stride=_positive(where, o.StrideH(), o.StrideW()),
                          padding=_padding(o.Padding()), activation=self.activation(o, where), quant=quant)
        elif opname == "MEAN":
            self.mean(op, where, name, quant, in_shape, out_shape)
            return
        elif opname == "ADD":
            ins = [op.Inputs(0), op.Inputs(1)]
            for t in ins:
                if t not in self.source:
                    raise ModelError(f"{where}: adds a constant tensor {self.tname(t)!r}; supported: two activations")
                if self.shape[t] != out_shape:
                    raise ModelError(f"{where}: broadcasting add {self.shape[t]} -> {out_shape} is not supported")
            layer = Layer(name, "add", activation=self.activation(self.options(op, opname), where), quant=quant)
            self.add(layer, out, out_shape, ins)
            return
        elif opname in ("CONCATENATION", "MUL"):
            self.join(op, opname, where, name, quant, out_shape)
            return
        elif opname == "PAD":
            pads = self.data(op.Inputs(1))
            if pads is None or pads.shape != (4, 2) or pads[0].any() or pads[3].any():
                raise ModelError(f"{where}: supported: constant padding of H and W of a 4-D tensor")
            layer = Layer(name, "pad", padding=(int(pads[1, 0]), int(pads[1, 1]), int(pads[2, 0]), int(pads[2, 1])),
                          quant=quant)
        elif opname == "RESHAPE":
            layer = self.reshape(name, quant, in_shape, out_shape, where)
        elif opname == "SOFTMAX":
            beta = self.options(op, opname).Beta()
            if beta != 1.0:
                raise ModelError(f"{where}: softmax beta {beta}; supported: 1.0")
            layer = Layer(name, "softmax", quant=quant)
        elif opname == "QUANTIZE":
            self.act_quant(x, where)
            layer = Layer(name, "quantize", quant=quant)
        elif opname in ("RELU", "RELU6", "HARD_SWISH", "LOGISTIC"):
            layer = Layer(name, opname.lower(), quant=quant)
        else:  # DEQUANTIZE anywhere but at the end
            raise ModelError(f"{where}: supported only as the last operator (float ops after it are not integer)")
        self.add(layer, out, out_shape, [x])
        if layer.op == "flatten" and len(in_shape) == 3 and in_shape[0] > 1 and in_shape[1] * in_shape[2] > 1:
            self.hwc_flat[name] = in_shape  # TFLite's tensor holds the map flattened in HWC order

    def join(self, op, opname: str, where: str, name: str, quant: LayerQuant, out_shape) -> None:
        """CONCATENATION along channels, or MUL of two activations (broadcasting)."""
        ins, out = [op.Inputs(k) for k in range(op.InputsLength())], op.Outputs(0)
        for t in ins:
            if t not in self.source:
                raise ModelError(f"{where}: reads a constant tensor {self.tname(t)!r}; supported: activations only")
        opts = self.options(op, opname)
        act = self.activation(opts, where)
        if opname == "MUL":
            if len(ins) != 2 or any(len(self.shape[t]) != len(out_shape) for t in ins):
                raise ModelError(f"{where}: supported: two activations of the output's rank")
            self.add(Layer(name, "mul", activation=act, quant=quant), out, out_shape, ins)
            return
        rank = len(self.dims(out))
        if opts.Axis() % rank != rank - 1 or act != "none":
            raise ModelError(f"{where}: concatenation on axis {opts.Axis()} with activation {act}; supported: the "
                             f"channel (last) axis, no fused activation")
        for t in ins:
            q = self.act_quant(t, where)
            if (q.scale, q.zero_point) != (quant.output.scale, quant.output.zero_point):
                raise ModelError(f"{where}: input {self.tname(t)!r} is quantized differently from the output; "
                                 f"supported: inputs in the output's quantization (TFLite's int8 rule)")
        self.add(Layer(name, "concat", quant=quant), out, out_shape, ins)

    def hwc_marked(self) -> set[int]:
        return {t for t, src in self.source.items() if src in self.hwc_flat}

    def activation(self, opts, where: str) -> str:
        code = opts.FusedActivationFunction()
        if code not in _ACTIVATIONS:
            raise ModelError(f"{where}: fused activation code {code} is not supported; supported: NONE, RELU, RELU6")
        return _ACTIVATIONS[code]

    def weighted(self, op, opname, where, name, out_q, in_shape, out_shape) -> None:
        x, w_t, out = op.Inputs(0), op.Inputs(1), op.Outputs(0)
        b_t = op.Inputs(2) if op.InputsLength() > 2 else -1
        w = self.data(w_t)
        if w is None or self.dtype(w_t) not in ("int8", "uint8"):
            raise ModelError(f"{where}: weights of type {self.dtype(w_t)} are not supported; supported: constant "
                             f"int8, uint8")
        w_q = self.quant(w_t)
        bias = self.data(b_t) if b_t >= 0 else None
        if b_t >= 0 and (bias is None or bias.dtype != np.int32):
            raise ModelError(f"{where}: bias must be a constant int32 tensor, got {self.dtype(b_t)}")
        n_out = out_shape[0]
        if bias is not None and bias.shape != (n_out,):
            raise ModelError(f"{where}: bias {self.tname(b_t)!r} has shape {list(bias.shape)}, the layer has {n_out} "
                             f"output channels: the file is corrupt")
        opts = self.options(op, opname)
        act = self.activation(opts, where)
        if opname == "FULLY_CONNECTED":
            if opts.WeightsFormat() != 0:
                raise ModelError(f"{where}: shuffled FULLY_CONNECTED weights are not supported; supported: DEFAULT")
            if x in self.hwc_marked():
                w = hwc_columns_to_chw(w, self.hwc_flat[self.source[x]])
            elif len(in_shape) == 3:
                w = hwc_columns_to_chw(w, in_shape)
            layer = Layer(name, "linear", channels=w.shape[0], activation=act, bias=bias is not None)
        else:
            if (opts.DilationHFactor(), opts.DilationWFactor()) != (1, 1):
                raise ModelError(f"{where}: dilated convolution is not supported; supported: dilation 1")
            common = dict(kernel=(w.shape[1], w.shape[2]), stride=_positive(where, opts.StrideH(), opts.StrideW()),
                          padding=_padding(opts.Padding()), activation=act, bias=bias is not None)
            if opname == "CONV_2D":
                w = w.transpose(0, 3, 1, 2)  # OHWI -> OIHW
                layer = Layer(name, "conv2d", channels=w.shape[0], **common)
            elif out_shape[0] == in_shape[0]:
                w = w[0].transpose(2, 0, 1)[:, None]  # 1HWC -> C1HW
                layer = Layer(name, "depthwise_conv2d", **common)
            elif in_shape[0] == 1:  # depth multiplier M on one input channel: an ordinary conv with M filters
                w = w[0].transpose(2, 0, 1)[:, None]
                layer = Layer(name, "conv2d", channels=w.shape[0], **common)
            else:
                raise ModelError(f"{where}: depth multiplier {out_shape[0] // in_shape[0]} on {in_shape[0]} "
                                 f"channels is not supported; supported: multiplier 1, or one input channel")
        if len(w_q.scale) not in (1, w.shape[0]):
            raise ModelError(f"{where}: {len(w_q.scale)} weight scales for {w.shape[0]} output channels")
        layer = replace(layer, quant=LayerQuant(output=out_q, weight=w_q))
        self.weights[name] = {"weight": np.ascontiguousarray(w)}
        if bias is not None:
            self.weights[name]["bias"] = bias.copy()
        self.add(layer, out, out_shape, [x])
        want = ModelSpec(self.shape[self.graph.Inputs(0)], tuple(self.layers)).weight_shapes(layer)["weight"]
        if tuple(w.shape) != tuple(want):
            raise ModelError(f"{where}: weights {self.tname(w_t)!r} of shape {list(w.shape)} (tinycl's layout) do not "
                             f"fit its input {in_shape}; expected {list(want)}: the file is corrupt")

    def mean(self, op, where, name, quant, in_shape, out_shape) -> None:
        axes = self.data(op.Inputs(1))
        if len(in_shape) != 3 or axes is None or sorted(int(a) % 4 for a in axes.ravel()) != [1, 2]:
            raise ModelError(f"{where}: supported: MEAN over H and W of a 4-D tensor")
        out = op.Outputs(0)
        if len(out_shape) == 1:
            self.add(Layer(name, "global_avg_pool", quant=quant), out, out_shape, [op.Inputs(0)])
            return
        # keep_dims: the mean, then a reshape to (C, 1, 1); the TFLite tensor is the reshape's output.
        # The executor knows a global_avg_pool followed by this reshape is MEAN(keep_dims=True). A tensor named
        # "reshape;mean" (as tinycl's exporter writes it) names both layers.
        fused = len(self.tname(out).split(";")) > 1
        pool = self.layer_name(out, 1) if fused else self.layer_name(out)
        self.add(Layer(pool, "global_avg_pool", quant=quant), out, (in_shape[0],), [op.Inputs(0)])
        del self.tensor_of[pool]
        self.add(Layer(name, "reshape", shape=out_shape, quant=quant), out, out_shape, [out])

    def reshape(self, name, quant, in_shape, out_shape, where) -> Layer:
        def order_free(s):  # NHWC and CHW flatten a tensor to the same element order
            return len(s) == 1 or s[0] == 1 or s[1] * s[2] == 1

        if len(out_shape) == 1:  # flattening: the same values when the map is order-free, else marked HWC
            return Layer(name, "flatten", quant=quant)
        if order_free(in_shape) and order_free(out_shape):
            return Layer(name, "reshape", shape=out_shape, quant=quant)
        raise ModelError(f"{where}: reshape {in_shape} -> {out_shape} (CHW) reorders elements; supported: flattening, "
                         f"or reshapes that keep the element order")


_SKIP = ("GetRootAs", "Init", "BufferHasIdentifier", "IsNone", "AsNumpy", "Length")


def _verify(obj, size: int, where: str, depth: int = 0) -> None:
    """Walk every table, vector and string of the flatbuffer below `obj` through the generated accessors and
    check what the flatbuffers verifier (which LiteRT runs before anything else) checks: tables 4-byte aligned
    inside the file, their vtables inside and 2-byte aligned with a sane size, vectors inside the file. A bit flip
    in a field tinycl never reads (metadata, signatures, names) is thus refused too, naming where it is."""
    tab = obj._tab
    pos = tab.Pos
    vt = pos - int(np.frombuffer(tab.Bytes, np.int32, 1, pos)[0]) if pos % 4 == 0 and pos + 4 <= size else -1
    vt_size = int(np.frombuffer(tab.Bytes, np.uint16, 1, vt)[0]) if 0 <= vt <= size - 4 and vt % 2 == 0 else 0
    if vt_size < 4 or vt_size % 2 or vt + vt_size > size or depth > 12:
        raise ModelError(f"the file is truncated or not a valid flatbuffer: {where} (a table or its vtable is out of "
                         f"place)")
    for name in dir(type(obj)):
        if not name[0].isupper() or name.endswith(_SKIP):
            continue
        try:
            items = _field(obj, name, size)
        except ModelError:
            raise
        except Exception:  # the accessors read past the end
            raise ModelError(f"the file is truncated or not a valid flatbuffer: {where}.{name} points outside the "
                             f"file") from None
        for j, item in enumerate(items):
            if hasattr(item, "_tab") and type(item).__module__.startswith("tflite."):
                _verify(item, size, f"{where}.{name}[{j}]", depth + 1)


def _field(obj, name: str, size: int) -> list:
    """The values of field `name` of a flatbuffer table (a vector's entries; [] for numeric vectors, which are only
    range-checked)."""
    method = getattr(obj, name)
    if hasattr(obj, name + "Length"):
        n = getattr(obj, name + "Length")()
        if n > size:
            raise ModelError(f"the file is truncated or not a valid flatbuffer: {name} has {n} entries")
        if hasattr(obj, name + "AsNumpy"):
            getattr(obj, name + "AsNumpy")()  # NumPy refuses a range past the end
            return []
        return [method(j) for j in range(n)]
    return [method()] if method.__code__.co_argcount == 1 else []


def _positive(where: str, *values: int) -> tuple[int, ...]:
    """Window sizes or strides, checked: a zero or negative one (a corrupt file) would divide by zero later."""
    if any(not 0 < v <= _MAX_DIM for v in values):
        raise ModelError(f"{where}: window or stride {list(values)}; they must be 1..{_MAX_DIM}: the file is corrupt")
    return tuple(int(v) for v in values)


def _padding(code: int) -> str:
    return "same" if code == 0 else "valid"


def hwc_columns_to_chw(w: np.ndarray, chw: tuple[int, ...]) -> np.ndarray:
    """(out, H*W*C) weights over an NHWC-flattened input -> (out, C*H*W) over a CHW-flattened input."""
    c, h, wd = chw
    return w.reshape(w.shape[0], h, wd, c).transpose(0, 3, 1, 2).reshape(w.shape[0], -1)
