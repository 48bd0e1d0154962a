"""The one model description: a list of layer records with shapes and quantization parameters.

Every reader works from these records: `build.py` makes the torch module, `split.py` cuts the model into a
frozen and an adaptive stage, the cost model counts bytes and MACs, and the C exporter emits kernels.
Tensors are laid out CHW (batch first when batched); weights OIHW for convolutions, (out, in) for linear.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from tinycl.errors import ModelError
from tinycl.model.ops import ACTIVATIONS, OPS

__all__ = ["Layer", "LayerQuant", "ModelSpec", "TensorQuant"]

@dataclass(frozen=True)
class TensorQuant:
    """Affine quantization of one tensor: x = scale * (q - zero_point). Per tensor if one scale, else per
    channel along `axis`."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    dtype: str = "int8"  # "int8" | "uint8" | "int32"
    axis: int = 0

    def __post_init__(self):
        if len(self.scale) != len(self.zero_point):
            raise ModelError(f"quantization has {len(self.scale)} scales but {len(self.zero_point)} zero points")
        if self.dtype not in ("int8", "uint8", "int32"):
            raise ModelError(f"quantized dtype {self.dtype!r} is not supported; allowed: int8, uint8, int32")

    @property
    def qmin(self) -> int:
        return {"int8": -128, "uint8": 0, "int32": -(2**31)}[self.dtype]

    @property
    def qmax(self) -> int:
        return {"int8": 127, "uint8": 255, "int32": 2**31 - 1}[self.dtype]


@dataclass(frozen=True)
class LayerQuant:
    """Quantization of a layer in an integer model: its weights and its output (its input is the
    previous layer's output, or the model's input)."""

    output: TensorQuant
    weight: TensorQuant | None = None


@dataclass(frozen=True)
class Layer:
    """One layer record. Fields an op does not use keep their defaults.

    channels: output channels (conv) or output features (linear).
    padding: "valid", "same" (TF SAME: extra padding at bottom/right), or (top, bottom, left, right).
    activation: fused activation applied after the op ("none", "relu", "relu6").
    inputs: names of the layers this one reads; empty means the previous layer (or the model input).
    """

    name: str
    op: str
    channels: int = 0
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: str | tuple[int, int, int, int] = "valid"
    activation: str = "none"
    bias: bool = True
    shape: tuple[int, ...] = ()  # reshape target
    inputs: tuple[str, ...] = ()
    quant: LayerQuant | None = None

    def __post_init__(self):
        if self.op not in OPS:
            raise ModelError(f"layer {self.name!r}: op {self.op!r} is not supported; supported: {', '.join(OPS)}")
        if self.activation not in ACTIVATIONS:
            raise ModelError(f"layer {self.name!r}: activation {self.activation!r}; allowed: {', '.join(ACTIVATIONS)}")
        if isinstance(self.padding, str) and self.padding not in ("valid", "same"):
            raise ModelError(f"layer {self.name!r}: padding {self.padding!r}; allowed: valid, same, (t, b, l, r)")

    @property
    def has_weights(self) -> bool:
        return OPS[self.op].has_weights


@dataclass(frozen=True)
class ModelSpec:
    """A network as an ordered list of layers. `input_shape` excludes the batch axis (CHW or (features,))."""

    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]
    input_quant: TensorQuant | None = None
    name: str = "model"
    _shapes: dict = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names) or "input" in names:
            raise ModelError(f"model {self.name!r}: layer names must be unique and not 'input'")
        object.__setattr__(self, "_shapes", self._infer_shapes())

    # -- shapes -------------------------------------------------------------------------------------
    def _infer_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {"input": tuple(self.input_shape)}
        for i, layer in enumerate(self.layers):
            missing = [n for n in self.sources(layer, i) if n not in shapes]
            if missing:
                raise ModelError(f"layer {layer.name!r} reads {missing}, which no earlier layer of "
                                 f"{self.name!r} produces")
            shapes[layer.name] = self._out_shape(layer, [shapes[n] for n in self.sources(layer, i)])
        return shapes

    def sources(self, layer: Layer, index: int | None = None) -> tuple[str, ...]:
        """Names of the tensors `layer` reads: its `inputs`, else the previous layer's output ("input" for the
        first layer). `index`: the layer's position, if known (saves a search)."""
        if layer.inputs:
            return layer.inputs
        i = self.index(layer.name) if index is None else index
        return (self.layers[i - 1].name if i else "input",)

    def _out_shape(self, layer: Layer, ins: list[tuple[int, ...]]) -> tuple[int, ...]:
        return tuple(OPS[layer.op].out_shape(layer, ins))

    def walk(self, step: Callable[[Layer, list], Any], x, *, upto: int | None = None, keep_all: bool = False):
        """The one walk over the graph: step(layer, inputs) for layers[:upto] in order, where inputs are the
        tensors the layer reads (`sources`), starting from the model input `x`. Returns the last output, or with
        keep_all a dict {layer name: output} of every layer. Other outputs are dropped once no later layer
        reads them."""
        layers = self.layers[:upto]
        read = {n for i, layer in enumerate(layers) for n in self.sources(layer, i)}
        saved = {"input": x}
        for i, layer in enumerate(layers):
            x = step(layer, [saved[n] for n in self.sources(layer, i)])
            if keep_all or layer.name in read:
                saved[layer.name] = x
        if keep_all:
            saved.pop("input")
            return saved
        return x

    def output_shape(self, name: str | None = None) -> tuple[int, ...]:
        """Output shape (no batch axis) of layer `name`, or of the model."""
        if not self.layers:
            return tuple(self.input_shape)
        return self._shapes[name or self.layers[-1].name]

    def input_shape_of(self, name: str) -> tuple[int, ...]:
        """Shape of the (first) tensor layer `name` reads."""
        return self._shapes[self.sources(self.layers[self.index(name)])[0]]

    def index(self, name: str) -> int:
        for i, layer in enumerate(self.layers):
            if layer.name == name:
                return i
        raise ModelError(f"no layer named {name!r} in {self.name!r}; layers: {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    # -- costs ---------------------------------------------------------------------------------------
    def weight_shapes(self, layer: Layer) -> dict[str, tuple[int, ...]]:
        """Shapes of a layer's parameters: {"weight": ..., "bias": ...} (empty for ops without weights)."""
        op = OPS[layer.op]
        return op.weight_shapes(layer, self.input_shape_of(layer.name)) if op.has_weights else {}

    def num_params(self, layer: Layer | None = None) -> int:
        layers = [layer] if layer is not None else self.layers
        return sum(math.prod(s) for ly in layers for s in self.weight_shapes(ly).values())

    def macs(self, layer: Layer | None = None) -> int:
        """Multiply-accumulates of one forward pass for one sample (of one layer, or the whole model)."""
        if layer is None:
            return sum(self.macs(ly) for ly in self.layers)
        return OPS[layer.op].macs(layer, self.input_shape_of(layer.name), self.output_shape(layer.name))

    def with_layers(self, layers, input_shape=None, input_quant=None, name=None) -> ModelSpec:
        return replace(
            self,
            layers=tuple(layers),
            input_shape=tuple(input_shape if input_shape is not None else self.input_shape),
            input_quant=input_quant,
            name=name or self.name,
        )
